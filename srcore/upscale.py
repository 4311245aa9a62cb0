"""The `upscale` command: find the images, name the outputs, upscale each one, report.

One bad file does not stop the batch: a file that cannot be read (a broken symbolic link too),
or whose output already exists (without --overwrite), is reported by name and skipped, and the
summary counts it. A full disk (or quota, or read-only file system) does stop it: every later
output would fail as well. Ctrl-C says how many images are done and how many not yet.
Problems with the whole request (a missing input path, outputs that would collide with each
other or with inputs, a checkpoint that is not an RRDBNet, an .onnx file that onnxruntime
cannot run) stop before any image is touched. An .onnx model (`srcore export`) goes through the
same tiling and image-mode handling (srcore.infer) as a checkpoint, via srcore.onnx_model.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srcore.atomic import signals_deferred, write_bytes
from srcore.choices import DEVICES, PRECISIONS
from srcore.errors import Interrupted, SrcoreError
from srcore.io import IMAGE_SUFFIXES, file_or_broken_link, hidden, is_image_name
from srcore.sizes import DEFAULT_TILE_PAD, SCALE

SUFFIX = f"_x{SCALE}"
SIXTEEN_BIT_FORMATS = {".png", ".tif", ".tiff"}
NO_ALPHA_FORMATS = {".jpg", ".jpeg"}
MANY_TILES = 2000  # warn above this many tiles in one image
TILE_BAR_DELAY = 3  # seconds: images that take longer show a progress bar over their tiles
# the largest side each format's encoder takes (WebP: 14 bits; libjpeg: JPEG_MAX_DIMENSION)
MAX_SIDE = {".webp": 16383, ".jpg": 65500, ".jpeg": 65500}
READ_ONLY_SUFFIXES = {".gif"}  # read (still GIFs), written as PNG
# write errors after which every further output would fail too: the batch stops at once
STOP_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}


@dataclass
class Job:
    src: Path
    dst: Path


@dataclass
class Summary:
    done: int = 0
    failed: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs that exist already
    not_tried: int = 0  # left when a full (or read-only) disk stopped the batch
    seconds: float = 0.0
    megapixels: float = 0.0  # of output

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.not_tried

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        stopped = f", {self.not_tried} not tried (stopped)" if self.not_tried else ""
        return (f"upscaled {self.done} image(s), {len(self.failed)} failed, "
                f"{len(self.skipped)} skipped (output exists){stopped} in {self.seconds:.1f} s, "
                f"{rate:.2f} MP/s of output")


def normalize_ext(ext: str | None) -> str | None:
    if ext is None:
        return None
    suffix = "." + ext.lower().lstrip(".")
    if suffix not in IMAGE_SUFFIXES:
        allowed = ", ".join(sorted(s[1:] for s in IMAGE_SUFFIXES))
        raise SrcoreError(f"--ext {ext}: not a supported format; use one of {allowed}")
    return suffix


def output_name(src: Path, suffix: str | None) -> str:
    """<stem>_x4.<ext>: the input's format, or `suffix` (from --ext); read-only ones as PNG."""
    return f"{src.stem}{SUFFIX}{suffix or (src.suffix.lower() if is_image_name(src) else '.png')}"


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a symbolic link loop (reported when the job runs)
        return path.absolute()


