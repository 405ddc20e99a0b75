"""What a LUNA16 evaluation returns: the FROC result, its bootstrap summary, the per-nodule hits.

The rules that fill them are in :mod:`focalmix_lib.evaluation.luna16`, the bootstrap in
:mod:`focalmix_lib.evaluation.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

OPERATING_POINTS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# The keys of FrocResult.sensitivity_at and of froc.json: "0.125" .. "8.0".
OPERATING_POINT_KEYS: tuple[str, ...] = tuple(str(point) for point in OPERATING_POINTS)


CONFIDENCE = 0.95


# FP-per-scan grid (log2-spaced, 1/8 .. 8) on which bootstrap bands are reported.
BAND_FPS_PER_SCAN: NDArray[np.float64] = 2.0 ** np.linspace(-3.0, 3.0, 97)


@dataclass(frozen=True)
class NoduleHits:
    """The included nodules of the listed scans, in ``annotations.csv`` order, and how they were found.

    (M,) arrays: ``seriesuid``; ``world_xyz`` (M, 3) mm; ``diameter_mm``;
    ``annotation_row`` (line in annotations.csv); ``detected``; ``score`` (the highest
    probability of the marks that hit it, NaN when missed); ``prediction_row`` (line in
    the predictions file of that mark, -1 when missed).
    """

    seriesuid: NDArray[np.str_]
    world_xyz: NDArray[np.float64]
    diameter_mm: NDArray[np.float64]
    annotation_row: NDArray[np.int64]
    detected: NDArray[np.bool_]
    score: NDArray[np.float64]
    prediction_row: NDArray[np.int64]


@dataclass(frozen=True)
class Interval:
    """Bootstrap mean and 95 % interval of one quantity."""

    mean: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class BootstrapSummary:
    """Bootstrap statistics over ``n_valid`` of ``n_resamples`` resamples (those with a nodule).

    ``band_*``: (K,) mean / low / high sensitivity at ``band_fps_per_scan`` (K,) FP per scan.
    """

    n_resamples: int
    n_valid: int
    seed: int
    cpm: Interval
    sensitivity_at: dict[str, Interval]
    band_fps_per_scan: NDArray[np.float64]
    band_mean: NDArray[np.float64]
    band_low: NDArray[np.float64]
    band_high: NDArray[np.float64]

    def to_json(self) -> dict[str, Any]:
        return {
            "n_resamples": self.n_resamples, "n_valid": self.n_valid, "seed": self.seed,
            "confidence": CONFIDENCE, "cpm": self.cpm.to_json(),
            "sensitivity_at": {key: value.to_json() for key, value in self.sensitivity_at.items()},
        }


@dataclass(frozen=True)
class FrocResult:
    """The FROC evaluation of one submission.

    ``fps_per_scan``, ``sensitivity``, ``thresholds``: (V,) the curve's vertices as the
    official script writes them (the first vertex is the origin with threshold +inf).
    ``sensitivity_at`` is keyed "0.125" .. "8.0". Counts include a scan as often as it is
    listed.
    """

    cpm: float
    sensitivity_at: dict[str, float]
    n_scans: int
    n_nodules: int
    n_detected: int
    n_false_positives: int
    fps_per_scan: NDArray[np.float64]
    sensitivity: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    nodules: NoduleHits
    bootstrap: BootstrapSummary | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``froc.json``."""
        out: dict[str, Any] = {
            "cpm": self.cpm, "sensitivity_at": dict(self.sensitivity_at), "n_scans": self.n_scans,
            "n_nodules": self.n_nodules, "n_detected": self.n_detected, "n_false_positives": self.n_false_positives,
        }
        if self.bootstrap is not None:
            out["bootstrap"] = self.bootstrap.to_json()
        return out


@dataclass(frozen=True)
class RocSamples:
    """The samples of the ROC analysis (detected nodules and false positives), sorted once.

    Samples are ordered by descending score; a *group* is a run of equal scores (one
    curve vertex). Per group g (G,): ``thresholds[g]``, ``n_pos_through[g]`` and
    ``n_fp_through[g]``, the numbers of positive / FP samples up to the end of g.
    ``pos_scan`` (P,) and ``fp_scan`` (F,): the scan index of each positive / FP sample,
    in score order. Per scan (S,): ``detected_per_scan``, ``fp_per_scan``,
    ``nodules_per_scan`` (included nodules, detected or not).
    """

    thresholds: NDArray[np.float64]
    n_pos_through: NDArray[np.int64]
    n_fp_through: NDArray[np.int64]
    pos_scan: NDArray[np.int64]
    fp_scan: NDArray[np.int64]
    detected_per_scan: NDArray[np.int64]
    fp_per_scan: NDArray[np.int64]
    nodules_per_scan: NDArray[np.int64]


def keyed_by_operating_point(values: Sequence[Any]) -> dict[str, Any]:
    """Key per-operating-point values by "0.125" .. "8.0"."""
    return dict(zip(OPERATING_POINT_KEYS, values))
