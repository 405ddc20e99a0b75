"""The reproduction grid, its resumable runner and the tables, with a fake notebook executor.

The fake writes what notebook 05 leaves in a run folder (config.yaml, status,
froc.json) without training, so the whole grid runs in a second or two (on the quick profile's real phantoms).
"""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from focalmix_lib import atomic
from focalmix_lib.config import from_preset, load_yaml, save_yaml
from focalmix_lib.errors import KitInputError
from focalmix_lib.evaluation.results import OPERATING_POINT_KEYS
from focalmix_lib.reproduction.grid import TABLES, build_grid, parse_shard, read_paper_table, shard_runs
from focalmix_lib.reproduction.profiles import PROFILES
from focalmix_lib.reproduction.runner import ReproduceOutcome, reproduce
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.run_folder import RunFolder

PAPER_FILES = {"table1": "table1_main_results.csv", "table3a": "table3a_loss_function.csv",
               "table3b": "table3b_augmentation_times.csv", "table3c": "table3c_mixup.csv",
               "table4": "table4_full_scale.csv"}


class FakeExecutor:
    """Stands in for papermill + notebook 05: 'both soft terms off' diverges, ``fail_method`` raises."""

    def __init__(self, fail_labeled: int | None = None):
        self.calls: list[Path] = []
        self.fail_labeled = fail_labeled

    def __call__(self, run_dir: Path, parameters: dict[str, Any]) -> Path:
        self.calls.append(run_dir)
        overrides = parameters["overrides"]
        cfg = from_preset(TrainConfig, parameters["preset"], data_dir=parameters["data_dir"],
                          method=parameters["method"], seed=parameters["seed"], **overrides).resolved()
        folder = RunFolder(run_dir)
        save_yaml(cfg, folder.config_path)
        if overrides["labeled"] == self.fail_labeled:
            folder.set_status("failed", "Traceback ...\nRuntimeError: out of memory")
            raise RuntimeError("out of memory")
        if cfg.method == "focalmix" and not cfg.soft_alpha and not cfg.soft_beta:
            folder.set_status("diverged", "non-finite loss (nan) at step 3")
            return run_dir / "05_train.ipynb"
        cpm = (zlib.crc32(run_dir.name.encode()) % 1000) / 1000  # a distinct, repeatable CPM per run
        atomic.write_json(folder.froc_path, {"cpm": cpm, "sensitivity_at": {k: cpm for k in OPERATING_POINT_KEYS}})
        folder.set_status("completed")
        return run_dir / "05_train.ipynb"


@pytest.fixture(scope="module")
def profile_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick reproduction profile's phantoms (8 subsets, tests on subset 7). Read only."""
    from focalmix_lib.data.phantoms import make_phantoms, profile_from_name

    out = tmp_path_factory.mktemp("profile") / "data"
    make_phantoms(out, profile_from_name("quick", **PROFILES["quick"].phantoms), seed=0, progress=False)
    return out


def run_quick(tmp_path: Path, data: Path, executor: FakeExecutor, **kwargs: Any) -> ReproduceOutcome:
    return reproduce("quick", tmp_path / "reports", data=data, chapters=False, executor=executor,
                     progress=False, **kwargs)


def test_grid_has_a_run_for_every_paper_row_and_shares_runs() -> None:
    cells, runs = build_grid("standard", "unused", seeds=1)
    for table, filename in PAPER_FILES.items():
        assert [c.paper for c in cells if c.table == table] == read_paper_table(filename)
    filled = [key for run in runs for key in run.cells]
    assert sorted(filled) == sorted(c.key for c in cells)  # every cell once, by exactly one run
    assert len({r.run_id for r in runs}) == len(runs) == 19  # 29 cells, 10 shared ("all labeled" is Table 4's)
    assert [c.settings["labeled"] for c in cells if c.table == "labels"] == [25, 50, 100, 0]  # 0: every scan
    shared = {run.cells for run in runs if len(run.cells) > 1}
    assert (("table1", "100 labeled + 400 unlabeled"), ("table3b", "K = 4"), ("table3c", "image + object MixUp"),
            ("figure3", "400 unlabeled")) in shared
    assert (("table1", "100 labeled + 0 unlabeled"), ("labels", "100 labeled"), ("table3a", "supervised"),
            ("figure3", "0 unlabeled")) in shared
    assert (("labels", "all labeled"), ("table4", "Fully-supervised")) in shared
    by_cell = {key: run for run in runs for key in run.cells}
    both_off = by_cell["table3a", "SFL w/o soft alpha and beta"]
    assert both_off.overrides | {"soft_alpha": False, "soft_beta": False, "image_mixup": False,
                                 "object_mixup": False, "labeled": 100, "unlabeled": 400} == both_off.overrides
    assert by_cell["table3b", "K = 8"].overrides["augmentations"] == 8
    assert by_cell["table4", "FocalMix"].overrides == {"labeled": 0, "unlabeled": 400}
    assert by_cell["table4", "Fully-supervised w/ MixUp"].method == "supervised"
    cells2, runs2 = build_grid("standard", "unused", seeds=2, only=("table3b",))
    assert len(runs2) == 8 and {r.seed for r in runs2} == {0, 1}


