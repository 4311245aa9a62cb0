"""train_gan: the CNN as generator against the pretrained discriminator -> models/gan.pt."""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_json, write_text
from srcore.tracking import stage_run
from stages.common import (file_digest, fingerprint, history_csv, read_split, require,
                           run_training, sample_grid, training_data)
from stages.paths import CNN, DISC, GAN, GAN_DISC, GAN_LAST, METRICS, PRETRAINED

CSV_COLUMNS = ["epoch", "phase", "g_perceptual", "g_adversarial", "g_l1", "g_total", "d_loss",
               "d_real", "d_fake", "d_accuracy", "val_psnr_y", "val_ssim_y", "val_lpips"]


def check_inputs() -> None:
    read_split()
    require(CNN, "train_cnn")
    require(DISC, "pretrain_disc")
    require(PRETRAINED, "pretrained")


def run(params_path: Path) -> None:
    run_training(params_path, check_inputs, _train)


def _train(params, split, dist, device) -> None:
    from srcore.losses import PerceptualLoss
    from srcore.models.checkpoint import load_checkpoint, load_generator, save_generator
    from srcore.pretrained import load_features, load_lpips
    from srcore.train.cnn import validate
    from srcore.train.gan import (GanConfig, load_discriminator, save_discriminator, schedule,
                                  train_gan)
    from srcore.train.runtime import pick_precision

    gan = params.gan
    generator, _ = load_generator(CNN)
    disc = load_discriminator(load_checkpoint(DISC))
    features = load_features(PRETRAINED, gan.perceptual.net)
    lpips_model = load_lpips(PRETRAINED, device) if dist.main else None  # validation: rank 0
    precision = pick_precision(params.train.precision, device)
    dataset, val = training_data(params, split)
    perceptual = PerceptualLoss(features, gan.perceptual.layer, gan.perceptual.activation)
    cfg = GanConfig(loss=gan.loss, schedule=gan.schedule, rounds=gan.rounds,
                    epochs_per_round=gan.epochs_per_round, batch_size=gan.batch_size,
                    lr=gan.lr, disc_lr=params.disc.lr, betas=gan.betas,
                    relativistic=gan.relativistic, weights=gan.weights.model_dump(),
                    val_every=gan.val_every, crop_border=params.eval.crop_border,
                    seed=params.seed, num_workers=params.train.num_workers)
    run_key = fingerprint(params.seed, params.data.model_dump(exclude={"source", "dir"}),
                          gan.model_dump(), params.disc.lr, params.train.precision,
                          params.train.nproc, split["train"], split["val"], file_digest(CNN),
                          file_digest(DISC))
    if dist.main:
        cnn_scores = validate(generator.to(device), val, device, precision,
                              params.eval.crop_border, lpips_model)
        print(f"train_gan: {gan.schedule} schedule, {gan.loss} loss, {len(dataset)} "
              f"crops/epoch, {device} {precision} x {dist.world} process(es); the CNN starts at "
              f"val PSNR-Y {cnn_scores['psnr_y']:.2f} dB, LPIPS {cnn_scores['lpips']:.4f}")

    with stage_run("train_gan", params.mlflow.experiment, params.model_dump(),
                   enabled=dist.main) as mlflow:
        if dist.main:
            mlflow.log_metrics({f"cnn_val_{k}": v for k, v in cnn_scores.items()})
        grid_every = max(1, len(schedule(cfg)) // 5)

        def on_epoch(row: dict) -> None:
            mlflow.log_metrics({k: v for k, v in row.items() if k not in ("epoch", "phase")},
                               step=row["epoch"])
            if row["epoch"] % grid_every == 0:
                mlflow.log_image(sample_grid(generator, val[0], params.data.scale, device),
                                 f"grids/epoch_{row['epoch']:04d}.png")

        summary = train_gan(generator, disc, perceptual, dataset, val, lpips_model, cfg,
                            device=device, precision=precision, last_path=GAN_LAST,
                            fingerprint=run_key, on_epoch=on_epoch, dist=dist)
        if not dist.main:
            return
        save_generator(GAN, generator.cpu(), epoch=summary["epochs_run"])
        save_discriminator(GAN_DISC, disc.cpu(), epoch=summary["epochs_run"])
        final = summary["history"][-1]
        metrics = {"val_psnr_y": final["val_psnr_y"], "val_ssim_y": final["val_ssim_y"],
                   "val_lpips": final["val_lpips"], "cnn_val_psnr_y": cnn_scores["psnr_y"],
                   "cnn_val_lpips": cnn_scores["lpips"], "d_real": final["d_real"],
                   "d_fake": final["d_fake"], "epochs_run": summary["epochs_run"],
                   "wall_time_s": round(summary["wall_time_s"], 1)}
        write_json(METRICS / "train_gan.json", metrics)
        write_text(METRICS / "train_gan.csv", history_csv(summary["history"], CSV_COLUMNS))
        mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()})
        mlflow.log_artifact(str(GAN))
    print(f"train_gan: val PSNR-Y {final['val_psnr_y']:.2f} dB, LPIPS {final['val_lpips']:.4f} "
          f"(CNN: {cnn_scores['psnr_y']:.2f} dB, {cnn_scores['lpips']:.4f}), "
          f"{summary['epochs_run']} epochs, {summary['wall_time_s'] / 60:.1f} min -> {GAN}")
