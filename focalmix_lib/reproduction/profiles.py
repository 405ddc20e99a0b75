"""Reproduction profiles: how big the reproduction is, from a CPU smoke test to the paper's scale.

A :class:`ProfileScale` is resolved once from its name (:func:`resolve_profile`) and then
travels as an object through the grid, the runner and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProfileScale:
    """How a profile maps the paper's counts onto its data set, and what its runs look like.

    ``labeled`` stands for the paper's 25 / 50 / 100 labeled scans, ``unlabeled`` for its
    400 unlabeled scans, ``largest_pool`` for Table 4's ~3,000 NLST scans (``None``: the
    whole ``unlabeled/`` folder of the data set), ``pool_sizes`` for Figure 3's x axis.
    ``preset`` names the TrainConfig preset of the runs and (unless ``phantom_preset``) the
    phantom preset of the data ``reproduce`` generates, ``phantoms`` the PhantomProfile
    overrides of those data;
    ``overrides`` are TrainConfig fields applied to every run of the profile.
    """

    name: str
    preset: str
    labeled: tuple[int, int, int]
    unlabeled: int
    largest_pool: int | None
    pool_sizes: tuple[int, ...]
    phantoms: dict[str, Any] = field(default_factory=dict)
    phantom_preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    smoke: bool = False  # numbers are a smoke test of the pipeline, not a result
    tables: tuple[str, ...] | None = None  # what ``reproduce`` runs without --only (None: every table)
    seeds: int = 1  # seeds per cell without --seeds
    first_seed: int = 0  # seeds first_seed, first_seed + 1, ...: seeds that chose settings are not reported


PROFILES: dict[str, ProfileScale] = {
    # 24 labeled phantoms in 8 subsets: 21 training scans, 3 test scans (subset 7),
    # 16 unlabeled. Runs are 30 steps and detection keeps 20 boxes a scan (enough for
    # 8 FPs per scan): chapters + 19 runs fit in 20 minutes of a 2-core CPU.
    "quick": ProfileScale(
        name="quick", preset="quick", labeled=(4, 8, 16), unlabeled=8, largest_pool=16, pool_sizes=(0, 4, 8, 16),
        phantoms={"n_subsets": 8},
        overrides={"test_subsets": (7,), "steps": 30, "batch_labeled": 2, "batch_unlabeled": 2,
                   "warmup_steps": 3, "rampup_steps": 15, "checkpoint_every": 15, "window_overlap": 0.0,
                   "max_detections": 20},
        smoke=True,
    ),
    # The quick model on the cpu phantoms: 100 labeled in 5 subsets (60 training scans, 40 test
    # scans in subsets 3 and 4), 32 unlabeled; 1,500-step runs of ~4 min (supervised) and ~11 min
    # (FocalMix) on 2 cores, at the standard learning rate (the quick preset's 3e-3 leaves the
    # focal loss's plateau late or never; at 600 steps the all-labels detector stops near 67 %).
    # Without --only it runs Table 1 and the label-budget curve with 3 seeds. Seed 0 chose lr,
    # steps and mixup_start_step (docs/reproduce.md), so the reported seeds are 1, 2, 3.
    "cpu": ProfileScale(
        name="cpu", preset="quick", labeled=(4, 8, 16), unlabeled=32, largest_pool=32, pool_sizes=(0, 8, 16, 32),
        phantom_preset="cpu",
        overrides={"test_subsets": (3, 4), "lr": 1e-3, "steps": 1500, "mixup_start_step": 200},
        tables=("table1", "labels"), seeds=3, first_seed=1,
    ),
    # The standard phantoms: 160 labeled in 10 subsets (128 training, 32 test), 400 unlabeled.
    "standard": ProfileScale(
        name="standard", preset="standard", labeled=(25, 50, 100), unlabeled=400, largest_pool=400, pool_sizes=(0, 100, 200, 400),
    ),
    # Real LUNA16 (or the paper-sized phantoms) with an unlabeled pool such as NLST.
    "paper": ProfileScale(
        name="paper", preset="paper", labeled=(25, 50, 100), unlabeled=400, largest_pool=None, pool_sizes=(0, 100, 200, 400),
    ),
}


# What the smoke report, the reproduce command's help and its last line point users to.
CPU_EVIDENCE_COMMAND = "focalmix reproduce --profile cpu --out reports/cpu"
CPU_EVIDENCE_TIME = "about 2.5 hours"  # measured: docs/reproduce.md, "The cpu profile"


def resolve_profile(profile: str | ProfileScale) -> ProfileScale:
    """The profile of this name (a :class:`ProfileScale` is returned as it is)."""
    if isinstance(profile, ProfileScale):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown reproduction profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile]
