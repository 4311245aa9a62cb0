"""Typed, validated params: the schema of params.yaml.

Every stage and command loads params through `load_params`, so a typo (`data.sorce`), a wrong
type or an out-of-range value is reported once, naming the key, before any work starts.
No key has a default here: params.yaml is the one place where values live.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      ValidationError, model_validator)

from srcore.choices import DEVICES, PRECISIONS
from srcore.errors import SrcoreError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# the discriminator's four stride-2 4x4 convs (padding 1) take 16 -> 8 -> 4 -> 2 -> 1 pixels; a
# 12-pixel crop reaches 1 pixel after three and the fourth fails
MIN_PATCH = 16


class DataParams(_Section):
    source: Literal["sample", "div2k", "dir"]
    dir: str
    hr_max_side: int = Field(ge=16)
    scale: Literal[4]  # the generator is 4x, as in the study
    lq_kernel: Literal["bicubic", "area", "bilinear", "nearest"]
    patch_size: int = Field(ge=1)  # at least MIN_PATCH: checked below, with the reason
    patches_per_image: int = Field(ge=1, le=10_000)  # crops of each image per pass
    hflip: bool
    vflip: bool
    rot90: bool

    @model_validator(mode="after")
    def _check(self):
        # dvc.yaml names data.dir as a dependency of download, whatever the source: DVC
        # reads it as a path, without expanding ~, and cannot run with it empty
        if not self.dir.strip():
            raise ValueError("data.dir is empty: it must name a folder (the default is "
                             "data/photos), e.g. -S data.dir=/path/to/images")
        if self.dir.startswith("~"):
            raise ValueError(f"data.dir={self.dir!r} starts with ~, which DVC does not expand: "
                             "write the full path, e.g. -S data.dir=/home/you/photos")
        if self.patch_size < MIN_PATCH:
            raise ValueError(f"data.patch_size={self.patch_size} is below {MIN_PATCH}: the "
                             "discriminator halves a crop with each of its four strided convs "
                             f"(disc.widths) and needs at least {MIN_PATCH} pixels")
        if self.patch_size % self.scale:
            raise ValueError(f"data.patch_size={self.patch_size} must be divisible by "
                             f"data.scale={self.scale}")
        # both are HR pixels: downsample leaves no side of an image longer than hr_max_side
        if self.patch_size > self.hr_max_side:
            raise ValueError(f"data.patch_size={self.patch_size} is larger than data.hr_max_side="
                             f"{self.hr_max_side}, the longest side an HR image keeps: no image "
                             "could give a training crop; lower data.patch_size or raise "
                             "data.hr_max_side")
        return self


class SplitParams(_Section):
    train: int = Field(ge=1)
    val: int = Field(ge=1)
    test: int = Field(ge=1)
    min_per_split: int = Field(ge=1)


class ModelParams(_Section):
    rrdb: int = Field(ge=1, le=64)
    # far above any RRDBNet in use (ESRGAN and the report: 64 and 32): a typo, not a design
    features: int = Field(ge=4, le=1024)
    growth: int = Field(ge=4, le=1024)
    skip: Literal["bicubic", "none"]


def _auto_or_count(value):
    if value == "auto" or (type(value) is int and 0 <= value <= 1024):
        return value
    raise ValueError("use auto or a whole number from 0 to 1024")


def _auto_or_switch(value):
    if value == "auto" or type(value) is bool:
        return value
    raise ValueError("use auto, true or false")


class TrainParams(_Section):
    device: Literal[DEVICES]
    precision: Literal[PRECISIONS]
    num_workers: Annotated[Any, AfterValidator(_auto_or_count)]
    channels_last: Annotated[Any, AfterValidator(_auto_or_switch)]
    compile: bool
    cuda_graphs: Annotated[Any, AfterValidator(_auto_or_switch)]
    nproc: int = Field(ge=1, le=1024)
    log_every: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)
    ema_decay: float = Field(gt=0, lt=1)


def _within(key: str, value: int, run: str, steps: int) -> None:
    if value > steps:
        raise ValueError(f"{key}={value} is longer than its run ({run} = {steps}): it would "
                         f"never come round; make it at most {steps}")


def _betas_ok(betas: tuple[float, float]) -> tuple[float, float]:
    if not all(0 <= b < 1 for b in betas):
        raise ValueError("each must be in [0, 1)")
    return betas


def _two_values(value):
    # checked first, or a list of one value is reported as "betas.1: missing"
    if isinstance(value, (list, tuple)) and len(value) != 2:
        raise ValueError("needs two values, e.g. [0.9, 0.999]")
    return value


Betas = Annotated[tuple[float, float], BeforeValidator(_two_values), AfterValidator(_betas_ok)]


class CnnParams(_Section):
    loss: Literal["l1", "l2"]
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1, le=4096)  # the report: 16
    lr: float = Field(gt=0, le=1)
    lr_halve_at: list[int]
    betas: Betas
    val_every: int = Field(ge=1)
    patience: int = Field(ge=1)
    early_stop_warmup: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self):
        _within("cnn.val_every", self.val_every, "cnn.steps", self.steps)
        _within("cnn.patience", self.patience, "cnn.steps", self.steps)
        if self.early_stop_warmup >= self.steps:
            raise ValueError(f"cnn.early_stop_warmup={self.early_stop_warmup} must be below "
                             f"cnn.steps={self.steps}: early stopping could never fire")
        for step in self.lr_halve_at:
            if not 1 <= step < self.steps:
                raise ValueError(f"cnn.lr_halve_at: step {step} is outside the run (1 to "
                                 f"cnn.steps-1 = {self.steps - 1}); remove it or lengthen "
                                 "the run")
        twice = sorted({step for step in self.lr_halve_at if self.lr_halve_at.count(step) > 1})
        if twice:  # the scheduler would halve it once for each mention: a quarter, an eighth
            raise ValueError(f"cnn.lr_halve_at lists step {twice[0]} more than once; each step "
                             "halves the learning rate once: list it once")
        return self


class DiscParams(_Section):
    pretrain_steps: int = Field(ge=1)
    lr: float = Field(gt=0, le=1)
    widths: list[int] = Field(min_length=4, max_length=4)
    hidden: list[int] = Field(min_length=2, max_length=2)

    @model_validator(mode="after")
    def _check(self):
        if min(self.widths + self.hidden) < 1:
            raise ValueError("widths and hidden sizes must be positive")
        return self


VGG_CONVS_PER_BLOCK = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


class PerceptualParams(_Section):
    net: Literal["vgg16", "vgg19"]
    layers: list[Annotated[str, Field(pattern=r"^conv[1-5]_[1-4]$")]] = Field(min_length=1)
    layer_weights: list[Annotated[float, Field(ge=0)]]
    activation: Literal["pre", "post"]
    criterion: Literal["l1", "l2"]

    @model_validator(mode="after")
    def _check(self):
        if len(self.layer_weights) != len(self.layers):
            raise ValueError(f"gan.perceptual.layer_weights has {len(self.layer_weights)} "
                             f"values for {len(self.layers)} gan.perceptual.layers: give one "
                             "weight per layer")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"gan.perceptual.layers {self.layers} names a layer twice")
        if sum(self.layer_weights) == 0:
            raise ValueError("gan.perceptual.layer_weights are all 0: the perceptual loss "
                             "would be off (set gan.weights.perceptual to 0 for that)")
        convs = VGG_CONVS_PER_BLOCK[self.net]
        for layer in self.layers:
            block, conv = int(layer[4]), int(layer[6])
            if conv > convs[block - 1]:
                raise ValueError(f"gan.perceptual.layers: {self.net} has no {layer} (its five "
                                 f"blocks have {', '.join(map(str, convs))} convs)")
        return self


class GanWeights(_Section):
    perceptual: float = Field(ge=0)
    adversarial: float = Field(ge=0)
    l1: float = Field(ge=0)


class GanParams(_Section):
    loss: Literal["dual", "triad"]
    schedule: Literal["alternate", "joint"]
    rounds: int = Field(ge=1)
    g_steps: int = Field(ge=1)
    d_steps: int = Field(ge=1)
    batch_size: int = Field(ge=1, le=4096)  # the report: 16
    lr: float = Field(gt=0, le=1)
    betas: Betas
    relativistic: bool
    val_every: int = Field(ge=1)
    perceptual: PerceptualParams
    weights: GanWeights

    @property
    def steps(self) -> int:
        """Optimizer steps of the whole GAN phase (a joint step trains G and D on one batch)."""
        per_round = self.g_steps if self.schedule == "joint" else self.g_steps + self.d_steps
        return self.rounds * per_round

    @model_validator(mode="after")
    def _check(self):
        _within("gan.val_every", self.val_every, "the GAN's steps", self.steps)
        used = ("perceptual", "adversarial", "l1") if self.loss == "triad" else (
            "perceptual", "adversarial")
        if not any(getattr(self.weights, term) for term in used):
            raise ValueError(f"gan.weights of the {self.loss} loss ({', '.join(used)}) are all 0: "
                             "the generator would not learn; give one of them a positive weight")
        return self


class EvalParams(_Section):
    crop_border: int = Field(ge=0)


class MlflowParams(_Section):
    experiment: str = Field(min_length=1)


class Params(_Section):
    # strict: `seed: true` is not 1; at most 2**32 - 1, what every seeded generator accepts
    seed: int = Field(ge=0, le=2**32 - 1, strict=True)
    data: DataParams
    split: SplitParams
    model: ModelParams
    train: TrainParams
    cnn: CnnParams
    disc: DiscParams
    gan: GanParams
    eval: EvalParams
    mlflow: MlflowParams

    @model_validator(mode="after")
    def _check(self):
        runs = {"cnn.steps": self.cnn.steps, "disc.pretrain_steps": self.disc.pretrain_steps,
                "the GAN's steps": self.gan.steps}
        for key in ("log_every", "checkpoint_every"):
            for run, steps in runs.items():
                _within(f"train.{key}", getattr(self.train, key), run, steps)
        uneven = [f"{key}={batch}" for key, batch in (("cnn.batch_size", self.cnn.batch_size),
                                                       ("gan.batch_size", self.gan.batch_size))
                  if batch % self.train.nproc]
        if uneven:
            raise ValueError(f"{' and '.join(uneven)}: each is the global batch, shared by "
                             f"train.nproc={self.train.nproc} processes: make it a multiple "
                             "of it")
        return self


def load_params(path: str | Path = "params.yaml", overrides: Sequence[str] = ()) -> Params:
    """Read and validate params.yaml; every problem is one SrcoreError naming the key.
    overrides: KEY=VALUE items (the value read as YAML), as `dvc exp run -S` takes them."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise SrcoreError(f"{path}: is a folder; pass the params file (--params PATH), e.g. "
                          f"{path / 'params.yaml'}")
    if not path.is_file():
        raise SrcoreError(f"{path}: params file not found. Run from the project root "
                          "(where params.yaml is) or pass --params PATH.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SrcoreError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); save it as UTF-8") from None
    try:
        _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise SrcoreError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SrcoreError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides:
        _override(raw, item, path)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        changed = f" with -S {' -S '.join(overrides)}" if overrides else ""
        raise SrcoreError(f"{path}{changed}: invalid params:\n" + _describe(err)) from None


