"""Whole-scan inference: sliding windows, decoding, global NMS, world coordinates."""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm.auto import tqdm

from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world
from focalmix_lib.detection.anchors import flatten_levels
from focalmix_lib.detection.boxes import box_centres_sides, nms_3d
from focalmix_lib.detection.model import FPNDetector


def window_starts(side: int, patch_size: int, overlap: float) -> list[int]:
    """Start indices of windows of ``patch_size`` along a side of ``side`` voxels.

    Consecutive windows are ``round(patch_size * (1 - overlap))`` apart; the last one
    may reach past the side (the volume is padded to whole windows).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    step = max(1, int(round(patch_size * (1 - overlap))))
    count = 1 if side <= patch_size else math.ceil((side - patch_size) / step) + 1
    return [i * step for i in range(count)]


@torch.no_grad()
def detect_volume(
    model: FPNDetector,
    volume: NDArray[np.float32],
    patch_size: int,
    overlap: float = 0.25,
    score_threshold: float = 0.05,
    nms_iou: float = 0.1,
    max_detections: int = 100,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Detect nodules in a whole normalised volume ``(D, H, W)``.

    1. pad the volume with 0 at its far ends to whole cubic windows of ``patch_size``
       (overlapping by the fraction ``overlap``);
    2. run the model (eval mode) on batches of windows; per window keep the
       ``max_detections`` highest scores above ``score_threshold`` and decode their
       boxes with the model's anchors and box coder, shifted by the window origin;
    3. drop boxes whose centre lies in the padding, run NMS (``nms_iou``) over the
       whole volume and keep the ``max_detections`` best.

    Returns boxes ``(K, 6)`` in voxel coordinates of ``volume`` and scores ``(K,)``,
    by decreasing score.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {volume.shape}")
    starts = [window_starts(side, patch_size, overlap) for side in volume.shape]
    padded_shape = [s[-1] + patch_size for s in starts]
    padded = np.zeros(padded_shape, dtype=np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
    origins = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]

    was_training = model.training
    model.eval()
    anchors = model.anchors((patch_size,) * 3, device)
    all_boxes, all_scores = [], []
    try:
        for first in tqdm(range(0, len(origins), batch_size), desc="windows", disable=not progress, leave=False):
            batch_origins = origins[first:first + batch_size]
            windows = np.stack(
                [padded[z:z + patch_size, y:y + patch_size, x:x + patch_size] for z, y, x in batch_origins]
            )
            output = model(torch.from_numpy(windows)[:, None].to(device))
            scores = torch.sigmoid(flatten_levels(output.cls_logits).float())  # (B, N)
            deltas = flatten_levels(output.box_deltas).float()  # (B, N, 6)
            for origin, window_scores, window_deltas in zip(batch_origins, scores, deltas):
                candidates = torch.nonzero(window_scores > score_threshold).squeeze(1)
                if candidates.numel() > max_detections:
                    candidates = candidates[window_scores[candidates].topk(max_detections).indices]
                boxes = model.box_coder.decode(anchors[candidates], window_deltas[candidates])
                shift = torch.tensor(origin, dtype=boxes.dtype, device=boxes.device).repeat(2)
                all_boxes.append(boxes + shift)
                all_scores.append(window_scores[candidates])
    finally:
        model.train(was_training)

    boxes = torch.cat(all_boxes).cpu()
    scores = torch.cat(all_scores).cpu()
    centres, _ = box_centres_sides(boxes)
    inside = ((centres >= -0.5) & (centres < torch.tensor(volume.shape, dtype=centres.dtype) - 0.5)).all(dim=1)
    boxes, scores = boxes[inside], scores[inside]
    keep = nms_3d(boxes, scores, nms_iou, max_kept=max_detections)
    return boxes[keep].numpy().astype(np.float32), scores[keep].numpy().astype(np.float32)


def detections_to_world(
    boxes: NDArray[np.floating], scores: NDArray[np.floating], geometry: ScanGeometry
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """World centres ``(K, 3)`` (x, y, z) mm, diameters ``(K,)`` mm and probabilities ``(K,)``.

    ``boxes (K, 6)`` are in voxel coordinates of the volume that ``geometry``
    describes (the resampled scan); a box's diameter is its mean side in mm.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    centres = (boxes[:, :3] + boxes[:, 3:]) / 2
    sides_mm = (boxes[:, 3:] - boxes[:, :3]) * np.asarray(geometry.spacing_zyx)
    world = voxel_to_world(centres, geometry).reshape(-1, 3)
    return world, sides_mm.mean(axis=1), np.asarray(scores, dtype=np.float64).reshape(-1)
