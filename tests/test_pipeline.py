"""run_pipeline: one run folder trained, detected and evaluated, each stage's time recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from focalmix_lib.config import from_preset
from focalmix_lib.reproduction.pipeline import run_pipeline
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.run_folder import RunFolder


@pytest.fixture(scope="module")
def tiny(quick_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    return from_preset(TrainConfig, "quick", data_dir=str(quick_phantoms),
                       cache_dir=str(tmp_path_factory.mktemp("cache")), labeled=2, batch_labeled=2, steps=2,
                       checkpoint_every=2, log_every=1, warmup_steps=1, test_scans=1, max_detections=10)


def test_pipeline_trains_detects_evaluates_and_times_each_stage(tiny: TrainConfig, tmp_path: Path) -> None:
    outcome = run_pipeline(tiny, tmp_path / "run", progress=False)
    run = RunFolder(tmp_path / "run")
    assert outcome.status == "completed" and outcome.predictions == run.predictions_path
    assert outcome.froc is not None and run.froc_path.is_file()
    timings = run.read_timings()
    assert set(timings) == {"training scans", "training steps", "detection", "evaluation"}
    assert all(seconds >= 0 for seconds in timings.values())
    again = run_pipeline(tiny, tmp_path / "run", detect=False, evaluate=False, progress=False)
    assert again.status == "completed" and again.predictions is None and again.froc is None  # a finished run


def test_a_diverged_run_is_neither_detected_nor_evaluated(tiny: TrainConfig, tmp_path: Path) -> None:
    outcome = run_pipeline(from_preset(TrainConfig, "quick", **{**vars(tiny), "lr": 1e30}), tmp_path / "run",
                           progress=False)
    assert outcome.status == "diverged" and "non-finite loss" in outcome.message
    assert outcome.predictions is None and not RunFolder(tmp_path / "run").predictions_path.exists()
