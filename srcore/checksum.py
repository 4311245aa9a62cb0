"""One streaming SHA-256 for downloads, pretrained weights and the stages' resume keys."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path):
    """The running SHA-256 of a file, read in 1 MiB blocks (so it can be continued)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest
