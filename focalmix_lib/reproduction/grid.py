"""The paper's ablation grid: which runs reproduce which table cells, for each profile.

Every row of a paper table (``focalmix_lib/paper/*.csv``) becomes a :class:`Cell`
with the TrainConfig fields that define it; the paper's labeled and unlabeled counts
are scaled to the profile's data set (:class:`ProfileScale`). Cells that resolve to the
same TrainConfig share one run (Table 1's "100 labeled + 400 unlabeled" is also Table
3b's K = 4 and Table 3c's image + object MixUp), so :func:`build_grid` returns each
run once, with every cell it fills.

Run ids are readable and stable: ``<method>-L<labeled>-U<unlabeled>-s<seed>-<hash>``,
the hash being that of the resolved TrainConfig, so a rerun finds its runs again.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from focalmix_lib.config import from_preset, to_dict
from focalmix_lib.training.config import TrainConfig

TABLES = ("table1", "table3a", "table3b", "table3c", "table4", "figure3")
PAPER_LABELED = (25, 50, 100)  # Table 1's labeled budgets
NO_MIXUP = {"image_mixup": False, "object_mixup": False}


@dataclass(frozen=True)
class ProfileScale:
    """How a profile maps the paper's counts onto its data set, and what its runs look like.

    ``labeled`` stands for the paper's 25 / 50 / 100 labeled scans, ``unlabeled`` for its
    400 unlabeled scans, ``largest_pool`` for Table 4's ~3,000 NLST scans (``None``: the
    whole ``unlabeled/`` folder of the data set), ``pool_sizes`` for Figure 3's x axis.
    ``phantoms`` are the PhantomProfile overrides of the data ``reproduce`` generates;
    ``overrides`` are TrainConfig fields applied to every run of the profile.
    """

    name: str
    labeled: tuple[int, int, int]
    unlabeled: int
    largest_pool: int | None
    pool_sizes: tuple[int, ...]
    phantoms: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    smoke: bool = False  # numbers are a smoke test of the pipeline, not a result


PROFILES: dict[str, ProfileScale] = {
    # 24 labeled phantoms in 8 subsets: 21 training scans, 3 test scans (subset 7),
    # 16 unlabeled. Runs are 30 steps and detection keeps 20 boxes a scan (enough for
    # 8 FPs per scan): chapters + 19 runs fit in 20 minutes of a 2-core CPU.
    "quick": ProfileScale(
        name="quick", labeled=(4, 8, 16), unlabeled=8, largest_pool=16, pool_sizes=(0, 4, 8, 16),
        phantoms={"n_subsets": 8},
        overrides={"test_subsets": (7,), "steps": 30, "batch_labeled": 2, "batch_unlabeled": 2,
                   "warmup_steps": 3, "rampup_steps": 15, "checkpoint_every": 15, "window_overlap": 0.0,
                   "max_detections": 20},
        smoke=True,
    ),
    # The standard phantoms: 160 labeled in 10 subsets (128 training, 32 test), 400 unlabeled.
    "standard": ProfileScale(
        name="standard", labeled=(25, 50, 100), unlabeled=400, largest_pool=400, pool_sizes=(0, 100, 200, 400),
    ),
    # Real LUNA16 (or the paper-sized phantoms) with an unlabeled pool such as NLST.
    "paper": ProfileScale(
        name="paper", labeled=(25, 50, 100), unlabeled=400, largest_pool=None, pool_sizes=(0, 100, 200, 400),
    ),
}


@dataclass(frozen=True)
class Cell:
    """One row of a paper table: its label, the paper's numbers and the run settings."""

    table: str
    label: str
    paper: dict[str, str]  # the CSV row of the paper ("Fail" where training diverged)
    settings: dict[str, Any]  # TrainConfig fields (before the profile's overrides and the seed)

    @property
    def key(self) -> tuple[str, str]:
        return self.table, self.label


@dataclass(frozen=True)
class GridRun:
    """One training run of the grid: its id, its notebook parameters and the cells it fills."""

    run_id: str
    method: str
    seed: int
    overrides: dict[str, Any]  # TrainConfig fields passed to notebook 05 (besides method and seed)
    cells: tuple[tuple[str, str], ...]  # (table, label) of every cell this run fills


def read_paper_table(filename: str) -> list[dict[str, str]]:
    """Rows of one of the paper's CSV files (package data in ``focalmix_lib/paper``)."""
    text = resources.files("focalmix_lib.paper").joinpath(filename).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def count_unlabeled(data_dir: str | Path) -> int:
    """Size of the data set's unlabeled pool (Table 4's largest pool on real data)."""
    from focalmix_lib.data.dataset import Luna16Folder

    return len(Luna16Folder(data_dir).unlabeled_paths())


