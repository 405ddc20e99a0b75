"""Whole-scan inference: sliding windows, batched decoding, global NMS, world coordinates.

A scan is tiled with cubic windows of the training patch size (the detector's
GroupNorm statistics are those of one window, so a window is the function the model
learnt). Only windows that touch the region of interest (the lung mask grown by a
margin) are run, and candidates whose centre lies outside it are dropped before NMS
and the ``max_detections`` cap, so the cap never counts a mark that would be thrown
away. The forward passes are almost all of the time (decoding and NMS are
vectorised over a batch of windows), so the number of windows is the cost.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from tqdm.auto import tqdm

from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world
from focalmix_lib.detection.anchors import flatten_levels
from focalmix_lib.detection.boxes import box_centres_sides, nms_3d
from focalmix_lib.detection.model import FPNDetector


def window_starts(side: int, patch_size: int, overlap: float) -> list[int]:
    """Start indices of windows of ``patch_size`` that cover ``[0, side)``.

    ``count = ceil((side - P) / step) + 1`` windows with ``step = round(P (1 - overlap))``
    (one window if ``side <= P``), spread evenly from 0 to ``side - P``: consecutive
    windows overlap by at least the fraction ``overlap`` and none reaches past the
    side (only a side shorter than ``P`` is padded).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if side <= patch_size:
        return [0]
    step = max(1, round(patch_size * (1 - overlap)))
    count = math.ceil((side - patch_size) / step) + 1
    return [int(s) for s in np.rint(np.linspace(0, side - patch_size, count))]


def window_origins(shape: tuple[int, int, int], patch_size: int, overlap: float,
                   region: NDArray[np.bool_] | None = None) -> NDArray[np.int64]:
    """Origins ``(W, 3)`` (z, y, x) of the windows that tile ``region``'s bounding box.

    Without ``region`` the whole volume is tiled. With it, each axis is tiled over the
    region's extent (widened to ``patch_size`` where it is shorter, and kept inside
    the volume), and windows holding no region voxel are left out.
    """
    if region is None:
        extents = [(0, side) for side in shape]
    else:
        if region.shape != tuple(shape):
            raise ValueError(f"region of shape {region.shape} for a volume of shape {tuple(shape)}")
        if not region.any():
            return np.zeros((0, 3), dtype=np.int64)
        extents = []
        for axis, side in enumerate(shape):
            present = np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != axis)))
            low, high = int(present[0]), int(present[-1]) + 1
            if high - low < patch_size:  # widen about the centre, staying inside the volume where it can
                low = max(0, min(low - (patch_size - (high - low)) // 2, side - patch_size))
                high = low + patch_size
            extents.append((low, high))
    axes = [[low + s for s in window_starts(high - low, patch_size, overlap)] for low, high in extents]
    origins = np.array([(z, y, x) for z in axes[0] for y in axes[1] for x in axes[2]], dtype=np.int64)
    if region is not None:
        touched = [region[z:z + patch_size, y:y + patch_size, x:x + patch_size].any() for z, y, x in origins]
        origins = origins[np.asarray(touched, dtype=bool)]
    return origins.reshape(-1, 3)


def centres_in_region(boxes: NDArray[np.floating], region: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Whether each box's centre, rounded to a voxel (and clipped into the volume), lies in ``region``.

    ``boxes (K, 6)`` in voxel coordinates of the bool volume ``region`` -> ``(K,)`` bool.
    """
    centres = np.rint((boxes[:, :3] + boxes[:, 3:]) / 2).astype(np.int64)
    centres = np.clip(centres, 0, np.asarray(region.shape) - 1)
    return region[centres[:, 0], centres[:, 1], centres[:, 2]]


def window_candidates(model: FPNDetector, padded: NDArray[np.float32], origins: NDArray[np.int64], patch_size: int,
                      score_threshold: float, per_window: int, batch_size: int, device: torch.device | str,
                      progress: bool = False) -> tuple[Tensor, Tensor]:
    """Candidate boxes ``(K, 6)`` (voxels of ``padded``) and scores ``(K,)`` of every window.

    Per window: the ``per_window`` highest sigmoid scores above ``score_threshold``,
    their anchors decoded with the model's box coder and shifted by the window
    origin. The model must be in eval mode; windows are run ``batch_size`` at a time
    and decoded together (one top-k over the ``(B, N)`` scores of a batch).
    """
    anchors = model.anchors((patch_size,) * 3, device)
    per_window = min(per_window, anchors.shape[0])
    all_boxes, all_scores = [], []
    for first in tqdm(range(0, len(origins), batch_size), desc="windows", disable=not progress, leave=False):
        batch_origins = origins[first:first + batch_size]
        windows = np.stack([padded[z:z + patch_size, y:y + patch_size, x:x + patch_size] for z, y, x in batch_origins])
        output = model(torch.from_numpy(windows)[:, None].to(device))
        scores = torch.sigmoid(flatten_levels(output.cls_logits).float())  # (B, N)
        top_scores, top_anchors = scores.topk(per_window, dim=1)  # (B, k), by decreasing score
        window, rank = torch.nonzero(top_scores > score_threshold, as_tuple=True)
        anchor = top_anchors[window, rank]
        deltas = flatten_levels(output.box_deltas).float()[window, anchor]  # (K_b, 6)
        shift = torch.from_numpy(batch_origins).to(device=deltas.device, dtype=deltas.dtype)[window].repeat(1, 2)
        all_boxes.append(model.box_coder.decode(anchors[anchor], deltas) + shift)
        all_scores.append(top_scores[window, rank])
    if not all_boxes:
        return torch.zeros((0, 6)), torch.zeros(0)
    return torch.cat(all_boxes).cpu(), torch.cat(all_scores).cpu()


@torch.no_grad()
def detect_volume(
    model: FPNDetector,
    volume: NDArray[np.float32],
    patch_size: int,
    overlap: float = 0.25,
    score_threshold: float = 0.05,
    nms_iou: float = 0.1,
    max_detections: int = 100,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = False,
    region: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Detect nodules in a whole normalised volume ``(D, H, W)``.

    1. tile the volume (or only ``region``, a bool ``(D, H, W)`` mask such as the
       grown lung mask) with cubic windows of ``patch_size`` overlapping by at least
       the fraction ``overlap`` (:func:`window_origins`); a side shorter than a
       window is padded with 0;
    2. run the model (eval mode) on batches of windows; per window keep the
       ``max_detections`` highest scores above ``score_threshold`` and decode their
       boxes (:func:`window_candidates`);
    3. drop boxes whose rounded centre lies outside the volume or outside ``region``,
       run NMS (``nms_iou``) over the whole volume and keep the ``max_detections`` best.

    Returns boxes ``(K, 6)`` in voxel coordinates of ``volume`` and scores ``(K,)``,
    by decreasing score.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {volume.shape}")
    origins = window_origins(volume.shape, patch_size, overlap, region)
    padded = np.zeros([max(side, patch_size) for side in volume.shape], dtype=np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume

    was_training = model.training
    model.eval()
    try:
        boxes, scores = window_candidates(model, padded, origins, patch_size, score_threshold, max_detections,
                                          batch_size, device, progress)
    finally:
        model.train(was_training)

    centres, _ = box_centres_sides(boxes)
    inside = ((centres >= -0.5) & (centres < torch.tensor(volume.shape, dtype=centres.dtype) - 0.5)).all(dim=1)
    if region is not None:
        inside &= torch.from_numpy(centres_in_region(boxes.numpy(), region))
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
