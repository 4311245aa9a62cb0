"""pretrain_disc: the discriminator learns real HR crops vs the frozen CNN's SR -> models/disc.pt."""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_json
from srcore.tracking import stage_run
from stages.common import (file_digest, fingerprint, read_split, require, run_training,
                           training_data)
from stages.paths import CNN, DISC, DISC_LAST, METRICS


def check_inputs() -> None:
    read_split()
    require(CNN, "train_cnn")


def run(params_path: Path) -> None:
    run_training(params_path, check_inputs, _train)


def _train(params, split, dist, device) -> None:
    import torch

    from srcore.models.checkpoint import load_generator
    from srcore.models.discriminator import Discriminator
    from srcore.train.gan import pretrain_disc, save_discriminator
    from srcore.train.runtime import pick_precision

    disc_params = params.disc
    generator, _ = load_generator(CNN)
    precision = pick_precision(params.train.precision, device)
    dataset, _ = training_data(params, split)
    torch.manual_seed(params.seed)
    disc = Discriminator(disc_params.widths, disc_params.hidden)
    run_key = fingerprint(params.seed, params.data.model_dump(exclude={"source", "dir"}),
                          disc_params.model_dump(), params.gan.batch_size,
                          params.gan.relativistic, params.train.precision,
                          params.train.nproc, split["train"],
                          file_digest(CNN))
    if dist.main:
        print(f"pretrain_disc: {disc_params.pretrain_epochs} epochs of {len(dataset)} real and "
              f"{len(dataset)} SR crops, {device} {precision} x {dist.world} process(es)")
    with stage_run("pretrain_disc", params.mlflow.experiment, params.model_dump(),
                   enabled=dist.main) as mlflow:
        summary = pretrain_disc(
            generator, disc, dataset, epochs=disc_params.pretrain_epochs,
            batch_size=params.gan.batch_size, lr=disc_params.lr, betas=params.gan.betas,
            relativistic=params.gan.relativistic, seed=params.seed,
            num_workers=params.train.num_workers, device=device, precision=precision,
            last_path=DISC_LAST, fingerprint=run_key,
            on_epoch=lambda row: mlflow.log_metrics(
                {k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"]),
            dist=dist)
        if not dist.main:
            return
        save_discriminator(DISC, disc, epoch=disc_params.pretrain_epochs)
        final = summary["final"]
        metrics = {**final, "wall_time_s": round(summary["wall_time_s"], 1)}
        write_json(METRICS / "pretrain_disc.json", metrics)
        mlflow.log_artifact(str(DISC))
    print(f"pretrain_disc: accuracy {final['d_accuracy']:.3f}, D(real) {final['d_real']:.3f}, "
          f"D(fake) {final['d_fake']:.3f} after {final['epoch']} epochs, "
          f"{summary['wall_time_s'] / 60:.1f} min -> {DISC}")
