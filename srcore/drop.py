"""`python -m srcore drop NAME...`: forget DVC experiments in DVC and in MLflow at once.

Each NAME is checked before anything changes: a DVC experiment of the project (any baseline
commit), or a name that runs in the tracking store are tagged with (dvc_experiment), say of an
experiment `dvc exp remove` dropped already. Then DVC's experiments go (`dvc exp remove`), and in
the tracking store every active run tagged with the name (the pipeline's parent run and its
stage runs), the model versions registered from them and the models they logged are deleted as
the MLflow UI deletes them: marked deleted, their files left to `mlflow gc`, as the rest of the
DVC cache is left to `dvc gc`. Neither gc runs here: both free more than the named experiments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from srcore.errors import SrcoreError
from srcore.tracking import (PLAIN_REPRO, check_server, committed_file, git, is_server,
                             quiet_store_logs, read_params, store_failure)

DEFAULT_EXPERIMENT = "srcore"  # params.yaml's mlflow.experiment, where no params.yaml says


@dataclass
class Found:
    """What dropping one name deletes: its DVC experiment's commit (None: DVC has none), and in
    MLflow the run ids, model versions (name, version) and logged model ids."""

    name: str
    dvc_rev: str | None = None
    runs: list[str] = field(default_factory=list)
    versions: list[tuple[str, str]] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)


def dvc_experiments(root: Path) -> dict[str, str]:
    """{name: commit} of the project's DVC experiments, of every baseline commit."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        raise SrcoreError(f"{root} is not a DVC project (no .dvc folder): run drop in the "
                          "project's root")
    try:
        with Repo(str(root)) as repo:
            found = repo.experiments.ls(all_commits=True)
    except (DvcException, OSError) as err:
        raise SrcoreError(f"cannot list the experiments of {root}: {err}") from None
    return {name: rev for names in found.values() for name, rev in names}


def _store(uri: str, root: Path):
    """An MlflowClient of the tracking store, or None where the project's default store does not
    exist yet (no run was ever tracked: nothing to delete, and no empty store made)."""
    if "MLFLOW_TRACKING_URI" not in os.environ and not (root / "mlflow.db").is_file():
        return None
    check_server(uri)
    import mlflow

    quiet_store_logs()
    return mlflow.MlflowClient(tracking_uri=uri)


def _unusable(uri: str, err: Exception) -> SrcoreError:
    return SrcoreError(f"MLflow tracking store {uri!r} is not usable ({store_failure(err)}): "
                       "nothing was deleted there; fix or unset MLFLOW_TRACKING_URI")


def mlflow_experiments(root: Path, revs) -> list[str]:
    """The MLflow experiment names the stages used: params.yaml's mlflow.experiment, in the
    workspace and in each of the experiments' commits (`-S mlflow.experiment=...`)."""
    texts = [(root / "params.yaml").read_text(encoding="utf-8")
             if (root / "params.yaml").is_file() else None]
    texts += [committed_file(root, rev, "params.yaml") for rev in revs if rev]
    names = {read_params(text).get("mlflow.experiment") for text in texts}
    names = sorted(n for n in names if isinstance(n, str) and n)
    return names or [DEFAULT_EXPERIMENT]


def tagged_runs(client, experiment_ids: list[str]) -> dict[str, list[str]]:
    """{dvc_experiment tag: run ids} of the active runs. Filtered here, not by MLflow: its filter
    strings cannot quote a name holding a quote, which DVC allows (bob's-try)."""
    runs: dict[str, list[str]] = {}
    token = None
    while experiment_ids:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
        for run in page:
            tag = run.data.tags.get("dvc_experiment")
            if tag:
                runs.setdefault(tag, []).append(run.info.run_id)
        token = page.token
        if not token:
            break
    return runs


def _holds(root: Path, rev: str) -> bool:
    """Whether the workspace holds experiment `rev`'s results: its dvc.lock is the
    experiment's, which HEAD's is not (after `dvc exp run` or `dvc exp apply`)."""
    lock = root / "dvc.lock"
    here = lock.read_text(encoding="utf-8") if lock.is_file() else None
    return here is not None and here == committed_file(root, rev, "dvc.lock") \
        and here != committed_file(root, "HEAD", "dvc.lock")


