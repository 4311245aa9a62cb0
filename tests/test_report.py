import os
import subprocess
import sys

import pytest

from srcore.errors import SrcoreError
from srcore.report import collect, committed_params, reference, tables
from conftest import run_cli

METHODS = ("nearest", "bilinear", "bicubic", "cnn", "gan")
DEFAULTS = {"model.rrdb": 2, "cnn.loss": "l1", "gan.loss": "dual",
            "gan.perceptual.activation": "pre"}


def report_tables(records, name="defaults", defaults=DEFAULTS):
    return tables(records, reference(defaults, name), defaults)


def record(name, rrdb=2, loss="l1", gan_loss="dual", activation="pre"):
    """Fake scores that encode the params: cnn PSNR = 20 + rrdb (+0.5 for l2)."""
    cnn = 20 + rrdb + (0.5 if loss == "l2" else 0)
    gan = 18 + rrdb + (1 if gan_loss == "triad" else 0) + (0.25 if activation == "post" else 0)
    psnr = {"nearest": 15, "bilinear": 16, "bicubic": 17, "cnn": cnn, "gan": gan}
    return {"name": name,
            "params": {"model.rrdb": rrdb, "cnn.loss": loss, "gan.loss": gan_loss,
                       "gan.perceptual.activation": activation},
            "evaluate": {m: {"psnr": psnr[m], "ssim": 0.5, "psnr_y": psnr[m] + 1,
                             "ssim_y": 0.6, "lpips": 0.25} for m in METHODS}}


def test_tables_complete():
    records = [record("a"), record("b", rrdb=10), record("c", rrdb=15), record("d", loss="l2"),
               record("e", gan_loss="triad"), record("f", activation="post")]
    text = report_tables(records)
    for number in range(1, 6):
        assert f"## Table {number}:" in text
    assert "Missing" not in text and "not the default" not in text
    assert "| method | PSNR | SSIM | LPIPS | PSNR-Y | SSIM-Y |" in text
    assert "| CNN, 2 RRDB | 22.00 | 0.5000 | 0.2500 | 23.00 | 0.6000 |" in text
    assert "| CNN, 15 RRDB | 35.00 |" in text
    assert "| CNN, l2 | 22.50 |" in text
    assert "| GAN, triad | 21.00 |" in text
    assert "| GAN, pre-activation | 20.00 |" in text
    assert "| GAN, post-activation | 20.25 |" in text
    table3 = text.split("## Table 3")[1].split("## Table 4")[0]
    assert [line.split(" | ")[0] for line in table3.splitlines() if line.startswith("| ")][1:] \
        == ["| nearest", "| bilinear", "| bicubic", "| CNN", "| GAN"]
    assert "From `a`." in table3


def test_table_3_gives_the_paired_differences_with_their_intervals():
    """How sure the study's two findings are: evaluate's paired differences, with the kind of
    interval and the marks of those that leave out 0."""
    a = record("a")
    d = {"interval": "bootstrap 95%", "images": 20}
    a["differences"] = {
        "cnn_vs_bicubic": {"psnr_y": {**d, "mean": 0.3175, "low": 0.21, "high": 0.43,
                                      "excludes_zero": True},
                           "lpips": {**d, "mean": -0.0012, "low": -0.004, "high": 0.0015,
                                     "excludes_zero": False}},
        "gan_vs_cnn": {"lpips": {**d, "mean": -0.063, "low": -0.0758, "high": -0.0502,
                                 "excludes_zero": True}}}
    table3 = report_tables([a]).split("## Table 3")[1].split("## Table 4")[0]
    assert "| CNN - bicubic | +0.32 [+0.21, +0.43] * | -0.001 [-0.004, +0.002] |" in table3
    assert "| GAN - CNN | n/a | -0.063 [-0.076, -0.050] * |" in table3
    assert "[bootstrap 95%, 20 images]; *: the interval leaves out 0" in table3
    assert "| difference |" not in report_tables([record("b")])  # evaluate gave none


def test_tables_missing_variants_name_their_command():
    """Queued, as the doc's flow: run one after another, plain `dvc exp run`s would each start
    from the params the last one left in params.yaml (l2 after `-S cnn.loss=l2`)."""
    text = report_tables([record("x", rrdb=10, loss="l2")])
    assert "| CNN, 10 RRDB (cnn.loss=l2) | 30.50 |" in text
    assert "Missing: CNN, 2 RRDB; CNN, 15 RRDB." in text
    assert "`dvc exp run --queue -S model.rrdb=2`; `dvc exp run --queue -S model.rrdb=15`" in text
    assert "`dvc exp run --queue -S cnn.loss=l1`" in text
    assert "`dvc exp run --queue -S gan.loss=triad`" in text
    assert "`dvc exp run --queue -S gan.perceptual.activation=post`" in text
    assert ("From `x`, not the reference configuration (model.rrdb=10, cnn.loss=l2): add it "
            "with `dvc exp run --queue -S model.rrdb=2 -S cnn.loss=l1`, then `dvc queue start`.") \
        in text
    assert text.count("`dvc exp run") == text.count("`dvc exp run --queue") == 6


