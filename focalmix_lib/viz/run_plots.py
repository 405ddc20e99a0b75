"""Figures of a training run and its evaluation (notebooks 05 and 06).

``plot_schedules`` draws a run's two schedules from its config before it trains.
``LiveLossPlot`` is an ``on_log`` callback for ``focalmix_lib.training.engine.train``: it redraws
the loss curves in place in a notebook (one output updated through an IPython display
id, so papermill records only the last state). ``nodule_outcomes`` joins the
per-nodule hits of an evaluation with the phantoms' ``nodule_kinds.csv``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from focalmix_lib.evaluation.results import FrocResult
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.engine import learning_rate_factor
from focalmix_lib.training.objective import unlabeled_weight

LOSS_CURVES = (("loss_labeled", "labeled classification (SFL)"), ("loss_unlabeled", "unlabeled classification (SFL)"),
               ("loss_box", "box regression (smooth L1)"), ("loss", "total (weighted sum)"))
DIAMETER_BINS_MM = (3.0, 6.0, 10.0, 20.0, 40.0)


def plot_loss_curves(records: Sequence[dict[str, Any]], title: str = "Training losses") -> Figure:
    """Loss parts against the step (left, log scale) and the unlabeled weight and learning rate (right).

    ``records`` are metrics.jsonl lines (``RunFolder.read_metrics`` or ``on_log`` records).
    The unlabeled loss is drawn only when it is non-zero somewhere (FocalMix runs).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    steps = [r["step"] for r in records]
    for key, label in LOSS_CURVES:
        values = np.asarray([r[key] for r in records], dtype=float)
        if key == "loss_unlabeled" and not np.any(values):
            continue
        left.plot(steps, np.where(values > 0, values, np.nan), marker="." if len(steps) < 30 else None, label=label)
    left.set_yscale("log")
    left.set_xlabel("training step")
    left.set_ylabel("loss (nats per positive anchor, log scale)")
    left.set_title("loss parts")
    left.legend(fontsize=8)
    right.plot(steps, [r["unlabeled_weight"] for r in records], color="C4", label="unlabeled loss weight")
    right.set_xlabel("training step")
    right.set_ylabel("unlabeled loss weight (unitless)")
    right.set_ylim(-0.05, 1.05 * max([1.0] + [r["unlabeled_weight"] for r in records]))
    twin = right.twinx()
    twin.plot(steps, [r["lr"] for r in records], color="C5", ls="--", label="learning rate")
    twin.set_ylabel("learning rate")
    right.set_title("Schedules: unlabeled weight ramp-up, learning rate")
    lines = right.get_lines() + twin.get_lines()
    right.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_schedules(cfg: TrainConfig) -> Figure:
    """The unlabeled weight w(t) (left) and the learning rate (right) at every step t of ``cfg``.

    ``w(t) = w_max * min(1, t / rampup_steps)`` (:func:`unlabeled_weight`) and
    ``lr(t) = lr * f(t)`` with ``f`` the warm-up then cosine factor
    (:func:`learning_rate_factor`); dotted lines mark ``rampup_steps`` and ``warmup_steps``.
    """
    steps = np.arange(cfg.steps + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    left.plot(steps, [unlabeled_weight(int(t), cfg) for t in steps], color="C4")
    left.axvline(cfg.rampup_steps, color="grey", ls=":", label=f"rampup_steps = {cfg.rampup_steps}")
    used = "" if cfg.method == "focalmix" else " (not used: a supervised run has no unlabeled loss)"
    left.set_title(f"unlabeled loss weight w(t){used}", fontsize=10)
    left.set_xlabel("training step t")
    left.set_ylabel("w(t) (unitless)")
    right.plot(steps, [cfg.lr * learning_rate_factor(int(t), cfg) for t in steps], color="C5")
    right.axvline(cfg.warmup_steps, color="grey", ls=":", label=f"warmup_steps = {cfg.warmup_steps}")
    right.set_title("learning rate: linear warm-up, then cosine decay to 0", fontsize=10)
    right.set_xlabel("training step t")
    right.set_ylabel("learning rate (AdamW step size)")
    for ax in (left, right):
        ax.set_xlim(0, max(1, cfg.steps))
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Schedules of this run ({cfg.steps} steps)")
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """``on_log`` callback that keeps the records and redraws :func:`plot_loss_curves` in place.

    Redraws at most every ``min_seconds`` (plus :meth:`finish` for the last state);
    ``enabled=False`` only collects. Outside IPython nothing is drawn.
    """

    def __init__(self, title: str = "Training losses", min_seconds: float = 2.0, enabled: bool = True):
        self.title, self.min_seconds, self.enabled = title, min_seconds, enabled
        self.records: list[dict[str, Any]] = []
        self._handle: Any = None
        self._last_draw = -np.inf

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))
        if self.enabled and time.monotonic() - self._last_draw >= self.min_seconds:
            self.draw()

    def draw(self) -> None:
        """Show the current curves, replacing the previous drawing."""
        from IPython import get_ipython
        from IPython.display import display

        if not self.records or get_ipython() is None:
            return
        fig = plot_loss_curves(self.records, self.title)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
        self._last_draw = time.monotonic()

    def finish(self) -> None:
        """Draw the final state (the last records may have arrived within ``min_seconds``)."""
        if self.enabled:
            self.draw()


