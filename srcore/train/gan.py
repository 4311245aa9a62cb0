"""The GAN phases: pretrain the discriminator on the frozen CNN, then train G and D.

Schedules: "alternate" is the report's (per round, the generator trains epochs_per_round epochs
with D frozen, then D as many with G frozen); "joint" steps both every batch (ESRGAN's way).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from srcore.data.dataset import PatchDataset
from srcore.losses import PerceptualLoss, discriminator_loss, generator_adversarial
from srcore.models.checkpoint import save_atomic
from srcore.models.discriminator import Discriminator
from srcore.models.rrdb import RRDBNet
from srcore.train.cnn import ValImage, validate
from srcore.train import distributed
from srcore.train.distributed import Dist, unwrap
from srcore.train.runtime import autocast, grad_scaler, optimize
from srcore.train.state import check_finite, resume_state, save_state

DISC_FORMAT = "srcore-discriminator"


@dataclass
class GanConfig:
    loss: str = "dual"  # dual: perceptual + adversarial; triad: + L1
    schedule: str = "alternate"
    rounds: int = 2
    epochs_per_round: int = 50
    batch_size: int = 16
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    relativistic: bool = False
    weights: dict = field(default_factory=lambda: {"perceptual": 1.0, "adversarial": 5e-3,
                                                   "l1": 1e-2})
    val_every: int = 5
    crop_border: int = 4
    seed: int = 0
    num_workers: int = 0


def schedule(cfg: GanConfig) -> list[str]:
    """Which networks learn in each epoch: "G", "D" or "GD"."""
    if cfg.schedule == "joint":
        return ["GD"] * (cfg.rounds * cfg.epochs_per_round)
    return (["G"] * cfg.epochs_per_round + ["D"] * cfg.epochs_per_round) * cfg.rounds


def save_discriminator(path: Path, disc: Discriminator, **extra) -> None:
    save_atomic(path, {"format": DISC_FORMAT, "model": disc.config,
                       "state_dict": disc.state_dict(), **extra})


def load_discriminator(ckpt: dict) -> Discriminator:
    disc = Discriminator(**ckpt["model"])
    disc.load_state_dict(ckpt["state_dict"])
    return disc


def d_stats(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, float]:
    """Mean D(real), D(fake) as probabilities, and the share D classifies right."""
    right = (real_logits > 0).sum() + (fake_logits < 0).sum()
    return {"d_real": torch.sigmoid(real_logits).mean().item(),
            "d_fake": torch.sigmoid(fake_logits).mean().item(),
            "d_accuracy": right.item() / (len(real_logits) + len(fake_logits))}


@dataclass
class GanNets:
    """The networks of a GAN batch with their optimizers and gradient scalers. generator and
    disc may be DDP-wrapped: the wrapper is used only by the network that learns in a pass, so
    DDP synchronises G's and D's gradients separately, each in its own step."""
    generator: torch.nn.Module
    disc: torch.nn.Module
    perceptual: PerceptualLoss | None = None
    opt_g: torch.optim.Optimizer | None = None
    opt_d: torch.optim.Optimizer | None = None
    scaler_g: torch.amp.GradScaler | None = None
    scaler_d: torch.amp.GradScaler | None = None


def _disc_logits(disc, hr: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D on real and fake in one pass (one forward per backward, as DDP requires; D has no
    batch statistics, so this equals two passes)."""
    logits = disc(torch.cat((hr, fake))).float()
    return logits[:len(hr)], logits[len(hr):]


