import sqlite3

import pytest

from srcore.errors import SrcoreError
from srcore.tracking import flatten, stage_run, tracking_uri


def test_uri_follows_dvc_root_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking_uri() == "sqlite:////elsewhere.db"


def test_flatten_uses_dotted_names():
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}}) == {"a": 1, "b.c": 2, "b.d.e": 3}


def test_stage_run_records_params_tags_and_absolute_artifacts(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-exp")
    with stage_run("split", "demo", {"split": {"train": 7}}) as mlflow:
        mlflow.log_metric("images", 11)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        tags = dict(db.execute("select key, value from tags"))
        params = dict(db.execute("select key, value from params"))
        location = db.execute("select artifact_location from experiments "
                              "where name = 'demo'").fetchone()[0]
    assert tags["stage"] == "split" and tags["dvc_experiment"] == "lucky-exp"
    assert "git_commit" in tags and params == {"split.train": "7"}
    assert location == (tmp_path / "mlruns").as_uri()


def test_unusable_store_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    with pytest.raises(SrcoreError, match="MLFLOW_TRACKING_URI"):
        with stage_run("split", "demo", {}):
            pass
