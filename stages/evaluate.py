"""evaluate_baselines and evaluate: the test split scored by PSNR, SSIM and LPIPS.

Baselines have their own stage so that a model change does not recompute them.
"""

from __future__ import annotations

import json
from pathlib import Path

from srcore.atomic import signals_deferred, write_json, write_text
from srcore.errors import SrcoreError
from srcore.tracking import log_on_pipeline_run, stage_run
from srcore.csvlog import rows_csv
from stages.inputs import check_metric_sizes, read_split, require
from stages.declared import stage_params
from stages.paths import CNN, GAN, HR, METRICS, PRETRAINED

BASELINES_JSON = METRICS / "evaluate_baselines.json"
BASELINES_CSV = METRICS / "evaluate_baselines_per_image.csv"
EVALUATE_JSON = METRICS / "evaluate.json"  # the headline: the one file `dvc exp show` lists
DETAILS_JSON = METRICS / "evaluate_details.json"
EVALUATE_CSV = METRICS / "evaluate_per_image.csv"
FIGURE = METRICS / "comparison.png"
CSV_COLUMNS = ["method", "image", "psnr", "ssim", "psnr_y", "ssim_y", "lpips"]
COMPARED = [("cnn", "bicubic"), ("gan", "cnn")]  # paired differences A - B, with intervals
HEADLINE = ("psnr_y", "ssim_y", "lpips")
ENDS = ("mean", "low", "high")  # what the headline and MLflow keep of each paired difference


def headline(summary: dict, differences: dict) -> dict:
    """Each method's PSNR-Y, SSIM-Y and LPIPS, each paired difference's mean and interval, and
    how the intervals were made (bootstrap or min-max: one method, the images being the same):
    what `dvc exp show` and `dvc metrics diff` compare across experiments."""
    scores = {method: {k: s[k] for k in HEADLINE} for method, s in summary.items()}
    intervals = {pair: {metric: {end: d[end] for end in ENDS}
                        for metric, d in by_metric.items()}
                 for pair, by_metric in differences.items()}
    methods = {d["interval"] for by_metric in differences.values() for d in by_metric.values()}
    return {**scores, **intervals, "interval": " / ".join(sorted(methods))}


def _test_images(names: list[str], crop_border: int):
    from srcore.data.dataset import load_images

    images = load_images(HR, names)
    check_metric_sizes(names, images, crop_border)  # before any model runs
    return dict(zip(names, images))


def _baseline_settings(params, names: list[str]) -> dict:
    """What the baseline scores depend on: evaluate compares it with its own, so that scores
    made for other settings or images are never mixed with the models'."""
    import hashlib

    from srcore.checksum import sha256_of

    files = hashlib.sha256()
    for name in names:  # the PNG bytes: ~1 s for DIV2K's 102 test images
        files.update(sha256_of(HR / f"{name}.png").digest())
    return {"scale": params.data.scale, "lq_kernel": params.data.lq_kernel,
            "crop_border": params.eval.crop_border, "test_images": names,
            "test_images_sha256": files.hexdigest()}


def _read_baselines(settings: dict) -> tuple[dict, str]:
    """evaluate_baselines' summary and per-image rows, refused if they were made for other
    settings or test images (possible when commands are run by hand, not by dvc repro)."""
    rerun = "run `python -m srcore evaluate-baselines` (or dvc repro evaluate_baselines) first"
    try:
        summary = json.loads(BASELINES_JSON.read_text(encoding="utf-8"))
        rows = BASELINES_CSV.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SrcoreError(f"{err.filename} not found: {rerun}") from None
    except ValueError as err:  # bad JSON or bytes
        raise SrcoreError(f"{BASELINES_JSON} is unreadable ({err}): {rerun}") from None
    made_with = summary.pop("settings", None) if isinstance(summary, dict) else None
    if not isinstance(made_with, dict):
        raise SrcoreError(f"{BASELINES_JSON} does not say what it was made with: {rerun}")
    named = {"test_images": "another test split",
             "test_images_sha256": f"the test images in {HR} have changed since"}
    changed = [named.get(key, f"{key} {made_with.get(key)!r}, now {value!r}")
               for key, value in settings.items() if made_with.get(key) != value]
    if named["test_images"] in changed:  # other images, so other contents too
        changed = [c for c in changed if c != named["test_images_sha256"]]
    if changed:
        raise SrcoreError(f"{BASELINES_JSON} was made for other settings "
                          f"({'; '.join(changed)}): {rerun}")
    return summary, rows


