"""Data-parallel training: 2 CPU processes (gloo) under torchrun against 1 process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from srcore.atomic import write_json
from srcore.models.checkpoint import load_generator

from conftest import run_cli, write_params, write_training_data

pytestmark = pytest.mark.slow  # several processes: a minute or two

WORKER = Path(__file__).with_name("ddp_worker.py")
# 1 process with batch B against 2 with B/2 each: the same crops, gradients summed in another
# order; a few Adam steps keep the weights this close (measured differences are ~1e-7)
ATOL = 1e-5


def launch(nproc: int, out: Path, phase: str, steps: int, weights: Path) -> None:
    out.mkdir(exist_ok=True)
    args = [str(WORKER), phase, str(out), str(steps), str(weights)]
    runner = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    result = subprocess.run(runner + args, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(path, weights_only=True)
    return {f"{net}.{k}": v for net, state in saved.items() for k, v in state.items()}


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())


@pytest.mark.parametrize("phase", ["cnn", "gan-alternate", "gan-joint"])
def test_two_processes_match_one_process_and_each_other(tmp_path, weights_dir, phase):
    launch(2, tmp_path / "two", phase, 3, weights_dir)
    launch(1, tmp_path / "one", phase, 3, weights_dir)
    rank0, rank1 = (weights_of(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    assert max_difference(rank0, rank1) == 0  # DDP keeps the replicas identical
    one = weights_of(tmp_path / "one" / "rank0.pt")
    assert max_difference(one, rank0) < ATOL
    # only the main process logs (MLflow, metrics, plots hang on this hook)
    assert rows(tmp_path / "two" / "rank1.json") == []
    two_rows, one_rows = rows(tmp_path / "two" / "rank0.json"), rows(tmp_path / "one" / "rank0.json")
    assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows] and one_rows
    loss = "train_loss" if phase == "cnn" else "d_loss"
    for a, b in zip(one_rows, two_rows):  # means gathered over both processes
        assert a[loss] == pytest.approx(b[loss], rel=1e-4)
    assert not list((tmp_path / "two").glob("*.tmp*"))


def test_relativistic_losses_use_the_global_batch_mean(tmp_path, weights_dir):
    """The relativistic losses compare each logit with the other batch's mean: under two
    processes that must be the global batch's, in the loss and in its gradients, as with one."""
    launch(2, tmp_path / "two", "relativistic-losses", 0, weights_dir)
    launch(1, tmp_path / "one", "relativistic-losses", 0, weights_dir)
    one = torch.load(tmp_path / "one" / "rank0.pt")
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1)]
    for loss in ("d", "g"):
        # each process's loss is the mean over its samples; their mean is the whole batch's
        both = (ranks[0][loss]["loss"] + ranks[1][loss]["loss"]) / 2
        assert torch.allclose(both, one[loss]["loss"], atol=1e-6)
        for side in ("real", "fake"):
            joined = torch.cat([r[loss][side] for r in ranks])
            assert torch.allclose(joined, one[loss][side], atol=1e-7), (loss, side)


def test_two_process_run_resumes_as_it_would_have_continued(tmp_path, weights_dir):
    launch(2, tmp_path / "resumed", "cnn", 1, weights_dir)
    launch(2, tmp_path / "resumed", "cnn", 3, weights_dir)  # same key: resumes after step 1
    launch(2, tmp_path / "straight", "cnn", 3, weights_dir)
    resumed = weights_of(tmp_path / "resumed" / "rank0.pt")
    assert max_difference(resumed, weights_of(tmp_path / "straight" / "rank0.pt")) == 0
    assert [r["step"] for r in rows(tmp_path / "resumed" / "rank0.json")] == [2, 3]


