"""CUDA graphs for training steps: a step's kernels captured once, then replayed in one launch.

Why: eager PyTorch launches every kernel from Python, some microseconds of host work each. A
15-RRDB training step is about 2,000 kernels (230 convs forward and backward, their concats,
activations, the optimizer), so the host, not the GPU, set its pace (docs/performance.md: the
step was slower in bf16 than in fp32 because autocast adds host work). torch.compile's
"reduce-overhead" mode graphs the forward and backward passes only, after a minute of compiling;
this captures the whole step (forward, losses, backward, optimizer step) after a few eager ones.
No library does it for a step whose kind changes (the GAN's phases) and whose learning rate
steps down, so it is written here, after PyTorch's "whole network capture" recipe.

What keeps the replayed step the eager one:
- each kind of step (the CNN's; the GAN's "G", "D" and "GD") is captured on its own, after
  WARMUP eager steps of that kind: cuDNN's autotuning and the optimizer's lazily made state
  happen there, outside the capture;
- the batch is copied into the tensors the graph reads (a batch of another shape, which the
  endless batch stream never makes, would run eagerly);
- the learning rate is a constant of the captured optimizer step, so a new one (an lr milestone)
  captures the step again;
- what a step returns is copied: the graph overwrites its outputs at the next replay.
The step must not wait on the GPU from the host (no .item(), no GradScaler: not with fp16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from srcore.errors import SrcoreError, first_line
from srcore.train.runtime import out_of_memory

WARMUP = 3  # eager steps of each kind before its capture (PyTorch's recipe uses 3)

Step = Callable[[str, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    lrs: tuple
    inputs: tuple[torch.Tensor, torch.Tensor]
    outputs: dict[str, torch.Tensor]


class GraphedSteps:
    """step(kind, lq, gt) -> its logged values, run eagerly WARMUP times per kind, then
    replayed from a CUDA graph. lq and gt are batches on the GPU."""

    def __init__(self, step: Step, optimizers: list[torch.optim.Optimizer]):
        self.step, self.optimizers = step, optimizers
        self.eager_runs: dict[str, int] = {}
        self.captured: dict[str, _Captured] = {}

    def __call__(self, kind: str, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.eager_runs.get(kind, 0) < WARMUP:
            self.eager_runs[kind] = self.eager_runs.get(kind, 0) + 1
            return self._eager(kind, lq, gt)
        entry = self.captured.get(kind)
        if entry is not None and not _same_layout(entry.inputs, (lq, gt)):
            return self._eager(kind, lq, gt)
        lrs = self._learning_rates()
        if entry is None or entry.lrs != lrs:
            entry = self._capture(kind, lq, gt, lrs)
        entry.inputs[0].copy_(lq)
        entry.inputs[1].copy_(gt)
        entry.graph.replay()
        return {name: value.clone() for name, value in entry.outputs.items()}

    def _learning_rates(self) -> tuple:
        return tuple(group["lr"] for opt in self.optimizers for group in opt.param_groups)

    def _eager(self, kind: str, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        # on a side stream, as the recipe has it: the capture runs on one too
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step(kind, lq, gt)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, kind: str, lq: torch.Tensor, gt: torch.Tensor, lrs: tuple) -> _Captured:
        self.captured.pop(kind, None)  # an older graph of this kind frees its memory first
        inputs = (lq.clone(), gt.clone())  # clone keeps the memory format (channels_last)
        groups = [group for opt in self.optimizers for group in opt.param_groups]
        before = [group["capturable"] for group in groups]
        for group in groups:  # Adam refuses to be captured otherwise; only for the capture, so
            group["capturable"] = True  # a saved state resumes on a CPU as it always did
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the loader's pin-memory thread may allocate while this captures
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs = self.step(kind, *inputs)
        except Exception as err:  # CUDA and torch raise several types; an OOM keeps its own
            if out_of_memory(err):
                raise
            raise SrcoreError(f"train.cuda_graphs: this GPU or torch could not capture the "
                              f"training step as a CUDA graph ({first_line(err)}); set "
                              "train.cuda_graphs=false") from None
        finally:
            for group, flag in zip(groups, before):
                group["capturable"] = flag
        self.captured[kind] = _Captured(graph, lrs, inputs, outputs)
        return self.captured[kind]


def _same_layout(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return all(x.shape == y.shape and x.stride() == y.stride() and x.dtype == y.dtype
               for x, y in zip(a, b))
