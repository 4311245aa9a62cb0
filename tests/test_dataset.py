import torch

from srcore.data.dataset import PatchDataset
from srcore.data.kernels import downscale
from srcore.train.distributed import Dist, epoch_loader

from images import photo


def make(**kw):
    images = [photo(80, 96, seed=i) for i in range(3)]
    return PatchDataset(images, patch_size=32, patches_per_image=4, scale=4, kernel="bicubic",
                        seed=7, **kw)


def test_items_are_lr_hr_pairs_made_online():
    data = make()
    assert len(data) == 12
    lr, hr = data[5]
    assert hr.shape == (3, 32, 32) and lr.shape == (3, 8, 8)
    assert torch.equal(lr, downscale(hr[None], 4, "bicubic")[0])


def test_crops_are_seeded_by_epoch_and_index():
    a, b = make(), make()
    assert torch.equal(a[3][1], b[3][1])
    assert not torch.equal(a[3][1], a[2][1])
    b.set_epoch(1)
    assert not torch.equal(a[3][1], b[3][1])


def test_batches_do_not_depend_on_worker_count():
    data = make()
    batches = []
    for workers in (0, 2):
        loader = epoch_loader(data, 4, seed=3, epoch=1, num_workers=workers, dist=Dist())
        batches.append(torch.cat([hr for _, hr in loader]))
    assert torch.equal(*batches)


def test_ranks_share_out_exactly_the_one_process_batches():
    """With N processes each step's N per-rank batches hold the 1-process batch's crops."""
    data = make()  # 12 crops: steps of 8 and 4
    one = [hr for _, hr in epoch_loader(data, 8, seed=3, epoch=2, num_workers=0, dist=Dist())]
    ranks = [[hr for _, hr in epoch_loader(data, 8, seed=3, epoch=2, num_workers=0,
                                           dist=Dist(rank=r, world=2))] for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 2
    for step, batch in enumerate(one):
        shared = torch.cat([ranks[0][step], ranks[1][step]])
        assert sorted(map(_key, batch)) == sorted(map(_key, shared))
    assert not torch.equal(ranks[0][0], ranks[1][0])


def _key(crop: torch.Tensor) -> bytes:
    return crop.numpy().tobytes()


def test_no_augmentation_gives_plain_crops():
    data = make(hflip=False, vflip=False, rot90=False)
    _, hr = data[0]
    image = torch.from_numpy(data.images[0]).permute(2, 0, 1).float() / 255
    windows = image.unfold(1, 32, 1).unfold(2, 32, 1)  # every 32x32 crop position
    assert (windows == hr[:, None, None]).all(dim=(0, 3, 4)).any()
