"""The command line: `python -m srcore <command>`, one command per pipeline stage.

Heavy libraries (torch, mlflow, albumentations, lpips) are imported inside the commands so
that `--help` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from srcore.errors import SrcoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="srcore: a reproducible, tracked pipeline for 4x image super-resolution.")

PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file to read.")


@app.command()
def download(params: Path = PARAMS) -> None:
    """Stage 1: fetch the HR photos of data.source (sample, div2k or dir) into data/raw/."""
    from stages import download as stage

    stage.run(params)


@app.command()
def downsample(params: Path = PARAMS) -> None:
    """Stage 2: shrink each photo to data.hr_max_side, crop to data.scale, into data/hr/."""
    from stages import downsample as stage

    stage.run(params)


@app.command()
def split(params: Path = PARAMS) -> None:
    """Stage 3: seeded train/val/test split of data/hr/ into data/split.json."""
    from stages import split as stage

    stage.run(params)


@app.command()
def pretrained(params: Path = PARAMS) -> None:
    """Stage: ImageNet AlexNet/VGG and LPIPS weights into models/pretrained/ (works offline)."""
    from stages import pretrained as stage

    stage.run(params)


@app.command("train-cnn")
def train_cnn(params: Path = PARAMS) -> None:
    """Stage 4: train the RRDB CNN with an L1/L2 pixel loss into models/cnn.pt."""
    from stages import train_cnn as stage

    stage.run(params)


def main() -> None:
    try:
        app()
    except SrcoreError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
