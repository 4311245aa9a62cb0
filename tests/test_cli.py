import subprocess
import sys

import pytest

from conftest import REPO, run_cli


def test_help_lists_one_command_per_stage(tmp_path):
    out = run_cli("--help", cwd=tmp_path).stdout
    for command in ("download", "downsample", "split", "pretrained", "train-cnn",
                    "pretrain-disc", "train-gan"):
        assert command in out


def test_version_is_the_packages(tmp_path):
    from srcore import __version__

    out = run_cli("--version", cwd=tmp_path)
    assert out.stdout == f"srcore {__version__}\n"


def test_dvc_stages_call_the_cli():
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert stage["cmd"].startswith("exec python -m srcore "), name  # exec: dvc.yaml says why


def test_starting_the_cli_imports_no_heavy_library():
    """`--help` must answer at once: torch, mlflow, albumentations and lpips load in commands."""
    code = ("import sys, srcore.cli; "
            "print(sorted(m for m in ('torch', 'mlflow', 'albumentations', 'lpips', 'cv2') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_errors_are_one_line_without_traceback(tmp_path):
    out = run_cli("split", cwd=tmp_path, check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("error: params.yaml: params file not found")
    assert "Traceback" not in out.stderr


def _console_script() -> str:
    """What pip's `srcore` script runs: pyproject's [project.scripts] target, called."""
    import re

    module, function = re.search(r'^srcore = "([\w.]+):(\w+)"$',
                                 (REPO / "pyproject.toml").read_text(), re.M).groups()
    return f"from {module} import {function}\nsys.exit({function}())\n"


LAUNCHES = ["runpy.run_module('srcore', run_name='__main__', alter_sys=True)\n",  # python -m
            "console script"]


@pytest.mark.parametrize("launch", LAUNCHES)
def test_a_signal_while_the_cli_is_still_imported_is_one_line_not_a_traceback(tmp_path, launch):
    """Ctrl-C or SIGTERM in the first fraction of a second of `python -m srcore` or of the
    installed `srcore` command (importing typer, before the CLI's handlers are in) printed a
    KeyboardInterrupt traceback."""
    if launch == "console script":
        launch = _console_script()

    # the signal comes as srcore.cli imports typer
    script = ("import os, runpy, signal, sys, time\n"
              "signum = int(sys.argv[1])\n"
              "class Signal:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'typer':\n"
              "            os.kill(os.getpid(), signum)\n"
              "            time.sleep(5)\n"
              "sys.meta_path.insert(0, Signal())\n"
              "sys.argv[1:] = ['download']\n" + launch)
    _stopped_by_each_signal(script, tmp_path, "interrupted: stopped\n")


def _stopped_by_each_signal(script: str, cwd, stderr: str) -> list[str]:
    """Run `script` with SIGINT's number, then SIGTERM's, as its argument (it sends that signal
    to itself): each run must exit with 128 + N, printing `stderr` alone there. Returns their
    stdouts."""
    import signal

    stdouts = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        out = subprocess.run([sys.executable, "-c", script, str(int(signum))], cwd=cwd,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 128 + signum, out.stderr
        assert out.stderr == stderr
        stdouts.append(out.stdout)
    return stdouts


@pytest.mark.parametrize("launch", LAUNCHES)
def test_a_signal_while_python_exits_is_one_line_not_an_ignored_traceback(tmp_path, launch):
    """Ctrl-C or SIGTERM after the command has ended, as Python runs its atexit handlers
    (MLflow's flush of its logging): it printed "Exception ignored in atexit callback" with a
    traceback and exited 0."""
    if launch == "console script":
        launch = _console_script()
    # registered first, so run last: after the atexit handlers the command's imports put in
    script = ("import atexit, os, runpy, signal, sys, time\n"
              "signum = int(sys.argv[1])\n"
              "atexit.register(lambda: (os.kill(os.getpid(), signum), time.sleep(5)))\n"
              "sys.argv[1:] = ['--version']\n" + launch)
    stdouts = _stopped_by_each_signal(
        script, tmp_path, "interrupted: stopped while exiting (the command had ended)\n")
    assert all(out.startswith("srcore ") for out in stdouts)  # the command's output is kept
