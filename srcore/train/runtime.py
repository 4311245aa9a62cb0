"""Device and numeric precision for training and inference.

Precisions: fp32; bf16 (autocast, CPU and CUDA); fp16 (autocast with gradient scaling, CUDA);
auto (bf16 where the hardware runs it natively, else fp32). Only the forward passes run in the
low precision: losses, metrics and optimizer state stay fp32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from srcore.errors import SrcoreError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SrcoreError("train.device=cuda but no CUDA GPU is available; use auto or cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """bf16 autocast on a CPU without bf16 instructions is emulated and many times slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def native_precisions(device: torch.device) -> list[str]:
    """The precisions this device runs in hardware (fp32 always)."""
    if device.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])


def pick_precision(name: str, device: torch.device, key: str = "train.precision") -> str:
    """'auto' is bf16 where the hardware runs it natively, else fp32. `key` names the setting
    in errors."""
    if name == "auto":
        return "bf16" if "bf16" in native_precisions(device) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise SrcoreError(f"{key}=fp16 needs a CUDA GPU (its gradient scaling is for "
                          "GPUs); on a CPU use bf16 or fp32")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SrcoreError(f"{key}=bf16: this GPU has no bf16; use fp16 or fp32")
    return name


def autocast(precision: str, device: torch.device):
    """Mixed precision for forward passes; callers compute losses in fp32 (`.float()`)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; for bf16 and fp32 this is a no-op."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def optimize(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler) -> None:
    """One optimizer step on `loss` (scaled for fp16; a step with inf gradients is skipped)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def inference_layout(x: torch.Tensor) -> torch.Tensor:
    """channels_last input: measured ~20% faster whole-image inference on a 2-core CPU
    (docs/performance.md); it did not help training there, so training stays NCHW."""
    return x.contiguous(memory_format=torch.channels_last)
