"""The paper's ablation grid: which runs reproduce which table cells, for each profile.

Every row of a paper table (``focalmix_lib/paper/*.csv``) becomes a :class:`Cell`
with the TrainConfig fields that define it; the paper's labeled and unlabeled counts
are scaled to the profile's data set (``reproduction.profiles.ProfileScale``). Cells
that resolve to the same TrainConfig share one run (Table 1's "100 labeled + 400
unlabeled" is also Table 3b's K = 4 and Table 3c's image + object MixUp), so
:func:`build_grid` returns each run once, with every cell it fills.

Run ids are readable and stable: ``<method>-L<labeled>-U<unlabeled>-s<seed>-<hash>``,
the hash being that of the resolved TrainConfig, so a rerun finds its runs again.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from focalmix_lib.config import from_preset, to_dict
from focalmix_lib.data.dataset import Luna16Folder
from focalmix_lib.data.splits import split_scans
from focalmix_lib.reproduction.profiles import ProfileScale, resolve_profile
from focalmix_lib.training.config import TrainConfig

# "labels" is the kit's own: supervised CPM against the labeled budget (is the task data-hungry?).
TABLES = ("table1", "labels", "table3a", "table3b", "table3c", "table4", "figure3")
PAPER_LABELED = (25, 50, 100)  # Table 1's labeled budgets
NO_MIXUP = {"image_mixup": False, "object_mixup": False}


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
    """One training run of the grid: its id, its config, its notebook parameters and the cells it fills."""

    run_id: str
    method: str
    seed: int
    overrides: dict[str, Any]  # TrainConfig fields passed to notebook 05 (besides method and seed)
    cells: tuple[tuple[str, str], ...]  # (table, label) of every cell this run fills
    config: TrainConfig  # what the run trains with (its config.yaml)


def read_paper_table(filename: str) -> list[dict[str, str]]:
    """Rows of one of the paper's CSV files (package data in ``focalmix_lib/paper``)."""
    text = resources.files("focalmix_lib.paper").joinpath(filename).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def count_unlabeled(data_dir: str | Path) -> int:
    """Size of the data set's unlabeled pool (Table 4's largest pool on real data)."""
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
    for labeled in (*scale.labeled, 0):  # 0: every training scan
        cells.append(Cell("labels", f"{labeled} labeled" if labeled else "all labeled", {},
                          {**supervised, "labeled": labeled}))
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


def build_grid(profile: str | ProfileScale, data_dir: str | Path, seeds: int = 1, only: tuple[str, ...] = TABLES,
               largest_pool: int | None = None) -> tuple[list[Cell], list[GridRun]]:
    """The cells of the selected tables and the deduplicated runs that fill them, in a fixed order.

    Each cell runs the seeds ``first_seed ... first_seed + seeds - 1`` of the profile.
    ``largest_pool`` defaults to the profile's (or, for real data, the size of
    ``data_dir/unlabeled``). Runs are ordered by first use, seeds innermost.
    """
    unknown = sorted(set(only) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; choose from {', '.join(TABLES)}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    scale = resolve_profile(profile)
    pool = largest_pool if largest_pool is not None else (
        scale.largest_pool if scale.largest_pool is not None else count_unlabeled(data_dir))
    cells = [cell for cell in paper_cells(scale, pool) if cell.table in only]
    runs: dict[str, GridRun] = {}
    for cell in cells:
        for seed in range(scale.first_seed, scale.first_seed + seeds):
            settings = {**scale.overrides, **cell.settings}
            cfg = resolved_config(scale.preset, data_dir, settings, seed)
            rid = run_id(cfg)
            if rid in runs:
                old = runs[rid]
                runs[rid] = GridRun(rid, old.method, seed, old.overrides, old.cells + (cell.key,), old.config)
            else:
                overrides = {k: v for k, v in settings.items() if k != "method"}
                runs[rid] = GridRun(rid, settings["method"], seed, overrides, (cell.key,), cfg)
    return cells, list(runs.values())


def check_grid_data(runs: list[GridRun]) -> None:
    """Refuse, before any work, a data folder that cannot serve every run of the grid.

    Each distinct split (test subsets, labeled and unlabeled counts) is drawn once, as
    training will draw it; a missing test subset or too few scans raises KitInputError
    naming the folder (phantoms of another profile, say).
    """
    folders: dict[str, Luna16Folder] = {}
    splits = {(c.data_dir, c.test_subsets, c.labeled, c.unlabeled if c.method == "focalmix" else 0, c.split_seed)
              for c in (run.config for run in runs)}
    for data_dir, test_subsets, labeled, unlabeled, split_seed in sorted(splits):
        folder = folders.setdefault(data_dir, Luna16Folder(data_dir))
        split_scans(folder, test_subsets, labeled, unlabeled, split_seed)


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
