"""CSV files of logged rows (the data of DVC plots and per-image tables)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from srcore.atomic import write_error, write_text


class CsvLog:
    """A DVC plots CSV that grows row by row as training goes, so `dvc plots show` works on a
    run in progress. `start(step)`: a resumed run drops the rows after the step it resumes
    from (they are logged again); a fresh run (step 0) starts with the header only."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = Path(path), columns

    def start(self, step: int) -> None:
        kept = []
        if step and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames == self.columns:
                    kept = [r for r in reader if _step_of(r) is not None and _step_of(r) <= step]
        write_text(self.path, rows_csv(kept, self.columns))

    def append(self, row: dict) -> None:
        try:
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, self.columns, extrasaction="ignore",
                               lineterminator="\n").writerow(_rounded(row))
        except OSError as err:
            raise write_error(self.path, err) from err


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
