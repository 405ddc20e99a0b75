"""The reproduction report: the paper's tables with the kit's numbers beside them.

``write_tables`` reads every run folder of the grid (whichever shard or machine ran
it) and writes ``tables.md``, ``tables.csv`` (long format: one metric of one row a
line), ``tables.html`` and ``figure3.png``. Kit numbers are CPM / sensitivity in
percent, mean +- standard deviation (ddof = 1) over seeds; a diverged run is "Fail"
as in the paper. Each paper effect is checked seed by seed (:data:`EFFECTS`).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from focalmix_lib import atomic
from focalmix_lib.config import load_yaml
from focalmix_lib.data.dataset import Luna16Folder
from focalmix_lib.data.luna_csv import read_predictions
from focalmix_lib.evaluation.paired import (
    MIN_SEEDS,
    PairedDifference,
    SeedEstimate,
    cpm_over_seeds,
    paired_cpm_difference,
)
from focalmix_lib.evaluation.results import OPERATING_POINT_KEYS
from focalmix_lib.reproduction.grid import Cell, GridRun
from focalmix_lib.reproduction.machine import machine_description
from focalmix_lib.reproduction.profiles import CPU_EVIDENCE_COMMAND, CPU_EVIDENCE_TIME, ProfileScale
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import test_uids
from focalmix_lib.training.run_folder import RunFolder

TITLES = {
    "table1": "Table 1: main results (recall at 1/8 ... 8 FPs per scan and CPM)",
    "labels": "Label budget: supervised CPM against the number of labeled training scans (the kit's own check that "
              "the task is data-hungry; the paper has no such table)",
    "table3a": "Table 3a: soft-target focal loss ablation (100 labeled + 400 unlabeled, no MixUp)",
    "table3b": "Table 3b: augmentations K in anchor-level target prediction (100 + 400)",
    "table3c": "Table 3c: image- and object-level MixUp (100 + 400)",
    "table4": "Table 4: all labeled data and the largest unlabeled pool",
    "figure3": "Figure 3: CPM against the size of the unlabeled pool (100 labeled; the paper gives no numbers)",
}


@dataclass(frozen=True)
class RunResult:
    """What a run folder says: status (completed | diverged | failed | pending), CPM, recalls, time."""

    run_id: str
    status: str
    cpm: float | None = None  # percent
    sensitivity: dict[str, float] | None = None  # percent, keyed by OPERATING_POINT_KEYS
    error: str = ""
    seconds: float | None = None
    machine: dict[str, Any] | None = None
    folder: Path | None = None  # the run folder (predictions.csv, config.yaml) of a completed run
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (timings.json)


@dataclass(frozen=True)
class Effect:
    """A paper effect: ``better`` has a higher CPM than ``worse``; or, without ``worse``, ``better`` diverges."""

    name: str
    better: tuple[str, str]
    worse: tuple[str, str] | None = None


EFFECTS_NOTE = (
    "Each seed trains both settings and scores them on the same test scans, so their CPMs are paired. The "
    "interval bootstraps the test scans and the seeds (1,000 resamples). **reproduced**: the interval lies above "
    "zero; **contradicted**: below zero; **inconclusive**: it contains zero, or fewer than 3 seeds ran. A "
    "divergence effect is reproduced when every one of at least 3 seeds diverged.")

EFFECTS = (
    Effect("SSL gain at 25 labeled", ("table1", "25 labeled + 400 unlabeled"), ("table1", "25 labeled + 0 unlabeled")),
    Effect("SSL gain at 50 labeled", ("table1", "50 labeled + 400 unlabeled"), ("table1", "50 labeled + 0 unlabeled")),
    Effect("SSL gain at 100 labeled", ("table1", "100 labeled + 400 unlabeled"),
           ("table1", "100 labeled + 0 unlabeled")),
    Effect("soft alpha helps", ("table3a", "SFL"), ("table3a", "SFL w/o soft alpha")),
    Effect("soft beta helps", ("table3a", "SFL"), ("table3a", "SFL w/o soft beta")),
    Effect("SFL without soft alpha and beta diverges", ("table3a", "SFL w/o soft alpha and beta")),
    Effect("K = 4 beats K = 1", ("table3b", "K = 4"), ("table3b", "K = 1")),
    Effect("image MixUp helps", ("table3c", "image MixUp"), ("table3c", "no MixUp")),
    Effect("object MixUp adds to image MixUp", ("table3c", "image + object MixUp"), ("table3c", "image MixUp")),
    Effect("MixUp helps the fully supervised model", ("table4", "Fully-supervised w/ MixUp"),
           ("table4", "Fully-supervised")),
    Effect("FocalMix beats full supervision", ("table4", "FocalMix"), ("table4", "Fully-supervised")),
)


def read_run(runs_root: Path, run_id: str) -> RunResult:
    """The result of one run folder (absent or unfinished: ``pending``)."""
    folder = RunFolder(runs_root / run_id)
    outcome = json.loads(folder.outcome_path.read_text(encoding="utf-8")) if folder.outcome_path.is_file() else {}
    seconds, machine = outcome.get("seconds"), outcome.get("machine")
    status = folder.status()
    if status == "completed" and folder.froc_path.is_file():
        froc = json.loads(folder.froc_path.read_text(encoding="utf-8"))
        return RunResult(run_id, "completed", 100 * froc["cpm"],
                         {k: 100 * froc["sensitivity_at"][k] for k in OPERATING_POINT_KEYS}, "", seconds, machine,
                         folder.path, folder.read_timings())
    if status == "diverged":
        return RunResult(run_id, "diverged", error=folder.error(), seconds=seconds, machine=machine)
    if outcome.get("status") == "failed" or status == "failed":
        return RunResult(run_id, "failed", error=outcome.get("error") or folder.error(), seconds=seconds,
                         machine=machine)
    return RunResult(run_id, "pending", seconds=seconds, machine=machine)


def paper_column(metric: str) -> str:
    """The paper CSV's column of a metric: "cpm" -> "cpm", "1.0" -> "fp_1", "0.125" -> "fp_0.125"."""
    if metric == "cpm":
        return metric
    return "fp_" + (metric[:-2] if metric.endswith(".0") else metric)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1; ``None`` for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def completed_values(results: list[RunResult], metric: str = "cpm") -> list[float]:
    """``metric`` (the CPM or a sensitivity of OPERATING_POINT_KEYS, percent) of the completed runs among ``results``."""
    return [r.cpm if metric == "cpm" else r.sensitivity[metric] for r in results if r.status == "completed"]


