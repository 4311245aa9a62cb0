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
from srcore.train.runtime import autocast
from srcore.train.state import check_finite, epoch_loader, resume_state, save_state

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


def pretrain_disc(generator: RRDBNet, disc: Discriminator, data: PatchDataset, *, epochs: int,
                  batch_size: int, lr: float, betas, relativistic: bool, seed: int,
                  num_workers: int, device, precision: str, last_path: Path, fingerprint: str,
                  on_epoch: Callable[[dict], None] = lambda row: None) -> dict:
    """Train D on real HR crops vs the frozen CNN's SR crops."""
    from tqdm import tqdm

    generator.to(device).eval().requires_grad_(False)
    disc.to(device).train()
    optimizer = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
    state = {"epoch": 0, "history": []}
    objects = {"discriminator": disc, "optimizer": optimizer}
    resume_state(last_path, fingerprint, objects, state)
    started = time.time()
    for epoch in range(state["epoch"] + 1, epochs + 1):
        sums, count = defaultdict(float), 0
        bar = tqdm(epoch_loader(data, batch_size, seed, epoch, num_workers),
                   desc=f"disc epoch {epoch}/{epochs}", unit="batch", leave=False)
        for lr_img, hr in bar:
            lr_img, hr = lr_img.to(device), hr.to(device)
            with torch.no_grad(), autocast(precision, device):
                fake = generator(lr_img).float().clamp(0, 1)
            with autocast(precision, device):
                real_logits, fake_logits = disc(hr).float(), disc(fake).float()
            loss = discriminator_loss(real_logits, fake_logits, relativistic)
            check_finite(loss.item(), epoch, "discriminator", last_path, "Lower disc.lr.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in {"d_loss": loss.item(), **d_stats(real_logits, fake_logits)}.items():
                sums[key] += value
            count += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
        row = {"epoch": epoch, **{k: v / count for k, v in sums.items()}}
        state["epoch"] = epoch
        state["history"].append(row)
        save_state(last_path, fingerprint, objects, state)
        on_epoch(row)
        print(f"disc epoch {epoch}: loss {row['d_loss']:.4f}, accuracy {row['d_accuracy']:.3f}, "
              f"D(real) {row['d_real']:.3f}, D(fake) {row['d_fake']:.3f}", flush=True)
    return {"history": state["history"], "final": state["history"][-1],
            "wall_time_s": time.time() - started}


def train_gan(generator: RRDBNet, disc: Discriminator, perceptual: PerceptualLoss,
              data: PatchDataset, val: list[ValImage], lpips_model, cfg: GanConfig, *, device,
              precision: str, last_path: Path, fingerprint: str,
              on_epoch: Callable[[dict], None] = lambda row: None) -> dict:
    """Train G (perceptual + adversarial [+ L1]) and D by cfg.schedule; returns a summary."""
    from tqdm import tqdm

    generator.to(device).train()
    disc.to(device).train()
    perceptual.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas)
    state = {"epoch": 0, "history": []}
    objects = {"generator": generator, "discriminator": disc, "opt_g": opt_g, "opt_d": opt_d}
    resume_state(last_path, fingerprint, objects, state)
    plan = schedule(cfg)
    started = time.time()
    for epoch in range(state["epoch"] + 1, len(plan) + 1):
        phase = plan[epoch - 1]
        generator.requires_grad_("G" in phase)
        disc.requires_grad_("D" in phase)
        sums, count = defaultdict(float), 0
        bar = tqdm(epoch_loader(data, cfg.batch_size, cfg.seed, epoch, cfg.num_workers),
                   desc=f"gan epoch {epoch}/{len(plan)} ({phase})", unit="batch", leave=False)
        for lr_img, hr in bar:
            lr_img, hr = lr_img.to(device), hr.to(device)
            with torch.set_grad_enabled("G" in phase), autocast(precision, device):
                sr = generator(lr_img).float()
            fake = sr.clamp(0, 1)
            logged = {}
            if "G" in phase:
                disc.requires_grad_(False)  # G's loss must not leave gradients in D
                with autocast(precision, device):
                    fake_logits = disc(fake).float()
                    real_logits = disc(hr).float().detach() if cfg.relativistic else None
                terms = {"perceptual": perceptual(sr, hr),
                         "adversarial": generator_adversarial(fake_logits, real_logits,
                                                              cfg.relativistic)}
                if cfg.loss == "triad":
                    terms["l1"] = F.l1_loss(sr, hr)
                for term, value in terms.items():
                    check_finite(value.item(), epoch, f"generator {term}", last_path,
                                 "Lower gan.lr or the weight of that term.")
                loss = sum(cfg.weights[term] * value for term, value in terms.items())
                opt_g.zero_grad(set_to_none=True)
                loss.backward()
                opt_g.step()
                disc.requires_grad_("D" in phase)
                logged.update({f"g_{k}": v.item() for k, v in terms.items()})
                logged["g_total"] = loss.item()
            with torch.set_grad_enabled("D" in phase), autocast(precision, device):
                real_logits = disc(hr).float()
                fake_logits = disc(fake.detach()).float()
            d_loss = discriminator_loss(real_logits, fake_logits, cfg.relativistic)
            check_finite(d_loss.item(), epoch, "discriminator", last_path, "Lower disc.lr.")
            if "D" in phase:
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            logged.update({"d_loss": d_loss.item(), **d_stats(real_logits, fake_logits)})
            for key, value in logged.items():
                sums[key] += value
            count += 1
            bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{logged.get('g_total', 0):.3f}")
        row = {"epoch": epoch, "phase": phase, **{k: v / count for k, v in sums.items()}}
        if epoch % cfg.val_every == 0 or epoch == len(plan):
            scores = validate(generator, val, device, precision, cfg.crop_border,
                              lpips_model)
            row.update({f"val_{k}": v for k, v in scores.items()})
        state["epoch"] = epoch
        state["history"].append(row)
        save_state(last_path, fingerprint, objects, state)
        on_epoch(row)
        _print_row(row)
    generator.requires_grad_(True)
    disc.requires_grad_(True)
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
