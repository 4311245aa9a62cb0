"""Pieces the training stages share: the split, the training data, launching, CSV logs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

from srcore.errors import Interrupted, SrcoreError
from srcore.figures import sample_grid
from srcore.tracking import TrackingLost, log_in_background
from stages.declared import DeclaredParams, stage_params
from stages.inputs import check_metric_sizes, read_split
from stages.paths import HR, MODELS


def training_data(params: DeclaredParams, split: dict):
    """The PatchDataset over the train split."""
    from srcore.data.dataset import PatchDataset, load_images

    data = params.data
    train_images = dict(zip(split["train"], load_images(HR, split["train"])))
    small = [n for n, img in train_images.items() if min(img.shape[:2]) < data.patch_size]
    if small:
        print(f"skipping training images smaller than data.patch_size={data.patch_size}: "
              f"{', '.join(small)}")
    usable = [img for n, img in train_images.items() if n not in small]
    if not usable:
        raise SrcoreError(f"no training image is as large as data.patch_size="
                          f"{data.patch_size}; lower it or use larger images")
    return PatchDataset(usable, data.patch_size, data.patches_per_image, data.scale,
                        data.lq_kernel, data.hflip, data.vflip, data.rot90, params.seed)


def val_data(params: DeclaredParams, split: dict):
    """The ValImages of the val split, checked against the metrics' minimum size first."""
    from srcore.data.dataset import load_images
    from srcore.train.validate import make_val_images

    images = load_images(HR, split["val"])
    check_metric_sizes(split["val"], images, params.eval.crop_border)
    return make_val_images(images, params.data.scale, params.data.lq_kernel)


def run_or_launch(stage_module, command: str, params_path: Path) -> None:
    """Run a training stage in this process, or in train.nproc processes through torchrun."""
    from srcore.config import load_params
    from srcore.launch import check_devices, run_under_torchrun
    from srcore.runlock import exclusive
    from srcore.train.distributed import launched_by_torchrun

    train = load_params(params_path).train  # a bad params file stops here, before any launch
    try:
        if launched_by_torchrun():
            stage_module.run(params_path)  # one of the processes: the launcher holds the lock
            return
        stage_module.check_inputs()  # missing inputs: one message (not one per process), and
        # before the lock, which would leave a models/ folder behind
        # two runs of one stage would overwrite each other's resumable state and outputs
        with exclusive(MODELS / f".{stage_module.STAGE}.lock", command):
            if train.nproc == 1:
                stage_module.run(params_path)
                return
            check_devices(train.nproc, train.device)
            code = run_under_torchrun(train.nproc, [command, "--params", str(params_path)])
            if code:
                raise SrcoreError(f"{command}: a training process failed (exit code {code}); "
                                  "its error is above")
    except Interrupted as stop:
        if stop.resumable and not launched_by_torchrun():  # under torchrun the launcher says it
            stop.message += f"; {resume_hint()}"
        raise
    except TrackingLost as lost:
        # a state is saved only once the losses up to its step are in the MLflow run, and a
        # resumed training logs the steps after it again: its history has no hole
        raise SrcoreError(f"{lost.what}; once the server is back, {resume_hint()} from the last "
                          "saved state and continue that run") from None


def resume_hint() -> str:
    """How to resume: the same command, as the resumable state is no DVC output (dvc.yaml):
    `dvc exp run` leaves it for the next run. A queued or --temp experiment runs in a copy
    that DVC removes."""
    if not os.environ.get("DVC_EXP_NAME"):
        return "run the same command (or dvc repro) to resume"
    root = os.environ.get("DVC_ROOT")
    if root and Path(root).resolve() != Path.cwd().resolve():
        return ("this experiment ran in a temporary copy that DVC removes, so running it "
                "again trains from the start")
    # under its own name again: its MLflow runs stay under one parent (srcore/tracking.py)
    return (f"run `dvc exp run -n {os.environ['DVC_EXP_NAME']}` (the workspace keeps its "
            "params) to resume")


def run_training(params_path: Path, stage: str, check_inputs: Callable[[], None], train,
                 to_lower: str) -> None:
    """What every training stage does: check params and inputs, then call
    `train(params, values, split, dist, device, precision)` as this process, which under
    torchrun is one of several (srcore/train/distributed.py). `values` are the declared params
    (stages/declared.py); `precision` is train.precision resolved for this training.
    `to_lower`: the stage's own params that an out-of-memory error tells the user to lower."""
    from srcore.train import distributed
    from srcore.train.runtime import (check_compile, check_cuda_graphs, configure,
                                      describe_setup, out_of_memory, pick_device,
                                      training_precision, use_cuda_graphs)

    params, values = stage_params(params_path, stage)
    check_inputs()
    split = read_split()
    dist, device = distributed.setup(pick_device(params.train.device))
    configure(device)
    check_compile(params.train.compile, device)
    precision = training_precision(params.train, device, dist.world)
    check_cuda_graphs(params.train.cuda_graphs, device, precision, dist.world)
    if dist.main:
        print(f"{stage}: {describe_setup(params.train, device, precision, dist.world)}")
    try:
        train(params, values, split, dist, device, precision)
    except (MemoryError, RuntimeError) as err:  # torch's out-of-memory errors are RuntimeErrors
        if not out_of_memory(err):
            raise
        graphs = use_cuda_graphs(params.train.cuda_graphs, device, precision, dist.world)
        raise SrcoreError(f"{stage}: out of memory on {device}: lower {to_lower}" + (
            "; or first set train.cuda_graphs=false (each captured step keeps its memory)"
            if graphs else "")) from None
    distributed.teardown()  # not in a `finally`: see teardown


