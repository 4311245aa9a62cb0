"""`python -m srcore benchmark`: how fast this machine trains, feeds, upscales and evaluates at
the params.yaml configuration.

Each figure is the median of timed runs after a warm-up run, with the same functions the
pipeline calls (pixel_step, gan_step, batch_stream, train_cnn, upscale_array, image_metrics).
Inputs are synthetic and network weights random: speed does not depend on their values, and the benchmark
needs neither data nor pretrained weights. Low-precision runs that the hardware only emulates
(bf16 on a CPU without bf16 instructions: ~20x slower) get one timed run and no GAN figures, to
keep the whole benchmark to about a minute or two on a laptop CPU.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch

from srcore.config import Params
from srcore.errors import Interrupted, SrcoreError
from srcore.train.cuda_graphs import WARMUP
from srcore.train.runtime import check_compile, loader_workers, use_channels_last

REPEATS = 5
BUDGET_S = 6.0  # stop repeating a measurement after this long (at least one timed run)


def median_seconds(fn: Callable[[], object], device: torch.device, warmup: int = 1,
                   repeats: int = REPEATS, budget_s: float = BUDGET_S) -> tuple[float, int]:
    """(median seconds of one call, number of timed calls)."""
    def timed() -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        timed()
    times, started = [], time.perf_counter()
    while not times or (len(times) < repeats and time.perf_counter() - started < budget_s):
        times.append(timed())
    return statistics.median(times), len(times)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def synthetic_images(params: Params, count: int = 8) -> list[np.ndarray]:
    """HR-sized noise images (the sizes the downsample stage produces)."""
    side = params.data.hr_max_side
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8) for _ in range(count)]


def run(params: Params, device: torch.device, log: Callable[[str], None],
        compile_too: bool | None = None) -> dict:
    """All measurements; a flat dict whose keys name what was measured and its unit.
    compile_too: also time torch.compile (default: on CUDA, or when train.compile is set)."""
    from srcore.data.dataset import PatchDataset
    from srcore.train.runtime import (configure, native_precisions, pick_precision,
                                      training_precision)

    configure(device)
    if compile_too or (compile_too is None and params.train.compile):
        # asked for: one clear error before any timing where it cannot work
        check_compile(True, device, "--compile" if compile_too else "train.compile")
        compile_too = True
    elif compile_too is None:  # by default on CUDA, where it may pay off, if it works there
        compile_too = device.type == "cuda" and _compiles(device, log)
    batch, patch = params.cnn.batch_size, params.data.patch_size
    native = native_precisions(device)
    candidates = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    if device.type == "cuda" and "bf16" not in native:
        candidates.remove("bf16")
    out: dict = {"device": str(device), "device_name": torch.cuda.get_device_name(device)
                 if device.type == "cuda" else cpu_name(), "torch_threads": torch.get_num_threads(),
                 "torch_version": torch.__version__, "native_precisions": native,
                 "rrdb_blocks": params.model.rrdb, "features": params.model.features,
                 "batch_size": batch, "patch_size_px": patch,
                 "auto_precision": training_precision(
                     params.train.model_copy(update={"precision": "auto"}), device)}
    torch.manual_seed(0)
    out.update(_cnn_steps(params, device, candidates, native, log))
    if compile_too:
        out.update(_compiled_step(params, device, out["auto_precision"], out, log))
    out.update(_gan_steps(params, device, [p for p in candidates if p in native], out, log))
    skipped = [p for p in candidates if p not in native]
    if skipped:
        out["gan_not_measured"] = (f"{', '.join(skipped)}: emulated on this device, not worth "
                                   "training in; see the CNN figure")

    images = synthetic_images(params)
    dataset = PatchDataset(images, patch, params.data.patches_per_image, params.data.scale,
                           params.data.lq_kernel, params.data.hflip, params.data.vflip,
                           params.data.rot90, params.seed)
    workers = loader_workers(params.train.num_workers, device)
    log(f"data loader ({workers} worker(s))")
    trained_in = training_precision(params.train, device)
    out["loader_patches_per_s"] = loader_patches_per_s(dataset, batch, workers, params.seed)
    out["loader_num_workers"] = workers
    out["training_consumes_patches_per_s"] = out[f"cnn_train_{trained_in}_patches_per_s"]
    out["loader_headroom_x"] = out["loader_patches_per_s"] / out["training_consumes_patches_per_s"]

    out.update(_loop_efficiency(params, device, _generator(
        params, device, use_channels_last(params.train.channels_last, device)), dataset,
        trained_in, log))
    # in the precision the evaluate stage and upscale use (auto: fp32 on CUDA, no graphs there)
    out.update(_inference(params, device, _generator(params, device).eval(),
                          pick_precision(params.train.precision, device), native, log))
    out.update(_evaluation(params, log))
    return out


def _compiles(device: torch.device, log) -> bool:
    try:
        check_compile(True, device, "--compile")
        return True
    except SrcoreError as err:
        log(f"not timing torch.compile: {err}")
        return False


def _generator(params: Params, device: torch.device, channels_last: bool = False):
    from srcore.models.rrdb import RRDBNet
    from srcore.train.runtime import to_training

    model = RRDBNet(params.model.rrdb, params.model.features, params.model.growth,
                    params.model.skip)
    return to_training(model, device, channels_last).train()


def _random_batch(params: Params, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    patch = params.data.patch_size
    return (torch.rand(size, 3, patch // params.data.scale, patch // params.data.scale,
                       device=device), torch.rand(size, 3, patch, patch, device=device))


def _cnn_steps(params: Params, device, candidates: list[str], native: list[str], log) -> dict:
    """The CNN step per precision as training runs it (train.channels_last, train.cuda_graphs
    etc.); on CUDA also without CUDA graphs, and untuned, as the code ran before it was tuned
    (NCHW, unfused Adam, no cuDNN autotuning, no graphs), so that one run gives the speed-ups."""
    from srcore.train.runtime import adam, use_channels_last, use_cuda_graphs

    batch, train = params.cnn.batch_size, params.train
    lq, gt = _random_batch(params, batch, device)
    tuned = use_channels_last(train.channels_last, device)
    cuda = device.type == "cuda"
    # (suffix, channels_last, tuned optimizer and cuDNN autotuning, train.cuda_graphs)
    setups = [("", tuned, True, train.cuda_graphs)] + (
        [("_ungraphed", tuned, True, False), ("_untuned", False, False, False)] if cuda else [])
    out: dict = {"channels_last": tuned}
    for suffix, channels_last, fast, graphs in setups:
        torch.backends.cudnn.benchmark = fast and cuda
        for precision in candidates:
            graphed = use_cuda_graphs(graphs, device, precision)
            if suffix == "_ungraphed" and not use_cuda_graphs(train.cuda_graphs, device,
                                                              precision):
                continue  # the figure without a suffix is already this one
            emulated = precision not in native
            model = _generator(params, device, channels_last)
            optimizer = adam(model.parameters(), params.cnn.lr, params.cnn.betas,
                             device) if fast else torch.optim.Adam(model.parameters(),
                                                                   lr=params.cnn.lr)
            name = f"cnn_train_{precision}{suffix}"
            log(f"CNN training step, {precision}{suffix.replace('_', ', ')}"
                + (", CUDA graphs" if graphed else "") + (" (emulated: one run)" if emulated
                                                         else ""))
            step = _cnn_step(params, model, optimizer, lq, gt, precision, device, channels_last,
                             graphs)
            seconds, runs = median_seconds(
                step, device, warmup=0 if emulated else 2 + (WARMUP if graphed else 0),
                repeats=1 if emulated else REPEATS)
            out[f"{name}_step_s"] = seconds
            out[f"{name}_patches_per_s"] = batch / seconds
            out[f"{name}_runs"] = runs
            if not suffix:
                out[f"{name}_emulated"] = emulated
                out[f"{name}_cuda_graphs"] = graphed
    torch.backends.cudnn.benchmark = cuda
    if "bf16" in candidates:
        out["cnn_train_bf16_speedup_over_fp32"] = (out["cnn_train_fp32_step_s"]
                                                   / out["cnn_train_bf16_step_s"])
    if cuda:
        for precision in candidates:
            out[f"cnn_train_{precision}_speedup_over_untuned_fp32"] = (
                out["cnn_train_fp32_untuned_step_s"] / out[f"cnn_train_{precision}_step_s"])
            if f"cnn_train_{precision}_ungraphed_step_s" in out:
                out[f"cnn_train_{precision}_graphs_speedup_over_ungraphed"] = (
                    out[f"cnn_train_{precision}_ungraphed_step_s"]
                    / out[f"cnn_train_{precision}_step_s"])
    return out


def _cnn_step(params: Params, model, optimizer, lq, gt, precision: str, device,
              channels_last: bool, graphs) -> Callable[[], object]:
    """One CNN training step on a fixed batch, as train_cnn runs it (runtime.step_runner)."""
    from srcore.train.cnn import LOSSES, pixel_step
    from srcore.train.runtime import batch_to, grad_scaler, step_runner

    scaler, loss = grad_scaler(precision, device), LOSSES[params.cnn.loss]
    run = step_runner(lambda kind, a, b: {"loss": pixel_step(model, optimizer, scaler, loss, a, b,
                                                             precision, device)},
                      [optimizer], params.train.model_copy(update={"cuda_graphs": graphs}),
                      device, precision)
    lq, gt = batch_to(lq, device, channels_last), batch_to(gt, device, channels_last)
    return lambda: run("cnn", lq, gt)


def _compiled_step(params: Params, device, precision: str, eager: dict, log) -> dict:
    """The CNN step with train.compile (and CUDA graphs where train.cuda_graphs has them): the
    first steps' extra time (the compilation), the step after it, and after how many steps the
    compilation has paid for itself."""
    from srcore.train.runtime import adam, compiled, use_channels_last, use_cuda_graphs

    channels_last = use_channels_last(params.train.channels_last, device)
    model = _generator(params, device, channels_last)
    optimizer = adam(model.parameters(), params.cnn.lr, params.cnn.betas, device)
    lq, gt = _random_batch(params, params.cnn.batch_size, device)
    graphs = params.train.cuda_graphs
    step = _cnn_step(params, compiled(model, True), optimizer, lq, gt, precision, device,
                     channels_last, graphs)
    first = 1 + (WARMUP if use_cuda_graphs(graphs, device, precision) else 1)

    log(f"CNN training step, {precision}, torch.compile (compiling)")
    first_s, _ = median_seconds(lambda: [step() for _ in range(first)], device, warmup=0,
                                repeats=1)
    seconds, runs = median_seconds(step, device, warmup=2)
    eager_s = eager[f"cnn_train_{precision}_step_s"]
    compile_s = max(first_s - first * seconds, 0.0)
    saved = eager_s - seconds
    out = {f"cnn_train_{precision}_compiled_step_s": seconds,
           f"cnn_train_{precision}_compiled_runs": runs, "compile_s": compile_s,
           f"cnn_train_{precision}_compiled_speedup_over_eager": eager_s / seconds}
    if "cnn_train_fp32_untuned_step_s" in eager:
        out[f"cnn_train_{precision}_compiled_speedup_over_untuned_fp32"] = (
            eager["cnn_train_fp32_untuned_step_s"] / seconds)
    out["compile_pays_off_after_steps"] = round(compile_s / saved) if saved > 0 else None
    return out


def _gan_steps(params: Params, device, precisions: list[str], cnn: dict, log) -> dict:
    from srcore.losses import PerceptualLoss
    from srcore.models.discriminator import Discriminator
    from srcore.train.gan import GanNets, gan_step
    from srcore.train.runtime import (adam, batch_to, grad_scaler, step_runner, to_training,
                                      use_channels_last, use_cuda_graphs)

    channels_last = use_channels_last(params.train.channels_last, device)
    perceptual = to_training(PerceptualLoss.from_params(
        _random_features(params.gan.perceptual.net), params.gan.perceptual), device,
        channels_last)
    lq, gt = (batch_to(t, device, channels_last)
              for t in _random_batch(params, params.gan.batch_size, device))
    out: dict = {}
    for precision in precisions:
        generator = _generator(params, device, channels_last)
        disc = to_training(Discriminator(params.disc.widths, params.disc.hidden), device,
                           channels_last).train()
        nets = GanNets(generator, disc, perceptual,
                       adam(generator.parameters(), params.gan.lr, params.gan.betas, device),
                       adam(disc.parameters(), params.disc.lr, params.gan.betas, device),
                       grad_scaler(precision, device), grad_scaler(precision, device))
        run = step_runner(lambda phase, a, b: gan_step(phase, nets, a, b, params.gan, precision,
                                                       device), [nets.opt_g, nets.opt_d],
                          params.train, device, precision)
        graphed = use_cuda_graphs(params.train.cuda_graphs, device, precision)
        for phase, name in (("G", "generator"), ("D", "discriminator"), ("GD", "joint")):
            log(f"GAN {name} step, {precision}" + (", CUDA graphs" if graphed else ""))
            generator.requires_grad_("G" in phase)
            disc.requires_grad_("D" in phase)
            seconds, runs = median_seconds(lambda: run(phase, lq, gt), device,
                                           warmup=2 + (WARMUP if graphed else 0))
            out[f"gan_{name}_{precision}_step_s"] = seconds
            out[f"gan_{name}_{precision}_runs"] = runs
        out[f"gan_joint_{precision}_step_over_cnn_step"] = (
            out[f"gan_joint_{precision}_step_s"] / cnn[f"cnn_train_{precision}_step_s"])
    return out


def loader_patches_per_s(dataset, batch: int, workers: int, seed: int) -> float:
    """Patches per second the training stream delivers with `workers` loader processes, timed
    in the steady state: after the workers have started and their prefetched batches (2
    handovers per worker, of up to WORKER_CHUNK batches) have been drained, so the figure is
    what they make, not what they had queued; and over 4 rounds of handovers, so that handovers
    already under way when the clock starts do not count for much (96 batches at 15 workers x 8
    measured 41,000 crops/s on an H200 machine where 400 measured 28,800)."""
    from srcore.train.batches import WORKER_CHUNK, batch_stream
    from srcore.train.distributed import Dist

    stream = batch_stream(dataset, batch, seed, 0, workers, Dist())
    for _ in range(1 + 2 * workers * WORKER_CHUNK):
        next(stream)
    batches = max(96, 4 * workers * WORKER_CHUNK)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch / (time.perf_counter() - start)


def _loop_efficiency(params: Params, device, model, dataset, precision: str, log) -> dict:
    """The real train_cnn loop (batch stream, EMA, lr schedule, logging to a CSV and a
    checkpoint, at params.yaml's cadences) for train.checkpoint_every steps, so that it
    includes one checkpoint, against the isolated step: the share of the time spent stepping.
    Validation is left out (one tiny image, at the end): its cost is set by cnn.val_every and
    the val images, and is reported on its own (validation_s: the default val set's size).
    MLflow is left out too (the stages log to it asynchronously)."""
    import sys
    import tempfile
    from pathlib import Path

    from srcore.csvlog import CsvLog
    from srcore.train.cnn import train_cnn
    from srcore.train.runtime import adam, use_channels_last
    from srcore.train.validate import make_val_images, validate

    cnn, train = params.cnn, params.train
    channels_last = use_channels_last(train.channels_last, device)
    steps = min(cnn.steps, max(train.checkpoint_every, 2))
    quick = cnn.model_copy(update={"steps": steps, "lr_halve_at": [steps // 2] if steps > 2
                                   else [], "val_every": steps, "early_stop_warmup": steps - 1})
    tiny = make_val_images([np.zeros((4 * params.data.scale,) * 2 + (3,), np.uint8)],
                           params.data.scale, params.data.lq_kernel)
    optimizer = adam(model.parameters(), cnn.lr, cnn.betas, device)
    lq, gt = (t.unsqueeze(0).repeat(cnn.batch_size, 1, 1, 1) for t in dataset[(0, 0)])

    step = _cnn_step(params, model, optimizer, lq.to(device), gt.to(device), precision, device,
                     channels_last, train.cuda_graphs)  # as the loop steps: graphed or not

    def isolated_step_s() -> float:
        return median_seconds(step, device, warmup=2 + WARMUP)[0]

    # the isolated step is timed before and after the loop, and the two averaged: on a shared
    # machine the speed drifts over a minute, and one side alone would bias the ratio
    log(f"the isolated step, {precision}")
    before_s = isolated_step_s()
    validate(model, tiny, device, precision, 0)  # its cuDNN autotuning stays out of the loop
    log(f"the train_cnn loop, {steps} steps, {precision}")
    # its progress lines go to stderr: stdout is the benchmark's result (--json)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr), \
            _host_syncs(device) as syncs:
        csv = CsvLog(Path(tmp) / "train.csv", ["step", "train_loss", "lr"])
        try:
            summary = train_cnn(model, dataset, tiny, quick, train, seed=params.seed,
                                crop_border=0, device=device, precision=precision,
                                best_path=Path(tmp) / "cnn.pt", last_path=Path(tmp) / "last.pt",
                                key="benchmark", on_start=lambda step, history: csv.start(step),
                                history=lambda: {str(csv.path): csv.text()},
                                on_log=lambda step, row: csv.append({"step": step, **row}))
        except Interrupted as stop:  # its message names a saved state: a file of `tmp`, gone
            raise Interrupted(stop.signum) from None
    log(f"the isolated step again, {precision}")
    step_s = (before_s + isolated_step_s()) / 2
    log("one validation (2 HR-sized images, PSNR/SSIM)")
    scale = params.data.scale
    val = make_val_images([img[:img.shape[0] // scale * scale] for img in
                           synthetic_images(params, 2)], scale, params.data.lq_kernel)
    val_s, _ = median_seconds(lambda: validate(model, val, device, precision,
                                               params.eval.crop_border), device, repeats=1)
    return {"loop_precision": precision, "loop_steps": steps,
            "loop_steps_per_s": summary["steps_per_s"], "isolated_steps_per_s": 1 / step_s,
            "loop_efficiency_x": summary["steps_per_s"] * step_s,
            "validation_s": val_s, "validation_every_steps": cnn.val_every,
            **({"loop_host_syncs_per_step": len(syncs) / steps} if device.type == "cuda" else {})}


@contextlib.contextmanager
def _host_syncs(device):
    """The CUDA host syncs inside the block, as torch's sync debug mode reports them (a list of
    warnings; stays empty on a CPU). The loop should sync only when it logs, validates or saves."""
    import warnings

    if device.type != "cuda":
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _random_features(net: str) -> torch.nn.Module:
    """torchvision's VGG features with random weights (no download, no 500 MB classifier)."""
    from srcore.pretrained import empty_features

    features = empty_features(net).to_empty(device="cpu")
    for param in features.parameters():
        torch.nn.init.normal_(param, std=0.02)
    return features


def _inference(params: Params, device, model, precision: str, native: list[str],
               log) -> dict:
    """Upscaling one image of DIV2K's LR size (510x339: a 2040x1356 output) whole and in
    DEFAULT_TILE tiles, batched as upscale_array batches them on this device; on a GPU also the
    peak memory of the whole-image pass. The whole image also in the other of fp32 and bf16
    where the device runs it natively: what auto's choice for inference rests on. A CPU pass
    takes seconds at the default model (3.3 s
    on a 2-core CPU in bf16), so there it gets no warm-up (the GPU's first pass pays for cuDNN's
    set-up) and BUDGET_S stops it after one or two timed runs; a tiny test image gets 3 and
    their median, which drops the first's set-up."""
    from srcore.infer import DEFAULT_TILE, auto_tile, upscale_array

    # tiny test configurations (data.hr_max_side 64) get a smaller image, 128x85, to stay quick;
    # the default hr_max_side 1020 gives the full 510x339
    width = min(510, params.data.hr_max_side * 2)
    lq = np.random.default_rng(1).integers(0, 256, (width * 339 // 510, width, 3),
                                           dtype=np.uint8)
    megapixels = lq.shape[0] * lq.shape[1] * params.data.scale ** 2 / 1e6
    cuda = device.type == "cuda"
    out = {"inference_precision": precision, "inference_output_megapixels": megapixels,
           "inference_input_px": f"{lq.shape[1]}x{lq.shape[0]}", "inference_tile_px": DEFAULT_TILE,
           "inference_auto_tile_px": auto_tile(model, *lq.shape[:2], device=device,
                                               precision=precision)}
    for name, tile in (("untiled", 0), ("tiled", DEFAULT_TILE)):
        log(f"inference, {name}")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        seconds, runs = median_seconds(
            lambda: upscale_array(model, lq, tile=tile, device=device, precision=precision),
            device, warmup=1 if cuda else 0, repeats=3)
        out[f"inference_{name}_megapixels_per_s"] = megapixels / seconds
        out[f"inference_{name}_runs"] = runs
        if cuda and name == "untiled":
            out["inference_untiled_peak_gib"] = \
                (torch.cuda.max_memory_allocated(device) - before) / 2 ** 30
    out["inference_tiled_over_untiled_x"] = (out["inference_tiled_megapixels_per_s"]
                                             / out["inference_untiled_megapixels_per_s"])
    for other in [p for p in ("fp32", "bf16") if p != precision and p in native]:
        log(f"inference, untiled, {other}")
        seconds, _ = median_seconds(
            lambda: upscale_array(model, lq, tile=0, device=device, precision=other),
            device, warmup=1 if cuda else 0, repeats=3)
        out[f"inference_untiled_{other}_megapixels_per_s"] = megapixels / seconds
        out[f"inference_untiled_{other}_over_{precision}_x"] = \
            megapixels / seconds / out["inference_untiled_megapixels_per_s"]
    return out


def _evaluation(params: Params, log) -> dict:
    """Metrics of one HR-sized image pair: PSNR/SSIM (RGB and Y) and LPIPS, on CPU as in the
    evaluate stage."""
    import warnings

    import lpips

    from srcore.metrics import image_metrics

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        lpips_model = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True,
                                  verbose=False).eval()
    gt, sr = synthetic_images(params, 2)
    log("evaluation metrics")
    seconds, runs = median_seconds(lambda: image_metrics(gt, sr, params.eval.crop_border,
                                                         lpips_model), torch.device("cpu"),
                                   repeats=3)
    return {"eval_images_per_s": 1 / seconds, "eval_image_megapixels": gt.shape[0] * gt.shape[1]
            / 1e6, "eval_runs": runs}


UNITS = (("_patches_per_s", "patches/s"), ("_megapixels_per_s", "MP/s"), ("_images_per_s",
         "images/s"), ("_step_s", "s"), ("_over_cnn_step", "x"), ("_speedup_over_fp32", "x"),
         ("_x", "x"),  # ratios: loader_headroom_x, loop_efficiency_x, inference's
         ("_steps_per_s", "steps/s"), ("validation_s", "s"), ("_peak_gib", "GiB"),
         ("_untuned_fp32", "x"), ("_over_eager", "x"), ("compile_s", "s"),
         ("_syncs_per_step", "syncs"), ("_over_ungraphed", "x"))


def table(results: dict) -> str:
    """The figures as aligned text lines, measurements first, then the context."""
    lines = []
    for key, value in results.items():
        unit = next((u for suffix, u in UNITS if key.endswith(suffix)), None)
        if unit and isinstance(value, float):
            lines.append(f"{key:45s} {value:12.3f} {unit}")
    lines.append("")
    lines += [f"{key:45s} {value}" for key, value in results.items()
              if not any(key.endswith(suffix) for suffix, _ in UNITS)]
    return "\n".join(lines)