def paper_cells(scale: ProfileScale, largest_pool: int) -> list[Cell]:
    """Every row of Tables 1, 3a, 3b, 3c, 4 and every point of Figure 3, with its settings."""
    budgets = dict(zip(PAPER_LABELED, scale.labeled))
    top = scale.labeled[-1]  # the paper's 100 labeled scans
    supervised = {"method": "supervised", "unlabeled": 0}
    focalmix = {"method": "focalmix", "unlabeled": scale.unlabeled}
    cells: list[Cell] = []
    for row in read_paper_table("table1_main_results.csv"):
        labeled, unlabeled = int(row["labeled"]), int(row["unlabeled"])
        method = supervised if unlabeled == 0 else focalmix
        cells.append(Cell("table1", f"{labeled} labeled + {unlabeled} unlabeled", row,
                          {**method, "labeled": budgets[labeled]}))
    for row in read_paper_table("table3a_loss_function.csv"):
        settings = {**supervised, "labeled": top} if row["loss"] == "supervised" else {
            **focalmix, "labeled": top, **NO_MIXUP,
            "soft_alpha": row["soft_alpha"] == "true", "soft_beta": row["soft_beta"] == "true"}
        cells.append(Cell("table3a", row["loss"], row, settings))
    for row in read_paper_table("table3b_augmentation_times.csv"):
        cells.append(Cell("table3b", f"K = {row['K']}", row, {**focalmix, "labeled": top,
                                                              "augmentations": int(row["K"])}))
    for row in read_paper_table("table3c_mixup.csv"):
        image, obj = row["image_mixup"] == "true", row["object_mixup"] == "true"
        label = "image + object MixUp" if obj else "image MixUp" if image else "no MixUp"
        cells.append(Cell("table3c", label, row, {**focalmix, "labeled": top, "image_mixup": image,
                                                  "object_mixup": obj}))
    table4 = [{**supervised, "labeled": 0}, {**supervised, "labeled": 0, "image_mixup": True, "object_mixup": True},
              {"method": "focalmix", "labeled": 0, "unlabeled": largest_pool}]
    for row, settings in zip(read_paper_table("table4_full_scale.csv"), table4):
        cells.append(Cell("table4", row["model"], row, settings))
    for pool in scale.pool_sizes:
        settings = {**supervised, "labeled": top} if pool == 0 else {**focalmix, "labeled": top, "unlabeled": pool}
        cells.append(Cell("figure3", f"{pool} unlabeled", {}, settings))
    return cells


def resolved_config(preset: str, data_dir: str | Path, settings: dict[str, Any], seed: int) -> TrainConfig:
    """The TrainConfig a run trains with (what its config.yaml records)."""
    return from_preset(TrainConfig, preset, data_dir=str(data_dir), seed=seed, **settings).resolved()


def run_id(cfg: TrainConfig) -> str:
    """``<method>-L<labeled>-U<unlabeled>-s<seed>-<8 hex digits of the config's hash>``."""
    values = {k: v for k, v in to_dict(cfg).items() if k not in ("data_dir", "cache_dir", "device")}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
    unlabeled = cfg.unlabeled if cfg.method == "focalmix" else 0
    return f"{cfg.method}-L{cfg.labeled or 'all'}-U{unlabeled}-s{cfg.seed}-{digest}"


def build_grid(profile: str, data_dir: str | Path, seeds: int = 1, only: tuple[str, ...] = TABLES,
               largest_pool: int | None = None) -> tuple[list[Cell], list[GridRun]]:
    """The cells of the selected tables and the deduplicated runs that fill them, in a fixed order.

    ``largest_pool`` defaults to the profile's (or, for real data, the size of
    ``data_dir/unlabeled``). Runs are ordered by first use, seeds innermost.
    """
    unknown = sorted(set(only) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; choose from {', '.join(TABLES)}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    scale = PROFILES[profile]
    pool = largest_pool if largest_pool is not None else (
        scale.largest_pool if scale.largest_pool is not None else count_unlabeled(data_dir))
    cells = [cell for cell in paper_cells(scale, pool) if cell.table in only]
    runs: dict[str, GridRun] = {}
    for cell in cells:
        for seed in range(seeds):
            settings = {**scale.overrides, **cell.settings}
            rid = run_id(resolved_config(profile, data_dir, settings, seed))
            if rid in runs:
                old = runs[rid]
                runs[rid] = GridRun(rid, old.method, seed, old.overrides, old.cells + (cell.key,))
            else:
                overrides = {k: v for k, v in settings.items() if k != "method"}
                runs[rid] = GridRun(rid, settings["method"], seed, overrides, (cell.key,))
    return cells, list(runs.values())


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n); e.g. ``--shard $SLURM_ARRAY_TASK_ID/4`` with ``--array=0-3``."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def shard_runs(runs: list[GridRun], shard: tuple[int, int]) -> list[GridRun]:
    """The runs of shard ``i`` of ``n``: every n-th run starting at i (balances costly runs)."""
    i, n = shard
    return runs[i::n]
