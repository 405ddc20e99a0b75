"""The bootstrap of the LUNA16 FROC (rule 9 of :mod:`focalmix_lib.evaluation.luna16`).

A resample of the listed scans is a vector of per-scan multiplicities, so its curve is a
weighted cumulative sum over the ROC samples sorted once (no re-sorting), computed only
as far as the curve needs to pass 8 FP per scan and read at the operating points by
integer searches.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import NDArray

from focalmix_lib.evaluation.results import (
    BAND_FPS_PER_SCAN,
    CONFIDENCE,
    OPERATING_POINTS,
    BootstrapSummary,
    FrocResult,
    Interval,
    RocSamples,
    keyed_by_operating_point,
)

# Rows of bootstrap weights processed at once (bounds memory to ~rows x samples ints).
_BOOTSTRAP_CHUNK = 125


def draw_bootstrap_resamples(n_scans: int, n_resamples: int, seed: int) -> NDArray[np.int64]:
    """(n_resamples, n_scans) indices into the listed scans, drawn with replacement from ``seed``."""
    return np.random.default_rng(seed).integers(0, n_scans, size=(n_resamples, n_scans))


def bootstrap_sensitivities(
    samples: RocSamples, weights: NDArray[np.int64], n_scans: int, *, progress: bool = False,
) -> NDArray[np.float64]:
    """(R, 7 + K) sensitivities of R weighted lists at OPERATING_POINTS then BAND_FPS_PER_SCAN.

    ``weights`` (R, S): how many times each scan is in each resample; the samples keep
    their one sorted order and only their weights change. At ``f`` FP per scan, with
    ``t = f * n_scans``, FP(g) and TP(g) the weighted counts through group g, ``lo`` the
    last vertex (the origin or a group) with ``FP <= t`` and ``hi`` the next group:

        sensitivity(f) = [TP(lo) + (TP(hi) - TP(lo)) * (t - FP(lo)) / (FP(hi) - FP(lo))] / n_nodules,

    or ``TP(lo) / n_nodules`` when there is no ``hi``: numpy.interp on the resample's FROC
    curve. sklearn's dropped vertices are collinear with their neighbours and groups of
    weight 0 repeat a vertex, so neither changes this value beyond rounding (~1e-16).
    The searches run on integer counts. Counts are accumulated over the groups where the
    unweighted FP count stays below 1.25 x 8 FP per scan (plus a margin); a resample
    that does not pass 8 FP per scan there is redone over all groups. Rows without any
    nodule are NaN.
    """
    from tqdm import tqdm

    points = np.concatenate([OPERATING_POINTS, BAND_FPS_PER_SCAN])
    fp_targets = np.floor(points * n_scans).astype(np.int64)  # integer counts: FP <= t <=> FP <= floor(t)
    n_groups = len(samples.thresholds)
    need = 1.25 * OPERATING_POINTS[-1] * n_scans + 50
    prefix = min(n_groups, int(np.searchsorted(samples.n_fp_through, need, side="right")) + 1)
    fp_total, tp_total, nodule_total = weighted_totals(samples, weights)
    out = np.full((len(weights), len(points)), np.nan)
    for start in tqdm(range(0, len(weights), _BOOTSTRAP_CHUNK), desc="bootstrap", unit="chunk", disable=not progress):
        rows = np.arange(start, min(start + _BOOTSTRAP_CHUNK, len(weights)))
        for n_used in (prefix, n_groups):
            fp_lo, fp_hi, tp_lo, tp_hi, beyond = _bracketing_vertices(samples, weights[rows], n_used, fp_targets)
            with np.errstate(invalid="ignore", divide="ignore"):
                tp_at = np.where(beyond, tp_lo, tp_lo + (tp_hi - tp_lo) * (points * n_scans - fp_lo) / (fp_hi - fp_lo))
                out[rows] = tp_at / nodule_total[rows, None]
            settled = ~beyond[:, -1] if n_used < n_groups else np.ones(len(rows), dtype=bool)
            rows = rows[~settled]
            if len(rows) == 0:
                break
    out[nodule_total == 0] = np.nan
    return out


def cumulative_weights(weights: NDArray[np.int64], sample_scan: NDArray[np.int64]) -> NDArray[np.int64]:
    """(R, n + 1) ``C[r, i] = sum_{j < i} weights[r, sample_scan[j]]``: weighted counts of the first i samples."""
    cumulative = np.zeros((len(weights), len(sample_scan) + 1), dtype=np.int64)
    np.cumsum(weights[:, sample_scan], axis=1, out=cumulative[:, 1:])
    return cumulative


def _bracketing_vertices(
    samples: RocSamples, weights: NDArray[np.int64], n_groups: int, fp_targets: NDArray[np.int64],
) -> tuple[NDArray[np.int64], ...]:
    """For each row and target t (R, K): FP and TP of the last vertex with FP <= t and of the next.

    Only the first ``n_groups`` groups are used. Returns ``fp_lo, fp_hi, tp_lo, tp_hi`` and
    ``beyond``, true where no group of those has FP > t (``*_hi`` are then meaningless).
    """
    n_fp = samples.n_fp_through[n_groups - 1] if n_groups else 0
    n_pos = samples.n_pos_through[n_groups - 1] if n_groups else 0
    cum_fp = cumulative_weights(weights, samples.fp_scan[:n_fp])
    cum_tp = cumulative_weights(weights, samples.pos_scan[:n_pos])
    # Rows are non-decreasing; shifting row r by r * (max + 1) makes one sorted array to search.
    largest = int(cum_fp[:, -1].max(initial=0))
    shift = (np.arange(len(weights)) * (largest + 1))[:, None]
    n_le = np.searchsorted((cum_fp + shift).ravel(), np.minimum(fp_targets, largest)[None, :] + shift, side="right")
    n_le -= np.arange(len(weights))[:, None] * cum_fp.shape[1]
    # Group g has FP = cum_fp[n_fp_through[g]] <= t  <=>  n_fp_through[g] < n_le.
    n_groups_le = np.searchsorted(samples.n_fp_through[:n_groups], n_le - 1, side="right")
    beyond = n_groups_le == n_groups
    lo = n_groups_le - 1
    hi = np.minimum(n_groups_le, n_groups - 1)
    fp_through = np.r_[samples.n_fp_through[:n_groups], 0]  # index -1: the origin
    pos_through = np.r_[samples.n_pos_through[:n_groups], 0]
    values = [np.take_along_axis(cum, through[index], 1)
              for cum, through in ((cum_fp, fp_through), (cum_tp, pos_through)) for index in (lo, hi)]
    return values[0], values[1], values[2], values[3], beyond


def weighted_totals(
    samples: RocSamples, weights: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """(R,) weighted numbers of false positives, detected nodules and included nodules."""
    return weights @ samples.fp_per_scan, weights @ samples.detected_per_scan, weights @ samples.nodules_per_scan


def resample_weights(resamples: NDArray[np.int64], listed_scan: NDArray[np.int64], n_uids: int) -> NDArray[np.int64]:
    """(R, S) how many times each distinct scan is drawn in each resample (row-wise bincount)."""
    n_rows = len(resamples)
    flat = (np.arange(n_rows)[:, None] * n_uids + listed_scan[resamples]).ravel()
    return np.bincount(flat, minlength=n_rows * n_uids).reshape(n_rows, n_uids)


def with_bootstrap(result: FrocResult, curves: NDArray[np.float64], n_resamples: int, seed: int) -> FrocResult:
    """Attach the bootstrap mean and interval of each operating point, the CPM and the band."""
    n_points = len(OPERATING_POINTS)
    valid = curves[np.isfinite(curves[:, 0])]
    columns = np.column_stack([valid[:, :n_points].mean(axis=1), valid])
    mean, low, high = mean_interval(columns)
    intervals = [Interval(float(m), float(lo), float(hi)) for m, lo, hi in zip(mean, low, high)]
    summary = BootstrapSummary(
        n_resamples=n_resamples, n_valid=len(valid), seed=seed, cpm=intervals[0],
        sensitivity_at=keyed_by_operating_point(intervals[1:1 + n_points]), band_fps_per_scan=BAND_FPS_PER_SCAN.copy(),
        band_mean=mean[1 + n_points:], band_low=low[1 + n_points:], band_high=high[1 + n_points:],
    )
    return dataclasses.replace(result, bootstrap=summary)


def mean_interval(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """Column-wise mean and the official interval: sorted ``v[floor(0.025 N)]``, ``v[floor(0.975 N)]``."""
    n = len(values)
    if n == 0:
        nan = np.full(values.shape[1], np.nan)
        return nan, nan, nan
    tail = (1.0 - CONFIDENCE) / 2.0
    ordered = np.sort(values, axis=0)
    return values.mean(axis=0), ordered[int(math.floor(tail * n))], ordered[int(math.floor((1.0 - tail) * n))]
