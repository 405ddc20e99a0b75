"""One run folder end to end: train (or resume), detect the test scans, evaluate.

The command line (``focalmix train --detect``), chapter 05 and therefore every run of
the reproduction grid go through :func:`run_pipeline`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focalmix_lib.evaluation.results import FrocResult
from focalmix_lib.evaluation.run_evaluation import evaluate_run
from focalmix_lib.inference.run_detection import detect_run
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.engine import train
from focalmix_lib.training.run_folder import RunFolder


@dataclass(frozen=True)
class PipelineResult:
    """What became of a run: ``status`` (completed | diverged | failed), the status message,
    the submission CSV and the FROC (``None`` where that stage did not run)."""

    status: str
    message: str
    predictions: Path | None = None
    froc: FrocResult | None = None


def run_pipeline(cfg: TrainConfig, run_dir: str | Path, *, detect: bool = True, evaluate: bool = True,
                 bootstrap: int = 0, progress: bool = True,
                 on_log: Callable[[dict[str, Any]], None] | None = None) -> PipelineResult:
    """Train ``cfg`` in ``run_dir`` (resuming), then detect its test scans and evaluate them.

    A run that did not complete (diverged: the paper's "Fail") is neither detected nor
    evaluated. The seconds of each stage are added to the run's timings.json. ``evaluate`` scores the run's predictions.csv (detected now or earlier)
    with ``bootstrap`` resamples; ``on_log`` receives every training metrics record.
    """
    run = RunFolder(Path(run_dir))
    status = train(cfg, run.path, progress=progress, on_log=on_log)
    if status != "completed":
        return PipelineResult(status, run.error())
    predictions = froc = None
    if detect:
        started = time.perf_counter()
        predictions = detect_run(run.path, progress=progress)
        run.add_seconds("detection", time.perf_counter() - started)
    if evaluate and run.predictions_path.is_file():
        started = time.perf_counter()
        froc = evaluate_run(run.path, bootstrap=bootstrap)
        run.add_seconds("evaluation", time.perf_counter() - started)
    return PipelineResult(status, "", predictions, froc)