def format_kit(results: list[RunResult], metric: str = "cpm") -> str:
    """``mean ± std`` of a cell's completed seeds, "Fail" when all diverged, with notes on the rest."""
    values = completed_values(results, metric)
    counts = {s: sum(r.status == s for r in results) for s in ("diverged", "failed", "pending")}
    if counts["diverged"] == len(results):
        return "Fail"
    text = ""
    if values:
        mean, std = mean_std(values)
        text = f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"
    notes = [f"{n} Fail" if s == "diverged" else f"{n} {s}" for s, n in counts.items() if n]
    return (text + (f" ({', '.join(notes)} of {len(results)})" if notes else "")).strip() or "—"


def check_effect(effect: Effect, by_cell: dict[tuple[str, str], list[RunResult]]) -> tuple[str, str, str]:
    """(verdict, CPM gain over seeds, detail) of one paper effect; the verdict rules are those of
    :mod:`focalmix_lib.evaluation.paired` (at least 3 seeds; else "inconclusive"; "not run" before any)."""
    better = by_cell.get(effect.better, [])
    if effect.worse is None:  # the effect is a divergence: it must diverge in every seed
        finished = [r for r in better if r.status in ("completed", "diverged")]
        if not finished:
            return "not run", "", ""
        failed = sum(r.status == "diverged" for r in finished)
        verdict = "inconclusive" if len(finished) < MIN_SEEDS else (
            "reproduced" if failed == len(finished) else "contradicted" if failed == 0 else "inconclusive")
        return verdict, "", f"diverged in {failed} of {len(finished)} seeds"
    worse = by_cell.get(effect.worse, [])
    pairs = [(b, w) for b, w in zip(better, worse) if {b.status, w.status} <= {"completed", "diverged"}]
    if not pairs:
        return "not run", "", ""
    completed = [(b, w) for b, w in pairs if b.status == w.status == "completed"]
    diverged = [f"{name} diverged in {n} seed(s)" for name, n in
                (("better", sum(b.status == "diverged" for b, _ in pairs)),
                 ("worse", sum(w.status == "diverged" for _, w in pairs))) if n]
    detail = "; ".join(diverged)
    if not completed:
        return "inconclusive", "", detail
    paired = paired_difference(completed)
    if paired is None:  # the per-seed gains of froc.json, without an interval
        mean, std = mean_std([b.cpm - w.cpm for b, w in completed])
        detail = "; ".join(filter(None, [detail, "no predictions to bootstrap"]))
        return "inconclusive", f"{mean:+.1f}" + ("" if std is None else f" ± {std:.1f}"), detail
    gain = f"{100 * paired.mean:+.1f}" + ("" if paired.std is None else f" ± {100 * paired.std:.1f}")
    gain += f" [{100 * paired.low:+.1f}, {100 * paired.high:+.1f}]"
    return paired.verdict, gain, "; ".join(filter(None, [f"{len(completed)} paired seed(s)", detail]))


