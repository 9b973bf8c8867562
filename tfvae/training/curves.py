"""Learning curves of a run: `curves.png` beside its history.csv, to look at while it trains.

Three panels against the epoch (1-based): the loss the model trains on, the ELBO, and the
KL with its parts per stochastic layer where the model logs them (`kl_z1`, `kl_z2`); the
training data's values as solid lines, the validation data's (the `val_` columns) dashed,
and the best epoch (the one `best.weights.h5` holds) as a vertical line.
"""
from __future__ import annotations

import re

import numpy as np

from tfvae.io import atomic_path

PANELS = (("loss", re.compile(r"loss"), "loss (what the model trains on)"),
          ("elbo", re.compile(r"elbo"), "ELBO (nats)"),
          ("kl", re.compile(r"kl(_z\d+)?"), "KL (nats)"))


def learning_curve_series(rows) -> dict:
    """{panel: {column: (epochs, values)}} of history rows ({column: value}, as history.csv's
    reader or `HistoryCSV` holds them): for each panel of `PANELS`, the columns it shows (the
    metric and its `val_` twin), with the 1-based epochs where the column has a value."""
    rows = list(rows)
    columns = sorted({name for row in rows for name in row} - {"epoch"})
    series = {}
    for panel, pattern, _ in PANELS:
        shown = {}
        for column in columns:
            if not pattern.fullmatch(column.removeprefix("val_")):
                continue
            points = [(int(row["epoch"]) + 1, float(row[column])) for row in rows
                      if row.get(column) not in (None, "")]
            if points:
                epochs, values = zip(*points)
                shown[column] = (np.asarray(epochs), np.asarray(values))
        series[panel] = shown
    return series


def value_range(values_by_column, skip: int):
    """(low, high) of the finite values after the first `skip` epochs of each column (all of
    them if that leaves none), padded by 5%: the first epochs' values dwarf the rest."""
    kept = [v[min(skip, len(v) - 1):] for _, v in values_by_column.values()]
    finite = np.concatenate(kept) if kept else np.array([])
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    pad = 0.05 * (high - low) or max(1e-3, 0.05 * abs(high))
    return low - pad, high + pad


def plot_learning_curves(rows, path: str, best_epoch: int | None = None) -> dict:
    """Writes the learning curves of history rows to the PNG `path` (atomically) and returns
    the plotted series (`learning_curve_series`). The y-range of each panel leaves out the
    first tenth of the epochs (at least the first epoch, when there are more than two)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = learning_curve_series(rows)
    epochs = max((int(e[-1]) for shown in series.values() for e, _ in shown.values()), default=0)
    skip = max(1, epochs // 10) if epochs > 2 else 0
    figure, axes = plt.subplots(1, len(PANELS), figsize=(15, 4))
    for axis, (panel, _, title) in zip(axes, PANELS):
        for column, (x, y) in series[panel].items():
            validation = column.startswith("val_")
            axis.plot(x, y, linestyle="--" if validation else "-", marker="." if len(x) < 30 else None,
                      label=f"{column.removeprefix('val_')} ({'validation' if validation else 'training'})")
        limits = value_range(series[panel], skip)
        if limits is not None:
            axis.set_ylim(*limits)
        if best_epoch:
            axis.axvline(best_epoch, color="gray", linewidth=1, linestyle=":", label=f"best epoch ({best_epoch})")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        if series[panel]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, dpi=90)
    plt.close(figure)
    return series


__all__ = ["PANELS", "learning_curve_series", "plot_learning_curves", "value_range"]
