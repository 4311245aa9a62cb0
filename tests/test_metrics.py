import numpy as np
import pytest

from srcore.metrics import psnr_ssim, to_y

from images import photo


def test_y_is_matlab_rgb2ycbcr():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], np.uint8)
    assert to_y(rgb) == pytest.approx(np.array([[235.0, 16.0, 16 + 65.481]]), abs=1e-3)


def test_psnr_matches_the_formula_on_rgb_and_cropped_y():
    ref = photo(40, 48, seed=1)
    test = np.clip(ref.astype(int) + np.random.default_rng(0).integers(-9, 10, ref.shape),
                   0, 255).astype(np.uint8)
    scores = psnr_ssim(ref, test, crop_border=4)
    mse = np.mean((ref.astype(float) - test.astype(float)) ** 2)
    assert scores["psnr"] == pytest.approx(10 * np.log10(255**2 / mse))
    y_ref = 16 + (65.481 * ref[..., 0] + 128.553 * ref[..., 1] + 24.966 * ref[..., 2]) / 255
    y_test = 16 + (65.481 * test[..., 0] + 128.553 * test[..., 1] + 24.966 * test[..., 2]) / 255
    mse_y = np.mean((y_ref[4:-4, 4:-4] - y_test[4:-4, 4:-4]) ** 2)
    assert scores["psnr_y"] == pytest.approx(10 * np.log10(255**2 / mse_y), rel=1e-6)
    assert 0 < scores["ssim"] < 1 and 0 < scores["ssim_y"] < 1


def test_psnr_is_scikit_images_to_the_last_bit():
    """srcore computes PSNR itself only to keep scipy.stats out of start-up: the same values."""
    from skimage.metrics import peak_signal_noise_ratio

    for seed in range(3):
        ref = photo(40, 48, seed=seed)
        test = np.clip(ref.astype(int) + np.random.default_rng(seed).integers(-20, 21, ref.shape),
                       0, 255).astype(np.uint8)
        scores = psnr_ssim(ref, test, crop_border=4)
        assert scores["psnr"] == peak_signal_noise_ratio(ref, test, data_range=255)
        y_ref, y_test = to_y(ref)[4:-4, 4:-4], to_y(test)[4:-4, 4:-4]
        assert scores["psnr_y"] == peak_signal_noise_ratio(y_ref, y_test, data_range=255)


def test_identical_images_and_size_mismatch():
    ref = photo()
    scores = psnr_ssim(ref, ref.copy(), crop_border=4)
    assert scores["ssim"] == pytest.approx(1) and scores["ssim_y"] == pytest.approx(1)
    assert np.isinf(scores["psnr"])
    with pytest.raises(ValueError, match="sizes differ"):
        psnr_ssim(ref, ref[:-4], crop_border=4)
    with pytest.raises(ValueError, match="expected uint8 images, not float64"):
        psnr_ssim(ref / 255, ref / 255, crop_border=4)  # data range 255 would be wrong


@pytest.mark.parametrize("size, crop_border, need", [(10, 0, 11), (18, 4, 19), (1, 4, 19)])
def test_images_too_small_for_ssim_are_a_clear_error(size, crop_border, need):
    from srcore.errors import SrcoreError

    img = photo(size, size + 2)
    with pytest.raises(SrcoreError, match=f"is {size + 2}x{size}.* at least {need}x{need}"):
        psnr_ssim(img, img, crop_border)


def test_images_too_small_for_lpips_are_a_clear_error():
    from srcore.errors import SrcoreError
    from srcore.metrics import image_metrics

    img = photo(30, 40)
    with pytest.raises(SrcoreError, match="is 40x30.* at least 31x31.*LPIPS"):
        image_metrics(img, img, 4, lpips_model=None)  # refused before LPIPS is run


def _basicsr_ssim(a, b):
    """SSIM written from Wang et al. 2004 as BasicSR's calculate_ssim computes it (the
    reference, independent of scikit-image): float64, 11x11 Gaussian window of sigma 1.5,
    K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering only (no padding), mean of the map."""
    from scipy.signal import correlate2d

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    x = np.arange(11) - 5.0
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(img):
        return correlate2d(img, window, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filt(a), filt(b)
    s11, s22, s12 = filt(a * a) - mu1 ** 2, filt(b * b) - mu2 ** 2, filt(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1)
                                                         * (s11 + s22 + c2))
    return ssim_map.mean()


@pytest.mark.parametrize("case", ["noise", "lpips_examples", "spike_in_19x19", "inverse"])
def test_ssim_is_basicsrs_on_rgb_and_cropped_y(case):
    """SSIM (RGB: per channel, whole image; Y: MATLAB rgb2ycbcr luma, crop_border 4) against
    the formula written out above: equal to 1e-12 (measured: 1e-14)."""
    from pathlib import Path

    from srcore.io import read_rgb8

    if case == "noise":
        ref = photo(40, 48, seed=2)
        test = np.clip(ref.astype(int) + np.random.default_rng(1).integers(-15, 16, ref.shape),
                       0, 255).astype(np.uint8)
    elif case == "lpips_examples":
        folder = Path(__file__).parent / "data" / "lpips"
        ref, test = read_rgb8(folder / "ex_ref.png"), read_rgb8(folder / "ex_p1.png")
    elif case == "spike_in_19x19":  # the smallest image crop_border 4 allows: one SSIM window
        ref = np.full((19, 19, 3), 128, np.uint8)
        test = ref.copy()
        test[9, 9] = 200
    else:
        ref = ((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
        test = 255 - ref
    scores = psnr_ssim(ref, test, crop_border=4)
    rgb = np.mean([_basicsr_ssim(ref[..., c], test[..., c]) for c in range(3)])
    y_ref = 16 + (65.481 * ref[..., 0] + 128.553 * ref[..., 1] + 24.966 * ref[..., 2]) / 255
    y_test = 16 + (65.481 * test[..., 0] + 128.553 * test[..., 1] + 24.966 * test[..., 2]) / 255
    y = _basicsr_ssim(y_ref[4:-4, 4:-4], y_test[4:-4, 4:-4])
    assert scores["ssim"] == pytest.approx(rgb, abs=1e-12)
    assert scores["ssim_y"] == pytest.approx(y, abs=1e-12)
