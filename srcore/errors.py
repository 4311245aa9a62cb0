"""The exceptions a user sees: the CLI prints their message and exits non-zero; and the stop
signals that raise one."""

import os
import signal
import sys


class SrcoreError(Exception):
    """A problem the user can fix. The message names the file or key and the remedy."""


def first_line(err: BaseException) -> str:
    """An error's first line, for a one-line message (its type where it says nothing)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM. Raised instead of KeyboardInterrupt, which the CLI framework
    would swallow; a training loop raises it once its resumable state is saved."""

    def __init__(self, signum: int, message: str = "", resumable: bool = False):
        super().__init__(signum, message)
        self.signum, self.message, self.resumable = signum, message, resumable


def raise_interrupted(signum, frame):
    """The signal handler that turns Ctrl-C and SIGTERM (and, while a launcher waits on its
    training processes, SIGHUP) into Interrupted."""
    raise Interrupted(signum)


def stop_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent ends (Linux; elsewhere
    nothing). A stage's parent is DVC, which ends on a SIGTERM without passing it on: the
    training would go on, unrecorded, after `dvc repro` was stopped. torchrun's parent is the
    launcher, which may be killed outright (SIGKILL, the out-of-memory killer). The kernel
    sends it each time the process passes from a parent thread that ended to another: a
    parent with threads (DVC) can bring it twice (measured: 1 run in 3 with one extra thread),
    so a repeated SIGTERM must not mean more than the first."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended just before the call
        os.kill(os.getpid(), signal.SIGTERM)
