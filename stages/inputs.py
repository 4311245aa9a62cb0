"""Inputs a stage checks before expensive work: that they exist, and the split."""

from __future__ import annotations

import json
from pathlib import Path

from srcore.errors import SrcoreError
from stages.paths import HR, SPLIT


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


def check_metric_sizes(names: list[str], images: list, crop_border: int) -> None:
    """Before any training or evaluation: every image scored must fit the metrics."""
    from srcore.metrics import check_size

    for name, img in zip(names, images):
        check_size(img.shape, crop_border, what=str(HR / f"{name}.png"),
                   remedy="lower eval.crop_border, or remove the image from the source and "
                          "re-run dvc repro")
