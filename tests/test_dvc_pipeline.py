"""`dvc repro` end to end in a temporary copy of the repo, as a user runs it."""

import json
import sqlite3
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from srcore.io import write_png

from conftest import children, copy_repo, process_ended, write_params
from images import photo

pytestmark = pytest.mark.slow  # dvc repro in a copy of the project: minutes

# 7 training photos x 2 crops = 14 per pass: with 2 processes, 7 each (no padding)
TINY = {"model__rrdb": 1, "model__features": 8, "model__growth": 8, "cnn__steps": 2,
        "cnn__lr_halve_at": [1], "cnn__val_every": 1, "cnn__patience": 1,
        "cnn__early_stop_warmup": 1, "data__patches_per_image": 2, "data__patch_size": 32,
        "disc__pretrain_steps": 1, "disc__widths": [8, 16, 16, 16], "disc__hidden": [16, 8],
        "gan__rounds": 1, "gan__g_steps": 1, "gan__d_steps": 1, "gan__val_every": 1,
        "train__log_every": 1, "train__checkpoint_every": 1,
        # the CPU on any machine: torchrun's 2 processes (one GPU each on CUDA) and the
        # 1-process comparison must not depend on whether this machine has a GPU
        "train__device": "cpu"}


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                   cwd=root, check=True)


def dvc(*args, cwd, env):
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    # a project that has never run: without the committed baseline, whose split and baseline
    # scores DVC would otherwise (rightly) reuse instead of running those stages
    git(root, "rm", "-rq", "dvc.lock", "metrics")
    write_params(root, **TINY)
    git(root, "commit", "-qam", "tiny params, no baseline")
    return root, user_env()


def user_env() -> dict:
    # `python` in dvc.yaml must be this interpreter; MLflow uses the default store at the root
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # `dvc exp run` commits experiments: give git an identity on machines without one
    for role in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{role}_NAME", "srcore tests")
        env.setdefault(f"GIT_{role}_EMAIL", "tests@srcore.invalid")
    return env


def test_dag_shows_the_data_stages(repo):
    root, env = repo
    dag = dvc("dag", "--dot", cwd=root, env=env)
    for edge in ('"download" -> "downsample"', '"downsample" -> "split"'):
        assert edge in dag


def test_repro_split_and_pretrained_then_nothing_to_do(repo):
    root, env = repo
    dvc("repro", "split", "pretrained", cwd=root, env=env)
    split = json.loads((root / "data/split.json").read_text())
    assert split["counts"] == {"train": 7, "val": 2, "test": 2}
    assert (root / "models/pretrained/alexnet.pt").is_file()
    assert (root / "mlflow.db").is_file() and (root / "dvc.lock").is_file()
    again = dvc("repro", "split", "pretrained", cwd=root, env=env)
    assert "didn't change" in again or "up to date" in again
    for stage in ("download", "downsample", "split", "pretrained"):
        assert f"Running stage '{stage}'" not in again
    status = dvc("status", "split", "pretrained", cwd=root, env=env)
    assert "up to date" in status


@pytest.mark.parametrize("setting, said", [
    ("data.hr_max_side=-5", "data.hr_max_side"),
    # a value that only some machines run (TINY trains on the CPU, with or without a GPU)
    ("train.precision=fp16", "train.precision=fp16 needs a CUDA GPU")])
def test_a_bad_param_stops_before_dvc_removes_any_output(repo, setting, said):
    """`dvc exp run -S` with a bad value for a stage that has run: the check_params stage
    refuses it before DVC removes that stage's outputs to re-run it."""
    root, env = repo
    before = sorted(p.name for p in (root / "data/hr").iterdir())
    params = (root / "params.yaml").read_bytes()
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-S", setting],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    # DVC leaves the bad value there, and git's index taking a file of the same length (auto
    # -> fp16) for unchanged: `git checkout` would restore nothing. README's way back:
    subprocess.run("git show HEAD:params.yaml > params.yaml", shell=True, cwd=root, check=True)
    assert (root / "params.yaml").read_bytes() == params
    assert result.returncode != 0 and said in result.stdout + result.stderr
    assert re.findall(r"Running stage '(\w+)'", result.stdout) == ["check_params"]
    assert sorted(p.name for p in (root / "data/hr").iterdir()) == before
    assert any((root / "data/raw").iterdir()) and any((root / "models/pretrained").iterdir())
    assert "up to date" in dvc("status", "split", "pretrained", cwd=root, env=env)


