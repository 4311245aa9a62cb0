"""CSV files of logged rows (the data of DVC plots and per-image tables)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from srcore.atomic import write_error, write_text


class CsvLog:
    """A DVC plots CSV that grows row by row as training goes, so `dvc plots show` works on a
    run in progress. `start(step, saved)` first: a fresh run (step 0) starts with the header
    only; a resumed one writes the file anew with its rows up to the step it resumes from (the
    later ones are logged again), taken from `saved`, the text that its state saved
    (`text()` then), whatever the file holds now: after `git checkout`, `dvc checkout` or
    `dvc exp apply` it may be another run's, or cut short, or gone. Without `saved` (a caller
    whose state keeps no history) they are taken from the file, which is right only
    while it is still this run's. The log keeps its text in memory too (kilobytes), so that
    `text()` reads no file."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = Path(path), columns
        self._text: list[str] = []  # the file's text, as this run wrote it

    def start(self, step: int, saved: str | None = None) -> None:
        kept = []
        if step and saved is None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                saved = f.read()
        if step and saved is not None:
            reader = csv.DictReader(io.StringIO(saved, newline=""))
            if reader.fieldnames == self.columns:
                kept = [r for r in reader if _step_of(r) is not None and _step_of(r) <= step]
        text = rows_csv(kept, self.columns)
        write_text(self.path, text)
        self._text = [text]

    def append(self, row: dict) -> None:
        out = io.StringIO()
        csv.DictWriter(out, self.columns, extrasaction="ignore",
                       lineterminator="\n").writerow(_rounded(row))
        line = out.getvalue()
        try:
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                f.write(line)
        except OSError as err:
            raise write_error(self.path, err) from err
        self._text.append(line)

    def text(self) -> str:
        """The file's text as this run wrote it, since `start`: what a resumable state saves."""
        self._text[:] = ["".join(self._text)]
        return self._text[0]


def _step_of(row: dict) -> int | None:
    """The row's step; None for a line cut short by a killed process (missing cells)."""
    if None in row.values():
        return None
    try:
        return int(row["step"])
    except ValueError:
        return None


def _rounded(row: dict) -> dict:
    """Floats to 6 significant digits: plot data, not a checkpoint."""
    return {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}


def rows_csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
