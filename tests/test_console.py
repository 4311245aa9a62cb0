"""What users see on the console: progress in a terminal and in log files (dvc repro, CI,
dvc queue logs), without floods or library noise."""
import pytest

from srcore.train.cnn import train_cnn
from test_train_cnn import setup


def test_training_shows_its_steps_in_a_log_file_without_a_line_per_step(tmp_path, capfd):
    """stderr is no terminal here, as under dvc repro: the step bar is still drawn (a long run
    must show that it moves) but at most every LOG_FILE_INTERVAL s, not at every step."""
    model, data, val, cnn, train, kw = setup(tmp_path, steps=30, cnn__val_every=30,
                                             train__checkpoint_every=30)
    train_cnn(model, data, val, cnn, train, **kw)
    err = capfd.readouterr().err
    assert "30/30" in err
    assert err.count("\r") < 8  # the first draw, the last, the validation's redraw: not 30


def test_registering_a_generator_prints_no_library_warning(monkeypatch, tmp_path, capfd):
    """MLflow's warning that pickled models run code when loaded is about the format srcore
    chose (the only one that keeps any image size), nothing a user can act on."""
    from srcore.models.rrdb import RRDBNet
    from srcore.tracking import log_generator, stage_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with stage_run("train_cnn", "demo", {}) as run_mlflow:
        log_generator(run_mlflow, RRDBNet(1, 8, 8), "srcore-cnn")
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err and "Pickle" not in captured.err, captured.err


def test_a_long_loop_in_a_log_file_redraws_its_bar_now_and_then_not_every_tenth_of_a_second(
        tmp_path, capfd, monkeypatch):
    """downsample's bar (as download's of a 4 GB zip, decode's and evaluate's) in a log file:
    each redraw stays there (dvc queue logs shows each as a line), so a minute-long run must
    not leave hundreds. Here each image takes 0.05 s: 40 of them would redraw ~20 times at
    tqdm's default 0.1 s."""
    import time

    import cv2

    import srcore.data.prepare as prepare
    from images import photo

    sources = []
    for i in range(40):
        cv2.imwrite(str(tmp_path / f"{i}.png"), photo(16, 16, seed=i))
        sources.append((str(i), tmp_path / f"{i}.png"))
    read = prepare.read_image
    monkeypatch.setattr(prepare, "read_image", lambda path: (time.sleep(0.05), read(path))[1])
    monkeypatch.setattr(prepare.os, "cpu_count", lambda: 1)
    out = tmp_path / "hr"
    out.mkdir()
    prepare.downsample_all(sources, out, max_side=16, scale=4)
    err = capfd.readouterr().err
    assert "40/40" in err and err.count("\r") < 6, err.count("\r")


@pytest.mark.parametrize("loop", ["training", "downsample"])
def test_a_finished_bar_is_in_a_log_file_once(tmp_path, capfd, monkeypatch, loop):
    """tqdm's close redraws the finished bar; when the last step came bar_interval() after the
    draw before (any long run in a log file), that step had drawn it already: two 100% lines.
    An interval of 0 s makes every step such a step."""
    import cv2

    import srcore.data.prepare as prepare
    import srcore.io
    from images import photo

    monkeypatch.setattr(srcore.io, "bar_interval", lambda: 0)
    if loop == "training":
        model, data, val, cnn, train, kw = setup(tmp_path, steps=4, cnn__val_every=4,
                                                 train__checkpoint_every=4)
        train_cnn(model, data, val, cnn, train, **kw)
        total = 4
    else:
        sources = []
        for i in range(3):
            cv2.imwrite(str(tmp_path / f"{i}.png"), photo(16, 16, seed=i))
            sources.append((str(i), tmp_path / f"{i}.png"))
        (tmp_path / "hr").mkdir()
        prepare.downsample_all(sources, tmp_path / "hr", max_side=16, scale=4)
        total = 3
    err = capfd.readouterr().err
    assert err.count(f"{total}/{total}") == 1, err
    assert err.count(f"1/{total}") == 1, err  # each count once: tqdm.write redrew it too
