"""Paired CPM differences over seeds: resampled CPMs agree with the evaluation, verdicts follow the interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from focalmix_lib.data.luna_csv import FindingTable
from focalmix_lib.evaluation.bootstrap import draw_bootstrap_resamples
from focalmix_lib.evaluation.luna16 import evaluate_froc, resampled_cpms
from focalmix_lib.evaluation.paired import cpm_over_seeds, paired_cpm_difference, verdict_of

UIDS = [f"1.2.{i}" for i in range(12)]


def table(uids: list[str], xyz: np.ndarray, values: np.ndarray, name: str) -> FindingTable:
    return FindingTable(Path(name), np.asarray(uids, dtype=str), np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
                        np.asarray(values, dtype=np.float64), np.arange(2, 2 + len(uids)))


ANNOTATIONS = table(UIDS, np.zeros((12, 3)), np.full(12, 8.0), "annotations.csv")
NONE = table([], np.zeros((0, 3)), np.zeros(0), "annotations_excluded.csv")


def submission(rng: np.random.Generator, hit_fraction: float) -> FindingTable:
    """Per scan: a hit on its nodule with probability ``hit_fraction`` (score 0.9), and 6 false positives."""
    uids, xyz, probs = [], [], []
    for uid in UIDS:
        if rng.random() < hit_fraction:
            uids.append(uid), xyz.append([0.5, 0.0, 0.0]), probs.append(0.9)
        for _ in range(6):
            uids.append(uid), xyz.append(rng.uniform(50, 100, 3)), probs.append(rng.uniform(0.1, 0.95))
    return table(uids, np.array(xyz), np.array(probs), "predictions.csv")


def test_resampled_cpms_agree_with_the_evaluation_point_and_bootstrap() -> None:
    predictions = submission(np.random.default_rng(0), 0.6)
    result = evaluate_froc(ANNOTATIONS, NONE, UIDS, predictions, bootstrap=200, seed=3)
    identity = np.arange(len(UIDS))[None, :]
    assert resampled_cpms(ANNOTATIONS, NONE, UIDS, predictions, identity)[0] == pytest.approx(result.cpm, abs=1e-12)
    cpms = resampled_cpms(ANNOTATIONS, NONE, UIDS, predictions, draw_bootstrap_resamples(len(UIDS), 200, 3))
    assert np.nanmean(cpms) == pytest.approx(result.bootstrap.cpm.mean, abs=1e-12)


def test_identical_settings_differ_by_exactly_zero() -> None:
    runs = [submission(np.random.default_rng(s), 0.5) for s in range(3)]
    diff = paired_cpm_difference(ANNOTATIONS, NONE, UIDS, [(r, r) for r in runs], n_resamples=100)
    assert diff.per_seed == (0.0, 0.0, 0.0) and diff.low == diff.high == 0.0
    assert diff.verdict == "inconclusive"


def test_a_clear_gain_is_reproduced_and_its_reverse_contradicted() -> None:
    good = [submission(np.random.default_rng(s), 0.95) for s in range(3)]
    poor = [submission(np.random.default_rng(10 + s), 0.1) for s in range(3)]
    gain = paired_cpm_difference(ANNOTATIONS, NONE, UIDS, list(zip(good, poor)), n_resamples=300)
    assert gain.mean > 0.3 and gain.low > 0 and gain.verdict == "reproduced"
    assert gain.mean == pytest.approx(np.mean(gain.per_seed)) and gain.std == pytest.approx(np.std(gain.per_seed, ddof=1))
    loss = paired_cpm_difference(ANNOTATIONS, NONE, UIDS, list(zip(poor, good)), n_resamples=300)
    assert loss.high < 0 and loss.verdict == "contradicted"


def test_no_verdict_from_fewer_than_three_seeds() -> None:
    assert verdict_of(0.1, 0.3, n_seeds=2) == "inconclusive"
    assert verdict_of(0.1, 0.3, n_seeds=3) == "reproduced"
    assert verdict_of(-0.3, -0.1, n_seeds=3) == "contradicted"
    assert verdict_of(-0.1, 0.3, n_seeds=5) == "inconclusive"


def test_cpm_over_seeds_gives_each_seeds_cpm_and_an_interval_around_their_mean() -> None:
    runs = [submission(np.random.default_rng(s), 0.6) for s in range(3)]
    estimate = cpm_over_seeds(ANNOTATIONS, NONE, UIDS, runs, n_resamples=300)
    expected = [evaluate_froc(ANNOTATIONS, NONE, UIDS, r, bootstrap=0).cpm for r in runs]
    assert estimate.per_seed == pytest.approx(expected, abs=1e-12)
    assert estimate.mean == pytest.approx(np.mean(expected)) and estimate.std == pytest.approx(np.std(expected, ddof=1))
    assert estimate.low <= estimate.mean <= estimate.high
    # a single seed has a CPM but no spread
    assert cpm_over_seeds(ANNOTATIONS, NONE, UIDS, runs[:1], n_resamples=50).std is None
