"""Write outputs so that a crash never leaves a half-written file or folder behind.

Everything is written next to its final path under a temporary name and renamed into place:
a rename within one file system is atomic, so readers see either the old or the new output.
The temporary name is `.<name>.<pid>.<random>.tmp`: a later write of the same output removes
those left by a process that no longer runs (SIGKILL, power loss); Ctrl-C and SIGTERM raise
an exception in the writer, which removes its own. They are held back for the moment a folder
is swapped for its new version, and where a stage writes several outputs that belong together
(`signals_deferred`), so an interrupt leaves all of them old or all new.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from srcore.errors import SrcoreError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    _make_parent(path)
    _remove_stale(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.close(fd)
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise write_error(path, err) from err
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it replaces `path` if the block succeeds."""
    path = Path(path)
    _make_parent(path)
    _remove_stale(path)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes folders private; outputs are ordinary folders
        if path.exists():
            # named as a temporary folder: if an interrupt or a kill cuts its removal short,
            # the next write of `path` removes the rest
            old = path.with_name(f"{_tmp_prefix(path)}old.tmp")
            try:
                with signals_deferred():  # never between the two renames: no folder at `path`
                    os.replace(path, old)
                    try:
                        os.replace(tmp, path)
                    except OSError:
                        os.replace(old, path)  # the old one stays
                        raise
            finally:  # also when a signal held back is delivered
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(path, err) from err
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def temporary_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`, removed after the block (a download's
    scratch space). Named as atomic_dir's, so one that a killed process left behind is removed
    by the next call for the same `path`."""
    path = Path(path)
    _make_parent(path)
    _remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def signals_deferred(deliver: bool = True) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the block runs (a few quick renames or writes that
    must not be cut in two), then deliver them: the handler the process had (the CLI's raises
    Interrupted) runs once the block is done; deliver=False drops them (the process is
    stopping anyway). Python runs signal handlers in the main thread only, so elsewhere there
    is nothing to hold back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if caught and deliver:
            signal.raise_signal(caught[0])


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, *pieces) -> None:
    """Write bytes (or numpy buffers, not copied), one piece after the other, atomically. A
    plain file write, not numpy's tofile, whose OSError lacks errno and strerror ("No space
    left on device")."""
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        for piece in pieces:
            file.write(piece)


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_error(path: Path, err: OSError) -> SrcoreError:
    """The error for a failed write of the output `path` (csvlog's appends use it too)."""
    # strerror only: str(err) would name the hidden temporary file, not the output
    return SrcoreError(f"could not write {path}: {err.strerror or type(err).__name__}. "
                       f"Check free disk space and that {path.parent} is writable, then re-run.")


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _remove_stale(path: Path) -> None:
    """Remove temporary files or folders of `path` left by processes that no longer run."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SrcoreError(f"cannot create folder {path.parent}: {err.strerror or err}. "
                          "Choose a writable location.") from err
