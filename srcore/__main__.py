"""`python -m srcore`, as every DVC stage runs it."""

import signal
import sys


def _stop(signum, frame):
    """Ctrl-C or SIGTERM while srcore.cli (typer and the rest) is still being imported, before
    it puts in its own handlers: the same one line and exit code, not a KeyboardInterrupt
    traceback."""
    print("interrupted: stopped", file=sys.stderr)
    sys.exit(128 + signum)


for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, _stop)

from srcore.cli import main  # noqa: E402

main()
