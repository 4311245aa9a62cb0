"""Device and numeric precision for training and inference."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from srcore.errors import SrcoreError

        raise SrcoreError("train.device=cuda but no CUDA GPU is available; use auto or cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """bf16 autocast on a CPU without bf16 instructions is emulated and many times slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(name: str, device: torch.device) -> str:
    """'auto' is bf16 where the hardware runs it natively, else fp32."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """Mixed precision for the forward pass; losses are computed in fp32 by the caller."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
