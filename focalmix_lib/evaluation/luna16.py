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

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from focalmix_lib.data.luna_csv import (
    FindingTable,
    read_annotations,
    read_predictions,
    read_seriesuids,
)
from focalmix_lib.errors import KitInputError
from focalmix_lib.evaluation.bootstrap import (
    bootstrap_sensitivities,
    cumulative_weights,
    draw_bootstrap_resamples,
    resample_weights,
    weighted_totals,
    with_bootstrap,
)
from focalmix_lib.evaluation.results import (
    OPERATING_POINTS,
    FrocResult,
    NoduleHits,
    RocSamples,
    keyed_by_operating_point,
)

MAX_MARKS_PER_SCAN = 100


UNKNOWN_DIAMETER_MM = 10.0


def evaluate_froc(
    annotations: FindingTable, excluded: FindingTable, seriesuids: Sequence[str], predictions: FindingTable,
    bootstrap: int = 0, seed: int = 0, *, progress: bool = False,
) -> FrocResult:
    """Evaluate ``predictions`` on the listed scans as the LUNA16 challenge does (rules in the module doc).

    ``bootstrap``: number of resamples of the listed scans (0: none); ``seed`` seeds them.
    ``progress`` shows a tqdm bar over the bootstrap. Raises KitInputError (naming the
    annotations file) when the listed scans hold no included nodule.
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    scan_uids, listed_scan, multiplicity = _listed_scans(seriesuids)
    n_scans = len(listed_scan)
    samples, nodules = _matched(annotations, excluded, predictions, scan_uids)

    point_weights = multiplicity[None, :]
    fp_counts, tp_counts = (cumulative_weights(point_weights, sample_scan)[0, through] for sample_scan, through in
                            ((samples.fp_scan, samples.n_fp_through), (samples.pos_scan, samples.n_pos_through)))
    totals = weighted_totals(samples, point_weights)
    x, y, thresholds = froc_curve(fp_counts, tp_counts, samples.thresholds, *(int(t[0]) for t in totals), n_scans)
    sens = np.interp(np.asarray(OPERATING_POINTS), x, y)
    result = FrocResult(
        cpm=float(np.mean(sens)), sensitivity_at=keyed_by_operating_point(sens.tolist()), n_scans=n_scans,
        n_nodules=int(totals[2][0]), n_detected=int(totals[1][0]), n_false_positives=int(totals[0][0]),
        fps_per_scan=x, sensitivity=y, thresholds=thresholds, nodules=nodules,
    )
    if bootstrap == 0:
        return result
    resamples = draw_bootstrap_resamples(n_scans, bootstrap, seed)
    # A listed uid brings all its copies each time it is drawn, as in the official script.
    weights = resample_weights(resamples, listed_scan, len(scan_uids)) * multiplicity[None, :]
    curves = bootstrap_sensitivities(samples, weights, n_scans, progress=progress)
    return with_bootstrap(result, curves, bootstrap, seed)


def resampled_cpms(
    annotations: FindingTable, excluded: FindingTable, seriesuids: Sequence[str], predictions: FindingTable,
    resamples: NDArray[np.int64],
) -> NDArray[np.float64]:
    """The CPM (R,) of ``predictions`` on each resample of the listed scans (rule 9), NaN where a
    resample holds no nodule.

    ``resamples`` (R, n_listed): indices into ``seriesuids`` (:func:`draw_bootstrap_resamples`).
    Two submissions scored on the same resamples give paired CPM differences.
    """
    scan_uids, listed_scan, multiplicity = _listed_scans(seriesuids)
    samples, _ = _matched(annotations, excluded, predictions, scan_uids)
    weights = resample_weights(resamples, listed_scan, len(scan_uids)) * multiplicity[None, :]
    curves = bootstrap_sensitivities(samples, weights, len(listed_scan))
    return curves[:, :len(OPERATING_POINTS)].mean(axis=1)


def _listed_scans(seriesuids: Sequence[str]) -> tuple[NDArray[np.str_], NDArray[np.int64], NDArray[np.int64]]:
    """Distinct listed uids (S,), each listed entry's index among them (n_listed,), and how often each is listed."""
    if not seriesuids:
        raise ValueError("no listed scans: the FROC needs at least one series uid")
    scan_uids, listed_scan = np.unique(np.asarray(list(seriesuids), dtype=str), return_inverse=True)
    return scan_uids, listed_scan, np.bincount(listed_scan, minlength=len(scan_uids))


def _matched(annotations: FindingTable, excluded: FindingTable, predictions: FindingTable,
             scan_uids: NDArray[np.str_]) -> tuple[RocSamples, NoduleHits]:
    """Rules 1-6 (:func:`_match`), refusing listed scans without any included nodule."""
    samples, nodules = _match(annotations, excluded, predictions, scan_uids)
    if len(nodules.detected) == 0:
        raise KitInputError(annotations.path, f"no included nodule in the {len(scan_uids)} listed scan(s); "
                            "sensitivity is undefined")
    return samples, nodules


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


def _match(
    annotations: FindingTable, excluded: FindingTable, predictions: FindingTable, scan_uids: NDArray[np.str_],
) -> tuple[RocSamples, NoduleHits]:
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
) -> RocSamples:
    """Sort the samples by descending score once and index the groups of equal scores."""
    order = np.argsort(-score, kind="stable")
    score, positive, scan = score[order], positive[order], scan[order]
    group_end = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1] if len(score) else np.zeros(0, dtype=np.int64)
    n_pos_through = np.cumsum(positive)[group_end]
    return RocSamples(
        thresholds=score[group_end], n_pos_through=n_pos_through, n_fp_through=group_end + 1 - n_pos_through,
        pos_scan=scan[positive], fp_scan=scan[~positive],
        detected_per_scan=np.bincount(scan[positive], minlength=n_scans),
        fp_per_scan=np.bincount(scan[~positive], minlength=n_scans), nodules_per_scan=nodules_per_scan,
    )


def _scan_index(uids: NDArray[np.str_], scan_uids: NDArray[np.str_]) -> NDArray[np.int64]:
    """Index of each uid in ``scan_uids``, -1 for uids not listed."""
    lookup = {uid: i for i, uid in enumerate(scan_uids.tolist())}
    return np.fromiter((lookup.get(uid, -1) for uid in uids.tolist()), dtype=np.int64, count=len(uids))
