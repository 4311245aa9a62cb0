"""`python -m srcore`, as every DVC stage runs it, and the installed `srcore` command (run)."""

import contextlib
import gc
import os
import signal
import sys


def _stop(signum, frame):
    """Ctrl-C or SIGTERM while srcore.cli (typer and the rest) is still being imported, before
    it puts in its own handlers: the same one line and exit code, not a KeyboardInterrupt
    traceback."""
    print("interrupted: stopped", file=sys.stderr)
    sys.exit(128 + signum)


def _stop_while_exiting(signum, frame):
    """Ctrl-C or SIGTERM once the command has ended, while Python exits (MLflow's and logging's
    atexit handlers): raised there, an exception is printed as "Exception ignored in atexit
    callback" with a traceback, and the process exits 0 as if nothing had happened. Stop at
    once with one line and 128 + N instead, the output written so far flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        print("interrupted: stopped while exiting (the command had ended)", file=sys.stderr,
              flush=True)
    os._exit(128 + signum)


def run() -> None:
    """Put in the early handler, then import and run the CLI. The console script calls this
    rather than srcore.cli.main, which would import typer first, with no handler yet."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)

    from srcore.cli import main

    try:
        main()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _stop_while_exiting)
        # The command's work is done (outputs written, MLflow run ended). Python's last garbage
        # collection at exit would walk every object torch, MLflow and their imports made: 0.5
        # to 2 s of each stage on a 2-core CPU (measured: download 3.1 -> 2.5 s, evaluate-
        # baselines 12 -> 9.6 s), to free memory the process gives back anyway.
        # Frozen objects are left out of it; atexit handlers (MLflow's, logging's) still run.
        gc.freeze()


if __name__ == "__main__":
    run()