def collect_jobs(inputs: list[Path], outdir: Path, recursive: bool = False,
                 ext: str | None = None) -> list[Job]:
    """One job per input image: files as given, folders searched for image files.

    The output is OUTDIR/<stem>_x4.<ext>, below the same subfolder as the input inside a given
    folder; <ext> is the input's unless `ext` is given.
    """
    suffix = normalize_ext(ext)
    pairs: list[tuple[Path, Path]] = []  # (input file, output folder)
    for given in map(Path, inputs):
        if file_or_broken_link(given):
            pairs.append((given, outdir))
        elif given.is_dir():
            # hidden files are skipped, and so are earlier results in an output folder inside
            found = sorted(p for p in (given.rglob("*") if recursive else given.iterdir())
                           if file_or_broken_link(p) and (is_image_name(p)
                                               or p.suffix.lower() in READ_ONLY_SUFFIXES)
                           and not hidden(p, given)
                           and not (outdir.resolve() != given.resolve()
                                    and _resolve(p).is_relative_to(outdir.resolve())))
            # and so are earlier results beside their source (a.png's a_x4.png, or a_x4.jpg
            # from an earlier run with another --ext), so that `upscale DIR -o DIR` can run
            # again; a lone foo_x4.png is still an input
            stems = {(p.parent, p.stem) for p in found}
            results = {p for p in found if p.stem.endswith(SUFFIX)
                       and (p.parent, p.stem[:-len(SUFFIX)]) in stems}
            if results:
                print(f"note: {given}: {len(results)} earlier result(s) beside their source "
                      "(NAME_x4 of NAME) are not inputs", file=sys.stderr)
            found = [p for p in found if p not in results]
            if not found:
                hint = "" if recursive else " (add --recursive to search subfolders)"
                print(f"note: no images in {given}{hint}", file=sys.stderr)
            pairs += [(p, outdir / p.parent.relative_to(given)) for p in found]
        else:
            raise SrcoreError(f"{given}: no such file or folder; check the path")
    if not pairs:
        names = ", ".join(sorted(IMAGE_SUFFIXES))
        raise SrcoreError(f"no images found in {', '.join(map(str, inputs))} (looked for {names})")

    jobs, seen, by_dst = [], set(), {}
    for src, folder in pairs:
        if _resolve(src) in seen:
            continue
        seen.add(_resolve(src))
        job = Job(src, folder / output_name(src, suffix))
        other = by_dst.setdefault(job.dst.resolve(), job)
        if other is not job:
            raise SrcoreError(f"{other.src} and {src} would both be written to {job.dst}; "
                              "rename one of them or upscale them into different folders")
        jobs.append(job)
    for job in jobs:
        if job.dst.resolve() in seen:
            raise SrcoreError(f"the output of {job.src} would be {job.dst}, which is one of the "
                              "inputs; choose another output folder (-o) or move that file")
        if job.dst.is_dir():  # found now, not after the image is computed
            raise SrcoreError(f"the output of {job.src} would be {job.dst}, which is a folder; "
                              "rename or remove that folder, or choose another output folder (-o)")
    return jobs


def check_output_folder(outdir: Path) -> None:
    """Refuse an output folder that is a file, lies below one, or cannot be written, before
    the model is loaded (otherwise every image would fail on its own)."""
    for folder in (outdir, *outdir.parents):
        if not folder.exists():
            continue
        if not folder.is_dir():
            below = "" if folder == outdir else f": {folder}"
            raise SrcoreError(f"-o {outdir}{below} is a file; give a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SrcoreError(f"-o {outdir}: {folder} is not writable; choose a writable "
                              "location")
        return


def icc_profile(path: Path) -> bytes | None:
    """The input's embedded ICC colour profile (e.g. Display P3, Adobe RGB), if any."""
    from PIL import Image

    with Image.open(path) as img:
        return img.info.get("icc_profile") or None


def _with_icc(buf: np.ndarray, suffix: str, icc: bytes) -> list:
    """Encoded PNG or JPEG bytes with `icc` embedded (OpenCV's encoders write no profile), as
    pieces to write one after the other: views of `buf`, not a copy of a large output."""
    import struct
    import zlib

    if suffix == ".png":  # an iCCP chunk right after IHDR (8-byte signature + 25-byte IHDR)
        data = b"ICC Profile\0\0" + zlib.compress(icc)
        chunk = struct.pack(">I", len(data)) + b"iCCP" + data + struct.pack(
            ">I", zlib.crc32(b"iCCP" + data))
        return [buf[:33], chunk, buf[33:]]
    # JPEG: APP2 ICC_PROFILE segments of at most 65519 bytes, after SOI and the JFIF APP0
    at = 4 + int.from_bytes(buf[4:6], "big") if bytes(buf[2:4]) == b"\xff\xe0" else 2
    parts = [icc[i:i + 65519] for i in range(0, len(icc), 65519)]
    segments = b"".join(b"\xff\xe2" + struct.pack(">H", 2 + 14 + len(part)) + b"ICC_PROFILE\0"
                        + bytes([number, len(parts)]) + part
                        for number, part in enumerate(parts, 1))
    return [buf[:at], segments, buf[at:]]


