"""A stage reads only the params it declares in dvc.yaml, and its resume key is made of them.

DVC re-runs a stage when one of its declared params or deps changes. The same declarations
decide here whether a stage's resumable state (models/*_last.pt) belongs to the present run:
the key hashes the values of exactly the declared params and the contents of every declared dep.
A stage that reads a param it does not declare fails at once, naming the param, so DVC's notion
of "changed" and the stage's notion of "the same run" cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from srcore.config import Params, load_params
from srcore.errors import SrcoreError
from srcore.tracking import flatten

CODE_ROOT = Path(__file__).resolve().parents[1]  # where dvc.yaml sits beside stages/ and srcore/
UNDECLARED = ("mlflow",)  # where runs are recorded, not what they compute: read by every stage


def dvc_yaml() -> Path:
    """The dvc.yaml of this code (a copy made by `dvc exp run` has its own), else ./dvc.yaml."""
    for path in (CODE_ROOT / "dvc.yaml", Path("dvc.yaml")):
        if path.is_file():
            return path
    raise SrcoreError("dvc.yaml not found beside the srcore code or in the current folder: run "
                      "from the project root")


def declaration(stage: str) -> dict:
    """The stage's entry in dvc.yaml: {"params": [...], "deps": [...], ...}."""
    stages = yaml.safe_load(dvc_yaml().read_text(encoding="utf-8"))["stages"]
    if stage not in stages:
        raise SrcoreError(f"stage {stage!r} is not in {dvc_yaml()}")
    return stages[stage]


def _covers(declared: list[str], key: str) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


class DeclaredParams:
    """A read-only view of validated Params: attributes as usual, but reading a param the stage
    does not declare is an error. A section declared in part is itself such a view."""

    def __init__(self, node, stage: str, declared: list[str], prefix: str = ""):
        self._node, self._stage, self._declared, self._prefix = node, stage, declared, prefix

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        key = self._prefix + name
        value = getattr(self._node, name)
        if _covers(self._declared + list(UNDECLARED), key):
            return value
        if any(d.startswith(key + ".") for d in self._declared):
            return DeclaredParams(value, self._stage, self._declared, key + ".")
        raise SrcoreError(f"stage {self._stage} reads {key}, which its params in dvc.yaml do not "
                          f"list: add {key} there, so that DVC re-runs the stage when it changes")


def stage_params(params_path: Path, stage: str) -> tuple[DeclaredParams, dict]:
    """(the view the stage reads, {declared param: value} for its key and its MLflow run)."""
    params = load_params(params_path)
    return declared_view(params, stage)


def declared_view(params: Params, stage: str) -> tuple[DeclaredParams, dict]:
    declared = [str(p) for p in declaration(stage).get("params", [])]
    values = {k: v for k, v in flatten(params.model_dump()).items() if _covers(declared, k)}
    return DeclaredParams(params, stage, declared), values


def run_key(stage: str, values: dict) -> str:
    """Hash of the declared params' values and of the declared deps' contents."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode())
    for dep in declaration(stage).get("deps", []):
        digest.update(f"\0{dep}\0{dep_digest(dep, stage)}".encode())
    return digest.hexdigest()


def dep_digest(dep: str, stage: str) -> str:
    return _content_digest(_find(dep, stage))


def _find(dep: str, stage: str) -> Path:
    """Data deps are in the project (the current folder); code deps may also be beside the code
    (a project folder that has only params.yaml and data, as the tests use)."""
    for path in (Path(dep), CODE_ROOT / dep):
        if path.exists():
            return path
    raise SrcoreError(f"{dep} not found (a dependency of stage {stage} in dvc.yaml): run the "
                      "stages before it (dvc repro)")


def _content_digest(path: Path) -> str:
    from srcore.checksum import sha256_of

    if path.is_file():
        return sha256_of(path).hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_of(file).hexdigest()}\0"
                      .encode())
    return digest.hexdigest()
