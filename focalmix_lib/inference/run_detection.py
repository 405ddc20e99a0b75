"""A trained run applied to scans: the LUNA16 submission CSV.

:class:`TrainedRun` loads a run folder once (its config.yaml, its newest checkpoint
as data: ``weights_only=True``) and refuses, with a :class:`KitInputError` naming
the file, a missing folder, a missing config.yaml, a run without an intact checkpoint and,
unless ``allow_incomplete``, a run that diverged, failed or never completed.
:func:`detect_scans` detects nodules in any scans (whole-scan sliding windows over
the grown lung mask, NMS) and writes ``seriesuid,coordX,coordY,coordZ,probability``
(world mm); :func:`detect_run` does it for the run's test scans into
``predictions.csv``, which :func:`focalmix_lib.evaluation.run_evaluation.evaluate_run`
scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from tqdm.auto import tqdm

from focalmix_lib.config import load_yaml
from focalmix_lib.data.dataset import Luna16Folder, load_preprocessed
from focalmix_lib.data.luna_csv import write_findings
from focalmix_lib.detection.model import FPNDetector
from focalmix_lib.errors import KitInputError
from focalmix_lib.inference.sliding_window import centres_in_region, detect_volume, detections_to_world
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import scan_cache_dir, test_uids
from focalmix_lib.training.detector import build_model, pick_device, place_model
from focalmix_lib.training.run_folder import RunFolder


def read_run_config(folder: RunFolder, data_dir: str | Path | None = None) -> TrainConfig:
    """The run's config.yaml (optionally pointed at another copy of its data).

    A missing run folder or config.yaml is a KitInputError naming it; a broken one a
    ConfigError naming the file (from :func:`focalmix_lib.config.load_yaml`).
    """
    if not folder.path.is_dir():
        raise KitInputError(folder.path, "run folder not found")
    if not folder.config_path.is_file():
        raise KitInputError(folder.config_path, "no config.yaml: not a run folder written by focalmix train")
    cfg = load_yaml(TrainConfig, folder.config_path)
    return cfg if data_dir is None else replace(cfg, data_dir=str(data_dir))


@dataclass(frozen=True)
class TrainedRun:
    """A run folder loaded once: its ``config`` and its ``model`` (newest checkpoint, eval mode, on ``device``)."""

    folder: RunFolder
    config: TrainConfig
    model: FPNDetector
    device: torch.device

    @classmethod
    def load(cls, run_dir: str | Path, data_dir: str | Path | None = None, device: torch.device | str | None = None,
             allow_incomplete: bool = False) -> TrainedRun:
        """Read config.yaml and the newest checkpoint; ``device`` defaults to the run's ``device`` setting.

        Unless ``allow_incomplete``, only a ``completed`` run is accepted: a diverged,
        failed, interrupted or never-started run would give a submission that looks
        valid and means nothing.
        """
        folder = RunFolder(Path(run_dir))
        cfg = read_run_config(folder, data_dir)
        status = folder.status()
        if status != "completed" and not allow_incomplete:
            reason = f" ({folder.error().splitlines()[0]})" if folder.error() else ""
            raise KitInputError(folder.path, f"the run is {status or 'not started'}{reason}, not completed; "
                                             "pass --allow-incomplete to detect with its newest checkpoint anyway")
        state = folder.load_checkpoint(map_location="cpu")  # no or no intact checkpoint: a KitInputError
        model = build_model(cfg)
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError):
            raise KitInputError(folder.checkpoint_dir, f"checkpoint holds no weights of the {cfg.model_preset!r} "
                                                       "detector that config.yaml names") from None
        device = pick_device(cfg.device) if device is None else torch.device(device)
        return cls(folder, cfg, place_model(model, device).eval(), device)


def load_run_config(run_dir: str | Path, data_dir: str | Path | None = None) -> TrainConfig:
    """The run's config.yaml, optionally pointed at another copy of its data."""
    return read_run_config(RunFolder(Path(run_dir)), data_dir)


def load_trained_model(run_dir: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The detector of a run with the weights of its newest checkpoint (whatever its status), in eval mode."""
    return TrainedRun.load(run_dir, device=device, allow_incomplete=True).model


def grown_lung_mask(lung_mask: NDArray[np.bool_], margin_voxels: float) -> NDArray[np.bool_]:
    """The lung mask dilated ``round(margin_voxels)`` times with the 6-neighbourhood (voxels within
    that city-block distance); nodules live in the lungs, and the margin keeps juxta-pleural ones,
    whose centre can sit just outside a threshold-based lung mask."""
    if margin_voxels < 1:
        return lung_mask
    return ndimage.binary_dilation(lung_mask, ndimage.generate_binary_structure(3, 1),
                                   iterations=round(margin_voxels))


def inside_lungs(boxes: np.ndarray, scores: np.ndarray, lung_mask: np.ndarray, margin_voxels: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Keep the detections whose (rounded) centre lies in the lung mask grown by ``margin_voxels``.

    ``boxes (K, 6)``, ``scores (K,)``. :func:`detect_scans` applies the same rule
    inside :func:`detect_volume`, before NMS and the ``max_detections`` cap.
    """
    keep = centres_in_region(boxes, grown_lung_mask(lung_mask, margin_voxels))
    return boxes[keep], scores[keep]


def detect_scans(trained: TrainedRun, scan_paths: Sequence[Path], out: str | Path,
                 cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Write the LUNA16 submission of ``scan_paths`` (.mhd, NIfTI files, DICOM series folders) to ``out``.

    Each scan is resampled to the run's spacing (cached in ``cache_dir`` if given),
    tiled over its lung mask grown by ``lung_margin_mm`` (the whole scan if that is
    negative) and its detections are written in world mm under the scan's uid (the
    file name without its extension).
    """
    cfg = trained.config
    uids, centres, probabilities = [], [], []
    for path in tqdm(scan_paths, desc="detecting", unit="scan", disable=not progress):
        scan = load_preprocessed(path, cfg.spacing_mm, None, cache_dir)
        region = grown_lung_mask(scan.lung_mask, cfg.lung_margin_mm / cfg.spacing_mm) if cfg.lung_margin_mm >= 0 \
            else None
        boxes, scores = detect_volume(trained.model, scan.volume, cfg.patch_size, cfg.window_overlap,
                                      cfg.score_threshold, cfg.nms_iou, cfg.max_detections, device=trained.device,
                                      region=region)
        world, _, probability = detections_to_world(boxes, scores, scan.geometry)
        uids += [scan.uid] * len(probability)
        centres.append(world)
        probabilities.append(probability)
    out_path = Path(out)
    write_findings(out_path, uids, np.concatenate(centres) if centres else np.zeros((0, 3)),
                   np.concatenate(probabilities) if probabilities else np.zeros(0), "probability")
    return out_path


def detect_run(run_dir: str | Path, data_dir: str | Path | None = None, out: str | Path | None = None,
               progress: bool = True, allow_incomplete: bool = False) -> Path:
    """Write the LUNA16 submission of a completed run's test scans; returns its path.

    ``out`` defaults to ``<run>/predictions.csv``.
    """
    trained = TrainedRun.load(run_dir, data_dir, allow_incomplete=allow_incomplete)
    folder = Luna16Folder(trained.config.data_dir)
    paths = [folder.scan_path(uid) for uid in test_uids(trained.config)]
    return detect_scans(trained, paths, out if out is not None else trained.folder.predictions_path,
                        scan_cache_dir(trained.config), progress)
