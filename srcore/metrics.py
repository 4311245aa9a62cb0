"""Image-quality metrics: PSNR and SSIM on RGB and on the Y channel (scikit-image's formulas).

Y is ITU-R BT.601 luma as MATLAB's rgb2ycbcr computes it (range 16-235), with `crop_border`
pixels removed on each side: the protocol of the super-resolution literature. SSIM is Wang et
al. 2004: Gaussian window sigma 1.5, population covariance, per channel then averaged.
Inputs are uint8 RGB arrays (H, W, 3), the way the images are stored.

Images too small for these metrics are refused with an SrcoreError (check_size) rather than
scored with a smaller SSIM window or a padded LPIPS input: those would be other metrics, not
comparable with the published ones. The data stages refuse such images up front.
"""

from __future__ import annotations

import numpy as np

from srcore.errors import SrcoreError

SSIM_WINDOW = 11  # Gaussian, sigma 1.5, truncated at 3.5 sigma as scikit-image does
LPIPS_MIN_SIDE = 31  # LPIPS's AlexNet: conv1 (11x11, stride 4) and two 3x3 max-pools


def min_side(crop_border: int, lpips: bool = True) -> int:
    """The smallest image side the metrics accept."""
    return max(SSIM_WINDOW + 2 * crop_border, LPIPS_MIN_SIDE if lpips else 0)


def check_size(shape, crop_border: int, lpips: bool = True, what: str = "the image",
               remedy: str = "use larger images or a smaller crop border") -> None:
    """Raise a clear SrcoreError if an image of `shape` is too small for the metrics."""
    need = min_side(crop_border, lpips)
    height, width = shape[:2]
    if min(height, width) < need:
        reasons = f"SSIM's {SSIM_WINDOW}-pixel window inside a crop border of {crop_border}"
        if lpips:
            reasons += f", LPIPS's {LPIPS_MIN_SIDE}"
        raise SrcoreError(f"{what} is {width}x{height}: the metrics need at least {need}x{need} "
                          f"pixels ({reasons}); {remedy}")


# host memory of scoring one pixel (float64 maps of SSIM, the float inputs and feature maps of
# LPIPS's AlexNet), measured as peak RSS over the process's own on a 4000x3000 pair (CPU):
# 2.3 GiB without LPIPS, 4.1 GiB with it
BYTES_PER_PIXEL = {"psnr_ssim": 160, "lpips": 320}


def check_memory(shape, lpips: bool = True, what: str = "the images") -> None:
    """Refuse images too large to score in the memory available, before the system's OOM
    killer ends the process with nothing said (two 16000x12000 upscaled photos want ~60 GB)."""
    from srcore.io import available_memory

    available = available_memory()
    pixels = shape[0] * shape[1]
    needed = pixels * BYTES_PER_PIXEL["lpips" if lpips else "psnr_ssim"]
    if available is None or needed <= available:
        return
    gib = 2 ** 30
    without = ("" if not lpips else f" (without LPIPS, --no-lpips: about "
               f"{pixels * BYTES_PER_PIXEL['psnr_ssim'] / gib:.1f} GiB)")
    raise SrcoreError(f"{what} are {shape[1]}x{shape[0]} ({pixels / 1e6:.0f} MP): scoring them "
                      f"needs about {needed / gib:.1f} GiB of memory{without}, and "
                      f"{available / gib:.1f} GiB is available; compare crops of them (the same "
                      "region of each)")


def to_y(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2ycbcr

    return rgb2ycbcr(rgb)[..., 0]  # float, 16..235 for uint8 input


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border else img


def _ssim(ref: np.ndarray, test: np.ndarray, channel_axis) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(ref, test, data_range=255, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False,
                                       channel_axis=channel_axis))


def _psnr(ref: np.ndarray, test: np.ndarray) -> float:
    """PSNR for data range 255, computed as skimage.metrics.peak_signal_noise_ratio does for
    these inputs (uint8 RGB, float64 Y: both in float64), so bit for bit the same. Not that
    function: its module imports scipy.stats, ~1 s at the start of every scoring stage."""
    err = np.mean((np.asarray(ref, np.float64) - np.asarray(test, np.float64)) ** 2,
                  dtype=np.float64)
    return float(10 * np.log10(255.0 ** 2 / err))


def psnr_ssim(ref: np.ndarray, test: np.ndarray, crop_border: int) -> dict[str, float]:
    """{psnr, ssim} on RGB over the whole image, {psnr_y, ssim_y} on cropped Y."""
    if ref.shape != test.shape:
        raise ValueError(f"image sizes differ: {ref.shape} vs {test.shape}")
    if ref.dtype != np.uint8 or test.dtype != np.uint8:  # data range 255 is assumed below:
        # floats in [0, 1] would score ~48 dB too high on RGB and an SSIM near 1
        raise ValueError(f"expected uint8 images, not {ref.dtype} and {test.dtype} "
                         "(srcore.metrics.to_uint8 rounds a float tensor in [0, 1])")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, not {crop_border}")
    check_size(ref.shape, crop_border, lpips=False)
    ref_y, test_y = _crop(to_y(ref), crop_border), _crop(to_y(test), crop_border)
    with np.errstate(divide="ignore"):  # identical images: PSNR is inf, which is right
        return {
            "psnr": _psnr(ref, test),
            "ssim": _ssim(ref, test, channel_axis=2),
            "psnr_y": _psnr(ref_y, test_y),
            "ssim_y": _ssim(ref_y, test_y, channel_axis=None),
        }


def to_uint8(img) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float tensor in [0, 1] -> (H, W, 3) uint8, rounded."""
    img = img.detach().float().clamp(0, 1)
    if img.dim() == 4:
        img = img[0]
    return (img.permute(1, 2, 0) * 255).round().byte().cpu().numpy()


def lpips_distance(lpips_model, ref: np.ndarray, test: np.ndarray) -> float:
    """LPIPS v0.1 between two uint8 RGB images, on inputs scaled to [-1, 1] (the metric's own
    convention). Load the model once per process (srcore.pretrained.load_lpips) and reuse it."""
    import torch

    device = next(lpips_model.parameters()).device

    def to_input(img):
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        return (x / 127.5 - 1).to(device)

    with torch.no_grad():
        return float(lpips_model(to_input(test), to_input(ref)).item())


def image_metrics(ref: np.ndarray, test: np.ndarray, crop_border: int,
                  lpips_model) -> dict[str, float]:
    """psnr, ssim (RGB, whole image), psnr_y, ssim_y (Y, border cropped), lpips."""
    check_size(ref.shape, crop_border)
    return {**psnr_ssim(ref, test, crop_border), "lpips": lpips_distance(lpips_model, ref, test)}


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Per-key means of a list of image_metrics / psnr_ssim results."""
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
