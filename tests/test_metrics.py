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
