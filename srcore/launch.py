"""Run a training command in train.nproc processes through torchrun (`--standalone`: one
machine). Whether to launch at all (not when under torchrun already) is the caller's choice:
stages/common.run_or_launch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from srcore.errors import SrcoreError


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "srcore", *argv]


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
    process = subprocess.Popen(torchrun_command(nproc, argv), env=env)
    try:
        return process.wait()
    except BaseException:
        # Ctrl-C reached the processes too (same terminal); give them time to save and stop
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
