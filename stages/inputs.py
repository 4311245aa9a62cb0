"""Inputs a stage checks before expensive work: that they exist, the manifests and the split."""

from __future__ import annotations

import json
from pathlib import Path

from srcore.errors import SrcoreError
from stages.paths import HR, MANIFEST, SPLIT


def require(path: Path, stage: str) -> None:
    """Before expensive work (and before launching training processes): an input is there."""
    if not Path(path).exists():
        raise SrcoreError(f"{path} not found: run the {stage} stage first (dvc repro {stage})")


def read_manifest(folder: Path) -> dict:
    """The manifest.json of data/raw or data/hr, written by the stage that makes the folder."""
    path = folder / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SrcoreError(f"{path} not found: run the earlier stages first (dvc repro)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SrcoreError(f"{path} is corrupt ({err}); re-run the stage that makes it "
                          "(dvc repro --force)") from None


def read_split(path: Path = SPLIT) -> dict:
    """The split's train/val/test name lists, checked: each a non-empty list of names, no
    name in two of them (the split stage writes it so; a hand-edited file may not be)."""
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SrcoreError(f"{path} not found: run the data stages first (dvc repro split)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SrcoreError(f"{path} is corrupt ({err}); re-run: dvc repro --force split") from None
    problem = _split_problem(split)
    if problem:
        raise SrcoreError(f"{path} is malformed: {problem}; re-run: dvc repro --force split")
    return split


def _split_problem(split) -> str | None:
    if not isinstance(split, dict):
        return "expected a mapping with train, val and test lists"
    where: dict[str, str] = {}
    for part in ("train", "val", "test"):
        names = split.get(part)
        if not (isinstance(names, list) and names
                and all(isinstance(n, str) and n for n in names)):
            return f'"{part}" must be a non-empty list of image names'
        for name in names:
            if name in where:
                return f"{name!r} is in both {where[name]} and {part}"
            where[name] = part
    return None


def check_metric_sizes(names: list[str], images: list, crop_border: int) -> None:
    """Before any training or evaluation: every image scored must fit the metrics."""
    from srcore.metrics import check_size

    for name, img in zip(names, images):
        check_size(img.shape, crop_border, what=str(HR / f"{name}.png"),
                   remedy="lower eval.crop_border, or remove the image from the source and "
                          "re-run dvc repro")
