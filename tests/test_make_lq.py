"""`make-lq`, `upscale` and `compare` by hand give evaluate's per-image row exactly: the user's
route to checking a reported number."""

import json

import numpy as np
import pytest
import torch

from srcore.errors import SrcoreError
from srcore.evaluate import evaluate, make_lq, model_upscaler
from srcore.io import read_rgb8, write_png
from srcore.models.checkpoint import save_generator
from srcore.models.rrdb import RRDBNet
from srcore.pretrained import load_lpips

from conftest import run_cli
from images import photo


def trained_looking(seed=0):
    """A tiny RRDBNet whose weights move its output well away from its bicubic skip, so that
    a different LQ or rounding shows in the scores."""
    torch.manual_seed(seed)
    model = RRDBNet(rrdb=1, features=8, growth=8).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    return model


@pytest.mark.parametrize("kernel", ["bicubic", "area"])
def test_by_hand_reproduces_evaluate_row(kernel, weights_dir, tmp_path):
    gt = photo(96, 128, seed=3)
    write_png(tmp_path / "gt.png", gt)
    model = trained_looking()
    save_generator(tmp_path / "g.pt", model)
    row = evaluate({"g": model_upscaler(model, "cpu", "fp32")}, {"gt": gt}, 4, kernel, 4,
                   load_lpips(weights_dir))[0]

    run_cli("make-lq", tmp_path / "gt.png", "-o", tmp_path / "lq", "--kernel", kernel,
            cwd=tmp_path)
    lq = read_rgb8(tmp_path / "lq" / "gt.png")
    assert np.array_equal(lq, make_lq(gt, 4, kernel))
    run_cli("upscale", tmp_path / "lq" / "gt.png", "-o", tmp_path / "sr", "--model",
            tmp_path / "g.pt", "--precision", "fp32", "--device", "cpu", cwd=tmp_path)
    scores = json.loads(run_cli("compare", tmp_path / "gt.png", tmp_path / "sr" / "gt_x4.png",
                                "--json", "--weights", weights_dir, cwd=tmp_path).stdout)
    assert row["psnr_y"] < 40  # the model does change the image
    assert scores == pytest.approx({k: row[k] for k in scores}, abs=1e-9)


def test_make_lq_refuses_sides_not_divisible_by_4_and_existing_outputs(tmp_path):
    write_png(tmp_path / "odd.png", photo(42, 56))
    result = run_cli("make-lq", tmp_path / "odd.png", "-o", tmp_path / "lq", cwd=tmp_path,
                     check=False)
    assert result.returncode != 0 and "56x42" in result.stderr and "56x40" in result.stderr
    write_png(tmp_path / "a.png", photo(40, 56))
    run_cli("make-lq", tmp_path / "a.png", "-o", tmp_path / "lq", cwd=tmp_path)
    again = run_cli("make-lq", tmp_path / "a.png", "-o", tmp_path / "lq", cwd=tmp_path,
                    check=False)
    assert again.returncode != 0 and "--overwrite" in again.stderr
    run_cli("make-lq", tmp_path / "a.png", "-o", tmp_path / "lq", "--overwrite", cwd=tmp_path)
    assert read_rgb8(tmp_path / "lq" / "a.png").shape == (10, 14, 3)


def test_make_lq_does_not_suggest_overwrite_for_an_input_it_would_replace(tmp_path):
    """An input PNG whose LQ would take its own name (-o its folder) is refused even with
    --overwrite, and the message says to choose another -o, not to pass --overwrite."""
    write_png(tmp_path / "a.png", photo(40, 56))
    for extra in ((), ("--overwrite",)):
        out = run_cli("make-lq", tmp_path / "a.png", "-o", tmp_path, *extra, cwd=tmp_path,
                      check=False)
        assert out.returncode != 0 and "choose another -o" in out.stderr, out.stderr
        assert "pass --overwrite" not in out.stderr, out.stderr
    assert read_rgb8(tmp_path / "a.png").shape == (40, 56, 3)


def test_make_lq_writes_nothing_when_a_later_input_is_cut_short(tmp_path):
    """A truncated image has a readable header: it must still stop the command before the
    first output is written, or a re-run without it is refused (output exists)."""
    from srcore.make_lq import run

    write_png(tmp_path / "a.png", photo(40, 56))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(SrcoreError, match="b.png: image data is corrupt or truncated"):
        run([tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "lq")
    assert not (tmp_path / "lq").exists() or not any((tmp_path / "lq").iterdir())