def test_train_cnn_then_an_experiment_that_skips_the_data_stages(repo):
    root, env = repo
    dvc("repro", "train_cnn", cwd=root, env=env)
    assert (root / "models/cnn.pt").is_file()
    assert not (root / "models/cnn_last.pt").exists()  # done: of no use, and of this workspace
    metrics = json.loads((root / "metrics/train_cnn.json").read_text())
    assert metrics["steps_run"] == 2 and "val_psnr_y" in metrics
    rows = (root / "metrics/train_cnn.csv").read_text().splitlines()
    assert rows[0] == "step,train_loss,lr" and len(rows) == 3
    rows = (root / "metrics/train_cnn_val.csv").read_text().splitlines()
    assert rows[0].startswith("step,psnr_y") and len(rows) == 3
    with sqlite3.connect(root / "mlflow.db") as db:
        runs = db.execute("select r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                          "where t.key = 'stage' and t.value = 'train_cnn'").fetchall()
    assert runs == [("FINISHED",)]
    git(root, "add", "-A")
    git(root, "commit", "-qm", "baseline")

    out = dvc("exp", "run", "-S", "cnn.loss=l2", cwd=root, env=env)
    assert "Running stage 'train_cnn'" in out
    for stage in ("download", "downsample", "split"):
        assert f"Running stage '{stage}'" not in out
    # the training summary is not a headline metric: README's command names it
    diff = dvc("metrics", "diff", "--json", "--targets", "metrics/train_cnn.json", cwd=root,
               env=env)
    changed = json.loads(diff)["metrics/train_cnn.json"]
    assert "val_psnr_y" in changed and changed["val_psnr_y"]["old"] is not None
    assert changed["val_psnr_y"]["new"] is not None
    shown = dvc("exp", "show", "--csv", cwd=root, env=env)
    assert "l2" in shown and "l1" in shown


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stage stops with DVC "
                    "by Linux's parent-death signal")
def test_a_killed_dvc_exp_run_resumes_when_run_again(tmp_path):
    """`kill` of `dvc exp run` (DVC does not pass the SIGTERM on) stops its training stage,
    which saves its state; the same `dvc exp run` then resumes it: the state is no DVC output,
    so DVC neither restores an older one over it nor caches it."""
    import signal
    import time

    from srcore.models.checkpoint import load_checkpoint

    root, env = copy_repo(tmp_path), user_env()
    # DVC runs the commands through $SHELL -c, or /bin/sh -c where SHELL is unset (as in CI);
    # dash, Debian's sh, stays between DVC and the command unless the command is exec'ed
    env["SHELL"] = "/bin/sh"
    git(root, "rm", "-rq", "dvc.lock", "metrics")
    write_params(root, **TINY)
    dvc("repro", "train_cnn", cwd=root, env=env)  # a baseline whose dvc.lock DVC restores from
    git(root, "add", "-A")
    git(root, "commit", "-qm", "tiny params, trained")
    run = [sys.executable, "-m", "dvc", "exp", "run", "train_cnn", "-S", "cnn.steps=300",
           "-S", "cnn.val_every=100", "-S", "cnn.patience=300"]
    csv = root / "metrics/train_cnn.csv"
    csv.unlink()  # the baseline's rows would pass for steps of the new run before it starts
    log = tmp_path / "first.txt"  # not a pipe: the stage holds DVC's output open while it runs
    first = subprocess.Popen(run, cwd=root, env=env, stdout=log.open("w"),
                             stderr=subprocess.STDOUT)
    while not (csv.is_file() and len(csv.read_text().splitlines()) > 5):  # a few steps done
        assert first.poll() is None, log.read_text()
        time.sleep(0.05)
    stage = children(first.pid)
    assert len(stage) == 1  # the stage's command, run by DVC itself: no shell in between
    assert Path(f"/proc/{stage[0]}/cmdline").read_bytes().split(b"\0")[1:4] == [
        b"-m", b"srcore", b"train-cnn"]
    os.kill(stage[0], signal.SIGSTOP)  # mid-way however fast this machine trains
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=120)
    os.kill(stage[0], signal.SIGCONT)
    deadline = time.time() + 120
    while not process_ended(stage[0]):
        assert time.time() < deadline, "the stage trained on after DVC ended"
        time.sleep(0.1)
    output = log.read_text()
    assert (root / "models/cnn_last.pt").is_file(), output
    saved = load_checkpoint(root / "models/cnn_last.pt")["step"]
    assert 5 <= saved < 300, output
    name = output.split("Reproducing experiment '")[1].split("'")[0]
    out = dvc("exp", "run", "-n", name, "train_cnn", cwd=root, env=env)  # as the hint says
    assert f"resuming from models/cnn_last.pt after step {saved}" in out
    assert json.loads((root / "metrics/train_cnn.json").read_text())["steps_run"] == 300
    assert "cnn_last.pt" not in (root / "dvc.lock").read_text()
    assert name in dvc("exp", "show", "--csv", cwd=root, env=env)
    with sqlite3.connect(root / "mlflow.db") as db:  # one run, under the experiment's parent
        runs = db.execute("select r.status, p.name from runs r join tags t on t.run_uuid = "
                          "r.run_uuid and t.key = 'stage' and t.value = 'train_cnn' join tags "
                          "u on u.run_uuid = r.run_uuid and u.key = 'mlflow.parentRunId' join "
                          "runs p on p.run_uuid = u.value").fetchall()
    assert ("FINISHED", name) in runs and len(runs) == 2  # and the baseline's
    # done, the state is deleted: the same params again elsewhere (after `dvc exp apply`, or
    # `git checkout . && dvc checkout`) train afresh instead of taking it up as finished
    assert not (root / "models/cnn_last.pt").exists()


