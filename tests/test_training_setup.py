"""The GPU speed switches (train.channels_last, train.compile, train.num_workers,
train.cuda_graphs: auto), each run on the CPU: the same training, the same numbers, files that
load anywhere. CUDA graphs cannot be captured on a CPU: test_cuda.py runs them on a GPU."""

import pytest
import torch

from srcore.models.checkpoint import load_checkpoint, load_generator
from srcore.train.cnn import train_cnn
from srcore.errors import SrcoreError
from srcore.train.runtime import (LOADER_WORKERS_CUDA, check_cuda_graphs, loader_workers,
                                  pick_precision, step_runner, training_precision, usable_cpus,
                                  use_channels_last, use_cuda_graphs)
from srcore.train.state import on_host
from conftest import params_with, run_cli, write_params, write_training_data
from test_gan import run_gan, tiny_setup
from test_train_cnn import setup

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device name; no GPU is touched


def trained_cnn(tmp_path, name: str, **overrides):
    (tmp_path / name).mkdir()
    model, data, val, cnn, train, kw = setup(tmp_path / name, steps=6, **overrides)
    rows = []
    summary = train_cnn(model, data, val, cnn, train,
                        on_log=lambda step, row: rows.append(row["train_loss"]), **kw)
    return model, summary, rows


def test_auto_settings_follow_the_device():
    assert not use_channels_last("auto", CPU) and use_channels_last("auto", CUDA)
    assert use_channels_last(True, CPU) and not use_channels_last(False, CUDA)
    assert loader_workers("auto", CPU) == 0 and loader_workers(3, CPU) == 3
    cpus = usable_cpus()
    assert loader_workers("auto", CUDA) == max(0, min(LOADER_WORKERS_CUDA, cpus - 1))
    assert loader_workers("auto", CUDA, processes=cpus) == 0  # one CPU per process: no room
    assert pick_precision("auto", CUDA) == "fp32"  # TF32: measured faster than bf16 there
    assert not use_cuda_graphs("auto", CPU, "fp32") and not use_cuda_graphs("auto", CPU, "bf16")
    assert use_cuda_graphs("auto", CUDA, "fp32") and use_cuda_graphs("auto", CUDA, "bf16")
    assert not use_cuda_graphs("auto", CUDA, "fp16")  # its gradient scaling reads the GPU
    assert not use_cuda_graphs("auto", CUDA, "fp32", processes=2)  # DDP stays eager
    assert not use_cuda_graphs(False, CUDA, "fp32") and use_cuda_graphs(True, CUDA, "fp32")


def test_training_auto_precision_is_bf16_only_where_cuda_graphs_replay_the_step(monkeypatch):
    """Eager bf16 was slower than fp32 on CUDA (host-bound casts); replayed from graphs it is
    faster: training's auto follows the graphs, inference's (pick_precision) stays fp32."""
    train = params_with().train
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training_precision(train, CUDA) == "bf16"
    assert training_precision(train, CUDA, processes=2) == "fp32"  # DDP: eager
    no_graphs = train.model_copy(update={"cuda_graphs": False})
    assert training_precision(no_graphs, CUDA) == "fp32"
    fp32 = train.model_copy(update={"precision": "fp32"})
    assert training_precision(fp32, CUDA) == "fp32"
    assert training_precision(train, CPU) == pick_precision("auto", CPU)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert training_precision(train, CUDA) == "fp32"


@pytest.mark.parametrize("device, precision, processes, why", [
    (CPU, "fp32", 1, "needs a CUDA GPU"),
    (CUDA, "fp16", 1, "cannot hold fp16's gradient scaling"),
    (CUDA, "fp32", 2, "is for one training process")])
def test_cuda_graphs_true_where_they_cannot_run_is_refused(device, precision, processes, why):
    with pytest.raises(SrcoreError, match=f"^train.cuda_graphs=true {why}.*; use auto or false$"):
        check_cuda_graphs(True, device, precision, processes)
    check_cuda_graphs("auto", device, precision, processes)  # auto turns them off there
    check_cuda_graphs(False, device, precision, processes)


