"""Make LR images from HR ones, and the classic upsampling baselines.

"bicubic" is antialiased bicubic (torch, antialias=True): it matches PIL's BICUBIC resize, the
usual stand-in for MATLAB's imresize. "area" is a box average over each 4x4 block: what the
author's code really did (PIL's constant BICUBIC=3 means INTER_AREA to OpenCV).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KERNELS = ("bicubic", "area", "bilinear", "nearest")


def downscale(hr: torch.Tensor, scale: int, kernel: str, quantize: bool = True) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, C, H/scale, W/scale), clamped, optionally to 8-bit levels
    (LR inputs in the wild are 8-bit files)."""
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    if kernel == "area":
        lr = F.avg_pool2d(hr, scale)
    elif kernel in ("bicubic", "bilinear"):
        lr = F.interpolate(hr, size=size, mode=kernel, align_corners=False, antialias=True)
    elif kernel == "nearest":
        lr = F.interpolate(hr, size=size, mode="nearest-exact")
    else:
        raise ValueError(f"unknown kernel {kernel!r}; one of {KERNELS}")
    lr = lr.clamp(0, 1)
    return torch.round(lr * 255) / 255 if quantize else lr


def upscale(lr: torch.Tensor, scale: int, kernel: str) -> torch.Tensor:
    """The baselines: nearest, bilinear or bicubic upsampling, clamped to [0, 1]."""
    if kernel == "nearest":
        out = F.interpolate(lr, scale_factor=scale, mode="nearest-exact")
    elif kernel in ("bilinear", "bicubic"):
        out = F.interpolate(lr, scale_factor=scale, mode=kernel, align_corners=False)
    else:
        raise ValueError(f"unknown baseline {kernel!r}; one of nearest, bilinear, bicubic")
    return out.clamp(0, 1)
