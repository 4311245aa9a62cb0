"""Pieces the training stages share: the split, the training data, fingerprints, grids."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Callable

from srcore.config import Params
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


def training_data(params: Params, split: dict):
    """(PatchDataset over the train split, ValImages of the val split)."""
    from srcore.data.dataset import PatchDataset, load_images
    from srcore.train.cnn import make_val_images

    data = params.data
    train_images = dict(zip(split["train"], load_images(HR, split["train"])))
    small = [n for n, img in train_images.items() if min(img.shape[:2]) < data.patch_size]
    if small:
        print(f"skipping training images smaller than data.patch_size={data.patch_size}: "
              f"{', '.join(small)}")
    usable = [img for n, img in train_images.items() if n not in small]
    if not usable:
        raise SrcoreError(f"no training image is as large as data.patch_size="
                          f"{data.patch_size}; lower it or use larger images")
    dataset = PatchDataset(usable, data.patch_size, data.patches_per_image, data.scale,
                           data.lr_kernel, data.hflip, data.vflip, data.rot90, params.seed)
    val = make_val_images(load_images(HR, split["val"]), data.scale, data.lr_kernel)
    return dataset, val


def run_training(params_path: Path, check_inputs: Callable[[], None], train) -> None:
    """What every training stage does: check params and inputs, then call
    `train(params, split, dist, device)` as this process, which under torchrun is one of
    several (srcore/train/distributed.py)."""
    from srcore.config import load_params
    from srcore.train import distributed
    from srcore.train.runtime import pick_device

    params = load_params(params_path)
    check_inputs()
    split = read_split()
    dist, device = distributed.setup(pick_device(params.train.device))
    try:
        train(params, split, dist, device)
    finally:
        distributed.teardown()


def fingerprint(*parts) -> str:
    """A hash of everything that shapes a training run (for resuming only matching states)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: Path) -> str:
    from srcore.data.download import sha256_of

    return sha256_of(path).hexdigest()


def history_csv(history: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


def sample_grid(model, val_image, scale: int, device):
    """LR (nearest, enlarged) | bicubic | SR | HR, on a centre crop of a val image."""
    import torch

    from srcore.data.kernels import upscale
    from srcore.figures import center_crop, labelled_row
    from srcore.metrics import to_uint8

    was_training = model.training
    with torch.no_grad():
        model.eval()
        sr = to_uint8(model(val_image.lr.to(device)).cpu())
        model.train(was_training)
    panels = [to_uint8(upscale(val_image.lr, scale, "nearest")),
              to_uint8(upscale(val_image.lr, scale, "bicubic")), sr, val_image.hr]
    return labelled_row([center_crop(p, 128) for p in panels], ["LR", "bicubic", "SR", "HR"])
