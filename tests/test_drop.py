"""`python -m srcore drop NAME...` on real DVC experiments (`dvc exp run check_params`, the
cheapest stage) and real MLflow runs made by the stages' own tracking code."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import copy_repo, run_cli

pytestmark = pytest.mark.slow  # two `dvc exp run`s and a logged model: ~30 s on 2 cores

# what a stage does in MLflow (srcore.tracking), for the plain `dvc repro` of the committed
# baseline (first: a plain repro joins the newest parent of its commit and params, an
# experiment's too), then experiments a and b: a parent run, two stage runs, a registered
# generator each
RUNS = textwrap.dedent("""
    import os, torch
    from srcore.tracking import log_generator, stage_run
    for name in (None, "a", "b"):
        if name:
            os.environ["DVC_EXP_NAME"] = name
        else:
            os.environ.pop("DVC_EXP_NAME", None)
        for stage in ("split", "train_cnn"):
            with stage_run(stage, "srcore", {"seed": 1}) as mlflow:
                if stage == "train_cnn":
                    log_generator(mlflow, torch.nn.Conv2d(3, 3, 1), "srcore-cnn")
""")


def user_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    for role in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{role}_NAME", "srcore tests")
        env.setdefault(f"GIT_{role}_EMAIL", "tests@srcore.invalid")
    return env


def sh(*args, root, env):
    result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    env = user_env(root)
    for name, seed in (("a", 1), ("b", 2)):
        sh(sys.executable, "-m", "dvc", "exp", "run", "-q", "-n", name, "-S", f"seed={seed}",
           "check_params", root=root, env=env)
    sh("git", "checkout", "--", "params.yaml", "dvc.lock", root=root, env=env)  # HEAD's again
    sh(sys.executable, "-c", RUNS, root=root, env=env)
    return root, env


def dvc_names(root, env) -> set[str]:
    from srcore.drop import dvc_experiments

    return set(dvc_experiments(root))


def tracked(root) -> dict:
    """{dvc_experiment tag: (lifecycle stages of its runs, model versions, active logged models)}."""
    import mlflow
    from mlflow.entities import ViewType

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("srcore").experiment_id
    found = {}
    for run in client.search_runs([exp], run_view_type=ViewType.ALL):
        stages, versions, logged = found.setdefault(run.data.tags["dvc_experiment"],
                                                    ([], [], []))
        run_id = run.info.run_id
        stages.append(run.info.lifecycle_stage)
        versions += client.search_model_versions(f"run_id = '{run_id}'")
        logged += client.search_logged_models([exp], filter_string=f"source_run_id = '{run_id}'")
    return {tag: (sorted(s), len(v), len(m)) for tag, (s, v, m) in found.items()}


def model_folders(root, tag: str) -> list[Path]:
    """The folders of the logged models of the runs tagged dvc_experiment=tag (one each)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("srcore").experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.dvc_experiment = '{tag}'")
    found = [Path(urlparse(model.artifact_location).path) for run in runs
             for model in client.search_logged_models(
                 [exp], filter_string=f"source_run_id = '{run.info.run_id}'")]
    assert len(found) == 1
    return found


def test_unknown_names_change_nothing_and_the_known_are_named(repo):
    root, env = repo
    before = tracked(root)
    assert before["a"] == before["b"] == (["active"] * 3, 1, 1)
    for name, said in (("nope", "no experiment nope in DVC or MLflow (one queued and not yet run: "
                              "`dvc queue remove NAME`)"),
                       ("master", "master: a git branch, tag or commit, not a DVC experiment"),
                       ("workspace", "'workspace' is the workspace, not an experiment")):
        out = run_cli("drop", "a", name, cwd=root, env=env, check=False)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"error: {said}")
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        if name != "workspace":
            assert out.stderr.endswith("nothing deleted. Known experiments: a, b\n")
    assert dvc_names(root, env) == {"a", "b"}
    assert tracked(root) == before


