"""Make low-quality (LQ) inputs from ground-truth (GT) images, and the classic upsampling
baselines.

"bicubic" is antialiased bicubic (torch, antialias=True): PIL's BICUBIC resize to within one 8-bit
level (on about a tenth of the pixels), the usual stand-in for MATLAB's imresize. "area" is a box
average over each 4x4 block: what the author's code really did (PIL's constant BICUBIC=3 means
INTER_AREA to OpenCV).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KERNELS = ("bicubic", "area", "bilinear", "nearest")


def downscale(gt: torch.Tensor, scale: int, kernel: str, quantize: bool = True) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, C, H/scale, W/scale), clamped, optionally to 8-bit levels
    (LQ inputs in the wild are 8-bit files)."""
    size = (gt.shape[-2] // scale, gt.shape[-1] // scale)
    if kernel == "area":
        lq = F.avg_pool2d(gt, scale)
    elif kernel in ("bicubic", "bilinear"):
        lq = F.interpolate(gt, size=size, mode=kernel, align_corners=False, antialias=True)
    elif kernel == "nearest":
        lq = F.interpolate(gt, size=size, mode="nearest-exact")
    else:
        raise ValueError(f"unknown kernel {kernel!r}; one of {KERNELS}")
    lq = lq.clamp(0, 1)
    return torch.round(lq * 255) / 255 if quantize else lq


def upscale(lq: torch.Tensor, scale: int, kernel: str) -> torch.Tensor:
    """The baselines: nearest, bilinear or bicubic upsampling, clamped to [0, 1]."""
    if kernel == "nearest":
        out = F.interpolate(lq, scale_factor=scale, mode="nearest-exact")
    elif kernel in ("bilinear", "bicubic"):
        out = F.interpolate(lq, scale_factor=scale, mode=kernel, align_corners=False)
    else:
        raise ValueError(f"unknown baseline {kernel!r}; one of nearest, bilinear, bicubic")
    return out.clamp(0, 1)
