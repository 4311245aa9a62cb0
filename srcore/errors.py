"""The exceptions a user sees: the CLI prints their message and exits non-zero."""


class SrcoreError(Exception):
    """A problem the user can fix. The message names the file or key and the remedy."""


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
