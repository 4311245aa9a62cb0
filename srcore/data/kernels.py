"""Make low-quality (LQ) inputs from ground-truth (GT) images, and the classic upsampling
baselines.

"bicubic" is antialiased bicubic (torch, antialias=True: Keys' kernel with a = -0.5, stretched 4x):
MATLAB's imresize(gt, 1/4) to the 8-bit level on every pixel at least 2 LQ pixels from the
border (only the border differs: torch renormalises the kernel over the taps inside the image
where MATLAB mirrors the image; tests/test_kernels.py has MATLAB's algorithm written out). PIL's
BICUBIC resize differs from it by one 8-bit level on about a tenth of the pixels. "area" is a box
average over each 4x4 block: what the author's code really did (PIL's constant BICUBIC=3 means
INTER_AREA to OpenCV).

The bicubic baseline (`upscale`), like the network's bicubic skip (srcore.models.rrdb), is
torch's bicubic upsampling: Keys' a = -0.75 with clamped borders, as OpenCV's INTER_CUBIC. The
"Bicubic" rows of published SR tables are MATLAB's imresize (a = -0.5), a weaker baseline: on
the sample photos ours scores 0.04 to 0.2 dB more PSNR-Y, so a gain over our bicubic is a gain
over a slightly stronger baseline than theirs (and exactly over the network's starting point).
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
