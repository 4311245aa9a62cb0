"""srcore as an installed package: the wheel and sdist hold what it needs, and the installed
copy (not editable) runs from any folder, as `srcore` and `python -m srcore`."""

import os
import subprocess
import sys
import tarfile
import zipfile

import pytest
import torch

from conftest import REPO, copy_repo
from images import photo


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel, sdist) built from a copy of the repo's files (no build outputs left here)."""
    base = tmp_path_factory.mktemp("dist")
    source = copy_repo(base / "src")
    out = base / "out"
    names = []
    for build in ("build_wheel", "build_sdist"):  # one process each: setuptools keeps state
        code = (f"import sys, pathlib, setuptools.build_meta as b; "
                f"pathlib.Path(sys.argv[2]).write_text(b.{build}(sys.argv[1]))")
        subprocess.run([sys.executable, "-c", code, str(out), str(base / "name")], cwd=source,
                       capture_output=True, check=True)  # setuptools' log would fill stdout
        names.append((base / "name").read_text())
    wheel, sdist = names
    return out / wheel, out / sdist


def tracked(*folders: str) -> set[str]:
    files = subprocess.run(["git", "ls-files", *folders], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    return {f for f in files if f.endswith(".py")}


def test_the_wheel_holds_the_code_and_the_srcore_command(dists):
    from srcore import __version__

    wheel, _ = dists
    assert wheel.name.startswith(f"srcore-{__version__}-")  # one version, srcore.__version__
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    assert tracked("srcore", "stages") <= names
    assert not [n for n in names if not n.startswith(("srcore/", "stages/", "srcore-"))]
    assert "[console_scripts]\nsrcore = srcore.__main__:run" in entry_points


def test_the_sdist_holds_no_tests_that_cannot_run(dists):
    _, sdist = dists
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert tracked("srcore", "stages") <= names and {"pyproject.toml", "README.md"} <= names
    assert not [n for n in names if n.startswith("tests/")]


def test_the_installed_package_runs_from_any_folder(dists, tmp_path):
    """Installed with pip (no project around it): --help by both names and an upscale, and
    nothing is written into the installed package."""
    from srcore.models.checkpoint import save_generator
    from srcore.models.rrdb import RRDBNet
    from srcore.io import write_png

    wheel, _ = dists
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--no-index", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)
    before = sorted(p for p in site.rglob("*") if "__pycache__" not in p.parts)
    anywhere = tmp_path / "anywhere"
    anywhere.mkdir()
    torch.manual_seed(0)
    save_generator(anywhere / "g.pt", RRDBNet(rrdb=1, features=8, growth=4), step=0)
    write_png(anywhere / "a.png", photo(12, 16))
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, not this checkout

    def run(*args):
        result = subprocess.run(list(args), cwd=anywhere, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result

    assert "upscale" in run(str(site / "bin" / "srcore"), "--help").stdout
    code = "import srcore, sys; print(srcore.__file__)"
    assert run(sys.executable, "-c", code).stdout.startswith(str(site))
    run(sys.executable, "-m", "srcore", "upscale", "a.png", "-o", "out", "--model", "g.pt")
    assert (anywhere / "out" / "a_x4.png").is_file()
    assert sorted(p for p in site.rglob("*") if "__pycache__" not in p.parts) == before


def test_the_tests_refuse_an_installed_copy_of_the_code(tmp_path):
    """After a non-editable install the tests would test the installed copy, not the edits
    here: they stop at once and say so."""
    import shutil

    site = tmp_path / "site"
    for name in ("srcore", "stages"):
        shutil.copytree(REPO / name, site / name)
    out = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider",
                          "tests/test_csvlog.py"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(site)}, timeout=300)
    assert out.returncode == 4
    assert (f"the tests import srcore from {(site / 'srcore' / '__init__.py').resolve()}, not "
            f"from this checkout") in out.stdout + out.stderr
    assert 'pip install -e ".[dev]"' in out.stdout + out.stderr
