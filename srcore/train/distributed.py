"""Data-parallel training under torchrun: one process per device, gradients averaged by DDP.

Outside torchrun (no WORLD_SIZE in the environment) a `Dist` of one process makes every helper
here a plain single-process call, so the training loops have one code path.

Batch sizes in params.yaml are global: each of N processes takes batch/N crops of a step, and
together they hold exactly the crops one process would use (batches.py), so N processes follow
the 1-process run up to float rounding.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from srcore.errors import SrcoreError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes checkpoints, metrics, plots and MLflow records."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun described in the environment (nccl on CUDA, gloo on
    CPU); returns this process's Dist and device (its own GPU on CUDA)."""
    if not launched_by_torchrun():
        return Dist(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise SrcoreError(f"local rank {local_rank} has no GPU: this machine has "
                              f"{torch.cuda.device_count()}; start at most that many processes "
                              "per node (train.nproc or torchrun --nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        # Import global_mean's all_reduce before the group exists: its `group=group.WORLD`
        # default is evaluated at import, and imported later it would hold the live group, so
        # teardown's destroy_process_group could not free it and gloo's worker threads would
        # outlive it into interpreter exit. There a worker freeing a collective issued in
        # backward (whose saved thread state holds a Python object) must take the GIL and, on
        # Python 3.13, aborted the process ("terminate called without an active exception",
        # about 1 run in 4). Freed by teardown, the group joins its threads before exit.
        importlib.import_module("torch.distributed.nn.functional")
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank), device


def teardown() -> None:
    """Free the process group, joining its worker threads, once training has ended on every
    process. Only then: after a failure a worker may wait in a collective that a failed peer
    never joins, and destroy_process_group would wait with it (until gloo's 30-minute timeout);
    a failing process just exits, and torchrun stops the others."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def check_batch(batch_size: int, key: str, dist: Dist) -> None:
    if batch_size % dist.world:
        raise SrcoreError(f"{key}={batch_size} is the global batch and must divide evenly by "
                          f"the {dist.world} training processes; change {key} or train.nproc")


def wrap(module: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """DDP around `module` when there are several processes (it starts from rank 0's weights)."""
    if dist.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def global_mean(x: torch.Tensor, dist: Dist) -> torch.Tensor:
    """The mean of `x` over the global batch (every process's share), differentiable: the
    relativistic GAN losses compare each logit with the batch's mean, which must be that of the
    global batch for N processes to follow the 1-process run. The backward pass sums each
    process's gradient of the mean over the processes, as one process's backward would."""
    if dist.world == 1:
        return x.mean()
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # its successor, _functional_collectives, is private
        warnings.simplefilter("ignore", FutureWarning)
        total = all_reduce(x.sum())
    return total / (x.numel() * dist.world)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DDP wrapper: for passes whose gradients must not be synchronised."""
    return getattr(module, "module", module)


def sum_over_ranks(values: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Element-wise sums over processes (of the logged training losses). `values` lives on
    this process's device, which is what the backend needs (CUDA for nccl, CPU for gloo)."""
    if dist.world > 1:
        torch_dist.all_reduce(values)
    return values


def any_rank(flag: bool, dist: Dist, device: torch.device) -> bool:
    """True on every process when it is true on one (e.g. a stop signal seen by one process)."""
    if dist.world == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return bool(tensor.item())


def from_main(obj, dist: Dist):
    """rank 0's `obj` on every process (e.g. validation scores, so that all stop together)."""
    if dist.world == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        torch_dist.barrier()