def test_gan_stages_and_precise_params(repo):
    root, env = repo
    dvc("repro", "train_gan", cwd=root, env=env)
    for name in ("disc.pt", "gan.pt", "gan_disc.pt"):
        assert (root / "models" / name).is_file()
    assert not list((root / "models").glob("*_last.pt"))  # the stages are done
    # each phase in its own file: no empty cells that a plot would draw as 0
    for name in ("train_gan_g.csv", "train_gan_d.csv"):
        header, *body = [r.split(",") for r in (root / "metrics" / name).read_text().splitlines()]
        filled = [c for c in header if c != "g_l1"]  # g_l1: the triad loss only
        assert body and all(row[header.index(c)] for row in body for c in filled), name
    for name in ("train_gan.png", "pretrain_disc.png", "train_cnn.png"):
        assert (root / "metrics" / name).read_bytes()[:4] == b"\x89PNG"
    gan = json.loads((root / "metrics/train_gan.json").read_text())
    assert gan["steps_run"] == 2 and {"val_psnr_y", "val_lpips", "cnn_val_lpips"} <= set(gan)
    assert json.loads((root / "metrics/pretrain_disc.json").read_text())["steps_run"] == 1
    with sqlite3.connect(root / "mlflow.db") as db:
        stages = dict(db.execute("select t.value, r.status from runs r join tags t "
                                 "on t.run_uuid = r.run_uuid where t.key = 'stage'"))
        setups = db.execute("select t.value, count(p.key) from runs r join tags t on t.run_uuid"
                            " = r.run_uuid and t.key = 'stage' left join params p on p.run_uuid "
                            "= r.run_uuid and p.key in ('device', 'precision_used', 'processes')"
                            " where t.value in ('train_cnn', 'pretrain_disc', 'train_gan') "
                            "group by r.run_uuid").fetchall()
    assert stages["pretrain_disc"] == "FINISHED" and stages["train_gan"] == "FINISHED"
    # each training's run says where and how it ran
    assert {s for s, _ in setups} == {"train_cnn", "pretrain_disc", "train_gan"}
    assert all(count == 3 for _, count in setups), setups

    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["gan"]["loss"] = "triad"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    status = dvc("status", cwd=root, env=env)
    (root / "params.yaml").write_text(original)
    assert "train_gan:" in status
    for stage in ("train_cnn:", "pretrain_disc:", "split:", "evaluate_baselines:"):
        assert stage not in status


def digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_changed_param_retrains_instead_of_resuming_a_finished_state(repo):
    """gan.betas shapes the discriminator's pretraining, eval.crop_border the CNN's validation:
    changing either re-runs the stage from scratch, and changing it back gives the same bytes."""
    root, env = repo
    original = (root / "params.yaml").read_text()
    for key, value, stage, output in (("gan.betas", [0.5, 0.99], "pretrain_disc", "models/disc.pt"),
                                      ("eval.crop_border", 0, "train_cnn",
                                       "metrics/train_cnn_val.csv")):
        dvc("repro", stage, cwd=root, env=env)
        before = digest(root / output)
        params = yaml.safe_load(original)
        section, name = key.split(".")
        params[section][name] = value
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        out = dvc("repro", stage, cwd=root, env=env)
        assert f"Running stage '{stage}'" in out  # its state deleted once done: from scratch
        assert "resuming" not in out and digest(root / output) != before, key
        (root / "params.yaml").write_text(original)
        dvc("repro", stage, cwd=root, env=env)
        assert digest(root / output) == before, key