def run_baselines(params_path: Path) -> None:
    from srcore.evaluate import BASELINES, baseline, evaluate, summarize
    from srcore.pretrained import load_lpips

    params, values = stage_params(params_path, "evaluate_baselines")
    names = read_split()["test"]
    images = _test_images(names, params.eval.crop_border)
    settings = _baseline_settings(params, names)
    lpips_model = load_lpips(PRETRAINED)
    scale, kernel = params.data.scale, params.data.lq_kernel
    with stage_run("evaluate_baselines", params.mlflow.experiment, values) as mlflow:
        rows = evaluate({k: baseline(k, scale) for k in BASELINES}, images, scale, kernel,
                        params.eval.crop_border, lpips_model, desc="evaluate_baselines")
        summary = summarize(rows)
        with signals_deferred():  # both or neither: evaluate reads them together
            write_json(BASELINES_JSON, {**summary, "settings": settings})
            write_text(BASELINES_CSV, rows_csv(rows, CSV_COLUMNS))
        for method, scores in summary.items():
            mlflow.log_metrics({f"{method}_{k}": v for k, v in scores.items()})
    _print_table(summary, len(images))
    print(f"evaluate_baselines: -> {BASELINES_JSON}, {BASELINES_CSV}")


def run_models(params_path: Path) -> None:
    import torch

    from srcore.evaluate import (BASELINES, baseline, comparison_figure, evaluate,
                                 model_upscaler, summarize)
    from srcore.io import write_png
    from srcore.models.checkpoint import load_generator
    from srcore.pretrained import load_lpips
    from srcore.train.runtime import pick_device, pick_precision
    from srcore.uncertainty import paired_differences

    params, values = stage_params(params_path, "evaluate")
    require(CNN, "train_cnn")
    require(GAN, "train_gan")
    names = read_split()["test"]
    baselines, baseline_rows = _read_baselines(_baseline_settings(params, names))
    models = {"cnn": load_generator(CNN)[0], "gan": load_generator(GAN)[0]}
    images = _test_images(names, params.eval.crop_border)
    lpips_model = load_lpips(PRETRAINED)
    device = pick_device(params.train.device)
    precision = pick_precision(params.train.precision, device)
    scale, kernel = params.data.scale, params.data.lq_kernel
    with stage_run("evaluate", params.mlflow.experiment, values) as mlflow:
        methods = {name: model_upscaler(m, device, precision) for name, m in models.items()}
        outputs: dict = {}  # the models' SR images of the figure's photos, made once
        rows = evaluate(methods, images, scale, kernel, params.eval.crop_border, lpips_model,
                        outputs=outputs)
        summary = {**baselines, **summarize(rows)}
        differences = paired_differences(_read_rows(baseline_rows) + rows, COMPARED)
        all_methods = {**{k: baseline(k, scale) for k in BASELINES}, **methods}
        with torch.no_grad():
            figure = comparison_figure(images, all_methods, scale, kernel,
                                       params.eval.crop_border, lpips_model, outputs)
        # made first, written together: an interrupt leaves all of them old or all new
        with signals_deferred():
            write_json(DETAILS_JSON, {**summary, "differences": differences})
            write_json(EVALUATE_JSON, headline(summary, differences))
            per_image = baseline_rows + rows_csv(rows, CSV_COLUMNS).split("\n", 1)[1]
            write_text(EVALUATE_CSV, per_image)
            write_png(FIGURE, figure)
        metrics = {f"{method}_{k}": v for method, scores in summary.items()
                   for k, v in scores.items()}
        metrics.update({f"{pair}_{metric}_{end}": d[end] for pair, by_metric in
                        differences.items() for metric, d in by_metric.items()
                        for end in ENDS})
        mlflow.log_metrics(metrics)
        log_on_pipeline_run(mlflow, metrics)
        mlflow.log_artifact(str(EVALUATE_JSON))
        mlflow.log_artifact(str(DETAILS_JSON))
        mlflow.log_artifact(str(EVALUATE_CSV))
        mlflow.log_artifact(str(FIGURE))
    _print_table(summary, len(images))
    _print_differences(differences)
    print(f"evaluate: -> {EVALUATE_JSON} (the headline), {DETAILS_JSON}, {EVALUATE_CSV}, "
          f"{FIGURE}")


def _read_rows(csv_text: str) -> list[dict]:
    """evaluate_baselines_per_image.csv back into evaluate()'s rows."""
    import csv
    import io

    return [{k: v if k in ("method", "image") else float(v) for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(csv_text))]


def _print_table(summary: dict, count: int) -> None:
    print(f"test split, {count} images:  PSNR  SSIM  PSNR-Y  SSIM-Y  LPIPS")
    for method, s in summary.items():
        print(f"  {method:9s} {s['psnr']:6.2f} {s['ssim']:.4f} {s['psnr_y']:6.2f} "
              f"{s['ssim_y']:.4f} {s['lpips']:.4f}")


def _print_differences(differences: dict) -> None:
    print("paired differences, mean [interval]:")
    for pair, by_metric in differences.items():
        for metric, d in by_metric.items():
            if d["interval"].startswith("bootstrap"):
                verdict = "its 95% interval excludes 0" if d["excludes_zero"] else \
                    "its 95% interval includes 0: not a clear difference"
            else:
                verdict = "every image agrees in sign" if d["excludes_zero"] else \
                    "the images disagree in sign: not a clear difference"
            print(f"  {pair.replace('_vs_', ' - ')} {metric}: {d['mean']:+.4f} "
                  f"[{d['low']:+.4f}, {d['high']:+.4f}] ({d['interval']}, {d['images']} "
                  f"images): {verdict}")
