"""``focalmix reproduce``: the teaching notebooks, then the paper's ablation grid, then the tables.

Layout of the output folder (``--out reports``)::

    reports/data/                   the profile's phantoms (unless --data is given)
    reports/notebooks/<chapter>/    chapters 00-06 executed once (papermill)
    reports/book/index.html         the executed chapters as an offline HTML book
    reports/runs/<run-id>/          one grid run: 05_train.ipynb (executed), config.yaml,
                                    metrics.jsonl, checkpoints/, status, predictions.csv,
                                    froc.json/.png/.html, outcome.json (time, machine, error)
    reports/tables.md|.csv|.html, reports/figure3.png

Each run is notebook 05 executed by papermill (:func:`notebook_executor`); tests put
a fast fake in its place. A run counts as finished when its status is ``completed``
with a froc.json, or ``diverged`` (the paper's "Fail"): reruns skip both. A failed run
(an exception in the notebook) is recorded with its error and retried by the next
invocation; an interrupted one resumes from its checkpoint (``train`` does that).
Neither stops the grid.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from focalmix_lib import atomic
from focalmix_lib.errors import KitInputError
from focalmix_lib.reproduction.book import write_book
from focalmix_lib.reproduction.grid import TABLES, GridRun, build_grid, check_grid_data, shard_runs
from focalmix_lib.reproduction.machine import machine_description
from focalmix_lib.reproduction.profiles import ProfileScale, resolve_profile
from focalmix_lib.reproduction.teaching_model import teaching_model
from focalmix_lib.training.run_folder import RunFolder

# (run folder, notebook-05 parameters) -> the executed notebook. Raises when the notebook fails.
RunExecutor = Callable[[Path, dict[str, Any]], Path]
CHAPTERS = ("00", "01", "02", "03", "04", "05", "06")
RUN_NOTEBOOK = "05_train.ipynb"
CHAPTER_CELL_TIMEOUT_S = 180  # per cell, quick profile only


@dataclass(frozen=True)
class ReproducePaths:
    out: Path
    data: Path

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def notebooks(self) -> Path:
        return self.out / "notebooks"

    @property
    def book(self) -> Path:
        return self.out / "book"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id


def notebook_executor(run_dir: Path, parameters: dict[str, Any]) -> Path:
    """Execute notebooks/05_train.ipynb with ``parameters`` into ``run_dir`` (papermill)."""
    from focalmix_lib.reproduction.notebooks import run_notebook

    return run_notebook(RUN_NOTEBOOK, run_dir, parameters)


def ensure_data(profile: ProfileScale, out: Path, data: Path | None, progress: bool = True) -> Path:
    """The data folder of the grid: ``data`` as given, else the profile's phantoms in ``out/data``.

    Phantom generation is deterministic (seed 0), so every shard that makes them makes
    the same files; a folder already holding annotations.csv is reused. Nothing that
    exists is ever replaced: an ``out/data`` with other content is refused.
    """
    if data is not None:
        return data.resolve()
    from focalmix_lib.data.phantoms import check_phantom_profile, make_phantoms, profile_from_name

    folder = (out / "data").resolve()
    phantoms = profile_from_name(profile.phantom_preset or profile.preset, **profile.phantoms)
    if (folder / "annotations.csv").is_file():
        check_phantom_profile(folder, phantoms)  # made for another profile: refused before any work
        return folder
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise KitInputError(folder, "exists but holds no annotations.csv, so it is not the kit's phantoms; "
                                    "pass --data FOLDER or choose another --out")
    make_phantoms(folder, phantoms, seed=0, progress=progress)
    return folder


def run_parameters(run: GridRun, profile: ProfileScale, paths: ReproducePaths) -> dict[str, Any]:
    """Notebook 05's parameters for one grid run (absolute paths: the kernel works in the repository)."""
    run_dir = str(paths.run_dir(run.run_id).resolve())
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in run.overrides.items()}
    return {"quick": False, "preset": profile.preset, "data_dir": str(paths.data), "run_dir": run_dir,
            "output_dir": run_dir, "method": run.method, "overrides": overrides, "seed": run.seed,
            "detect": True, "evaluate": True, "live_plot": False}


