"""Validation: a generator scored on whole val images (PSNR/SSIM on RGB and Y, LPIPS if given),
and the bicubic baseline it must beat."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from srcore.data.dataset import to_tensor
from srcore.data.kernels import downscale, upscale
from srcore.infer import auto_tile, probes_memory, upscale_array
from srcore.metrics import image_metrics, mean_scores, psnr_ssim, to_uint8
from srcore.train.runtime import autocast, inference_layout, usable_cpus


@dataclass
class ValImage:
    lq: torch.Tensor  # (1, 3, h, w) in [0, 1], 8-bit levels
    gt: np.ndarray  # (H, W, 3) uint8
    sr: np.ndarray | None = None  # the first val image's output its last validation scored,
    # for the sample grid


def make_val_images(images: list[np.ndarray], scale: int, kernel: str) -> list[ValImage]:
    return [ValImage(downscale(to_tensor(img)[None], scale, kernel), img) for img in images]


def bicubic_scores(val: list[ValImage], scale: int, crop_border: int) -> dict[str, float]:
    """Mean val PSNR/SSIM of bicubic upsampling: the bar the CNN must clear."""
    return mean_scores([psnr_ssim(v.gt, to_uint8(upscale(v.lq, scale, "bicubic")), crop_border)
                        for v in val])


@torch.inference_mode()
def validate(model: torch.nn.Module, val: list[ValImage], device, precision: str,
             crop_border: int, lpips_model=None) -> dict[str, float]:
    """Mean PSNR/SSIM (RGB and Y) of the model on whole val images, and LPIPS if given.

    The metrics run in a thread per image while the next image is upscaled: PSNR/SSIM are
    computed on the CPU (scikit-image), and on a GPU they are most of a validation's time (0.5 s
    for a 1020x765 image against a few ms of inference); scikit-image releases the GIL in its
    filters. LPIPS (image_metrics) runs there too, under its own torch.no_grad.

    At most one output more than there are threads waits to be scored: on a GPU the upscaling
    outruns the scoring, and the queue would otherwise hold every val image's output at once
    (DIV2K at 2040 pixels: 100 of 8 MB each).

    On a GPU an image whose whole pass does not fit in free memory (a large val image, a small
    card, the memory that CUDA graphs keep reserved) is upscaled in the largest tiles that fit,
    as upscale and evaluate do (srcore.infer.auto_tile), instead of running out of memory."""
    from functools import partial

    was_training = model.training
    model.eval()
    score = partial(image_metrics, lpips_model=lpips_model) if lpips_model else psnr_ssim
    threads = max(1, min(len(val), usable_cpus()))
    pending, scores = deque(), []
    with ThreadPoolExecutor(threads) as pool:
        for i, v in enumerate(val):
            if len(pending) > threads:
                scores.append(pending.popleft().result())
            sr = _upscaled(model, v.lq, device, precision)
            if i == 0:  # the sample grid's; the others are not kept
                v.sr = sr
            pending.append(pool.submit(score, v.gt, sr, crop_border))
        scores += [future.result() for future in pending]
    model.train(was_training)
    return mean_scores(scores)


def _upscaled(model, lq: torch.Tensor, device, precision: str) -> np.ndarray:
    """The model's 8-bit output for one val image: one whole pass, or tiles where it would not
    fit on the GPU (tiled == whole to within an 8-bit level: srcore.infer)."""
    height, width = lq.shape[-2:]
    if probes_memory(model, device):
        tile = auto_tile(model, height, width, device=device, precision=precision)
        if tile:
            return upscale_array(model, to_uint8(lq), tile, device=device, precision=precision)
    with autocast(precision, device):
        return to_uint8(model(inference_layout(lq.to(device))).float())
