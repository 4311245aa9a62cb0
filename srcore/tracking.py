"""MLflow set-up shared by every stage: where runs go, and how they are tagged.

DVC runs queued and temporary experiments in a copy of the repo that is deleted afterwards, so
the default store lives at the real project root (DVC_ROOT when DVC sets it), with an absolute
artifact location. MLFLOW_TRACKING_URI overrides all of it.

Each stage is a child run of one parent run per pipeline execution, as MLflow's docs lay out
pipelines: the parent is named after the DVC experiment (DVC_EXP_NAME), or for a plain
`dvc repro` after the commit and a short hash of params.yaml, and it holds every param and, as
`changed.*` tags, those that differ from the committed params.yaml. A plain `dvc repro` joins
the newest parent of the same commit and params, so the `dvc repro` that resumes an interrupted
`dvc exp run` puts its stages under that experiment's parent. The parent's status follows its
stages: RUNNING while one runs, then the status that stage ended with (FINISHED, FAILED, KILLED).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

from srcore.atomic import signals_deferred
from srcore.errors import Interrupted, SrcoreError, first_line


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


def git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(root: Path) -> str:
    """The commit the code comes from: an experiment's baseline (DVC sets it), else HEAD."""
    rev = os.environ.get("DVC_EXP_BASELINE_REV") or "HEAD"
    return (git(root, "rev-parse", rev) or "unknown").strip()


def committed_file(root: Path, rev: str, path: str) -> str | None:
    """The file at `path` as commit `rev` has it; None where git has none (no repository,
    commit or file)."""
    return git(root, "show", f"{rev}:{path}")


def read_params(text: str | None) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return {}
    return flatten(loaded) if isinstance(loaded, dict) else {}


PLAIN_REPRO = "workspace (dvc repro)"  # the dvc_experiment tag of a run outside `dvc exp run`


def pipeline_identity(root: Path) -> dict[str, Any]:
    """What names and tags this pipeline execution's parent run: see the module docstring."""
    path = root / "params.yaml"
    params = read_params(path.read_text() if path.is_file() else None)
    commit = git_commit(root)
    committed = read_params(committed_file(root, commit, "params.yaml"))
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()
                            ).hexdigest()[:6]
    experiment = os.environ.get("DVC_EXP_NAME")
    name = experiment or f"{commit[:7]}-{digest}"
    changed = {k: v for k, v in params.items()
               if committed and (k not in committed or committed[k] != v)}
    return {"name": name, "key": f"{name} {commit} {digest}", "params": params,
            "changed": changed, "commit": commit, "params_hash": digest,
            "experiment": experiment or PLAIN_REPRO}


