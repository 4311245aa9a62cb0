"""train_gan: the CNN as generator against the pretrained discriminator -> models/gan.pt."""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_json
from srcore.tracking import log_generator
from stages.common import (Records, log_start, log_summary, run_training, training_data,
                           training_run, val_data)
from stages.inputs import read_split, require
from stages.declared import run_key
from stages.paths import CNN, DISC, GAN, GAN_DISC, GAN_LAST, METRICS, PRETRAINED

STAGE = "train_gan"
G_CSV = METRICS / "train_gan_g.csv"  # the generator's losses, logged in its steps
D_CSV = METRICS / "train_gan_d.csv"  # the discriminator's, measured at every step
VAL_CSV = METRICS / "train_gan_val.csv"
CURVES = METRICS / "train_gan.png"
G_COLUMNS = ["step", "g_perceptual", "g_adversarial", "g_l1", "g_total"]
D_COLUMNS = ["step", "d_loss", "d_real", "d_fake", "d_accuracy"]
VAL_COLUMNS = ["step", "psnr_y", "ssim_y", "psnr", "ssim", "lpips"]


def check_inputs() -> None:
    read_split()
    require(CNN, "train_cnn")
    require(DISC, "pretrain_disc")
    require(PRETRAINED, "pretrained")


def run(params_path: Path) -> None:
    run_training(params_path, STAGE, check_inputs, _train, "gan.batch_size or data.patch_size")


def describe(gan) -> str:
    """The schedule and the generator's loss, term by term, as they will run."""
    schedule = (f"alternate schedule ({gan.g_steps} G then {gan.d_steps} D steps per round)"
                if gan.schedule == "alternate" else "joint schedule (G and D on every batch)")
    p = gan.perceptual
    layers = ", ".join(f"{layer} x {weight:g}" for layer, weight in zip(p.layers, p.layer_weights))
    terms = [f"{gan.weights.perceptual:g} x perceptual ({p.net} {layers}, {p.activation}-activation, "
             f"{p.criterion.upper()})",
             f"{gan.weights.adversarial:g} x "
             + ("relativistic adversarial" if gan.relativistic else "adversarial")]
    if gan.loss == "triad":
        terms.append(f"{gan.weights.l1:g} x L1")
    return f"{schedule}, {gan.loss} loss: {' + '.join(terms)}"


def _train(params, values, split, dist, device, precision: str) -> None:
    from srcore.losses import PerceptualLoss
    from srcore.models.checkpoint import load_generator, save_generator
    from srcore.models.discriminator import load_discriminator, save_discriminator
    from srcore.plots import write_curves
    from srcore.pretrained import load_features, load_lpips
    from srcore.train.gan import train_gan
    from srcore.train.validate import validate

    gan = params.gan
    generator, _ = load_generator(CNN)
    disc = load_discriminator(DISC)
    features = load_features(PRETRAINED, gan.perceptual.net)
    lpips_model = load_lpips(PRETRAINED, device) if dist.main else None  # validation: rank 0
    dataset, val = training_data(params, split), val_data(params, split)
    perceptual = PerceptualLoss.from_params(features, gan.perceptual)
    key = run_key(STAGE, values)
    if dist.main:
        cnn_scores = validate(generator.to(device), val, device, precision,
                              params.eval.crop_border, lpips_model)
        print(f"train_gan: {describe(gan)}")
        print(f"train_gan: {gan.steps} steps of {gan.batch_size} crops, {device} {precision} x "
              f"{dist.world} process(es); the CNN starts at val PSNR-Y "
              f"{cnn_scores['psnr_y']:.2f} dB, LPIPS {cnn_scores['lpips']:.4f}")

    with training_run(STAGE, params, values, GAN_LAST, key, dist) as (mlflow, run_id):
        records = Records(mlflow, [(G_CSV, G_COLUMNS), (D_CSV, D_COLUMNS)], VAL_CSV,
                          VAL_COLUMNS, val[0], params.data.scale)
        if dist.main:
            log_start(mlflow, {f"cnn_val_{k}": v for k, v in cnn_scores.items()}, device,
                      precision, dist.world)

        summary = train_gan(generator, disc, perceptual, dataset, val, lpips_model, gan,
                            params.train, disc_lr=params.disc.lr, seed=params.seed,
                            crop_border=params.eval.crop_border, device=device,
                            precision=precision, last_path=GAN_LAST, key=key,
                            run_id=run_id,
                            on_start=records.start, history=records.history,
                            on_log=records.log,
                            on_validate=records.validated, dist=dist)
        if not dist.main:
            return
        save_generator(GAN, summary["ema_model"].cpu(), step=summary["steps_run"],
                       metrics=summary["last"], ema_decay=params.train.ema_decay)
        save_discriminator(GAN_DISC, disc.cpu(), step=summary["steps_run"])
        last, raw = summary["last"], summary["raw_last"]
        metrics = {"val_psnr_y": last["psnr_y"], "val_ssim_y": last["ssim_y"],
                   "val_lpips": last["lpips"], "raw_last_val_psnr_y": raw["psnr_y"],
                   "raw_last_val_lpips": raw["lpips"], "cnn_val_psnr_y": cnn_scores["psnr_y"],
                   "cnn_val_lpips": cnn_scores["lpips"], "steps_run": summary["steps_run"],
                   "wall_time_s": round(summary["wall_time_s"], 1)}
        write_json(METRICS / "train_gan.json", metrics)
        write_curves(CURVES, "train_gan", [
            ("G: perceptual loss", G_CSV, ["g_perceptual"], True),
            ("G: adversarial loss", G_CSV, ["g_adversarial"], True),
            ("D: loss", D_CSV, ["d_loss"], True),
            ("D: mean output", D_CSV, ["d_real", "d_fake"], True),
            ("val LPIPS (G's EMA)", VAL_CSV, ["lpips"], False),
            ("val PSNR-Y (dB)", VAL_CSV, ["psnr_y"], False)])
        mlflow.log_artifact(str(CURVES))
        log_summary(mlflow, metrics)
        mlflow.log_artifact(str(GAN))
        log_generator(mlflow, load_generator(GAN)[0], "srcore-gan")  # a registered model
    print(f"train_gan: val PSNR-Y {last['psnr_y']:.2f} dB, LPIPS {last['lpips']:.4f} (EMA "
          f"weights; raw {raw['psnr_y']:.2f} dB, {raw['lpips']:.4f}; the CNN: "
          f"{cnn_scores['psnr_y']:.2f} dB, {cnn_scores['lpips']:.4f}), {summary['steps_run']} "
          f"steps, {summary['wall_time_s'] / 60:.1f} min -> {GAN}")
