"""`dvc repro` end to end in a temporary copy of the repo, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_repo


def dvc(*args, cwd, env):
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    # `python` in dvc.yaml must be this interpreter; MLflow uses the default store at the root
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return root, env


def test_dag_shows_the_data_stages(repo):
    root, env = repo
    dag = dvc("dag", "--md", cwd=root, env=env)
    for edge in ("download --> downsample", "downsample --> split"):
        assert edge in dag.replace("\t", " ")


def test_repro_split_and_pretrained_then_nothing_to_do(repo):
    root, env = repo
    dvc("repro", "split", "pretrained", cwd=root, env=env)
    split = json.loads((root / "data/split.json").read_text())
    assert split["counts"] == {"train": 7, "val": 2, "test": 2}
    assert (root / "models/pretrained/alexnet.pt").is_file()
    assert (root / "mlflow.db").is_file() and (root / "dvc.lock").is_file()
    again = dvc("repro", "split", "pretrained", cwd=root, env=env)
    assert "didn't change" in again or "up to date" in again
    for stage in ("download", "downsample", "split", "pretrained"):
        assert f"Running stage '{stage}'" not in again
    status = dvc("status", cwd=root, env=env)
    assert "up to date" in status