def nodule_outcomes(result: FrocResult, data_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per included nodule of the evaluation: uid, centre, diameter, detected, score (+ kind, location).

    ``kind`` and ``location`` come from ``<data_dir>/nodule_kinds.csv`` (phantom folders)
    when it exists, matched on the series uid and the centre rounded to 0.001 mm.
    """
    hits = result.nodules
    table = pd.DataFrame({
        "seriesuid": hits.seriesuid, "coordX": hits.world_xyz[:, 0], "coordY": hits.world_xyz[:, 1],
        "coordZ": hits.world_xyz[:, 2], "diameter_mm": hits.diameter_mm, "detected": hits.detected,
        "score": hits.score,
    })
    kinds_path = Path(data_dir) / "nodule_kinds.csv" if data_dir is not None else None
    if kinds_path is None or not kinds_path.is_file():
        return table
    kinds = pd.read_csv(kinds_path, dtype={"seriesuid": str})
    keys = ["seriesuid", "kx", "ky", "kz"]
    for frame in (table, kinds):
        for axis, key in zip("XYZ", keys[1:]):
            frame[key] = frame[f"coord{axis}"].round(3)
    merged = table.merge(kinds[keys + ["kind", "location"]].drop_duplicates(keys), on=keys, how="left")
    return merged.drop(columns=keys[1:])


def plot_nodule_hits(outcomes: pd.DataFrame, bins_mm: Sequence[float] = DIAMETER_BINS_MM) -> Figure:
    """Detected and missed nodules by diameter (and by kind and location where known), as stacked bars.

    A nodule counts as detected when any mark hits it (at any probability), as in the FROC.
    """
    groups: list[tuple[str, pd.Series]] = [
        # Intervals, not their strings, so that the bars keep the order of the bins.
        ("diameter (mm)", pd.cut(outcomes["diameter_mm"], list(bins_mm), right=False))]
    for column in ("kind", "location"):
        if column in outcomes and outcomes[column].notna().any():
            groups.append((column, outcomes[column].fillna("unknown")))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.8 * len(groups), 4.2), squeeze=False)
    for ax, (name, key) in zip(axes[0], groups):
        counts = pd.crosstab(key, outcomes["detected"]).reindex(columns=[True, False], fill_value=0)
        labels = counts.index.astype(str)
        ax.bar(labels, counts[True], color="C2", label="detected")
        ax.bar(labels, counts[False], bottom=counts[True], color="C3", label="missed")
        ax.set_xlabel(name)
        ax.set_ylabel("nodules (count)")
        ax.set_title(f"by {name.split(' ')[0]}")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
    fig.suptitle(f"Hits and misses of {len(outcomes)} test nodules (any mark, any probability)")
    fig.tight_layout()
    return fig