def encode_image(path: Path, arr: np.ndarray, icc: bytes | None = None
                 ) -> tuple[list, list[str]]:
    """Encode by the file's extension; return the file's pieces (for write_bytes) and the
    conversions made.

    JPEG gets no alpha; formats other than PNG/TIFF get 8-bit. `icc`, the input's colour
    profile, is embedded in PNG and JPEG outputs if it is one for the output's samples (RGB or
    gray: not a CMYK JPEG's); else, and for the other formats, it is dropped with a note. The
    array's RGB(A) channels are swapped to OpenCV's BGR(A) in place (no copy of a large
    output), so it is consumed.
    """
    import cv2

    suffix = path.suffix.lower()
    notes = []
    if arr.ndim == 3 and arr.shape[2] == 4 and suffix in NO_ALPHA_FORMATS:
        notes.append(f"alpha dropped ({suffix[1:]} has none)")
        arr = np.ascontiguousarray(arr[:, :, :3])
    if arr.dtype == np.uint16 and suffix not in SIXTEEN_BIT_FORMATS:
        notes.append(f"16-bit reduced to 8-bit ({suffix[1:]} has no 16-bit)")
        arr8 = np.empty(arr.shape, np.uint8)
        for r in range(0, arr.shape[0], 256):  # in strips: no full-size uint32 temporary
            arr8[r:r + 256] = (arr[r:r + 256].astype(np.uint32) + 128) // 257
        arr = arr8
    if arr.ndim == 3:
        for r in range(0, arr.shape[0], 256):
            rows = arr[r:r + 256]
            rows[:, :, :3] = rows[:, :, 2::-1].copy()
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in NO_ALPHA_FORMATS else []
    try:
        ok, buf = cv2.imencode(suffix, arr, params)
    except cv2.error as err:
        raise SrcoreError(f"{path}: could not encode as {suffix[1:]} ({err})") from None
    if not ok:
        raise SrcoreError(f"{path}: could not encode as {suffix[1:]}; try --ext png")
    pieces = [buf.reshape(-1)]
    space = b"GRAY" if arr.ndim == 2 else b"RGB "  # what the output's samples are
    if icc and icc[16:20] != space:  # e.g. a CMYK JPEG's profile: wrong for RGB samples
        notes.append(f"colour profile dropped (a {icc[16:20].decode('latin-1').strip()} "
                     f"profile does not fit {space.decode().strip()} samples)")
    elif icc and suffix in (".png", *NO_ALPHA_FORMATS):
        pieces = _with_icc(pieces[0], suffix, icc)
    elif icc:
        notes.append(f"colour profile dropped (not written into {suffix[1:]}; "
                     "use --ext png to keep it)")
    return pieces, notes


def parse_tile(value: str) -> int | None:
    """--tile: "auto" (None) or a number of input pixels (0 = the whole image at once)."""
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise SrcoreError(f"--tile {value}: use auto (the default), 0 (the whole image at once) "
                          "or a tile size in input pixels, e.g. --tile 256") from None


