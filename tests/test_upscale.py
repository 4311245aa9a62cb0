import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, run_cli
from images import photo, write_modes
from srcore.errors import SrcoreError
from srcore.infer import (MIN_TILE, choose_tile, choose_tiles_per_batch, receptive_radius, tiles,
                          upscale_array)
from srcore.models.checkpoint import load_generator, save_generator
from srcore.models.rrdb import RRDBNet
from srcore.upscale import collect_jobs, run


def tiny(skip="bicubic", seed=0):
    torch.manual_seed(seed)
    return RRDBNet(rrdb=1, features=8, growth=8, skip=skip).eval()


def far_sighted():
    """A tiny model whose output really depends on far context: a fresh init barely looks
    beyond 4 LR pixels (its residual branches start near zero), so its dense blocks and
    conv_body are made 15x stronger, and its last conv (zero at init, so that a fresh model is
    exactly bicubic) gets PyTorch's default init. Tiling with tile_pad 4 then misses by several
    8-bit levels; with 16, by well under one."""
    model = tiny()
    model.conv_last.reset_parameters()
    with torch.no_grad():
        for conv in [*model.body.modules(), model.conv_body]:
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.mul_(15)
    return model


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "cnn.pt"
    save_generator(path, tiny())
    return path


def max_diff(a, b):
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


@pytest.mark.parametrize("tile", [8, 16, 33])
def test_tiles_match_one_pass_within_one_level(tile):
    # sides no tile size divides, and 3 or more tiles a side: a middle tile's window has just
    # tile_pad of context on both sides
    model, img = far_sighted(), photo(75, 100)
    whole = upscale_array(model, img, tile=0)
    calls = []
    tiled = upscale_array(model, img, tile=tile, progress=calls.append)  # default pad 16
    assert tiled.shape == whole.shape == (300, 400, 3) and tiled.dtype == np.uint8
    assert max_diff(tiled, whole) <= 1
    assert len(calls) == len(tiles(75, 100, tile, 16)) > 1
    # the check can fail: too little context gives visible seams
    assert max_diff(upscale_array(model, img, tile=tile, tile_pad=4), whole) > 1


