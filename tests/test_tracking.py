import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from srcore.errors import SrcoreError
from srcore.tracking import (HTTP_LIMITS, flatten, log_generator, log_on_pipeline_run,
                             stage_run, tracking_uri)


def test_uri_follows_dvc_root_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking_uri() == "sqlite:////elsewhere.db"


def test_flatten_uses_dotted_names():
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}}) == {"a": 1, "b.c": 2, "b.d.e": 3}


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
                   cwd=root, check=True, capture_output=True)


def _project(monkeypatch, root, committed: str, workspace: str):
    """A git project at `root` (the DVC root, the store's home) whose committed params.yaml is
    `committed` and whose workspace copy is `workspace`, as before a `dvc exp run -S`."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.chdir(root)
    (root / "params.yaml").write_text(committed)
    _git(root, "init", "-q")
    _git(root, "add", "params.yaml")
    _git(root, "commit", "-qm", "baseline")
    (root / "params.yaml").write_text(workspace)


def _runs(db_path):
    """[(run name, tags, params, status)] of a store."""
    with sqlite3.connect(db_path) as db:
        runs = db.execute("select run_uuid, name, status from runs").fetchall()
        return [(name, dict(db.execute("select key, value from tags where run_uuid = ?", (i,))),
                 dict(db.execute("select key, value from params where run_uuid = ?", (i,))),
                 status) for i, name, status in runs]


def test_stages_are_child_runs_of_one_parent_per_pipeline_execution(monkeypatch, tmp_path):
    """Two stages of one `dvc exp run` share a parent named after the experiment, which holds
    every param and tags the changed ones; a plain run of other params gets a parent of its own."""
    _project(monkeypatch, tmp_path, "seed: 42\ncnn:\n  loss: l1\n  lr: 0.001\n",
             "seed: 42\ncnn:\n  loss: l2\n  lr: 0.001\n")
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-exp")
    with stage_run("split", "demo", {"split": {"train": 7}}) as mlflow:
        mlflow.log_metric("images", 11)
    with stage_run("train_cnn", "demo", {"cnn": {"loss": "l2"}}) as mlflow:
        log_on_pipeline_run(mlflow, {"cnn_psnr_y": 31.5})
    monkeypatch.delenv("DVC_EXP_NAME")
    (tmp_path / "params.yaml").write_text("seed: 7\ncnn:\n  loss: l1\n  lr: 0.001\n")
    with stage_run("split", "demo", {"split": {"train": 7}}):
        pass

    runs = _runs(tmp_path / "mlflow.db")
    parents = {name: (tags, params) for name, tags, params, status in runs
               if "mlflow.parentRunId" not in tags and status == "FINISHED"}
    assert len(parents) == 2 and len(runs) == 5
    tags, params = parents.pop("lucky-exp")
    assert params == {"seed": "42", "cnn.loss": "l2", "cnn.lr": "0.001"}
    assert tags["changed_params"] == "cnn.loss=l2" and tags["changed.cnn.loss"] == "l2"
    assert "changed.seed" not in tags and len(tags["git_commit"]) == 40
    (plain, (plain_tags, _)), = parents.items()  # the plain `dvc repro` of other params
    assert plain.startswith(tags["git_commit"][:7] + "-") and plain_tags["changed_params"] == "seed=7"
    assert plain_tags["dvc_experiment"] == "workspace (dvc repro)"
    children = [(name, t, p) for name, t, p, _ in runs if "mlflow.parentRunId" in t]
    ours = [(name, p) for name, t, p in children if t["pipeline"] == "lucky-exp"
            and t["dvc_experiment"] == "lucky-exp"]
    assert sorted(ours) == [("split (lucky-exp)", {"split.train": "7"}),
                            ("train_cnn (lucky-exp)", {"cnn.loss": "l2"})]
    assert [(name, t["pipeline"]) for name, t, _ in children if t["pipeline"] != "lucky-exp"] \
        == [(f"split ({plain})", plain)]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        parent_ids = {t["mlflow.parentRunId"] for _, t, _ in children}
        names = {db.execute("select name from runs where run_uuid = ?", (i,)).fetchone()[0]
                 for i in parent_ids}
        location = db.execute("select artifact_location from experiments "
                              "where name = 'demo'").fetchone()[0]
        default = db.execute("select lifecycle_stage from experiments "
                             "where experiment_id = 0").fetchone()[0]
    assert names == {"lucky-exp", plain}
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        logged = db.execute("select r.name, m.key, m.value from metrics m join runs r "
                            "on r.run_uuid = m.run_uuid where m.key = 'cnn_psnr_y'").fetchall()
    assert logged == [("lucky-exp", "cnn_psnr_y", 31.5)]  # on the parent: compared in the UI
    assert location == (tmp_path / "mlruns").as_uri()
    assert default == "deleted"  # MLflow's empty Default experiment, in the project's own store


def test_the_database_creation_lines_are_silent(monkeypatch, tmp_path, capfd):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with stage_run("split", "demo", {}):
        pass
    captured = capfd.readouterr()
    assert "database" not in captured.out + captured.err


def test_unusable_store_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    with pytest.raises(SrcoreError, match="MLFLOW_TRACKING_URI"):
        with stage_run("split", "demo", {}):
            pass


def test_a_damaged_project_store_is_one_line_that_names_the_file(monkeypatch, tmp_path):
    """The project's own store (MLFLOW_TRACKING_URI unset) is damaged: one line naming the
    file and what to do, not SQLAlchemy's SQL and not advice about a variable nobody set."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").write_bytes(b"not a database, " * 400)
    with pytest.raises(SrcoreError) as err:
        with stage_run("split", "demo", {}):
            pass
    message = str(err.value)
    assert "\n" not in message and "MLFLOW_TRACKING_URI" not in message
    assert f"move {tmp_path / 'mlflow.db'} aside" in message


