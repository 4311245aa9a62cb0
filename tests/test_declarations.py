"""dvc.yaml is the one source of truth for what each stage depends on: its deps list every module
the stage runs, its resume key changes with every param it declares, and it reads no other."""

import ast
import inspect
import re

import pytest
import yaml

from srcore.cli import app
from srcore.config import load_params
from srcore.errors import SrcoreError
from srcore.tracking import flatten
from stages.declared import declared_view, run_key

from conftest import REPO, write_params

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_module(stage: str) -> str:
    """stages/X.py that the stage's command runs (the CLI imports it by name). The walk starts
    there: srcore/__main__.py and srcore/cli.py only hand the stage its params file, and as deps
    they would re-run every stage whenever any command's options (upscale's, say) change."""
    command = re.fullmatch(r"exec python -m srcore (\S+)", DVC[stage]["cmd"])[1]
    callback = next(c.callback for c in app.registered_commands
                    if (c.name or c.callback.__name__) == command)
    return "stages/" + re.search(r"from stages import (\w+)", inspect.getsource(callback))[1] + ".py"


def imported_files(path: str) -> set[str]:
    """Every srcore/stages module that `path` imports, anywhere in the file, transitively
    (package __init__ files hold docstrings only and are left out)."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in ast.walk(ast.parse((REPO / current).read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                file = name.replace(".", "/") + ".py"
                if name.split(".")[0] in ("srcore", "stages") and (REPO / file).is_file():
                    todo.append(file)
    return seen


@pytest.mark.parametrize("stage", list(DVC))
def test_deps_list_exactly_the_modules_the_stage_runs(stage):
    code_deps = {d for d in DVC[stage]["deps"] if d.endswith(".py")}
    runs = imported_files(stage_module(stage))
    assert runs - code_deps == set(), f"{stage}: add these to its deps in dvc.yaml"
    assert code_deps - runs == set(), f"{stage}: it does not run these; remove them from its deps"


def leaf_keys(stage: str) -> list[str]:
    declared = DVC[stage].get("params", [])
    keys = flatten(load_params(REPO / "params.yaml").model_dump())
    return [k for k in keys if any(k == d or k.startswith(d + ".") for d in declared)]


OTHER = {"data.lq_kernel": "area", "model.skip": "none", "train.device": "cpu",
         "train.precision": "fp32", "cnn.loss": "l2", "gan.loss": "triad",
         "gan.schedule": "joint", "gan.perceptual.net": "vgg19",
         "gan.perceptual.layers": ["conv1_1", "conv2_2", "conv3_3", "conv4_3", "conv5_3"],
         "gan.perceptual.activation": "post", "gan.perceptual.criterion": "l2", "train.nproc": 2, "data.patch_size": 68,
         "cnn.lr_halve_at": [50], "gan.g_steps": 60, "train.checkpoint_every": 25,
         "train.log_every": 5, "train.num_workers": 1, "train.channels_last": True,
         "train.cuda_graphs": False}


def changed(key: str, value):
    """A different value that params validation still accepts."""
    if key in OTHER:
        return OTHER[key]
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return value / 2
    if isinstance(value, int):
        return value + 1
    if isinstance(value, (list, tuple)):
        return [changed(key, value[0])] + list(value[1:])
    raise AssertionError(f"{key}: say in OTHER what to change it to")


TRAINING = ["train_cnn", "pretrain_disc", "train_gan"]


@pytest.mark.parametrize("stage", TRAINING)
def test_each_declared_param_changes_the_resume_key(tmp_path, monkeypatch, stage):
    """A changed declared param must start the stage afresh: its key is what resuming checks."""
    monkeypatch.setattr("stages.declared.dep_digest", lambda dep, stage: "same contents")
    base = load_params(REPO / "params.yaml")
    _, values = declared_view(base, stage)
    key = run_key(stage, values)
    checked = 0
    for dotted in leaf_keys(stage):
        overrides = {dotted.replace(".", "__"): changed(dotted, values[dotted])}
        try:
            params = load_params(write_params(tmp_path, **overrides))
        except SrcoreError as err:
            assert dotted == "data.scale", err  # the only param with a single allowed value
            continue
        _, new_values = declared_view(params, stage)
        assert run_key(stage, new_values) != key, f"{stage}: changing {dotted} kept the key"
        checked += 1
    assert checked >= len(leaf_keys(stage)) - 1


def test_the_key_changes_with_a_dep_and_only_with_declared_params(tmp_path, monkeypatch):
    contents = {"value": "a"}
    monkeypatch.setattr("stages.declared.dep_digest", lambda dep, stage: contents["value"])
    _, values = declared_view(load_params(REPO / "params.yaml"), "pretrain_disc")
    key = run_key("pretrain_disc", values)
    contents["value"] = "b"
    assert run_key("pretrain_disc", values) != key
    undeclared = load_params(write_params(tmp_path, gan__lr=0.5))  # pretrain_disc: not its param
    assert declared_view(undeclared, "pretrain_disc")[1] == values


def test_a_stage_cannot_read_a_param_it_does_not_declare():
    params, values = declared_view(load_params(REPO / "params.yaml"), "pretrain_disc")
    assert params.gan.betas == (0.9, 0.999) and params.disc.lr > 0
    assert params.mlflow.experiment == "srcore"  # where runs are recorded: every stage
    assert "gan.betas" in values and "gan.lr" not in values
    with pytest.raises(SrcoreError, match="stage pretrain_disc reads gan.lr, which its params "
                                          "in dvc.yaml do not list"):
        params.gan.lr
