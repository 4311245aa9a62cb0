"""check_params: validate the whole params.yaml before any other stage runs.

DVC removes a stage's outputs just before running it. Without this stage, a bad value given
with `dvc exp run -S` (or a workspace without dvc.lock) let DVC delete the outputs of the first
stages it re-ran before their command refused the params. Every stage depends on this one's
output, so DVC runs it first; it fails before anything is removed. The output is the same bytes
for every valid params.yaml, so a passing check never makes another stage re-run. It records
nothing in MLflow: it computes nothing.
"""

from __future__ import annotations

from pathlib import Path

from srcore.atomic import write_text
from srcore.config import load_params
from srcore.data.folder import check_folder
from stages.paths import PARAMS_CHECKED, check_data_dir

NOTE = ("params.yaml passed validation. Every stage depends on this file, so that DVC runs the "
        "check_params stage first and a bad param stops dvc repro before any output is removed.\n")


def run(params_path: Path) -> None:
    params = load_params(params_path)  # every bad key, with what is allowed, in one error
    check_data_dir(params.data)
    if params.data.source == "dir":  # download's dependency in dvc.yaml: without it, DVC
        check_folder(params.data.dir)  # would stop with a bare "No such file or directory"
    if not PARAMS_CHECKED.is_file() or PARAMS_CHECKED.read_text() != NOTE:
        write_text(PARAMS_CHECKED, NOTE)
    print(f"check_params: {params_path} is valid")