def test_a_full_disk_under_the_store_is_one_line_that_says_so(monkeypatch, tmp_path, capsys):
    """SQLite's "database or disk is full", as SQLAlchemy raises it (its note first, then the
    SQL): the one line says the disk is full and to free space (moving the store aside would
    not help), and MLflow's logged copy of the error, traceback and SQL, is not printed."""
    import logging

    import sqlalchemy.exc

    from srcore import tracking

    def full(*args):
        orig = sqlite3.OperationalError("database or disk is full")
        err = sqlalchemy.exc.OperationalError("INSERT INTO runs (run_uuid) VALUES (?)", {}, orig)
        err.add_detail("raised as a result of Query-invoked autoflush")
        logging.getLogger("mlflow.store.db.utils").exception("SQLAlchemy database error")
        raise err from orig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "_parent_run", full)
    with pytest.raises(SrcoreError) as err:
        with stage_run("split", "demo", {}):
            pass
    assert str(err.value) == (f"MLflow tracking store 'sqlite:///{tmp_path / 'mlflow.db'}' is "
                              "not usable (database or disk is full): free space on the disk "
                              "that holds it, then re-run")
    assert "SQLAlchemy" not in capsys.readouterr().err


def test_a_generator_is_registered_and_loads_offline_as_a_pyfunc(monkeypatch, tmp_path):
    """What train_cnn and train_gan do with their best weights: a registered model version,
    tagged with the DVC experiment, that mlflow.pyfunc loads and runs like the torch model."""
    import mlflow
    import numpy as np
    import torch

    from srcore.models.rrdb import RRDBNet

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = RRDBNet(1, 8, 8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the zero-initialised identity of bicubic
    with stage_run("train_gan", "demo", {}) as run_mlflow:
        log_generator(run_mlflow, model, "srcore-gan")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    version, = mlflow.MlflowClient().search_model_versions("name = 'srcore-gan'")
    assert version.tags["dvc_experiment"] == "tiny-exp" and len(version.tags["git_commit"]) > 0
    loaded = mlflow.pyfunc.load_model("models:/srcore-gan/latest")
    x = np.random.default_rng(1).random((2, 3, 17, 23), dtype=np.float32)
    out = loaded.predict(x)
    assert out.shape == (2, 3, 68, 92)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(out - expected).max() < 1e-5


def test_a_resumed_run_logs_the_steps_a_killed_run_lost_and_no_step_twice(monkeypatch,
                                                                          tmp_path):
    """A killed run's background logging can keep a later step and lose an earlier one; the
    resumed run, recomputing the steps after its checkpoint, fills exactly the gaps."""
    import mlflow

    from stages.common import Records

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    with stage_run("train_cnn", "demo", {}) as run:
        for step in (5, 10, 20):  # 15 lost when the first run was killed after step 20
            run.log_metrics({"train_loss": 1 / step}, step=step)
        records = Records(run, [(tmp_path / "train.csv", ["step", "train_loss"])])
        records.start(10)  # resumed from the checkpoint of step 10
        for step in (15, 20, 25):
            records.log(step, {"train_loss": 1 / step})
        mlflow.flush_async_logging()
        history = mlflow.MlflowClient().get_metric_history(run.active_run().info.run_id,
                                                           "train_loss")
    assert sorted(m.step for m in history) == [5, 10, 15, 20, 25]


def test_the_state_keeps_each_csv_of_a_stage_and_a_resumed_run_writes_them_from_it(
        monkeypatch, tmp_path):
    """train_gan's three CSV files (G's phases, D's, validations): the history a state keeps
    holds each, and a resumed run writes each from it, whatever the files hold by then."""
    from stages.common import Records
    from stages.train_gan import D_COLUMNS, G_COLUMNS, VAL_COLUMNS

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("stages.common.sample_grid", lambda image, scale: None)
    logs = [(Path("metrics/g.csv"), G_COLUMNS), (Path("metrics/d.csv"), D_COLUMNS)]
    val = Path("metrics/val.csv")
    with stage_run("train_gan", "demo", {}) as run:
        records = Records(run, logs, val, VAL_COLUMNS)
        records.start(0)
        records.log(1, {"g_total": 1.0, "d_loss": 0.5, "phase": "G"})
        records.log(2, {"d_loss": 0.25, "phase": "D"})
        monkeypatch.setattr(run, "log_image", lambda *args: None)  # no sample grid here
        records.validated(2, {"psnr_y": 20.0, "lpips": 0.5}, None)
        saved = records.history()
        written = {path: Path(path).read_text() for path in saved}
        assert set(saved) == {"metrics/g.csv", "metrics/d.csv", "metrics/val.csv"}
        assert saved == written and "2,20,," in saved["metrics/val.csv"]
        assert saved["metrics/g.csv"].count("\n") == 2 and saved["metrics/d.csv"].count("\n") == 3
        Path("metrics/g.csv").write_text(saved["metrics/g.csv"].replace(",1,", ",7,"))  # not its
        Path("metrics/d.csv").unlink()
        Path("metrics/val.csv").write_text("step,psnr_y\n")
        resumed = Records(run, logs, val, VAL_COLUMNS)
        resumed.start(2, saved)
    assert {path: Path(path).read_text() for path in saved} == saved


def test_a_run_resumed_on_other_hardware_keeps_its_start_and_notes_the_new_setup(monkeypatch,
                                                                                 tmp_path):
    """A training killed on one machine and resumed on another (a GPU's run on a CPU, bf16 on a
    CPU without it): the start-of-run scores stay one point each, and the new device goes in
    as a tag, since MLflow refuses to change a logged param."""
    import mlflow

    from stages.common import log_start

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    with stage_run("train_cnn", "demo", {}) as run:
        run_id = run.active_run().info.run_id
        log_start(run, {"bicubic_val_psnr_y": 27.5}, "cuda", "bf16", 1)
    with stage_run("train_cnn", "demo", {}, run_id=run_id) as run:  # the resumed run
        log_start(run, {"bicubic_val_psnr_y": 27.5}, "cpu", "bf16", 1)
    client = mlflow.MlflowClient()
    data = client.get_run(run_id).data
    assert data.params["device"] == "cuda" and data.tags["resumed_device"] == "cpu"
    assert "resumed_precision_used" not in data.tags  # the same as before
    assert len(client.get_metric_history(run_id, "bicubic_val_psnr_y")) == 1


def test_a_state_naming_a_run_is_written_after_the_runs_logs(monkeypatch, tmp_path):
    import mlflow
    import torch

    from srcore.train import state as state_module

    order = []
    monkeypatch.setattr(mlflow, "flush_async_logging", lambda: order.append("flush"))
    monkeypatch.setattr(state_module, "save_atomic", lambda path, obj: order.append("save"))
    model = torch.nn.Linear(2, 2)
    state_module.save_state(tmp_path / "last.pt", "key", {"model": model},
                            {"step": 20, "mlflow_run_id": "abc"})
    state_module.save_state(tmp_path / "last.pt", "key", {"model": model},
                            {"step": 20, "mlflow_run_id": None})  # no run: nothing to flush
    assert order == ["flush", "save", "save"]


RACE = """
import os, sys, time
from srcore.tracking import stage_run
start = float(sys.argv[1])
while time.time() < start:  # every process reaches the new store at the same moment
    time.sleep(0.001)
with stage_run("download", "demo", {"data": {"source": "sample"}}):
    pass
"""


def test_experiments_started_together_on_a_new_store_all_record(tmp_path):
    """`dvc queue start -j 2` on a project without mlflow.db: the queued experiments' first
    stages create the store and the experiment at once. MLflow's set-up of a new SQLite store
    is not safe against that (its migrations collide and can leave the store unusable for
    every later run), so it is done by one process at a time."""
    import os
    import sys
    import time

    from conftest import REPO

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(DVC_ROOT=str(tmp_path), PYTHONPATH=str(REPO))
    start = str(time.time() + 15)  # after the imports of mlflow, which take seconds
    procs = [subprocess.Popen([sys.executable, "-c", RACE, start], cwd=tmp_path,
                              env={**env, "DVC_EXP_NAME": f"exp-{i}"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(3)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    assert sorted(name for name, *_ in _runs(tmp_path / "mlflow.db")) == \
        [f"download (exp-{i})" for i in range(3)] + ["exp-0", "exp-1", "exp-2"]


def test_the_repro_that_resumes_an_experiment_stays_under_its_parent(monkeypatch, tmp_path):
    """README: an interrupted `dvc exp run` is finished by `dvc repro` (no DVC_EXP_NAME), same
    commit and params: its stages join the experiment's parent, named and tagged as it is,
    rather than splitting the pipeline over two parents; a later experiment of the same params
    still gets its own."""
    _project(monkeypatch, tmp_path, "seed: 42\ncnn:\n  loss: l1\n",
             "seed: 42\ncnn:\n  loss: l2\n")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with stage_run("split", "demo", {}):  # an earlier plain run of these params
        pass
    monkeypatch.setenv("DVC_EXP_NAME", "l2-exp")
    with stage_run("train_cnn", "demo", {}):
        pass
    monkeypatch.delenv("DVC_EXP_NAME")  # the user's `dvc repro` after Ctrl-C
    with stage_run("train_gan", "demo", {}):
        pass
    monkeypatch.setenv("DVC_EXP_NAME", "l2-again")
    with stage_run("evaluate", "demo", {}):
        pass

    runs = _runs(tmp_path / "mlflow.db")
    parents = {t["pipeline_key"].split()[0] for _, t, _, _ in runs if "pipeline_key" in t}
    assert len(parents) == 3 and "l2-exp" in parents and "l2-again" in parents
    stages = {t["stage"]: (t["pipeline"], t["dvc_experiment"]) for _, t, _, _ in runs
              if "stage" in t}
    plain = stages["split"][0]
    assert stages == {"split": (plain, "workspace (dvc repro)"),
                      "train_cnn": ("l2-exp", "l2-exp"), "train_gan": ("l2-exp", "l2-exp"),
                      "evaluate": ("l2-again", "l2-again")}
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        parent_of = dict(db.execute("select r.name, p.name from runs r join tags t on "
                                    "t.run_uuid = r.run_uuid and t.key = 'mlflow.parentRunId' "
                                    "join runs p on p.run_uuid = t.value").fetchall())
    assert parent_of == {f"split ({plain})": plain, "train_cnn (l2-exp)": "l2-exp",
                         "train_gan (l2-exp)": "l2-exp", "evaluate (l2-again)": "l2-again"}


def test_the_pipeline_run_shows_whether_its_stage_runs_failed_was_killed_or_finished(
        monkeypatch, tmp_path):
    """The parent run is RUNNING while one of its stages runs, then takes the status that stage
    ended with, and its end time: the run list tells a running, failed, interrupted and finished
    pipeline apart, and a resumed one goes back to RUNNING, then FINISHED."""
    import signal
    import time

    from srcore.errors import Interrupted

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "exp")
    monkeypatch.chdir(tmp_path)

    def parent():
        with sqlite3.connect(tmp_path / "mlflow.db") as db:
            return db.execute("select status, start_time, end_time from runs "
                              "where name = 'exp'").fetchone()

    def stage(name):
        with sqlite3.connect(tmp_path / "mlflow.db") as db:
            return db.execute("select run_uuid, status from runs where name = ?",
                              (f"{name} (exp)",)).fetchone()

    with stage_run("split", "demo", {}):
        assert parent()[0] == "RUNNING"
    status, started, first_end = parent()
    assert status == "FINISHED" and first_end >= started
    time.sleep(0.01)
    with pytest.raises(RuntimeError):
        with stage_run("train_cnn", "demo", {}):
            assert parent()[0] == "RUNNING"  # a second stage starting
            raise RuntimeError("out of memory")
    assert parent()[0] == "FAILED" == stage("train_cnn")[1]
    run_id = stage("train_cnn")[0]
    with pytest.raises(Interrupted):
        with stage_run("train_cnn", "demo", {}, run_id=run_id):  # resumed, then Ctrl-C
            assert parent()[0] == "RUNNING"
            raise Interrupted(signal.SIGINT)
    assert parent()[0] == "KILLED" == stage("train_cnn")[1]
    with stage_run("train_cnn", "demo", {}, run_id=run_id):
        assert parent()[0] == "RUNNING"
    status, start, end = parent()
    assert status == "FINISHED" == stage("train_cnn")[1]
    assert start == started and end > first_end  # its duration spans every stage run so far


@pytest.mark.parametrize("name", ["bob's-try", 'say-"hi"', "50%_off"])
def test_an_experiment_name_with_quotes_or_wildcards_records_under_one_parent(monkeypatch,
                                                                               tmp_path, name):
    """git, and so `dvc exp run -n`, allow quotes in a name, which MLflow's filter strings
    cannot escape: the parent was looked up by a filter holding the name, and every stage
    failed with 'tracking store is not usable: move mlflow.db aside'."""
    _project(monkeypatch, tmp_path, "seed: 42\n", "seed: 42\n")
    monkeypatch.setenv("DVC_EXP_NAME", "50%_of")  # another experiment of the same params
    with stage_run("split", "demo", {}):
        pass
    monkeypatch.setenv("DVC_EXP_NAME", name)
    for stage in ("train_cnn", "train_gan"):
        with stage_run(stage, "demo", {}):
            pass
    runs = _runs(tmp_path / "mlflow.db")
    parents = sorted(n for n, t, _, _ in runs if "pipeline_key" in t)
    assert parents == sorted(["50%_of", name])
    stages = {t["stage"]: t["pipeline"] for _, t, _, _ in runs if "stage" in t}
    assert stages == {"split": "50%_of", "train_cnn": name, "train_gan": name}


def test_a_resumed_stage_run_reports_to_the_parent_it_was_made_under(monkeypatch, tmp_path):
    """A training resumed by a plain `dvc repro` continues its run, and its end status goes to
    that run's own parent, not to a newer parent of the same commit and params (an experiment
    run in between), which keeps its own status."""
    from srcore.errors import Interrupted

    _project(monkeypatch, tmp_path, "seed: 42\n", "seed: 42\n")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with stage_run("train_cnn", "demo", {}) as mlflow:
        first = mlflow.active_run().info.run_id
    monkeypatch.setenv("DVC_EXP_NAME", "later")
    with stage_run("split", "demo", {}):
        pass
    monkeypatch.delenv("DVC_EXP_NAME")
    with pytest.raises(Interrupted):
        with stage_run("train_cnn", "demo", {}, run_id=first) as mlflow:
            assert mlflow.active_run().info.run_id == first
            raise Interrupted("stopped")

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        status = dict(db.execute("select name, status from runs").fetchall())
    plain = next(name for name in status if name.startswith("train_cnn (")).split("(")[1][:-1]
    assert status == {plain: "KILLED", f"train_cnn ({plain})": "KILLED",
                      "later": "FINISHED", "split (later)": "FINISHED"}


def test_a_signal_while_a_failed_stage_run_ends_leaves_it_failed_with_its_error(monkeypatch,
                                                                                tmp_path):
    """When one training process fails, torchrun stops the others with SIGTERM; one of them,
    failing too, may get it while MLflow ends its run (which waits for the async logging): the
    run must still end FAILED, its parent too, and the error must stay the one the user sees."""
    import signal

    import mlflow
    import mlflow.tracking.fluent

    from srcore.errors import raise_interrupted

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "exp")
    monkeypatch.chdir(tmp_path)
    end_run = mlflow.tracking.fluent.end_run

    def signalled_end_run(status="FINISHED"):
        signal.raise_signal(signal.SIGTERM)  # torchrun's, as the run ends
        end_run(status)

    for module in (mlflow, mlflow.tracking.fluent):
        monkeypatch.setattr(module, "end_run", signalled_end_run)
    previous = signal.signal(signal.SIGTERM, raise_interrupted)  # the CLI's handler
    try:
        with pytest.raises(RuntimeError, match="closed by peer"):
            with stage_run("train_cnn", "demo", {}):
                raise RuntimeError("Connection closed by peer")
    finally:
        signal.signal(signal.SIGTERM, previous)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert dict(db.execute("select name, status from runs").fetchall()) == {
            "exp": "FAILED", "train_cnn (exp)": "FAILED"}


# A tracking server as `mlflow server --artifacts-destination DIR` runs it (artifacts proxied,
# MLflow's recommended set-up), served by werkzeug in a subprocess: it starts in seconds, where
# `mlflow server`'s workers take half a minute on a small machine.
SERVER = """
import os, sys
home = sys.argv[1]
os.environ["_MLFLOW_SERVER_FILE_STORE"] = f"sqlite:///{home}/server.db"
os.environ["_MLFLOW_SERVER_REGISTRY_STORE"] = f"sqlite:///{home}/server.db"
os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = "mlflow-artifacts:/"
os.environ["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = f"{home}/artifacts"
os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
from werkzeug.serving import make_server
from mlflow.server import app
server = make_server("127.0.0.1", int(sys.argv[2]), app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


def start_server(home, port=0):
    """(process, port) of a tracking server on `port` (0: a free one) that keeps its runs in
    <home>/server.db and proxies artifacts to <home>/artifacts."""
    import sys

    server = subprocess.Popen([sys.executable, "-c", SERVER, str(home), str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return server, int(server.stdout.readline())


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """(URI, folder) of a local tracking server that proxies artifacts to <folder>/artifacts."""
    home = tmp_path_factory.mktemp("server")
    server, port = start_server(home)
    try:
        yield f"http://127.0.0.1:{port}", home
    finally:
        server.terminate()
        server.wait()


def test_on_a_tracking_server_the_artifacts_go_where_the_server_keeps_them(monkeypatch,
                                                                          tmp_path,
                                                                          tracking_server):
    """A new experiment on a server takes the server's artifact location: a run's files reach
    its artifact store, readable by every client, not <project>/mlruns on this machine."""
    import mlflow

    uri, home = tracking_server
    _project(monkeypatch, tmp_path, "seed: 42\n", "seed: 42\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "split.json").write_text("{}")
    with stage_run("split", "on-server", {}) as run_mlflow:
        run_mlflow.log_artifact(str(tmp_path / "split.json"))
        run_id = run_mlflow.active_run().info.run_id
    assert not (tmp_path / "mlruns").exists()
    assert mlflow.get_experiment_by_name("on-server").artifact_location.startswith(
        "mlflow-artifacts:")
    assert list((home / "artifacts").rglob("split.json"))
    assert mlflow.MlflowClient().list_artifacts(run_id)[0].path == "split.json"


def test_on_a_tracking_server_mlflow_retries_briefly_unless_the_user_set_it(monkeypatch,
                                                                           tmp_path,
                                                                           tracking_server):
    """MLflow's client retries a request for about 4 minutes: a server that goes down would
    stall the training that long at each request. Bounded where the user has not said."""
    uri, _ = tracking_server
    _project(monkeypatch, tmp_path, "seed: 42\n", "seed: 42\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in HTTP_LIMITS:  # unset, and set back as they were after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")  # the user's: kept
    with stage_run("split", "on-server", {}):
        pass
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_LIMITS[
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES"]


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_training_stops_it_and_the_rerun_continues_its_run(
        tmp_path):
    """The server killed mid-way: the training stops within seconds of MLflow's retries (here
    set short, as a user may), in one line that names the server and says how to resume, with
    no state saved past the losses the run holds; the rerun, once the server is back,
    continues the same MLflow run and leaves it each step once."""
    import signal
    import sys
    import time

    import mlflow

    from conftest import write_params, write_training_data
    from test_faults import TINY, stop_after_first_state

    steps = 20  # a state at step 10, the server killed before the next

    home, project = tmp_path / "server", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    server, port = start_server(home)
    uri = f"http://127.0.0.1:{port}"
    write_training_data(project, train=3)
    write_params(project, **{**TINY, "cnn__steps": steps, "cnn__patience": steps,
                             "cnn__lr_halve_at": [10], "cnn__val_every": 10,
                             "train__checkpoint_every": 10})
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    env.pop("DVC_ROOT", None)
    training = subprocess.Popen([sys.executable, "-m", "srcore", "train-cnn"], cwd=project,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        stop_after_first_state(project, training)
        run_id = torch_state(project)["mlflow_run_id"]
        server.kill()
        server.wait()
        killed = time.time()
        training.send_signal(signal.SIGCONT)
        _, stderr = training.communicate(timeout=120)
    finally:
        training.kill()
    assert time.time() - killed < 45  # 10 steps and the retries: not MLflow's 4 minutes
    assert training.returncode == 2 and "Traceback" not in stderr, stderr
    error, = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: MLflow tracking server {uri} stopped answering (")
    assert "Connection refused" in error
    assert error.endswith(f") during train_cnn; its MLflow run {run_id} stays RUNNING there; "
                          "once the server is back, run the same command (or dvc repro) to "
                          "resume from the last saved state and continue that run")
    saved = torch_state(project)
    assert saved["mlflow_run_id"] == run_id and saved["step"] == 10
    server, _ = start_server(home, port)
    try:
        out = run_cli("train-cnn", cwd=project, env={"MLFLOW_TRACKING_URI": uri})
        assert f"continuing MLflow run {run_id}" in out.stdout
        client = mlflow.MlflowClient(tracking_uri=uri)  # not set_tracking_uri: it sets the env
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert client.get_run(run.data.tags["mlflow.parentRunId"]).info.status == "FINISHED"
        history = client.get_metric_history(run_id, "train_loss")
        assert sorted(m.step for m in history) == list(range(5, steps + 1, 5))
    finally:
        server.terminate()
        server.wait()
    assert not (project / "models/cnn_last.pt").exists()  # done: deleted


def torch_state(project):
    from srcore.models.checkpoint import load_checkpoint

    return load_checkpoint(project / "models/cnn_last.pt")
