"""The LUNA16 evaluation of a run folder: its predictions.csv on its test scans, froc.json beside it."""

from __future__ import annotations

from pathlib import Path

from focalmix_lib.data.dataset import Luna16Folder
from focalmix_lib.data.luna_csv import read_predictions
from focalmix_lib.evaluation.luna16 import evaluate_froc
from focalmix_lib.evaluation.outputs import write_outputs
from focalmix_lib.evaluation.results import FrocResult
from focalmix_lib.inference.run_detection import load_run_config
from focalmix_lib.training.data import test_uids
from focalmix_lib.training.run_folder import RunFolder


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, bootstrap: int = 0,
                 predictions: str | Path | None = None) -> FrocResult:
    """FROC of a run's predictions on its test scans; writes froc.json (+ csv, png, html) into the run."""
    run = RunFolder(Path(run_dir))
    cfg = load_run_config(run_dir, data_dir)
    folder = Luna16Folder(cfg.data_dir)
    result = evaluate_froc(folder.annotations, folder.excluded, test_uids(cfg),
                           read_predictions(predictions or run.predictions_path), bootstrap=bootstrap, seed=cfg.seed)
    write_outputs(result, run.path)
    return result
