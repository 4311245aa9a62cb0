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


def _cubic(x, a):
    """Keys' cubic convolution kernel: a = -0.5 in MATLAB's imresize and PIL, -0.75 in
    OpenCV's INTER_CUBIC and torch's bicubic without antialiasing."""
    x = np.abs(x)
    return np.where(x <= 1, (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1,
                    np.where(x < 2, a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a, 0.0))


def _matlab_weights(n_in, scale, a=-0.5, border="symmetric"):
    """The (n_out, n_in) resampling matrix of MATLAB's imresize(..., 'bicubic') along one axis,
    written from its algorithm (imresize.m's contributions()): output pixel centres mapped
    back with half-pixel alignment, the kernel stretched by 1/scale when shrinking
    (antialiasing), weights normalised to sum 1, out-of-range taps mirrored (MATLAB's
    'symmetric' padding) or, with border="replicate", clamped."""
    n_out = int(np.ceil(n_in * scale))
    width, kernel = 4.0, (lambda x: _cubic(x, a))
    if scale < 1:
        width, kernel = 4.0 / scale, (lambda x: scale * _cubic(scale * x, a))
    u = (np.arange(n_out) + 0.5) / scale - 0.5  # 0-based input coordinate of each output
    taps = np.floor(u - width / 2)[:, None] + np.arange(int(np.ceil(width)) + 2)[None]
    w = kernel(u[:, None] - taps)
    w /= w.sum(1, keepdims=True)
    if border == "symmetric":
        idx = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])[
            np.mod(taps.astype(int), 2 * n_in)]
    else:
        idx = np.clip(taps.astype(int), 0, n_in - 1)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out)[:, None].repeat(idx.shape[1], 1), idx), w)
    return matrix


def _resize(img, scale, **kwargs):
    """(H, W, C) float64 resized along both axes with _matlab_weights."""
    rows = _matlab_weights(img.shape[0], scale, **kwargs)
    cols = _matlab_weights(img.shape[1], scale, **kwargs)
    return np.einsum("ih,hwc,jw->ijc", rows, img.astype(np.float64), cols)


def test_bicubic_lq_is_matlab_imresize_away_from_the_border():
    """The bicubic LQ is MATLAB's imresize(gt, 1/4) (bicubic, antialiased; the reference is
    written out above) on every pixel at least 2 LQ pixels from the border, to one 8-bit level
    where MATLAB's double result sits at a rounding tie; only the border differs (torch
    renormalises the kernel over the taps inside the image, MATLAB mirrors the image)."""
    rgb = photo(128, 96, seed=3)
    ours = to_uint8(downscale(to_tensor(rgb)[None], 4, "bicubic")).astype(int)
    matlab = np.clip(np.floor(_resize(rgb, 0.25) + 0.5), 0, 255).astype(int)  # uint8()
    inner = np.abs(ours - matlab)[2:-2, 2:-2]
    assert inner.max() <= 1 and np.mean(inner != 0) < 0.002
    assert (np.abs(ours - matlab) != 0).any()  # the border: not MATLAB's there


def test_bicubic_baseline_is_keys_a_minus_075_not_matlabs():
    """The bicubic baseline (and the network's bicubic skip) upsample with Keys' a = -0.75 and
    clamped borders, as OpenCV's INTER_CUBIC and torch do; MATLAB's imresize, the "Bicubic"
    row of published SR tables, uses a = -0.5: a sharper-looking but weaker baseline (0.04 to
    0.2 dB lower PSNR-Y on the sample photos). A convention, pinned here so that a change of
    it is a decision."""
    lq = to_tensor(photo(24, 20, seed=5))[None].double()
    ours = upscale(lq, 4, "bicubic")[0].permute(1, 2, 0).numpy()
    lq_hwc = lq[0].permute(1, 2, 0).numpy()
    keys_075 = np.clip(_resize(lq_hwc, 4, a=-0.75, border="replicate"), 0, 1)
    matlab = np.clip(_resize(lq_hwc, 4), 0, 1)
    assert np.abs(ours - keys_075).max() < 1e-6
    assert np.abs(ours - matlab).max() > 1 / 255
