"""Precision choice, and tiny trainings in bf16 and fp16 (gradient-scaled) against fp32."""

import pytest
import torch

from srcore.errors import SrcoreError
from srcore.models.checkpoint import load_checkpoint
from srcore.train.cnn import train_cnn
from srcore.train.runtime import grad_scaler, native_precisions, pick_precision

from test_train_cnn import setup

CPU = torch.device("cpu")
# bf16 keeps 8 bits of mantissa; over a few dozen steps of the tiny model it may cost at most
# this much val PSNR-Y against fp32 (measured: see test output)
BF16_MARGIN_DB = 0.3


def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    # this machine's choice: one the CPU runs natively, whichever that is
    assert pick_precision("auto", CPU) in native_precisions(CPU)
    assert native_precisions(CPU)[0] == "fp32"
    # both kinds of CPU, on any machine: SRCORE_CPU_BF16 overrides /proc/cpuinfo's answer
    for has_bf16, expected in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv("SRCORE_CPU_BF16", has_bf16)
        assert pick_precision("auto", CPU) == expected
        assert native_precisions(CPU) == ["fp32", "bf16"][:1 + (has_bf16 == "1")]
        assert pick_precision("bf16", CPU) == "bf16"  # asked for: allowed, even if emulated
    monkeypatch.setenv("SRCORE_CPU_BF16", "yes")
    with pytest.raises(SrcoreError, match="SRCORE_CPU_BF16 is 'yes': set it to 0 .* or 1"):
        pick_precision("auto", CPU)


def test_fp16_on_a_cpu_is_refused_with_the_key_named():
    with pytest.raises(SrcoreError, match="train.precision=fp16 needs a CUDA GPU"):
        pick_precision("fp16", CPU)
    with pytest.raises(SrcoreError, match="--precision=fp16"):
        pick_precision("fp16", CPU, "--precision")


def test_only_fp16_scales_gradients():
    assert grad_scaler("fp16", CPU).is_enabled()
    assert not grad_scaler("bf16", CPU).is_enabled()
    assert not grad_scaler("fp32", CPU).is_enabled()


def trained(tmp_path, precision: str) -> tuple[dict, list[float]]:
    (tmp_path / precision).mkdir()
    model, data, val, cnn, train, kw = setup(tmp_path / precision, steps=24, lr=2e-3,
                                             cnn__val_every=4, train__log_every=4)
    kw["precision"] = precision
    losses = []
    summary = train_cnn(model, data, val, cnn, train,
                        on_log=lambda step, row: losses.append(row["train_loss"]), **kw)
    return summary, losses


def test_bf16_training_is_not_worse_than_fp32_by_more_than_the_margin(tmp_path):
    (fp32, _), (bf16, losses) = trained(tmp_path, "fp32"), trained(tmp_path, "bf16")
    print(f"val PSNR-Y after 24 steps: fp32 {fp32['best']['psnr_y']:.3f} dB, "
          f"bf16 {bf16['best']['psnr_y']:.3f} dB")
    assert bf16["best"]["psnr_y"] >= fp32["best"]["psnr_y"] - BF16_MARGIN_DB
    assert losses[-1] < losses[0]


def test_fp16_trains_through_the_gradient_scaler(tmp_path):
    """The CUDA fp16 path (autocast + GradScaler) run on the CPU, where torch supports both."""
    _, losses = trained(tmp_path, "fp16")
    assert losses[-1] < losses[0]
    state = load_checkpoint(tmp_path / "fp16" / "last.pt")
    assert state["objects"]["scaler"]["scale"] > 0  # the scaler's state is saved for resuming
