"""The `make-lq` command: a ground-truth image's low-quality (LQ) input, made as `evaluate`
makes it, so that a user can reproduce an evaluate row by hand with `upscale` and `compare`.

PIL's or OpenCV's resize is not the same: PIL's BICUBIC differs from the antialiased torch
kernel by one 8-bit level on about a tenth of the pixels, enough to move LPIPS in its fourth
decimal.
"""

from __future__ import annotations

from pathlib import Path

from srcore.errors import SrcoreError
from srcore.sizes import SCALE  # evaluate's LQ is GT / SCALE


def run(inputs: list[Path], outdir: Path, kernel: str = "bicubic",
        overwrite: bool = False) -> list[Path]:
    """Write OUTDIR/<stem>.png, the 8-bit RGB LQ of each input; return the paths written.
    Everything is checked before anything is written."""
    from srcore.data.kernels import KERNELS
    from srcore.evaluate import make_lq
    from srcore.io import read_rgb8, write_png

    if kernel not in KERNELS:
        raise SrcoreError(f"--kernel {kernel}: use one of {', '.join(KERNELS)} "
                          "(params.yaml's data.lq_kernel)")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise SrcoreError(f"-o {outdir} is a file; give a folder")
    jobs = []  # (output, its LQ): 1/16 of each photo's pixels is held until all are checked
    for src in map(Path, inputs):
        # decoded here, so that a file cut short after its header stops the command before any
        # output is written; scored as 8-bit RGB, as evaluate's GT is
        gt = read_rgb8(src)  # a clear error for a missing or broken file
        height, width = gt.shape[:2]
        dst = outdir / f"{src.stem}.png"
        if dst.resolve() == src.resolve():  # --overwrite would not help: choose another -o
            raise SrcoreError(f"{src}: its LQ would replace it ({dst}); choose another -o")
        if dst.exists() and not overwrite:
            raise SrcoreError(f"{dst} exists; pass --overwrite to replace it, or choose "
                              "another -o")
        if dst in (d for d, _ in jobs):
            raise SrcoreError(f"two inputs would both be written to {dst}; rename one")
        if height % SCALE or width % SCALE:
            raise SrcoreError(f"{src} is {width}x{height}: its sides must divide by {SCALE}, or "
                              f"the {SCALE}x result will not match it in size; crop it to "
                              f"{width // SCALE * SCALE}x{height // SCALE * SCALE} first")
        jobs.append((dst, make_lq(gt, SCALE, kernel)))
    outdir.mkdir(parents=True, exist_ok=True)
    for dst, lq in jobs:
        write_png(dst, lq)
    return [dst for dst, _ in jobs]
