"""Is one setting better than another? A paired CPM difference over seeds, with its interval.

:func:`cpm_over_seeds` gives one setting's CPM over seeds with the same interval.

Each seed trains both settings and scores both on the same test scans, so the two CPMs
of a seed are paired. The interval comes from a two-level bootstrap: the test scans are
resampled (one draw shared by every seed and both settings, since they all see the same
scans) and the seeds are resampled; each resample gives the mean over its seeds of
CPM(better) - CPM(worse). The verdict needs at least :data:`MIN_SEEDS` seeds:

* ``reproduced``: the whole 95 % interval lies above zero;
* ``contradicted``: the whole interval lies below zero;
* ``inconclusive``: it contains zero, or there are fewer than 3 seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from focalmix_lib.data.luna_csv import FindingTable
from focalmix_lib.evaluation.bootstrap import draw_bootstrap_resamples, mean_interval
from focalmix_lib.evaluation.luna16 import resampled_cpms

MIN_SEEDS = 3


@dataclass(frozen=True)
class SeedEstimate:
    """A CPM (or CPM difference) per seed, their mean and sample std, and the bootstrap 95 % interval of the mean."""

    per_seed: tuple[float, ...]
    mean: float
    std: float | None
    low: float
    high: float


@dataclass(frozen=True)
class PairedDifference(SeedEstimate):
    """CPM(better) - CPM(worse) over seeds, with the verdict of its interval."""

    verdict: str = "inconclusive"


def cpm_over_seeds(
    annotations: FindingTable, excluded: FindingTable, seriesuids: Sequence[str],
    submissions: Sequence[FindingTable], n_resamples: int = 1000, seed: int = 0,
) -> SeedEstimate:
    """The CPM of one setting over seeds (one submission a seed), with the same two-level bootstrap."""
    if not submissions:
        raise ValueError("no run to score")
    return _over_scans_and_seeds(annotations, excluded, seriesuids, [(s, None) for s in submissions],
                                 n_resamples, seed)


def paired_cpm_difference(
    annotations: FindingTable, excluded: FindingTable, seriesuids: Sequence[str],
    pairs: Sequence[tuple[FindingTable, FindingTable]], n_resamples: int = 1000, seed: int = 0,
) -> PairedDifference:
    """The paired CPM difference of ``pairs`` (one ``(better, worse)`` pair of submissions a seed).

    Returns the per-seed differences of the point CPMs, their mean and std (ddof = 1),
    and the interval of the mean over ``n_resamples`` resamples of scans and seeds.
    """
    if not pairs:
        raise ValueError("no pair of runs to compare")
    estimate = _over_scans_and_seeds(annotations, excluded, seriesuids, pairs, n_resamples, seed)
    return PairedDifference(**vars(estimate), verdict=verdict_of(estimate.low, estimate.high, len(pairs)))


def _over_scans_and_seeds(
    annotations: FindingTable, excluded: FindingTable, seriesuids: Sequence[str],
    pairs: Sequence[tuple[FindingTable, FindingTable | None]], n_resamples: int, seed: int,
) -> SeedEstimate:
    """CPM(first) - CPM(second) (CPM(first) when second is None) per seed, over resampled scans and seeds."""
    resamples = draw_bootstrap_resamples(len(seriesuids), n_resamples, seed)
    identity = np.arange(len(seriesuids))[None, :]

    def cpms(first: FindingTable, second: FindingTable | None, draws: np.ndarray) -> np.ndarray:
        values = resampled_cpms(annotations, excluded, seriesuids, first, draws)
        return values if second is None else values - resampled_cpms(annotations, excluded, seriesuids, second, draws)

    per_seed = [float(cpms(first, second, identity)[0]) for first, second in pairs]
    by_seed = np.stack([cpms(first, second, resamples) for first, second in pairs], axis=1)  # (R, S)
    seed_draws = np.random.default_rng([seed, 1]).integers(0, len(pairs), size=(n_resamples, len(pairs)))
    means = np.take_along_axis(by_seed, seed_draws, axis=1).mean(axis=1)
    _, low, high = mean_interval(means[np.isfinite(means)][:, None])
    std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    return SeedEstimate(tuple(per_seed), float(np.mean(per_seed)), std, float(low[0]), float(high[0]))


def verdict_of(low: float, high: float, n_seeds: int) -> str:
    """``reproduced`` (interval above 0), ``contradicted`` (below 0) or ``inconclusive``."""
    if n_seeds < MIN_SEEDS:
        return "inconclusive"
    return "reproduced" if low > 0 else "contradicted" if high < 0 else "inconclusive"
