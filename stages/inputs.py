"""Inputs a stage checks before expensive work: that they exist, and the split."""

from __future__ import annotations

import json
from pathlib import Path

from srcore.errors import SrcoreError
from stages.paths import SPLIT


def require(path: Path, stage: str) -> None:
    """Before expensive work (and before launching training processes): an input is there."""
    if not Path(path).exists():
        raise SrcoreError(f"{path} not found: run the {stage} stage first (dvc repro {stage})")


def read_split(path: Path = SPLIT) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SrcoreError(f"{path} not found: run the data stages first (dvc repro split)") from None
    except json.JSONDecodeError as err:
        raise SrcoreError(f"{path} is corrupt ({err}); re-run: dvc repro --force split") from None
