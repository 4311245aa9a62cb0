"""downsample: data/raw/ -> data/hr/, longer side <= data.hr_max_side, sides divisible by scale."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from srcore.atomic import atomic_dir
from srcore.tracking import stage_run
from stages.declared import stage_params
from stages.inputs import read_manifest
from stages.paths import HR, MANIFEST, RAW


def run(params_path: Path) -> None:
    from srcore.data.prepare import downsample_all
    from srcore.metrics import LPIPS_MIN_SIDE

    params, values = stage_params(params_path, "downsample")
    data = params.data
    raw = read_manifest(RAW)
    sources = [(img["name"], RAW / img["file"]) for img in raw["images"]]
    # a user's own file (data.source: dir) is named as theirs: that is the one to replace
    shown = ({img["name"]: f"{img['origin']} (copied to {RAW / img['file']})"
              for img in raw["images"]} if raw["source"] == "dir" else {})
    # every image must give training crops (the train split) and fit the metrics (val, test:
    # SSIM's window inside eval.crop_border, which later stages check, and LPIPS's minimum)
    min_side = max(data.patch_size, LPIPS_MIN_SIDE)
    why = (f" (data.patch_size={data.patch_size} for training crops, {LPIPS_MIN_SIDE} for "
           "LPIPS); use larger images, or lower data.patch_size")
    with stage_run("downsample", params.mlflow.experiment, values) as mlflow:
        with atomic_dir(HR) as out:
            results = downsample_all(sources, out, data.hr_max_side, data.scale, min_side, why,
                                     shown, final_dir=HR)
            images = [{"name": r.name, "file": f"{r.name}.png", "source_size": list(r.source_size),
                       "size": list(r.size), "conversions": r.conversions} for r in results]
            manifest = {"source": raw["source"], "images": images}
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        resized = sum(r.size != r.source_size for r in results)
        conversions = Counter(c for r in results for c in r.conversions)
        mlflow.log_metrics({"images": len(results), "resized": resized})
        mlflow.log_dict(manifest, "hr_manifest.json")
    print(f"downsample: {len(results)} images in {HR}/, {resized} resized or cropped "
          f"(longer side <= {data.hr_max_side}, sides divisible by {data.scale})")
    if conversions:
        print("  converted to 8-bit RGB: " + ", ".join(f"{n} {c}" for c, n in conversions.items()))
