"""The report's five ablation tables, as Markdown, from the experiments DVC knows of.

`collect` reads `dvc exp show` (the workspace, HEAD and HEAD's experiments, queued ones too;
those of other commits ran other code: `experiments_elsewhere` counts them),
keeps the finished ones that have `metrics/evaluate.json`, and reads their scores from
`metrics/evaluate_details.json` (git keeps it in each experiment's commit: RGB PSNR and SSIM are
not headline metrics); `tables` picks a record per table row.
"""

from __future__ import annotations

import json
from pathlib import Path

from srcore.errors import SrcoreError
from srcore.tracking import committed_file, flatten

METHODS = ("nearest", "bilinear", "bicubic", "cnn", "gan")
SCORES = ("psnr", "ssim", "lpips", "psnr_y", "ssim_y")  # the column order of the tables
HEADLINE, DETAILS = "metrics/evaluate.json", "metrics/evaluate_details.json"
# the report's setup: what $REPORT in docs/reproducing-the-report.md sets (a test checks)
REPORT_SETUP = {
    "data.source": "div2k", "model.skip": "none", "data.patch_size": 128,
    "data.patches_per_image": 1, "cnn.lr": 1e-4, "cnn.steps": 8750, "cnn.lr_halve_at": [4375],
    "cnn.val_every": 44, "cnn.patience": 8750, "cnn.early_stop_warmup": 4375,
    "disc.pretrain_steps": 2188, "gan.g_steps": 2188, "gan.d_steps": 2188, "gan.lr": 1e-4,
    "gan.val_every": 44, "gan.perceptual.layers": ["conv5_3"],
    "gan.perceptual.layer_weights": [1.0], "gan.perceptual.criterion": "l2",
    "train.log_every": 44, "train.checkpoint_every": 440}
REFERENCES = ("defaults", "report")
# how a run is executed, not what it computes: never a difference between two rows
RUNTIME = ("mlflow.", "train.device", "train.num_workers", "train.channels_last",
           "train.compile", "train.cuda_graphs", "train.nproc")
# title, param, its variants, the evaluate.json method scored, row label
ABLATIONS = {
    1: ("RRDB blocks (CNN)", "model.rrdb", (2, 10, 15), "cnn", "CNN, {} RRDB"),
    2: ("pixel loss (CNN)", "cnn.loss", ("l1", "l2"), "cnn", "CNN, {}"),
    4: ("generator loss (GAN)", "gan.loss", ("dual", "triad"), "gan", "GAN, {}"),
    5: ("perceptual features (GAN)", "gan.perceptual.activation", ("pre", "post"), "gan",
        "GAN, {}-activation"),
}
# how the tables add a missing row: queued, each from the workspace as committed; a plain
# `dvc exp run` leaves its params in params.yaml, so the next command would inherit them
QUEUE = "dvc exp run --queue"
HEADER = "| method | PSNR | SSIM | LPIPS | PSNR-Y | SSIM-Y |\n|---|---:|---:|---:|---:|---:|"


def committed_params(repo: Path) -> dict:
    """The project's params.yaml as committed (HEAD; the file where git has none), flat, but
    RUNTIME: what its experiments are measured against."""
    import yaml

    shown = committed_file(repo, "HEAD", "params.yaml")
    path = Path(repo) / "params.yaml"
    text = shown if shown is not None else \
        path.read_text(encoding="utf-8") if path.is_file() else ""
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SrcoreError(f"{path} is not valid YAML ({err})") from None
    if not isinstance(params, dict):
        return {}  # no params.yaml: collect names what is missing
    return {k: v for k, v in flatten(params).items() if not k.startswith(RUNTIME)}


def reference(defaults: dict, name: str) -> dict:
    """The configuration each table's other rows are held at: the committed params, or the
    report's own setup. Rows are picked closest to it over all those params, so experiments
    of the sample setup and of the report's (both grids queued in one workspace) are not
    mixed, and what differs is named."""
    if name == "report":
        return {**defaults, **REPORT_SETUP, "gan.perceptual.activation": "post"}
    return dict(defaults)


