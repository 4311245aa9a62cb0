import math

import numpy as np
import pytest

from srcore.plots import drawn, gaps, read_columns, smoothed, write_curves


def test_smoothing_is_a_debiased_moving_average():
    assert smoothed(np.array([2.0, 2.0, 2.0])).tolist() == pytest.approx([2.0, 2.0, 2.0])
    # second value: (0.9 * 0.1 * 1 + 0.1 * 3) / (0.9 * 0.1 + 0.1) = 0.39 / 0.19
    assert smoothed(np.array([1.0, 3.0]))[1] == pytest.approx(0.39 / 0.19)


def test_empty_cells_are_missing_not_zero(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,loss,psnr\n10,0.5,\n20,0.4,29.1\n")
    columns = read_columns(path)
    assert columns["step"].tolist() == [10, 20]
    assert math.isnan(columns["psnr"][0]) and columns["psnr"][1] == 29.1


def test_curves_are_written_as_a_png(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,loss,lr\n" + "".join(f"{s},{1 / s},0.001\n" for s in range(1, 40)))
    out = tmp_path / "plots" / "curves.png"
    write_curves(out, "test", [("loss", path, ["loss"], True), ("lr", path, ["lr"], False),
                               ("missing", tmp_path / "none.csv", ["x"], False),
                               ("val", path, ["psnr"], False)])
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert not list(out.parent.glob(".*.tmp"))


def test_a_pause_in_a_series_breaks_its_line():
    # G logged at 10..50 and 110..150, D's steps between: one break, before step 110
    steps = np.array([10, 20, 30, 40, 50, 110, 120, 130, 140, 150], dtype=float)
    assert gaps(steps).tolist() == [5]
    assert gaps(np.arange(10, 410, 10, dtype=float)).tolist() == []


def test_smoothing_restarts_after_a_pause():
    """G's adversarial loss of one phase must not bias the next phase's smoothed curve."""
    steps = np.array([10, 20, 30, 110, 120, 130], dtype=float)
    x, raw, smooth = drawn(steps, np.array([0.9, 0.9, 0.9, 0.7, 0.7, 0.7]), smooth=True)
    assert np.isnan(x[3]) and np.isnan(raw[3]) and np.isnan(smooth[3])
    assert smooth[4:].tolist() == pytest.approx([0.7, 0.7, 0.7])
    assert drawn(steps, np.ones(6), smooth=False)[2] is None