def _parent_run(client, experiment_id: str, identity: dict[str, Any]) -> tuple[str, str, str]:
    """(run id, name, dvc_experiment tag) of this execution's parent run, created on its first
    stage, and RUNNING from now on (stage_run ends it as its stage ends). A plain `dvc repro`
    joins the newest parent of the same commit and params, named or not: after an interrupted
    `dvc exp run` it is what finishes that experiment (README), so its stages belong under the
    experiment's parent rather than a second one."""
    from mlflow.entities import Param

    # the filter names only the commit and the hash (hex): MLflow's filter strings have no
    # escape for a quote, which git and so DVC allow in an experiment's name (bob's-try)
    same = f"tags.pipeline_key LIKE '% {identity['commit']} {identity['params_hash']}'"
    found = client.search_runs([experiment_id], same, order_by=["attributes.start_time DESC"])
    if identity["experiment"] != PLAIN_REPRO:  # an experiment joins only its own parent
        found = [run for run in found if run.data.tags.get("pipeline_key") == identity["key"]]
    if found:
        return _reopened(client, found[0], identity)
    changed = identity["changed"]
    tags = {"pipeline_key": identity["key"], "dvc_experiment": identity["experiment"],
            "git_commit": identity["commit"], "params_hash": identity["params_hash"],
            "changed_params": ", ".join(f"{k}={v}" for k, v in changed.items()) or "none",
            **{f"changed.{k}": str(v) for k, v in changed.items()}}
    tags["mlflow.note.content"] = (
        f"DVC pipeline execution: {identity['experiment']} at commit {identity['commit'][:7]}, "
        f"changed params: {tags['changed_params']}. Its stages are the child runs.")
    run = client.create_run(experiment_id, run_name=identity["name"], tags=tags)
    params = [Param(k, str(v)) for k, v in identity["params"].items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    return run.info.run_id, identity["name"], identity["experiment"]


def _reopened(client, run, identity: dict[str, Any]) -> tuple[str, str, str]:
    """An existing parent run, RUNNING again for a later or resumed stage: (run id, name,
    dvc_experiment tag)."""
    client.update_run(run.info.run_id, status="RUNNING")
    return (run.info.run_id, run.info.run_name,
            run.data.tags.get("dvc_experiment", identity["experiment"]))


def _end_parent(client, run_id: str, status: str) -> None:
    """Give the parent run the status its stage ended with, and the end time of now, so its
    duration spans the stages run so far. A plain `dvc repro` and an experiment of the same
    commit and params can share a parent and run at once: the stage that ends last sets it.
    A failure here (the parent deleted in the UI meanwhile) must not hide the stage's own end."""
    try:
        client.set_terminated(run_id, status)
    except Exception as err:  # MLflow raises MlflowException and the store's own types
        logging.getLogger(__name__).warning("could not mark pipeline run %s %s: %s", run_id,
                                            status, err)


def _active_run(client, run_id: str | None, experiment_id: str):
    """The run `run_id` if the store still has it, active, in this experiment; else None."""
    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # MLflow raises MlflowException for an unknown id; any failure: a new run
        return None
    info = run.info
    return run if info.experiment_id == experiment_id and info.lifecycle_stage == "active" \
        else None


def _experiment_id(mlflow, experiment: str, own_store: bool, uri: str) -> str:
    """The experiment's id, created if new: on a tracking server where the server puts
    artifacts (its --artifacts-destination or --default-artifact-root), so every client of it
    can read them; on a local store in <project>/mlruns, which a DVC temporary copy's
    `./mlruns` would not be."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    artifacts = None if is_server(uri) else (project_root() / "mlruns").as_uri()
    experiment_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
    if own_store:  # the project's own store: drop MLflow's empty "Default", so the UI opens on ours
        client = mlflow.MlflowClient()
        default = client.get_experiment("0")
        if default is not None and not client.search_runs(["0"], max_results=1):
            client.delete_experiment("0")
    return experiment_id


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _unanswered(uri: str, timeout: float = 5) -> str | None:
    """Why the HTTP tracking server `uri` does not answer now (one brief request), or None."""
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except (OSError, ValueError) as err:
        return str(getattr(err, "reason", err))


def check_server(uri: str, timeout: float = 5) -> None:
    """Ask an HTTP tracking server once, briefly: MLflow's own client retries for minutes."""
    reason = _unanswered(uri, timeout) if is_server(uri) else None
    if reason:
        raise SrcoreError(f"MLflow tracking server {uri} does not answer ({reason}). Start it, "
                          "fix MLFLOW_TRACKING_URI, or unset it to use "
                          "sqlite:///<project>/mlflow.db.")


# MLflow's HTTP client retries a failed request 7 times, 0 to 120 s apart (about 4 minutes),
# and waits up to 120 s for each answer: a server that goes down mid-training stalled the stage
# for minutes without a word at each request. Ours give up after about 30 s (5 retries, 0, 2,
# 4, 8 and 16 s apart: a server's restart fits) and 20 s per answer, unless the user set them.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class TrackingLost(SrcoreError):
    """The tracking server stopped answering during a stage: `what` says so, the message adds
    the remedy (a training stage's says how to resume)."""

    def __init__(self, what: str):
        super().__init__(f"{what}: once the server is back, run the same command")
        self.what = what


_background: list = []  # what log_in_background sent since the last flush_logged


def log_in_background(mlflow, metrics: dict[str, float], step: int) -> None:
    """Log metrics without waiting for the tracking store; flush_logged waits for them."""
    _background.append(mlflow.log_metrics(metrics, step=step, synchronous=False))


def flush_logged() -> None:
    """Wait until what was logged in the background is in the run; raise if any of it is not.
    MLflow's own flush only logs such a failure and drops the metrics: a resumable state saved
    after it would say its steps are recorded while the run has a hole there."""
    import mlflow

    mlflow.flush_async_logging()
    sent = _background[:]
    _background.clear()
    for operations in sent:
        operations.wait()  # raises MlflowException naming the failures


def quiet_store_logs() -> None:
    """Leave out what MLflow's store logs on its own: "Creating initial MLflow database", and
    a store's failure with its traceback and SQL before it is raised (the caller's error says it
    in one line: store_failure)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def _store_lock(uri: str):
    """One process at a time sets up a SQLite store: queued experiments (`dvc queue start -j 2`)
    start their stages together, and MLflow's creation of a new store (its schema migrations)
    and of the experiment collide, leaving a store that no run can use. The lock is the file
    `<database>.lock` beside it; the system drops it when its process dies."""
    from srcore.runlock import one_at_a_time

    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    database = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return one_at_a_time(database.with_name(database.name + ".lock"))  # waits: seconds


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, params: dict[str, Any], enabled: bool = True,
              run_id: str | None = None) -> Iterator[Any]:
    """Start an MLflow run for one stage, log its params and tags, and yield the mlflow module.
    enabled=False (training processes other than the main one) records nothing, yields None.
    run_id: a run of this stage to continue (a resumed training), if the store still has it."""
    if not enabled:
        yield None
        return
    import mlflow

    uri = tracking_uri()
    own_store = "MLFLOW_TRACKING_URI" not in os.environ  # read first: set_tracking_uri sets it
    check_server(uri)
    if is_server(uri):
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)
    _background.clear()  # another run's, in this process
    # a batch logged in the background that fails: flush_logged raises it, in one line below
    logging.getLogger("mlflow.utils.async_logging.async_logging_queue").setLevel(logging.CRITICAL)
    quiet_store_logs()
    mlflow.set_tracking_uri(uri)
    identity = pipeline_identity(Path.cwd())
    try:
        with _store_lock(uri):
            client = mlflow.MlflowClient()
            experiment_id = _experiment_id(mlflow, experiment, own_store, uri)
            resumed = _active_run(client, run_id, experiment_id)
            # a resumed run stays under the parent it was made under, which its status follows
            # (a newer parent of the same commit and params may exist by now)
            kept = _active_run(client, resumed.data.tags.get("mlflow.parentRunId"),
                               experiment_id) if resumed else None
            parent, pipeline, dvc_experiment = (
                _reopened(client, kept, identity) if kept
                else _parent_run(client, experiment_id, identity))
    except Exception as err:  # MLflow raises many types for a bad store; all mean the same here
        reason = store_failure(err)
        if reason in ("database or disk is full", os.strerror(errno.ENOSPC)):
            way = "free space on the disk that holds it, then re-run"
        elif own_store:
            way = f"move {project_root() / 'mlflow.db'} aside (the next run starts a new store)"
        else:
            way = "fix or unset MLFLOW_TRACKING_URI (the default is sqlite:///<project>/mlflow.db)"
        raise SrcoreError(f"MLflow tracking store {uri!r} is not usable ({reason}): {way}"
                          ) from None
    tags = {"stage": stage, "pipeline": pipeline, "mlflow.parentRunId": parent,
            "dvc_experiment": dvc_experiment, "git_commit": identity["commit"],
            "params_hash": identity["params_hash"]}
    status = "FAILED"  # the parent's, unless the stage's run ends otherwise
    # named after its pipeline too: the compare view and its charts label runs by name alone
    name = f"{stage} ({pipeline})"
    if resumed:
        print(f"{stage}: continuing MLflow run {run_id}")
        name = resumed.info.run_name
        if kept:
            tags = {}  # it keeps the parent and tags it was made with; else it moves to `parent`
    lost = None  # why the tracking server no longer answers, if it stopped answering
    started = None  # the run's id once it has one
    try:
        with mlflow.start_run(run_id=run_id if resumed else None, experiment_id=experiment_id,
                              run_name=name, tags=tags) as active:
            started = active.info.run_id
            mlflow.log_params(flatten(params))
            try:
                yield mlflow
            except BaseException as err:
                # KILLED: stopped by the user or a scheduler, not failed. Ending a run takes a
                # while (it waits for the async logging): a signal then (torchrun stops the other
                # training processes with one when one fails) would leave it RUNNING and hide
                # the error
                status = "KILLED" if isinstance(err, Interrupted) else "FAILED"
                lost = _lost(uri, err)
                with signals_deferred(deliver=False):
                    if lost:  # the run stays RUNNING there: end it here only, at once
                        with _no_retries(), contextlib.suppress(Exception):
                            mlflow.end_run(status)  # drops it from the active runs first
                    else:
                        mlflow.end_run(status)
                raise
        status = "FINISHED"
    except Exception as err:
        lost = lost or _lost(uri, err)  # or when it started or ended
        if lost:
            kept = f"; its MLflow run {started} stays RUNNING there" if started else ""
            raise TrackingLost(f"MLflow tracking server {uri} stopped answering ({lost}) during "
                               f"{stage}{kept}") from None
        raise
    finally:
        if not lost:
            with signals_deferred(deliver=status == "FINISHED"):
                _end_parent(mlflow.MlflowClient(), parent, status)


@contextlib.contextmanager
def _no_retries() -> Iterator[None]:
    """MLflow's HTTP requests in this block are tried once (MLflow reads it at each request)."""
    name = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    before = os.environ.get(name)
    os.environ[name] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _lost(uri: str, err: BaseException) -> str | None:
    """Why the tracking server no longer answers, where `err` is MLflow's failure to reach it."""
    from mlflow.exceptions import MlflowException

    return _unanswered(uri) if is_server(uri) and isinstance(err, MlflowException) else None


def store_failure(err: BaseException) -> str:
    """The first line of the innermost cause of a store's error: SQLite's own words ("database
    or disk is full"), not SQLAlchemy's notes around them, nor its SQL."""
    while isinstance(inner := getattr(err, "orig", None) or err.__cause__, BaseException):
        err = inner
    return first_line(err)


def log_on_pipeline_run(mlflow, metrics: dict[str, float]) -> None:
    """Log `metrics` on the active stage run's parent too: the UI's compare view of two
    pipeline runs then shows the results beside the params that differ."""
    import time

    from mlflow.entities import Metric

    run_id = mlflow.active_run().info.run_id
    parent = mlflow.get_run(run_id).data.tags.get("mlflow.parentRunId")
    if parent:
        now = int(time.time() * 1000)
        mlflow.MlflowClient().log_batch(parent, metrics=[Metric(k, float(v), now, 0)
                                                         for k, v in metrics.items()])


def log_generator(mlflow, model, registered_name: str) -> None:
    """Log a generator as an MLflow PyTorch model and register it as a new version of
    `registered_name`, tagged with the run's DVC experiment and commit. Loaded with
    mlflow.pyfunc.load_model("models:/NAME/latest"), it takes float32 (N, 3, H, W) RGB in [0, 1]
    of any size and returns (N, 3, 4H, 4W). srcore's code travels with it (code_paths), so
    loading needs only torch and mlflow."""
    import copy

    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import srcore

    spec = Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))])
    example = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    cpu = copy.deepcopy(model).to("cpu", torch.float32).eval()
    run = mlflow.active_run()
    # its WARNING that pickle can run code on loading: the format chosen below, which a user
    # cannot change; errors still show
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    info = mlflow.pytorch.log_model(
        cpu, name="generator", signature=ModelSignature(inputs=spec, outputs=spec),
        input_example=example, registered_model_name=registered_name,
        code_paths=[str(Path(srcore.__file__).parent)],
        # pickled: MLflow 3's default, torch.export, fixes H and W to the input example's
        serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                          f"mlflow=={mlflow.__version__}", "numpy"])
    tags = mlflow.get_run(run.info.run_id).data.tags
    client = mlflow.MlflowClient()
    for key in ("dvc_experiment", "git_commit", "pipeline"):
        if key in tags:
            client.set_model_version_tag(registered_name, info.registered_model_version, key,
                                         tags[key])
