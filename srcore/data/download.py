"""Download the DIV2K HR zips (resumable, verified) and extract their images safely."""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from srcore.checksum import sha256_of
from srcore.errors import SrcoreError
from srcore.io import IMAGE_SUFFIXES, progress_bar


@dataclass(frozen=True)
class RemoteFile:
    url: str
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return PurePosixPath(urlparse(self.url).path).name


# Sizes and SHA-256 as published in TensorFlow Datasets' url_checksums/div2k.txt.
DIV2K_FILES = (
    RemoteFile("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
               3_530_603_713, "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335"),
    RemoteFile("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
               448_993_893, "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc"),
)

_NETWORK_ERRORS = (OSError, http.client.HTTPException)  # URLError, timeouts, resets are OSErrors


def fetch(remote: RemoteFile, downloads_dir: Path, *, timeout: float = 30,
          chunk_size: int = 1 << 20) -> Path:
    """Return `downloads_dir/remote.name`, downloading (and resuming) it if absent; always verified."""
    downloads_dir = Path(downloads_dir)
    final = downloads_dir / remote.name
    if final.exists():
        _verify_placed(remote, final)
        return final

    part = final.with_name(final.name + ".part")
    try:
        downloads_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _disk_error(downloads_dir, err) from err
    try:
        have = part.stat().st_size if part.exists() else 0
        if have > remote.size:  # cannot be a prefix of the right file
            part.unlink()
            have = 0
        digest = sha256_of(part) if have else hashlib.sha256()
    except OSError as err:
        raise _disk_error(part, err, _RESUME_NOTE) from err

    if have < remote.size:
        have, digest = _stream(remote, part, have, digest, timeout, chunk_size, downloads_dir)

    if have < remote.size:
        raise SrcoreError(
            f"download of {remote.url} was cut short at {have} of {remote.size} bytes. "
            f"Re-run to resume it (the partial file {part} is kept).")
    actual = digest.hexdigest()
    if have > remote.size or actual != remote.sha256:
        part.unlink(missing_ok=True)
        raise SrcoreError(
            f"download of {remote.url} does not match the published file: expected "
            f"{remote.size} bytes with SHA-256 {remote.sha256}, got {have} bytes with SHA-256 "
            f"{actual}. The partial file was deleted; re-run to download it again, or "
            f"{_PLACE_REMEDY.format(dir=downloads_dir)}.")
    try:
        os.replace(part, final)
    except OSError as err:
        raise _disk_error(final, err, _RESUME_NOTE) from err
    return final


def _stream(remote: RemoteFile, part: Path, have: int, digest, timeout: float,
            chunk_size: int, downloads_dir: Path):
    """Append the rest of `remote` to `part`; return (bytes now in part, running sha256)."""
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urlopen(Request(remote.url, headers=headers), timeout=timeout)
    except _NETWORK_ERRORS as err:
        if isinstance(err, HTTPError):
            err.close()  # it holds the open connection
        raise _network_error(remote, downloads_dir, err) from err

    with response:
        if have and response.status != 206:  # server ignored the Range: start over
            have, digest = 0, hashlib.sha256()
        try:
            out = open(part, "ab" if have else "wb")
        except OSError as err:
            raise _disk_error(part, err, _RESUME_NOTE) from err
        with out, progress_bar(total=remote.size, initial=have, unit="B",
                               unit_scale=True, desc=remote.name) as bar:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except _NETWORK_ERRORS as err:
                    raise SrcoreError(
                        f"download of {remote.url} was cut short at {have} of {remote.size} "
                        f"bytes ({_reason(err)}). Re-run to resume it (the partial file {part} "
                        f"is kept), or {_PLACE_REMEDY.format(dir=downloads_dir)}.") from err
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as err:
                    raise _disk_error(part, err, _RESUME_NOTE) from err
                digest.update(chunk)
                have += len(chunk)
                bar.update(len(chunk))
    return have, digest


