"""MLflow set-up shared by every stage: where runs go, and how they are tagged.

DVC runs queued and temporary experiments in a copy of the repo that is deleted afterwards, so
the default store lives at the real project root (DVC_ROOT when DVC sets it), with an absolute
artifact location. MLFLOW_TRACKING_URI overrides all of it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

from srcore.errors import Interrupted, SrcoreError


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'data': {'scale': 4}} -> {'data.scale': 4}, the names `dvc exp run -S` uses."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def check_server(uri: str, timeout: float = 5) -> None:
    """Ask an HTTP tracking server once, briefly: MLflow's own client retries for minutes."""
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except (OSError, ValueError) as err:
        raise SrcoreError(f"MLflow tracking server {uri} does not answer ({err}). Start it, fix "
                          "MLFLOW_TRACKING_URI, or unset it to use sqlite:///<project>/mlflow.db."
                          ) from None


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, params: dict[str, Any],
              enabled: bool = True) -> Iterator[Any]:
    """Start an MLflow run for one stage, log its params and tags, and yield the mlflow module.
    enabled=False (training processes other than the main one) records nothing, yields None."""
    if not enabled:
        yield None
        return
    import mlflow

    uri = tracking_uri()
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            artifacts = (project_root() / "mlruns").as_uri()
            experiment_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
        else:
            experiment_id = found.experiment_id
    except Exception as err:  # MLflow raises many types for a bad store; all mean the same here
        raise SrcoreError(f"MLflow tracking store {uri!r} is not usable ({err}). Fix or unset "
                          "MLFLOW_TRACKING_URI (the default is sqlite:///<project>/mlflow.db)."
                          ) from None
    tags = {
        "stage": stage,
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "git_commit": git_commit(project_root()),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags):
        mlflow.log_params(flatten(params))
        try:
            yield mlflow
        except Interrupted:
            mlflow.end_run("KILLED")  # stopped by the user or a scheduler, not failed
            raise