def test_the_reports_own_configuration_as_the_reference():
    """The report's setup queued: its GAN is post-activation, one table-5 variant is pre."""
    records = [record("a", activation="post"), record("b", rrdb=10, activation="post"),
               record("f", activation="pre")]
    table3 = report_tables(records, "report").split("## Table 3")[1].split("## Table 4")[0]
    assert "From `a`." in table3 and "| GAN | 20.25 |" in table3
    assert "From `f`." in report_tables(records).split("## Table 3")[1]  # params.yaml's defaults: pre


def test_the_reference_is_the_committed_params_without_runtime_settings(tmp_path):
    from conftest import REPO

    defaults = committed_params(REPO)
    assert defaults["model.rrdb"] == 2 and defaults["cnn.lr_halve_at"] == [300]
    assert "train.device" not in defaults and "mlflow.experiment" not in defaults
    assert defaults["train.precision"] == "auto" and defaults["gan.weights.l1"] == 0.01
    # the committed file, not the workspace's, which `dvc exp run` leaves changed
    (tmp_path / "params.yaml").write_text("model: {rrdb: 2}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(git + args, cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "params.yaml").write_text("model: {rrdb: 10}\n")
    assert committed_params(tmp_path) == {"model.rrdb": 2}


def test_the_report_setup_is_the_one_the_docs_queue():
    import re

    import yaml

    from srcore.report import REPORT_SETUP

    from conftest import REPO

    doc = (REPO / "docs/reproducing-the-report.md").read_text()
    def options(text):
        queued = {}
        for key, value in re.findall(r"-S '?(\S+?)=([^'\s]+)", text):
            value = yaml.safe_load(value)
            queued[key] = float(value) if isinstance(value, str) and value[0].isdigit() else value
        return queued

    assert options(re.search(r"REPORT=\((.*?)\)\n", doc, re.S)[1]) == REPORT_SETUP
    # README's one command: the same setup, post-activation
    readme = (REPO / "README.md").read_text()
    command = re.search(r"```bash\n(dvc exp run -S data.source=div2k .*?)```", readme, re.S)[1]
    assert options(command) == {**REPORT_SETUP, "gan.perceptual.activation": "post"}


def test_experiments_of_both_setups_are_not_mixed():
    """Both grids queued in one workspace: each reference takes its own setup's rows."""
    from srcore.report import REPORT_SETUP

    from conftest import REPO

    defaults = committed_params(REPO)
    sample = record("sample-10", rrdb=10)
    sample["params"] = {**defaults, **sample["params"]}
    div2k = record("div2k-10", rrdb=10, activation="post")
    div2k["params"].update(REPORT_SETUP)
    div2k["evaluate"]["cnn"]["psnr"] = 40.0
    for records in ([sample, div2k], [div2k, sample]):
        assert "| CNN, 10 RRDB | 30.00 |" in report_tables(records, "defaults", defaults)
        assert "| CNN, 10 RRDB | 40.00 |" in report_tables(records, "report", defaults)
    only_sample = report_tables([sample], "report", defaults)
    assert ("| CNN, 10 RRDB (data.source=sample, data.patch_size=64, "
            "data.patches_per_image=2, and 18 more) | 30.00 |") in only_sample
    assert ("Missing: CNN, 2 RRDB; CNN, 15 RRDB. Add with `dvc exp run --queue "
            "-S data.source=div2k -S data.patch_size=128 -S data.patches_per_image=1 "
            "-S model.skip=none") in only_sample
    assert "-S gan.perceptual.activation=post -S gan.perceptual.criterion=l2 -S model.rrdb=2`" \
        in only_sample
    assert "-S gan.perceptual.layers=[conv5_3] -S gan.perceptual.layer_weights=[1.0]" \
        in only_sample


def test_a_reference_no_experiment_has_is_said_once_at_the_top():
    """`--reference report` before any of the report's experiments ran: the sample rows are
    shown, labelled, under one line that says none is of the report's setup and what to do."""
    from srcore.report import REPORT_SETUP

    from conftest import REPO

    defaults = committed_params(REPO)
    sample = record("sample", loss="l2")
    sample["params"] = {**defaults, **sample["params"]}
    note = "No experiment has the reference configuration's setup yet"
    text = report_tables([sample], "report", defaults)
    assert text.count(note) == 1 and text.index(note) < text.index("## Table 1")
    assert "docs/reproducing-the-report.md" in text.split("## Table 1")[0]
    assert note not in report_tables([sample], "defaults", defaults)  # differs in cnn.loss only
    div2k = record("div2k-10", rrdb=10, activation="post")
    div2k["params"] = {**defaults, **div2k["params"], **REPORT_SETUP}
    assert note not in report_tables([sample, div2k], "report", defaults)
    tiny = record("tiny")
    tiny["params"] = {**defaults, **tiny["params"], "cnn.steps": 20}
    assert note in report_tables([tiny], "defaults", defaults)


def test_running_and_failed_experiments_are_named_not_scored(tmp_path, monkeypatch):
    """Until a queued experiment succeeds, `dvc exp show` gives it its baseline's metrics (git
    has the baseline's metrics/ in its commit): a running or failed `gan.loss=triad` made a
    "GAN, triad" row with the default GAN's scores. It is named as not finished instead."""
    import json

    import dvc.api

    (tmp_path / ".dvc").mkdir()
    (tmp_path / "metrics").mkdir()
    baseline = record("main")["evaluate"]
    (tmp_path / "metrics" / "evaluate_details.json").write_text(json.dumps(baseline))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run(git + args, cwd=tmp_path, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True,
                          capture_output=True, text=True).stdout.strip()

    def row(name, state, gan_loss="dual", cnn_loss="l1"):
        return {"Experiment": name, "rev": head, "State": state, "cnn.psnr_y": 23.0,
                "model.rrdb": 2, "cnn.loss": cnn_loss, "gan.loss": gan_loss,
                "gan.perceptual.activation": "pre"}

    rows = [row(None, None), row("tiny-triad", "Running", gan_loss="triad"),
            row("tiny-l2", "Failed", cnn_loss="l2"), row("later", "Queued", gan_loss="triad")]
    monkeypatch.setattr(dvc.api, "exp_show", lambda repo: [dict(r) for r in rows])
    text = report_tables(collect(tmp_path, DEFAULTS))
    assert "| GAN, triad" not in text and "| CNN, l2" not in text
    assert "Missing: GAN, triad." in text and "Missing: CNN, l2." in text
    assert ("Experiments not finished, left out: `tiny-triad` (running), `tiny-l2` (failed), "
            "`later` (queued) (`dvc queue status`; `dvc queue logs NAME` says why one "
            "failed).") in text
    rows[:] = rows[1:]  # no finished experiment at all
    with pytest.raises(SrcoreError, match=r"dvc repro.*; not finished, left out: `tiny-triad`"):
        report_tables(collect(tmp_path, DEFAULTS))


def test_a_read_only_project_is_one_error_naming_what_dvc_could_not_write(tmp_path,
                                                                         monkeypatch):
    """`dvc exp show` makes folders under .dvc/tmp even to list experiments: on a read-only
    checkout it raised an OSError (a traceback through DVC's queue); report names it."""
    import errno

    import dvc.api

    (tmp_path / ".dvc").mkdir()
    where = str(tmp_path / ".dvc" / "tmp" / "exps" / "celery")

    def read_only(repo):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), where)

    monkeypatch.setattr(dvc.api, "exp_show", read_only)
    with pytest.raises(SrcoreError) as err:
        collect(tmp_path, DEFAULTS)
    assert str(err.value) == (f"cannot list the experiments of {tmp_path}: `dvc exp show` could "
                              f"not write {where} (Read-only file system); run report in a "
                              "writable copy of the project")


