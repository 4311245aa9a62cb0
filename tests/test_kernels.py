import numpy as np
import pytest
import torch
from PIL import Image

from srcore.data.dataset import to_tensor
from srcore.data.kernels import downscale, upscale
from srcore.metrics import to_uint8

from images import photo


@pytest.mark.parametrize("kernel", ["bicubic", "area", "bilinear", "nearest"])
def test_shapes_range_and_8bit_levels(kernel):
    gt = to_tensor(photo(64, 48))[None]
    lq = downscale(gt, 4, kernel)
    assert lq.shape == (1, 3, 16, 12)
    assert lq.min() >= 0 and lq.max() <= 1
    assert torch.equal(lq, torch.round(lq * 255) / 255)


def test_area_is_the_block_mean():
    gt = to_tensor(photo(8, 8))[None]
    lq = downscale(gt, 4, "area", quantize=False)
    assert torch.allclose(lq[0, :, 0, 0], gt[0, :, :4, :4].mean(dim=(1, 2)))


def test_bicubic_matches_pil_antialiased_bicubic():
    rgb = photo(128, 96, seed=3)
    ours = to_uint8(downscale(to_tensor(rgb)[None], 4, "bicubic"))
    pil = np.asarray(Image.fromarray(rgb).resize((24, 32), Image.BICUBIC))
    assert np.abs(ours.astype(int) - pil.astype(int)).max() <= 1


def test_nearest_picks_pixels_and_baselines_upscale():
    gt = to_tensor(photo(16, 16))[None]
    lq = downscale(gt, 4, "nearest", quantize=False)
    block = gt[0, :, :4, :4].reshape(3, 16)
    assert any(torch.equal(lq[0, :, 0, 0], block[:, k]) for k in range(16))
    for kernel in ("nearest", "bilinear", "bicubic"):
        assert upscale(lq, 4, kernel).shape == gt.shape
    assert torch.equal(upscale(lq, 4, "nearest")[0, :, :4, :4],
                       lq[0, :, :1, :1].expand(3, 4, 4))