def gan_batch(phase: str, nets: GanNets, lr_img: torch.Tensor, hr: torch.Tensor,
              cfg: GanConfig, precision: str, device,
              check: Callable[[str, float, str], None]) -> dict[str, float]:
    """One batch: phase "G", "D" or "GD" says which networks learn. Returns the logged values;
    `check(term, value, remedy)` sees every loss before its update."""
    lr_img, hr = lr_img.to(device), hr.to(device)
    logged = {}
    if "G" in phase:
        disc = unwrap(nets.disc).requires_grad_(False)  # G's loss must leave no grads in D
        with autocast(precision, device):
            sr = nets.generator(lr_img).float()
            fake = sr.clamp(0, 1)
            if cfg.relativistic:
                real_logits, fake_logits = _disc_logits(disc, hr, fake)
            else:
                real_logits, fake_logits = None, disc(fake).float()
            terms = {"perceptual": nets.perceptual(sr, hr)}
        terms["adversarial"] = generator_adversarial(fake_logits, real_logits, cfg.relativistic)
        if cfg.loss == "triad":
            terms["l1"] = F.l1_loss(sr, hr)
        values = {term: value.item() for term, value in terms.items()}
        for term, value in values.items():
            check(f"generator {term}", value, "Lower gan.lr or the weight of that term.")
        loss = sum(cfg.weights[term] * value for term, value in terms.items())
        optimize(loss, nets.opt_g, nets.scaler_g)
        disc.requires_grad_("D" in phase)
        logged.update({f"g_{k}": v for k, v in values.items()})
        logged["g_total"] = loss.item()
        fake = fake.detach()
    else:
        with torch.no_grad(), autocast(precision, device):
            fake = unwrap(nets.generator)(lr_img).float().clamp(0, 1)
    disc = nets.disc if "D" in phase else unwrap(nets.disc)
    with torch.set_grad_enabled("D" in phase), autocast(precision, device):
        real_logits, fake_logits = _disc_logits(disc, hr, fake)
    d_loss = discriminator_loss(real_logits, fake_logits, cfg.relativistic)
    logged["d_loss"] = d_loss.item()
    check("discriminator", logged["d_loss"], "Lower disc.lr.")
    if "D" in phase:
        optimize(d_loss, nets.opt_d, nets.scaler_d)
    return {**logged, **d_stats(real_logits, fake_logits)}


def _epoch_means(sums: dict[str, float], count: int, dist: Dist) -> dict[str, float]:
    keys = sorted(sums)
    totals = distributed.sum_over_ranks([sums[k] for k in keys] + [count], dist)
    return {k: v / totals[-1] for k, v in zip(keys, totals)}


def pretrain_disc(generator: RRDBNet, disc: Discriminator, data: PatchDataset, *, epochs: int,
                  batch_size: int, lr: float, betas, relativistic: bool, seed: int,
                  num_workers: int, device, precision: str, last_path: Path, fingerprint: str,
                  on_epoch: Callable[[dict], None] = lambda row: None,
                  dist: Dist = Dist()) -> dict:
    """Train D on real HR crops vs the frozen CNN's SR crops."""
    from tqdm import tqdm

    distributed.check_batch(batch_size, "gan.batch_size", dist)
    generator.to(device).eval().requires_grad_(False)
    disc.to(device).train()
    optimizer = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
    scaler = grad_scaler(precision, device)
    state = {"epoch": 0, "history": []}
    objects = {"discriminator": disc, "optimizer": optimizer, "scaler": scaler}
    resume_state(last_path, fingerprint, objects, state, quiet=not dist.main)
    nets = GanNets(generator, distributed.wrap(disc, dist, device), opt_d=optimizer,
                   scaler_d=scaler)
    cfg = GanConfig(relativistic=relativistic)
    started = time.time()
    for epoch in range(state["epoch"] + 1, epochs + 1):
        def check(term: str, value: float, remedy: str) -> None:
            check_finite(value, epoch, term, last_path, remedy)

        sums, count = defaultdict(float), 0
        bar = tqdm(distributed.epoch_loader(data, batch_size, seed, epoch, num_workers, dist),
                   desc=f"disc epoch {epoch}/{epochs}", unit="batch", leave=False,
                   disable=not dist.main or None)
        for lr_img, hr in bar:
            logged = gan_batch("D", nets, lr_img, hr, cfg, precision, device, check)
            for key, value in logged.items():
                sums[key] += value
            count += 1
            bar.set_postfix(loss=f"{logged['d_loss']:.4f}")
        row = {"epoch": epoch, **_epoch_means(sums, count, dist)}
        state["epoch"] = epoch
        state["history"].append(row)
        if dist.main:
            save_state(last_path, fingerprint, objects, state)
            on_epoch(row)
            print(f"disc epoch {epoch}: loss {row['d_loss']:.4f}, accuracy "
                  f"{row['d_accuracy']:.3f}, D(real) {row['d_real']:.3f}, "
                  f"D(fake) {row['d_fake']:.3f}", flush=True)
    distributed.barrier(dist)
    return {"history": state["history"], "final": state["history"][-1],
            "wall_time_s": time.time() - started}


