"""The GAN phases: pretrain the discriminator on the frozen CNN, then train G and D.

Schedules: "alternate" is the report's (each round, gan.g_steps generator steps with D frozen,
then gan.d_steps discriminator steps with G frozen); "joint" steps both on every batch (ESRGAN's
way). The generator's EMA is what is validated and saved as the GAN's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from srcore.config import GanParams, TrainParams
from srcore.data.dataset import PatchDataset
from srcore.losses import (PerceptualLoss, discriminator_loss, generator_adversarial,
                           relative_logits)
from srcore.models.discriminator import Discriminator
from srcore.models.rrdb import RRDBNet
from srcore.train import distributed, loop
from srcore.train.batches import batch_stream
from srcore.train.distributed import Dist, unwrap
from srcore.train.ema import Ema
from srcore.train import runtime
from srcore.train.runtime import autocast, batch_to, grad_scaler, optimize
from srcore.train.state import resume_state, save_state
from srcore.train.validate import ValImage, validate


def phase_of(step: int, gan: GanParams) -> str:
    """Which networks learn at `step` (1-based): "G", "D" or "GD"."""
    if gan.schedule == "joint":
        return "GD"
    return "G" if (step - 1) % (gan.g_steps + gan.d_steps) < gan.g_steps else "D"


def d_stats(real_logits: torch.Tensor, fake_logits: torch.Tensor,
            relativistic: bool = False, mean=torch.mean) -> dict[str, torch.Tensor]:
    """Mean D(real), D(fake) as probabilities, and the share D classifies right (on the
    device: read on the host only when logged). A relativistic D is judged as its loss judges
    it: each logit relative to the other batch's mean (its raw logits may all drift above or
    below 0, which its loss does not see)."""
    if relativistic:
        real_logits, fake_logits = relative_logits(real_logits, fake_logits, mean)
    # a tie (logit exactly 0: a D that cannot tell, or bf16 rounding a near-constant D's
    # outputs to one value) counts as half right, a coin toss
    right = ((real_logits > 0).sum() + (fake_logits < 0).sum()
             + ((real_logits == 0).sum() + (fake_logits == 0).sum()) / 2)
    return {"d_real": torch.sigmoid(real_logits).mean(),
            "d_fake": torch.sigmoid(fake_logits).mean(),
            "d_accuracy": right.float() / (len(real_logits) + len(fake_logits))}


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
    # the batch mean of the relativistic losses: the global batch's (distributed.global_mean)
    mean: Callable[[torch.Tensor], torch.Tensor] = torch.mean


def _disc_logits(disc, gt: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D on real and fake in one pass (one forward per backward, as DDP requires; D has no
    batch statistics, so this equals two passes)."""
    logits = disc(torch.cat((gt, fake))).float()
    return logits[:len(gt)], logits[len(gt):]


