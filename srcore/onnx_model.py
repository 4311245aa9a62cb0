"""Run an .onnx generator with onnxruntime, shaped like the torch model for srcore.infer.

`upscale_array` calls `model.to(device).eval()`, reads `model.scale` and `model.config` and
calls `model(x)` on an (N, 3, H, W) float tensor; `OnnxModel` answers those, so ONNX files go
through the same tiling and image-mode handling as checkpoints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from srcore.errors import SrcoreError
from srcore.sizes import SCALE

# the onnx extra's packages (pyproject.toml) by name: `pip install -e ".[onnx]"` works only in
# the project's folder, not where an installed srcore runs
INSTALL = 'pip install "onnx>=1.15" "onnxruntime>=1.17"'
CONFIG_KEY = "srcore_config"  # metadata of our exports: the RRDBNet config (for the tile pad)


def require_onnx():
    """(onnx, onnxruntime), or a SrcoreError that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise SrcoreError(f"ONNX export and .onnx models need the onnx extra ({err.name} is not "
                          f"installed): {INSTALL}") from None
    return onnx, onnxruntime


class OnnxModel:
    """An onnxruntime session with the torch generator's interface (see the module doc)."""

    def __init__(self, path: Path, device: torch.device | str = "cpu"):
        _, ort = require_onnx()
        path = Path(path)
        if not path.is_file():
            raise SrcoreError(f"{path}: model not found")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                print("note: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu);"
                      " running the .onnx model on the CPU", file=sys.stderr)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no graph-optimizer warnings per image
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own types for a bad file
            raise SrcoreError(f"{path}: not a usable ONNX model (corrupt, cut short or another "
                              f"kind of file: {str(err).strip()[:200]}); export it again with "
                              "`python -m srcore export`") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1 or len(inputs[0].shape) != 4 \
                or inputs[0].shape[1] not in (3, "3"):
            raise SrcoreError(f"{path}: expects inputs {[(i.name, i.shape) for i in inputs]}; "
                              "upscale takes one (N, 3, H, W) RGB input, as `srcore export` "
                              "writes")
        self.path, self.input = path, inputs[0].name
        self.dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = _config(meta[CONFIG_KEY], path) if CONFIG_KEY in meta else {}
        probe = self(torch.zeros(1, 3, 8, 8))  # fails here, before any image, if it cannot run
        if tuple(probe.shape) != (1, 3, 32, 32):
            raise SrcoreError(f"{path}: turns an 8x8 RGB input into {tuple(probe.shape)}, not a "
                              "4x RGB image (1, 3, 32, 32); upscale takes 4x RGB models only")
        self.scale = SCALE

    def to(self, device) -> "OnnxModel":
        return self

    def eval(self) -> "OnnxModel":
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self.dtype)
        try:
            out = self.session.run(None, {self.input: array})[0]
        except Exception as err:  # noqa: BLE001 - onnxruntime's own error types
            raise SrcoreError(f"{self.path}: onnxruntime failed on a {tuple(x.shape)} input: "
                              f"{str(err).strip()[:300]}") from None
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def _config(text: str, path: Path) -> dict:
    """The generator settings `srcore export` writes into the file's metadata; they set only
    the receptive radius and the memory estimate, so a damaged or crafted value (not JSON, a
    width of 10^12) is named and ignored, as for an .onnx file from elsewhere."""
    from pydantic import ValidationError

    from srcore.config import ModelParams

    try:
        return ModelParams.model_validate(json.loads(text)).model_dump()
    except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
        print(f"note: {path}: its {CONFIG_KEY} metadata is not valid ({text[:80]!r}); ignored: "
              "the tile padding and memory use are not checked against the model's layout",
              file=sys.stderr)
        return {}