def test_evaluation_and_two_experiments_side_by_side(repo):
    root, env = repo
    dvc("repro", cwd=root, env=env)
    scores = json.loads((root / "metrics/evaluate_details.json").read_text())
    differences = scores.pop("differences")
    headline = json.loads((root / "metrics/evaluate.json").read_text())
    assert headline["cnn"] == {k: scores["cnn"][k] for k in ("psnr_y", "ssim_y", "lpips")}
    assert headline["gan_vs_cnn"]["lpips"] == {
        k: differences["gan_vs_cnn"]["lpips"][k] for k in ("mean", "low", "high")}
    assert headline["interval"] == "min-max (fewer than 5 images)"  # how low and high were made
    # dvc metrics show lists the headline alone: five methods x 3 scores, 2 x 2 x 3 differences
    shown = json.loads(dvc("metrics", "show", "--json", cwd=root, env=env))
    files = shown[0]["data"] if isinstance(shown, list) else next(iter(shown.values()))["data"]
    assert list(files) == ["metrics/evaluate.json"]
    assert list(scores) == ["nearest", "bilinear", "bicubic", "cnn", "gan"]
    for method in scores.values():
        assert set(method) == {"psnr", "ssim", "psnr_y", "ssim_y", "lpips"}
    assert scores["nearest"]["psnr"] < scores["bicubic"]["psnr"]
    rows = (root / "metrics/evaluate_per_image.csv").read_text().splitlines()
    assert rows[0] == "method,image,psnr,ssim,psnr_y,ssim_y,lpips" and len(rows) == 1 + 5 * 2
    # the paired differences are those of the per-image rows; 2 test images: min and max
    by = {(r.split(",")[0], r.split(",")[1]): r.split(",") for r in rows[1:]}
    images = [image for method, image in by if method == "cnn"]
    gains = [float(by["cnn", i][4]) - float(by["bicubic", i][4]) for i in images]
    cnn_gain = differences["cnn_vs_bicubic"]["psnr_y"]
    assert cnn_gain["interval"] == "min-max (fewer than 5 images)"
    assert (cnn_gain["low"], cnn_gain["high"]) == pytest.approx((min(gains), max(gains)), abs=1e-9)
    assert set(differences["gan_vs_cnn"]) == {"psnr_y", "lpips"}
    assert (root / "metrics/comparison.png").stat().st_size > 0
    git(root, "add", "-A")
    git(root, "commit", "-qm", "evaluated")

    # a strong L1 term: the tiny GAN's 1 step per phase must move G differently from dual's
    out = dvc("exp", "run", "-n", "triad", "-S", "gan.loss=triad", "-S", "gan.weights.l1=1",
              cwd=root, env=env)
    assert "Running stage 'train_gan'" in out and "Running stage 'evaluate'" in out
    for stage in ("evaluate_baselines", "train_cnn", "pretrain_disc"):
        assert f"Running stage '{stage}'" not in out
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=root, env=env))
    assert "gan" in str(diff["metrics/evaluate.json"])
    shown = dvc("exp", "show", "--csv", cwd=root, env=env)
    assert "triad" in shown and "dual" in shown
    plots = json.loads(dvc("plots", "diff", "--json", cwd=root, env=env))["data"]
    assert {"cnn_train_loss", "cnn_val_psnr_y", "gan_g_perceptual", "gan_d_outputs",
            "gan_val_lpips", "metrics/comparison.png", "metrics/train_cnn.png",
            "metrics/train_gan.png", "metrics/pretrain_disc.png"} <= set(plots)
    # the project's smooth template (.dvc/plots/smooth.json): smoothed from the start, where
    # DVC's own starts its slider at 0.001, which draws the raw line again
    smooth = plots["cnn_train_loss"][0]["content"]["params"]
    assert {"name": "smooth", "value": 0.2} in [{k: p[k] for k in ("name", "value")}
                                                 for p in smooth]