def generator_step(nets: GanNets, lq: torch.Tensor, gt: torch.Tensor, gan: GanParams,
                   precision: str, device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """G learns against the frozen D: perceptual + adversarial [+ L1]. Returns its loss terms
    (on the device) and the fake batch, detached."""
    disc = unwrap(nets.disc)
    learning = next(disc.parameters()).requires_grad
    disc.requires_grad_(False)  # G's loss must leave no gradients in D
    with autocast(precision, device):
        sr = nets.generator(lq).float()
        # D judges the image as it will be saved and scored, clamped to [0, 1] (BasicSR feeds
        # D the raw output); the pixel and perceptual losses see the unclamped output
        fake = sr.clamp(0, 1)
        if gan.relativistic:
            real_logits, fake_logits = _disc_logits(disc, gt, fake)
        else:
            real_logits, fake_logits = None, disc(fake).float()
        terms = {"perceptual": nets.perceptual(sr, gt)}
    terms["adversarial"] = generator_adversarial(fake_logits, real_logits, gan.relativistic,
                                                 nets.mean)
    if gan.loss == "triad":
        terms["l1"] = F.l1_loss(sr, gt)
    loss = sum(getattr(gan.weights, term) * value for term, value in terms.items())
    optimize(loss, nets.opt_g, nets.scaler_g)
    disc.requires_grad_(learning)
    logged = {f"g_{k}": v.detach() for k, v in terms.items()}
    logged["g_total"] = loss.detach()
    return logged, fake.detach()


def disc_step(nets: GanNets, lq: torch.Tensor, gt: torch.Tensor, fake: torch.Tensor | None,
              relativistic: bool, precision: str, device, learn: bool) -> dict[str, torch.Tensor]:
    """D on real crops and G's output (made here from `lq` when `fake` is None). D learns when
    `learn`; otherwise its loss and outputs are only measured, for the logs."""
    if fake is None:
        with torch.no_grad(), autocast(precision, device):
            fake = unwrap(nets.generator)(lq).float().clamp(0, 1)
    disc = nets.disc if learn else unwrap(nets.disc)
    with torch.set_grad_enabled(learn), autocast(precision, device):
        real_logits, fake_logits = _disc_logits(disc, gt, fake)
    d_loss = discriminator_loss(real_logits, fake_logits, relativistic, nets.mean)
    if learn:
        optimize(d_loss, nets.opt_d, nets.scaler_d)
    return {"d_loss": d_loss.detach(), **d_stats(real_logits.detach(), fake_logits.detach(),
                                                relativistic, nets.mean)}


def gan_step(phase: str, nets: GanNets, lq: torch.Tensor, gt: torch.Tensor, gan: GanParams,
             precision: str, device) -> dict[str, torch.Tensor]:
    """One step of the GAN phase on a batch already on the device (batch_to): "G", "D" or
    "GD" says which networks learn."""
    logged, fake = {}, None
    if "G" in phase:
        logged, fake = generator_step(nets, lq, gt, gan, precision, device)
    return {**logged, **disc_step(nets, lq, gt, fake, gan.relativistic, precision, device,
                                  learn="D" in phase)}


def pretrain_disc(generator: RRDBNet, disc: Discriminator, data: PatchDataset, *, steps: int,
                  batch_size: int, lr: float, betas, relativistic: bool, train: TrainParams,
                  seed: int, device, precision: str, last_path: Path, key: str,
                  run_id: str | None = None,
                  on_start: Callable[[int, object], None] = lambda step, history: None,
                  history: Callable[[], object] = lambda: None,
                  on_log: Callable[[int, dict], None] = lambda step, row: None,
                  dist: Dist = Dist()) -> dict:
    """Train D on real GT crops against the frozen CNN's SR crops (hooks as train_cnn's)."""
    distributed.check_batch(batch_size, "gan.batch_size", dist)
    channels_last = runtime.use_channels_last(train.channels_last, device)
    runtime.to_training(generator, device, channels_last).eval().requires_grad_(False)
    runtime.to_training(disc, device, channels_last).train()
    optimizer = runtime.adam(disc.parameters(), lr, betas, device)
    scaler = grad_scaler(precision, device)
    state = loop.new_state(run_id)
    objects = {"discriminator": disc, "optimizer": optimizer, "scaler": scaler}
    resumed = resume_state(last_path, key, objects, state, quiet=not dist.main)
    nets = GanNets(generator, runtime.compiled(distributed.wrap(disc, dist, device),
                                               train.compile), opt_d=optimizer, scaler_d=scaler,
                   mean=partial(distributed.global_mean, dist=dist))
    batches = batch_stream(data, batch_size, seed, state["step"], train.num_workers,
                           dist, device)
    run_step = runtime.step_runner(
        lambda kind, lq, gt: disc_step(nets, lq, gt, None, relativistic, precision, device,
                                       learn=True), [optimizer], train, device, precision,
        dist.world)

    def step_fn(step: int, batch) -> dict[str, torch.Tensor]:
        return run_step("D", *(batch_to(t, device, channels_last) for t in batch))

    hooks = loop.Hooks(state, lambda: save_state(last_path, key, objects, state),
                       on_start=on_start, on_log=on_log, history=history,
                       postfix=lambda m: f"loss {m['d_loss']:.4f}, "
                                         f"accuracy {m['d_accuracy']:.2f}")
    summary = loop.run(loop.Cadence(steps, train.log_every, train.checkpoint_every), batches,
                       step_fn, hooks, desc="pretrain_disc", last_path=last_path,
                       remedy="Lower disc.lr.", device=device, dist=dist)
    distributed.barrier(dist)
    return {**summary, "resumed": resumed}


def train_gan(generator: RRDBNet, disc: Discriminator, perceptual: PerceptualLoss,
              data: PatchDataset, val: list[ValImage], lpips_model, gan: GanParams,
              train: TrainParams, *, disc_lr: float, seed: int, crop_border: int, device,
              precision: str, last_path: Path, key: str,
              run_id: str | None = None,
              on_start: Callable[[int, object], None] = lambda step, history: None,
              history: Callable[[], object] = lambda: None,
              on_log: Callable[[int, dict], None] = lambda step, row: None,
              on_validate: Callable[[int, dict, torch.nn.Module], None] = lambda *a: None,
              dist: Dist = Dist()) -> dict:
    """Train G (perceptual + adversarial [+ L1]) and D by gan.schedule; returns a summary with
    the EMA generator's last val scores ("last") and the raw generator's ("raw_last"). Hooks
    as train_cnn's.

    G's EMA is validated only if G learned since the last validation: in D's steps its scores
    cannot change."""
    distributed.check_batch(gan.batch_size, "gan.batch_size", dist)
    channels_last = runtime.use_channels_last(train.channels_last, device)
    # DDP hooks only what needs gradients
    runtime.to_training(generator, device, channels_last).train().requires_grad_(True)
    runtime.to_training(disc, device, channels_last).train().requires_grad_(True)
    runtime.to_training(perceptual, device, channels_last)
    ema = Ema(generator, train.ema_decay)
    opt_g = runtime.adam(generator.parameters(), gan.lr, gan.betas, device)
    opt_d = runtime.adam(disc.parameters(), disc_lr, gan.betas, device)
    scaler_g, scaler_d = grad_scaler(precision, device), grad_scaler(precision, device)
    state = loop.new_state(run_id, scores=None)
    objects = {"generator": generator, "ema": ema, "discriminator": disc, "opt_g": opt_g,
               "opt_d": opt_d, "scaler_g": scaler_g, "scaler_d": scaler_d}
    resumed = resume_state(last_path, key, objects, state, quiet=not dist.main)
    nets = GanNets(*(runtime.compiled(distributed.wrap(net, dist, device), train.compile)
                     for net in (generator, disc)),
                   perceptual, opt_g, opt_d, scaler_g, scaler_d,
                   partial(distributed.global_mean, dist=dist))
    batches = batch_stream(data, gan.batch_size, seed, state["step"], train.num_workers,
                           dist, device)
    current = {"phase": None}
    run_step = runtime.step_runner(
        lambda phase, lq, gt: gan_step(phase, nets, lq, gt, gan, precision, device),
        [opt_g, opt_d], train, device, precision, dist.world)

    def step_fn(step: int, batch) -> dict[str, torch.Tensor]:
        phase = phase_of(step, gan)
        if phase != current["phase"]:
            generator.requires_grad_("G" in phase)
            disc.requires_grad_("D" in phase)
            current["phase"] = phase
        return run_step(phase, *(batch_to(t, device, channels_last) for t in batch))

    def after_step(step: int) -> bool:
        if "G" in phase_of(step, gan):
            ema.update(generator)
            state["scores"] = None  # G changed: its last scores are stale
        if (step % gan.val_every == 0 or step == gan.steps) and state["scores"] is None:
            scores = validate(ema.model, val, device, precision, crop_border,
                              lpips_model) if dist.main else None
            state["scores"] = distributed.from_main(scores, dist)
            if dist.main:
                on_validate(step, state["scores"], ema.model)
                _print_validation(step, state["scores"])
        return False

    def log(step: int, means: dict) -> None:
        on_log(step, {**means, "phase": phase_of(step, gan)})

    hooks = loop.Hooks(state, lambda: save_state(last_path, key, objects, state), after_step,
                       on_start, log, lambda m: f"D {m['d_loss']:.3f}" + (
                           f", G {m['g_total']:.3f}" if "g_total" in m else ""), history)
    summary = loop.run(loop.Cadence(gan.steps, train.log_every, train.checkpoint_every), batches,
                       step_fn, hooks, desc="train_gan", last_path=last_path,
                       remedy="Lower gan.lr, disc.lr or the weight of a loss term.",
                       device=device, dist=dist)
    generator.requires_grad_(True)
    disc.requires_grad_(True)
    raw = validate(generator, val, device, precision, crop_border, lpips_model) \
        if dist.main else None
    distributed.barrier(dist)
    return {**summary, "last": state["scores"], "raw_last": raw, "ema_model": ema.model,
            "resumed": resumed}


def _print_validation(step: int, scores: dict) -> None:
    from tqdm import tqdm

    tqdm.write(f"step {step}: val PSNR-Y {scores['psnr_y']:.2f} dB, LPIPS {scores['lpips']:.4f}")
