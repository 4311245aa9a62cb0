"""srcore.evaluate: the comparison figure from evaluate's own SR images; scores that cannot be
averaged."""

import numpy as np
import pytest
import torch

from srcore.evaluate import (FIGURE_IMAGES, baseline, comparison_figure, evaluate,
                             model_upscaler)
from srcore.errors import SrcoreError
from srcore.models.rrdb import RRDBNet
from srcore.pretrained import load_lpips

from images import photo


def test_the_figure_reuses_evaluates_model_images_and_draws_the_same(weights_dir):
    torch.manual_seed(0)
    upscaler = model_upscaler(RRDBNet(rrdb=1, features=8, growth=8).eval(), "cpu", "fp32")
    calls = []

    def model(lq):
        calls.append(lq.shape)
        return upscaler(lq)

    images = {f"photo{i}": photo(64, 80, seed=i) for i in range(FIGURE_IMAGES + 1)}
    methods = {"bicubic": baseline("bicubic", 4), "model": model}
    lpips_model = load_lpips(weights_dir)
    outputs = {}
    evaluate(methods, images, 4, "bicubic", 4, lpips_model, outputs=outputs)
    assert len(calls) == len(images)
    assert list(outputs) == list(images)[:FIGURE_IMAGES]  # the figure's images only
    figure = comparison_figure(images, methods, 4, "bicubic", 4, lpips_model, outputs)
    assert len(calls) == len(images)  # not one more upscale for the figure
    again = comparison_figure(images, methods, 4, "bicubic", 4, lpips_model)
    assert len(calls) == len(images) + FIGURE_IMAGES
    assert np.array_equal(figure, again)


def test_an_image_a_method_restores_exactly_is_refused_by_name(weights_dir):
    """A single-colour test image comes back exactly from bicubic: PSNR inf, which would make
    the mean inf and the paired differences nan (written as Infinity and NaN)."""
    images = {"photo": photo(64, 64, seed=0), "flat": np.full((64, 64, 3), 120, np.uint8)}
    with pytest.raises(SrcoreError, match=r"test image flat: bicubic restores it exactly "
                                          r"\(psnr inf, psnr_y inf\).*remove it"):
        evaluate({"bicubic": baseline("bicubic", 4)}, images, 4, "bicubic", 4,
                 load_lpips(weights_dir))
