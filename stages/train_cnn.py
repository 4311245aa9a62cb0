"""train_cnn: RRDBNet with a pixel loss on the train split -> models/cnn.pt, metrics, MLflow run."""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_json, write_text
from srcore.tracking import stage_run
from stages.common import (fingerprint, history_csv, read_split, run_training, sample_grid,
                           training_data)
from stages.paths import CNN, CNN_LAST, METRICS

CSV_COLUMNS = ["epoch", "train_loss", "lr", "val_psnr_y", "val_ssim_y", "val_psnr", "val_ssim"]


def check_inputs() -> None:
    read_split()


def run(params_path: Path) -> None:
    run_training(params_path, check_inputs, _train)


def _train(params, split, dist, device) -> None:
    import torch

    from srcore.models.rrdb import RRDBNet
    from srcore.train.cnn import CnnConfig, bicubic_scores, train_cnn
    from srcore.train.runtime import pick_precision

    data, cnn = params.data, params.cnn
    precision = pick_precision(params.train.precision, device)
    dataset, val = training_data(params, split)
    torch.manual_seed(params.seed)
    model = RRDBNet(params.model.rrdb, params.model.features, params.model.growth,
                    params.model.skip)
    cfg = CnnConfig(loss=cnn.loss, epochs=cnn.epochs, batch_size=cnn.batch_size, lr=cnn.lr,
                    lr_halve_at=cnn.lr_halve_at, betas=cnn.betas, val_every=cnn.val_every,
                    patience=cnn.patience, scale=data.scale, kernel=data.lr_kernel,
                    crop_border=params.eval.crop_border, seed=params.seed,
                    num_workers=params.train.num_workers)
    bicubic = bicubic_scores(val, data.scale, params.eval.crop_border)
    if dist.main:
        print(f"train_cnn: {len(dataset)} crops/epoch from {len(dataset.images)} images, "
              f"{len(val)} val images, {device} {precision} x {dist.world} process(es), "
              f"{params.model.rrdb} RRDB, bicubic val PSNR-Y {bicubic['psnr_y']:.2f} dB")
    run_key = fingerprint(params.seed, params.data.model_dump(exclude={"source", "dir"}),
                          params.model.model_dump(), cnn.model_dump(), params.train.precision,
                          params.train.nproc, split["train"], split["val"])

    with stage_run("train_cnn", params.mlflow.experiment, params.model_dump(),
                   enabled=dist.main) as mlflow:
        if dist.main:
            mlflow.log_params({"device": str(device), "precision_used": precision,
                               "processes": dist.world})
            mlflow.log_metrics({f"bicubic_val_{k}": v for k, v in bicubic.items()})
        grid_every = max(1, cnn.epochs // 5)

        def on_epoch(row: dict) -> None:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
            if row["epoch"] % grid_every == 0:
                mlflow.log_image(sample_grid(model, val[0], data.scale, device),
                                 f"grids/epoch_{row['epoch']:04d}.png")

        summary = train_cnn(model, dataset, val, cfg, device=device, precision=precision,
                            best_path=CNN, last_path=CNN_LAST, fingerprint=run_key,
                            on_epoch=on_epoch, dist=dist)
        if not dist.main:
            return
        best = summary["best"]
        metrics = {"val_psnr_y": best["psnr_y"], "val_ssim_y": best["ssim_y"],
                   "val_psnr": best["psnr"], "val_ssim": best["ssim"],
                   "bicubic_val_psnr_y": bicubic["psnr_y"],
                   "bicubic_val_ssim_y": bicubic["ssim_y"],
                   "gain_over_bicubic_db": best["psnr_y"] - bicubic["psnr_y"],
                   "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
                   "stopped_early": summary["stopped_early"],
                   "wall_time_s": round(summary["wall_time_s"], 1)}
        write_json(METRICS / "train_cnn.json", metrics)
        write_text(METRICS / "train_cnn.csv", history_csv(summary["history"], CSV_COLUMNS))
        mlflow.log_metrics({f"best_{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float))})
        mlflow.log_artifact(str(CNN))
    print(f"train_cnn: best val PSNR-Y {best['psnr_y']:.2f} dB at epoch {summary['best_epoch']} "
          f"({metrics['gain_over_bicubic_db']:+.2f} dB over bicubic), "
          f"{summary['epochs_run']} epochs, {summary['wall_time_s'] / 60:.1f} min -> {CNN}")
