"""The `export` command: a generator checkpoint to an ONNX file, checked against torch.

The file takes an (N, 3, H, W) RGB input in [0, 1] of any batch, height and width and gives
(N, 3, 4H, 4W), not clamped: the same contract as the torch model. fp32 by default; with fp16
the weights, input and output are float16 (for GPUs; half the size). After writing, the file
is run with onnxruntime on a small random batch at odd sizes and compared with the torch
model; a file that misses is not kept.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import numpy as np
import torch

from srcore.atomic import atomic_path, signals_deferred
from srcore.errors import SrcoreError
from srcore.onnx_model import CONFIG_KEY, OnnxModel, require_onnx

OPSET = 17
CHECK_SHAPE = (2, 3, 17, 23)  # batch 2 and sides no power of two divides
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}  # max abs difference from torch fp32, on [0, 1]


def export(checkpoint: Path, outputs: list[tuple[Path, str]]) -> list[float]:
    """Write each (file, "fp32" or "fp16") of `outputs` and return each one's max abs difference
    from the torch model. All or none: each is made under a temporary name and checked, and they
    take their names together at the end (an interrupt before then leaves none of them, so the
    same command runs again without --overwrite)."""
    onnx, _ = require_onnx()
    from srcore.models.checkpoint import load_generator

    for out, _ in outputs:
        if Path(out).suffix.lower() != ".onnx":
            raise SrcoreError(f"{out}: the output name must end in .onnx")
    model, _ = load_generator(checkpoint)  # names the file if it is not an RRDBNet generator
    with torch.random.fork_rng(devices=[]):  # a caller's random numbers go on as they were
        torch.manual_seed(0)
        x = torch.rand(*CHECK_SHAPE)
        return _write_all(onnx, model, checkpoint, outputs, x)


def _write_all(onnx, model, checkpoint: Path, outputs, x) -> list[float]:
    with torch.no_grad():
        expected = model(x)
    diffs = []
    with contextlib.ExitStack() as written:
        for out, precision in outputs:
            tmp = written.enter_context(atomic_path(out))
            diffs.append(_write(onnx, model, checkpoint, out, tmp, precision, x, expected))
        with signals_deferred():
            written.close()  # the renames
    return diffs


def _write(onnx, model, checkpoint: Path, out: Path, tmp: Path, precision: str, x,
           expected) -> float:
    dtype = torch.float16 if precision == "fp16" else torch.float32
    # dynamo=False, the TorchScript exporter: it exports this plain conv net exactly, with
    # dynamic axes by name, in ~1 s, on every torch we allow (>= 2.2). The torch.export one
    # (the default since torch 2.9) gave the same numbers on torch 2.14 but needs onnxscript,
    # took 10 s for a 1-block net, printed progress, and reached opset 17 only by a
    # fallback down-conversion from 18. The TorchScript exporter warns that it is
    # deprecated; if a future torch drops it, switch to dynamo=True with dynamic_shapes.
    typed = copy.deepcopy(model).to(dtype)  # the next output's model stays as loaded
    torch.onnx.export(typed, torch.rand(1, 3, 16, 16, dtype=dtype), str(tmp),
                      dynamo=False, opset_version=OPSET, input_names=["input"],
                      output_names=["output"],
                      dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                    "output": {0: "batch", 2: "height_x4", 3: "width_x4"}})
    proto = onnx.load(str(tmp))
    meta = {CONFIG_KEY: json.dumps(model.config), "source": Path(checkpoint).name,
            "scale": "4", "range": "RGB in [0, 1], output not clamped"}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp))
    diff = float((OnnxModel(tmp)(x) - expected).abs().max())
    if not np.isfinite(diff) or diff > TOLERANCE[precision]:
        raise SrcoreError(f"{out}: onnxruntime differs from torch by {diff:.2e} (over "
                          f"{TOLERANCE[precision]:g}) on a {CHECK_SHAPE} input; not written")
    return diff