@contextlib.contextmanager
def training_run(stage: str, params, values: dict, last_path: Path, key: str, dist):
    """The training stage's MLflow run, on the main process: the run its resumable state names,
    if the state is of this configuration, so a resumed training continues it. Yields
    (mlflow, run id), both None on the other processes. Once the stage is done (its outputs
    written, its run finished) the state is deleted: no DVC output, it would outlive the
    workspace it was trained in (`dvc exp apply`, `git checkout`), and a later run of the same
    configuration would take it up as finished instead of training. (A state keeps its CSV
    files' text, so that a resumed run writes its own rows, not the ones the workspace holds
    by then: loop.py, csvlog.py.)"""
    from srcore.tracking import stage_run
    from srcore.train.state import saved_run_id

    resumes = saved_run_id(last_path, key) if dist.main else None
    with stage_run(stage, params.mlflow.experiment, values, enabled=dist.main,
                   run_id=resumes) as mlflow:
        yield mlflow, (mlflow.active_run().info.run_id if dist.main else None)
    if dist.main:
        Path(last_path).unlink(missing_ok=True)


class Records:
    """What a training stage records as it goes: logged losses to MLflow and to the CSV files
    of `train_logs` ((path, columns) pairs; a row goes to each file it has values for, so the
    GAN's G and D phases are separate series); validations to `val_csv` and MLflow, each with a
    sample grid of `val_image`. The library calls these methods on the main process only (its
    on_start, on_log, on_validate and history hooks): the resumable state keeps the CSV files'
    text (`history()`), and a resumed run writes them anew from it (`start`)."""

    def __init__(self, mlflow, train_logs: list[tuple[Path, list[str]]],
                 val_csv: Path | None = None, val_columns: list[str] | None = None,
                 val_image=None, scale: int = 4):
        from srcore.csvlog import CsvLog

        self.mlflow, self.val_image, self.scale = mlflow, val_image, scale
        self.train_logs = [CsvLog(path, columns) for path, columns in train_logs]
        self.val_log = CsvLog(val_csv, val_columns) if val_csv is not None else None
        self.logged: dict[str, set[int]] = {}  # metric -> the steps the MLflow run holds

    def start(self, step: int, history: dict[str, str] | None = None) -> None:
        """step: the step the run goes on from; history: what `history()` returned when its
        state was saved (None: a fresh run)."""
        for log in self._logs():
            log.start(step, None if history is None else history.get(str(log.path)))
        if step:  # resumed: a killed run logged beyond its last checkpoint; not again
            client, run = self.mlflow.MlflowClient(), self.mlflow.active_run().info.run_id
            self.logged = {key: {m.step for m in client.get_metric_history(run, key)}
                           for key in client.get_run(run).data.metrics}

    def history(self) -> dict[str, str]:
        """Each CSV file's text up to now (by its path): what the resumable state keeps."""
        return {str(log.path): log.text() for log in self._logs()}

    def _logs(self) -> list:
        return self.train_logs + ([self.val_log] if self.val_log else [])

    def log(self, step: int, row: dict) -> None:
        for log in self.train_logs:
            if any(row.get(c) is not None for c in log.columns if c != "step"):
                log.append({"step": step, **row})
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        log_in_background(self.mlflow, self._new(numbers, step), step)

    def validated(self, step: int, scores: dict, model) -> None:
        """`model` was just validated: the grid shows the output that validation scored."""
        self.val_log.append({"step": step, **scores})
        self.mlflow.log_metrics(self._new({f"val_{k}": v for k, v in scores.items()}, step),
                                step=step)
        self.mlflow.log_image(sample_grid(self.val_image, self.scale),
                              f"grids/step_{step:06d}.png")

    def _new(self, metrics: dict, step: int) -> dict:
        """The metrics the run does not hold at this step yet (a resumed run recomputes the
        steps after its checkpoint with the same values; a killed run's background logging
        may have kept some of them and lost others)."""
        return {k: v for k, v in metrics.items() if step not in self.logged.get(k, ())}


def log_start(mlflow, metrics: dict, device, precision: str, processes: int) -> None:
    """What a training logs at its start, once per run: a resumed training continues the run of
    the killed one, which logged these already. Its setup (device, precision, processes) goes
    in as params; where a resumed run goes on with another setup (MLflow params cannot
    change), as tags resumed_<name>."""
    held = mlflow.get_run(mlflow.active_run().info.run_id).data
    new = {k: v for k, v in metrics.items() if k not in held.metrics}
    if new:
        mlflow.log_metrics(new)
    setup = {"device": str(device), "precision_used": precision, "processes": str(processes)}
    fresh = {k: v for k, v in setup.items() if k not in held.params}
    if fresh:
        mlflow.log_params(fresh)
    moved = {f"resumed_{k}": v for k, v in setup.items() if held.params.get(k, v) != v}
    if moved:
        mlflow.set_tags(moved)


def log_summary(mlflow, metrics: dict) -> None:
    """The stage's summary (metrics/<stage>.json) in its MLflow run as summary/<key>, apart
    from the per-step series of the same names (val_psnr_y, ...)."""
    mlflow.log_metrics({f"summary/{k}": float(v) for k, v in metrics.items()
                        if isinstance(v, (int, float))})