def test_tables_without_metrics_raise():
    with pytest.raises(SrcoreError, match="dvc repro"):
        report_tables([])
    with pytest.raises(SrcoreError, match="dvc queue start"):
        report_tables([{"name": "workspace", "params": {}, "evaluate": {}}])


# The stage writes, from the params, the headline evaluate.json (what exp show lists) and
# evaluate_details.json, which git keeps in each experiment's commit, as the real pipeline does.
STAGE = """\
stages:
  evaluate:
    cmd: >-
      python -c "import json, yaml; p = yaml.safe_load(open('params.yaml'));
      r = p['model']['rrdb']; t = p['gan']['loss'] == 'triad';
      s = lambda v: dict(psnr=v, ssim=0.5, psnr_y=v + 1, ssim_y=0.6, lpips=0.25);
      d = dict(nearest=s(15), bilinear=s(16), bicubic=s(17), cnn=s(20 + r), gan=s(18 + r + t));
      h = {m: dict(psnr_y=v['psnr_y'], ssim_y=0.6, lpips=0.25) for m, v in d.items()};
      d['differences'] = dict(gan_vs_cnn=dict(lpips=dict(mean=-r / 100, low=-0.2, high=-0.001,
      interval='bootstrap 95%', images=5, excludes_zero=True)));
      json.dump(d, open('metrics/evaluate_details.json', 'w'));
      json.dump(h, open('metrics/evaluate.json', 'w'))"
    params: [data.dir, model.rrdb, cnn.loss, cnn.lr_halve_at, gan.loss, gan.relativistic,
             gan.perceptual.activation, gan.perceptual.layers, train.compile]
    outs:
      - metrics/evaluate_details.json: {cache: false}
    metrics:
      - metrics/evaluate.json: {cache: false}
"""
PARAMS = """\
data: {dir: null}
model: {rrdb: 2}
cnn: {loss: l1, lr_halve_at: [300]}
gan: {loss: dual, relativistic: false, perceptual: {activation: pre, layers: [conv5_3]}}
train: {compile: false}
"""