def test_shards_partition_the_grid() -> None:
    _, runs = build_grid("quick", "unused", seeds=2)
    shards = [shard_runs(runs, (i, 3)) for i in range(3)]
    assert sorted(r.run_id for s in shards for r in s) == sorted(r.run_id for r in runs)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    with pytest.raises(ValueError, match="unknown table"):
        build_grid("quick", "unused", only=("table9",))


def test_grid_runs_reports_and_a_rerun_skips_finished_runs(tmp_path: Path, profile_phantoms: Path) -> None:
    executor = FakeExecutor(fail_labeled=4)  # the 25-labeled runs of Table 1 fail
    outcome = run_quick(tmp_path, profile_phantoms, executor)
    tables = outcome.tables
    _, runs = build_grid("quick", profile_phantoms)
    assert len(executor.calls) == len(runs)  # a failing and a diverged run do not stop the grid
    failing = sorted(r.run_id for r in runs if r.overrides["labeled"] == 4)
    assert sorted(line.split(":")[0] for line in outcome.failed_runs) == failing  # reported; diverged runs are not
    assert all("RuntimeError: out of memory" in line for line in outcome.failed_runs)
    text = tables.read_text(encoding="utf-8")
    table1 = text.split("## Table 1")[1].split("## ")[0]
    assert "| 25 labeled + 0 unlabeled | paper | 46.7 | 54.0 | 60.6 | 68.6 | 74.4 | 79.1 | 82.4 | 66.6 |" in table1
    assert "1 failed of 1" in table1
    fifty = next(r for r in runs if ("table1", "50 labeled + 0 unlabeled") in r.cells)
    kit_cpm = json.loads((tmp_path / "reports/runs" / fifty.run_id / "froc.json").read_text(encoding="utf-8"))["cpm"]
    assert f"| 50 labeled + 0 unlabeled | paper | 57.2 |" in table1
    assert f"{100 * kit_cpm:.1f} |" in table1.split("| 50 labeled + 0 unlabeled |")[1].split("\n")[1]
    table3a = text.split("## Table 3a")[1].split("## ")[0]
    assert "| SFL w/o soft alpha and beta | Fail | Fail |" in table3a
    assert "| SFL without soft alpha and beta diverges | inconclusive |  | diverged in 1 of 1 seeds |" in text
    assert "RuntimeError: out of memory" in text  # the failed runs' error, in the runs section
    assert (tmp_path / "reports/figure3.png").stat().st_size > 1000
    assert "![Figure 3: CPM against the unlabeled pool size](figure3.png)" in text
    assert '<img alt="Figure 3' in (tmp_path / "reports/tables.html").read_text(encoding="utf-8")
    rows = list(csv.DictReader((tmp_path / "reports/tables.csv").open()))
    sfl = next(r for r in rows if r["table"] == "table3a" and r["row"] == "SFL")
    assert sfl["paper"] == "85.2" and sfl["kit_seeds"] == "1" and sfl["scale"] == "smoke"
    assert "Smoke scale" in text

    rerun = FakeExecutor()  # completed and diverged runs are skipped; failed ones are retried
    assert run_quick(tmp_path, profile_phantoms, rerun).failed_runs == ()
    assert sorted(p.name for p in rerun.calls) == sorted(r.run_id for r in runs if ("table1", "25 labeled + 0 unlabeled")
                                                          in r.cells or ("table1", "25 labeled + 400 unlabeled") in r.cells)
    assert "failed" not in (tmp_path / "reports/tables.md").read_text(encoding="utf-8").split("## Table 1")[1].split("## ")[0]


def test_shards_then_collect_fill_every_table(tmp_path: Path, profile_phantoms: Path) -> None:
    executor = FakeExecutor()
    assert run_quick(tmp_path, profile_phantoms, executor, seeds=2, shard=(0, 2)).tables is None
    assert run_quick(tmp_path, profile_phantoms, executor, seeds=2, shard=(1, 2)).tables is None
    _, runs = build_grid("quick", profile_phantoms, seeds=2)
    assert sorted(p.name for p in executor.calls) == sorted(r.run_id for r in runs)
    tables = run_quick(tmp_path, profile_phantoms, FakeExecutor(), seeds=2, collect=True).tables
    text = tables.read_text(encoding="utf-8")
    tables_part = text.split("## Table 1")[1].split("## Runs")[0]
    assert "0 pending" in text and "pending" not in tables_part and "| — |" not in tables_part.replace("| — | ", "")
    assert all(f"## {title}" in text for title in ("Table 1", "Table 3a", "Table 3b", "Table 3c", "Table 4",
                                                    "Figure 3"))
    assert "±" in text.split("## Table 3b")[1].split("## ")[0]  # mean ± std over the two seeds
    assert set(TABLES) == {r["table"] for r in csv.DictReader((tmp_path / "reports/tables.csv").open())}


def test_chapters_run_once_in_order_with_declared_parameters(tmp_path: Path) -> None:
    from focalmix_lib.reproduction.runner import ReproducePaths, run_chapters

    calls: list[tuple[str, dict[str, Any]]] = []

    def runner(name: str, out_dir: Path, parameters: dict[str, Any]) -> Path:
        calls.append((name, parameters))
        if name.startswith("04"):
            raise RuntimeError("kernel died")
        return out_dir / name

    paths = ReproducePaths(tmp_path / "reports", tmp_path / "data")
    outcomes = run_chapters(PROFILES["quick"], paths, runner)
    names = [name[:2] for name, _ in calls]
    assert names == ["00", "01", "02", "03", "04", "05", "06"]  # 06 reads chapter 05's trained run
    params = dict(calls)
    assert params["05_train.ipynb"]["overrides"]["steps"] == 30 and params["05_train.ipynb"]["quick"] is True
    assert "overrides" not in params["00_quickstart.ipynb"]  # only what a chapter declares
    assert params["06_evaluate.ipynb"]["run_dir"] == params["05_train.ipynb"]["run_dir"]
    failed = [o for o in outcomes if o["status"] == "failed"]
    assert [o["chapter"][:2] for o in failed] == ["04"] and "RuntimeError: kernel died" in failed[0]["error"]
    calls.clear()
    run_chapters(PROFILES["quick"], paths, runner)  # a rerun only retries the failed chapter
    assert [name[:2] for name, _ in calls] == ["04"]


def test_data_of_another_profile_is_refused_before_any_work(tmp_path: Path, quick_phantoms: Path) -> None:
    executor = FakeExecutor()  # make-data's quick phantoms have 2 subsets; the quick profile tests on subset 7
    with pytest.raises(KitInputError, match=r"no scans in the test subsets \[7\]"):
        run_quick(tmp_path, quick_phantoms, executor)
    assert executor.calls == []


def test_an_existing_data_folder_is_never_replaced(tmp_path: Path) -> None:
    notes = tmp_path / "reports" / "data" / "quick" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("keep", encoding="utf-8")
    with pytest.raises(KitInputError, match="not the kit's phantoms"):
        reproduce("quick", tmp_path / "reports", chapters=False, executor=FakeExecutor(), progress=False)
    assert notes.read_text(encoding="utf-8") == "keep"
    assert sorted(p.name for p in (tmp_path / "reports" / "data").iterdir()) == ["quick"]


class PredictingExecutor(FakeExecutor):
    """Also writes predictions.csv: image-MixUp runs mark every test nodule, the others only false positives."""

    def __call__(self, run_dir: Path, parameters: dict[str, Any]) -> Path:
        from focalmix_lib.data.dataset import Luna16Folder
        from focalmix_lib.data.luna_csv import write_findings
        from focalmix_lib.training.data import test_uids

        executed = super().__call__(run_dir, parameters)
        cfg = load_yaml(TrainConfig, RunFolder(run_dir).config_path)
        uids = test_uids(cfg)
        nodules = Luna16Folder(cfg.data_dir).annotations
        rng = np.random.default_rng(zlib.crc32(run_dir.name.encode()))
        marks = [(u, rng.uniform(-150, -100, 3), rng.uniform(0.1, 0.9)) for u in uids for _ in range(5)]
        if cfg.image_mixup:
            listed = np.isin(nodules.seriesuid, uids)
            marks += [(u, xyz, 0.95) for u, xyz in zip(nodules.seriesuid[listed], nodules.world_xyz[listed])]
        write_findings(RunFolder(run_dir).predictions_path, [m[0] for m in marks], np.array([m[1] for m in marks]),
                       np.array([m[2] for m in marks]), "probability")
        return executed


def test_effects_get_a_paired_interval_and_a_verdict_from_three_seeds(tmp_path: Path, profile_phantoms: Path) -> None:
    tables = run_quick(tmp_path, profile_phantoms, PredictingExecutor(), seeds=3, only=("table3c",)).tables
    effects = tables.read_text(encoding="utf-8").split("## Paper effects over 3 seed(s)")[1]
    row = next(line for line in effects.splitlines() if line.startswith("| image MixUp helps |"))
    verdict, gain, detail = (cell.strip() for cell in row.split("|")[2:5])
    assert verdict == "reproduced" and detail == "3 paired seed(s)"
    low = float(gain.split("[")[1].split(",")[0])
    assert low > 0  # every nodule found against none: the whole interval is a gain
    assert "**inconclusive**" in effects  # the rules are stated under the table


