"""LUNA16 evaluation: the FROC curve and the CPM, rule for rule as the challenge's own script.

Every number the kit reports is a CPM (competition performance metric), so this module
reproduces the official ``noduleCADEvaluationLUNA16.py`` exactly, ties and edge cases
included, while being fast enough to run after every training and inside bootstraps.

The rules, for the scans listed in ``seriesuids.csv`` (marks and annotations of other
scans are ignored):

1. A scan with more than 100 marks keeps only the marks whose probability is strictly
   above the 101st highest (so ties at the 101st are all dropped).
2. A mark at ``m`` hits a finding of diameter ``d`` centred at ``c`` when
   ``|m - c|^2 < (d / 2)^2`` (world mm); a negative diameter counts as 10 mm.
3. An included nodule (``annotations.csv``) hit by one or more marks is one positive,
   scored with the highest probability among those marks; all of them leave the
   false-positive pool (double detections are ignored). One mark may hit two nodules.
4. A missed included nodule counts in the sensitivity denominator only.
5. Marks that hit an excluded finding (``annotations_excluded.csv``) count for nothing.
6. Every other mark is a false positive.
7. FROC: sklearn's ``roc_curve`` over the positives (scores above) and the false
   positives: one vertex per distinct score (``drop_intermediate``: a vertex is dropped
   when both its FP and TP counts have zero second difference), then
   ``x = FPR * n_FP / n_scans`` and ``y = TPR * n_detected / n_nodules``.
8. ``sensitivity(f) = numpy.interp(f, x, y)`` for f in 1/8, 1/4, ..., 8 FP per scan;
   ``CPM = mean_f sensitivity(f)``.
9. Bootstrap: the listed scans are resampled with replacement; each resample gives a
   curve by rules 7-8; the mean and the 95 % interval are the mean and the order
   statistics ``v[floor(0.025 N)]``, ``v[floor(0.975 N)]`` of the sorted values.

A scan listed twice counts twice (its marks and nodules are taken twice, and a
resample that draws it takes both copies), as in the official script.

Where the official script returns NaN or fails (nothing detected: ``TPR = 0 / 0``; no
marks at all), the kit reports sensitivity 0. A bootstrap resample without any nodule
has no sensitivity; it is left out of the bootstrap statistics.

Speed: the matching is vectorised over (finding, mark) pairs of each scan; the ROC
samples are sorted once; a bootstrap resample is a vector of per-scan multiplicities,
so its curve is a weighted cumulative sum over the pre-sorted samples (no re-sorting),
computed only as far as the curve needs to pass 8 FP per scan and read at the
operating points by integer searches. The point estimate is bit-identical to the
official computation; bootstrap values agree with it to rounding (~1e-16).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from focalmix_lib import atomic
from focalmix_lib.data.luna_csv import FindingTable, read_annotations, read_predictions, read_seriesuids
from focalmix_lib.errors import KitInputError

OPERATING_POINTS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MAX_MARKS_PER_SCAN = 100
UNKNOWN_DIAMETER_MM = 10.0
CONFIDENCE = 0.95
# FP-per-scan grid (log2-spaced, 1/8 .. 8) on which bootstrap bands are reported.
BAND_FPS_PER_SCAN: NDArray[np.float64] = 2.0 ** np.linspace(-3.0, 3.0, 97)
# Rows of bootstrap weights processed at once (bounds memory to ~rows x samples ints).
_BOOTSTRAP_CHUNK = 125


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
class _RocSamples:
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


def evaluate_froc(
    annotations: FindingTable, excluded: FindingTable, seriesuids: Sequence[str], predictions: FindingTable,
    bootstrap: int = 0, seed: int = 0, *, progress: bool = False,
) -> FrocResult:
    """Evaluate ``predictions`` on the listed scans as the LUNA16 challenge does (rules in the module doc).

    ``bootstrap``: number of resamples of the listed scans (0: none); ``seed`` seeds them.
    ``progress`` shows a tqdm bar over the bootstrap. Raises KitInputError (naming the
    annotations file) when the listed scans hold no included nodule.
    """
    if not seriesuids:
        raise ValueError("no listed scans: the FROC needs at least one series uid")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    listed = np.asarray(list(seriesuids), dtype=str)
    scan_uids, listed_scan = np.unique(listed, return_inverse=True)
    multiplicity = np.bincount(listed_scan, minlength=len(scan_uids))
    n_scans = len(listed)

    samples, nodules = _match(annotations, excluded, predictions, scan_uids)
    if len(nodules.detected) == 0:
        raise KitInputError(annotations.path, f"no included nodule in the {len(scan_uids)} listed scan(s); "
                            "sensitivity is undefined")

    point_weights = multiplicity[None, :]
    fp_counts, tp_counts = (_cumulative_weights(point_weights, sample_scan)[0, through] for sample_scan, through in
                            ((samples.fp_scan, samples.n_fp_through), (samples.pos_scan, samples.n_pos_through)))
    totals = _weighted_totals(samples, point_weights)
    x, y, thresholds = froc_curve(fp_counts, tp_counts, samples.thresholds, *(int(t[0]) for t in totals), n_scans)
    sens = np.interp(np.asarray(OPERATING_POINTS), x, y)
    result = FrocResult(
        cpm=float(np.mean(sens)), sensitivity_at=_keyed(sens.tolist()), n_scans=n_scans,
        n_nodules=int(totals[2][0]), n_detected=int(totals[1][0]), n_false_positives=int(totals[0][0]),
        fps_per_scan=x, sensitivity=y, thresholds=thresholds, nodules=nodules,
    )
    if bootstrap == 0:
        return result
    resamples = draw_bootstrap_resamples(n_scans, bootstrap, seed)
    # A listed uid brings all its copies each time it is drawn, as in the official script.
    weights = _resample_weights(resamples, listed_scan, len(scan_uids)) * multiplicity[None, :]
    curves = _bootstrap_sensitivities(samples, weights, n_scans, progress=progress)
    return _with_bootstrap(result, curves, bootstrap, seed)


def evaluate_files(
    annotations_path: str | Path, excluded_path: str | Path, seriesuids_path: str | Path,
    predictions_path: str | Path, bootstrap: int = 0, seed: int = 0, *, progress: bool = False,
) -> FrocResult:
    """Read the four LUNA16 CSVs (``focalmix_lib.data.luna_csv``) and run :func:`evaluate_froc`."""
    seriesuids = read_seriesuids(seriesuids_path)
    if not seriesuids:
        raise KitInputError(seriesuids_path, "no series uid listed")
    return evaluate_froc(
        read_annotations(annotations_path), read_annotations(excluded_path, excluded=True), seriesuids,
        read_predictions(predictions_path), bootstrap=bootstrap, seed=seed, progress=progress,
    )


def froc_curve(
    fp_counts: NDArray[np.integer], tp_counts: NDArray[np.integer], thresholds: NDArray[np.float64],
    n_false_positives: int, n_detected: int, n_nodules: int, n_scans: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The FROC curve ``(x, y, thresholds)`` (V,) from cumulative counts at each distinct score (rule 7).

    ``fp_counts[g]``, ``tp_counts[g]`` (G,): numbers of false positives and detected
    nodules scoring ``>= thresholds[g]`` (descending, each group adding at least one).
    As ``sklearn.metrics.roc_curve(drop_intermediate=True)``: keep the first and last
    vertex and every one where ``diff(fp, 2)`` or ``diff(tp, 2)`` is non-zero, prepend
    the origin with threshold +inf. Then as the official script,
    ``x = (fp / n_FP) * n_FP / n_scans`` (0 when there is no FP) and
    ``y = (tp / n_detected) * n_detected / n_nodules`` (0 when nothing is detected,
    where the official script gives NaN).
    """
    fps, tps, thr = fp_counts, tp_counts, thresholds
    if len(fps) > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps, tps, thr = np.r_[0, fps], np.r_[0, tps], np.r_[np.inf, thr]
    x = fps / n_false_positives * float(n_false_positives) / n_scans if n_false_positives else np.zeros(len(fps))
    y = tps / n_detected * float(n_detected) / float(n_nodules) if n_detected else np.zeros(len(tps))
    return x, y, thr


