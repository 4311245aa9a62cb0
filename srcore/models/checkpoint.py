"""Save and load generator checkpoints: ours, and BasicSR / Real-ESRGAN RRDBNet files.

Ours is a dict {"format": "srcore-generator", "model": config, "state_dict", "step",
"metrics"}. A foreign file is a plain state dict, or one under "params_ema" / "params"; its
block count, width and growth are read from the tensor shapes, and it loads with skip "none".
Every file is read with weights_only=True: a checkpoint cannot run code.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from srcore.atomic import atomic_path
from srcore.errors import SrcoreError
from srcore.models.rrdb import RRDBNet

FORMAT = "srcore-generator"


def save_generator(path: Path, model: RRDBNet, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_atomic(path, {"format": FORMAT, "model": dict(model.config), "state_dict": state,
                       **extra})


def save_atomic(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        # through a file object: given a path, torch names the archive inside the file after
        # it, and the random temporary name would make the bytes differ from run to run
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as err:
                # torch's zip writer replaces a failed write (a full disk) by its own
                # RuntimeError ("unexpected pos"): pass on the OSError, which names the cause
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from None
                raise


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise SrcoreError(f"{path}: is a folder; give a checkpoint file (e.g. models/cnn.pt)")
    if not path.is_file():
        raise SrcoreError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad or unsafe file
        # torch's message would advise weights_only=False (which can run code) and filing an
        # issue: wrong for a corrupt file, so it is not passed on
        with open(path, "rb") as f:
            head = f.read(2)
        if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):  # zip or legacy pickle
            raise SrcoreError(f"{path}: not a PyTorch checkpoint (a file written by torch.save); "
                              "it is of another kind, corrupt or cut short: replace it") from None
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            raise SrcoreError(f"{path}: holds Python objects other than tensors, so loading it "
                              "could run code; refusing it. Use a checkpoint saved as a plain "
                              "state dict") from None
        raise SrcoreError(f"{path}: not a readable PyTorch checkpoint, corrupt or cut short "
                          f"({type(err).__name__}); replace it") from None


def load_generator(path: Path) -> tuple[RRDBNet, dict]:
    """(model in eval mode, the checkpoint dict) for our files and BasicSR/Real-ESRGAN ones."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        config, state = ckpt.get("model"), ckpt.get("state_dict")
    elif isinstance(ckpt, dict) and isinstance(ckpt.get("format"), str):  # disc.pt, *_last.pt
        raise SrcoreError(f"{path}: a {ckpt['format']} file, not a generator; use a generator "
                          "checkpoint (models/cnn.pt or models/gan.pt) or a BasicSR / "
                          "Real-ESRGAN RRDBNet x4 file")
    else:
        state = ckpt
        for key in ("params_ema", "params"):
            if isinstance(ckpt, dict) and key in ckpt:
                state = ckpt[key]
                break
        config = infer_config(state, path)
    config = _checked_size(path, config, state)
    # a diverged or damaged file would upscale to black images without any error
    bad = [k for k, v in state.items()
           if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise SrcoreError(f"{path}: weights hold NaN or infinite values ({', '.join(bad[:3])}"
                          f"{', ...' if len(bad) > 3 else ''}); the file is damaged or from a "
                          "diverged training: use another checkpoint")
    with torch.random.fork_rng(devices=[]):  # its initial weights are replaced: a caller's
        model = RRDBNet(**config)          # random numbers go on as they were
    load_weights(model, state, path)
    return model.eval(), ckpt if isinstance(ckpt, dict) else {}


def _checked_size(path: Path, config, state) -> dict:
    """The model settings, refused unless valid and the file holds the weights they need:
    a file of a few KB must not make us build millions of blocks or allocate many GB (a block
    index of 9999999, or a tensor viewed with stride 0 as 30000x3x3x3, e.g.)."""
    from pydantic import ValidationError

    from srcore.config import ModelParams

    damaged = (f"{path}: damaged or crafted file, {{}}; use another checkpoint (a srcore "
               "cnn.pt/gan.pt or a BasicSR / Real-ESRGAN RRDBNet x4 file)")
    if not isinstance(state, dict):
        raise SrcoreError(damaged.format("its weights are not a state dict"))
    try:
        config = ModelParams.model_validate(config).model_dump()
    except ValidationError as err:
        where = ".".join(map(str, err.errors()[0]["loc"])) or "model"
        raise SrcoreError(damaged.format(f"bad model settings ({where}: "
                                         f"{err.errors()[0]['msg']})")) from None
    # every tensor, and every weight of the model, is stored in full: fp16 at the least
    size = path.stat().st_size
    held = sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    with torch.device("meta"):  # shapes only: nothing allocated
        needed = 2 * sum(p.numel() for p in RRDBNet(**config).parameters())
    if max(held, needed) > size:
        raise SrcoreError(damaged.format(f"{max(held, needed):,} bytes of weights declared in "
                                         f"{size:,} bytes"))
    return config


def load_weights(module: torch.nn.Module, state: dict, path: Path) -> None:
    """module.load_state_dict(state); weights of another shape are named with their file."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise SrcoreError(f"{path}: weights do not fit a {type(module).__name__} "
                          f"{module.config}: {err}") from None


def infer_config(state, path: Path) -> dict:
    """Block count, width and growth of a BasicSR-layout RRDBNet x4 state dict."""
    if not isinstance(state, dict) or "conv_first.weight" not in state:
        raise SrcoreError(f"{path}: not an RRDBNet checkpoint (no conv_first.weight); expected "
                          "a srcore cnn.pt/gan.pt or a BasicSR / Real-ESRGAN RRDBNet x4 file")
    if state["conv_first.weight"].shape[1] != 3:
        raise SrcoreError(f"{path}: takes {state['conv_first.weight'].shape[1]} input channels; "
                          "only RGB x4 RRDBNet (no pixel-unshuffle) is supported")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    if not blocks or "body.0.rdb1.conv1.weight" not in state:
        raise SrcoreError(f"{path}: not an RRDBNet checkpoint (no body.N.rdb1 blocks)")
    return {"rrdb": max(blocks) + 1, "features": state["conv_first.weight"].shape[0],
            "growth": state["body.0.rdb1.conv1.weight"].shape[0], "skip": "none"}
