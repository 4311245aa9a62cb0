"""Training curves as PNG images, drawn from the plots CSV files with matplotlib.

`dvc plots show` renders its Vega plots with scripts from a CDN, so offline only images show;
these PNGs are registered as DVC image plots beside the Vega ones, and logged to MLflow.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from srcore.atomic import atomic_path


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """A plots CSV as {column: float array}; empty cells become NaN (not drawn, not 0)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = rows[0].keys() if rows else []
    return {c: np.array([float(r[c]) if r[c] not in ("", None) else np.nan for r in rows])
            for c in columns}


def smoothed(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    out, average, total = np.empty_like(values), 0.0, 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        total = weight * total + (1 - weight)
        out[i] = average / total
    return out


def gaps(steps: np.ndarray) -> np.ndarray:
    """Where a series pauses (G's losses during D's steps): the indices after which the step
    jumps by more than 1.5x its usual interval. A NaN inserted there breaks the drawn line
    instead of bridging the pause with a straight segment."""
    if len(steps) < 3:
        return np.array([], dtype=int)
    jumps = np.diff(steps)
    return np.flatnonzero(jumps > 1.5 * jumps.min()) + 1


def drawn(steps: np.ndarray, values: np.ndarray, smooth: bool):
    """(x, y, smoothed y or None) as drawn: a NaN at each pause (see `gaps`) breaks the line,
    and the smoothing restarts after it, so one G phase's average does not carry into the next."""
    breaks = gaps(steps)
    x, y = np.insert(steps, breaks, np.nan), np.insert(values, breaks, np.nan)
    if not smooth:
        return x, y, None
    parts = np.concatenate([smoothed(part) for part in np.split(values, breaks)])
    return x, y, np.insert(parts, breaks, np.nan)


def write_curves(out: Path, title: str, panels: list[tuple[str, Path, list[str], bool]]) -> None:
    """Panels, three to a row, each (y label, CSV, columns, smooth): the columns against
    `step`; with smooth, the raw values faintly and their smoothed curve over them."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (label, path, columns, smooth) in zip(axes.flat, panels):
        data = read_columns(path) if Path(path).is_file() else {}
        for column in columns:
            if column not in data or np.isnan(data[column]).all():
                continue
            steps, values = data["step"], data[column]
            keep = ~np.isnan(values)
            steps, values = steps[keep], values[keep]
            x, raw, smooth_y = drawn(steps, values, smooth and len(values) > 2)
            if smooth_y is not None:
                line, = ax.plot(x, raw, alpha=0.3, linewidth=1)
                ax.plot(x, smooth_y, color=line.get_color(), linewidth=2,
                        label=f"{column} (smoothed)")
            else:
                ax.plot(x, raw, marker="o" if len(values) < 30 else None, markersize=3,
                        label=column)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
