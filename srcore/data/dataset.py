"""Training pairs: random GT crops of in-memory images, their LQ inputs made online.

Items are addressed as (pass, index): the crop and augmentation of crop `index` in pass `pass`
over the data come from a generator seeded by (seed, pass, index), so a run gives the same
batches whatever the number of loader workers or processes, and a resumed run replays exactly.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from srcore.data.kernels import downscale
from srcore.io import read_rgb8


def load_images(folder: Path, names: list[str]) -> list[np.ndarray]:
    """Decode each `folder/<name>.png` once, as 8-bit RGB, in threads (OpenCV decodes without
    the GIL: DIV2K's 700 training images at 2040 px took 2 minutes one by one)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(read_rgb8, [Path(folder) / f"{name}.png" for name in names]))


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255


class PatchDataset(torch.utils.data.Dataset):
    """`patches_per_image` random (LQ, GT) crop pairs of every image in each pass."""

    def __init__(self, images: list[np.ndarray], patch_size: int, patches_per_image: int,
                 scale: int, kernel: str, hflip: bool = True, vflip: bool = True,
                 rot90: bool = True, seed: int = 0):
        import albumentations as A

        small = [i for i, img in enumerate(images) if min(img.shape[:2]) < patch_size]
        if small:
            raise ValueError(f"images {small} are smaller than the {patch_size}-pixel patch")
        self.images, self.patches_per_image = images, patches_per_image
        self.scale, self.kernel, self.seed = scale, kernel, seed
        self.augment = A.Compose([
            A.RandomCrop(patch_size, patch_size),
            A.HorizontalFlip(p=0.5 if hflip else 0.0),
            A.VerticalFlip(p=0.5 if vflip else 0.0),
            A.RandomRotate90(p=1.0 if rot90 else 0.0),
        ])

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        data_pass, index = key
        self.augment.set_random_seed(hash((self.seed, data_pass, index)) & 0x7FFFFFFF)
        gt = to_tensor(self.augment(image=self.images[index // self.patches_per_image])["image"])
        lq = downscale(gt[None], self.scale, self.kernel)[0]
        return lq, gt