@pytest.mark.parametrize("mode", ["rgb", "gray", "rgba16"])
def test_batched_tiles_give_the_one_at_a_time_image(mode):
    model, img = far_sighted(), photo(64, 96)
    if mode == "gray":
        img = img[:, :, 0]
    elif mode == "rgba16":
        img = np.dstack([img, img[:, :, 1]]).astype(np.uint16) * 257
    one = upscale_array(model, img, tile=16, tiles_per_batch=1)
    n_tiles = len(tiles(64, 96, 16, 16))  # 2 x 4, all in windows of one shape
    forwards = []
    model.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    for batch in (3, 5, n_tiles + 1):
        calls, forwards[:] = [], []
        batched = upscale_array(model, img, tile=16, tiles_per_batch=batch,
                                progress=calls.append)
        assert batched.shape == one.shape and batched.dtype == one.dtype
        assert max_diff(batched, one) <= (257 if mode == "rgba16" else 1)
        assert len(calls) == n_tiles
        assert len(forwards) == -(-n_tiles // batch) and sum(forwards) == n_tiles  # full batches
    # and the default on a CPU: one tile at a time, today's pixels exactly
    assert np.array_equal(upscale_array(model, img, tile=16), one)


@pytest.mark.parametrize("height, width, tile, pad", [
    (37, 45, 8, 16), (75, 100, 33, 4), (64, 96, 16, 16), (20, 300, 64, 16), (5, 7, 32, 16),
    (339, 510, 256, 16), (1000, 1500, 32, 16), (9, 11, 1, 0)])
def test_tiles_cover_the_image_in_windows_of_one_shape_with_enough_context(height, width,
                                                                           tile, pad):
    pairs = tiles(height, width, tile, pad)
    covered = np.zeros((height, width), dtype=int)
    for (y0, y1, x0, x1), (wy0, wy1, wx0, wx1) in pairs:
        covered[y0:y1, x0:x1] += 1
        assert 0 <= wy0 <= y0 < y1 <= wy1 <= height and 0 <= wx0 <= x0 < x1 <= wx1 <= width
        # tile_pad of context on each side, or all of the image there is on that side
        assert y0 - wy0 >= min(pad, y0) and wy1 - y1 >= min(pad, height - y1)
        assert x0 - wx0 >= min(pad, x0) and wx1 - x1 >= min(pad, width - x1)
    assert (covered == 1).all()  # each pixel in exactly one box
    shapes = {(wy1 - wy0, wx1 - wx0) for _, (wy0, wy1, wx0, wx1) in pairs}
    assert len(shapes) == 1  # one batchable shape, no larger than a tile with its context
    (side_y, side_x), = shapes
    assert side_y <= min(tile + 2 * pad, height) and side_x <= min(tile + 2 * pad, width)
    # no more windows, nor window pixels, than plain tiles of `tile` pixels with their context
    # (give or take one pixel per window, from evening the boxes out)
    for axis, length in ((0, height), (2, width)):
        spans = {box[axis:axis + 2]: window[axis:axis + 2] for box, window in pairs}
        plain = [(max(a - pad, 0), min(a + tile + pad, length)) for a in range(0, length, tile)]
        assert len(spans) <= len(plain)
        assert sum(w1 - w0 for w0, w1 in spans.values()) <= sum(
            w1 - w0 for w0, w1 in plain) + len(spans)


def test_choose_tile_whole_image_when_it_fits_else_the_largest_tile_that_does():
    mib = 2 ** 20
    assert choose_tile(339, 510, 16, 10_000, 10_000 * 339 * 510 / 0.8 + 1) == 0
    assert choose_tile(2000, 3000, 16, 10_000, 80 * 1024 * mib) == 0  # 6 MP on an 80 GiB GPU
    for free in (200 * mib, 1024 * mib, 8 * 1024 * mib):
        tile = choose_tile(4000, 6000, 16, 10_000, free)
        assert tile % 32 == 0 and tile >= MIN_TILE
        assert (tile + 32) ** 2 * 10_000 <= 0.8 * free < (tile + 64) ** 2 * 10_000
    assert choose_tile(4000, 6000, 16, 10_000, 1 * mib) == MIN_TILE  # never below the minimum
    assert choose_tiles_per_batch(288 ** 2, 10_000, 80 * 1024 * mib) == 16  # the cap
    assert choose_tiles_per_batch(288 ** 2, 10_000, 4 * 1024 * mib) == 4
    assert choose_tiles_per_batch(288 ** 2, 10_000, 1 * mib) == 1


def test_tiling_is_exact_with_the_receptive_radius_as_pad():
    model = far_sighted()
    img = photo(37, 45).astype(np.uint16) * 257  # 16-bit: 1/65535 resolution
    whole = upscale_array(model, img, tile=0)
    assert whole.dtype == np.uint16
    for tile in (8, 33):
        tiled = upscale_array(model, img, tile=tile, tile_pad=receptive_radius(model))
        assert max_diff(tiled, whole) <= 8  # float rounding of different conv shapes only


@pytest.mark.parametrize("blocks", [1, 2])
def test_receptive_radius_is_the_reach_of_one_pixel(blocks):
    # a NaN reaches every output pixel that depends on it, however small the weights
    torch.manual_seed(0)
    model = RRDBNet(rrdb=blocks, features=8, growth=8).eval()
    radius = receptive_radius(model)
    assert radius == 15 * blocks + 4
    size, c = 2 * radius + 12, radius + 6
    x = torch.rand(1, 3, size, size)
    x[..., c, c] = float("nan")
    with torch.no_grad():
        reached = model(x).isnan().any(1)[0].nonzero() // 4 - c  # in LR pixels
    assert reached.abs().max().item() == radius


def test_basicsr_layout_checkpoints_give_the_same_images(tmp_path):
    model = tiny(skip="none")  # foreign files load with skip "none"
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the same names as BasicSR
    save_generator(tmp_path / "ours.pt", model)
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"params_ema": state, "iter": 1}, tmp_path / "ema.pth")
    img = photo(20, 28)
    outputs = []
    for name in ("ours.pt", "plain.pth", "ema.pth"):
        loaded, _ = load_generator(tmp_path / name)
        assert loaded.config == {"rrdb": 1, "features": 8, "growth": 8, "skip": "none"}
        outputs.append(upscale_array(loaded, img, tile=8))
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])


def read(path):
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


