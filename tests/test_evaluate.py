"""LUNA16 evaluation: each official rule by a hand-computed case, random cases against a slow reference.

The reference below follows the official ``noduleCADEvaluationLUNA16.py`` step by step
(dicts of candidates per scan, nested loops over nodules and marks, the FROC lists with
the missed nodules as excluded entries, sklearn's ``roc_curve`` semantics written out,
``numpy.interp``) so that the vectorised kit must agree with it bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from focalmix_lib.cli import main
from focalmix_lib.data.luna_csv import FindingTable, write_findings, write_seriesuids
from focalmix_lib.errors import KitInputError
from focalmix_lib.evaluation.bootstrap import draw_bootstrap_resamples
from focalmix_lib.evaluation.luna16 import evaluate_files, evaluate_froc
from focalmix_lib.evaluation.outputs import write_outputs
from focalmix_lib.evaluation.results import BAND_FPS_PER_SCAN, OPERATING_POINTS

KEYS = ["0.125", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0"]


# ----------------------------------------------------------------------------- reference


def reference_roc_curve(y_true: np.ndarray, y_score: np.ndarray):
    """sklearn.metrics.roc_curve(y_true, y_score) (drop_intermediate=True, sklearn >= 1.3), spelled out."""
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[order], y_true[order]
    distinct = np.where(np.diff(y_score))[0]
    ends = np.r_[distinct, y_true.size - 1]
    tps = np.cumsum(y_true)[ends]
    fps = 1 + ends - tps
    thresholds = y_score[ends]
    if len(fps) > 2:
        optimal = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps, thresholds = fps[optimal], tps[optimal], thresholds[optimal]
    tps, fps, thresholds = np.r_[0, tps], np.r_[0, fps], np.r_[np.inf, thresholds]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def reference_compute_froc(gt: list[float], prob: list[float], n_images: int, exclude: list[bool]):
    """The official computeFROC; where it would give NaN (nothing detected) or fail (no samples): 0."""
    gt_local = np.asarray([g for g, e in zip(gt, exclude) if not e])
    prob_local = np.asarray([p for p, e in zip(prob, exclude) if not e])
    n_detected, n_lesions, n_candidates = sum(gt_local), sum(gt), len(prob_local)
    if n_candidates == 0:
        return np.zeros(1), np.zeros(1), np.full(1, np.inf)
    fpr, tpr, thresholds = reference_roc_curve(gt_local, prob_local)
    if sum(gt) == len(gt):
        fps = np.zeros(len(fpr))
    else:
        fps = fpr * (n_candidates - n_detected) / n_images
    sens = (tpr * n_detected) / n_lesions if n_detected > 0 else np.zeros(len(tpr))
    return fps, sens, thresholds


def reference_froc_lists(annotations, excluded, seriesuids, predictions, max_marks=100):
    """The official evaluateCAD up to the FROC lists: (gt, prob, scan uid, exclude) per entry."""
    gt, prob, divisor, exclude = [], [], [], []
    for uid in seriesuids:
        candidates = {i: (tuple(predictions.world_xyz[i]), float(predictions.value[i]))
                      for i in range(len(predictions)) if predictions.seriesuid[i] == uid}
        if len(candidates) > max_marks:
            threshold = sorted((c[1] for c in candidates.values()), reverse=True)[max_marks]
            candidates = {k: c for k, c in candidates.items() if c[1] > threshold}
        remaining = dict(candidates)
        findings = [("Included", annotations, i) for i in range(len(annotations)) if annotations.seriesuid[i] == uid]
        findings += [("Excluded", excluded, i) for i in range(len(excluded)) if excluded.seriesuid[i] == uid]
        for state, table, i in findings:
            x, y, z = (float(v) for v in table.world_xyz[i])
            diameter = float(table.value[i])
            if diameter < 0.0:
                diameter = 10.0
            radius_squared = math.pow(diameter / 2.0, 2.0)
            matches = []
            for key, ((x2, y2, z2), p) in candidates.items():
                dist = math.pow(x - x2, 2.0) + math.pow(y - y2, 2.0) + math.pow(z - z2, 2.0)
                if dist < radius_squared:
                    if state == "Included":
                        matches.append(p)
                    remaining.pop(key, None)
            if state == "Included":
                gt.append(1.0)
                prob.append(max(matches) if matches else -1e9)
                divisor.append(uid)
                exclude.append(not matches)
        for _, p in remaining.values():
            gt.append(0.0)
            prob.append(p)
            divisor.append(uid)
            exclude.append(False)
    return gt, prob, divisor, exclude


def reference_evaluation(annotations, excluded, seriesuids, predictions, resamples=None):
    """(fps, sens, thresholds, sensitivities at the 7 points) of the point estimate; with
    ``resamples`` (N, n_scans) also the (N, 7 + K) sensitivities of the official bootstrap."""
    gt, prob, divisor, exclude = reference_froc_lists(annotations, excluded, seriesuids, predictions)
    fps, sens, thresholds = reference_compute_froc(gt, prob, len(seriesuids), exclude)
    at_points = np.interp(np.asarray(OPERATING_POINTS), fps, sens)
    if resamples is None:
        return fps, sens, thresholds, at_points
    points = np.concatenate([OPERATING_POINTS, BAND_FPS_PER_SCAN])
    by_scan: dict[str, list[int]] = {}
    for i, uid in enumerate(divisor):
        by_scan.setdefault(uid, []).append(i)
    curves = []
    for draw in resamples:
        entries = [i for j in draw for i in by_scan.get(seriesuids[j], [])]
        boot = [[gt[i] for i in entries], [prob[i] for i in entries], [exclude[i] for i in entries]]
        if sum(boot[0]) == 0:
            curves.append(np.full(len(points), np.nan))
            continue
        b_fps, b_sens, _ = reference_compute_froc(boot[0], boot[1], len(seriesuids), boot[2])
        curves.append(np.interp(points, b_fps, b_sens))
    return fps, sens, thresholds, at_points, np.asarray(curves)


# ----------------------------------------------------------------------------- helpers


def table(rows, name="table.csv") -> FindingTable:
    """A FindingTable from (uid, x, y, z, value) tuples; file rows 2, 3, ..."""
    uids = np.asarray([r[0] for r in rows], dtype=str)
    numbers = np.asarray([r[1:] for r in rows], dtype=np.float64).reshape(-1, 4)
    return FindingTable(Path(name), uids, numbers[:, :3].copy(), numbers[:, 3].copy(), np.arange(2, len(rows) + 2))


NO_FINDINGS = table([], "annotations_excluded.csv")


def random_case(rng: np.random.Generator, n_scans: int = 6):
    """Scans with nodules, excluded findings (some of diameter -1), marks on and off them with tied
    scores, some scans above 100 marks, and marks and nodules of unlisted scans."""
    uids = [f"scan{i}" for i in range(n_scans + 2)]
    listed = uids[:n_scans]
    nodules, excluded, marks = [], [], []
    levels = np.round(np.linspace(0.05, 0.95, 12), 2)  # few distinct scores: ties everywhere
    for uid in uids:
        for _ in range(rng.integers(0, 4)):
            centre = rng.uniform(-50, 50, 3)
            nodules.append((uid, *centre, float(rng.choice([4.0, 6.0, 10.0, 20.0]))))
            for _ in range(rng.integers(0, 3)):
                marks.append((uid, *(centre + rng.normal(0, 2.5, 3)), float(rng.choice(levels))))
        for _ in range(rng.integers(0, 3)):
            centre = rng.uniform(-50, 50, 3)
            excluded.append((uid, *centre, float(rng.choice([-1.0, 3.0, 8.0]))))
            if rng.random() < 0.7:
                marks.append((uid, *(centre + rng.normal(0, 2.0, 3)), float(rng.choice(levels))))
        n_random = int(rng.choice([0, 5, 30, 99, 104, 130]))
        for _ in range(n_random):
            marks.append((uid, *rng.uniform(-50, 50, 3), float(rng.choice(levels))))
    order = rng.permutation(len(marks))
    marks = [marks[i] for i in order]
    return table(nodules, "annotations.csv"), table(excluded, "annotations_excluded.csv"), listed, table(
        marks, "predictions.csv")


# ----------------------------------------------------------------------------- random cases


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_match_official_reference_exactly(seed):
    rng = np.random.default_rng(seed)
    annotations, excluded, listed, predictions = random_case(rng)
    if not any(uid in listed for uid in annotations.seriesuid):
        annotations = table([(listed[0], 0.0, 0.0, 0.0, 5.0)], "annotations.csv")
    fps, sens, thresholds, at_points = reference_evaluation(annotations, excluded, listed, predictions)
    result = evaluate_froc(annotations, excluded, listed, predictions)
    np.testing.assert_array_equal(result.fps_per_scan, fps)
    np.testing.assert_array_equal(result.sensitivity, sens)
    np.testing.assert_array_equal(result.thresholds, thresholds)
    assert list(result.sensitivity_at.values()) == at_points.tolist()
    assert result.cpm == float(np.mean(at_points))


@pytest.mark.parametrize("seed", range(4))
def test_random_bootstrap_matches_official_resampling(seed):
    rng = np.random.default_rng(100 + seed)
    annotations, excluded, listed, predictions = random_case(rng, n_scans=8)
    listed = listed + [listed[1]]  # a scan listed twice: it brings both copies each time it is drawn
    if not any(uid in listed for uid in annotations.seriesuid):
        annotations = table([(listed[0], 0.0, 0.0, 0.0, 5.0)], "annotations.csv")
    n_resamples = 40
    resamples = draw_bootstrap_resamples(len(listed), n_resamples, seed)
    *_, curves = reference_evaluation(annotations, excluded, listed, predictions, resamples)
    result = evaluate_froc(annotations, excluded, listed, predictions, bootstrap=n_resamples, seed=seed)
    boot = result.bootstrap
    valid = curves[np.isfinite(curves[:, 0])]
    assert boot.n_valid == len(valid)
    cpm = np.sort(valid[:, :7].mean(axis=1))
    lo, hi = int(math.floor(0.025 * len(valid))), int(math.floor(0.975 * len(valid)))
    close = {"rel": 0, "abs": 1e-12}  # the same values up to rounding (see evaluate._bootstrap_sensitivities)
    assert (boot.cpm.mean, boot.cpm.low, boot.cpm.high) == pytest.approx((cpm.mean(), cpm[lo], cpm[hi]), **close)
    for k, key in enumerate(KEYS):
        column = np.sort(valid[:, k])
        got = boot.sensitivity_at[key]
        assert (got.mean, got.low, got.high) == pytest.approx((column.mean(), column[lo], column[hi]), **close)
    band = np.sort(valid[:, 7:], axis=0)
    np.testing.assert_allclose(boot.band_low, band[lo], rtol=0, atol=1e-12)
    np.testing.assert_allclose(boot.band_high, band[hi], rtol=0, atol=1e-12)
    np.testing.assert_allclose(boot.band_mean, valid[:, 7:].mean(axis=0), rtol=0, atol=1e-12)


def test_bootstrap_is_exact_over_prefix_and_fallback():
    """Many scans and FPs, so that the bootstrap builds curves over a prefix (and falls back for some)."""
    rng = np.random.default_rng(7)
    rows_n, rows_m = [], []
    listed = [f"s{i}" for i in range(30)]
    for uid in listed:
        for _ in range(2):
            centre = rng.uniform(-50, 50, 3)
            rows_n.append((uid, *centre, 10.0))
            if rng.random() < 0.8:
                rows_m.append((uid, *centre, float(rng.uniform(0.3, 1.0))))
        # Heavy-tailed FP counts so that some resamples do not reach 8 FP/scan within the prefix.
        for _ in range(int(rng.choice([0, 2, 40]))):
            rows_m.append((uid, *rng.uniform(60, 90, 3), float(rng.choice([0.1, 0.2, rng.uniform(0, 1)]))))
    annotations, predictions = table(rows_n, "annotations.csv"), table(rows_m, "predictions.csv")
    resamples = draw_bootstrap_resamples(len(listed), 60, 3)
    *_, curves = reference_evaluation(annotations, NO_FINDINGS, listed, predictions, resamples)
    boot = evaluate_froc(annotations, NO_FINDINGS, listed, predictions, bootstrap=60, seed=3).bootstrap
    band = np.sort(curves[:, 7:], axis=0)
    np.testing.assert_allclose(boot.band_low, band[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(boot.band_high, band[58], rtol=0, atol=1e-12)
    np.testing.assert_allclose(boot.band_mean, curves[:, 7:].mean(axis=0), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- rules by hand


def test_more_than_100_marks_keeps_strictly_above_the_101st_with_ties():
    # 99 marks at 0.9, then 0.5, 0.5 (the 100th and 101st tie), 0.1: only the 99 at 0.9 stay.
    marks = [("a", 100.0 + i, 0.0, 0.0, 0.9) for i in range(99)]
    marks += [("a", 0.0, 0.0, 0.0, 0.5), ("a", 300.0, 0.0, 0.0, 0.5), ("a", 0.0, 0.5, 0.0, 0.1)]
    annotations = table([("a", 0.0, 0.0, 0.0, 6.0)])
    result = evaluate_froc(annotations, NO_FINDINGS, ["a"], table(marks))
    assert result.n_false_positives == 99
    assert result.n_detected == 0 and result.cpm == 0.0
    # 100 marks exactly: nothing is dropped, the nodule is found at 0.5.
    result = evaluate_froc(annotations, NO_FINDINGS, ["a"], table(marks[:100]))
    assert result.n_detected == 1 and result.nodules.score[0] == 0.5
    # 101 marks, the 101st (an FP at 0.1) below the 100th: the top 100 stay, the 101st is dropped.
    result = evaluate_froc(annotations, NO_FINDINGS, ["a"], table(marks[:100] + [("a", 300.0, 0.0, 0.0, 0.1)]))
    assert result.n_detected == 1 and result.n_false_positives == 99


def test_hit_is_strictly_inside_the_radius():
    annotations = table([("a", 0.0, 0.0, 0.0, 6.0)])
    on_border = evaluate_froc(annotations, NO_FINDINGS, ["a"], table([("a", 3.0, 0.0, 0.0, 0.8)]))
    assert on_border.n_detected == 0 and on_border.n_false_positives == 1
    inside = evaluate_froc(annotations, NO_FINDINGS, ["a"], table([("a", 2.999, 0.0, 0.0, 0.8)]))
    assert inside.n_detected == 1 and inside.n_false_positives == 0
    assert inside.nodules.detected.tolist() == [True] and inside.nodules.score.tolist() == [0.8]


def test_negative_excluded_diameter_counts_as_10_mm():
    annotations = table([("a", 100.0, 0.0, 0.0, 6.0)])
    excluded = table([("a", 0.0, 0.0, 0.0, -1.0)])
    marks = table([("a", 4.9, 0.0, 0.0, 0.7), ("a", 5.0, 0.0, 0.0, 0.6), ("a", 100.0, 0.0, 0.0, 0.5)])
    result = evaluate_froc(annotations, excluded, ["a"], marks)
    assert result.n_false_positives == 1  # the mark at 5.0 mm; 4.9 mm is on the excluded finding
    assert result.n_detected == 1


def test_double_detections_are_not_fps_and_the_nodule_takes_the_max():
    annotations = table([("a", 0.0, 0.0, 0.0, 10.0)])
    marks = table([("a", 1.0, 0.0, 0.0, 0.3), ("a", 0.0, 1.0, 0.0, 0.9), ("a", 0.0, 0.0, 1.0, 0.6),
                   ("a", 50.0, 0.0, 0.0, 0.8)])
    result = evaluate_froc(annotations, NO_FINDINGS, ["a"], marks)
    assert (result.n_detected, result.n_false_positives) == (1, 1)
    assert result.nodules.score.tolist() == [0.9] and result.nodules.prediction_row.tolist() == [3]
    # One positive at 0.9, one FP at 0.8: (0, 0) -> (0, 1) -> (1, 1) FP/scan.
    np.testing.assert_array_equal(result.fps_per_scan, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(result.sensitivity, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(result.thresholds, [np.inf, 0.9, 0.8])


def test_one_mark_may_hit_two_nodules():
    annotations = table([("a", 0.0, 0.0, 0.0, 10.0), ("a", 2.0, 0.0, 0.0, 10.0), ("a", 90.0, 0.0, 0.0, 10.0)])
    result = evaluate_froc(annotations, NO_FINDINGS, ["a"], table([("a", 1.0, 0.0, 0.0, 0.4)]))
    assert (result.n_detected, result.n_nodules, result.n_false_positives) == (2, 3, 0)
    assert result.nodules.detected.tolist() == [True, True, False]
    # No false positive at all: the official x is 0 everywhere, so every point reads 2/3.
    assert result.sensitivity_at == {key: 2 / 3 for key in KEYS}


def test_missed_nodule_counts_in_the_denominator_and_interpolation_at_the_7_points():
    # Two scans, four nodules, one missed. Positives 0.9, 0.7, 0.5; FPs 0.8, 0.6, 0.4, 0.3, 0.2.
    annotations = table([("a", 0.0, 0.0, 0.0, 10.0), ("a", 40.0, 0.0, 0.0, 10.0), ("b", 0.0, 0.0, 0.0, 10.0),
                         ("b", 40.0, 0.0, 0.0, 10.0)])
    marks = table([("a", 0.0, 0.0, 0.0, 0.9), ("b", 0.0, 0.0, 0.0, 0.7), ("a", 40.0, 0.0, 0.0, 0.5),
                   ("a", 90.0, 0.0, 0.0, 0.8), ("b", 90.0, 0.0, 0.0, 0.6), ("a", 90.0, 9.0, 0.0, 0.4),
                   ("b", 90.0, 9.0, 0.0, 0.3), ("b", 90.0, 19.0, 0.0, 0.2)])
    result = evaluate_froc(annotations, NO_FINDINGS, ["a", "b"], marks)
    assert (result.n_scans, result.n_nodules, result.n_detected, result.n_false_positives) == (2, 4, 3, 5)
    # Counts (FP, TP) per score: (0,1) (1,1) (1,2) (2,2) (2,3) (3,3) (4,3) (5,3); the steps of the
    # last three FPs are equal, so sklearn drops (3,3) and (4,3). Over 2 scans and 4 nodules:
    np.testing.assert_allclose(result.fps_per_scan, [0, 0, 0.5, 0.5, 1, 1, 2.5])
    np.testing.assert_allclose(result.sensitivity, [0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75])
    assert result.sensitivity_at == {"0.125": 0.25, "0.25": 0.25, "0.5": 0.5, "1.0": 0.75, "2.0": 0.75,
                                     "4.0": 0.75, "8.0": 0.75}
    assert result.cpm == pytest.approx((0.25 * 2 + 0.5 + 0.75 * 4) / 7)


def test_interpolation_between_vertices():
    # One scan, two nodules, one found at 0.5 after 2 FPs at 0.9 and 0.8, then 14 FPs below: the
    # curve jumps from 0 to 1/2 at 2 FP/scan, where it reads the upper vertex.
    annotations = table([("a", 0.0, 0.0, 0.0, 10.0), ("a", 50.0, 0.0, 0.0, 10.0)])
    marks = [("a", 0.0, 0.0, 0.0, 0.5), ("a", 99.0, 0.0, 0.0, 0.9), ("a", 99.0, 9.0, 0.0, 0.8)]
    marks += [("a", 99.0, 0.0, 9.0 * i, 0.4 - 0.01 * i) for i in range(1, 15)]
    result = evaluate_froc(annotations, NO_FINDINGS, ["a"], table(marks))
    np.testing.assert_allclose(result.fps_per_scan, [0, 1, 2, 2, 16])
    np.testing.assert_allclose(result.sensitivity, [0, 0, 0, 0.5, 0.5])
    assert [result.sensitivity_at[k] for k in KEYS] == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5]
    # Linear pieces: a diagonal from a tie of a positive and a FP at the same score.
    marks = [("a", 0.0, 0.0, 0.0, 0.5), ("a", 99.0, 0.0, 0.0, 0.5), ("a", 99.0, 9.0, 0.0, 0.4)]
    result = evaluate_froc(annotations, NO_FINDINGS, ["a"], table(marks))
    np.testing.assert_allclose(result.fps_per_scan, [0, 1, 2])
    assert result.sensitivity_at["0.125"] == 0.5 * 0.125 and result.sensitivity_at["0.5"] == 0.25
    assert result.sensitivity_at["8.0"] == 0.5


def test_excluded_hits_count_for_nothing_and_unlisted_scans_are_ignored():
    annotations = table([("a", 0.0, 0.0, 0.0, 10.0), ("z", 0.0, 0.0, 0.0, 10.0)])
    excluded = table([("a", 30.0, 0.0, 0.0, 6.0), ("z", 30.0, 0.0, 0.0, 6.0)])
    marks = table([("a", 30.0, 0.0, 0.0, 0.99), ("a", 0.0, 0.0, 0.0, 0.5), ("z", 0.0, 0.0, 0.0, 0.9),
                   ("z", 80.0, 0.0, 0.0, 0.9)])
    result = evaluate_froc(annotations, excluded, ["a", "b"], marks)
    assert (result.n_scans, result.n_nodules, result.n_detected, result.n_false_positives) == (2, 1, 1, 0)
    assert result.nodules.seriesuid.tolist() == ["a"]
    assert result.cpm == 1.0


def test_empty_predictions_give_cpm_zero(tmp_path):
    annotations = table([("a", 0.0, 0.0, 0.0, 10.0)])
    result = evaluate_froc(annotations, NO_FINDINGS, ["a"], table([]), bootstrap=5)
    assert result.cpm == 0.0 and result.sensitivity_at == {key: 0.0 for key in KEYS}
    assert result.bootstrap.cpm == result.bootstrap.sensitivity_at["8.0"]
    np.testing.assert_array_equal(result.fps_per_scan, [0.0])


def test_no_nodule_in_listed_scans_is_an_input_error():
    with pytest.raises(KitInputError, match="annotations.csv: no included nodule"):
        evaluate_froc(table([("z", 0.0, 0.0, 0.0, 5.0)], "annotations.csv"), NO_FINDINGS, ["a"], table([]))


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_of_a_single_scan_equals_the_point_estimate():
    rng = np.random.default_rng(3)
    annotations, excluded, _, predictions = random_case(rng, n_scans=8)
    uid = str(annotations.seriesuid[0])
    result = evaluate_froc(annotations, excluded, [uid], predictions, bootstrap=50, seed=1)
    boot = result.bootstrap
    assert boot.n_valid == 50
    close = {"rel": 0, "abs": 1e-12}
    assert (boot.cpm.mean, boot.cpm.low, boot.cpm.high) == pytest.approx((result.cpm,) * 3, **close)
    for key in KEYS:
        got = boot.sensitivity_at[key]
        assert (got.mean, got.low, got.high) == pytest.approx((result.sensitivity_at[key],) * 3, **close)
    np.testing.assert_allclose(boot.band_low, np.interp(BAND_FPS_PER_SCAN, result.fps_per_scan, result.sensitivity),
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(boot.band_low, boot.band_high)


def test_bootstrap_is_deterministic_by_seed():
    annotations, excluded, listed, predictions = random_case(np.random.default_rng(5), n_scans=8)
    runs = [evaluate_froc(annotations, excluded, listed, predictions, bootstrap=30, seed=s).to_json()
            for s in (11, 11, 12)]
    assert runs[0] == runs[1]
    assert runs[0]["bootstrap"] != runs[2]["bootstrap"]
    assert runs[0]["cpm"] == runs[2]["cpm"]


# ----------------------------------------------------------------------------- files and command


def write_case(folder: Path, rng_seed: int = 0):
    annotations, excluded, listed, predictions = random_case(np.random.default_rng(rng_seed), n_scans=6)
    paths = {name: folder / f"{name}.csv" for name in ("annotations", "excluded", "seriesuids", "predictions")}
    write_findings(paths["annotations"], annotations.seriesuid, annotations.world_xyz, annotations.value, "diameter_mm")
    write_findings(paths["excluded"], excluded.seriesuid, excluded.world_xyz, excluded.value, "diameter_mm")
    write_findings(paths["predictions"], predictions.seriesuid, predictions.world_xyz, predictions.value,
                   "probability")
    write_seriesuids(paths["seriesuids"], listed)
    return paths


def cli_args(paths, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--annotations", str(paths["annotations"]), "--excluded", str(paths["excluded"]),
            "--seriesuids", str(paths["seriesuids"]), "--predictions", str(paths["predictions"]),
            "--out", str(out), *extra]


def test_command_writes_all_outputs(tmp_path, capsys):
    paths = write_case(tmp_path)
    out = tmp_path / "out"
    assert main(cli_args(paths, out, "--bootstrap", "20", "--seed", "4")) == 0
    printed = capsys.readouterr().out
    assert "CPM" in printed and printed.count("FP/scan") == 7
    froc = json.loads((out / "froc.json").read_text(encoding="utf-8"))
    result = evaluate_files(paths["annotations"], paths["excluded"], paths["seriesuids"], paths["predictions"],
                            bootstrap=20, seed=4)
    assert froc == json.loads(json.dumps(result.to_json()))
    assert list(froc["sensitivity_at"]) == KEYS
    assert {"n_scans", "n_nodules", "n_detected", "cpm"} <= set(froc)
    assert set(froc["bootstrap"]["cpm"]) == {"mean", "low", "high"}
    curve = np.genfromtxt(out / "froc.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(curve["fps_per_scan"], result.fps_per_scan)
    np.testing.assert_array_equal(curve["threshold"], result.thresholds)
    assert (out / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "froc.html").read_text(encoding="utf-8")
    assert "threshold" in html and "plotly" in html.lower()
    nodules = (out / "froc_nodules.csv").read_text(encoding="utf-8").splitlines()
    assert len(nodules) == 1 + len(result.nodules.detected)
    assert sorted(p.name for p in out.iterdir()) == ["froc.csv", "froc.html", "froc.json", "froc.png",
                                                     "froc_nodules.csv"]


def test_write_outputs_without_bootstrap(tmp_path):
    paths = write_case(tmp_path, rng_seed=1)
    result = evaluate_files(paths["annotations"], paths["excluded"], paths["seriesuids"], paths["predictions"])
    written = write_outputs(result, tmp_path / "run")
    assert all(p.is_file() for p in written)
    assert "bootstrap" not in json.loads((tmp_path / "run" / "froc.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("content, message", [
    ("seriesuid,coordX,coordY,probability\na,1,2,0.5\n", "missing column"),
    ("seriesuid,coordX,coordY,coordZ,probability\na,1,2,3,high\n", "row 2: probability is not a number"),
    ("seriesuid,coordX,coordY,coordZ,probability\na,1,2,3,0.5\na,1,2,3,nan\n", "row 3: probability is not finite"),
])
def test_command_rejects_bad_predictions(tmp_path, capsys, content, message):
    paths = write_case(tmp_path)
    paths["predictions"].write_text(content)
    assert main(cli_args(paths, tmp_path / "out")) == 2
    error = capsys.readouterr().err
    assert "predictions.csv" in error and message in error
    assert not (tmp_path / "out").exists()


def test_command_accepts_empty_and_duplicate_predictions(tmp_path, capsys):
    paths = write_case(tmp_path)
    paths["predictions"].write_text("seriesuid,coordX,coordY,coordZ,probability\n")
    assert main(cli_args(paths, tmp_path / "empty")) == 0
    assert json.loads((tmp_path / "empty" / "froc.json").read_text(encoding="utf-8"))["cpm"] == 0.0
    # A duplicated FP row is two FPs, as in the official evaluation.
    annotations = table([("a", 0.0, 0.0, 0.0, 10.0)])
    once = evaluate_froc(annotations, NO_FINDINGS, ["a"], table([("a", 50.0, 0.0, 0.0, 0.5)]))
    twice = evaluate_froc(annotations, NO_FINDINGS, ["a"], table([("a", 50.0, 0.0, 0.0, 0.5)] * 2))
    assert (once.n_false_positives, twice.n_false_positives) == (1, 2)


def test_command_rejects_missing_file_and_empty_series_list(tmp_path, capsys):
    paths = write_case(tmp_path)
    missing = dict(paths, annotations=tmp_path / "nope.csv")
    assert main(cli_args(missing, tmp_path / "out")) == 2
    assert "nope.csv: file not found" in capsys.readouterr().err
    paths["seriesuids"].write_text("")
    assert main(cli_args(paths, tmp_path / "out")) == 2
    assert "seriesuids.csv: no series uid listed" in capsys.readouterr().err
