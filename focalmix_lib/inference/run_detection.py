"""A trained run applied to its test scans: the LUNA16 submission CSV.

``detect_run`` loads the run's final checkpoint (as data: ``weights_only=True``),
detects nodules in every test scan (whole-scan sliding windows, NMS) and writes
``predictions.csv`` (``seriesuid,coordX,coordY,coordZ,probability``, world mm).
:func:`focalmix_lib.evaluation.run_evaluation.evaluate_run` scores it.
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
from focalmix_lib.data.luna_csv import write_findings
from focalmix_lib.inference.sliding_window import detect_volume, detections_to_world
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import scan_cache_dir, test_uids
from focalmix_lib.training.detector import build_model, pick_device
from focalmix_lib.training.run_folder import RunFolder


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
