"""pretrain_disc: the report's discriminator trained against the frozen CNN -> models/disc.pt."""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_json
from stages.common import (Records, log_start, log_summary, run_training, training_data,
                           training_run)
from stages.inputs import read_split, require
from stages.declared import run_key
from stages.paths import CNN, DISC, DISC_LAST, METRICS

STAGE = "pretrain_disc"
CSV = METRICS / "pretrain_disc.csv"
COLUMNS = ["step", "d_loss", "d_accuracy", "d_real", "d_fake"]
CURVES = METRICS / "pretrain_disc.png"


def check_inputs() -> None:
    read_split()
    require(CNN, "train_cnn")


def run(params_path: Path) -> None:
    run_training(params_path, STAGE, check_inputs, _train,
                 "gan.batch_size or data.patch_size (or disc.widths)")


def _train(params, values, split, dist, device, precision: str) -> None:
    import torch

    from srcore.models.checkpoint import load_generator
    from srcore.models.discriminator import Discriminator, save_discriminator
    from srcore.plots import write_curves
    from srcore.train.gan import pretrain_disc

    disc_params = params.disc
    generator, _ = load_generator(CNN)
    dataset = training_data(params, split)
    torch.manual_seed(params.seed)
    disc = Discriminator(disc_params.widths, disc_params.hidden)
    key = run_key(STAGE, values)
    if dist.main:
        print(f"pretrain_disc: {disc_params.pretrain_steps} steps of {params.gan.batch_size} "
              f"real and as many SR crops, "
              f"{'relativistic ' if params.gan.relativistic else ''}BCE loss, {device} "
              f"{precision} x {dist.world} process(es)")
    with training_run(STAGE, params, values, DISC_LAST, key, dist) as (mlflow, run_id):
        records = Records(mlflow, [(CSV, COLUMNS)])
        if dist.main:
            log_start(mlflow, {}, device, precision, dist.world)
        summary = pretrain_disc(
            generator, disc, dataset, steps=disc_params.pretrain_steps,
            batch_size=params.gan.batch_size, lr=disc_params.lr, betas=params.gan.betas,
            relativistic=params.gan.relativistic, train=params.train, seed=params.seed,
            device=device, precision=precision, last_path=DISC_LAST, key=key,
            run_id=run_id,
            on_start=records.start, history=records.history, on_log=records.log, dist=dist)
        if not dist.main:
            return
        save_discriminator(DISC, disc, step=summary["steps_run"])
        final = _last_row(CSV)
        metrics = {**final, "steps_run": summary["steps_run"],
                   "wall_time_s": round(summary["wall_time_s"], 1)}
        write_json(METRICS / "pretrain_disc.json", metrics)
        log_summary(mlflow, metrics)
        write_curves(CURVES, "pretrain_disc", [("loss", CSV, ["d_loss"], True),
                                               ("accuracy", CSV, ["d_accuracy"], True),
                                               ("mean output", CSV, ["d_real", "d_fake"], True)])
        mlflow.log_artifact(str(DISC))
        mlflow.log_artifact(str(CURVES))
    print(f"pretrain_disc: accuracy {final['d_accuracy']:.3f}, D(real) {final['d_real']:.3f}, "
          f"D(fake) {final['d_fake']:.3f} over the last logged steps, "
          f"{summary['steps_run']} steps, {summary['wall_time_s'] / 60:.1f} min -> {DISC}")


def _last_row(path: Path) -> dict:
    """The last logged means, read back from the stage's CSV log."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        row = list(csv.DictReader(f))[-1]
    return {k: float(v) for k, v in row.items() if k != "step"}
