"""Tiled 4x inference: any image mode, bounded memory, the same pixels as one whole pass.

The image is cut into `tile` x `tile` LR tiles. Each tile goes through the network with
`tile_pad` LR pixels of real image around it (fewer at the image border, where the whole-image
pass sees the network's own zero padding too), and only the tile's own 4x area of the result is
kept. An output pixel depends on LR pixels up to `receptive_radius(model)` away (15 per RRDB
block plus 4), so with tile_pad >= that radius tiling is exact to float rounding for ANY tile
size >= 1: the minimum is on the context, not on the tile. With the default pad of 16 LR pixels
the remaining influence of farther pixels passes through the 0.2-scaled residual branches of
the dense blocks and is far below one 8-bit level in practice (tests/test_upscale.py checks it).

Memory: the output is preallocated as uint8/uint16 and each tile is written straight into it,
so besides input and output only one tile's tensors exist at a time; no float image of the
whole output is ever made. Larger tiles are faster (less overlap: ((tile + 2 pad) / tile)^2 of
the work) and need more memory.

The tiling is hand-written: no library does overlap tiling for an arbitrary torch model.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from srcore.train.runtime import autocast, inference_layout

DEFAULT_TILE = 256
DEFAULT_TILE_PAD = 16


def receptive_radius(model) -> int:
    """LR pixels on each side of a pixel that can change its output (RRDBNet; else 0).

    conv_first and conv_body: 1 each; each RRDB: 3 dense blocks of 5 chained 3x3 convs = 15;
    the two nearest 2x upsamplings with conv_up1/conv_up2/conv_hr/conv_last: 2 (the bicubic
    skip reaches 2 as well).
    """
    config = getattr(model, "config", None) or {}
    return 15 * int(config["rrdb"]) + 4 if "rrdb" in config else 0


def tile_boxes(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) LR boxes covering the image; tile 0 = one box for the whole image."""
    if tile < 0:
        raise ValueError(f"tile must be >= 0, not {tile}")
    ty = tile or height
    tx = tile or width
    return [(y, min(y + ty, height), x, min(x + tx, width))
            for y in range(0, height, ty) for x in range(0, width, tx)]


def upscale_array(model, img: np.ndarray, tile: int = DEFAULT_TILE,
                  tile_pad: int = DEFAULT_TILE_PAD, device: str | torch.device = "cpu",
                  precision: str = "fp32",
                  progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Upscale a decoded image 4x; the result has the input's mode and dtype.

    img: (H, W) gray or (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16. Gray goes through the
    network as three equal channels and comes back as their mean; the alpha of RGBA is upscaled
    with bicubic interpolation; 16-bit samples reach the network as floats in [0, 1] and come
    back as 16-bit. The model output is clamped to [0, 1] and rounded. `progress(1)` is called
    after each tile.
    """
    img = np.asarray(img)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8 or uint16 samples, not {img.dtype}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4), not {img.shape}")
    if tile_pad < 0:
        raise ValueError(f"tile_pad must be >= 0, not {tile_pad}")
    device = torch.device(device)
    scale = int(getattr(model, "scale", 4))
    height, width = img.shape[:2]
    maxval = float(np.iinfo(img.dtype).max)
    gray, alpha = img.ndim == 2, img.ndim == 3 and img.shape[2] == 4
    out = np.empty((height * scale, width * scale, *img.shape[2:]), dtype=img.dtype)
    model.to(device).eval()

    def quantized(y: torch.Tensor) -> np.ndarray:
        return y.float().clamp_(0, 1).mul_(maxval).round_().to(torch.int32).cpu().numpy()

    with torch.inference_mode():
        for y0, y1, x0, x1 in tile_boxes(height, width, tile):
            py0, py1 = max(y0 - tile_pad, 0), min(y1 + tile_pad, height)
            px0, px1 = max(x0 - tile_pad, 0), min(x1 + tile_pad, width)
            patch = img[py0:py1, px0:px1].astype(np.float32) / maxval
            patch = torch.from_numpy(patch).to(device)
            if gray:
                x = patch[None, None].expand(1, 3, -1, -1)
            else:
                x = patch[:, :, :3].permute(2, 0, 1)[None]
            with autocast(precision, device):
                y = model(inference_layout(x))
            # the tile's own area in the padded tile's output
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            crop = (slice(oy, oy + (y1 - y0) * scale), slice(ox, ox + (x1 - x0) * scale))
            y = y[0, :, crop[0], crop[1]]
            target = (slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))
            if gray:
                out[target] = quantized(y.float().mean(0))
            else:
                out[(*target, slice(0, 3))] = quantized(y.permute(1, 2, 0))
            if alpha:
                a = F.interpolate(patch[None, None, :, :, 3], scale_factor=scale,
                                  mode="bicubic", align_corners=False)
                out[(*target, 3)] = quantized(a[0, 0, crop[0], crop[1]])
            if progress is not None:
                progress(1)
    return out
