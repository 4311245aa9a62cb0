"""Prepare HR images: shrink keeping the aspect ratio, crop to the scale, split train/val/test."""

from __future__ import annotations

import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srcore.errors import SrcoreError
from srcore.io import progress_bar, read_image, to_rgb8, write_png


def shrink_and_crop(rgb: np.ndarray, max_side: int, scale: int) -> np.ndarray:
    """Shrink (INTER_AREA) so the longer side is <= max_side, then crop to multiples of scale.

    The report halved DIV2K's 2040-pixel images; the author's code squashed every image to a
    fixed 1020x702. Keeping the aspect ratio gives the report's halving without the squash.
    The crop keeps the top-left corner, as BasicSR's mod-crop does.
    """
    import cv2

    height, width = rgb.shape[:2]
    longer = max(height, width)
    if longer > max_side:
        factor = max_side / longer
        size = (max(scale, round(width * factor)), max(scale, round(height * factor)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    height, width = rgb.shape[:2]
    return rgb[: height - height % scale, : width - width % scale]


@dataclass
class HrImage:
    name: str
    source_size: tuple[int, int]  # (width, height) as read
    size: tuple[int, int]  # (width, height) written
    conversions: list[str] = field(default_factory=list)


def downsample_one(src: Path, dest: Path, max_side: int, scale: int,
                   min_side: int = 1, why: str = "", shown: str | None = None) -> HrImage:
    """Downsample one image; refuse it if a side ends up below `min_side` (`why` says why),
    or if it is one colour.
    `shown` names the image in that error (default: src)."""
    arr, mode = read_image(src)
    rgb, conversions = to_rgb8(arr, mode)
    out = shrink_and_crop(rgb, max_side, scale)
    if min(out.shape[:2]) < max(min_side, scale):
        raise SrcoreError(f"{shown or src}: {out.shape[1]}x{out.shape[0]} after downsampling (from "
                          f"{rgb.shape[1]}x{rgb.shape[0]}), smaller than the minimum side of "
                          f"{max(min_side, scale)} pixels{why}")
    if (out == out[0, 0]).all():
        # any interpolation gives it back exactly: an infinite PSNR, which no mean survives
        raise SrcoreError(f"{shown or src}: one colour {tuple(int(c) for c in out[0, 0])} "
                          "over the whole image: nothing to upscale, and its scores cannot be "
                          "averaged")
    write_png(dest, out)
    return HrImage(dest.stem, (rgb.shape[1], rgb.shape[0]), (out.shape[1], out.shape[0]),
                   conversions)


def downsample_all(sources: list[tuple[str, Path]], dest_dir: Path, max_side: int,
                   scale: int, min_side: int = 1, why: str = "",
                   shown: dict[str, str] | None = None,
                   final_dir: Path | None = None) -> list[HrImage]:
    """Downsample every (name, file) into dest_dir/<name>.png, in parallel.

    Every bad file (unreadable, or a side below `min_side`) is collected and reported in one
    error, so a user fixes them all at once; `shown` maps a name to what that error calls it
    (the user's own file rather than its copy). A failed write (a full disk, a read-only
    folder) is no bad file: it stops the work at once, with one error naming the output as in
    `final_dir` (the folder dest_dir, a temporary one, becomes; default dest_dir).
    """
    import threading

    from srcore.atomic import write_error

    stop = threading.Event()
    failed_writes: dict[str, SrcoreError] = {}

    def work(item):
        name, src = item
        if stop.is_set():
            return None
        try:
            return downsample_one(src, dest_dir / f"{name}.png", max_side, scale, min_side,
                                  why, (shown or {}).get(name))
        except SrcoreError as err:
            if isinstance(err.__cause__, OSError):  # writing failed, not reading
                stop.set()
                failed_writes[name] = write_error(Path(final_dir or dest_dir) / f"{name}.png",
                                                  err.__cause__)
                return None
            return err

    # OpenCV releases the GIL while decoding, resizing and encoding, so threads scale.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(progress_bar(pool.map(work, sources), total=len(sources),
                                    desc="downsample", unit="img"))
    if failed_writes:  # the first, in the order of the sources
        raise next(failed_writes[name] for name, _ in sources if name in failed_writes)
    problems = [str(r) for r in results if isinstance(r, SrcoreError)]
    if problems:
        raise SrcoreError(f"{len(problems)} image(s) cannot be used; remove or replace them "
                          "and re-run:\n  " + "\n  ".join(problems))
    return results


def split_counts(n: int, wanted: dict[str, int], min_per_split: int) -> dict[str, int]:
    """Scale the wanted train/val/test counts to n images (largest remainder method).

    train gets at least 1 image and val and test min_per_split each, taken from whichever
    split has the most to spare (train, unless the wanted proportions favour another).
    """
    if n < 1 + 2 * min_per_split:
        raise SrcoreError(f"only {n} image(s): a split needs at least {1 + 2 * min_per_split} "
                          f"(1 train + split.min_per_split={min_per_split} each for val and "
                          "test); add images or lower split.min_per_split")
    total = sum(wanted.values())
    exact = {k: n * v / total for k, v in wanted.items()}
    counts = {k: math.floor(x) for k, x in exact.items()}
    by_remainder = sorted(wanted, key=lambda k: exact[k] - counts[k], reverse=True)
    for key in by_remainder[: n - sum(counts.values())]:
        counts[key] += 1
    least = {"train": 1, "val": min_per_split, "test": min_per_split}
    for key in least:  # n >= the sum of least, so some split always has one to spare
        while counts[key] < least[key]:
            donor = max(counts, key=lambda k: counts[k] - least[k])
            counts[donor] -= 1
            counts[key] += 1
    return counts


def split_names(names: list[str], counts: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Shuffle sorted names with the seed and cut them into the counted splits (sorted)."""
    order = sorted(names)
    random.Random(seed).shuffle(order)
    splits, start = {}, 0
    for key in ("train", "val", "test"):
        splits[key] = sorted(order[start : start + counts[key]])
        start += counts[key]
    return splits
