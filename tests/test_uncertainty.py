import pytest

from srcore.uncertainty import mean_difference, paired_differences


def test_fewer_than_five_images_give_min_and_max():
    result = mean_difference({"a": 0.5, "b": -0.1, "c": 0.2})
    assert result["interval"] == "min-max (fewer than 5 images)"
    assert (result["low"], result["high"]) == (-0.1, 0.5)
    assert result["mean"] == pytest.approx(0.2)
    assert not result["excludes_zero"] and result["images"] == 3
    assert result["per_image"][1] == {"image": "b", "difference": -0.1}
    assert mean_difference({"a": 0.3, "b": 0.1})["excludes_zero"]


def test_bootstrap_interval_of_a_known_sample():
    # the mean of 5 draws from [0, 0, 0, 0, 1] is k/5 with k ~ Binomial(5, 0.2):
    # P(k = 0) = 0.33 > 2.5%, so the low end is 0; P(k <= 2) = 0.942 < 97.5% < P(k <= 3) = 0.993
    result = mean_difference(dict(zip("abcde", [0.0, 0.0, 0.0, 0.0, 1.0])))
    assert result["interval"] == "bootstrap 95%"
    assert (result["low"], result["high"]) == (0.0, pytest.approx(0.6))
    assert result["mean"] == pytest.approx(0.2) and not result["excludes_zero"]


def test_bootstrap_of_a_clear_gain_excludes_zero_and_is_repeatable():
    gains = {f"img{i}": 1.0 + 0.1 * (i % 3) for i in range(20)}
    result = mean_difference(gains)
    assert 1.0 < result["low"] < result["mean"] < result["high"] < 1.2
    assert result["excludes_zero"]
    assert mean_difference(gains) == result
    constant = mean_difference({f"img{i}": 0.25 for i in range(6)})
    assert constant["low"] == constant["high"] == 0.25


def test_paired_differences_subtract_per_image():
    rows = [{"method": "cnn", "image": "x", "psnr_y": 31.0, "lpips": 0.30},
            {"method": "cnn", "image": "y", "psnr_y": 29.0, "lpips": 0.40},
            {"method": "bicubic", "image": "x", "psnr_y": 30.0, "lpips": 0.35},
            {"method": "bicubic", "image": "y", "psnr_y": 28.5, "lpips": 0.50}]
    result = paired_differences(rows, [("cnn", "bicubic")])
    psnr = result["cnn_vs_bicubic"]["psnr_y"]
    assert [d["difference"] for d in psnr["per_image"]] == [1.0, 0.5]
    assert (psnr["low"], psnr["mean"], psnr["high"]) == (0.5, 0.75, 1.0)
    assert result["cnn_vs_bicubic"]["lpips"]["mean"] == pytest.approx(-0.075)
    with pytest.raises(ValueError, match="gan has no scores for x, y"):
        paired_differences(rows, [("cnn", "gan")])


def test_the_bootstrap_seed_goes_to_scipys_rng_and_gives_one_interval_on_any_scipy(monkeypatch):
    """SciPy 1.15 renamed bootstrap's random_state to rng (random_state is deprecated, and an
    integer seed gives another stream under rng). The seed is passed as rng where SciPy has it,
    as random_state before, the same NumPy Generator both ways: one interval on every SciPy."""
    import warnings

    import numpy as np
    import scipy.stats

    from srcore.uncertainty import SEED

    gains = {f"img{i}": 1.0 + 0.1 * (i % 3) + 0.01 * i for i in range(12)}
    values = np.array(list(gains.values()))
    real = scipy.stats.bootstrap
    expected = real((values,), np.mean, confidence_level=0.95, method="percentile",
                    n_resamples=10_000, rng=np.random.default_rng(SEED)).confidence_interval

    def deprecating(*args, random_state=None, rng=None, **kwargs):  # a SciPy that warns
        if random_state is not None:
            warnings.warn("random_state is deprecated; use rng", DeprecationWarning)
        return real(*args, rng=rng, **kwargs)

    def before_1_15(*args, random_state=None, **kwargs):  # SciPy 1.9 to 1.14: no rng
        return real(*args, rng=random_state, **kwargs)

    for bootstrap in (real, deprecating, before_1_15):
        monkeypatch.setattr(scipy.stats, "bootstrap", bootstrap)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = mean_difference(gains)
        assert (result["low"], result["high"]) == tuple(expected), bootstrap.__name__
