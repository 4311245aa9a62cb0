"""The command line: `python -m srcore <command>`, one command per pipeline stage, and the
tools upscale, export, compare, report, drop and benchmark.

Heavy libraries (torch, mlflow, albumentations, lpips) are imported inside the commands so
that `--help` answers at once.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import typer

from srcore.errors import Interrupted, SrcoreError, raise_interrupted, stop_with_parent
from srcore.sizes import DEFAULT_TILE_PAD

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="srcore: a reproducible, tracked pipeline for 4x image super-resolution.")


def _print_version(wanted: bool) -> None:
    if wanted:
        from srcore import __version__

        print(f"srcore {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version,
                                          is_eager=True, help="Print the version and exit.")):
    pass


def path_arg(value: str | Path) -> Path:
    """A path argument or option: Path("") would silently be the current folder. (Defaults
    come in as Path.)"""
    if not str(value).strip():
        raise typer.BadParameter("an empty path (an unset shell variable?); give a file or "
                                 "folder name")
    return Path(value)


PARAMS = typer.Option(Path("params.yaml"), "--params", parser=path_arg, metavar="<path>",
                      help="params file to read.")


@app.command("check-params")
def check_params(params: Path = PARAMS) -> None:
    """Stage 0: validate the whole params file, before DVC removes any stage's outputs."""
    from stages import check_params as stage

    stage.run(params)


@app.command()
def download(params: Path = PARAMS) -> None:
    """Stage 1: fetch the HR photos of data.source (sample, div2k or dir) into data/raw/."""
    from stages import download as stage

    stage.run(params)


@app.command()
def downsample(params: Path = PARAMS) -> None:
    """Stage 2: shrink each photo to data.hr_max_side, crop to data.scale, into data/hr/."""
    from stages import downsample as stage

    stage.run(params)


@app.command()
def split(params: Path = PARAMS) -> None:
    """Stage 3: seeded train/val/test split of data/hr/ into data/split.json."""
    from stages import split as stage

    stage.run(params)


@app.command()
def pretrained(params: Path = PARAMS) -> None:
    """Stage: ImageNet AlexNet/VGG and LPIPS weights into models/pretrained/ (works offline)."""
    from stages import pretrained as stage

    stage.run(params)


@app.command("train-cnn")
def train_cnn(params: Path = PARAMS) -> None:
    """Stage 4: train the RRDB CNN with an L1/L2 pixel loss into models/cnn.pt."""
    from stages import train_cnn as stage

    _train(stage, "train-cnn", params)


@app.command("pretrain-disc")
def pretrain_disc(params: Path = PARAMS) -> None:
    """Stage 5: pretrain the discriminator against the frozen CNN into models/disc.pt."""
    from stages import pretrain_disc as stage

    _train(stage, "pretrain-disc", params)


@app.command("train-gan")
def train_gan(params: Path = PARAMS) -> None:
    """Stage 6: train the CNN as a GAN generator (perceptual + adversarial loss): models/gan.pt."""
    from stages import train_gan as stage

    _train(stage, "train-gan", params)


def _train(stage, command: str, params: Path) -> None:
    from stages.common import run_or_launch

    run_or_launch(stage, command, params)


