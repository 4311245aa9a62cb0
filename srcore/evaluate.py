"""Evaluate upscaling methods on whole test images: per-image metrics and their means, and the
report's comparison figure of them.

LR inputs are made from the HR images with the training kernel and stored as 8-bit, exactly as
a user's LR file would be; models run through the same tiled inference as `upscale`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from srcore.data.dataset import to_tensor
from srcore.data.kernels import downscale, upscale
from srcore.errors import SrcoreError
from srcore.figures import labelled_row
from srcore.io import progress_bar
from srcore.metrics import image_metrics, to_uint8

METRICS = ("psnr", "ssim", "psnr_y", "ssim_y", "lpips")
BASELINES = ("nearest", "bilinear", "bicubic")
FIGURE_IMAGES = 3  # the comparison figure shows the first three test images


def make_lq(gt: np.ndarray, scale: int, kernel: str) -> np.ndarray:
    return to_uint8(downscale(to_tensor(gt)[None], scale, kernel))


def baseline(kernel: str, scale: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda lq: to_uint8(upscale(to_tensor(lq)[None], scale, kernel))


def model_upscaler(model, device, precision: str):
    """Tiled as upscale's --tile auto (srcore.infer: the whole image on a GPU where it fits; 256
    on a CPU)."""
    from srcore.infer import upscale_array

    return lambda lq: upscale_array(model, lq, device=device, precision=precision)


def evaluate(methods: dict[str, Callable[[np.ndarray], np.ndarray]],
             images: dict[str, np.ndarray], scale: int, kernel: str, crop_border: int,
             lpips_model, desc: str = "evaluate", outputs: dict | None = None) -> list[dict]:
    """One row {method, image, psnr, ssim, psnr_y, ssim_y, lpips} per method and image; an
    image that a method restores exactly (infinite PSNR) is refused by name.

    `outputs`, if given, gets the SR images of the first FIGURE_IMAGES images as
    outputs[image][method], for comparison_figure: a large model on a CPU takes minutes to
    upscale them again."""
    rows = []
    for i, (name, gt) in enumerate(progress_bar(images.items(), desc=desc, unit="img")):
        lq = make_lq(gt, scale, kernel)
        for method, sr_of in methods.items():
            with torch.no_grad():
                sr = sr_of(lq)
            scores = image_metrics(gt, sr, crop_border, lpips_model)
            infinite = [f"{k} {v}" for k, v in scores.items() if not np.isfinite(v)]
            if infinite:  # identical images: their mean and differences would be inf or nan
                raise SrcoreError(
                    f"test image {name}: {method} restores it exactly ({', '.join(infinite)}), "
                    "so the means and paired differences cannot be computed. A single-colour "
                    "image (or one a method restores exactly) says nothing about upscaling: "
                    "remove it from the source and re-run dvc repro")
            rows.append({"method": method, "image": name, **scores})
            if outputs is not None and i < FIGURE_IMAGES:
                outputs.setdefault(name, {})[method] = sr
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{method: {metric: mean over images}}, methods in the order they first appear."""
    methods = dict.fromkeys(r["method"] for r in rows)
    return {m: {k: float(np.mean([r[k] for r in rows if r["method"] == m])) for k in METRICS}
            for m in methods}


def comparison_figure(images: dict, methods: dict, scale: int, kernel: str, crop_border: int,
                      lpips_model, outputs: dict | None = None, crop: int = 160, zoom: int = 4):
    """The report's figure 6: the same crop of ground truth and each method, for the first
    FIGURE_IMAGES images, with each crop's PSNR-Y and LPIPS under it; below, the crop's centre
    enlarged `zoom` times (nearest neighbour), where the CNN's smoothness and the GAN's texture
    can be told apart. A method's SR image found in `outputs` (evaluate's) is not made again."""
    outputs = outputs or {}
    lines = []
    for name, gt in list(images.items())[:FIGURE_IMAGES]:
        size = min(crop, *gt.shape[:2]) // scale * scale
        top = (gt.shape[0] - size) // 2 // scale * scale
        left = (gt.shape[1] - size) // 2 // scale * scale
        lq = make_lq(gt, scale, kernel)
        window = (slice(top, top + size), slice(left, left + size))
        made = outputs.get(name, {})
        panels = [gt[window]] + [(made[m] if m in made else sr_of(lq))[window]
                                 for m, sr_of in methods.items()]
        captions = [""]
        for panel in panels[1:]:
            scores = image_metrics(panels[0], panel, crop_border, lpips_model)
            captions.append(f"{scores['psnr_y']:.2f} dB, LPIPS {scores['lpips']:.3f}")
        detail = size // zoom // 2
        middle = slice(size // 2 - detail, size // 2 + detail)
        zoomed = [np.repeat(np.repeat(p[middle, middle], zoom, 0), zoom, 1) for p in panels]
        lines.append(labelled_row(panels, [f"{name} (GT)"[:20]] + list(methods), captions=captions))
        lines.append(labelled_row(zoomed, [f"centre x{zoom}"] + [""] * len(methods)))
    width = max(line.shape[1] for line in lines)
    padded = [np.pad(line, ((0, 6), (0, width - line.shape[1]), (0, 0)), constant_values=255)
              for line in lines]
    return np.concatenate(padded)
