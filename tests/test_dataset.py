import torch

from srcore.data.dataset import PatchDataset
from srcore.data.kernels import downscale
from srcore.train.batches import WORKER_CHUNK, StreamSampler, batch_stream, fitting_chunk
from srcore.train.distributed import Dist

from images import photo


def make(**kw):
    images = [photo(80, 96, seed=i) for i in range(3)]
    return PatchDataset(images, patch_size=32, patches_per_image=4, scale=4, kernel="bicubic",
                        seed=7, **kw)


def take(stream, count):
    return [next(stream) for _ in range(count)]


def test_items_are_lq_gt_pairs_made_online():
    data = make()
    assert len(data) == 12
    lq, gt = data[(0, 5)]
    assert gt.shape == (3, 32, 32) and lq.shape == (3, 8, 8)
    assert torch.equal(lq, downscale(gt[None], 4, "bicubic")[0])


def test_crops_are_seeded_by_pass_and_index():
    a, b = make(), make()
    assert torch.equal(a[(0, 3)][1], b[(0, 3)][1])
    assert not torch.equal(a[(0, 3)][1], a[(0, 2)][1])
    assert not torch.equal(a[(0, 3)][1], a[(1, 3)][1])


def test_the_stream_crosses_passes_with_full_batches():
    """12 crops, batches of 8: every batch is full, and each pass visits every crop once."""
    keys = list(zip(range(24), StreamSampler(12, seed=3, dist=Dist())))
    passes = [sorted(i for _, (p, i) in keys if p == n) for n in (0, 1)]
    assert passes == [list(range(12))] * 2
    assert [len(gt) for _, gt in take(batch_stream(make(), 8, 3, 0, 0, Dist()), 3)] == [8] * 3


def test_batches_do_not_depend_on_worker_count_or_chunk():
    """Workers make WORKER_CHUNK steps' batches at once (any chunk: the same batches), and a
    stream resumed in the middle of a chunk starts at the right batch."""
    straight = take(batch_stream(make(), 4, 3, 0, 0, Dist()), 7)
    for workers, chunk, done in ((2, None, 0), (1, 3, 0), (2, None, 3)):
        batches = take(batch_stream(make(), 4, 3, done, workers, Dist(), chunk=chunk), 7 - done)
        assert [len(gt) for _, gt in batches] == [4] * (7 - done)
        for a, b in zip(straight[done:], batches):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_stream_resumed_at_a_step_continues_exactly():
    straight = take(batch_stream(make(), 8, 3, 0, 0, Dist()), 5)
    resumed = take(batch_stream(make(), 8, 3, 2, 0, Dist()), 3)
    for a, b in zip(straight[2:], resumed):
        assert torch.equal(a[1], b[1])


def test_ranks_share_out_exactly_the_one_process_batches():
    """With N processes each step's N per-rank batches hold the 1-process batch's crops."""
    data = make()  # 12 crops, global batch 8
    one = take(batch_stream(data, 8, 3, 0, 0, Dist()), 3)
    ranks = [take(batch_stream(data, 8, 3, 0, 0, Dist(rank=r, world=2)), 3) for r in (0, 1)]
    for step, (_, batch) in enumerate(one):
        shared = torch.cat([ranks[0][step][1], ranks[1][step][1]])
        assert sorted(map(_key, batch)) == sorted(map(_key, shared))
    assert not torch.equal(ranks[0][0][1], ranks[1][0][1])


def _key(crop: torch.Tensor) -> bytes:
    return crop.numpy().tobytes()


def test_no_augmentation_gives_plain_crops():
    data = make(hflip=False, vflip=False, rot90=False)
    _, gt = data[(0, 0)]
    image = torch.from_numpy(data.images[0]).permute(2, 0, 1).float() / 255
    windows = image.unfold(1, 32, 1).unfold(2, 32, 1)  # every 32x32 crop position
    assert (windows == gt[:, None, None]).all(dim=(0, 3, 4)).any()


def test_images_load_in_the_order_of_their_names_and_a_broken_one_is_named(tmp_path):
    import cv2
    import pytest

    from srcore.data.dataset import load_images
    from srcore.errors import SrcoreError

    images = [photo(40 + 8 * i, 48, seed=i) for i in range(6)]
    names = [f"img{i}" for i in range(6)][::-1]  # not the order the files were written in
    for name, rgb in zip(names, images[::-1]):
        cv2.imwrite(str(tmp_path / f"{name}.png"), rgb[..., ::-1])
    loaded = load_images(tmp_path, names)
    assert all((a == b).all() for a, b in zip(loaded, images[::-1]))
    (tmp_path / "img3.png").write_bytes(b"not a png")
    with pytest.raises(SrcoreError, match="img3.png"):
        load_images(tmp_path, names)


def test_a_shared_memory_too_small_for_the_loader_workers_is_named_first(monkeypatch):
    """Workers hand batches over in /dev/shm: a container's small one (Docker: 64 MB) gave
    torch's "unable to allocate shared memory" traceback at the first step; now one error
    names train.num_workers before any worker starts."""
    import shutil
    from collections import namedtuple

    import pytest

    from srcore.errors import SrcoreError

    usage = namedtuple("usage", "total used free")
    # batches of 8: 8 x 3 x (32^2 + 8^2) x 4 bytes = 104,448; 2 workers: 5 handovers of one
    # batch each = 0.5 MiB (of WORKER_CHUNK = 8 batches each: 4.0 MiB)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**20, 2**20 - 2**18, 2**18))
    with pytest.raises(SrcoreError, match=r"^train.num_workers: 2 loader workers hand over "
                       r"about 0\.5 MiB of batches in shared memory, and /dev/shm has 0\.2 "
                       r"MiB free: set train.num_workers to 0"):
        batch_stream(make(), 8, 3, 0, 2, Dist())
    take(batch_stream(make(), 8, 3, 0, 0, Dist()), 1)  # no workers, no shared memory
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 0, 2**30))
    take(batch_stream(make(), 8, 3, 0, 1, Dist()), 1)
    sample = make()[(0, 0)]
    assert fitting_chunk(sample, 8, 2) == WORKER_CHUNK == 8  # room for all
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 0, int(1.1 * 2**20)))
    assert fitting_chunk(sample, 8, 2) == 2  # 1.0 MiB: the most that fits
