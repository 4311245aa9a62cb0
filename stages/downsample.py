"""downsample: data/raw/ -> data/hr/, longer side <= data.hr_max_side, sides divisible by scale."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from srcore.atomic import atomic_dir
from srcore.errors import SrcoreError
from srcore.tracking import stage_run
from stages.declared import stage_params
from stages.paths import HR, MANIFEST, RAW


def run(params_path: Path) -> None:
    from srcore.data.prepare import downsample_all

    params, values = stage_params(params_path, "downsample")
    data = params.data
    raw = read_manifest(RAW)
    sources = [(img["name"], RAW / img["file"]) for img in raw["images"]]
    with stage_run("downsample", params.mlflow.experiment, values) as mlflow:
        with atomic_dir(HR) as out:
            results = downsample_all(sources, out, data.hr_max_side, data.scale)
            images = [{"name": r.name, "file": f"{r.name}.png", "source_size": list(r.source_size),
                       "size": list(r.size), "conversions": r.conversions} for r in results]
            small = [r.name for r in results if min(r.size) < data.patch_size]
            # the patch-size report stays out of the manifest: changing data.patch_size then
            # re-runs this stage but leaves data/hr unchanged, so nothing downstream re-runs
            manifest = {"source": raw["source"], "images": images}
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        resized = sum(r.size != r.source_size for r in results)
        conversions = Counter(c for r in results for c in r.conversions)
        mlflow.log_metrics({"images": len(results), "resized": resized,
                            "smaller_than_patch": len(small)})
        mlflow.log_dict(manifest, "hr_manifest.json")
    print(f"downsample: {len(results)} images in {HR}/, {resized} resized or cropped "
          f"(longer side <= {data.hr_max_side}, sides divisible by {data.scale})")
    if conversions:
        print("  converted to 8-bit RGB: " + ", ".join(f"{n} {c}" for c, n in conversions.items()))
    if small:
        print(f"  smaller than data.patch_size={data.patch_size} (too small for training "
              f"crops): {', '.join(small)}")


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SrcoreError(f"{path} not found: run the earlier stages first (dvc repro)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SrcoreError(f"{path} is corrupt ({err}); re-run the stage that makes it "
                          "(dvc repro --force)") from None
