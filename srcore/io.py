"""Read and write images of any mode, with clear errors for files that are not images.

PIL reads the header only (format, mode, size: cheap, and lets us refuse decompression bombs
before decoding); OpenCV decodes (fast, and keeps 16-bit samples that PIL would squash).
"""

from __future__ import annotations

import errno
import functools
import io
import os
import sys
from pathlib import Path

import numpy as np

from srcore.atomic import write_bytes
from srcore.errors import SrcoreError


def bar_interval() -> float:
    """Seconds between redraws of a tqdm progress bar (its mininterval): live in a terminal; in
    a log file (dvc repro, CI, dvc queue logs), where every redraw stays, about every 30 s.
    Give miniters=1 too where the rate varies (training): without it, tqdm's adaptive count of
    iterations between redraws redrew a training bar every 12 to 18 s."""
    return 0.1 if sys.stderr.isatty() else 30


def progress_bar(iterable=None, **kwargs):
    """A tqdm bar redrawn every bar_interval() s. In a log file it never draws the count it
    last drew again: tqdm's close redraws the finished bar, which the last step had drawn
    already when bar_interval() had passed since the draw before (the 100% line twice)."""
    return _log_file_bar()(iterable, mininterval=bar_interval(), **kwargs)


@functools.cache
def _log_file_bar():
    from tqdm import tqdm

    class Bar(tqdm):
        _drawn = None  # the count of the last draw

        def display(self, msg=None, pos=None):
            if msg is None and not sys.stderr.isatty():
                if self.n == self._drawn:
                    return True
                self._drawn = self.n
            return super().display(msg, pos)

    return Bar


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # listed so in errors
# 200 megapixels: far above any photo we train on (DIV2K <= 4.2 MP), far below what
# would exhaust memory; a header claiming more is treated as a decompression bomb.
MAX_PIXELS = 200_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a file larger than this is not read: twice uncompressed 16-bit RGBA, plus 64 MiB of metadata
# (EXIF, colour profile, camera previews)
MAX_BYTES_PER_PIXEL = 16
MAX_EXTRA_BYTES = 64 * 2 ** 20


def _cv2():
    """OpenCV, with its own log lines ("[ WARN:0@0.6] global grfmt_png.cpp ...") silenced:
    every problem they report reaches the user as one SrcoreError naming the file."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


def available_memory() -> int | None:
    """Bytes the system can give this process without swapping (None where unknown): checked
    before work that would otherwise end in the system's OOM killer, with nothing said."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def probe(path: Path) -> tuple[int, int, str]:
    """Return (width, height, PIL mode) from the header, or raise a clear SrcoreError."""
    return _header(path)[:3]