def draw_bootstrap_resamples(n_scans: int, n_resamples: int, seed: int) -> NDArray[np.int64]:
    """(n_resamples, n_scans) indices into the listed scans, drawn with replacement from ``seed``."""
    return np.random.default_rng(seed).integers(0, n_scans, size=(n_resamples, n_scans))


def _bootstrap_sensitivities(
    samples: _RocSamples, weights: NDArray[np.int64], n_scans: int, *, progress: bool = False,
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
    fp_total, tp_total, nodule_total = _weighted_totals(samples, weights)
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


def write_outputs(result: FrocResult, out_dir: str | Path) -> list[Path]:
    """Write froc.json, froc.csv (the curve), froc_nodules.csv, froc.png and froc.html, each atomically."""
    from focalmix_lib.viz.froc_plots import write_froc_html, write_froc_png

    out_dir = Path(out_dir)
    paths = [out_dir / name for name in ("froc.json", "froc.csv", "froc_nodules.csv", "froc.png", "froc.html")]
    atomic.write_json(paths[0], result.to_json())
    curve = "".join(f"{x!r},{y!r},{t!r}\n" for x, y, t in
                    zip(result.fps_per_scan.tolist(), result.sensitivity.tolist(), result.thresholds.tolist()))
    atomic.write_text(paths[1], "fps_per_scan,sensitivity,threshold\n" + curve)
    atomic.write_text(paths[2], _nodule_hits_csv(result.nodules))
    write_froc_png(result, paths[3])
    write_froc_html(result, paths[4])
    return paths


def _match(
    annotations: FindingTable, excluded: FindingTable, predictions: FindingTable, scan_uids: NDArray[np.str_],
) -> tuple[_RocSamples, NoduleHits]:
    """Rules 1-6: truncate, match marks to findings, and collect the ROC samples."""
    n_scans = len(scan_uids)
    mark_scan, mark_prob, mark_xyz, mark_row = _kept_marks(predictions, scan_uids)
    mark_start = np.searchsorted(mark_scan, np.arange(n_scans))
    mark_count = np.bincount(mark_scan, minlength=n_scans)

    nodule_scan = _scan_index(annotations.seriesuid, scan_uids)
    nodule_idx = np.flatnonzero(nodule_scan >= 0)
    excluded_scan = _scan_index(excluded.seriesuid, scan_uids)
    excluded_idx = np.flatnonzero(excluded_scan >= 0)
    n_nodules = len(nodule_idx)
    finding_scan = np.concatenate([nodule_scan[nodule_idx], excluded_scan[excluded_idx]])
    finding_xyz = np.concatenate([annotations.world_xyz[nodule_idx], excluded.world_xyz[excluded_idx]])
    diameter = np.concatenate([annotations.value[nodule_idx], excluded.value[excluded_idx]])
    radius_sq = (np.where(diameter < 0.0, UNKNOWN_DIAMETER_MM, diameter) / 2.0) ** 2

    # Every (finding, mark) pair of the same scan.
    pairs_per_finding = mark_count[finding_scan]
    pair_finding = np.repeat(np.arange(len(finding_scan)), pairs_per_finding)
    first_pair = np.cumsum(pairs_per_finding) - pairs_per_finding
    pair_mark = np.arange(len(pair_finding)) + np.repeat(mark_start[finding_scan] - first_pair, pairs_per_finding)
    delta = mark_xyz[pair_mark] - finding_xyz[pair_finding]
    # Summed in the official order, (dx^2 + dy^2) + dz^2, so that borderline hits agree.
    dist_sq = delta[:, 0] * delta[:, 0] + delta[:, 1] * delta[:, 1] + delta[:, 2] * delta[:, 2]
    hit = dist_sq < radius_sq[pair_finding]
    hit_finding, hit_mark = pair_finding[hit], pair_mark[hit]

    is_fp = np.ones(len(mark_scan), dtype=bool)
    is_fp[hit_mark] = False
    # The best mark of each hit nodule: sort hits by (nodule, probability), take each nodule's last.
    on_nodule = hit_finding < n_nodules
    hit_nodule, hit_nodule_mark = hit_finding[on_nodule], hit_mark[on_nodule]
    order = np.lexsort((mark_prob[hit_nodule_mark], hit_nodule))
    hit_nodule, hit_nodule_mark = hit_nodule[order], hit_nodule_mark[order]
    last = np.r_[hit_nodule[1:] != hit_nodule[:-1], True] if len(hit_nodule) else np.zeros(0, dtype=bool)
    detected_nodule, best_mark = hit_nodule[last], hit_nodule_mark[last]
    detected = np.zeros(n_nodules, dtype=bool)
    detected[detected_nodule] = True
    score = np.full(n_nodules, np.nan)
    score[detected_nodule] = mark_prob[best_mark]
    prediction_row = np.full(n_nodules, -1, dtype=np.int64)
    prediction_row[detected_nodule] = mark_row[best_mark]

    nodule_scan_listed = nodule_scan[nodule_idx]
    samples = _roc_samples(
        score=np.concatenate([score[detected_nodule], mark_prob[is_fp]]),
        positive=np.r_[np.ones(len(detected_nodule), dtype=bool), np.zeros(int(is_fp.sum()), dtype=bool)],
        scan=np.concatenate([nodule_scan_listed[detected_nodule], mark_scan[is_fp]]),
        nodules_per_scan=np.bincount(nodule_scan_listed, minlength=n_scans),
        n_scans=n_scans,
    )
    nodules = NoduleHits(
        seriesuid=annotations.seriesuid[nodule_idx], world_xyz=annotations.world_xyz[nodule_idx],
        diameter_mm=annotations.value[nodule_idx], annotation_row=annotations.rows[nodule_idx],
        detected=detected, score=score, prediction_row=prediction_row,
    )
    return samples, nodules


def _kept_marks(
    predictions: FindingTable, scan_uids: NDArray[np.str_],
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Rule 1: the marks of the listed scans, sorted by scan, keeping at most the 100 most suspicious.

    Returns (K,) scan index, probability, (K, 3) world position and file row.
    """
    scan = _scan_index(predictions.seriesuid, scan_uids)
    listed = np.flatnonzero(scan >= 0)
    prob = predictions.value[listed]
    order = listed[np.lexsort((-prob, scan[listed]))]
    scan, prob = scan[order], predictions.value[order]
    count = np.bincount(scan, minlength=len(scan_uids))
    start = np.cumsum(count) - count
    crowded = count > MAX_MARKS_PER_SCAN
    floor = np.full(len(scan_uids), -np.inf)
    floor[crowded] = prob[start[crowded] + MAX_MARKS_PER_SCAN]
    keep = ~crowded[scan] | (prob > floor[scan])
    order = order[keep]
    return scan[keep], prob[keep], predictions.world_xyz[order], predictions.rows[order]


def _roc_samples(
    score: NDArray[np.float64], positive: NDArray[np.bool_], scan: NDArray[np.int64],
    nodules_per_scan: NDArray[np.int64], n_scans: int,
) -> _RocSamples:
    """Sort the samples by descending score once and index the groups of equal scores."""
    order = np.argsort(-score, kind="stable")
    score, positive, scan = score[order], positive[order], scan[order]
    group_end = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1] if len(score) else np.zeros(0, dtype=np.int64)
    n_pos_through = np.cumsum(positive)[group_end]
    return _RocSamples(
        thresholds=score[group_end], n_pos_through=n_pos_through, n_fp_through=group_end + 1 - n_pos_through,
        pos_scan=scan[positive], fp_scan=scan[~positive],
        detected_per_scan=np.bincount(scan[positive], minlength=n_scans),
        fp_per_scan=np.bincount(scan[~positive], minlength=n_scans), nodules_per_scan=nodules_per_scan,
    )


def _cumulative_weights(weights: NDArray[np.int64], sample_scan: NDArray[np.int64]) -> NDArray[np.int64]:
    """(R, n + 1) ``C[r, i] = sum_{j < i} weights[r, sample_scan[j]]``: weighted counts of the first i samples."""
    cumulative = np.zeros((len(weights), len(sample_scan) + 1), dtype=np.int64)
    np.cumsum(weights[:, sample_scan], axis=1, out=cumulative[:, 1:])
    return cumulative


def _bracketing_vertices(
    samples: _RocSamples, weights: NDArray[np.int64], n_groups: int, fp_targets: NDArray[np.int64],
) -> tuple[NDArray[np.int64], ...]:
    """For each row and target t (R, K): FP and TP of the last vertex with FP <= t and of the next.

    Only the first ``n_groups`` groups are used. Returns ``fp_lo, fp_hi, tp_lo, tp_hi`` and
    ``beyond``, true where no group of those has FP > t (``*_hi`` are then meaningless).
    """
    n_fp = samples.n_fp_through[n_groups - 1] if n_groups else 0
    n_pos = samples.n_pos_through[n_groups - 1] if n_groups else 0
    cum_fp = _cumulative_weights(weights, samples.fp_scan[:n_fp])
    cum_tp = _cumulative_weights(weights, samples.pos_scan[:n_pos])
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


def _weighted_totals(
    samples: _RocSamples, weights: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """(R,) weighted numbers of false positives, detected nodules and included nodules."""
    return weights @ samples.fp_per_scan, weights @ samples.detected_per_scan, weights @ samples.nodules_per_scan


def _resample_weights(resamples: NDArray[np.int64], listed_scan: NDArray[np.int64], n_uids: int) -> NDArray[np.int64]:
    """(R, S) how many times each distinct scan is drawn in each resample (row-wise bincount)."""
    n_rows = len(resamples)
    flat = (np.arange(n_rows)[:, None] * n_uids + listed_scan[resamples]).ravel()
    return np.bincount(flat, minlength=n_rows * n_uids).reshape(n_rows, n_uids)


def _with_bootstrap(result: FrocResult, curves: NDArray[np.float64], n_resamples: int, seed: int) -> FrocResult:
    """Attach the bootstrap mean and interval of each operating point, the CPM and the band."""
    n_points = len(OPERATING_POINTS)
    valid = curves[np.isfinite(curves[:, 0])]
    columns = np.column_stack([valid[:, :n_points].mean(axis=1), valid])
    mean, low, high = _mean_interval(columns)
    intervals = [Interval(float(m), float(lo), float(hi)) for m, lo, hi in zip(mean, low, high)]
    summary = BootstrapSummary(
        n_resamples=n_resamples, n_valid=len(valid), seed=seed, cpm=intervals[0],
        sensitivity_at=_keyed(intervals[1:1 + n_points]), band_fps_per_scan=BAND_FPS_PER_SCAN.copy(),
        band_mean=mean[1 + n_points:], band_low=low[1 + n_points:], band_high=high[1 + n_points:],
    )
    return dataclasses.replace(result, bootstrap=summary)


def _mean_interval(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """Column-wise mean and the official interval: sorted ``v[floor(0.025 N)]``, ``v[floor(0.975 N)]``."""
    n = len(values)
    if n == 0:
        nan = np.full(values.shape[1], np.nan)
        return nan, nan, nan
    tail = (1.0 - CONFIDENCE) / 2.0
    ordered = np.sort(values, axis=0)
    return values.mean(axis=0), ordered[int(math.floor(tail * n))], ordered[int(math.floor((1.0 - tail) * n))]


def _scan_index(uids: NDArray[np.str_], scan_uids: NDArray[np.str_]) -> NDArray[np.int64]:
    """Index of each uid in ``scan_uids``, -1 for uids not listed."""
    lookup = {uid: i for i, uid in enumerate(scan_uids.tolist())}
    return np.fromiter((lookup.get(uid, -1) for uid in uids.tolist()), dtype=np.int64, count=len(uids))


def _keyed(values: Sequence[Any]) -> dict[str, Any]:
    """Key per-operating-point values by "0.125" .. "8.0"."""
    return {str(point): value for point, value in zip(OPERATING_POINTS, values)}


def _nodule_hits_csv(nodules: NoduleHits) -> str:
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm,annotation_row,detected,score,prediction_row\n"]
    for uid, (x, y, z), d, row, hit, score, mark in zip(
        nodules.seriesuid, nodules.world_xyz.tolist(), nodules.diameter_mm.tolist(), nodules.annotation_row.tolist(),
        nodules.detected.tolist(), nodules.score.tolist(), nodules.prediction_row.tolist(),
    ):
        lines.append(f"{uid},{x!r},{y!r},{z!r},{d!r},{row},{int(hit)},{'' if not hit else repr(score)},{mark}\n")
    return "".join(lines)
