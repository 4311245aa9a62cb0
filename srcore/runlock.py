"""One run of a stage at a time: a second run fails at once and names the first. And a
lock that waits, for set-ups that must not run twice at once.

Hand-written because it is a dozen lines over the standard library (filelock, the usual
package, cannot say who holds a lock). fcntl.flock locks belong to the open file, so the
kernel drops them when their process dies: a lock left by a killed run never blocks the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from srcore.atomic import write_error
from srcore.errors import SrcoreError


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file `path` (it records our process id) while `what` runs."""
    try:
        fd = _open(path)
    except OSError as err:  # the stage's first write
        raise write_error(path, err) from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise SrcoreError(f"{what} is already running in this project (process {holder}, "
                              f"lock {path}): wait for it to finish, or stop it (a stopped run "
                              "resumes), then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def one_at_a_time(path: Path) -> Iterator[None]:
    """Hold the lock file `path`, waiting while another process holds it. Where the file cannot
    be made: OSError, for the caller to say what to do."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open(path: Path) -> int:
    """The lock file, made with its folder where need be (an OSError where it cannot be)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
