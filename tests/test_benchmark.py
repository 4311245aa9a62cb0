"""`python -m srcore benchmark`, run as a user runs it, at a tiny configuration."""

import json

import pytest

from srcore.train.runtime import native_precisions

import torch

from conftest import run_cli, run_cli_patched, write_params

TINY = {"model__rrdb": 1, "model__features": 8, "model__growth": 8, "data__patch_size": 16,
        "data__hr_max_side": 64, "cnn__batch_size": 4, "gan__batch_size": 4,
        "disc__widths": [8, 16, 16, 16], "disc__hidden": [16, 8],
        "gan__perceptual__layers": ["conv1_2", "conv2_2"],
        "gan__perceptual__layer_weights": [0.1, 1.0]}


def test_benchmark_json_reports_every_figure(tmp_path):
    write_params(tmp_path, **TINY)
    # -S changes params.yaml's values for this measurement, as dvc exp run -S does
    result = run_cli("benchmark", "--json", "-S", "cnn.batch_size=3", "--set",
                     "data.patch_size=20", cwd=tmp_path)
    figures = json.loads(result.stdout)
    assert "measuring: CNN training step, fp32" in result.stderr
    native = native_precisions(torch.device("cpu"))
    assert figures["native_precisions"] == native and figures["device"] == "cpu"
    assert figures["batch_size"] == 3 and figures["patch_size_px"] == 20
    assert figures["channels_last"] is False and figures["loader_num_workers"] == 0  # auto, CPU
    assert "compile_s" not in figures  # timed on CUDA, or when asked for (next test)
    for precision in ("fp32", "bf16"):
        assert figures[f"cnn_train_{precision}_patches_per_s"] > 0
        assert figures[f"cnn_train_{precision}_emulated"] == (precision not in native)
    assert figures["cnn_train_bf16_speedup_over_fp32"] == \
        figures["cnn_train_fp32_step_s"] / figures["cnn_train_bf16_step_s"]
    for precision in native:
        for step in ("generator", "discriminator", "joint"):
            assert figures[f"gan_{step}_{precision}_step_s"] > 0
        assert figures[f"gan_joint_{precision}_step_over_cnn_step"] > 0
    if "bf16" not in native:
        assert "bf16" in figures["gan_not_measured"]
        assert figures["cnn_train_bf16_runs"] == 1
    else:
        assert figures["cnn_train_fp32_runs"] >= 1
    assert figures["loader_headroom_x"] == \
        figures["loader_patches_per_s"] / figures["training_consumes_patches_per_s"]
    for key in ("inference_untiled_megapixels_per_s", "inference_tiled_megapixels_per_s",
                "eval_images_per_s"):
        assert figures[key] > 0
    # the tiny config's inference image: 128x85 (DIV2K's 510x339 at the default hr_max_side)
    assert figures["inference_input_px"] == "128x85"
    assert figures["inference_tile_px"] == figures["inference_auto_tile_px"] == 256  # a CPU
    assert figures["inference_tiled_over_untiled_x"] == pytest.approx(
        figures["inference_tiled_megapixels_per_s"] / figures["inference_untiled_megapixels_per_s"])
    assert "inference_untiled_peak_gib" not in figures  # GPUs only
    # the whole image also in the other precision, where this CPU runs it natively
    chosen = figures["inference_precision"]
    for other in {"fp32", "bf16"} - {chosen}:
        key = f"inference_untiled_{other}_megapixels_per_s"
        if other in native:
            assert figures[key] > 0 and figures[f"inference_untiled_{other}_over_{chosen}_x"] \
                == pytest.approx(figures[key] / figures["inference_untiled_megapixels_per_s"])
        else:
            assert key not in figures
    # the real train_cnn loop for one checkpoint interval, against the isolated step
    assert figures["loop_steps"] == 50 and figures["loop_steps_per_s"] > 0
    assert figures["loop_efficiency_x"] == pytest.approx(
        figures["loop_steps_per_s"] / figures["isolated_steps_per_s"])


def test_benchmark_table_and_bad_device(tmp_path):
    write_params(tmp_path, **TINY)
    text = run_cli("benchmark", cwd=tmp_path).stdout
    assert "cnn_train_fp32_patches_per_s" in text and "patches/s" in text and "MP/s" in text
    bad = run_cli("benchmark", "--device", "tpu", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "--device tpu" in bad.stderr
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}  # hides any GPU this machine has
    bad = run_cli("benchmark", "--device", "cuda", cwd=tmp_path, env=no_gpu, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert "error: --device cuda but no CUDA GPU is available" in bad.stderr  # not train.device
    write_params(tmp_path, **TINY, train__device="cuda")
    bad = run_cli("benchmark", cwd=tmp_path, env=no_gpu, check=False)
    assert bad.returncode == 2 and "error: train.device=cuda but no CUDA GPU" in bad.stderr
    for setting, message in (
            ("model.rrbd=3", "error: -S model.rrbd: no such key in params.yaml (check the spelling"),
            ("model.rrdb", "error: -S model.rrdb: write KEY=VALUE, e.g. -S model.rrdb=15"),
            ("model.rrdb=[1", "error: -S model.rrdb=[1: the value is not valid YAML"),
            ("model.rrdb=0", "error: params.yaml with -S model.rrdb=0: invalid params:\n"
                             "  model.rrdb = 0: Input should be greater than or equal to 1")):
        bad = run_cli("benchmark", "-S", setting, cwd=tmp_path, check=False)
        assert bad.returncode == 2 and message in bad.stderr and "measuring" not in bad.stderr


@pytest.mark.slow
def test_benchmark_times_torch_compile_when_asked(tmp_path):
    write_params(tmp_path, **TINY)
    figures = json.loads(run_cli("benchmark", "--json", "--compile", cwd=tmp_path).stdout)
    precision = figures["auto_precision"]
    assert figures["compile_s"] > 0 and figures[f"cnn_train_{precision}_compiled_step_s"] > 0
    assert figures[f"cnn_train_{precision}_compiled_speedup_over_eager"] == pytest.approx(
        figures[f"cnn_train_{precision}_step_s"]
        / figures[f"cnn_train_{precision}_compiled_step_s"])


def test_ctrl_c_in_the_benchmarks_training_loop_says_stopped_not_a_state_to_resume(tmp_path):
    """The benchmark times the real train_cnn loop, whose Ctrl-C saves its state and says
    where: here a temporary file, removed at once, that no command resumes from."""
    write_params(tmp_path, **TINY)
    # the signal comes at the loop's first logged step, from the CLI's own process
    patch = ("import os, signal\n"
             "import srcore.train.cnn as cnn\n"
             "real = cnn.train_cnn\n"
             "def train_cnn(*args, on_log, **kwargs):\n"
             "    def log(step, row):\n"
             "        on_log(step, row)\n"
             "        os.kill(os.getpid(), signal.SIGINT)\n"
             "    return real(*args, on_log=log, **kwargs)\n"
             "cnn.train_cnn = train_cnn\n")
    out = run_cli_patched(patch, "benchmark", "--device", "cpu", "--no-compile", cwd=tmp_path)
    assert out.returncode == 130, out.stderr
    assert "Traceback" not in out.stderr and "state saved" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "interrupted: stopped"