def run_finished(folder: RunFolder) -> bool:
    """Completed with a froc.json, or diverged: nothing left to do for this run."""
    status = folder.status()
    return status == "diverged" or (status == "completed" and folder.froc_path.is_file())


def execute_run(run: GridRun, profile: ProfileScale, paths: ReproducePaths, executor: RunExecutor) -> dict[str, Any]:
    """Execute one grid run unless it is finished; write and return its outcome.json record.

    The record holds ``status`` (completed | diverged | failed | skipped), ``error``
    (the notebook's exception or the run's own message), ``seconds`` (summed over
    every attempt) and ``machine``.
    """
    run_dir = paths.run_dir(run.run_id)
    folder = RunFolder(run_dir)
    if run_finished(folder):
        return {"run_id": run.run_id, "status": "skipped"}
    earlier = _read_json(folder.outcome_path).get("seconds", 0.0) if folder.outcome_path.is_file() else 0.0
    started = time.perf_counter()
    error = ""
    try:
        executor(run_dir, run_parameters(run, profile, paths))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing run is reported, the grid goes on
        error = _short_error(exc)
    status = folder.status()
    if status == "diverged":
        outcome, error = "diverged", folder.error()
    elif status == "completed" and folder.froc_path.is_file() and not error:
        outcome = "completed"
    else:
        outcome = "failed"
        error = error or folder.error() or f"notebook ended with run status {status!r} and no froc.json"
    record = {"run_id": run.run_id, "status": outcome, "error": error,
              "seconds": round(earlier + time.perf_counter() - started, 2), "machine": machine_description()}
    atomic.write_json(folder.outcome_path, record)
    return record