def train_gan(generator: RRDBNet, disc: Discriminator, perceptual: PerceptualLoss,
              data: PatchDataset, val: list[ValImage], lpips_model, cfg: GanConfig, *, device,
              precision: str, last_path: Path, fingerprint: str,
              on_epoch: Callable[[dict], None] = lambda row: None,
              dist: Dist = Dist()) -> dict:
    """Train G (perceptual + adversarial [+ L1]) and D by cfg.schedule; returns a summary.

    G is validated only after epochs in which it learned: in D's epochs its scores cannot
    change, so the last ones are carried over."""
    from tqdm import tqdm

    distributed.check_batch(cfg.batch_size, "gan.batch_size", dist)
    generator.to(device).train().requires_grad_(True)  # DDP hooks only what needs gradients
    disc.to(device).train().requires_grad_(True)
    perceptual.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas)
    scaler_g, scaler_d = grad_scaler(precision, device), grad_scaler(precision, device)
    state = {"epoch": 0, "history": [], "scores": None}
    objects = {"generator": generator, "discriminator": disc, "opt_g": opt_g, "opt_d": opt_d,
               "scaler_g": scaler_g, "scaler_d": scaler_d}
    resume_state(last_path, fingerprint, objects, state, quiet=not dist.main)
    nets = GanNets(distributed.wrap(generator, dist, device), distributed.wrap(disc, dist, device),
                   perceptual, opt_g, opt_d, scaler_g, scaler_d)
    plan = schedule(cfg)
    started = time.time()
    for epoch in range(state["epoch"] + 1, len(plan) + 1):
        phase = plan[epoch - 1]
        generator.requires_grad_("G" in phase)
        disc.requires_grad_("D" in phase)

        def check(term: str, value: float, remedy: str) -> None:
            check_finite(value, epoch, term, last_path, remedy)

        sums, count = defaultdict(float), 0
        bar = tqdm(distributed.epoch_loader(data, cfg.batch_size, cfg.seed, epoch,
                                            cfg.num_workers, dist),
                   desc=f"gan epoch {epoch}/{len(plan)} ({phase})", unit="batch", leave=False,
                   disable=not dist.main or None)
        for lr_img, hr in bar:
            logged = gan_batch(phase, nets, lr_img, hr, cfg, precision, device, check)
            for key, value in logged.items():
                sums[key] += value
            count += 1
            bar.set_postfix(d=f"{logged['d_loss']:.3f}", g=f"{logged.get('g_total', 0):.3f}")
        row = {"epoch": epoch, "phase": phase, **_epoch_means(sums, count, dist)}
        if "G" in phase:
            state["scores"] = None  # G changed: its last scores are stale
        if epoch % cfg.val_every == 0 or epoch == len(plan):
            if state["scores"] is None:
                scores = validate(generator, val, device, precision, cfg.crop_border,
                                  lpips_model) if dist.main else None
                state["scores"] = distributed.from_main(scores, dist)
            row.update({f"val_{k}": v for k, v in state["scores"].items()})
        state["epoch"] = epoch
        state["history"].append(row)
        if dist.main:
            save_state(last_path, fingerprint, objects, state)
            on_epoch(row)
            _print_row(row)
    generator.requires_grad_(True)
    disc.requires_grad_(True)
    distributed.barrier(dist)
    return {"history": state["history"], "epochs_run": state["epoch"],
            "wall_time_s": time.time() - started}


def _print_row(row: dict) -> None:
    text = f"gan epoch {row['epoch']} ({row['phase']}): D loss {row['d_loss']:.4f}"
    if "g_total" in row:
        text += f", G loss {row['g_total']:.4f} (perceptual {row['g_perceptual']:.4f})"
    text += f", D(real) {row['d_real']:.3f}, D(fake) {row['d_fake']:.3f}"
    if "val_psnr_y" in row:
        text += f", val PSNR-Y {row['val_psnr_y']:.2f} dB, LPIPS {row['val_lpips']:.4f}"
    print(text, flush=True)
