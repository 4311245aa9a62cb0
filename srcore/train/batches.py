"""One DataLoader for a whole training run: an endless stream of batches, resumable at any step.

Pass p over the data visits the crops in the permutation seeded by seed + p (as a
DistributedSampler with set_epoch(p) would); passes follow each other without a break, so every
step gets a full batch even when the data holds fewer crops than a batch. With N processes,
rank r takes every N-th crop of each pass (padded, as DistributedSampler pads, so that all ranks
get as many): the N per-rank batches of a step together hold the crops one process would use.
The sampler yields (pass, index) keys: the dataset seeds each crop by them, so the stream does
not depend on the number of loader workers, and a run resumed at step s starts where it was.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import torch

from srcore.train.distributed import Dist


class StreamSampler(torch.utils.data.Sampler):
    def __init__(self, size: int, seed: int, dist: Dist, start: int = 0):
        """start: how many keys of this rank's stream to skip (steps done x per-rank batch)."""
        self.size, self.seed, self.dist, self.start = size, seed, dist, start
        self.per_rank = -(-size // dist.world)  # ceil: padded as DistributedSampler does

    def pass_order(self, data_pass: int) -> list[int]:
        """This rank's indices in pass `data_pass`."""
        generator = torch.Generator().manual_seed(self.seed + data_pass)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[:self.per_rank * self.dist.world - self.size]
        return order[self.dist.rank::self.dist.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        first_pass, skip = divmod(self.start, self.per_rank)
        for data_pass in itertools.count(first_pass):
            order = self.pass_order(data_pass)[skip:]
            skip = 0
            yield from ((data_pass, index) for index in order)


# steps' batches a loader worker makes and hands over at once, at most: each handover costs the
# training process a fixed time (unpickling, shared memory, pinning), which held 15 workers to
# 14,400 crops/s on an H200 machine; 4 at once gave 22,400, 8 gave 28,800 (docs/performance.md)
WORKER_CHUNK = 8


def batch_stream(data, batch_size: int, seed: int, steps_done: int, num_workers: int | str,
                 dist: Dist, device: torch.device = torch.device("cpu"),
                 chunk: int | None = None) -> Iterator:
    """This process's batches from step steps_done + 1 on, forever (`batch_size` is global),
    for training on `device`: num_workers may be train.num_workers' "auto", and batches for a
    GPU come in pinned memory, so their copy to it does not block. Loader workers make `chunk`
    steps' batches at a time (default: up to WORKER_CHUNK, as many as shared memory holds),
    which are the same batches in the same order: the sampler's stream is only cut in longer
    pieces."""
    from torch.utils.data import DataLoader

    from srcore.train.runtime import loader_workers

    workers = loader_workers(num_workers, device, dist.world)
    per_rank = batch_size // dist.world
    if workers == 0:
        chunk = 1
    elif chunk is None:
        chunk = fitting_chunk(data[(0, 0)], per_rank, workers)
    sampler = StreamSampler(len(data), seed, dist, start=steps_done * per_rank)
    loader = DataLoader(data, batch_size=per_rank * chunk, sampler=sampler, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    if chunk == 1:
        return iter(loader)
    return (batch for pieces in loader for batch in zip(*(t.split(per_rank) for t in pieces)))


def fitting_chunk(sample, per_rank: int, workers: int, folder: str = "/dev/shm") -> int:
    """The most steps' batches (WORKER_CHUNK, halved as needed) that `workers` loader workers
    can hand over in the shared memory there is: each holds 2 handovers prefetched (torch's
    default), and the training process the one in use. Where not even one batch at a time fits,
    one error names train.num_workers: a container's small /dev/shm (Docker's default is 64 MB)
    failed the first step with torch's "unable to allocate shared memory" traceback."""
    import os
    import shutil

    from srcore.errors import SrcoreError

    if not os.path.isdir(folder):
        return WORKER_CHUNK
    batch = per_rank * sum(t.numel() * t.element_size() for t in sample)
    free = shutil.disk_usage(folder).free
    chunk = WORKER_CHUNK
    while chunk > 1 and batch * chunk * (2 * workers + 1) > free:
        chunk //= 2
    need = batch * chunk * (2 * workers + 1)
    if need > free:
        raise SrcoreError(f"train.num_workers: {workers} loader workers hand over about "
                          f"{need / 2**20:.1f} MiB of batches in shared memory, and {folder} has "
                          f"{free / 2**20:.1f} MiB free: set train.num_workers to 0, or give "
                          "the container more (docker run --shm-size=1g)")
    return chunk
