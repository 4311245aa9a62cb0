"""What every training phase shares: per-epoch loaders, the NaN guard, resumable state.

A state file holds the state_dicts of the phase's modules and optimizers plus its bookkeeping
(epoch, history, best...). It is reused only when its fingerprint (a hash of everything that
shapes the run) matches, so a changed configuration starts afresh instead of mixing runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from srcore.errors import SrcoreError
from srcore.models.checkpoint import load_checkpoint, save_atomic

STATE_FORMAT = "srcore-train-state"


def check_finite(value: float, epoch: int, term: str, last_path: Path, remedy: str) -> None:
    if not math.isfinite(value):
        raise SrcoreError(f"epoch {epoch}: the {term} loss is {value}; training stopped and the "
                          f"last good state is kept in {last_path}. {remedy}")


def save_state(path: Path, fingerprint: str, objects: dict, state: dict) -> None:
    """objects: name -> anything with state_dict() (modules, optimizers, schedulers)."""
    save_atomic(path, {"format": STATE_FORMAT, "fingerprint": fingerprint,
                       "objects": {k: v.state_dict() for k, v in objects.items()}, **state})


def resume_state(path: Path, fingerprint: str, objects: dict, state: dict,
                 quiet: bool = False) -> bool:
    """Load a saved state into `objects` and `state` when it belongs to this configuration."""
    if not Path(path).is_file():
        return False
    saved = load_checkpoint(path)
    if (saved.get("format") != STATE_FORMAT or saved.get("fingerprint") != fingerprint
            or set(saved.get("objects", {})) != set(objects)):
        if not quiet:
            print(f"{path} belongs to another configuration: starting from scratch")
        return False
    for name, obj in objects.items():
        obj.load_state_dict(saved["objects"][name])
    for key in state:
        state[key] = saved[key]
    if not quiet:
        print(f"resuming from {path} after epoch {state['epoch']}")
    return True


def cpu_copy(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