def paired_difference(pairs: list[tuple[RunResult, RunResult]], n_resamples: int = 1000) -> PairedDifference | None:
    """The paired CPM difference of completed runs from their predictions on their common test scans.

    ``None`` when a run's folder, predictions or data can no longer be read (a report
    collected on another machine, say): the report then gives the per-seed gains only.
    """
    scored = _scored_submissions([r for pair in pairs for r in pair])
    if scored is None:
        return None
    folder, uids, submissions = scored
    return paired_cpm_difference(folder.annotations, folder.excluded, uids,
                                 list(zip(submissions[0::2], submissions[1::2])), n_resamples)


def seeds_interval(results: list[RunResult], n_resamples: int = 1000) -> SeedEstimate | None:
    """One cell's CPM over its completed seeds with the scans-and-seeds bootstrap interval (``None``: unreadable)."""
    completed = [r for r in results if r.status == "completed"]
    scored = _scored_submissions(completed) if completed else None
    if scored is None:
        return None
    folder, uids, submissions = scored
    return cpm_over_seeds(folder.annotations, folder.excluded, uids, submissions, n_resamples)


def _scored_submissions(results: list[RunResult]) -> tuple[Luna16Folder, list[str], list[Any]] | None:
    """The data folder, test scans and predictions of completed runs (``None`` when any can't be read)."""
    try:
        cfg = load_yaml(TrainConfig, results[0].folder / "config.yaml")
        return (Luna16Folder(cfg.data_dir), test_uids(cfg),
                [read_predictions(RunFolder(r.folder).predictions_path) for r in results])
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Reference:
    """The kit's own results for a profile (``reproduction/reference/<profile>.csv``): CPMs per cell and seed."""

    path: str  # as the report names it
    cpm: dict[tuple[str, str], list[float]]  # (table, row) -> CPM (percent) of each completed seed
    revisions: tuple[str, ...]  # the kit revision(s) the runs came from


def read_reference(profile: ProfileScale) -> Reference | None:
    """The committed reference results of ``profile``, or ``None`` when the kit has none."""
    resource = resources.files("focalmix_lib.reproduction").joinpath(f"reference/{profile.name}.csv")
    if not resource.is_file():
        return None
    cpm: dict[tuple[str, str], list[float]] = {}
    revisions: set[str] = set()
    for row in csv.DictReader(resource.read_text(encoding="utf-8").splitlines()):
        if row["status"] == "completed":
            cpm.setdefault((row["table"], row["row"]), []).append(float(row["cpm"]))
            revisions.add(row["kit"])
    return Reference(f"focalmix_lib/reproduction/reference/{profile.name}.csv", cpm, tuple(sorted(revisions)))


RUNS_CSV_HEADER = ["table", "row", "seed", "status", "cpm", "run_id", "kit"]