def test_the_workspaces_experiment_is_refused(repo):
    root, env = repo
    from srcore.drop import dvc_experiments

    # its files, as `dvc exp apply b` or `dvc exp run -n b` leave them (apply would also check
    # out the outputs of stages this copy never ran)
    sh("git", "checkout", dvc_experiments(root)["b"], "--", "params.yaml", "dvc.lock",
       root=root, env=env)
    try:
        out = run_cli("drop", "b", cwd=root, env=env, check=False)
    finally:
        sh("git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock", root=root, env=env)
    assert out.returncode == 2
    assert out.stderr.startswith("error: the workspace holds b's results (its dvc.lock)")
    assert dvc_names(root, env) == {"a", "b"}


def test_dry_run_deletes_nothing(repo):
    root, env = repo
    before = tracked(root)
    out = run_cli("drop", "--dry-run", "a", cwd=root, env=env).stdout
    assert out == ("a: would delete the DVC experiment, 3 MLflow run(s), 1 model version(s), "
                   "1 logged model(s)\ndry run: nothing deleted\n")
    assert dvc_names(root, env) == {"a", "b"}
    assert tracked(root) == before


def test_drop_forgets_the_experiment_in_dvc_and_mlflow_and_keeps_the_others(repo):
    root, env = repo
    before = tracked(root)
    models = {name: model_folders(root, name) for name in ("a", "b")}
    out = run_cli("drop", "a", cwd=root, env=env).stdout
    assert out.startswith("a: deleted the DVC experiment, 3 MLflow run(s), 1 model version(s), "
                          "1 logged model(s)\n")
    assert "dvc gc --workspace --all-branches --all-experiments" in out
    assert dvc_names(root, env) == {"b"}
    assert sh(sys.executable, "-m", "dvc", "exp", "ls", "-A", "--name-only", root=root,
              env=env).split() == ["b"]
    after = tracked(root)
    assert after["a"] == (["deleted"] * 3, 0, 0)
    assert after["b"] == before["b"] and after["workspace (dvc repro)"] == \
        before["workspace (dvc repro)"] == (["active"] * 3, 1, 1)
    # the mlflow gc line it prints, run as printed, in a shell without MLFLOW_TRACKING_URI
    # (srcore's default store): a's runs and model files are gone, b's kept
    gc = [line for line in out.splitlines() if line.strip().startswith("mlflow gc ")]
    assert len(gc) == 1 and f"--backend-store-uri sqlite:///{root / 'mlflow.db'}" in gc[0]
    plain = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}
    assert all(folder.is_dir() for folder in models["a"] + models["b"])
    sh("bash", "-c", gc[0], root=root, env=plain)
    after_gc = tracked(root)
    assert "a" not in after_gc and after_gc["b"] == before["b"]
    assert not any(folder.exists() for folder in models["a"])
    assert all(folder.is_dir() for folder in models["b"])
    # gone from DVC already (`dvc exp remove`): drop still forgets its MLflow runs
    sh(sys.executable, "-m", "dvc", "exp", "remove", "b", root=root, env=env)
    out = run_cli("drop", "b", cwd=root, env=env).stdout
    assert out.startswith("b: deleted 3 MLflow run(s), 1 model version(s), 1 logged model(s) "
                          "(DVC has no such experiment)\n")
    assert tracked(root)["b"] == (["deleted"] * 3, 0, 0)
    out = run_cli("drop", "a", cwd=root, env=env, check=False)
    assert out.returncode == 2 and out.stderr.endswith("Known experiments: none\n")


def test_outside_a_dvc_project_is_one_line(tmp_path):
    out = run_cli("drop", "a", cwd=tmp_path, check=False)
    assert out.returncode == 2
    assert out.stderr == (f"error: {tmp_path.resolve()} is not a DVC project (no .dvc folder): "
                          "run drop in the project's root\n")


def test_help_lists_drop(tmp_path):
    out = run_cli("--help", cwd=tmp_path).stdout
    assert "drop" in out
    assert "--dry-run" in run_cli("drop", "--help", cwd=tmp_path).stdout