def test_every_mode_keeps_its_mode_depth_and_format(tmp_path, ckpt):
    paths = write_modes(tmp_path / "in")
    summary = run([tmp_path / "in"], tmp_path / "out", ckpt, tile=32, device="cpu",
                  precision="fp32")
    assert (summary.done, summary.failed, summary.skipped) == (6, [], [])
    out = {key: read(tmp_path / "out" / f"{p.stem}_x4{p.suffix}") for key, p in paths.items()}
    assert out["rgb"].shape == out["palette"].shape == out["jpeg"].shape == (160, 224, 3)
    assert out["gray"].shape == (160, 224) and out["gray"].dtype == np.uint8
    assert out["sixteen"].dtype == np.uint16
    # 16-bit input rgb * 257 gives the 8-bit result * 257, to the 8-bit rounding
    assert max_diff(out["sixteen"].astype(np.float64) / 257, out["rgb"]) <= 1
    assert (tmp_path / "out" / "photo_x4.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    # alpha: plain bicubic, not the network
    rgba = read(paths["rgba"])
    assert out["rgba"].shape == (160, 224, 4)
    bicubic = cv2.resize(rgba[:, :, 3], (224, 160), interpolation=cv2.INTER_CUBIC)
    assert max_diff(out["rgba"][:, :, 3], bicubic) <= 1
    # --ext: RGBA into JPEG drops alpha, 16-bit into JPEG becomes 8-bit
    summary = run([paths["rgba"], paths["sixteen"]], tmp_path / "jpg", ckpt, device="cpu",
                  ext="JPG")
    assert summary.done == 2
    assert read(tmp_path / "jpg" / "rgba_x4.jpg").shape == (160, 224, 3)
    assert read(tmp_path / "jpg" / "sixteen_x4.jpg").dtype == np.uint8


def test_auto_precision_keeps_a_16_bit_image_at_fp32(tmp_path):
    """--precision auto may run 8-bit images in bf16 (where the CPU or GPU runs it natively),
    whose 8 significant bits would lose most of a 16-bit image's precision: 16-bit images get
    the fp32 result, on any machine."""
    path = tmp_path / "far.pt"
    save_generator(path, far_sighted())  # a model whose output bf16 visibly changes
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "deep.png"), photo(40, 56).astype(np.uint16) * 257)
    for precision in ("auto", "fp32"):
        assert run([folder], tmp_path / precision, path, device="cpu",
                   precision=precision).done == 1
    auto, fp32 = (read(tmp_path / p / "deep_x4.png") for p in ("auto", "fp32"))
    assert auto.dtype == np.uint16 and np.array_equal(auto, fp32)


def test_output_folder_may_be_the_input_folder_unless_names_collide(tmp_path, ckpt):
    folder = tmp_path / "photos"
    write_modes(folder)
    assert run([folder], folder, ckpt, device="cpu").done == 6
    assert (folder / "rgb_x4.png").is_file()
    # a second run: the earlier results beside their sources are not inputs again
    again = run([folder], folder, ckpt, device="cpu")
    assert (again.done, len(again.skipped)) == (0, 6)  # output exists
    assert run([folder], folder, ckpt, device="cpu", overwrite=True).done == 6
    assert run([folder], tmp_path / "other", ckpt, device="cpu").done == 6
    assert not list(folder.glob("*_x4_x4*")) and not list((tmp_path / "other").glob("*_x4_x4*"))
    # a lone foo_x4.png (its foo.png is not there) is an input; files given by name are too
    assert cv2.imwrite(str(folder / "lone_x4.png"), photo(8, 8))
    assert [job.src.name for job in collect_jobs([folder], tmp_path / "o")
            if "_x4" in job.src.name] == ["lone_x4.png"]
    with pytest.raises(SrcoreError, match="_x4.png, which is one of the inputs"):
        collect_jobs([folder / "rgb.png", folder / "rgb_x4.png"], folder)
    (tmp_path / "two").mkdir()
    for name in ("a.png", "a.jpg"):
        cv2.imwrite(str(tmp_path / "two" / name), photo(8, 8))
    assert len(collect_jobs([tmp_path / "two"], tmp_path / "o")) == 2
    with pytest.raises(SrcoreError, match="would both be written to"):
        collect_jobs([tmp_path / "two"], tmp_path / "o", ext="png")
    assert len(collect_jobs([folder / "rgb.png", tmp_path / "photos/rgb.png"], folder)) == 1
    nested = tmp_path / "nested" / "a" / "b"
    nested.mkdir(parents=True)
    cv2.imwrite(str(nested / "x.png"), photo(8, 8))
    assert collect_jobs([tmp_path / "nested"], tmp_path / "o", recursive=True)[0].dst == \
        tmp_path / "o" / "a" / "b" / "x_x4.png"
    with pytest.raises(SrcoreError, match="no images found"):
        collect_jobs([tmp_path / "nested"], tmp_path / "o")
    # earlier results in an output folder inside the input folder are not inputs
    (tmp_path / "nested" / "up").mkdir()
    assert cv2.imwrite(str(tmp_path / "nested" / "up" / "x_x4.png"), photo(8, 8))
    jobs = collect_jobs([tmp_path / "nested"], tmp_path / "nested" / "up", recursive=True)
    assert [job.src.name for job in jobs] == ["x.png"]