def runs_csv_rows(runs: list[GridRun], results: dict[str, RunResult]) -> list[list[Any]]:
    """runs.csv: one line per (cell, run): table, row, seed, status, CPM (percent), run id and kit revision.

    A profile's reference file is this file of a run of the profile's tables (and of any run beside
    them with ``--only``), committed; a run the reference did not finish is a row with its status
    and no CPM."""
    rows = []
    for run in runs:
        r = results[run.run_id]
        for table, label in run.cells:
            rows.append([table, label, run.seed, r.status, "" if r.cpm is None else round(r.cpm, 3), run.run_id,
                         (r.machine or {}).get("kit", "")])
    return rows


def format_reference(reference: Reference | None, key: tuple[str, str]) -> str:
    """``mean ± std (n seeds)`` of the reference's CPMs of a cell, "—" without them."""
    values = reference.cpm.get(key, []) if reference else []
    if not values:
        return "—"
    mean, std = mean_std(values)
    return (f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}") + f" ({len(values)} seeds)"


@dataclass
class Section:
    """One table of the report; ``note`` (markdown) follows it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def results_by_cell(cells: list[Cell], runs: list[GridRun], results: dict[str, RunResult]
                    ) -> dict[tuple[str, str], list[RunResult]]:
    """The results of every cell's runs, in grid order (seeds ascending)."""
    by_cell: dict[tuple[str, str], list[RunResult]] = {c.key: [] for c in cells}
    for run in runs:
        for key in run.cells:
            by_cell[key].append(results[run.run_id])
    return by_cell


def build_sections(profile: ProfileScale, cells: list[Cell], by_cell: dict[tuple[str, str], list[RunResult]],
                   seeds: int, reference: Reference | None = None) -> tuple[list[Section], list[list[Any]]]:
    """The report's sections (markdown/HTML) and the long CSV rows from each cell's results
    (:func:`results_by_cell`); ``reference``: the kit's own results beside."""
    smoke = " (smoke scale)" if profile.smoke else ""
    sections: list[Section] = []
    csv_rows: list[list[Any]] = []
    for table in dict.fromkeys(c.table for c in cells):
        members = [c for c in cells if c.table == table]
        if table == "table1":
            header = ["setting", "source", *(f"{k} FP" for k in OPERATING_POINT_KEYS), "CPM"]
            rows = []
            for cell in members:
                rows.append([cell.label, "paper", *(cell.paper[paper_column(k)] for k in OPERATING_POINT_KEYS), cell.paper["cpm"]])
                rows.append(["", "kit" + smoke, *(format_kit(by_cell[cell.key], k) for k in OPERATING_POINT_KEYS),
                             format_kit(by_cell[cell.key])])
                if reference:
                    rows.append(["", "kit reference", *("" for _ in OPERATING_POINT_KEYS),
                                 format_reference(reference, cell.key)])
        elif table == "labels":
            header = ["labeled training scans", "kit CPM" + smoke, "CPM over seeds [95 % interval]",
                      *(["kit reference CPM"] if reference else []), "runs"]
            rows = []
            for cell in members:
                estimate = seeds_interval(by_cell[cell.key])
                interval = "—" if estimate is None else (
                    f"{100 * estimate.mean:.1f} [{100 * estimate.low:.1f}, {100 * estimate.high:.1f}]")
                rows.append([cell.label, format_kit(by_cell[cell.key]), interval,
                             *([format_reference(reference, cell.key)] if reference else []),
                             _run_links(by_cell[cell.key])])
        else:
            header = ["setting", "paper CPM", "kit CPM" + smoke, "runs"]
            rows = [[cell.label, cell.paper.get("cpm", "—"), format_kit(by_cell[cell.key]),
                     _run_links(by_cell[cell.key])] for cell in members]
        sections.append(Section(TITLES[table] + smoke, header, rows))
        for cell in members:
            runs_of_cell = by_cell[cell.key]
            for metric in ("cpm", *OPERATING_POINT_KEYS) if table == "table1" else ("cpm",):
                values = completed_values(runs_of_cell, metric)
                mean, std = mean_std(values) if values else (None, None)
                csv_rows.append([table, cell.label, metric, cell.paper.get(paper_column(metric), ""),
                                 "" if mean is None else round(mean, 3), "" if std is None else round(std, 3),
                                 len(values), sum(r.status == "diverged" for r in runs_of_cell),
                                 sum(r.status == "failed" for r in runs_of_cell), "smoke" if smoke else profile.name])
    effects = list(EFFECTS)
    budgets = [c.key for c in cells if c.table == "labels"]
    if len(budgets) > 1:  # the kit's own premise: labels are scarce at the smallest budget
        effects.insert(0, Effect(f"supervised: all labeled scans beat {budgets[0][1]} scans", budgets[-1], budgets[0]))
    effect_rows = [[e.name, *check_effect(e, by_cell)] for e in effects
                   if e.better in by_cell and (e.worse is None or e.worse in by_cell)]
    sections.append(Section(f"Paper effects over {seeds} seed(s)" + smoke,
                            ["effect", "verdict", "CPM gain, points: mean ± std over seeds [95 % interval]",
                             "detail"], effect_rows, EFFECTS_NOTE))
    return sections, csv_rows


