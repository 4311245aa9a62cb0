"""Resumable training state, and the guard against non-finite losses.

A state file holds the state_dicts of a run's modules, EMA and optimizers plus its bookkeeping
(step, best scores...). It is reused only when its key (a hash of everything that shapes the
run: stages/declared.py) matches, so a changed configuration starts afresh instead of mixing
runs. It also holds the text of the stage's CSV logs up to its step (loop.py's "history",
kilobytes): the rows are appended to the files as training goes, and a resumed run writes the
files anew from its state, not from what the files hold then (another run's rows after `git
checkout`, `dvc checkout` or `dvc exp apply`, or a file cut short or deleted meanwhile).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from srcore.errors import SrcoreError
from srcore.models.checkpoint import load_checkpoint, save_atomic

STATE_FORMAT = "srcore-train-state"


def check_finite(values: dict[str, float], steps: str, last_path: Path, saved_step: int,
                 remedy: str) -> None:
    """values: logged term (a loss) -> its mean over `steps` (e.g. "steps 41-50")."""
    for term, value in values.items():
        if not math.isfinite(value):
            kept = (f"the state of step {saved_step} is kept in {last_path}" if saved_step
                    else "no state was saved yet")
            raise SrcoreError(f"{steps}: {term} is {value}; training stopped and {kept}. "
                              f"{remedy}")


def save_state(path: Path, key: str, objects: dict, state: dict) -> None:
    """objects: name -> anything with state_dict() (modules, EMA, optimizers, schedulers)."""
    if state.get("mlflow_run_id"):
        from srcore.tracking import flush_logged

        # losses go to MLflow in the background, several batches at once and not in order:
        # what was logged up to this step must be in the run before a state says it is done
        # (a batch that failed, say the tracking server is down: no state, the error)
        flush_logged()
    save_atomic(path, on_host({"format": STATE_FORMAT, "key": key,
                               "objects": {k: v.state_dict() for k, v in objects.items()},
                               **state}))


def on_host(obj):
    """`obj` (dicts, lists, tuples) with each CUDA tensor copied to host memory, all copies
    queued at once and waited for once. torch.save would copy them one at a time, each a host
    sync: thousands per checkpoint for a 15-block network and its Adam moments."""
    copied = []

    def host(x):
        if isinstance(x, torch.Tensor) and x.is_cuda:
            copied.append(x.detach().to("cpu", non_blocking=True))  # into pinned memory
            return copied[-1]
        if isinstance(x, dict):
            return {k: host(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(host(v) for v in x)
        return x

    result = host(obj)
    if copied:
        torch.cuda.synchronize()
    return result


def saved_run_id(path: Path, key: str) -> str | None:
    """The MLflow run of a resumable state of this configuration: a resumed run continues it."""
    if not Path(path).is_file():
        return None
    saved = _load_state(path)
    return saved.get("mlflow_run_id") if saved.get("key") == key else None


def resume_state(path: Path, key: str, objects: dict, state: dict, quiet: bool = False) -> bool:
    """Load a saved state into `objects` and `state` when it belongs to this configuration."""
    if not Path(path).is_file():
        return False
    saved = _load_state(path)
    if (saved.get("format") != STATE_FORMAT or saved.get("key") != key
            or set(saved.get("objects", {})) != set(objects) or not set(state) <= set(saved)):
        if not quiet:
            print(f"{path} belongs to another configuration: starting from scratch")
        return False
    for name, obj in objects.items():
        obj.load_state_dict(saved["objects"][name])
    for name in state:
        state[name] = saved[name]
    if not quiet:
        print(f"resuming from {path} after step {state['step']}")
    return True


def _load_state(path: Path) -> dict:
    try:
        saved = load_checkpoint(path)
    except SrcoreError as err:
        raise SrcoreError(f"{err}. It is the resumable training state: delete it (rm {path}) "
                          "to start this training over") from None
    return saved if isinstance(saved, dict) else {}


def cpu_copy(module: torch.nn.Module) -> dict:
    weights = module.state_dict()
    if any(v.is_cuda for v in weights.values()):
        return on_host(weights)  # fresh copies already
    return {k: v.detach().clone() for k, v in weights.items()}