def _get(url, data=None):
    import urllib.request

    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def test_mlflow_ui_shows_every_stage_run(repo):
    """The README's `mlflow ui` command, on loopback, against the store the pipeline filled."""
    import socket
    import time

    root, env = repo
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", "sqlite:///mlflow.db",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        # its workers took 14 s to answer on an idle 2-core VM, 33 s with 3 busy processes
        deadline = time.time() + 300
        while True:
            try:
                experiment = _get(f"{api}/experiments/get-by-name?experiment_name=srcore")
                break
            except OSError:  # refused; or accepted before a worker answers (a timeout)
                assert time.time() < deadline and server.poll() is None, "mlflow ui did not start"
                time.sleep(1)
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = _get(f"{api}/runs/search", {"experiment_ids": [experiment_id],
                                           "max_results": 500})["runs"]
        by_stage, parents = {}, {}
        for run in runs:
            tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            if "stage" in tags:
                by_stage.setdefault(tags["stage"], []).append((run, tags))
            else:
                parents[run["info"]["run_name"]] = (run, tags)
        assert set(by_stage) >= {"download", "downsample", "split", "pretrained", "train_cnn",
                                 "pretrain_disc", "train_gan", "evaluate_baselines", "evaluate"}
        # one parent run per pipeline execution, the stages as its children
        assert all("mlflow.parentRunId" in tags for runs in by_stage.values() for _, tags in runs)
        triad, tags = parents["triad"]
        assert tags["changed_params"] == "gan.loss=triad, gan.weights.l1=1"
        assert tags["changed.gan.loss"] == "triad" and tags["dvc_experiment"] == "triad"
        params = {p["key"]: p["value"] for p in triad["data"]["params"]}
        assert params["gan.loss"] == "triad" and params["model.rrdb"] == "1"
        metrics = {m["key"] for m in triad["data"].get("metrics", [])}
        assert {"gan_lpips", "gan_vs_cnn_lpips_mean"} <= metrics  # compared beside the params
        # the experiment's parent, named by DVC (plain `dvc repro`s in its workspace follow)
        l2 = [run for run, tags in parents.values() if tags["changed_params"] == "cnn.loss=l2"
              and tags["dvc_experiment"] != "workspace (dvc repro)"]
        assert len(l2) == 1 and l2[0]["info"]["run_name"] != "triad"

        def children(parent):
            found = _get(f"{api}/runs/search", {
                "experiment_ids": [experiment_id], "max_results": 100,
                "filter": f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'"})["runs"]
            return sorted(run["info"]["run_name"] for run in found)

        # named after stage and pipeline: the compare view tells two experiments' runs apart
        assert children(triad) == ["evaluate (triad)", "train_gan (triad)"]
        l2_name = l2[0]["info"]["run_name"]
        assert f"train_cnn ({l2_name})" in children(l2[0])
        assert f"split ({l2_name})" not in children(l2[0])
        plain = [tags for name, (run, tags) in parents.items() if name not in ("triad",)
                 and tags["dvc_experiment"] == "workspace (dvc repro)"]
        assert any(tags["changed_params"] == "none" for tags in plain)
        # each training's generator is a registered model version, tagged with its experiment
        versions = _get(f"{api}/model-versions/search?filter=name%3D%27srcore-gan%27")
        experiments = {t["value"] for v in versions["model_versions"] for t in v.get("tags", [])
                       if t["key"] == "dvc_experiment"}
        assert "triad" in experiments
        assert _get(f"{api}/registered-models/get?name=srcore-cnn")["registered_model"]
        default = _get(f"{api}/experiments/get?experiment_id=0")["experiment"]
        assert default["lifecycle_stage"] == "deleted"  # the UI opens on srcore's experiment
        run, tags = by_stage["train_cnn"][0]
        run_id = run["info"]["run_id"]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["model.rrdb"] == "1" and len(tags["git_commit"]) == 40
        history = _get(f"{api}/metrics/get-history?run_id={run_id}&metric_key=train_loss")
        assert [m["step"] for m in history["metrics"]] == [1, 2]
        files = {f["path"] for f in _get(f"{api}/artifacts/list?run_id={run_id}")["files"]}
        assert {"cnn.pt", "grids"} <= files
        # each training's summary (metrics/<stage>.json) beside its per-step series
        logged = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert logged["summary/steps_run"] == 2 and "summary/gain_over_bicubic_db" in logged
        assert "val_psnr_y" in logged and "best_val_psnr_y" not in logged
        for stage in ("pretrain_disc", "train_gan"):
            metrics = {m["key"] for m in by_stage[stage][0][0]["data"]["metrics"]}
            assert {"summary/steps_run", "summary/wall_time_s"} <= metrics, stage
        evaluate_id = by_stage["evaluate"][0][0]["info"]["run_id"]
        files = {f["path"] for f in _get(f"{api}/artifacts/list?run_id={evaluate_id}")["files"]}
        assert "comparison.png" in files
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_two_training_processes_reproduce_the_one_process_artifacts(repo):
    """`dvc exp run -S train.nproc=2` re-trains through torchrun (2 CPU processes, gloo)."""
    root, env = repo
    git(root, "reset", "-q", "--hard", "HEAD")  # the evaluated 1-process baseline
    dvc("checkout", "--force", cwd=root, env=env)
    before = {p.name: p.stat().st_mtime for p in (root / "models").glob("*.pt")}
    out = dvc("exp", "run", "-n", "two-processes", "-S", "train.nproc=2", cwd=root, env=env)
    for stage in ("train_cnn", "pretrain_disc", "train_gan", "evaluate"):
        assert f"Running stage '{stage}'" in out
    assert out.count("x 2 process(es)") == 3 and "Running stage 'evaluate_baselines'" not in out
    after = {p.name: p.stat().st_mtime for p in (root / "models").glob("*.pt")}
    assert after.keys() == before.keys()
    assert all(after[name] > before[name] for name in ("cnn.pt", "disc.pt", "gan.pt"))
    diff = json.loads(dvc("metrics", "diff", "--json", "--all", cwd=root, env=env))
    scores = diff["metrics/evaluate.json"]
    for key in ("cnn.psnr_y", "gan.psnr_y", "cnn.lpips", "gan.lpips"):
        old, new = scores[key]["old"], scores[key]["new"]
        assert new == pytest.approx(old, abs=2e-3), key


def test_the_committed_baseline_is_this_code_and_params(tmp_path):
    """dvc.lock and metrics/ of the default run are committed (README, "Results"): in a fresh
    clone `dvc status` may report outputs missing from the empty cache, and nothing else."""
    root = copy_repo(tmp_path)
    assert (root / "dvc.lock").is_file(), "commit the default run's dvc.lock"
    env = user_env()
    status = json.loads(dvc("status", "--json", cwd=root, env=env))
    outs = {out if isinstance(out, str) else next(iter(out))
            for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values()
            for out in stage.get("outs", [])}
    problems = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                problems.append(f"{stage}: {change}")
                continue
            for kind, paths in change.items():
                problems += [f"{stage}: {kind} {path}: {state}" for path, state in paths.items()
                             if not (state in ("deleted", "not in cache") and path in outs)]
    assert not problems, ("the committed dvc.lock is not the default run of this code: run "
                          "`dvc repro` and commit dvc.lock and metrics/\n" + "\n".join(problems))
    committed = json.loads((root / "metrics/evaluate.json").read_text())
    assert {"bicubic", "cnn", "gan", "cnn_vs_bicubic", "gan_vs_cnn"} <= set(committed)


def test_a_photo_added_to_data_dir_re_runs_download_and_a_vanished_folder_keeps_the_copies(
        tmp_path):
    """DVC tracks the files in data.dir (a dependency of download in dvc.yaml), not only its
    name: a user who adds a photo and re-runs gets it, not the old copies."""
    root, folder = copy_repo(tmp_path / "repo"), tmp_path / "photos"
    for i in range(5):
        write_png(folder / f"p{i}.png", photo(64, 64, seed=i))
    write_params(root, data__source="dir", data__dir=str(folder))
    env = user_env()
    raw = root / "data/raw"
    dvc("repro", "download", cwd=root, env=env)
    assert len(list(raw.glob("*.png"))) == 5
    assert "up to date" in dvc("status", "download", cwd=root, env=env)

    write_png(folder / "p5.png", photo(64, 64, seed=5))
    assert "modified" in dvc("status", "download", cwd=root, env=env)
    assert "Running stage 'download'" in dvc("repro", "download", cwd=root, env=env)
    assert len(list(raw.glob("*.png"))) == 6

    # the folder gone (moved, an unplugged disk): DVC stops naming it, the copies stay
    shutil.rmtree(folder)
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", "download"], cwd=root,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and str(folder) in result.stdout + result.stderr
    assert len(list(raw.glob("*.png"))) == 6
