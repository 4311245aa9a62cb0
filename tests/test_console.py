"""What users see on the console: progress in a terminal and in log files (dvc repro, CI,
dvc queue logs), without floods or library noise."""
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