def test_report_from_dvc_experiments(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DVC_"))}
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))

    def sh(*args):
        subprocess.run(args, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)

    (tmp_path / "dvc.yaml").write_text(STAGE)
    (tmp_path / "params.yaml").write_text(PARAMS)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / ".gitkeep").write_text("")
    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "x")
    dvc = (sys.executable, "-m", "dvc", "exp", "run", "-q")
    sh(*dvc)
    sh(*dvc, "-S", "model.rrdb=10")
    sh(*dvc, "-S", "model.rrdb=2", "-S", "gan.loss=triad")  # the workspace now repeats this one

    records = collect(tmp_path, committed_params(tmp_path))
    # exp_show gives lists, booleans and null as text ("[300]"), read back as params.yaml has
    assert all((r["params"]["cnn.lr_halve_at"], r["params"]["gan.perceptual.layers"],
                r["params"]["gan.relativistic"], r["params"]["data.dir"])
               == ([300], ["conv5_3"], False, None) for r in records)
    assert sorted((r["params"]["model.rrdb"], r["params"]["gan.loss"]) for r in records) \
        == [(2, "dual"), (2, "triad"), (10, "dual")]
    assert all(r["name"] != "workspace" for r in records)

    out = tmp_path / "results.md"
    result = run_cli("report", "--repo", tmp_path, "--out", out, cwd=tmp_path, env=env)
    text = result.stdout
    assert out.read_text() == text
    assert "| CNN, 2 RRDB | 22.00 | 0.5000 | 0.2500 | 23.00 | 0.6000 |" in text
    assert "| CNN, 10 RRDB | 30.00 |" in text
    assert "Missing: CNN, 15 RRDB. Add with `dvc exp run --queue -S model.rrdb=15`, then " \
        "`dvc queue start`." in text
    assert "| GAN, dual | 20.00 |" in text and "| GAN, triad | 21.00 |" in text
    assert "| bicubic | 17.00 |" in text and "| GAN | 20.00 |" in text
    assert "| GAN - CNN | n/a | -0.020 [-0.200, -0.001] * |" in text  # evaluate's differences
    assert "`dvc exp run --queue -S cnn.loss=l2`" in text
    assert "`dvc exp run --queue -S gan.perceptual.activation=post`" in text
    assert "not the reference" not in text  # the committed default run is the reference
    assert all("(" not in line for line in text.splitlines() if line.startswith(("| CNN,",
                                                                                 "| GAN,")))
    assert "other commits" not in result.stderr
    # after a new commit (a `git pull`) those experiments ran other code: left out, and said
    (tmp_path / "notes.txt").write_text("x")
    sh("git", "add", "notes.txt")
    sh("git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "y")
    later = run_cli("report", "--repo", tmp_path, cwd=tmp_path, env=env)
    assert later.stderr.strip() == ("note: 3 experiment(s) of other commits are left out, as "
                                    "they ran other code (`dvc exp show -A` lists them)")


def test_report_out_that_is_a_folder_is_named_before_reading_experiments(tmp_path):
    (tmp_path / "metrics").mkdir()
    result = run_cli("report", "--out", "metrics", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--out metrics is a folder; give a file name, e.g. metrics/results.md" \
        in result.stderr, result.stderr


def test_the_docs_give_the_div2k_split_the_project_makes():
    """The report's 700 training images are 698 here: its 700/101/102 of 903 images scaled to
    DIV2K's 900 (the schedule's steps stay the report's)."""
    import yaml

    from srcore.data.prepare import split_counts

    from conftest import REPO

    split = yaml.safe_load((REPO / "params.yaml").read_text())["split"]
    wanted = {k: split[k] for k in ("train", "val", "test")}
    assert split_counts(800 + 100, wanted, split["min_per_split"]) \
        == {"train": 698, "val": 101, "test": 101}
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "698/101/101 for DIV2K's 800 + 100" in readme
    assert "On DIV2K (700 training" not in readme