def collect(repo: Path, keys) -> list[dict]:
    """One record {"name", "params", "evaluate"} per experiment or commit with evaluate metrics;
    params: the `keys` of params.yaml. A queued, running or failed experiment is a record with
    its `state` and no scores, which `tables` names.

    Identical records (the workspace after `dvc exp run` repeats that experiment) count once.
    """
    import dvc.api
    from dvc.exceptions import DvcException

    repo = Path(repo)
    if not (repo / ".dvc").is_dir():
        raise SrcoreError(f"{repo} is not a DVC project (no .dvc folder): pass --repo with the "
                          "project's root")
    try:
        rows = dvc.api.exp_show(repo=str(repo))
    except DvcException as err:
        raise SrcoreError(f"cannot list the experiments of {repo}: {err}") from err
    except OSError as err:  # DVC writes under .dvc/tmp even to list: a read-only checkout
        raise SrcoreError(f"cannot list the experiments of {repo}: `dvc exp show` could not "
                          f"write {err.filename or 'its files'} ({err.strerror or err}); run "
                          "report in a writable copy of the project") from None
    # the workspace last, so that a duplicate keeps the experiment's name
    rows.sort(key=lambda row: row.get("rev") == "workspace")
    records, seen = [], set()
    for row in rows:
        if row.get("State") not in (None, "Success"):  # queued, running or failed: git has
            # its baseline's metrics in its commit until it succeeds, so they are not its own
            records.append({"name": row.get("Experiment") or row.get("rev"),
                            "state": row["State"], "params": {}, "evaluate": {}})
            continue
        if not isinstance(_cell(row, HEADLINE, "cnn.psnr_y"), (int, float)):
            continue  # queued, failed, or a commit without metrics/evaluate.json
        details = _details(repo, row.get("rev"))
        evaluate = {m: s for m in METHODS if (s := _scores(details, m))}
        if not evaluate:
            continue
        params = {key: _plain(_cell(row, "params.yaml", key)) for key in keys}
        key = json.dumps([params, evaluate], sort_keys=True)
        if key not in seen:
            seen.add(key)
            differences = details.get("differences")
            records.append({"name": row.get("Experiment") or row.get("rev"),
                            "params": params, "evaluate": evaluate,
                            "differences": differences if isinstance(differences, dict) else {}})
    return records


