"""Reading the CSV training logs `keras.callbacks.CSVLogger` writes.

A log has an `epoch` column and one column per metric (`loss`, `accuracy`,
`learning_rate`, ...), validation metrics prefixed `val_`.
"""

from __future__ import annotations

import csv
import os

import numpy as np

MISSING = ("", "NA")  # CSVLogger writes NA for metrics an epoch lacks (e.g. val_* without validation data)


def read_training_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a CSVLogger file into one float array per column.

    Args:
        path: the CSV file (comma-separated, header row first).

    Returns:
        dict column -> `(epochs,)` float64 array; empty and "NA" cells become NaN.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Training log not found. Received: path={path!r}")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or "epoch" not in rows[0]:
        header = rows[0] if rows else []
        raise ValueError(
            "A training log needs a header with an 'epoch' column, as keras.callbacks.CSVLogger writes. "
            f"Received: header={header!r} in {path!r}"
        )
    header, body = rows[0], [r for r in rows[1:] if r]
    if not body:
        raise ValueError(f"The training log has a header but no epochs yet. Received: path={path!r}")
    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(header):
        values = []
        for line, row in enumerate(body, start=2):
            cell = row[index].strip() if index < len(row) else ""
            try:
                values.append(np.nan if cell in MISSING else float(cell))
            except ValueError:
                raise ValueError(
                    f"Non-numeric value {cell!r} in column {name!r}, line {line} of {path!r}. "
                    "Training logs hold numbers only."
                ) from None
        columns[name] = np.asarray(values, dtype=np.float64)
    return columns


def metric_pairs(columns: dict[str, np.ndarray]) -> list[tuple[str, str | None, str | None]]:
    """Groups columns into `(metric, train column, validation column)` panels, `loss` first; all-NaN columns dropped."""
    names = [n for n in columns if n != "epoch" and not np.all(np.isnan(columns[n]))]
    bases: list[str] = []
    for name in names:
        base = name[4:] if name.startswith("val_") else name
        if base not in bases:
            bases.append(base)
    bases.sort(key=lambda b: (b != "loss", b in ("learning_rate", "lr")))
    return [(b, b if b in names else None, f"val_{b}" if f"val_{b}" in names else None) for b in bases]
