"""Faults a long run meets: a killed process, Ctrl-C, a full disk, an absent tracking server."""

import errno
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from srcore.atomic import atomic_path, write_json
from srcore.errors import SrcoreError
from srcore.tracking import stage_run

from conftest import run_cli, write_params, write_training_data

TINY = {"model__rrdb": 1, "model__features": 8, "model__growth": 8, "cnn__epochs": 40,
        "cnn__val_every": 1, "cnn__patience": 100, "data__patch_size": 32,
        "data__patches_per_image": 16, "cnn__batch_size": 4}


@pytest.fixture
def training_project(project):
    """data/hr and data/split.json for a few small photos, and tiny params."""
    write_training_data(project, train=3)
    write_params(project, **TINY)
    return project


def start_training(folder):
    return subprocess.Popen([sys.executable, "-m", "srcore", "train-cnn"], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(folder, process, timeout=300):
    """Return once the resumable state of at least one epoch exists."""
    deadline = time.time() + timeout
    while not (folder / "models/cnn_last.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "training wrote no state in time"
        time.sleep(0.2)
    time.sleep(1.5)  # now somewhere inside a later epoch


def test_killed_training_resumes_and_ends_with_a_valid_model(training_project):
    process = start_training(training_project)
    wait_for_epochs(training_project, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    out = run_cli("train-cnn", cwd=training_project)
    assert "resuming from models/cnn_last.pt after epoch" in out.stdout
    resumed_after = int(out.stdout.split("after epoch ")[1].split()[0])
    assert 1 <= resumed_after < 40
    metrics = json.loads((training_project / "metrics/train_cnn.json").read_text())
    assert metrics["epochs_run"] == 40
    rows = (training_project / "metrics/train_cnn.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 41))
    from srcore.models.checkpoint import load_generator

    load_generator(training_project / "models/cnn.pt")


def test_ctrl_c_exits_cleanly_and_the_next_run_resumes(training_project):
    process = start_training(training_project)
    wait_for_epochs(training_project, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted" in stderr and "resume" in stderr and "Traceback" not in stderr
    out = run_cli("train-cnn", cwd=training_project)
    assert "resuming from models/cnn_last.pt" in out.stdout


def test_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(SrcoreError, match="could not write .*metrics.json.*disk space"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_unreachable_tracking_server_fails_fast(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.time()
    with pytest.raises(SrcoreError, match=f"127.0.0.1:{port} does not answer"):
        with stage_run("train_cnn", "srcore", {}):
            pass
    assert time.time() - started < 30


def test_training_stage_checks_tracking_before_training(training_project):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_cli("train-cnn", cwd=training_project, check=False,
                  env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert out.returncode == 2 and "does not answer" in out.stderr
    assert not (training_project / "models").exists()


def test_unwritable_output_folder_is_named(tmp_path):
    (tmp_path / "metrics").write_text("a file where a folder should be")
    with pytest.raises(SrcoreError, match="cannot create folder .*metrics.*writable"):
        write_json(tmp_path / "metrics" / "train_cnn.json", {"a": 1})