def test_cuda_graphs_true_on_a_cpu_is_refused_by_check_params_and_the_stage(project):
    """Before DVC removes any output (check_params), and by the stage itself (the same params
    on another machine do not re-run check_params)."""
    write_training_data(project, train=2)
    write_params(project, train__cuda_graphs=True, train__device="cpu")
    for command in ("check-params", "train-cnn"):
        out = run_cli(command, cwd=project, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "train.cuda_graphs=true needs a CUDA GPU; use auto or false" in out.stderr
    assert not list(project.glob("models/*.pt"))


def test_a_step_that_cannot_be_captured_names_the_switch(monkeypatch):
    """Where this GPU or torch cannot capture the step, one message names train.cuda_graphs
    (after the eager warm-up steps, which ran). The CUDA calls are stood in for on the CPU: a
    capture that fails as torch's does on a host sync inside it."""
    import contextlib

    from srcore.train import cuda_graphs

    class Stream:
        def wait_stream(self, other):
            pass

    def failing_capture(graph, capture_error_mode):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", failing_capture)
    calls = []
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.ones(1))])
    steps = cuda_graphs.GraphedSteps(lambda kind, lq, gt: calls.append(kind) or {}, [optimizer])
    for _ in range(cuda_graphs.WARMUP):
        steps("cnn", torch.ones(1), torch.ones(1))
    assert calls == ["cnn"] * cuda_graphs.WARMUP
    with pytest.raises(SrcoreError, match=r"^train.cuda_graphs: this GPU or torch could not "
                       r"capture the training step as a CUDA graph \(CUDA error: operation not "
                       r"permitted when stream is capturing\); set train.cuda_graphs=false$"):
        steps("cnn", torch.ones(1), torch.ones(1))
    assert optimizer.param_groups[0]["capturable"] is False  # only ever set for the capture


def test_the_step_runs_as_it_is_where_no_graph_is_used():
    def step(kind, lq, gt):
        return {}

    params = params_with()
    assert step_runner(step, [], params.train, CPU, "fp32") is step
    assert step_runner(step, [], params.train.model_copy(update={"cuda_graphs": False}), CUDA,
                       "fp32") is step


def test_channels_last_training_gives_the_nchw_numbers_and_plain_files(tmp_path):
    _, plain, plain_rows = trained_cnn(tmp_path, "nchw")
    nhwc, tuned, tuned_rows = trained_cnn(tmp_path, "nhwc", train__channels_last=True)
    assert next(nhwc.parameters()).dim() == 4  # first conv weight
    assert nhwc.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    assert tuned_rows == pytest.approx(plain_rows, rel=1e-4)
    assert tuned["best"]["psnr_y"] == pytest.approx(plain["best"]["psnr_y"], abs=0.01)
    # the saved best weights load into a plain network, and resume into a channels_last one
    loaded, reference = (load_generator(tmp_path / name / "cnn.pt")[0].state_dict()
                         for name in ("nhwc", "nchw"))
    for k, v in loaded.items():
        assert v.is_contiguous()
        torch.testing.assert_close(v, reference[k], rtol=1e-3, atol=1e-4)
    assert load_checkpoint(tmp_path / "nhwc" / "last.pt")["step"] == 6


def test_channels_last_gan(tmp_path, weights_dir):
    rows = {}
    for layout in (False, True):
        (tmp_path / str(layout)).mkdir()
        parts = tiny_setup(weights_dir, train__channels_last=layout)
        rows[layout] = []
        run_gan(tmp_path / str(layout), weights_dir, parts,
                on_log=lambda s, r, out=rows[layout]: out.append(r["d_loss"]))
    assert rows[True] == pytest.approx(rows[False], rel=1e-3)