def extract_images(zip_path: Path, dest_dir: Path) -> list[str]:
    """Write the image files of `zip_path` flat into `dest_dir`; return their sorted names."""
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as err:
        raise SrcoreError(f"{zip_path} is not a valid zip file ({err}). "
                          "Delete it and download it again.") from err
    with zf:
        # Check every entry before writing anything, so a hostile zip leaves dest_dir untouched.
        root = dest_dir.resolve()
        wanted: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            _check_entry(info, zip_path, root)
            base = PurePosixPath(info.filename).name
            # Hidden names skip macOS resource forks such as __MACOSX/x/._0001.png.
            if info.is_dir() or base.startswith(".") or \
                    PurePosixPath(base).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if base in wanted or (dest_dir / base).exists():
                other = wanted[base].filename if base in wanted else dest_dir / base
                raise SrcoreError(f"{zip_path}: entry {info.filename!r} and {other} have the same "
                                  f"file name {base!r}; image names must be unique.")
            wanted[base] = info

        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _disk_error(dest_dir, err) from err
        for base, info in wanted.items():
            target = dest_dir / base
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:
                raise SrcoreError(f"entry {info.filename!r} of {zip_path} is corrupt ({err}). "
                                  "Delete the zip and download it again.") from err
            except OSError as err:
                raise _disk_error(target, err) from err
    return sorted(wanted)


def download_div2k(downloads_dir: Path, dest_dir: Path, files=DIV2K_FILES) -> list[str]:
    """Fetch every zip of `files`, then extract all their images into `dest_dir`."""
    zips = [fetch(remote, downloads_dir) for remote in files]
    names: list[str] = []
    for zip_path in zips:
        names += extract_images(zip_path, dest_dir)
    return sorted(names)


_RESUME_NOTE = " (the partial download is kept and resumed)"
_PLACE_REMEDY = ("download the zips yourself and place them in {dir}/ (they are verified by size "
                 "and SHA-256), or use data.source: dir with a folder of your own images")


def _check_entry(info: zipfile.ZipInfo, zip_path: Path, root: Path) -> None:
    name = info.filename.replace("\\", "/")
    # An anchor covers "/x", "C:x" and "C:/x"; the resolve check catches anything else escaping.
    unsafe = (bool(PureWindowsPath(name).anchor) or ".." in PurePosixPath(name).parts
              or not (root / posixpath.normpath(name)).resolve().is_relative_to(root))
    if unsafe:
        raise SrcoreError(f"{zip_path} contains the unsafe entry {info.filename!r} (absolute or "
                          "outside the target folder); refusing to extract it. "
                          "Use a trusted copy of the archive.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise SrcoreError(f"{zip_path} contains the symbolic link {info.filename!r}; refusing to "
                          "extract it. Use a trusted copy of the archive.")


def _verify_placed(remote: RemoteFile, path: Path) -> None:
    try:
        size = path.stat().st_size
        actual = sha256_of(path).hexdigest() if size == remote.size else None
    except OSError as err:
        raise SrcoreError(f"cannot read {path}: {err.strerror or err}. "
                          "Check its permissions, or delete it and re-run.") from err
    if size != remote.size:
        found = f"expected {remote.size} bytes, found {size}"
    elif actual != remote.sha256:
        found = f"expected SHA-256 {remote.sha256}, found {actual}"
    else:
        return
    raise SrcoreError(f"{path} is not the published {remote.name} ({found}). Delete it and "
                      f"re-run to download it from {remote.url}, or place the right file there.")


def _reason(err: BaseException) -> str:
    if isinstance(err, HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, URLError):
        return str(err.reason)
    if isinstance(err, TimeoutError):
        return "timed out"
    return str(err) or type(err).__name__


def _network_error(remote: RemoteFile, downloads_dir: Path, err: BaseException) -> SrcoreError:
    return SrcoreError(
        f"cannot download {remote.url}: {_reason(err)}. Check your connection and re-run, or "
        f"{_PLACE_REMEDY.format(dir=downloads_dir)}. (The DIV2K site has been reported to "
        "answer 404 for the valid archive at times.)")


def _disk_error(path: Path, err: OSError, note: str = "") -> SrcoreError:
    return SrcoreError(f"could not write {path}: {err.strerror or err}. Free disk space or check "
                       f"permissions, then re-run{note}.")