def _run_links(results: list[RunResult]) -> str:
    """Links to each seed's executed notebook, named by seed."""
    return " ".join(f"[{r.run_id.rsplit('-', 2)[1]}](runs/{r.run_id}/05_train.ipynb)" for r in results)


def run_section(runs: list[GridRun], results: dict[str, RunResult]) -> Section:
    """Every run with its status, CPM, time, executed notebook and FROC curve, and its error if any."""
    rows = []
    for run in runs:
        r = results[run.run_id]
        base = f"runs/{run.run_id}"
        links = f"[notebook]({base}/05_train.ipynb)"
        if r.status == "completed":
            links += f" [FROC png]({base}/froc.png) [FROC html]({base}/froc.html)"
        cpm = f"{r.cpm:.1f}" if r.cpm is not None else ("Fail" if r.status == "diverged" else "—")
        seconds = "" if r.seconds is None else f"{r.seconds:.0f}"
        error = r.error.strip().splitlines()[-1] if r.error.strip() else ""
        rows.append([run.run_id, r.status, cpm, seconds, links, "; ".join(f"{t} {c}" for t, c in run.cells), error])
    return Section("Runs", ["run", "status", "CPM", "seconds", "files", "cells", "error"], rows)


def plot_figure3(cells: list[Cell], by_cell_cpm: dict[str, list[float]], profile: ProfileScale, labeled: int,
                 path: Path) -> None:
    """CPM (mean ± std over seeds) against the unlabeled pool size at the fixed labeled budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(int(c.label.split()[0]), by_cell_cpm.get(c.label, [])) for c in cells if c.table == "figure3"]
    points = [(x, mean_std(v)) for x, v in points if v]
    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        xs = [x for x, _ in points]
        ax.errorbar(xs, [m for _, (m, _) in points], yerr=[s or 0.0 for _, (_, s) in points], marker="o",
                    capsize=3, label="kit (mean ± std over seeds)")
        ax.legend()
    smoke = ", smoke scale" if profile.smoke else ""
    ax.set_title(f"Figure 3: CPM vs unlabeled pool size\n({labeled} labeled scans, {profile.name} profile{smoke})")
    ax.set_ylim(0, 100)
    ax.set_xlabel("unlabeled scans in the pool")
    ax.set_ylabel("CPM (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_label_budget(labels: list[str], cpms: list[list[float]], reference: list[list[float]] | None,
                      profile: ProfileScale, path: Path) -> None:
    """Supervised CPM (mean ± std over seeds, each seed a dot) against the labeled budget, the reference beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for shift, values_of, name, colour in ((-0.08, cpms, "this run", "C0"), (0.08, reference, "kit reference", "C7")):
        if not values_of:
            continue
        points = [(i + shift, v) for i, v in enumerate(values_of) if v]
        if not points:
            continue
        means = [mean_std(v) for _, v in points]
        ax.errorbar([x for x, _ in points], [m for m, _ in means], yerr=[s or 0.0 for _, s in means], marker="o",
                    capsize=4, color=colour, label=f"{name} (mean ± std over seeds)")
        for x, values in points:
            ax.scatter([x] * len(values), values, s=12, color=colour, alpha=0.5)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 100)
    smoke = ", smoke scale" if profile.smoke else ""
    ax.set_title(f"Supervised CPM against the labeled budget\n({profile.name} profile{smoke}; dots: seeds)")
    ax.set_xlabel("labeled training scans")
    ax.set_ylabel("CPM (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_tables(profile: ProfileScale, out: str | Path, cells: list[Cell], runs: list[GridRun], seeds: int) -> Path:
    """Read every run of the grid under ``out/runs`` and write tables.md, .csv, .html, runs.csv, figure3.png and
    labels.png (when those tables are in the grid), with the profile's reference results beside the kit's."""
    out = Path(out)
    results = {run.run_id: read_run(out / "runs", run.run_id) for run in runs}
    reference = read_reference(profile)
    by_cell = results_by_cell(cells, runs, results)
    sections, csv_rows = build_sections(profile, cells, by_cell, seeds, reference)
    intro = _intro(profile, out, runs, results, seeds, reference)
    figure3 = [s for s in sections if s.title.startswith("Figure 3")]
    if figure3:
        figure3_cpm = {c.label: completed_values(by_cell[c.key]) for c in cells if c.table == "figure3"}
        plot_figure3(cells, figure3_cpm, profile, profile.labeled[-1], out / "figure3.png")
        figure3[0].note = "![Figure 3: CPM against the unlabeled pool size](figure3.png)"
    labels = [s for s in sections if s.title.startswith("Label budget")]
    if labels:
        members = [c for c in cells if c.table == "labels"]
        plot_label_budget([c.label.removesuffix(" labeled") for c in members],
                          [completed_values(by_cell[c.key]) for c in members],
                          [reference.cpm.get(c.key, []) for c in members] if reference else None, profile,
                          out / "labels.png")
        labels[0].note = ("The interval bootstraps the test scans and the seeds (1,000 resamples). "
                          "![Supervised CPM against the labeled budget](labels.png)")
    sections.append(run_section(runs, results))
    sections.append(_chapter_section(out))
    atomic.write_text(out / "tables.md", _markdown(intro, sections))
    atomic.write_text(out / "tables.html", _html(intro, sections))
    _write_csv(out / "tables.csv", ["table", "row", "metric", "paper", "kit_mean", "kit_std", "kit_seeds",
                                     "kit_fail", "kit_failed", "scale"], csv_rows)
    _write_csv(out / "runs.csv", RUNS_CSV_HEADER, runs_csv_rows(runs, results))
    return out / "tables.md"


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    atomic.write_text(path, buffer.getvalue())


def _intro(profile: ProfileScale, out: Path, runs: list[GridRun], results: dict[str, RunResult], seeds: int,
           reference: Reference | None) -> list[str]:

    counts = {s: sum(r.status == s for r in results.values()) for s in ("completed", "diverged", "failed", "pending")}
    seconds = sum(r.seconds or 0.0 for r in results.values())
    machines = {json.dumps(r.machine, sort_keys=True) for r in results.values() if r.machine}
    lines = [f"# FocalMix reproduction: {profile.name} profile", ""]
    if profile.smoke:
        lines += ["**Smoke scale.** The quick profile trains each run for a few dozen steps on tiny phantoms: "
                  "its numbers show that the pipeline fills every table, not that the paper's effects hold. "
                  f"The evidence on a 2-core CPU (Table 1 and the label-budget curve, 3 seeds, {CPU_EVIDENCE_TIME}) "
                  f"comes from: `{CPU_EVIDENCE_COMMAND}`", ""]
    lines += [f"Scale: the paper's 25 / 50 / 100 labeled scans are {' / '.join(map(str, profile.labeled))} here, "
              f"its 400 unlabeled scans {profile.unlabeled} (`{profile.name}` profile, `{profile.preset}` model preset).",
              ""]
    if profile.overrides:
        lines += [f"Every run: the `{profile.preset}` TrainConfig preset with "
                  + ", ".join(f"`{k}={v}`" for k, v in profile.overrides.items()) + ".", ""]
    departures = {k: v for k, v in profile.overrides.items()
                  if k in TrainConfig.PAPER_VALUES and v != TrainConfig.PAPER_VALUES[k]}
    if departures:
        lines += ["Departures from the paper in this profile (each one setting from the paper's value; "
                  "docs/method.md, docs/reproduce.md): "
                  + ", ".join(f"`{k}={v}` (paper: {TrainConfig.PAPER_VALUES[k]})" for k, v in departures.items()), ""]
    if reference:
        lines += [f"*kit reference*: the kit's own results for this profile ({reference.path}, kit "
                  f"{', '.join(reference.revisions)}), to compare a run of yours against.", ""]
    lines += [f"Kit numbers are percentages, mean ± standard deviation over {seeds} seed(s); "
              "the paper's numbers are copied from the paper (`focalmix_lib/paper/`). "
              "'Fail' = training diverged (non-finite loss), as in the paper.", "",
              f"Runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
              f"{seconds / 60:.1f} min in all.{_overhead(results.values())}", ""]
    for machine in sorted(machines) or [json.dumps(machine_description(), sort_keys=True)]:
        m = json.loads(machine)
        lines.append(f"Machine: {m['cpu']} ({m['cores']} cores), GPU {m['gpu'] or 'none'}, "
                     f"torch {m['torch']}, Python {m['python']}.")
    lines.append("")
    return lines


def _overhead(results: Iterable[RunResult]) -> str:
    """' Training steps and detection: X % of it; ...' over the runs with their stage times."""
    timed = [r for r in results if r.seconds and r.timings]
    if not timed:
        return ""
    total = sum(r.seconds for r in timed)
    stages: dict[str, float] = {}
    for r in timed:
        for stage, seconds in r.timings.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    core = stages.get("training steps", 0.0) + stages.get("detection", 0.0)
    parts = ", ".join(f"{stage} {100 * s / total:.0f} %" for stage, s in stages.items())
    return (f" Of the {len(timed)} timed runs' {total / 60:.1f} min, training steps and detection took "
            f"{100 * core / total:.0f} % ({parts}; notebook start, imports and outputs the rest).")


def _chapter_section(out: Path) -> Section:
    path = out / "notebooks" / "outcomes.json"
    outcomes = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    rows = [[f"[{stem}]({o['notebook']})", o["status"], f"{o['seconds']:.0f}", o["error"]]
            for stem, o in sorted(outcomes.items())]
    book = out / "book" / "index.html"
    note = "The executed chapters as an offline book: [book/index.html](book/index.html)." if book.is_file() else ""
    return Section("Teaching notebooks (executed)", ["notebook", "status", "seconds", "error"], rows, note)


def _markdown(intro: list[str], sections: list[Section]) -> str:
    parts = ["\n".join(intro)]
    for s in sections:
        cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in s.rows]
        table = "\n".join("| " + " | ".join(row) + " |" for row in [s.header, ["---"] * len(s.header), *cells])
        parts.append(f"## {s.title}\n\n{table}\n" + (f"\n{s.note}\n" if s.note else ""))
    return "\n".join(parts)


def _html(intro: list[str], sections: list[Section]) -> str:
    import re

    def inline(text: str) -> str:  # markdown links, images and bold to HTML
        text = html.escape(text)
        text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', text)
        text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)

    body = []
    for line in intro:
        if line.startswith("# "):
            body.append(f"<h1>{inline(line[2:])}</h1>")
        elif line:
            body.append(f"<p>{inline(line)}</p>")
    for s in sections:
        head = "".join(f"<th>{inline(h)}</th>" for h in s.header)
        rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in s.rows)
        body.append(f"<h2>{inline(s.title)}</h2>\n<table border=1 cellpadding=4><tr>{head}</tr>{rows}</table>"
                    + (f"\n<p>{inline(s.note)}</p>" if s.note else ""))
    title = inline(intro[0][2:]) if intro else "FocalMix reproduction"
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{title}</title></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
