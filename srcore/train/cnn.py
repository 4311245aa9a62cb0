"""The CNN phase: train RRDBNet with an L1 or L2 pixel loss, validate on whole images.

Read top to bottom: set-up (or resume), then per epoch: train, validate, checkpoint, stop early.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from srcore.data.dataset import PatchDataset, to_tensor
from srcore.data.kernels import downscale, upscale
from srcore.metrics import image_metrics, psnr_ssim, to_uint8
from srcore.models.checkpoint import save_generator
from srcore.models.rrdb import RRDBNet
from srcore.train import distributed
from srcore.train.distributed import Dist
from srcore.train.runtime import autocast, grad_scaler, inference_layout, optimize
from srcore.train.state import check_finite, cpu_copy, resume_state, save_state

LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


@dataclass
class CnnConfig:
    loss: str = "l1"
    epochs: int = 200
    batch_size: int = 16
    lr: float = 1e-4
    lr_halve_at: int = 100
    betas: tuple[float, float] = (0.9, 0.999)
    val_every: int = 1
    patience: int = 20
    scale: int = 4
    kernel: str = "bicubic"
    crop_border: int = 4
    seed: int = 0
    num_workers: int = 0


@dataclass
class ValImage:
    lr: torch.Tensor  # (1, 3, h, w) in [0, 1], 8-bit levels
    hr: np.ndarray  # (H, W, 3) uint8


def make_val_images(images: list[np.ndarray], scale: int, kernel: str) -> list[ValImage]:
    return [ValImage(downscale(to_tensor(img)[None], scale, kernel), img) for img in images]


def _mean(scores: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def bicubic_scores(val: list[ValImage], scale: int, crop_border: int) -> dict[str, float]:
    """Mean val PSNR/SSIM of bicubic upsampling: the bar the CNN must clear."""
    scores = [psnr_ssim(v.hr, to_uint8(upscale(v.lr, scale, "bicubic")), crop_border)
              for v in val]
    return _mean(scores)


@torch.inference_mode()
def validate(model: RRDBNet, val: list[ValImage], device, precision: str, crop_border: int,
             lpips_model=None) -> dict[str, float]:
    """Mean PSNR/SSIM (RGB and Y) of the model on whole val images, and LPIPS if given."""
    was_training = model.training
    model.eval()
    scores = []
    for v in val:
        with autocast(precision, device):
            sr = to_uint8(model(inference_layout(v.lr.to(device))).float())
        scores.append(image_metrics(v.hr, sr, crop_border, lpips_model) if lpips_model
                      else psnr_ssim(v.hr, sr, crop_border))
    model.train(was_training)
    return _mean(scores)


def pixel_step(model, optimizer, scaler, loss_fn, lr_img: torch.Tensor, hr_img: torch.Tensor,
               precision: str, device, check: Callable[[float], None]) -> float:
    """One training batch of the CNN phase; `check` sees the loss before the update."""
    with autocast(precision, device):
        sr = model(lr_img.to(device))
    loss = loss_fn(sr.float(), hr_img.to(device))
    value = loss.item()
    check(value)
    optimize(loss, optimizer, scaler)
    return value


def train_cnn(model: RRDBNet, data: PatchDataset, val: list[ValImage], cfg: CnnConfig, *,
              device: torch.device, precision: str, best_path: Path, last_path: Path,
              fingerprint: str, on_epoch: Callable[[dict], None] = lambda row: None,
              dist: Dist = Dist()) -> dict:
    """Train, keeping the best model (by val PSNR-Y) at best_path and a resumable state at
    last_path (reused only when its fingerprint matches). Returns a summary.

    Under torchrun every process runs this; only the main one validates and writes files, and
    the others follow its decisions (see distributed.py)."""
    from tqdm import tqdm

    distributed.check_batch(cfg.batch_size, "cnn.batch_size", dist)
    model.to(device).train()
    loss_fn = LOSSES[cfg.loss]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [cfg.lr_halve_at], gamma=0.5)
    scaler = grad_scaler(precision, device)
    # everything a resumed run needs; the best weights live here too, because DVC deletes
    # best_path (a stage output) before re-running the stage
    state = {"epoch": 0, "best": None, "best_epoch": 0, "best_model": None, "history": [],
             "stopped_early": False}
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler,
               "scaler": scaler}
    resumed = resume_state(last_path, fingerprint, objects, state, quiet=not dist.main)
    trained = distributed.wrap(model, dist, device)
    started = time.time()
    first = cfg.epochs + 1 if state["stopped_early"] else state["epoch"] + 1
    for epoch in range(first, cfg.epochs + 1):
        loader = distributed.epoch_loader(data, cfg.batch_size, cfg.seed, epoch,
                                          cfg.num_workers, dist)

        def check(value: float) -> None:
            check_finite(value, epoch, cfg.loss, last_path,
                         "Lower cnn.lr or use train.precision=fp32.")

        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not dist.main or None)
        for lr_img, hr_img in bar:
            loss = pixel_step(trained, optimizer, scaler, loss_fn, lr_img, hr_img, precision,
                              device, check)
            total, count = total + loss * len(lr_img), count + len(lr_img)
            bar.set_postfix(loss=f"{loss:.4f}")
        total, count = distributed.sum_over_ranks([total, count], dist)
        row = {"epoch": epoch, "train_loss": total / count, "lr": optimizer.param_groups[0]["lr"]}
        scheduler.step()
        if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
            scores = validate(model, val, device, precision, cfg.crop_border) if dist.main \
                else None
            scores = distributed.from_main(scores, dist)
            row.update({f"val_{k}": v for k, v in scores.items()})
            if state["best"] is None or scores["psnr_y"] > state["best"]["psnr_y"]:
                state["best"], state["best_epoch"] = scores, epoch
                state["best_model"] = cpu_copy(model) if dist.main else None
        state["epoch"] = epoch
        state["history"].append(row)
        # patience counts from the best validation (none yet: no reason to stop)
        stop = state["best"] is not None and epoch - state["best_epoch"] >= cfg.patience
        state["stopped_early"] = stop
        if dist.main:
            save_state(last_path, fingerprint, objects, state)
            on_epoch(row)
            _print_row(row)
            if stop:
                print(f"early stop: no val PSNR-Y gain for {cfg.patience} epochs")
        if stop:
            break
    if dist.main:
        best = RRDBNet(**model.config)
        best.load_state_dict(state["best_model"])
        save_generator(best_path, best, epoch=state["best_epoch"], metrics=state["best"])
    distributed.barrier(dist)
    return {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
            "best": state["best"], "history": state["history"], "resumed": resumed,
            "stopped_early": state["stopped_early"], "wall_time_s": time.time() - started}


def _print_row(row: dict) -> None:
    text = f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, lr {row['lr']:.2e}"
    if "val_psnr_y" in row:
        text += f", val PSNR-Y {row['val_psnr_y']:.2f} dB, SSIM-Y {row['val_ssim_y']:.4f}"
    print(text, flush=True)