@pytest.mark.slow
def test_compiled_training_gives_the_eager_numbers_and_plain_files(tmp_path):
    _, eager, eager_rows = trained_cnn(tmp_path, "eager")
    _, fast, fast_rows = trained_cnn(tmp_path, "compiled", train__compile=True)
    assert fast_rows == pytest.approx(eager_rows, rel=1e-3)
    assert fast["best"]["psnr_y"] == pytest.approx(eager["best"]["psnr_y"], abs=0.05)
    saved = load_checkpoint(tmp_path / "compiled" / "last.pt")["objects"]["model"]
    assert not any("_orig_mod" in k for k in saved)  # loads into an uncompiled network
    load_generator(tmp_path / "compiled" / "cnn.pt")


def test_compile_without_a_working_backend_is_refused_before_training(project):
    """A machine where torch.compile cannot build kernels (here: $CXX names no compiler) gets
    one message naming the setting, before data loads or anything is written."""
    write_training_data(project, train=2)
    write_params(project, train__compile=True)
    no_compiler = {"CXX": str(project / "no-such-compiler")}
    out = run_cli("train-cnn", cwd=project, env=no_compiler, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "train.compile: torch.compile does not work on this cpu" in out.stderr
    assert "needs a C++ compiler" in out.stderr and "turn train.compile off" in out.stderr
    assert not list(project.glob("models/*.pt")) and not (project / "metrics").exists()
    out = run_cli("benchmark", "--compile", cwd=project, env=no_compiler, check=False)
    assert out.returncode == 2 and "--compile: torch.compile does not work" in out.stderr
    assert "CNN training step" not in out.stdout + out.stderr  # nothing was timed first


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
    MemoryError()])
def test_running_out_of_memory_names_the_params_to_lower(project, monkeypatch, error):
    """The stage as a user runs it, with the training step failing to allocate."""
    from srcore.errors import SrcoreError
    from stages import train_cnn

    write_training_data(project, train=2)
    monkeypatch.chdir(project)

    def allocate(*args, **kwargs):
        raise error

    monkeypatch.setattr("srcore.train.cnn.train_cnn", allocate)
    with pytest.raises(SrcoreError) as caught:
        train_cnn.run(project / "params.yaml")
    assert str(caught.value) == ("train_cnn: out of memory on cpu: lower cnn.batch_size or "
                                 "data.patch_size (or model.features / model.rrdb)")


def test_out_of_memory_with_cuda_graphs_suggests_turning_them_off_first(project, monkeypatch):
    """On CUDA (stood in for: no GPU is touched) with graphs on, the message names the switch."""
    from srcore.errors import SrcoreError
    from stages import train_cnn

    write_training_data(project, train=2)
    monkeypatch.chdir(project)
    monkeypatch.setattr("srcore.train.runtime.pick_device", lambda name, setting="": CUDA)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    def allocate(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("srcore.train.cnn.train_cnn", allocate)
    with pytest.raises(SrcoreError) as caught:
        train_cnn.run(project / "params.yaml")
    assert str(caught.value) == (
        "train_cnn: out of memory on cuda: lower cnn.batch_size or data.patch_size (or "
        "model.features / model.rrdb); or first set train.cuda_graphs=false (each captured "
        "step keeps its memory)")


def test_other_runtime_errors_of_training_pass_through(project, monkeypatch):
    from stages import train_cnn

    write_training_data(project, train=2)
    monkeypatch.chdir(project)

    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("srcore.train.cnn.train_cnn", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        train_cnn.run(project / "params.yaml")


def test_state_on_the_host_keeps_its_structure():
    state = {"a": torch.ones(2), "b": [torch.zeros(1), (1, 2)], "c": "text"}
    host = on_host(state)
    assert host["b"][1] == (1, 2) and host["c"] == "text"
    assert torch.equal(host["a"], state["a"]) and torch.equal(host["b"][0], state["b"][0])
