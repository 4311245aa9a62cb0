"""Typed, validated params: the schema of params.yaml.

Every stage and command loads params through `load_params`, so a typo (`data.sorce`), a wrong
type or an out-of-range value is reported once, naming the key, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from srcore.errors import SrcoreError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Section):
    source: Literal["sample", "div2k", "dir"] = "sample"
    dir: Optional[str] = None
    hr_max_side: int = Field(1020, ge=16)
    scale: Literal[4] = 4  # the generator is 4x, as in the study
    lr_kernel: Literal["bicubic", "area", "bilinear", "nearest"] = "bicubic"
    patch_size: int = Field(64, ge=8)
    patches_per_image: int = Field(16, ge=1)
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True

    @model_validator(mode="after")
    def _check(self):
        if self.source == "dir" and not self.dir:
            raise ValueError("data.source is 'dir' but data.dir is not set: give the folder of "
                             "your images, e.g. -S data.dir=/path/to/images")
        if self.patch_size % self.scale:
            raise ValueError(f"data.patch_size={self.patch_size} must be divisible by "
                             f"data.scale={self.scale}")
        return self


class SplitParams(_Section):
    train: int = Field(700, ge=1)
    val: int = Field(101, ge=1)
    test: int = Field(102, ge=1)
    min_per_split: int = Field(2, ge=1)


class ModelParams(_Section):
    rrdb: int = Field(2, ge=1, le=64)
    features: int = Field(64, ge=4)
    growth: int = Field(32, ge=4)
    skip: Literal["bicubic", "none"] = "bicubic"


class TrainParams(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_workers: int = Field(0, ge=0)


class CnnParams(_Section):
    loss: Literal["l1", "l2"] = "l1"
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0, le=1)
    lr_halve_at: int = Field(100, ge=1)
    betas: tuple[float, float] = (0.9, 0.999)
    val_every: int = Field(1, ge=1)
    patience: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"cnn.betas={list(self.betas)}: each must be in [0, 1)")
        return self


class EvalParams(_Section):
    crop_border: int = Field(4, ge=0)


class MlflowParams(_Section):
    experiment: str = Field("srcore", min_length=1)


class Params(_Section):
    seed: int = Field(42, ge=0)
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    cnn: CnnParams = CnnParams()
    eval: EvalParams = EvalParams()
    mlflow: MlflowParams = MlflowParams()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem is one SrcoreError naming the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SrcoreError(f"{path}: params file not found. Run from the project root "
                          "(where params.yaml is) or pass --params PATH.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise SrcoreError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SrcoreError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise SrcoreError(f"{path}: invalid params:\n" + _describe(err)) from None


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling against params.yaml)")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key} = {e.get('input')!r}: {msg}")
    return "\n".join(lines)
