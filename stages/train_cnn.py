"""train_cnn: RRDBNet with a pixel loss on the train split -> models/cnn.pt, metrics, MLflow run."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from srcore.atomic import write_json, write_text
from srcore.config import Params, load_params
from srcore.errors import SrcoreError
from srcore.tracking import stage_run
from stages.paths import CNN, CNN_LAST, HR, METRICS, SPLIT


def read_split(path: Path = SPLIT) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SrcoreError(f"{path} not found: run the data stages first (dvc repro split)") from None
    except json.JSONDecodeError as err:
        raise SrcoreError(f"{path} is corrupt ({err}); re-run: dvc repro --force split") from None


def fingerprint(params: Params, split: dict) -> str:
    """What a resumable state must match: everything that shapes the training run."""
    keys = {"seed": params.seed, "data": params.data.model_dump(exclude={"source", "dir"}),
            "model": params.model.model_dump(), "cnn": params.cnn.model_dump(),
            "precision": params.train.precision, "train": split["train"], "val": split["val"]}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


def run(params_path: Path) -> None:
    import torch

    from srcore.data.dataset import PatchDataset, load_images
    from srcore.models.rrdb import RRDBNet
    from srcore.train.cnn import CnnConfig, bicubic_scores, make_val_images, train_cnn
    from srcore.train.runtime import pick_device, pick_precision

    params = load_params(params_path)
    data, cnn = params.data, params.cnn
    split = read_split()
    device = pick_device(params.train.device)
    precision = pick_precision(params.train.precision, device)

    train_images = dict(zip(split["train"], load_images(HR, split["train"])))
    small = [n for n, img in train_images.items() if min(img.shape[:2]) < data.patch_size]
    if small:
        print(f"skipping training images smaller than data.patch_size={data.patch_size}: "
              f"{', '.join(small)}")
    usable = [img for n, img in train_images.items() if n not in small]
    if not usable:
        raise SrcoreError(f"no training image is as large as data.patch_size="
                          f"{data.patch_size}; lower it or use larger images")
    torch.manual_seed(params.seed)
    model = RRDBNet(params.model.rrdb, params.model.features, params.model.growth,
                    params.model.skip)
    dataset = PatchDataset(usable, data.patch_size, data.patches_per_image, data.scale,
                           data.lr_kernel, data.hflip, data.vflip, data.rot90, params.seed)
    val = make_val_images(load_images(HR, split["val"]), data.scale, data.lr_kernel)
    cfg = CnnConfig(loss=cnn.loss, epochs=cnn.epochs, batch_size=cnn.batch_size, lr=cnn.lr,
                    lr_halve_at=cnn.lr_halve_at, betas=cnn.betas, val_every=cnn.val_every,
                    patience=cnn.patience, scale=data.scale, kernel=data.lr_kernel,
                    crop_border=params.eval.crop_border, seed=params.seed,
                    num_workers=params.train.num_workers)
    bicubic = bicubic_scores(val, data.scale, params.eval.crop_border)
    print(f"train_cnn: {len(dataset)} crops/epoch from {len(usable)} images, "
          f"{len(val)} val images, {device} {precision}, {params.model.rrdb} RRDB, "
          f"bicubic val PSNR-Y {bicubic['psnr_y']:.2f} dB")

    with stage_run("train_cnn", params.mlflow.experiment, params.model_dump()) as mlflow:
        mlflow.log_params({"device": str(device), "precision_used": precision})
        mlflow.log_metrics({f"bicubic_val_{k}": v for k, v in bicubic.items()})
        grid_every = max(1, cnn.epochs // 5)

        def on_epoch(row: dict) -> None:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
            if row["epoch"] % grid_every == 0 or row["epoch"] == cnn.epochs:
                mlflow.log_image(sample_grid(model, val[0], data.scale, device),
                                 f"grids/epoch_{row['epoch']:04d}.png")

        summary = train_cnn(model, dataset, val, cfg, device=device, precision=precision,
                            best_path=CNN, last_path=CNN_LAST,
                            fingerprint=fingerprint(params, split), on_epoch=on_epoch)
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
        write_text(METRICS / "train_cnn.csv", history_csv(summary["history"]))
        mlflow.log_metrics({f"best_{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float))})
        mlflow.log_artifact(str(CNN))
    print(f"train_cnn: best val PSNR-Y {best['psnr_y']:.2f} dB at epoch {summary['best_epoch']} "
          f"({metrics['gain_over_bicubic_db']:+.2f} dB over bicubic), "
          f"{summary['epochs_run']} epochs, {summary['wall_time_s'] / 60:.1f} min -> {CNN}")


def history_csv(history: list[dict]) -> str:
    columns = ["epoch", "train_loss", "lr", "val_psnr_y", "val_ssim_y", "val_psnr", "val_ssim"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


def sample_grid(model, val_image, scale: int, device):
    """LR (nearest, enlarged) | bicubic | SR | HR, on a centre crop of the first val image."""
    import torch

    from srcore.data.kernels import upscale
    from srcore.figures import center_crop, labelled_row
    from srcore.metrics import to_uint8

    with torch.no_grad():
        model.eval()
        sr = to_uint8(model(val_image.lr.to(device)).cpu())
        model.train()
    panels = [to_uint8(upscale(val_image.lr, scale, "nearest")),
              to_uint8(upscale(val_image.lr, scale, "bicubic")), sr, val_image.hr]
    return labelled_row([center_crop(p, 128) for p in panels], ["LR", "bicubic", "SR", "HR"])
