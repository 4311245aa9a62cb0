"""Device and numeric precision for training and inference.

Precisions: fp32; bf16 (autocast, CPU and CUDA); fp16 (autocast with gradient scaling, CUDA);
auto (CUDA: bf16 for training steps replayed from CUDA graphs, else fp32 on TF32 tensor cores;
CPU: bf16 where it runs natively, else fp32). Only the
forward passes run in the low precision (the perceptual loss's VGG features too): losses,
metrics and optimizer state stay fp32.

How a training step runs on the device (docs/performance.md has the measurements behind each
choice): on CUDA, channels_last weights and batches, cuDNN's autotuner for the fixed crop
sizes, TF32 matrix products, fused Adam, pinned host batches copied without blocking, and
loader workers, and the whole step replayed from a CUDA graph (cuda_graphs.py); on a CPU none
of these (channels_last and compile were measured slower there, and the in-process loader feeds
a CPU step many times over). `train.compile` adds torch.compile.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from srcore.errors import SrcoreError, first_line


def out_of_memory(err: BaseException) -> bool:
    """A failed allocation: Python's, CUDA's, or torch's CPU allocator's (a RuntimeError)."""
    return isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or \
        "can't allocate memory" in str(err)


def pick_device(name: str, setting: str = "train.device") -> torch.device:
    """auto, cpu or cuda as a device; `setting` is what the user set, named if it cannot be."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        shown = f"{setting} cuda" if setting.startswith("--") else f"{setting}=cuda"
        raise SrcoreError(f"{shown} but no CUDA GPU is available; use auto or cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """bf16 autocast on a CPU without bf16 instructions is emulated and many times slower.
    SRCORE_CPU_BF16=0 (or 1) overrides what the CPU says, so that the tests run on one machine
    as they do on a CPU without (with) native bf16: what precision auto means depends on it."""
    forced = os.environ.get("SRCORE_CPU_BF16")
    if forced is not None:
        if forced not in ("0", "1"):
            raise SrcoreError(f"SRCORE_CPU_BF16 is {forced!r}: set it to 0 (treat this CPU as "
                              "without native bf16) or 1 (with it), or unset it")
        return forced == "1"
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
    """'auto' is fp32 on CUDA, where convs and matrix products run on TF32 tensor cores
    (measured on an H100, 15 RRDB at 128 px, eager: 40 ms per training step against 66 ms with
    bf16 autocast, whose casts cost the host more than the halved bytes save the GPU; training
    replayed from CUDA graphs is the exception: training_precision); on a CPU bf16 where it
    has bf16 instructions, else fp32. `key` names the setting in errors."""
    if name == "auto":
        if device.type == "cuda":
            return "fp32"  # TF32 tensor cores: faster than bf16 autocast here (see above)
        return "bf16" if "bf16" in native_precisions(device) else "fp32"
    if name == "fp16" and device.type != "cuda":
        # training's fp16 needs gradient scaling, upscale's does not: the reasons differ
        why = ("its gradient scaling is for GPUs" if key.startswith("train.")
               else "CPUs run fp16 convolutions slowly, if at all")
        raise SrcoreError(f"{key}=fp16 needs a CUDA GPU ({why}); on a CPU use bf16 or fp32")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SrcoreError(f"{key}=bf16: this GPU has no bf16; use fp16 or fp32")
    return name


def training_precision(train, device: torch.device, processes: int = 1) -> str:
    """train.precision for training: pick_precision's, except that auto is bf16 on a CUDA GPU
    that has it where the step is replayed from CUDA graphs (train.cuda_graphs): without the
    host's cost of autocast's casts, bf16 is the faster (an H200, 15 RRDB at 128 px: 21.0 ms
    against 28.3 ms in fp32; 2 RRDB at 64 px: 2.6 against 2.9 ms) at the same val PSNR-Y
    (docs/performance.md)."""
    if (train.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
            and use_cuda_graphs(train.cuda_graphs, device, "bf16", processes)):
        return "bf16"
    return pick_precision(train.precision, device)


def configure(device: torch.device) -> None:
    """Process-wide settings for fast CUDA work: cuDNN autotuning (the crop sizes are fixed, so
    each conv shape is tuned once) and TF32 for fp32 matrix products (convs use it already)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True  # torch's default, stated: auto relies on it
        torch.backends.cuda.matmul.allow_tf32 = True


def use_channels_last(setting: str | bool, device: torch.device) -> bool:
    """train.channels_last: auto is on for CUDA, where cuDNN's tensor-core kernels want NHWC."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def use_cuda_graphs(setting: str | bool, device: torch.device, precision: str,
                    processes: int = 1) -> bool:
    """train.cuda_graphs: auto is on for one CUDA training process in fp32 or bf16. fp16's
    gradient scaling waits on the GPU from the host (which a graph cannot hold), and DDP's
    gradient exchange is left eager; `true` where it cannot run is refused by check_cuda_graphs."""
    if setting == "auto":
        return device.type == "cuda" and precision != "fp16" and processes == 1
    return bool(setting)


def check_cuda_graphs(setting: str | bool, device: torch.device, precision: str,
                      processes: int = 1) -> None:
    """One message naming train.cuda_graphs for a `true` this run cannot honour."""
    if setting is not True:
        return
    why = ("needs a CUDA GPU" if device.type != "cuda" else
           "cannot hold fp16's gradient scaling (it reads the GPU from the host)"
           if precision == "fp16" else
           "is for one training process (train.nproc 1)" if processes > 1 else None)
    if why:
        raise SrcoreError(f"train.cuda_graphs=true {why}; use auto or false")


def step_runner(step, optimizers: list, train, device: torch.device, precision: str,
                processes: int = 1):
    """`step(kind, lq, gt)` as training calls it: replayed from CUDA graphs where
    train.cuda_graphs says so (cuda_graphs.py), else the function itself."""
    if not use_cuda_graphs(train.cuda_graphs, device, precision, processes):
        return step
    from srcore.train.cuda_graphs import GraphedSteps

    return GraphedSteps(step, optimizers)


def loader_workers(setting: str | int, device: torch.device, processes: int = 1) -> int:
    """train.num_workers: auto is 0 on a CPU (the step, not the loader, is the bottleneck
    there), and on CUDA LOADER_WORKERS_CUDA per training process, capped so that the training
    processes and their workers do not outnumber the CPUs."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 0
    return max(0, min(LOADER_WORKERS_CUDA, usable_cpus() // processes - 1))


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, on Linux)."""
    import os

    if hasattr(os, "sched_getaffinity"):  # Linux only
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# measured on an H200 machine (16 CPUs): 2 RRDB at 64 px in bf16, replayed from CUDA graphs,
# takes 6,300 crops/s; the loader gives 3,500 in the training process, 12,500 with 8 workers
# and 28,800 with 15 (4.6x), each handing over 8 steps' batches at once (batches.WORKER_CHUNK)
LOADER_WORKERS_CUDA = 15


def to_training(module: torch.nn.Module, device: torch.device, channels_last: bool):
    """The network on the device, in the training layout (in place; returns it)."""
    return module.to(device, memory_format=torch.channels_last if channels_last
                     else torch.preserve_format)


def batch_to(tensor: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch on the device without blocking the host (pinned memory makes the copy async)."""
    tensor = tensor.to(device, non_blocking=True)
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last else tensor


def adam(parameters, lr: float, betas, device: torch.device) -> torch.optim.Adam:
    """Fused Adam on CUDA (one kernel for all parameters); torch's default elsewhere, so CPU
    runs give the numbers they always gave."""
    return torch.optim.Adam(parameters, lr=lr, betas=tuple(betas),
                            fused=True if device.type == "cuda" else None)


def compiled(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """torch.compile(module) when enabled; the original keeps the weights (saved, EMA'd,
    validated uncompiled: its state_dict has no compile prefixes)."""
    return torch.compile(module) if enabled else module


def check_compile(enabled: bool, device: torch.device, key: str = "train.compile") -> None:
    """torch.compile needs a backend that works here (Inductor: a C++ compiler on a CPU, Triton
    on CUDA). It is tried on a tiny function first (a few seconds), so a machine without one
    gets one message naming `key` before any data loads, not an Inductor traceback at the
    first training step."""
    if not enabled:
        return
    try:
        torch.compile(_compile_probe)(torch.ones(2, device=device))
    except Exception as err:  # Inductor raises many types; none is expected here
        reason = first_line(err)
        needs = ("Triton (pip install triton)" if device.type == "cuda"
                 else "a C++ compiler (g++ or clang++ on the PATH, or named by $CXX)")
        raise SrcoreError(f"{key}: torch.compile does not work on this {device.type}: "
                          f"{reason}. It needs {needs}; or turn {key} off") from None


def _compile_probe(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) + 1


def describe_setup(train, device: torch.device, precision: str, processes: int = 1) -> str:
    """What `auto` resolved to, for the training stages' first line (precision: as
    training_precision resolved it)."""
    layout = "channels_last" if use_channels_last(train.channels_last, device) else "NCHW"
    workers = loader_workers(train.num_workers, device, processes)
    mode = ("torch.compile" if train.compile else "eager") + (
        ", CUDA graphs" if use_cuda_graphs(train.cuda_graphs, device, precision, processes) else "")
    return f"{device}, {precision}, {layout}, {workers} loader worker(s), {mode}"


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