def test_earlier_results_of_another_format_are_not_inputs_again(tmp_path):
    # upscale DIR -o DIR, then again with --ext png: b_x4.jpg beside b.jpg is a result too, not
    # an image to upscale once more (to b_x4_x4.png, 16x)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "a_x4.png", "b.jpg", "b_x4.jpg", "c.gif", "c_x4.png", "lone_x4.jpg"):
        Image.fromarray(photo(8, 8)).save(folder / name)
    for ext in (None, "png", "jpg", "webp"):
        jobs = collect_jobs([folder], folder, ext=ext)
        assert sorted(job.src.name for job in jobs) == ["a.png", "b.jpg", "c.gif", "lone_x4.jpg"]


def test_cli_skips_bad_files_and_existing_outputs(tmp_path, ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), photo(12, 16))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    args = ("upscale", folder, "-o", "out", "--model", ckpt, "--device", "cpu")
    result = run_cli(*args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert "broken.png" in result.stderr
    assert "upscaled 1 image(s), 1 failed" in result.stdout
    assert result.stdout.rstrip().endswith(" -> out/")  # where, also for a terminal's run
    # not a terminal (a log file): one plain line per finished image instead of a bar
    assert "[2/2] out/good_x4.png (" in result.stderr
    good = tmp_path / "out" / "good_x4.png"
    assert read(good).shape == (48, 64, 3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_x4.png"]

    before = good.stat().st_mtime_ns
    result = run_cli(*args[:1], folder / "good.png", *args[2:], cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "good_x4.png exists; pass --overwrite" in result.stderr
    assert good.stat().st_mtime_ns == before
    summary = run([folder / "good.png"], tmp_path / "out", ckpt, overwrite=True)  # in-process
    assert (summary.done, summary.failed, summary.skipped) == (1, [], [])
    assert good.stat().st_mtime_ns != before


def test_cli_refuses_a_checkpoint_that_is_not_an_rrdbnet(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "classifier.pt")
    result = run_cli("upscale", "a.png", "-o", "out", "--model", "classifier.pt",
                     cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "classifier.pt: not an RRDBNet checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_names_a_missing_input(tmp_path, ckpt):
    result = run_cli("upscale", "nowhere.png", "-o", "out", "--model", ckpt,
                     cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "nowhere.png: no such file or folder" in result.stderr


MEMORY_SCRIPT = """
import json, sys
import numpy as np, torch
from srcore.infer import upscale_array
from srcore.models.rrdb import RRDBNet

torch.manual_seed(0)
model = RRDBNet(rrdb=1, features=8, growth=8).eval()
img = np.random.default_rng(0).integers(0, 256, (750, 1000, 3), dtype=np.uint8)
upscale_array(model, img[:200, :200], tile=64, tile_pad=4)  # warm up at the tile size
rss = int(open("/proc/self/statm").read().split()[1]) * 4096
out = upscale_array(model, img, tile=64, tile_pad=4)
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report pytest's own peak
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"growth": peak - rss, "out": out.nbytes, "shape": out.shape}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_large_image_memory_depends_on_the_tile_not_the_image(tmp_path):
    # A 1000x750 input gives a 4000x3000 output: 34 MiB as uint8. The float32 output alone
    # would be 137 MiB, and a one-pass forward would hold several 8-channel float maps of the
    # output's size (366 MiB each), over 1 GiB. Tiled, the peak grows by the uint8 output plus
    # a few tile-sized buffers: measured 47-56 MiB. The bound is the float output's size.
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["shape"] == [3000, 4000, 3]
    float_output = 3000 * 4000 * 3 * 4
    assert stats["out"] <= stats["growth"] < float_output, stats


def test_cli_refuses_fp16_on_a_cpu_before_any_image(tmp_path, ckpt):
    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    result = run_cli("upscale", "a.png", "-o", "out", "--model", ckpt, "--device", "cpu",
                     "--precision", "fp16", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "--precision=fp16 needs a CUDA GPU (CPUs run fp16 convolutions slowly" in result.stderr
    assert "gradient scaling" not in result.stderr  # that is training's reason
    assert not (tmp_path / "out" / "a_x4.png").exists()


def test_bf16_upscale_stays_close_to_fp32():
    model, img = far_sighted(), photo(20, 24)
    fp32 = upscale_array(model, img, tile=0, precision="fp32")
    bf16 = upscale_array(model, img, tile=0, precision="bf16")
    print(f"bf16 vs fp32: mean {np.abs(bf16.astype(int) - fp32).mean():.2f} levels, "
          f"max {max_diff(bf16, fp32)}")
    assert np.abs(bf16.astype(int) - fp32).mean() < 1.5



def test_upscale_array_auto_is_the_commands_auto_and_a_bad_precision_is_refused():
    # torch's autocast takes any precision but fp32 as fp16: "auto" (or a typo) ran fp16
    from srcore.train.runtime import pick_precision

    model, seen = tiny(), []
    model.conv_first.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    upscale_array(model, photo(20, 24), device="auto", precision="auto")
    auto = pick_precision("auto", torch.device("cpu"))  # bf16 on a CPU that runs it natively
    assert seen == [torch.bfloat16 if auto == "bf16" else torch.float32]
    seen.clear()
    upscale_array(model, photo(20, 24).astype(np.uint16) * 257, precision="auto")
    assert seen == [torch.float32]  # a 16-bit image keeps its precision, as upscale's auto
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, "
                                         "not 'fp23'"):
        upscale_array(model, photo(20, 24), precision="fp23")

@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(5000), b""])
def test_a_model_file_of_random_bytes_is_not_a_checkpoint(tmp_path, content):
    (tmp_path / "junk.pt").write_bytes(content)
    with pytest.raises(SrcoreError) as caught:
        load_generator(tmp_path / "junk.pt")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'junk.pt'}: not a PyTorch checkpoint")
    assert "weights_only" not in message and "issue" not in message


def test_cli_tile_auto_on_a_cpu_is_256_and_a_bad_tile_is_named(tmp_path, ckpt):
    cv2.imwrite(str(tmp_path / "a.png"), photo(12, 16))
    result = run_cli("upscale", "a.png", "-o", "out", "--model", ckpt, "--device", "cpu",
                     "--tile", "auto", cwd=tmp_path)
    assert "tile auto: 256, pad 16" in result.stderr
    assert read(tmp_path / "out" / "a_x4.png").shape == (48, 64, 3)
    result = run_cli("upscale", "a.png", "-o", "out", "--model", ckpt, "--tile", "abc",
                     cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--tile abc: use auto" in result.stderr


def test_a_tiny_tile_is_refused_before_any_image(tmp_path, ckpt):
    cv2.imwrite(str(tmp_path / "a.png"), photo(200, 300))
    result = run_cli("upscale", "a.png", "-o", "out", "--model", ckpt, "--tile", "1",
                     cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--tile 1 is below the minimum of 32" in result.stderr
    assert not (tmp_path / "out").exists()


def test_many_tiles_warn_and_slow_images_show_progress_over_tiles(tmp_path, ckpt, capsys,
                                                                   monkeypatch):
    import srcore.upscale as upscale_module

    monkeypatch.setattr(upscale_module, "MANY_TILES", 4)  # warn from 4 tiles on
    monkeypatch.setattr(upscale_module, "TILE_BAR_DELAY", 0)  # every image counts as slow
    cv2.imwrite(str(tmp_path / "a.png"), photo(128, 192))  # 3 x 5 tiles with 16 of context
    summary = run([tmp_path / "a.png"], tmp_path / "out", ckpt, tile=32, device="cpu")
    assert summary.done == 1
    err = capsys.readouterr().err
    assert "a.png: 15 tiles of 32 pixels" in err and "a larger --tile" in err
    assert "tile/s]" in err and "/15 [" in err  # the bar over tiles, shown in a log too


def test_a_pass_that_would_not_fit_in_memory_on_a_cpu_is_refused_not_killed(tmp_path, ckpt,
                                                                             capsys, monkeypatch):
    # --tile 0 on a camera photo needs tens of GB on a CPU (measured: 2.4 KB per LR pixel at
    # 16 features, so a 12 MP photo wants 29 GB); the system's OOM killer would end the run
    # with nothing said, so the image is refused first, naming the way out
    import srcore.infer as infer
    import srcore.io as io

    cv2.imwrite(str(tmp_path / "a.png"), photo(150, 200))  # tiny(): 8 features
    whole = infer.host_pass_bytes(load_generator(ckpt)[0], 150 * 200)
    assert whole == (2 * 8 + 6) * 16 * 4 * 150 * 200
    monkeypatch.setattr(io, "available_memory", lambda: whole // 2)
    summary = run([tmp_path / "a.png"], tmp_path / "out", ckpt, tile=0, device="cpu")
    assert summary.failed == [tmp_path / "a.png"] and not (tmp_path / "out/a_x4.png").exists()
    err = capsys.readouterr().err
    assert "failed: " + str(tmp_path / "a.png") + ": out of memory: 200x150 needs about" in err
    assert "the whole image in one pass" in err and "use a smaller --tile" in err
    assert run([tmp_path / "a.png"], tmp_path / "out", ckpt, tile=32, device="cpu").done == 1
    # an output image that does not fit by itself: no tile size helps
    monkeypatch.setattr(io, "available_memory", lambda: 150 * 200 * 3 * 16)
    summary = run([tmp_path / "a.png"], tmp_path / "out2", ckpt, tile=32, device="cpu")
    assert summary.failed and "upscale a smaller image" in capsys.readouterr().err
    # on a GPU the pass is in GPU memory; the output image is still on the host
    from srcore.upscale import _check_host_memory

    img = photo(150, 200)
    with pytest.raises(SrcoreError, match="upscale a smaller image"):
        _check_host_memory(tmp_path / "a.png", tiny(), img, (0, 150, 0, 200), 0, on_cpu=False)
    monkeypatch.setattr(io, "available_memory", lambda: whole // 2)
    _check_host_memory(tmp_path / "a.png", tiny(), img, (0, 150, 0, 200), 0, on_cpu=False)


def test_an_output_too_large_for_its_format_is_refused_before_upscaling(tmp_path, ckpt,
                                                                       capsys, monkeypatch):
    # WebP holds at most 16383 pixels a side (JPEG 65500): a 6000x4000 WebP photo's result,
    # 24000x16000, was computed for minutes and then refused by the encoder
    import srcore.infer as infer

    def never(*args, **kwargs):
        raise AssertionError("upscaled although the output cannot be written")

    monkeypatch.setattr(infer, "upscale_array", never)
    cv2.imwrite(str(tmp_path / "wide.webp"), photo(8, 4100))
    cv2.imwrite(str(tmp_path / "long.png"), photo(4100, 8))
    summary = run([tmp_path / "wide.webp", tmp_path / "long.png"], tmp_path / "out", ckpt,
                  device="cpu", ext="webp")
    # nothing written: the output folder the run made is not left behind, empty
    assert len(summary.failed) == 2 and not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()  # but a folder the user made stays
    run([tmp_path / "long.png"], tmp_path / "mine", ckpt, device="cpu")
    assert (tmp_path / "mine").is_dir()
    err = capsys.readouterr().err
    assert (f"failed: {tmp_path / 'wide.webp'}: the 4x result would be 16400x32, over webp's "
            "limit of 16383 pixels a side; use --ext png") in err


def test_animated_images_are_refused_and_gifs_in_folders_are_counted(tmp_path, ckpt):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    frames = [Image.fromarray(photo(12, 16, seed=i)) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(folder / "still.gif")
    summary = run([folder], tmp_path / "out", ckpt, device="cpu")
    assert summary.done == 1 and summary.failed == [folder / "anim.gif"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["still_x4.png"]
    result = run_cli("upscale", folder / "anim.gif", "-o", "out2", "--model", ckpt,
                     cwd=tmp_path, check=False)
    assert result.returncode == 2 and "upscaled 0 image(s), 1 failed" in result.stdout
    assert "anim.gif: animated or multi-frame image (3 frames)" in result.stderr


@pytest.mark.parametrize("output, message", [
    ("taken.png", "-o taken.png is a file; give a folder"),
    ("taken.png/sub", "-o taken.png/sub: taken.png is a file; give a folder"),
    ("/proc/srcore-test", "-o /proc/srcore-test: cannot create the folder")])
def test_an_output_that_is_no_folder_is_refused_before_any_image(tmp_path, ckpt, output,
                                                                  message):
    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    (tmp_path / "taken.png").write_bytes(b"keep")
    result = run_cli("upscale", "a.png", "-o", output, "--model", ckpt, "--device", "cpu",
                     cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert "model:" not in result.stderr and "upscaled" not in result.stdout  # no image tried
    assert (tmp_path / "taken.png").read_bytes() == b"keep"


@pytest.mark.parametrize("args, name", [
    (("upscale", "", "-o", "out", "--model", "cnn.pt"), "'inputs'"),
    (("upscale", "a.png", "-o", "", "--model", "cnn.pt"), "'-o' / '--output'"),
    (("upscale", "a.png", "-o", "out", "--model", ""), "'--model'"),
    (("compare", "a.png", "", "--no-lpips"), "'test'"),
    (("export", "cnn.pt", "-o", ""), "'-o' / '--output'")])
def test_an_empty_path_is_refused_not_taken_as_the_current_folder(tmp_path, ckpt, args, name):
    # e.g. "$OUT" with OUT unset
    cv2.imwrite(str(tmp_path / "a.png"), photo(40, 40))
    result = run_cli(*args, cwd=tmp_path, check=False)
    words = " ".join(result.stderr.replace("│", " ").split())  # undo the error box's wrapping
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"Invalid value for {name}: an empty path" in words, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "cnn.pt"]


def test_device_cuda_without_a_gpu_is_refused_before_any_image(tmp_path, ckpt):
    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    result = run_cli("upscale", "a.png", "-o", "out", "--model", ckpt, "--device", "cuda",
                     cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""}, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "error: --device cuda but no CUDA GPU is available; use auto or cpu" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused_before_any_image(tmp_path, value):
    state = {k: v.clone() for k, v in tiny(skip="none").state_dict().items()}
    state["conv_first.weight"][0, 0, 0, 0] = value
    torch.save({"params_ema": state}, tmp_path / "broken.pth")  # BasicSR style
    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    result = run_cli("upscale", "a.png", "-o", "out", "--model", "broken.pth", "--device", "cpu",
                     cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("broken.pth: weights hold NaN or infinite values (conv_first.weight)"
            in result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (("compare", "folder", "a.png", "--no-lpips"), "folder: is a folder; give an image file"),
    (("upscale", "a.png", "-o", "out", "--model", "folder"),
     "folder: is a folder; give a checkpoint"),
    (("export", "folder", "-o", "a.onnx"), "folder: is a folder; give a checkpoint"),
    (("check-params", "--params", "folder"), "folder: is a folder; pass the params file")])
def test_a_folder_where_a_file_is_expected_is_called_a_folder(tmp_path, args, message):
    (tmp_path / "folder").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), photo(40, 40))
    result = run_cli(*args, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert "not found" not in result.stderr


def test_broken_links_and_link_loops_are_failed_by_name(tmp_path, ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), photo(12, 16))
    (folder / "broken.png").symlink_to("gone.png")
    (folder / "loop.png").symlink_to("loop.png")
    (tmp_path / "given.jpg").symlink_to("/nowhere/given.jpg")
    result = run_cli("upscale", folder, "given.jpg", "-o", "out", "--model", ckpt,
                     "--device", "cpu", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"failed: {folder / 'broken.png'}: broken symbolic link to gone.png; fix or remove it" \
        in result.stderr
    assert f"{folder / 'loop.png'}: symbolic link loop (to loop.png); fix or remove it" \
        in result.stderr
    assert "given.jpg: broken symbolic link to /nowhere/given.jpg" in result.stderr
    assert "upscaled 1 image(s), 3 failed" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_x4.png"]


def test_an_output_name_taken_by_a_folder_is_refused_before_any_image(tmp_path, ckpt):
    cv2.imwrite(str(tmp_path / "b.bmp"), photo(12, 16))
    (tmp_path / "out" / "b_x4.bmp").mkdir(parents=True)
    result = run_cli("upscale", "b.bmp", "-o", "out", "--model", ckpt, "--overwrite",
                     cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("the output of b.bmp would be out/b_x4.bmp, which is a folder; rename or remove "
            "that folder") in result.stderr
    assert "model:" not in result.stderr and "upscaled" not in result.stdout  # nothing computed


def test_a_truncated_png_is_one_line_without_decoder_noise(tmp_path, ckpt):
    ok, data = cv2.imencode(".png", photo(400, 600))  # several IDAT chunks: libpng complains
    (tmp_path / "cut.png").write_bytes(data.tobytes()[:len(data) // 2])
    result = run_cli("upscale", "cut.png", "-o", "out", "--model", ckpt, "--device", "cpu",
                     cwd=tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[1:] == ["failed: cut.png: image data is corrupt or truncated; remove or "
                         "replace it"], result.stderr  # after the model line, nothing else


def test_gray_with_alpha_becomes_rgba_with_a_note(tmp_path, ckpt):
    from PIL import Image

    gray = photo(12, 16)[:, :, :2]
    Image.fromarray(gray).save(tmp_path / "la.png")  # PIL mode LA
    result = run_cli("upscale", "la.png", "-o", "out", "--model", ckpt, "--device", "cpu",
                     cwd=tmp_path)
    assert "out/la_x4.png: gray+alpha written as RGBA" in result.stderr
    out = read(tmp_path / "out" / "la_x4.png")
    assert out.shape == (48, 64, 4)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 0],
                                                                         out[:, :, 2])


def test_a_colour_profile_is_kept_in_png_and_jpeg_and_its_loss_noted_elsewhere(tmp_path, ckpt):
    # a Display P3 or Adobe RGB photo shown without its profile has other colours
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = photo(40, 56)
    Image.fromarray(rgb).save(folder / "a.png", icc_profile=icc)
    Image.fromarray(rgb).save(folder / "b.jpg", icc_profile=icc, quality=95)
    Image.fromarray(rgb).save(folder / "c.webp", icc_profile=icc, lossless=True)
    cv2.imwrite(str(folder / "d.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)  # no profile
    result = run_cli("upscale", folder, "-o", tmp_path / "out", "--model", ckpt, "--device",
                     "cpu", cwd=tmp_path)
    for name in ("a_x4.png", "b_x4.jpg"):
        with Image.open(tmp_path / "out" / name) as out:
            assert out.info.get("icc_profile") == icc and out.size == (224, 160)
            out.load()  # the files stay valid (chunk CRC, JPEG segments)
    assert "c_x4.webp: colour profile dropped" in result.stderr
    # a profile for other samples than the output's (a CMYK JPEG's, now RGB) is not copied
    cmyk_icc = icc[:16] + b"CMYK" + icc[20:]
    Image.fromarray(rgb).convert("CMYK").save(folder / "e.jpg", icc_profile=cmyk_icc)
    result = run_cli("upscale", folder / "e.jpg", "-o", tmp_path / "out", "--model", ckpt,
                     "--device", "cpu", cwd=tmp_path)
    assert "e_x4.jpg: colour profile dropped (a CMYK profile does not fit RGB" in result.stderr
    with Image.open(tmp_path / "out" / "e_x4.jpg") as out:
        assert out.mode == "RGB" and "icc_profile" not in out.info
    with Image.open(tmp_path / "out" / "d_x4.png") as out:
        assert "icc_profile" not in out.info
    # the pixels are those of a file without a profile
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(rgb).save(plain / "a.png")
    run_cli("upscale", plain, "-o", tmp_path / "out2", "--model", ckpt, "--device", "cpu",
            cwd=tmp_path)
    assert np.array_equal(read(tmp_path / "out" / "a_x4.png"), read(tmp_path / "out2" / "a_x4.png"))


def test_the_readme_python_snippet_gives_the_commands_pixels(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme.split("### In Python", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "models").mkdir()
    save_generator(tmp_path / "models" / "gan.pt", tiny())
    cv2.imwrite(str(tmp_path / "photo.jpg"), photo(300, 280)[:, :, ::-1])  # over one 256 tile
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet, namespace)
    run_cli("upscale", "photo.jpg", "-o", "out", "--model", "models/gan.pt", "--device", "cpu",
            "--precision", "fp32", "--ext", "png", cwd=tmp_path)  # PNG: no lossy re-encoding
    assert namespace["sr"].shape == (1200, 1120, 3) and namespace["sr"].dtype == np.uint8
    assert np.array_equal(namespace["sr"], read(tmp_path / "out" / "photo_x4.png")[:, :, ::-1])


def test_the_readme_metrics_snippet_gives_compares_scores(tmp_path, monkeypatch, weights_dir):
    readme = (REPO / "README.md").read_text()
    section = readme.split("### In Python", 1)[1].split("\n## ", 1)[0]
    snippet = section.split("```python\n")[2].split("```", 1)[0]
    hr = photo(40, 48)
    sr = np.clip(hr.astype(int) + np.random.default_rng(0).integers(-9, 10, hr.shape), 0, 255)
    cv2.imwrite(str(tmp_path / "hr.png"), hr[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "sr.png"), sr.astype(np.uint8)[:, :, ::-1])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "pretrained").symlink_to(weights_dir)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet, namespace)
    result = run_cli("compare", "hr.png", "sr.png", "--json", cwd=tmp_path)
    assert namespace["scores"] == pytest.approx(json.loads(result.stdout), abs=1e-12)
