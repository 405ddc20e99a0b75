"""A trained run applied to its test scans: the LUNA16 submission CSV, then its FROC.

``detect_run`` loads the run's final checkpoint (as data: ``weights_only=True``),
detects nodules in every test scan (whole-scan sliding windows, NMS) and writes
``predictions.csv`` (``seriesuid,coordX,coordY,coordZ,probability``, world mm).
``evaluate_run`` scores it with the official LUNA16 rules and writes ``froc.json``
and its figures beside it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from focalmix_lib.config import load_yaml
from focalmix_lib.data.dataset import Luna16Folder, load_preprocessed
from focalmix_lib.data.luna_csv import read_predictions, write_findings
from focalmix_lib.data.splits import split_scans
from focalmix_lib.detection.inference import detect_volume, detections_to_world
from focalmix_lib.evaluate import FrocResult, evaluate_froc, write_outputs
from focalmix_lib.runs import RunFolder
from focalmix_lib.train import build_model, pick_device, scan_cache_dir
from focalmix_lib.train_config import TrainConfig


def load_run_config(run_dir: str | Path, data_dir: str | Path | None = None) -> TrainConfig:
    """The run's config.yaml, optionally pointed at another copy of its data."""
    cfg = load_yaml(TrainConfig, RunFolder(Path(run_dir)).config_path)
    return cfg if data_dir is None else replace(cfg, data_dir=str(data_dir))


def load_trained_model(run_dir: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The detector of a run with the weights of its newest checkpoint, in eval mode."""
    run = RunFolder(Path(run_dir))
    model = build_model(load_yaml(TrainConfig, run.config_path))
    model.load_state_dict(run.load_checkpoint(map_location="cpu")["model"])
    return model.to(device).eval()


def test_uids(cfg: TrainConfig) -> list[str]:
    """The series uids of the run's test subsets (the first ``test_scans`` of them, if set)."""
    uids = list(split_scans(Luna16Folder(cfg.data_dir), cfg.test_subsets, 0, 0, cfg.split_seed).test)
    return uids[:cfg.test_scans] if cfg.test_scans else uids


def inside_lungs(boxes: np.ndarray, scores: np.ndarray, lung_mask: np.ndarray, margin_voxels: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Keep the detections whose centre lies in the lung mask grown by ``margin_voxels``.

    Nodules live in the lungs; the margin keeps juxta-pleural ones, whose centre can
    sit just outside a threshold-based lung mask. ``boxes (K, 6)``, ``scores (K,)``.
    """
    grown = ndimage.binary_dilation(lung_mask, ndimage.generate_binary_structure(3, 1),
                                    iterations=max(0, int(round(margin_voxels)))) if margin_voxels >= 1 else lung_mask
    centres = np.rint((boxes[:, :3] + boxes[:, 3:]) / 2).astype(np.int64)
    centres = np.clip(centres, 0, np.asarray(lung_mask.shape) - 1)
    keep = grown[centres[:, 0], centres[:, 1], centres[:, 2]]
    return boxes[keep], scores[keep]


def detect_run(run_dir: str | Path, data_dir: str | Path | None = None, out: str | Path | None = None,
               progress: bool = True) -> Path:
    """Write the LUNA16 submission of a run's test scans; returns its path.

    ``out`` defaults to ``<run>/predictions.csv``.
    """
    run = RunFolder(Path(run_dir))
    cfg = load_run_config(run_dir, data_dir)
    device = pick_device(cfg.device)
    model = load_trained_model(run_dir, device)
    folder = Luna16Folder(cfg.data_dir)
    uids, centres, probabilities = [], [], []
    for uid in tqdm(test_uids(cfg), desc="detecting", disable=not progress):
        scan = load_preprocessed(folder.scan_path(uid), cfg.spacing_mm, None, scan_cache_dir(cfg))
        boxes, scores = detect_volume(model, scan.volume, cfg.patch_size, cfg.window_overlap, cfg.score_threshold,
                                      cfg.nms_iou, cfg.max_detections, device=device)
        if cfg.lung_margin_mm >= 0:
            boxes, scores = inside_lungs(boxes, scores, scan.lung_mask, cfg.lung_margin_mm / cfg.spacing_mm)
        world, _, probability = detections_to_world(boxes, scores, scan.geometry)
        uids += [uid] * len(probability)
        centres.append(world)
        probabilities.append(probability)
    out_path = Path(out) if out is not None else run.predictions_path
    write_findings(out_path, uids, np.concatenate(centres) if centres else np.zeros((0, 3)),
                   np.concatenate(probabilities) if probabilities else np.zeros(0), "probability")
    return out_path


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