@app.command()
def upscale(
    inputs: list[Path] = typer.Argument(..., parser=path_arg, show_default=False,
                                        help="Image files and/or folders of images."),
    output: Path = typer.Option(..., "-o", "--output", parser=path_arg, metavar="<path>",
                                show_default=False,
                                help="Output folder (created if missing); each result is "
                                     "<stem>_x4.<ext>, so it may be the input folder."),
    model: Path = typer.Option(..., "--model", parser=path_arg, metavar="<path>",
                               show_default=False,
                               help="Generator: models/cnn.pt or gan.pt, a BasicSR / "
                                    "Real-ESRGAN RRDBNet x4 file (e.g. RealESRGAN_x4plus.pth), "
                                    "or an .onnx file (srcore export; run by onnxruntime)."),
    tile: str = typer.Option("auto", "--tile",
                             help="Tile size in input pixels; smaller needs less memory, "
                                  "0 = whole image at once. auto: on a CUDA GPU the whole "
                                  "image if it fits in free memory, else the largest tile "
                                  "that does (tiles batched); on a CPU, or for an .onnx "
                                  "model, 256."),
    tile_pad: int = typer.Option(DEFAULT_TILE_PAD, "--tile-pad", min=0,
                                 help="Input pixels of context around each tile."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (CUDA: fp32 on TF32 tensor cores; CPU: bf16 "
                                       "where it runs natively), fp32, bf16, or fp16 (CUDA)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    recursive: bool = typer.Option(False, "--recursive", "-r",
                                   help="Search input folders' subfolders too (the output "
                                        "keeps the subfolders)."),
    ext: str = typer.Option(None, "--ext", show_default=False,
                            help="Output format (png, jpg, webp, tif, bmp); default: the "
                                 "input's."),
) -> None:
    """Upscale your own images 4x with a trained generator (any mode; 16-bit stays 16-bit).

    Exits with code 2 if any image failed or was skipped because its output exists.
    """
    from srcore.upscale import parse_tile, run

    summary = run(inputs, output, model, tile=parse_tile(tile), tile_pad=tile_pad, device=device,
                  precision=precision, overwrite=overwrite, recursive=recursive, ext=ext)
    typer.echo(f"{summary.line()} -> {output}/")  # a terminal's bar names no output file
    if not summary.ok:
        raise typer.Exit(2)


@app.command()
def export(
    model: Path = typer.Argument(..., parser=path_arg, show_default=False,
                                 help="Generator: models/cnn.pt or gan.pt, or a BasicSR / "
                                      "Real-ESRGAN RRDBNet x4 file."),
    output: Path = typer.Option(..., "-o", "--output", parser=path_arg, metavar="<path>",
                                show_default=False,
                                help="The .onnx file to write."),
    fp16: bool = typer.Option(False, "--fp16",
                              help="Also write OUTPUT's stem + .fp16.onnx: float16 weights, "
                                   "input and output (for GPUs; half the size)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing .onnx files."),
) -> None:
    """Export a generator to ONNX (opset 17; any batch, height and width), checked with
    onnxruntime against torch on a small random batch."""
    from srcore.onnx_export import OPSET, export as export_onnx

    outputs = [(output, "fp32")]
    if fp16:
        outputs.append((output.with_name(output.stem + ".fp16.onnx"), "fp16"))
    for path, _ in outputs:  # before the model is loaded, as upscale does
        if path.is_dir():
            raise SrcoreError(f"-o {path} is a folder; give a file name ending in .onnx")
        if path.exists() and not overwrite:
            raise SrcoreError(f"{path} exists; pass --overwrite to replace it")
    for (path, precision), diff in zip(outputs, export_onnx(model, outputs)):
        typer.echo(f"wrote {path} ({precision}, opset {OPSET}); onnxruntime vs torch: max abs "
                   f"difference {diff:.1e} on a random 2x3x17x23 input")


@app.command("evaluate-baselines")
def evaluate_baselines(params: Path = PARAMS) -> None:
    """Stage 7a: nearest, bilinear and bicubic on the test split: metrics/evaluate_baselines.json."""
    from stages import evaluate as stage

    stage.run_baselines(params)


@app.command()
def evaluate(params: Path = PARAMS) -> None:
    """Stage 7b: CNN and GAN on the test split with the baselines: metrics/evaluate.json, figure."""
    from stages import evaluate as stage

    stage.run_models(params)


@app.command("make-lq")
def make_lq(
    inputs: list[Path] = typer.Argument(..., parser=path_arg, show_default=False,
                                        help="Ground-truth images (sides divisible by 4)."),
    output: Path = typer.Option(..., "-o", "--output", parser=path_arg, metavar="<path>",
                                show_default=False,
                                help="Output folder (created if missing): <stem>.png each."),
    kernel: str = typer.Option("bicubic", "--kernel",
                               help="bicubic (antialiased), area, bilinear or nearest: "
                                    "params.yaml's data.lq_kernel."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """The 4x smaller 8-bit input of each image, made exactly as `evaluate` makes it."""
    from srcore.make_lq import run

    for path in run(inputs, output, kernel, overwrite):
        typer.echo(path)


@app.command()
def compare(
    reference: Path = typer.Argument(..., parser=path_arg, help="ground-truth image"),
    test: Path = typer.Argument(..., parser=path_arg,
                                help="image to score against it (same size)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    crop_border: int = typer.Option(4, min=0, help="border removed for the Y-channel metrics"),
    weights: Path = typer.Option(None, parser=path_arg, metavar="<path>", show_default=False,
                                 help="folder of LPIPS weights. Default: models/pretrained of the "
                                      "project in the current folder, else a user cache "
                                      "(~/.cache/srcore/pretrained, or SRCORE_CACHE_DIR), "
                                      "prepared there on first use."),
    no_lpips: bool = typer.Option(False, "--no-lpips", help="skip LPIPS (needs no weights)."),
) -> None:
    """PSNR, SSIM (RGB and Y channel) and LPIPS of TEST against REFERENCE.

    With --json, an infinite PSNR (identical images) is written as null with a "note", since
    strict JSON has no Infinity.
    """
    import json
    import math

    from srcore.io import read_image, to_rgb8
    from srcore.metrics import check_memory, check_size, lpips_distance, psnr_ssim
    from srcore.pretrained import load_lpips, lpips_weights

    (ref, ref_mode), (other, other_mode) = read_image(reference), read_image(test)
    # both are scored as RGB: gray against RGB would compare luma with colour and score high
    def kind(arr):  # gray+alpha is decoded as RGBA, so as upscale writes it
        return "grayscale" if arr.ndim == 2 else "RGBA" if arr.shape[2] == 4 else "RGB"

    def name(arr, mode):
        return "grayscale with alpha" if mode in ("LA", "La") else kind(arr)

    if kind(ref) != kind(other):
        raise SrcoreError(f"{reference} is {name(ref, ref_mode)} but {test} is "
                          f"{name(other, other_mode)}: compare images of the same mode "
                          "(convert one of them first)")
    (ref, made), (other, made_too) = to_rgb8(ref, ref_mode), to_rgb8(other, other_mode)
    lost = {"alpha dropped": "alpha is not compared",
            "16-bit": "16-bit samples are rounded to 8 bits"}
    lost = [lost[c] for c in dict.fromkeys(made + made_too) if c in lost]
    if lost:  # what evaluate scores too: the metrics and LPIPS take 8-bit RGB
        print(f"note: scored as 8-bit RGB: {' and '.join(lost)}", file=sys.stderr)
    if ref.shape != other.shape:
        raise SrcoreError(f"{test} is {other.shape[1]}x{other.shape[0]} but {reference} is "
                          f"{ref.shape[1]}x{ref.shape[0]}: compare images of the same size")
    check_size(ref.shape, crop_border, lpips=not no_lpips, what=str(reference),
               remedy=f"compare larger images or lower --crop-border {crop_border}"
                      + ("" if no_lpips else ", or skip LPIPS (--no-lpips)"))
    check_memory(ref.shape, lpips=not no_lpips, what=f"{reference} and {test}")
    scores = psnr_ssim(ref, other, crop_border)
    if not no_lpips:
        folder = weights if weights is not None else lpips_weights(Path("models/pretrained"))
        scores["lpips"] = lpips_distance(load_lpips(folder), ref, other)
    if as_json:
        infinite = [k for k, v in scores.items() if math.isinf(v)]
        if infinite:
            scores = {**{k: None if k in infinite else v for k, v in scores.items()},
                      "note": f"{', '.join(infinite)} null: infinite PSNR (identical pixels)"}
        print(json.dumps(scores))
    else:
        for key, value in scores.items():
            print(f"{key:7s} {value:.4f}")


@app.command()
def report(
    repo: Path = typer.Option(Path("."), "--repo", parser=path_arg, metavar="<path>",
                              help="the project (git + DVC repo) to read."),
    out: Path = typer.Option(None, "--out", parser=path_arg, metavar="<path>",
                             show_default=False,
                             help="also write the Markdown to this file (e.g. docs/results.md)."),
    reference: str = typer.Option("defaults", "--reference",
                                  help="hold the other rows at params.yaml's defaults, or at the "
                                       "report's setup (DIV2K, its schedule and loss, "
                                       "post-activation): defaults or report."),
) -> None:
    """The report's five ablation tables (Markdown) from the experiments of `dvc exp show`."""
    from srcore.atomic import write_text
    from srcore.report import (REFERENCES, collect, committed_params, experiments_elsewhere,
                               tables)
    from srcore.report import reference as held_at

    if reference not in REFERENCES:
        raise SrcoreError(f"--reference {reference!r}: choose defaults or report")
    if out is not None and out.is_dir():  # checked before the slow `dvc exp show`
        raise SrcoreError(f"--out {out} is a folder; give a file name, e.g. "
                          f"{out / 'results.md'}")
    defaults = committed_params(repo)
    ref = held_at(defaults, reference)
    text = tables(collect(repo, ref), ref, defaults)
    if out is not None:
        write_text(out, text)
    print(text, end="")
    if elsewhere := experiments_elsewhere(repo):
        print(f"note: {elsewhere} experiment(s) of other commits are left out, as they ran other "
              "code (`dvc exp show -A` lists them)",
              file=sys.stderr)


@app.command()
def drop(
    names: list[str] = typer.Argument(..., show_default=False,
                                      help="DVC experiments (names of `dvc exp show`)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="say what would be deleted; delete nothing."),
) -> None:
    """Forget experiments: `dvc exp remove` them, and delete (as the MLflow UI does) their MLflow
    runs, registered model versions and logged models. Run in the project's root; then
    `dvc gc` and `mlflow gc` (printed) free the disk space."""
    from srcore.drop import drop as drop_experiments
    from srcore.tracking import project_root, tracking_uri

    for line in drop_experiments(project_root(), names, tracking_uri(), dry_run):
        print(line)


@app.command()
def benchmark(
    params: Path = PARAMS,
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON instead."),
    device: str = typer.Option(None, "--device", show_default=False,
                               help="auto, cpu or cuda (default: train.device)."),
    compile_too: bool = typer.Option(None, "--compile/--no-compile", show_default=False,
                                     help="also time torch.compile (default: on CUDA or with "
                                          "train.compile; it costs a minute or more)."),
    overrides: list[str] = typer.Option(None, "--set", "-S", show_default=False,
                                        help="KEY=VALUE, repeatable: measure params.yaml with "
                                             "these changed, as dvc exp run -S changes them "
                                             "(e.g. -S model.rrdb=15)."),
) -> None:
    """Speed on this machine at the params.yaml config: training steps per precision, GAN
    steps, data loading, inference and evaluation (medians after warm-up; ~1-2 min on a CPU)."""
    import json

    from srcore.benchmark import run, table
    from srcore.choices import DEVICES
    from srcore.config import load_params
    from srcore.train.runtime import pick_device

    config = load_params(params, overrides or ())
    if device not in (None, *DEVICES):
        raise SrcoreError(f"--device {device}: use one of {', '.join(DEVICES)}")
    dev = pick_device(device, "--device") if device else pick_device(config.train.device)
    results = run(config, dev, lambda step: print(f"measuring: {step}", file=sys.stderr,
                                                  flush=True), compile_too)
    print(json.dumps(results, indent=2) if as_json else table(results))


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupted)
    if os.environ.get("DVC_STAGE"):  # run by DVC (not, say, by nohup from a shell that exits)
        stop_with_parent()
    try:
        app()
    except SrcoreError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        # a training loop saves its state first and says where (srcore/train/loop.py); of
        # several training processes (torchrun's RANK), which all stop together, the main says it
        if os.environ.get("RANK", "0") == "0":
            print(f"interrupted: {stop.message or 'stopped'}", file=sys.stderr)
        sys.exit(128 + stop.signum)
