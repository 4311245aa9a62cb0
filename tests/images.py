"""Small test images of every mode, written with OpenCV/PIL."""

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def photo(height=40, width=56, seed=0) -> np.ndarray:
    """A smooth RGB uint8 image with some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 4, y * 5, (x + y) * 2], axis=2) % 256
    return np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8)


def write_modes(folder: Path) -> dict[str, Path]:
    """One file per mode: rgb, gray, rgba, palette, 16-bit, jpeg."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = photo()
    paths = {}
    paths["rgb"] = folder / "rgb.png"
    cv2.imwrite(str(paths["rgb"]), rgb[:, :, ::-1])
    paths["gray"] = folder / "gray.png"
    cv2.imwrite(str(paths["gray"]), rgb[:, :, 0])
    paths["rgba"] = folder / "rgba.png"
    cv2.imwrite(str(paths["rgba"]), np.dstack([rgb[:, :, ::-1], rgb[:, :, 1]]))
    paths["palette"] = folder / "palette.png"
    Image.fromarray(rgb).convert("P").save(paths["palette"])
    paths["sixteen"] = folder / "sixteen.png"
    cv2.imwrite(str(paths["sixteen"]), rgb[:, :, ::-1].astype(np.uint16) * 257)
    paths["jpeg"] = folder / "photo.jpg"
    cv2.imwrite(str(paths["jpeg"]), rgb[:, :, ::-1])
    return paths


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but holds no pixel data (a 'bomb')."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path