def test_an_out_data_made_for_another_profile_is_refused(tmp_path: Path, quick_phantoms: Path) -> None:
    import shutil

    shutil.copytree(quick_phantoms, tmp_path / "reports" / "data")  # make-data's quick phantoms: 2 subsets
    before = sorted(p.name for p in (tmp_path / "reports" / "data").rglob("*"))
    executor = FakeExecutor()
    with pytest.raises(KitInputError, match="n_subsets 2 .this needs 8."):
        reproduce("quick", tmp_path / "reports", chapters=False, executor=executor, progress=False)
    assert executor.calls == [] and sorted(p.name for p in (tmp_path / "reports" / "data").rglob("*")) == before


def test_the_cpu_profile_runs_table1_and_the_label_budget_on_fresh_seeds() -> None:
    cpu = PROFILES["cpu"]
    cells, runs = build_grid(cpu, "unused", seeds=cpu.seeds, only=cpu.tables)
    assert {r.seed for r in runs} == {1, 2, 3}  # seed 0 chose the settings (docs/reproduce.md)
    per_seed = sorted((r.method, r.config.labeled) for r in runs if r.seed == 1)
    assert per_seed == [("focalmix", 4), ("focalmix", 8), ("focalmix", 16),
                        ("supervised", 0), ("supervised", 4), ("supervised", 8), ("supervised", 16)]
    assert all(r.config.mixup_start_step == 200 and r.config.lr == 1e-3 and r.config.steps == 1500
               and r.config.test_subsets == (3, 4) for r in runs)


def test_the_label_budget_table_gives_an_interval_and_a_figure(tmp_path: Path, profile_phantoms: Path) -> None:
    tables = run_quick(tmp_path, profile_phantoms, PredictingExecutor(), seeds=3, only=("labels",)).tables
    text = tables.read_text(encoding="utf-8")
    section = text.split("## Label budget")[1].split("## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "labeled" in line.split("|")[1]]
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["4 labeled", "8 labeled", "16 labeled", "all labeled"]
    assert all("[" in row.split("|")[3] for row in rows[1:])  # the bootstrap interval of every budget
    assert "supervised: all labeled scans beat 4 labeled scans" in text
    assert (tmp_path / "reports/labels.png").stat().st_size > 1000 and "](labels.png)" in section
    written = list(csv.DictReader((tmp_path / "reports/runs.csv").open()))
    assert len(written) == 12 and {r["table"] for r in written} == {"labels"} and {r["seed"] for r in written} == {"0", "1", "2"}


def test_the_report_shows_the_committed_cpu_reference_beside_a_users_runs(tmp_path: Path) -> None:
    from importlib import resources

    from focalmix_lib.reproduction.tables import write_tables

    cpu = PROFILES["cpu"]
    reference = list(csv.DictReader(resources.files("focalmix_lib.reproduction").joinpath("reference/cpu.csv")
                                    .read_text(encoding="utf-8").splitlines()))
    tables = tuple(t for t in TABLES if t in {r["table"] for r in reference})
    assert set(cpu.tables) <= set(tables)  # the profile's default tables, and any run beside them (--only)
    cells, runs = build_grid(cpu, tmp_path / "data", seeds=cpu.seeds, only=tables)
    assert {(r["table"], r["row"]) for r in reference} == {c.key for c in cells}  # full runs of those tables
    assert all(r["kit"] for r in reference if r["status"] == "completed")  # each names the kit revision it came from
    text = write_tables(cpu, tmp_path, cells, runs, cpu.seeds).read_text(encoding="utf-8")  # nothing run yet
    assert "focalmix_lib/reproduction/reference/cpu.csv" in text and "mixup_start_step=200" in text
    assert "the `quick` TrainConfig preset with `test_subsets=(3, 4)`, `lr=0.001`, `steps=1500`, `mixup_start_step=200`." in text
    cpms = [float(r["cpm"]) for r in reference if (r["table"], r["row"]) == ("table1", "25 labeled + 0 unlabeled")
            and r["status"] == "completed"]
    mean, std = np.mean(cpms), np.std(cpms, ddof=1)
    table1 = text.split("## Table 1")[1].split("## ")[0]
    assert "| kit reference |" in table1 and f"{mean:.1f} ± {std:.1f} ({len(cpms)} seeds)" in table1
    assert (tmp_path / "labels.png").stat().st_size > 1000