def run_chapters(profile: ProfileScale, paths: ReproducePaths, runner: Callable[..., Path] | None = None
                 ) -> list[dict[str, Any]]:
    """Execute chapters 00-06 once (into ``out/notebooks/<chapter>/``), quick-sized for the quick model preset.

    Each chapter gets those of ``quick``, ``output_dir``, ``data_dir``, ``seed``,
    ``run_dir`` (chapter 05's run, which 06 reads), ``preset``, ``live_plot`` and
    ``overrides`` (the profile's run settings) that its parameters cell declares. With
    the default runner the teaching model (chapter 03) is trained first, once, outside
    the chapters' per-cell time limit.

    A chapter that already ran to the end is skipped; a failing one is recorded in
    ``out/notebooks/outcomes.json`` and the others still run.
    """
    import papermill

    from focalmix_lib.reproduction.notebooks import NOTEBOOK_DIR, run_notebook

    if runner is None:
        try:
            teaching_model(paths.data, seed=0, progress=False)
        except Exception:  # chapter 03 meets the same error and records it
            pass
    # A smoke-scale chapter runs in a minute; a cell stuck for minutes (a widget waiting on a
    # front end, say) is reported as failed instead of holding the grid.
    runner = runner or partial(run_notebook, timeout_s=CHAPTER_CELL_TIMEOUT_S if profile.smoke else None)
    chapter_run = paths.notebooks / "05_train" / "run"
    outcomes_path = paths.notebooks / "outcomes.json"
    outcomes = _read_json(outcomes_path) if outcomes_path.is_file() else {}
    notebooks = sorted(p for p in NOTEBOOK_DIR.glob("0*_*.ipynb") if p.name[:2] in CHAPTERS)
    declared = {p.stem: papermill.inspect_notebook(str(p)) for p in notebooks}
    # Chapters that read a trained run (06) execute after chapter 05 has trained it.
    for source in sorted(notebooks, key=lambda p: ("run_dir" in declared[p.stem] and p.name[:2] != "05", p.name)):
        if outcomes.get(source.stem, {}).get("status") == "completed":
            continue
        out_dir = paths.notebooks / source.stem
        # Chapters are sized by the model preset: the quick and cpu profiles both train the quick model.
        wanted = {"quick": profile.preset == "quick", "output_dir": str(out_dir.resolve()), "data_dir": str(paths.data), "seed": 0,
                  "run_dir": str(chapter_run.resolve()), "preset": profile.preset, "live_plot": False,
                  "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in profile.overrides.items()}}
        started = time.perf_counter()
        try:
            runner(source.name, out_dir, {k: v for k, v in wanted.items() if k in declared[source.stem]})
            outcomes[source.stem] = {"status": "completed", "error": ""}
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            outcomes[source.stem] = {"status": "failed", "error": _short_error(exc)}
        outcomes[source.stem].update(notebook=f"notebooks/{source.stem}/{source.name}",
                                     seconds=round(time.perf_counter() - started, 2))
        atomic.write_json(outcomes_path, outcomes)
    return [dict(outcomes[p.stem], chapter=p.stem) for p in notebooks if p.stem in outcomes]


@dataclass(frozen=True)
class ReproduceOutcome:
    """What a reproduction did: ``tables`` (tables.md; ``None`` for a shard, whose tables
    come from ``--collect``), and the grid runs and chapters that failed, each as
    ``"<run id or chapter>: <first line of its error>"``."""

    tables: Path | None
    failed_runs: tuple[str, ...] = ()
    failed_chapters: tuple[str, ...] = ()


def reproduce(profile: str | ProfileScale, out: str | Path, *, seeds: int | None = None,
              shard: tuple[int, int] | None = None, only: tuple[str, ...] | None = None, collect: bool = False,
              data: str | Path | None = None, chapters: bool = True, executor: RunExecutor = notebook_executor,
              progress: bool = True) -> ReproduceOutcome:
    """The whole reproduction: data, chapters 00-06, the grid (or one shard of it), the tables.

    ``seeds`` and ``only`` default to the profile's (``ProfileScale.seeds``, ``.tables``).
    Before any long work the data folder is checked against every run of the grid.
    ``collect=True`` only reads the run folders and writes the tables. A failed run
    or chapter does not stop the others; they are listed in the returned outcome.
    """
    from tqdm.auto import tqdm

    from focalmix_lib.reproduction.tables import write_tables

    profile = resolve_profile(profile)
    seeds = seeds or profile.seeds
    only = only or profile.tables or TABLES
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data).resolve() if data is not None else None
    if collect:  # only reads: the data folder is needed for the paper profile's pool size
        paths = ReproducePaths(out, data_dir or (out / "data").resolve())
    else:
        paths = ReproducePaths(out, ensure_data(profile, out, data_dir, progress))
    cells, runs = build_grid(profile, paths.data, seeds, only)
    if collect:
        return ReproduceOutcome(write_tables(profile, out, cells, runs, seeds))
    check_grid_data(runs)
    failed_chapters: list[str] = []
    if chapters and (shard is None or shard[0] == 0):
        failed_chapters = [f"{c['chapter']}: {_first_line(c['error'])}" for c in run_chapters(profile, paths)
                           if c["status"] == "failed"]
        try:
            write_book(paths.notebooks, paths.book, progress=False)
        except KitInputError as error:  # no chapter ran: there is no book to write
            failed_chapters.append(f"book: {error}")
    failed_runs: list[str] = []
    mine = shard_runs(runs, shard) if shard else runs
    bar = tqdm(mine, desc=f"{profile.name} grid", unit="run", disable=not progress)
    for run in bar:
        bar.set_postfix_str(run.run_id)
        record = execute_run(run, profile, paths, executor)
        if record["status"] == "failed":
            failed_runs.append(f"{run.run_id}: {_first_line(record['error'])}")
            bar.write(f"{run.run_id}: failed: {_first_line(record['error'])}")
    tables = None if shard is not None else write_tables(profile, out, cells, runs, seeds)
    return ReproduceOutcome(tables, tuple(failed_runs), tuple(failed_chapters))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no message)"


def _short_error(exc: BaseException) -> str:
    """The exception's type and message (papermill's carries the notebook traceback's last line)."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8"))
