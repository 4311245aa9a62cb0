"""The CNN phase: RRDBNet with an L1 or L2 pixel loss, its EMA validated on whole images.

The best EMA weights by val PSNR-Y are kept (in the resumable state, and at the end in
best_path). Early stopping needs `patience` steps without a gain after the warm-up
(`early_stop_warmup`): the network starts as exactly bicubic and may sit there for its first
steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from srcore.config import CnnParams, TrainParams
from srcore.data.dataset import PatchDataset
from srcore.models.checkpoint import save_generator
from srcore.models.rrdb import RRDBNet
from srcore.train import distributed, loop
from srcore.train.batches import batch_stream
from srcore.train.distributed import Dist
from srcore.train.ema import Ema
from srcore.train import runtime
from srcore.train.runtime import autocast, batch_to, grad_scaler, optimize
from srcore.train.state import cpu_copy, resume_state, save_state
from srcore.train.validate import ValImage, validate

LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


def pixel_step(model, optimizer, scaler, loss_fn, lq: torch.Tensor, gt: torch.Tensor,
               precision: str, device) -> torch.Tensor:
    """One optimizer step of the CNN phase on a batch already on the device (batch_to);
    returns the loss, left on the device."""
    with autocast(precision, device):
        sr = model(lq)
    loss = loss_fn(sr.float(), gt)
    optimize(loss, optimizer, scaler)
    return loss.detach()


def train_cnn(model: RRDBNet, data: PatchDataset, val: list[ValImage], cnn: CnnParams,
              train: TrainParams, *, seed: int, crop_border: int, device: torch.device,
              precision: str, best_path: Path, last_path: Path, key: str,
              run_id: str | None = None,
              on_start: Callable[[int, object], None] = lambda step, history: None,
              history: Callable[[], object] = lambda: None,
              on_log: Callable[[int, dict], None] = lambda step, row: None,
              on_validate: Callable[[int, dict, torch.nn.Module], None] = lambda *a: None,
              dist: Dist = Dist()) -> dict:
    """Train, keeping the best EMA weights (by val PSNR-Y) at best_path and a resumable state
    at last_path (reused only when its key matches). Returns a summary. The hooks: on_log and
    on_validate as training goes; history() at each save of the state, which keeps what it
    returns (the logs so far) and hands it to on_start(step, history) when the run resumes
    (loop.Hooks).

    Under torchrun every process runs this; only the main one validates and writes files, and
    the others follow its decisions (see distributed.py)."""
    distributed.check_batch(cnn.batch_size, "cnn.batch_size", dist)
    channels_last = runtime.use_channels_last(train.channels_last, device)
    runtime.to_training(model, device, channels_last).train()
    ema = Ema(model, train.ema_decay)
    loss_fn = LOSSES[cnn.loss]
    optimizer = runtime.adam(model.parameters(), cnn.lr, cnn.betas, device)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cnn.lr_halve_at, gamma=0.5)
    scaler = grad_scaler(precision, device)
    # the best weights live in the state too: DVC deletes best_path (a stage output) before
    # re-running the stage
    state = loop.new_state(run_id, best=None, best_step=0, best_model=None)
    objects = {"model": model, "ema": ema, "optimizer": optimizer, "scheduler": scheduler,
               "scaler": scaler}
    resumed = resume_state(last_path, key, objects, state, quiet=not dist.main)
    trained = runtime.compiled(distributed.wrap(model, dist, device), train.compile)
    batches = batch_stream(data, cnn.batch_size, seed, state["step"], train.num_workers,
                           dist, device)

    def one_step(kind: str, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"train_loss": pixel_step(trained, optimizer, scaler, loss_fn, lq, gt, precision,
                                         device)}

    run_step = runtime.step_runner(one_step, [optimizer], train, device, precision, dist.world)

    def step_fn(step: int, batch) -> dict[str, torch.Tensor]:
        return run_step("cnn", *(batch_to(t, device, channels_last) for t in batch))

    used = {"lr": cnn.lr}  # the learning rate of the last step (logged with its losses)

    def after_step(step: int) -> bool:
        ema.update(model)
        used["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if step % cnn.val_every and step != cnn.steps:
            return False
        scores = validate(ema.model, val, device, precision, crop_border) if dist.main else None
        scores = distributed.from_main(scores, dist)
        if state["best"] is None or scores["psnr_y"] > state["best"]["psnr_y"]:
            state["best"], state["best_step"] = scores, step
            state["best_model"] = cpu_copy(ema.model) if dist.main else None
        if dist.main:
            on_validate(step, scores, ema.model)
            _print_validation(step, scores)
        # patience counts from the best validation or the end of the warm-up, whichever is
        # later: steps spent at bicubic during the warm-up do not count against the network
        since = step - max(state["best_step"], cnn.early_stop_warmup)
        stop = step >= cnn.early_stop_warmup and since >= cnn.patience and step < cnn.steps
        if stop and dist.main:
            tqdm.write(f"early stop at step {step}: no val PSNR-Y gain for {cnn.patience} steps "
                       f"(best at step {state['best_step']})")
        return stop

    def log(step: int, means: dict) -> None:
        on_log(step, {**means, "lr": used["lr"]})

    hooks = loop.Hooks(state, lambda: save_state(last_path, key, objects, state), after_step,
                       on_start, log, lambda means: f"loss {means['train_loss']:.4f}", history)
    cadence = loop.Cadence(cnn.steps, train.log_every, train.checkpoint_every)
    summary = loop.run(cadence, batches, step_fn, hooks, desc="train_cnn", last_path=last_path,
                       remedy="Lower cnn.lr or use train.precision=fp32.", device=device,
                       dist=dist)
    raw = None
    if dist.main:
        raw = validate(model, val, device, precision, crop_border)
        best = RRDBNet(**model.config)
        best.load_state_dict(state["best_model"])
        save_generator(best_path, best, step=state["best_step"], metrics=state["best"],
                       ema_decay=train.ema_decay)
    distributed.barrier(dist)
    return {**summary, "best_step": state["best_step"], "best": state["best"],
            "raw_last": raw, "resumed": resumed}


def _print_validation(step: int, scores: dict) -> None:
    tqdm.write(f"step {step}: val PSNR-Y {scores['psnr_y']:.2f} dB, SSIM-Y {scores['ssim_y']:.4f}")