def find(root: Path, names: list[str], uri: str):
    """(client, [Found per name]) after checking every name; raises SrcoreError, having changed
    nothing, if any name is not one to drop."""
    for name in names:
        if name in ("workspace", PLAIN_REPRO):
            raise SrcoreError(f"{name!r} is the workspace, not an experiment: drop removes "
                              "experiments of `dvc exp show` by name")
    experiments = dvc_experiments(root)
    try:
        client = _store(uri, root)
        ids, tagged = [], {}
        if client is not None:
            for exp in mlflow_experiments(root, experiments.values()):
                found = client.get_experiment_by_name(exp)
                if found is not None:
                    ids.append(found.experiment_id)
            tagged = tagged_runs(client, ids)
    except SrcoreError:
        raise
    except Exception as err:  # MLflow raises many types for a bad store
        raise _unusable(uri, err) from None
    tagged.pop(PLAIN_REPRO, None)  # the committed baseline's and plain `dvc repro`'s runs
    unknown = [n for n in dict.fromkeys(names) if n not in experiments and n not in tagged]
    if unknown:
        known = ", ".join(sorted(set(experiments) | set(tagged))) or "none"
        others = [n for n in unknown if git(root, "rev-parse", "--verify", "--quiet",
                                             f"{n}^{{commit}}")]
        what = f"{', '.join(others)}: a git branch, tag or commit, not a DVC experiment; " \
            if others else ""
        rest = [n for n in unknown if n not in others]
        # a queued experiment that has not run has neither; DVC's queue removes it
        what += f"no experiment {', '.join(rest)} in DVC or MLflow (one queued and not yet " \
            "run: `dvc queue remove NAME`); " if rest else ""
        raise SrcoreError(f"{what}nothing deleted. Known experiments: {known}")
    for name in names:
        rev = experiments.get(name)
        if rev and _holds(root, rev):
            raise SrcoreError(
                f"the workspace holds {name}'s results (its dvc.lock): `dvc exp apply` an "
                "experiment you keep, or `git checkout . && dvc checkout`, then drop it; "
                "nothing deleted")
    found = []
    try:
        for name in dict.fromkeys(names):
            item = Found(name, experiments.get(name), tagged.get(name, []))
            for run_id in item.runs:
                item.versions += [(v.name, v.version) for v in
                                  client.search_model_versions(f"run_id = '{run_id}'")]
                item.logged += [m.model_id for m in client.search_logged_models(
                    ids, filter_string=f"source_run_id = '{run_id}'")]
            found.append(item)
    except Exception as err:
        raise _unusable(uri, err) from None
    return client, found


def remove_dvc(root: Path, names: list[str]) -> None:
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    if not names:
        return
    try:
        with Repo(str(root)) as repo:
            repo.experiments.remove(exp_names=names)
    except (DvcException, OSError) as err:
        raise SrcoreError(f"`dvc exp remove {' '.join(names)}` failed ({err}); nothing was "
                          "deleted in MLflow") from None


def delete_tracked(client, item: Found, uri: str) -> None:
    try:
        for name, version in item.versions:
            client.delete_model_version(name, version)
        for model_id in item.logged:
            client.delete_logged_model(model_id)
        for run_id in item.runs:
            client.delete_run(run_id)
    except Exception as err:
        raise _unusable(uri, err) from None


def gc_hints(uri: str) -> list[str]:
    # mlflow gc needs the tracking URI too: without it (and no MLFLOW_TRACKING_URI, as with
    # srcore's default store) MLflow 3.17 stops with "Tracking URL is not set"
    store = uri if not is_server(uri) else "<the server's --backend-store-uri>"
    server = " (on the server's machine)" if is_server(uri) else ""
    return ["To free their disk space (this frees whatever else is unreferenced too):",
            "  dvc gc --workspace --all-branches --all-experiments   # keeps what the "
            "workspace holds",
            f"  mlflow gc --backend-store-uri {store} --tracking-uri {uri}{server}"]


def drop(root: Path, names: list[str], uri: str, dry_run: bool = False) -> list[str]:
    """Drop the experiments `names`; the lines to print."""
    client, found = find(root, names, uri)
    verb = "would delete" if dry_run else "deleted"
    lines = []
    for item in found:
        what = "the DVC experiment, " if item.dvc_rev else ""
        lines.append(f"{item.name}: {verb} {what}{len(item.runs)} MLflow run(s), "
                     f"{len(item.versions)} model version(s), {len(item.logged)} logged "
                     "model(s)" + ("" if item.dvc_rev else " (DVC has no such experiment)"))
    if dry_run:
        return lines + ["dry run: nothing deleted"]
    remove_dvc(root, [item.name for item in found if item.dvc_rev])
    for item in found:
        delete_tracked(client, item, uri)
    return lines + gc_hints(uri)
