"""The one training loop: CNN training, discriminator pretraining and the GAN phases all run here,
each with its own step function.

A run is `steps` optimizer steps over one endless batch stream (batches.py). Around each step,
at cadences counted in steps:
- every step: the phase's `after_step` (EMA, lr schedule, validation, early stopping);
- every `log_every`: the mean of each loss term since the last log is read on the host (the only
  place a loss leaves the device), checked for NaN/inf and handed to `on_log` (CSV rows, MLflow);
- every `checkpoint_every`, at the last step, and on SIGINT/SIGTERM: the resumable state.
The running sums of the log window are part of that state, so a resumed run logs exactly what an
uninterrupted one would; so is the history its logs hold up to that step (the phase's
`history()`, handed back to its `on_start`), so that they hold the resumed run's own rows
whatever the files held when it resumed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from srcore.errors import Interrupted
from srcore.io import progress_bar
from srcore.train import distributed
from srcore.train.distributed import Dist
from srcore.train.state import check_finite

StepFn = Callable[[int, tuple], dict[str, torch.Tensor]]


@dataclass
class Cadence:
    steps: int
    log_every: int
    checkpoint_every: int


@dataclass
class Hooks:
    """What the phase does around its steps. `state` is the phase's resumable bookkeeping: the
    loop keeps "step", "window", "stopped_early" and "history" in it; `save()` writes it with
    the phase's networks. on_start(step, history), on the main process, before the first step
    (or at once, for a state that already finished): the step the run goes on from and what
    `history()` returned when its state was saved (None for a fresh run, or where history()
    gives None); history(), on the main process at each save: what the logs hold so far
    (small: it is saved whole each time)."""
    state: dict
    save: Callable[[], None]
    after_step: Callable[[int], bool] = lambda step: False  # True: stop (early stopping)
    on_start: Callable[[int, object], None] = lambda step, history: None
    on_log: Callable[[int, dict[str, float]], None] = lambda step, means: None
    postfix: Callable[[dict[str, float]], str] = lambda means: ""
    history: Callable[[], object] = lambda: None


def new_state(run_id: str | None, **phase_state) -> dict:
    """run_id: the MLflow run the stage logs to, kept so a resumed run continues it;
    seconds: the training time up to the saved step, over all the runs that got it there;
    history: the logs up to the saved step (Hooks.history)."""
    return {"step": 0, "window": {}, "stopped_early": False, "mlflow_run_id": run_id,
            "seconds": 0.0, "history": None, **phase_state}


def run(cadence: Cadence, batches: Iterator, step_fn: StepFn, hooks: Hooks, *, desc: str,
        last_path: Path, remedy: str, device: torch.device, dist: Dist = Dist()) -> dict:
    """Steps state["step"] + 1 .. cadence.steps (fewer if after_step stops the run); nothing
    for a state that already finished. Returns {"steps_run", "stopped_early", "steps_per_s",
    "wall_time_s"}: the rate measured after the first step, the time of the whole training
    (a resumed one's earlier runs up to its checkpoint too)."""
    state = hooks.state
    if dist.main:  # a finished state too: the stage then writes its outputs from the logs
        hooks.on_start(state["step"], state["history"])
    if state["stopped_early"] or state["step"] >= cadence.steps:
        return {"steps_run": state["step"], "stopped_early": state["stopped_early"],
                "steps_per_s": 0.0, "wall_time_s": state["seconds"]}
    window = {k: (v[0].to(device), v[1]) for k, v in state["window"].items()}
    saved_step = state["step"]
    first = state["step"] + 1
    # a terminal gets a live bar; a log file (dvc repro, CI, dvc queue logs) the same bar
    # redrawn about every 30 s: a long run shows that it moves, without a line per step
    bar = progress_bar(total=cadence.steps, initial=state["step"], desc=desc, unit="step",
                       disable=not dist.main, dynamic_ncols=True,
                       miniters=1)  # 1: by the clock alone
    stop_early, started, timed_from = False, time.perf_counter(), None
    earlier = state["seconds"]  # of the runs before this one, up to the state's step

    def flush(step: int, log: bool) -> dict[str, float]:
        """Read the window's means on the host; check them; log them if asked to. Returns the
        window's totals summed over the processes."""
        if not window:
            return {}
        keys = sorted(window)
        totals = torch.stack([window[k][0] for k in keys])
        totals = dict(zip(keys, distributed.sum_over_ranks(totals, dist).tolist()))
        means = {k: totals[k] / (window[k][1] * dist.world) for k in keys}
        low = step - max(window[k][1] for k in keys) + 1
        steps = f"step {step}" if low == step else f"steps {low}-{step}"
        check_finite(means, steps, last_path, saved_step, remedy)
        if log:
            window.clear()
            if dist.main:
                hooks.on_log(step, means)
                bar.set_postfix_str(hooks.postfix(means), refresh=False)
        return totals

    def checkpoint(step: int) -> None:
        nonlocal saved_step
        totals = flush(step, log=False)  # never save weights that a NaN has already reached
        state["step"], state["stopped_early"] = step, stop_early
        state["seconds"] = earlier + time.perf_counter() - started
        # the main process saves, and every process resumes with, the mean over processes of
        # each running sum: their sum is then the same again (one process: its own sums)
        state["window"] = {k: (torch.tensor(totals[k] / dist.world, dtype=torch.float32), n)
                           for k, (_, n) in window.items()}
        if dist.main:
            state["history"] = hooks.history()
            hooks.save()
        saved_step = step

    with _stop_requests(quiet=not dist.main) as requested:
        try:
            for step in range(first, cadence.steps + 1):
                for term, value in step_fn(step, next(batches)).items():
                    total, count = window.get(term, (0, 0))
                    window[term] = (total + value.detach().float(), count + 1)
                stop_early = hooks.after_step(step)
                last = step == cadence.steps or stop_early
                if step % cadence.log_every == 0 or last:
                    flush(step, log=True)
                check_now = dist.world == 1 or step % cadence.log_every == 0 or last
                signalled = check_now and distributed.any_rank(requested.is_set(), dist, device)
                if step % cadence.checkpoint_every == 0 or last or signalled:
                    checkpoint(step)
                bar.update()
                if step == first:
                    timed_from = time.perf_counter()
                if signalled:
                    # the others wait for the main process's save: one that exited first
                    # would make torchrun signal the main process again, mid-save
                    distributed.barrier(dist)
                    raise Interrupted(requested.signum, f"state saved at step {step} in "
                                      f"{last_path}", resumable=True)
                if stop_early:
                    break
        finally:
            bar.close()
    done = state["step"] - first + 1
    rate = (done - 1) / (time.perf_counter() - timed_from) if done > 1 and timed_from else 0.0
    return {"steps_run": state["step"], "stopped_early": stop_early, "steps_per_s": rate,
            "wall_time_s": earlier + time.perf_counter() - started}


class _Request(threading.Event):
    signum = signal.SIGINT


@contextlib.contextmanager
def _stop_requests(quiet: bool):
    """SIGINT and SIGTERM ask the loop to stop after the current step (it saves, then raises
    Interrupted); Ctrl-C again stops at once. A SIGTERM never does: one `kill` of DVC can bring
    two, as the kernel sends the parent-death signal each time the stage is handed from a DVC
    thread that ended to the next (srcore.errors.stop_with_parent); a scheduler's SIGTERM to
    every process reaches torchrun too, which passes on a SIGINT: the same stop request, not a
    second one. Outside the main thread: no handlers. quiet: no message (the other training
    processes, which stop with the main one)."""
    requested = _Request()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested.is_set():
            if signum == requested.signum == signal.SIGINT:
                raise Interrupted(signum, "stopped before the state was saved; the last "
                                  "checkpoint is kept")
            return
        requested.signum = signum
        requested.set()
        if not quiet:
            at_once = ("Ctrl-C again stops at once" if signum == signal.SIGINT else
                       "SIGKILL stops at once, keeping the last checkpoint")
            print(f"\n{signal.Signals(signum).name}: stopping after this step to save the "
                  f"state ({at_once})", flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