TINY = {"model__rrdb": 1, "model__features": 8, "model__growth": 8, "cnn__steps": 2,
        "cnn__val_every": 1, "cnn__lr_halve_at": [1], "cnn__patience": 1,
        "cnn__early_stop_warmup": 1, "data__patch_size": 32, "data__patches_per_image": 4,
        "cnn__batch_size": 4, "train__nproc": 2, "train__log_every": 1,
        "train__checkpoint_every": 1,
        "train__device": "cpu"}  # auto takes a GPU where there is one: 2 processes need 2


def test_train_cnn_with_nproc_2_launches_torchrun_and_records_once(project):
    write_training_data(project, train=2)
    write_params(project, **TINY)
    result = run_cli("train-cnn", cwd=project)
    assert "launching 2 training processes: torchrun --standalone" in result.stderr
    assert "x 2 process(es)" in result.stdout  # fp32 or bf16: whatever auto picks here
    assert result.stdout.count("train_cnn: best val PSNR-Y") == 1  # the main process reports
    assert json.loads((project / "metrics/train_cnn.json").read_text())["steps_run"] == 2
    load_generator(project / "models/cnn.pt")
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["srcore"], filter_string="tags.stage = 'train_cnn'")
    assert list(runs["status"]) == ["FINISHED"] and list(runs["params.processes"]) == ["2"]


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGHUP],
                                     [signal.SIGTERM, signal.SIGTERM]],
                         ids=["SIGTERM", "SIGHUP", "SIGTERM twice"])
def test_a_signal_to_the_launcher_stops_every_process_after_the_save(project, signals):
    """A scheduler's SIGTERM (or Ctrl-C, or the terminal closing: SIGHUP) reaches the launching
    `python -m srcore`: torchrun passes it on, the processes save and stop, and the user reads
    two lines (where it saved, how to resume), no torchrun traceback. A second SIGTERM while
    they save (one `kill` of DVC can bring the stage two) changes nothing."""
    from srcore.models.checkpoint import load_checkpoint

    write_training_data(project, train=2)
    write_params(project, **{**TINY, "cnn__steps": 5000, "cnn__val_every": 5000,
                             "cnn__patience": 5000, "cnn__early_stop_warmup": 4000})
    process = subprocess.Popen([sys.executable, "-m", "srcore", "train-cnn"], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (project / "models/cnn_last.pt").exists():
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    for signum in signals:
        process.send_signal(signum)
        time.sleep(0.5)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "signal" not in stderr  # torchrun's warnings
    assert stderr.count("interrupted: state saved at step") == 1  # the main process only
    assert stderr.count("interrupted: the training processes stopped; run the same command "
                        "(or dvc repro) to resume") == 1
    saved = int(stderr.split("saved at step ")[1].split()[0])
    assert 0 < saved < 5000 and load_checkpoint(project / "models/cnn_last.pt")["step"] == saved


def test_missing_inputs_stop_before_any_process_is_launched(project):
    write_params(project, **TINY)
    write_json(project / "data/split.json", {"train": ["a"], "val": ["b"], "test": ["c"]})
    result = run_cli("train-gan", cwd=project, check=False)
    assert result.returncode == 2 and "launching" not in result.stderr
    assert result.stderr.count("error:") == 1
    assert "models/cnn.pt not found: run the train_cnn stage first" in result.stderr


@pytest.mark.parametrize("exitcode, code", [(1, 1), (-signal.SIGKILL, 137)])
def test_torchrun_ends_on_a_failed_process_with_its_code_and_no_traceback_of_its_own(
        monkeypatch, exitcode, code):
    """A training process that fails prints its own error; torchrun then says which one failed
    in a line and exits with its code (128 + N for a signal N), not with a traceback of its
    ChildFailedError and a summary box."""
    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from srcore.launch import _torchrun

    def failing_main():
        raise ChildFailedError("srcore", {1: ProcessFailure(1, 123, exitcode, "<N/A>")})

    monkeypatch.setattr(torch.distributed.run, "main", failing_main)
    with pytest.raises(SystemExit) as stopped:
        _torchrun()
    assert stopped.value.code == code
