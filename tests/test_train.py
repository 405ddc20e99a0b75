"""The training engine: resume, divergence, FocalMix losses, detection and evaluation of a run."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from focalmix_lib.cli import main
from focalmix_lib.config import from_preset, load_yaml
from focalmix_lib.data.luna_csv import read_predictions
from focalmix_lib.detection.anchors import flatten_levels
from focalmix_lib.errors import KitInputError
from focalmix_lib.evaluation.run_evaluation import evaluate_run
from focalmix_lib.inference.run_detection import detect_run
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.detector import build_model, place_model
from focalmix_lib.training.engine import learning_rate_factor, train
from focalmix_lib.training.run_folder import RunFolder


@pytest.fixture(scope="module")
def tiny_config(quick_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    """A quick config small enough for a test: 2 + 2 patches a step, 4 labeled scans."""
    cache = tmp_path_factory.mktemp("scan_cache")
    return from_preset(
        TrainConfig, "quick", data_dir=str(quick_phantoms), cache_dir=str(cache), labeled=4, unlabeled=3,
        batch_labeled=2, batch_unlabeled=2, steps=4, checkpoint_every=2, log_every=1, warmup_steps=2,
        rampup_steps=2,
    )


def _final_state(run_dir: Path) -> dict:
    return RunFolder(run_dir).load_checkpoint()


def test_interrupted_run_resumes_bit_identically(tiny_config: TrainConfig, tmp_path: Path) -> None:
    assert train(tiny_config, tmp_path / "straight", progress=False) == "completed"

    def interrupt_at_step_3(record: dict) -> None:
        if record["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config, tmp_path / "resumed", on_log=interrupt_at_step_3, progress=False)
    assert RunFolder(tmp_path / "resumed").status() == "running"
    assert [step for step, _ in RunFolder(tmp_path / "resumed").checkpoints()] == [2]
    assert train(tiny_config, tmp_path / "resumed", progress=False) == "completed"

    straight, resumed = _final_state(tmp_path / "straight"), _final_state(tmp_path / "resumed")
    assert straight["step"] == resumed["step"] == 4
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    losses = [[m["loss"] for m in RunFolder(tmp_path / run).read_metrics()] for run in ("straight", "resumed")]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_on_the_cpu_the_detector_runs_channels_last_and_computes_the_same_function(tmp_path: Path) -> None:
    cfg = from_preset(TrainConfig, "quick")
    plain, placed = build_model(cfg), place_model(build_model(cfg), torch.device("cpu"))
    channels_last = torch.channels_last_3d
    assert placed.backbone.stages[0][0].conv1[0].weight.is_contiguous(memory_format=channels_last)
    assert not plain.backbone.stages[0][0].conv1[0].weight.is_contiguous(memory_format=channels_last)
    patches = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    outputs = [model(patches) for model in (plain, placed)]
    logits = [flatten_levels(output.cls_logits) for output in outputs]
    deltas = [flatten_levels(output.box_deltas) for output in outputs]
    assert torch.allclose(logits[0], logits[1], atol=1e-5) and torch.allclose(deltas[0], deltas[1], atol=1e-5)
    for cls, box in zip(logits, deltas):
        (cls.sum() + box.sum()).backward()
    for (name, a), b in zip(plain.named_parameters(), placed.parameters()):  # float32 sums in another order
        assert (a.grad - b.grad).norm() <= 1e-3 * a.grad.norm(), name
    # a checkpoint of the channels-last model loads into a model as built
    torch.save(placed.state_dict(), tmp_path / "weights.pt")
    fresh = build_model(replace(cfg, seed=cfg.seed + 1))
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    assert torch.allclose(flatten_levels(fresh(patches).cls_logits), logits[1], atol=1e-5)


def test_completed_run_is_not_trained_again(tiny_config: TrainConfig, tmp_path: Path) -> None:
    cfg = replace(tiny_config, steps=2)
    assert train(cfg, tmp_path, progress=False) == "completed"
    before = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8")
    assert train(cfg, tmp_path, progress=False) == "completed"
    assert (tmp_path / "metrics.jsonl").read_text(encoding="utf-8") == before


def test_run_folder_refuses_other_settings(tiny_config: TrainConfig, tmp_path: Path) -> None:
    train(replace(tiny_config, steps=1), tmp_path, progress=False)
    saved = (tmp_path / "config.yaml").read_text(encoding="utf-8")
    with pytest.raises(KitInputError, match=r"config.yaml: this run folder was made with other values of \['gamma'\]"):
        train(replace(tiny_config, steps=1, gamma=1.0), tmp_path, progress=False)
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == saved


def test_a_folder_whose_run_never_started_takes_new_settings(tiny_config: TrainConfig, tmp_path: Path) -> None:
    with pytest.raises(KitInputError):  # a first attempt on a folder without scans fails before its first step
        train(replace(tiny_config, data_dir=str(tmp_path / "nope")), tmp_path / "run", progress=False)
    assert train(replace(tiny_config, steps=1), tmp_path / "run", progress=False) == "completed"


def test_non_finite_loss_ends_as_diverged(tiny_config: TrainConfig, tmp_path: Path) -> None:
    cfg = replace(tiny_config, lr=1e30)  # the first update sends the weights to inf
    assert train(cfg, tmp_path, progress=False) == "diverged"
    run = RunFolder(tmp_path)
    assert run.status() == "diverged" and "non-finite loss" in run.error()
    assert run.checkpoints() == []


def test_focalmix_run_logs_labeled_and_unlabeled_losses(tiny_config: TrainConfig, tmp_path: Path) -> None:
    cfg = replace(tiny_config, method="focalmix", steps=3, augmentations=2)
    assert train(cfg, tmp_path, progress=False) == "completed"
    saved = load_yaml(TrainConfig, tmp_path / "config.yaml")
    assert saved.image_mixup is True and saved.object_mixup is True  # the method's defaults, recorded
    metrics = RunFolder(tmp_path).read_metrics()
    assert [m["unlabeled_weight"] for m in metrics] == [0.0, 0.5, 1.0]
    assert all(math.isfinite(m["loss_unlabeled"]) and m["loss_unlabeled"] > 0 for m in metrics)
    assert all(0.5 <= m["mixup_lambda"] <= 1.0 for m in metrics)


def test_detect_and_evaluate_a_run(tiny_config: TrainConfig, tmp_path: Path) -> None:
    cfg = replace(tiny_config, steps=2, score_threshold=0.0, max_detections=20, test_scans=2)
    train(cfg, tmp_path, progress=False)
    predictions = read_predictions(detect_run(tmp_path, progress=False))
    assert len(set(predictions.seriesuid)) == 2 and len(predictions) <= 2 * 20
    assert ((predictions.value >= 0) & (predictions.value <= 1)).all()
    result = evaluate_run(tmp_path)
    froc = json.loads((tmp_path / "froc.json").read_text(encoding="utf-8"))
    assert froc["cpm"] == pytest.approx(result.cpm) and 0.0 <= result.cpm <= 1.0


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    cfg = from_preset(TrainConfig, "quick", steps=100, warmup_steps=10)
    assert learning_rate_factor(0, cfg) == pytest.approx(0.1)
    assert learning_rate_factor(9, cfg) == pytest.approx(1.0)
    assert learning_rate_factor(100, cfg) == pytest.approx(0.0, abs=1e-12)


def test_cli_train_rejects_unknown_field_and_bad_value(quick_phantoms: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--data", str(quick_phantoms), "--out", str(tmp_path / "run"), "--steps", "1"]
    assert main([*base, "--set", "gama=2"]) == 2
    assert "gama=2: TrainConfig has no such field" in capsys.readouterr().err
    assert main([*base, "--set", "gamma=high"]) == 2
    assert "gamma=high: takes a number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_detections_outside_the_grown_lungs_are_dropped() -> None:
    from focalmix_lib.inference.run_detection import inside_lungs

    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[4:6, 4:6, 4:6] = True
    centres = np.array([[5, 5, 5], [5, 5, 7], [5, 5, 9]], dtype=np.float32)
    boxes = np.concatenate([centres - 1, centres + 1], axis=1)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    kept_boxes, kept_scores = inside_lungs(boxes, scores, mask, margin_voxels=2)
    assert kept_scores.tolist() == pytest.approx([0.9, 0.8])
    assert inside_lungs(boxes, scores, mask, margin_voxels=0)[1].tolist() == pytest.approx([0.9])