def displayed_size(path: Path) -> tuple[int, int]:
    """(width, height) as the image is displayed, and as read_image returns it: an EXIF
    orientation of 5 to 8 (a camera photo taken in portrait, stored landscape) swaps the sides
    that the header gives."""
    width, height, _, orientation, _ = _header(path)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _header(path: Path) -> tuple[int, int, str, int, str]:
    """probe's (width, height, mode), the EXIF orientation (1: as stored) and PIL's format."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if is_broken_link(path):
        raise SrcoreError(broken_link(path))
    if path.is_dir():
        raise SrcoreError(f"{path}: is a folder; give an image file")
    if not path.is_file():
        raise SrcoreError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise SrcoreError(f"{path}: empty file (0 bytes); remove or replace it")
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a clearer message
    try:
        with Image.open(path) as img:
            width, height = img.size
            mode, image_format = img.mode, img.format
            # the EXIF Orientation tag; PIL reads a PNG's whole file for its EXIF unless the
            # chunk comes before the pixels, which would decode a decompression bomb
            exif = img.getexif() if img.format != "PNG" or "exif" in img.info else {}
            orientation = exif.get(0x0112, 1)
            # MPO: a camera JPEG with extra views or previews; its first image is the photo
            frames = 1 if img.format == "MPO" else getattr(img, "n_frames", 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SrcoreError(f"{path}: not a readable image ({err}); remove or replace it") from None
    if frames > 1:  # OpenCV would decode the first frame only, silently
        raise SrcoreError(f"{path}: animated or multi-frame image ({frames} frames); only still "
                          "images are supported: save the frames you want as separate images")
    if width * height > MAX_PIXELS:
        raise SrcoreError(f"{path}: {width}x{height} exceeds the {MAX_PIXELS:,}-pixel limit "
                          "(possible decompression bomb); shrink it first")
    return width, height, mode, orientation, image_format


def is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def file_or_broken_link(path: Path) -> bool:
    """What a folder listing keeps: files, and links that lead nowhere, to be named later."""
    return path.is_file() or is_broken_link(path)


def hidden(path: Path, folder: Path) -> bool:
    """Whether `path` is, or lies in, a hidden file or folder under `folder`: not the user's
    images (macOS's ._x.jpg companions, thumbnail caches such as .thumbnails/)."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def broken_link(path: Path) -> str:
    """The message for a symbolic link that leads nowhere (or round in a loop)."""
    target = os.readlink(path)
    try:
        path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{path}: symbolic link loop (to {target}); fix or remove it"
    return f"{path}: broken symbolic link to {target}; fix or remove it"


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """Decode an image as displayed: (H, W) or (H, W, 3|4) RGB(A), uint8 or uint16; plus PIL's
    mode. An EXIF orientation (camera photos) is applied; files without one are as stored.
    Gray+alpha (PIL mode LA) comes as RGBA with three equal colour channels."""
    cv2 = _cv2()
    path = Path(path)
    width, height, mode, orientation, image_format = _header(path)
    # the whole file is read into memory to be decoded: one padded far beyond what its pixels
    # need (16-bit RGBA, uncompressed, is 8 bytes a pixel), to many GB, is refused unread
    size = path.stat().st_size
    if size > MAX_BYTES_PER_PIXEL * width * height + MAX_EXTRA_BYTES:
        raise SrcoreError(f"{path}: {size:,} bytes, far more than a {width}x{height} image "
                          "needs (padded, damaged, or holding extra data such as layers); "
                          "re-save it as a plain PNG")
    data = np.fromfile(path, dtype=np.uint8)  # works for any file name, unlike cv2.imread
    truncated = f"{path}: image data is corrupt or truncated; remove or replace it"
    # libpng prints "libpng error: ..." itself on a cut-short PNG, past OpenCV's log level;
    # a PNG ends in its IEND chunk, so such a file is refused before it is decoded
    if data[:8].tobytes() == PNG_SIGNATURE and b"IEND" not in data[-4096:].tobytes() \
            and b"IEND" not in data.tobytes():  # (data after IEND is rare but allowed)
        raise SrcoreError(truncated)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    # a TIFF's Orientation tag may be applied by the decoders themselves (libtiff through
    # OpenCV; PIL's size then is the displayed one too), and must then not be applied again
    oriented = image_format == "TIFF" and orientation != 1 and decoder_orients_tiff()
    sizes = {(height, width), (width, height)} if image_format == "TIFF" and orientation >= 5 \
        else {(height, width)}
    if arr is None or arr.shape[:2] not in sizes:
        raise SrcoreError(truncated)
    if arr.dtype not in (np.uint8, np.uint16):
        raise SrcoreError(f"{path}: {arr.dtype} samples are not supported; save it as 8- or "
                          "16-bit PNG")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim != 2:
        raise SrcoreError(f"{path}: {arr.shape[2]}-channel images are not supported")
    # IMREAD_UNCHANGED (which keeps alpha and 16-bit) ignores the EXIF orientation of PNG, JPEG
    # and WebP; OpenCV applies it only with flags that drop alpha, so it is applied here
    return (arr if oriented else orient(arr, orientation)), mode


@functools.cache
def decoder_orients_tiff() -> bool:
    """Whether OpenCV's TIFF decoder applies the Orientation tag itself (OpenCV 5 does, through
    libtiff, with IMREAD_UNCHANGED too): found once from a 2x1 mirrored TIFF made in memory."""
    from PIL import Image

    cv2 = _cv2()
    img = Image.fromarray(np.array([[0, 255]], np.uint8))
    exif = img.getexif()
    exif[0x0112] = 2  # mirrored left-right
    buf = io.BytesIO()
    img.save(buf, format="TIFF", exif=exif)
    arr = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    return arr is not None and int(arr.ravel()[0]) == 255


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2-8; 1 and unknown values: as stored), as PIL's
    ImageOps.exif_transpose does."""
    cv2 = _cv2()

    turn = {2: lambda a: cv2.flip(a, 1),
            3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
            4: lambda a: cv2.flip(a, 0),
            5: cv2.transpose,
            6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
            7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
            8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)}
    return turn[orientation](arr) if orientation in turn else arr


def to_rgb8(arr: np.ndarray, mode: str = "") -> tuple[np.ndarray, list[str]]:
    """Convert any decoded image to 8-bit RGB; return it with the conversions made."""
    conversions = []
    if mode.startswith("P"):
        conversions.append("palette")
    elif mode == "CMYK":  # the decoder made RGB of it
        conversions.append("CMYK")
    if arr.dtype == np.uint16:
        conversions.append("16-bit")
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)  # 65535 -> 255 exactly
    if arr.ndim == 2:
        conversions.append("grayscale")
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        conversions.append("alpha dropped")
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr), conversions


def read_rgb8(path: Path) -> np.ndarray:
    """Decode any supported image as 8-bit RGB (H, W, 3)."""
    arr, mode = read_image(path)
    return to_rgb8(arr, mode)[0]


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB(A) or grayscale uint8/uint16 array as PNG, atomically."""
    cv2 = _cv2()

    if rgb.ndim == 3 and rgb.shape[2] == 3:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", rgb)
    if not ok:
        raise SrcoreError(f"{path}: PNG encoding failed")
    write_bytes(path, buf)
