"""split: seeded train/val/test split of data/hr/ into data/split.json."""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_json
from srcore.tracking import stage_run
from stages.declared import stage_params
from stages.inputs import read_manifest
from stages.paths import HR, SPLIT


def run(params_path: Path) -> None:
    from srcore.data.prepare import split_counts, split_names

    params, values = stage_params(params_path, "split")
    wanted = {"train": params.split.train, "val": params.split.val, "test": params.split.test}
    names = [img["name"] for img in read_manifest(HR)["images"]]
    counts = split_counts(len(names), wanted, params.split.min_per_split)
    with stage_run("split", params.mlflow.experiment, values) as mlflow:
        splits = split_names(names, counts, params.seed)
        write_json(SPLIT, {"seed": params.seed, "counts": counts, **splits})
        mlflow.log_metrics({f"{k}_images": v for k, v in counts.items()})
        mlflow.log_artifact(str(SPLIT))
    note = "" if counts == wanted else f" (scaled from {wanted} to {len(names)} images)"
    print(f"split: train {counts['train']}, val {counts['val']}, test {counts['test']}{note}"
          f" -> {SPLIT}")
