"""Run a training command in train.nproc processes through torchrun (`--standalone`: one
machine). Whether to launch at all (not when under torchrun already) is the caller's choice:
stages/common.run_or_launch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from srcore.errors import Interrupted, SrcoreError, raise_interrupted, stop_with_parent


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """torchrun, through this module's `_torchrun` (below)."""
    return [sys.executable, "-m", "srcore.launch", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "srcore", *argv]


def _torchrun() -> None:
    """torchrun's own command line, ended without its traceback: by a stop signal (it passes
    the signal on to the training processes, which save their state and say where), or by a
    failed process (whose own error and torchrun's line naming it are above), with that
    process's exit code (128 + N for a signal N). Its warnings of the stop signal it got and
    of each it sends on ("Received 2 death signal", "Sending process N closing signal
    SIGINT") are left out: the processes' own lines say it."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    for name in ("multiprocessing.api", "agent.server.api"):
        logging.getLogger(f"torch.distributed.elastic.{name}").setLevel(logging.ERROR)
    try:
        main()
    except SignalException as stop:
        sys.exit(128 + stop.sigval)
    except ChildFailedError as failed:
        code = failed.get_first_failure()[1].exitcode
        sys.exit(code if code > 0 else 128 - code)


def check_devices(nproc: int, device_name: str) -> None:
    """Before launching: on CUDA each process needs its own GPU."""
    import torch

    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if cuda and nproc > torch.cuda.device_count():
        raise SrcoreError(f"train.nproc={nproc} but this machine has "
                          f"{torch.cuda.device_count()} GPU(s): one process per GPU, so set "
                          "train.nproc to at most that")


def run_under_torchrun(nproc: int, argv: list[str]) -> int:
    """Start the processes and wait; returns torchrun's exit code. CPU threads are shared out
    between the processes unless OMP_NUM_THREADS is set."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    print(f"launching {nproc} training processes: torchrun --standalone "
          f"--nproc-per-node={nproc} -m srcore {' '.join(argv)}", file=sys.stderr, flush=True)
    # in a session of its own, torchrun gets one stop signal, from here: a second one (the
    # terminal's Ctrl-C reaching both) would end it mid-shutdown, before its workers had saved.
    # Out of the terminal's session it would not see the terminal close: that stops it too.
    process = subprocess.Popen(torchrun_command(nproc, argv), env=env, start_new_session=True)
    hang_up = signal.signal(signal.SIGHUP, raise_interrupted)
    term = signal.getsignal(signal.SIGTERM)
    try:
        return process.wait()
    except BaseException as err:
        # torchrun passes it on to the training processes: give them time to save and stop.
        # A SIGTERM meanwhile is the same stop, not one to leave them over: one `kill` of DVC
        # can bring two (srcore.train.loop._stop_requests). Ctrl-C again still leaves at once.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        if isinstance(err, Interrupted):
            raise Interrupted(err.signum, "the training processes stopped",
                              resumable=True) from None
        raise
    finally:
        signal.signal(signal.SIGHUP, hang_up)
        signal.signal(signal.SIGTERM, term)


if __name__ == "__main__":
    stop_with_parent()  # the launcher, if it is killed outright
    _torchrun()
