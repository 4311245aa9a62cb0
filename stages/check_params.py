"""check_params: validate the whole params.yaml before any other stage runs.

DVC removes a stage's outputs just before running it. Without this stage, a bad value given
with `dvc exp run -S` (or a workspace without dvc.lock) let DVC delete the outputs of the first
stages it re-ran before their command refused the params. Every stage depends on this one's
output, so DVC runs it first; it fails before anything is removed. The output is the same bytes
for every valid params.yaml, so a passing check never makes another stage re-run. It records
nothing in MLflow: it computes nothing. Values that are valid only where the machine can run
them (a GPU, a precision, torch.compile) are checked against this machine.
"""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_text
from srcore.config import load_params
from srcore.data.folder import check_folder
from stages.paths import PARAMS_CHECKED, check_data_dir

NOTE = ("params.yaml passed validation. Every stage depends on this file, so that DVC runs the "
        "check_params stage first and a bad param stops dvc repro before any output is removed.\n")


def check_machine(train) -> None:
    """The train.* values that only some machines can run: a GPU, as many GPUs as processes,
    a precision the device has, a working torch.compile, CUDA graphs. The stages check them too (the same
    params on another machine do not re-run this stage), but only once DVC has removed their
    outputs."""
    from srcore.launch import check_devices  # torch: seconds, after the quick checks
    from srcore.train.runtime import (check_compile, check_cuda_graphs, pick_device,
                                      training_precision)

    device = pick_device(train.device)
    precision = training_precision(train, device, train.nproc)
    check_devices(train.nproc, train.device)
    check_compile(train.compile, device)
    check_cuda_graphs(train.cuda_graphs, device, precision, train.nproc)


def run(params_path: Path) -> None:
    params = load_params(params_path)  # every bad key, with what is allowed, in one error
    check_data_dir(params.data)
    if params.data.source == "dir":  # download's dependency in dvc.yaml: without it, DVC
        check_folder(params.data.dir)  # would stop with a bare "No such file or directory"
    check_machine(params.train)  # e.g. train.precision=fp16 on a machine without a GPU
    if not PARAMS_CHECKED.is_file() or PARAMS_CHECKED.read_text() != NOTE:
        write_text(PARAMS_CHECKED, NOTE)
    print(f"check_params: {params_path} is valid")

