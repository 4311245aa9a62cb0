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
    _check_new_data_dir(params.data)
    if not PARAMS_CHECKED.is_file() or PARAMS_CHECKED.read_text() != NOTE:
        write_text(PARAMS_CHECKED, NOTE)
    print(f"check_params: {params_path} is valid")


def _check_new_data_dir(data) -> None:
    """A data.dir that download is about to read (other than the one dvc.lock's download ran
    on) must be a folder now: else DVC removes data/raw before download refuses it. One that
    did not change need not be there: a clone may train on the data DVC pulled."""
    import yaml

    if data.source != "dir":
        return
    try:
        locked = yaml.safe_load(Path("dvc.lock").read_text(encoding="utf-8"))
        ran_on = locked["stages"]["download"]["params"]["params.yaml"]
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        ran_on = None  # no run recorded: download will run
    if ran_on == {"data.source": "dir", "data.dir": data.dir}:
        return
    check_folder(data.dir)