def run(inputs: list[Path], outdir: Path, checkpoint: Path, tile: int | None = None,
        tile_pad: int = DEFAULT_TILE_PAD, device: str = "auto", precision: str = "auto",
        overwrite: bool = False, recursive: bool = False, ext: str | None = None) -> Summary:
    """Upscale every input image into outdir; per-file problems are counted, not raised.

    tile None: auto (srcore.infer.auto_tile: the whole image if it fits in free GPU memory,
    else the largest tile that does; 256 on a CPU or for an .onnx model)."""
    if device not in DEVICES:
        raise SrcoreError(f"--device {device}: use one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise SrcoreError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    from srcore.infer import MIN_TILE

    if (tile is not None and tile < 0) or tile_pad < 0:
        raise SrcoreError("--tile and --tile-pad must be >= 0 (--tile 0: the whole image at once)")
    if tile is not None and 0 < tile < MIN_TILE:
        raise SrcoreError(f"--tile {tile} is below the minimum of {MIN_TILE} input pixels (tiles "
                          "that small take hours on a photo); use --tile auto, the default, or "
                          "256, or lower it only as far as memory requires")
    jobs = collect_jobs(inputs, outdir, recursive, ext)
    check_output_folder(Path(outdir))

    from srcore.infer import (DEFAULT_TILE, MEMORY_SHARE, bytes_per_pixel, free_gpu_bytes,
                              image_precision, largest_tile, probes_memory, receptive_radius)
    from srcore.models.checkpoint import load_generator
    from srcore.train.runtime import pick_device

    dev = pick_device(device, "--device")
    if Path(checkpoint).suffix.lower() == ".onnx":
        from srcore.onnx_model import OnnxModel

        if precision not in ("auto", "fp32"):
            raise SrcoreError(f"--precision {precision}: an .onnx model runs at the precision "
                              "it was exported with (`srcore export --fp16` writes an fp16 one)")
        model = OnnxModel(checkpoint, dev)  # a bad file stops here, before any image
        prec = prec_16bit = "fp32"  # upscale_array's autocast: none; the file has its own dtype
        what = (f"ONNX {checkpoint} ({np.dtype(model.dtype).name}, "
                f"{model.session.get_providers()[0]})")
        radius = receptive_radius(model) if model.config else "unknown"
    else:
        model, _ = load_generator(checkpoint)  # a non-RRDBNet file stops here, before any image
        prec = image_precision(precision, dev, False, "--precision")
        prec_16bit = image_precision(precision, dev, True, "--precision")
        model.to(dev).eval()
        what = f"RRDBNet {model.config} from {checkpoint} on {dev}, {prec}" + (
            f" ({prec_16bit} for 16-bit images)" if prec_16bit != prec else "")
        radius = receptive_radius(model)
    created = not Path(outdir).exists()
    try:  # made only now, so that a refused model leaves nothing behind
        Path(outdir).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SrcoreError(f"-o {outdir}: cannot create the folder ({err.strerror or err}); "
                          "choose a writable location") from None
    if tile is not None:
        tiling = f"tile {tile or 'off'}"
    elif probes_memory(model, dev):
        per_pixel, free = bytes_per_pixel(model, dev, prec), free_gpu_bytes(dev)
        tiling = (f"tile auto: the whole image up to {MEMORY_SHARE * free / per_pixel / 1e6:.1f} "
                  f"MP of input ({free / 2 ** 30:.1f} GiB GPU memory free, "
                  f"{per_pixel / 1024:.1f} KiB per input pixel), else tiles of "
                  f"{largest_tile(tile_pad, per_pixel, free)}")
    else:
        tiling = f"tile auto: {DEFAULT_TILE}"
    print(f"model: {what}; {tiling}, pad {tile_pad} (exact from pad {radius})", file=sys.stderr)

    summary = Summary()
    try:
        _upscale_all(jobs, summary, model, tile, tile_pad, dev, (prec, prec_16bit), overwrite)
    except Interrupted as stop:
        left = len(jobs) - summary.done - len(summary.failed) - len(summary.skipped)
        stop.message = (f"{summary.done} image(s) upscaled, {left} not yet (none half-written)."
                        " Run the same command again to do the rest: it skips the outputs "
                        "already written (listed as skipped, so it exits with code 2)")
        raise
    finally:
        if created and not summary.done:  # every image failed: no empty folder left behind
            with contextlib.suppress(OSError):
                Path(outdir).rmdir()
    return summary


def _check_host_memory(src: Path, model, img: np.ndarray, window: tuple[int, int, int, int],
                       size: int, on_cpu: bool = True) -> None:
    """Refuse an image whose output, and on a CPU its pass (one tile window, or the whole
    image with --tile 0), would not fit in the memory available: the system would kill the
    process (often with nothing said) rather than raise an error, after minutes of work. (On a
    GPU the pass is in GPU memory, planned by auto or refused by CUDA with an error.)"""
    from srcore.infer import DEFAULT_TILE, host_pass_bytes
    from srcore.io import available_memory

    wy0, wy1, wx0, wx1 = window
    # an .onnx model's layout is unknown (None): its output image is checked all the same
    per_pass = (host_pass_bytes(model, (wy1 - wy0) * (wx1 - wx0)) or 0) if on_cpu else 0
    available = available_memory()
    if available is None:
        return
    output = img.nbytes * SCALE * SCALE
    # the output image is held through the passes, then beside its encoded file (PNG: up to
    # about its size)
    needed = output + max(per_pass, output)
    if needed <= available:
        return
    gib = 2 ** 30
    where = "the whole image in one pass" if not size else f"a tile of {size} pixels"
    parts = f"{output / gib:.1f} GiB output image" + (
        f", {per_pass / gib:.1f} GiB for {where}" if per_pass else "")
    start = (f"{src}: out of memory: {img.shape[1]}x{img.shape[0]} needs about "
             f"{needed / gib:.1f} GiB ({parts}), and {available / gib:.1f} GiB is available")
    if 2 * output > available:  # no tile size helps
        raise SrcoreError(f"{start}; free memory or upscale a smaller image (crop or split it)")
    raise SrcoreError(f"{start}; use a smaller --tile (auto: {DEFAULT_TILE} on a CPU)")


def _upscale_all(jobs: list[Job], summary: Summary, model, tile, tile_pad, dev, precisions,
                 overwrite) -> None:
    """The per-image loop of `run`: fills in `summary`, its time too. precisions: those of 8-
    and of 16-bit images."""
    from tqdm import tqdm

    from srcore.infer import auto_tile, tiles, upscale_array
    from srcore.io import read_image
    from srcore.train.runtime import out_of_memory

    start = time.perf_counter()
    bar = tqdm(jobs, unit="img", desc="upscale", disable=None)
    for number, job in enumerate(bar, 1):
        if job.dst.exists() and not overwrite:
            summary.skipped.append(job.src)
            tqdm.write(f"skipped: {job.dst} exists; pass --overwrite to replace it",
                       file=sys.stderr)
            continue
        try:
            img, mode = read_image(job.src)
            prec = precisions[img.dtype == np.uint16]
            height, width = img.shape[:2]
            suffix = job.dst.suffix.lower()
            limit = MAX_SIDE.get(suffix)
            if limit and max(height, width) * SCALE > limit:
                # found now, not after minutes of upscaling, when the encoder refuses it
                raise SrcoreError(f"{job.src}: the {SCALE}x result would be {width * SCALE}x"
                                  f"{height * SCALE}, over {suffix[1:]}'s limit of "
                                  f"{limit} pixels a side; use --ext png")
            size = auto_tile(model, height, width, tile_pad, dev, prec) if tile is None else tile
            pairs = tiles(height, width, size, tile_pad)
            n_tiles = len(pairs)
            # refused here, before the system's OOM killer ends the run
            _check_host_memory(job.src, model, img, pairs[0][1], size, dev.type == "cpu")
            if n_tiles > MANY_TILES:
                tqdm.write(f"note: {job.src}: {n_tiles} tiles of {size} pixels; this will take "
                           "long: a larger --tile is faster, if memory allows", file=sys.stderr)
            # shown only for an image that takes more than TILE_BAR_DELAY seconds, but then
            # also when stderr is a log file: a long run must show that it is moving
            with tqdm(total=n_tiles, unit="tile", desc=job.src.name, leave=False,
                      disable=n_tiles < 2, delay=TILE_BAR_DELAY, mininterval=1) as tile_bar:
                out = upscale_array(model, img, size, tile_pad, dev, prec, tile_bar.update)
            del img
            notes = ["palette expanded"] if mode.startswith("P") else []
            if mode in ("LA", "La") and out.shape[2:] == (4,):  # OpenCV writes no gray+alpha
                notes.append("gray+alpha written as RGBA")
            megapixels = out.shape[0] * out.shape[1] / 1e6
            pieces, conversions = encode_image(job.dst, out, icc_profile(job.src))
            notes += conversions
            del out
            # the file and its count together: Ctrl-C's message then counts every output
            # written (held back for the disk write only, not for the encoding before it)
            with signals_deferred():
                write_bytes(job.dst, *pieces)
                summary.done += 1
            summary.megapixels += megapixels
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
            summary.failed.append(job.src)
            message = str(err) if isinstance(err, SrcoreError) else \
                f"{job.src}: {type(err).__name__}: {err}"
            if out_of_memory(err):
                message += "; out of memory: use a smaller --tile"
            tqdm.write(f"failed: {message}", file=sys.stderr)
            cause = err.__cause__
            if isinstance(cause, OSError) and cause.errno in STOP_ERRNOS:
                summary.not_tried = len(jobs) - number
                if summary.not_tried:  # nothing to say after the last image
                    tqdm.write(f"stopped: every further output would fail too, so the other "
                               f"{summary.not_tried} image(s) are not tried; once there is room, "
                               "run the same command again (it skips the outputs already "
                               "written)", file=sys.stderr)
                break
            continue
        if notes:
            tqdm.write(f"{job.dst}: {', '.join(notes)}", file=sys.stderr)
        if bar.disable:  # no bar (a log file): one line per image shows the run is moving
            print(f"[{number}/{len(jobs)}] {job.dst} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    bar.close()
    summary.seconds = time.perf_counter() - start