def _override(raw: dict, item: str, path: Path) -> None:
    """Set one -S KEY=VALUE in the params read from path; the key must be one of path's."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SrcoreError(f"-S {item}: write KEY=VALUE, e.g. -S model.rrdb=15")
    *sections, leaf = key.split(".")
    node = raw
    for section in sections:
        node = node.get(section) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        raise SrcoreError(f"-S {key}: no such key in {path} (check the spelling against it)")
    try:
        node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise SrcoreError(f"-S {item}: the value is not valid YAML "
                          f"({getattr(err, 'problem', None) or err})") from None


def _refuse_duplicate_keys(node, path: Path, key: str = "", seen: set | None = None) -> None:
    """PyYAML has no option to refuse a key given twice (it keeps the last), so the parsed
    nodes are walked for them before they are turned into dicts. A node that aliases refer
    to (*name) is walked once: nine levels of aliases ten wide in 1 KB (a "billion laughs")
    stand for 10^9 nodes."""
    import yaml

    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value in node.value:
            name = f"{key}{key_node.value}"
            line = key_node.start_mark.line + 1
            if name in lines:
                raise SrcoreError(f"{path}: {name} defined twice (lines {lines[name]} and "
                                  f"{line}); keep one")
            lines[name] = line
            _refuse_duplicate_keys(value, path, f"{name}.", seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, path, f"{key}{i}.", seen)


_STEPS = "(training counts optimizer steps, not epochs: see README)"
RENAMED = {"data.lr_kernel": "data.lq_kernel", "cnn.epochs": f"cnn.steps {_STEPS}",
           "disc.pretrain_epochs": f"disc.pretrain_steps {_STEPS}",
           "gan.epochs_per_round": f"gan.g_steps and gan.d_steps {_STEPS}",
           "gan.perceptual.layer": "gan.perceptual.layers, a list, with one weight per layer "
                                   "in gan.perceptual.layer_weights"}


_SHORT = reprlib.Repr()  # a few items of each list or dict: whole strings up to 200 characters
_SHORT.maxstring = _SHORT.maxother = 200


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden" and key in RENAMED:
            lines.append(f"  {key}: renamed, now {RENAMED[key]}")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling against params.yaml)")
        elif e["type"] == "missing":
            lines.append(f"  {key}: missing (every key of the repository's params.yaml is needed)")
        elif not e["loc"] or isinstance(e.get("input"), dict):
            # a check across keys or sections: its message names them
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] in ("list_type", "tuple_type"):  # -S cnn.lr_halve_at=4375
                msg += f"; write a list in brackets, quoted for the shell: -S '{key}=[...]'"
            # shortened: a value made of YAML aliases may stand for 10^9 items
            lines.append(f"  {key} = {_SHORT.repr(e.get('input'))}: {msg}")
    return "\n".join(lines)