def experiments_elsewhere(repo: Path) -> int:
    """How many experiments ran from commits other than HEAD (before a `git pull`, say):
    `collect` leaves them out, as they ran other code. 0 where DVC cannot tell: this only adds
    a note to tables already made."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as project:
            head = project.scm.get_rev()
            found = project.experiments.ls(all_commits=True)
    except (DvcException, OSError):
        return 0
    return sum(len(names) for base, names in found.items() if base != head)


def tables(records: list[dict], ref: dict, defaults: dict) -> str:
    """Markdown: tables 1-5 of the report; missing variants are named with their command.
    Rows are taken as close as the experiments allow to `ref` (see `reference`); commands
    give the -S options that lead from `defaults` (params.yaml's) to it."""
    unfinished = ", ".join(f"`{r['name']}` ({r['state'].lower()})" for r in records
                           if r.get("state"))
    unfinished = unfinished and (f"not finished, left out: {unfinished} (`dvc queue status`; "
                                 "`dvc queue logs NAME` says why one failed)")
    records = [r for r in records if r.get("evaluate")]
    if not records:
        raise SrcoreError("no experiment has metrics/evaluate.json yet: run `dvc repro`, or "
                          "queue the ablations and `dvc queue start` "
                          "(docs/reproducing-the-report.md), first"
                          + (f"; {unfinished}" if unfinished else ""))
    parts = ["Test split. PSNR and SSIM on RGB (the report's protocol), PSNR-Y and SSIM-Y on "
             "the Y channel with the border crop; LPIPS: lower is better.\n"]
    if unfinished:
        parts.append(f"Experiments {unfinished}.\n")
    varied = {spec[1] for spec in ABLATIONS.values()}
    if not any(set(_off_default(r, ref)) <= varied for r in records):
        parts.append("**No experiment has the reference configuration's setup yet**: every row "
                     "below comes from another setup, named in its label. Run the reference's "
                     "experiments (the commands under the tables, or the whole "
                     "queue: docs/reproducing-the-report.md), then report again.\n")
    for number in range(1, 6):
        if number == 3:
            parts.append(_cnn_vs_gan(records, ref, defaults))
        else:
            parts.append(_ablation(number, records, ref, defaults, *ABLATIONS[number]))
    return "\n".join(parts)


def _ablation(number, records, ref, defaults, title, key, variants, method, label) -> str:
    lines, missing = [f"## Table {number}: {title}", "", HEADER], []
    for value in variants:
        matches = [r for r in records if r["params"].get(key) == value and method in r["evaluate"]]
        if not matches:
            missing.append(value)
            continue
        best = min(matches, key=lambda r: len(_off_default(r, ref, key)))  # the first closest one
        lines.append(_row(label.format(value) + _note(_off_default(best, ref, key)),
                          best["evaluate"][method]))
    if missing:
        names = "; ".join(label.format(v) for v in missing)  # labels hold commas
        commands = "; ".join(f"`{QUEUE}{_setup(ref, defaults, key)} -S {key}={_cli(v)}`"
                             for v in missing)
        lines += ["", f"Missing: {names}. Add with {commands}, then `dvc queue start`."]
    return "\n".join(lines) + "\n"


def _cnn_vs_gan(records, ref, defaults) -> str:
    record = next((r for r in records if not _off_default(r, ref)), records[0])
    lines = ["## Table 3: CNN vs GAN", "", HEADER]
    for method in METHODS:
        if method in record["evaluate"]:
            lines.append(_row(method.upper() if method in ("cnn", "gan") else method,
                              record["evaluate"][method]))
    lines += _differences(record.get("differences") or {})
    off = _off_default(record, ref)
    lines += ["", f"From `{record['name']}`" + (
        f", not the reference configuration{_note(off)}: add it with "
        f"`{QUEUE}{_setup(ref, defaults, reset=off)}`, then `dvc queue start`." if off else ".")]
    return "\n".join(lines) + "\n"


def _differences(differences: dict) -> list[str]:
    """The paired differences evaluate measured (CNN - bicubic, GAN - CNN), with their interval:
    how sure table 3's two findings are."""
    cells = {label: {m: d for m, d in differences.get(pair, {}).items()
                     if isinstance(d, dict) and {"mean", "low", "high"} <= set(d)}
             for pair, label in (("cnn_vs_bicubic", "CNN - bicubic"), ("gan_vs_cnn", "GAN - CNN"))}
    known = [d for by_metric in cells.values() for d in by_metric.values()]
    if not known:
        return []
    digits = {"psnr_y": 2, "lpips": 3}
    lines = ["", "| difference | PSNR-Y (dB) | LPIPS |", "|---|---:|---:|"]
    for label, by_metric in cells.items():
        shown = [f"{d['mean']:+.{digits[m]}f} [{d['low']:+.{digits[m]}f}, "
                 f"{d['high']:+.{digits[m]}f}]{' *' if d.get('excludes_zero') else ''}"
                 if (d := by_metric.get(m)) else "n/a" for m in digits]
        lines.append(f"| {label} | {' | '.join(shown)} |")
    lines += ["", f"Mean of the per-image differences [{known[0].get('interval', 'interval')}, "
                  f"{known[0].get('images', '?')} images]; *: the interval leaves out 0 (min-max: "
                  "every image agrees in sign)."]
    return lines


def _row(label: str, scores: dict) -> str:
    cells = [_fmt(scores.get(s), 2 if s.startswith("psnr") else 4) for s in SCORES]
    return f"| {label} | " + " | ".join(cells) + " |"


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _off_default(record: dict, ref: dict, skip: str | None = None) -> dict:
    """The record's params that differ from the reference configuration, but `skip` and those
    the record's project does not have (None)."""
    return {k: record["params"].get(k) for k, v in ref.items()
            if k != skip and record["params"].get(k) not in (None, v)}


def _setup(ref: dict, defaults: dict, skip: str | None = None,
           reset: dict | None = None) -> str:
    """The -S options that turn params.yaml's defaults into the reference configuration, and
    set the params in `reset` back to it."""
    return "".join(f" -S {k}={_cli(v)}" for k, v in ref.items()
                   if k != skip and (defaults.get(k) != v or k in (reset or {})))


def _cli(value) -> str:
    """A value as `dvc exp run -S` takes it: lists without spaces ([conv5_3], [4375])."""
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _note(off: dict, named: int = 4) -> str:
    """What differs from the reference, for a row label: up to `named` params by name."""
    shown = [f"{k}={_cli(v)}" for k, v in off.items()]
    if len(shown) > named:  # another setup altogether (the sample run's against the report's)
        shown = shown[:named - 1] + [f"and {len(shown) - named + 1} more"]
    return f" ({', '.join(shown)})" if shown else ""


def _cell(row: dict, file: str, name: str):
    """exp_show's column: bare `name`, or `file:name` where another file has that name too."""
    return row.get(f"{file}:{name}", row.get(name))


def _details(repo: Path, rev: str | None) -> dict:
    """The row's metrics/evaluate_details.json: the workspace's file, or git's at `rev`."""
    if rev == "workspace":
        path = repo / DETAILS
        text = path.read_text() if path.is_file() else None
    else:
        text = committed_file(repo, rev, DETAILS)
    try:
        details = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return details if isinstance(details, dict) else {}


def _scores(details: dict, method: str) -> dict:
    values = details.get(method)
    if not isinstance(values, dict):
        return {}
    return {s: values[s] for s in SCORES if isinstance(values.get(s), (int, float))
            and not isinstance(values.get(s), bool)}


def _plain(value):
    """A param as params.yaml holds it; exp_show gives numbers as floats (10.0), lists and
    booleans and null as their text ("[300]", "['conv5_3']", "False", "None")."""
    import ast

    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (value.startswith("[") or value in ("True", "False", "None")):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value
