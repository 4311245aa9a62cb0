"""train_cnn: RRDBNet with a pixel loss on the train split -> models/cnn.pt, metrics, MLflow run."""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_json
from srcore.tracking import log_generator
from stages.common import (Records, log_start, log_summary, run_training, training_data,
                           training_run, val_data)
from stages.inputs import read_split
from stages.declared import run_key
from stages.paths import CNN, CNN_LAST, METRICS

STAGE = "train_cnn"
TRAIN_CSV = METRICS / "train_cnn.csv"
VAL_CSV = METRICS / "train_cnn_val.csv"
CURVES = METRICS / "train_cnn.png"
TRAIN_COLUMNS = ["step", "train_loss", "lr"]
VAL_COLUMNS = ["step", "psnr_y", "ssim_y", "psnr", "ssim"]


def check_inputs() -> None:
    read_split()


def run(params_path: Path) -> None:
    run_training(params_path, STAGE, check_inputs, _train,
                 "cnn.batch_size or data.patch_size (or model.features / model.rrdb)")


def _train(params, values, split, dist, device, precision: str) -> None:
    import torch

    from srcore.models.checkpoint import load_generator
    from srcore.models.rrdb import RRDBNet
    from srcore.plots import write_curves
    from srcore.train.cnn import train_cnn
    from srcore.train.validate import bicubic_scores

    data, cnn = params.data, params.cnn
    dataset, val = training_data(params, split), val_data(params, split)
    torch.manual_seed(params.seed)
    model = RRDBNet(params.model.rrdb, params.model.features, params.model.growth,
                    params.model.skip)
    bicubic = bicubic_scores(val, data.scale, params.eval.crop_border)
    key = run_key(STAGE, values)
    if dist.main:
        print(f"train_cnn: {cnn.loss.upper()} loss, {cnn.steps} steps of {cnn.batch_size} "
              f"crops ({len(dataset)} crops "
              f"per pass over {len(dataset.images)} images), {len(val)} val images, {device} "
              f"{precision} x {dist.world} process(es), {params.model.rrdb} RRDB "
              f"(skip: {params.model.skip}), "
              f"LQ by {data.lq_kernel}, bicubic val "
              f"PSNR-Y {bicubic['psnr_y']:.2f} dB")

    with training_run(STAGE, params, values, CNN_LAST, key, dist) as (mlflow, run_id):
        records = Records(mlflow, [(TRAIN_CSV, TRAIN_COLUMNS)], VAL_CSV, VAL_COLUMNS,
                          val[0], data.scale)
        if dist.main:
            log_start(mlflow, {f"bicubic_val_{k}": v for k, v in bicubic.items()}, device,
                      precision, dist.world)

        summary = train_cnn(model, dataset, val, cnn, params.train, seed=params.seed,
                            crop_border=params.eval.crop_border, device=device,
                            precision=precision, best_path=CNN, last_path=CNN_LAST, key=key,
                            run_id=run_id,
                            on_start=records.start, history=records.history,
                            on_log=records.log,
                            on_validate=records.validated, dist=dist)
        if not dist.main:
            return
        best, raw = summary["best"], summary["raw_last"]
        metrics = {"val_psnr_y": best["psnr_y"], "val_ssim_y": best["ssim_y"],
                   "val_psnr": best["psnr"], "val_ssim": best["ssim"],
                   "bicubic_val_psnr_y": bicubic["psnr_y"],
                   "bicubic_val_ssim_y": bicubic["ssim_y"],
                   "gain_over_bicubic_db": best["psnr_y"] - bicubic["psnr_y"],
                   "raw_last_val_psnr_y": raw["psnr_y"],
                   "best_step": summary["best_step"], "steps_run": summary["steps_run"],
                   "stopped_early": summary["stopped_early"],
                   "wall_time_s": round(summary["wall_time_s"], 1)}
        write_json(METRICS / "train_cnn.json", metrics)
        write_curves(CURVES, "train_cnn", [
            (f"{cnn.loss.upper()} loss", TRAIN_CSV, ["train_loss"], True),
            ("learning rate", TRAIN_CSV, ["lr"], False),
            ("val PSNR-Y (dB)", VAL_CSV, ["psnr_y"], False)])
        mlflow.log_artifact(str(CURVES))
        log_summary(mlflow, metrics)
        mlflow.log_artifact(str(CNN))
        log_generator(mlflow, load_generator(CNN)[0], "srcore-cnn")  # a registered model
    print(f"train_cnn: best val PSNR-Y {best['psnr_y']:.2f} dB (EMA weights) at step "
          f"{summary['best_step']} ({metrics['gain_over_bicubic_db']:+.2f} dB over bicubic; raw "
          f"weights at the end {raw['psnr_y']:.2f} dB), {summary['steps_run']} steps, "
          f"{summary['wall_time_s'] / 60:.1f} min -> {CNN}")
