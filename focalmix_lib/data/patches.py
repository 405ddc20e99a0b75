"""Cubic training patches cut from preprocessed scans.

A patch of side P whose origin (its first voxel) is ``o`` (z, y, x) holds the
voxels ``o .. o + P - 1`` of the volume; outside the volume it holds 0, which is
air after ``normalize_hu``. A box in patch coordinates is the volume box minus ``o``.
Voxel ``i`` covers the continuous indices [i - 0.5, i + 0.5), so a nodule belongs to
a patch when its centre ``c`` satisfies ``-0.5 <= c - o < P - 0.5`` on every axis.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from focalmix_lib.data.dataset import PreprocessedScan

PAD_VALUE = 0.0
_LUNG_DRAWS = 64  # rejection-sampling tries before listing every lung voxel


def extract_patch(volume: NDArray, origin_zyx: NDArray[np.int64] | tuple[int, int, int], size: int,
                  pad_value: float = PAD_VALUE) -> NDArray[np.float32]:
    """The (size, size, size) float32 block of ``volume`` starting at ``origin_zyx``, padded."""
    origin = np.asarray(origin_zyx, dtype=np.int64)
    patch = np.full((size, size, size), pad_value, dtype=np.float32)
    shape = np.asarray(volume.shape)
    lo = np.clip(origin, 0, shape)
    hi = np.clip(origin + size, 0, shape)
    if np.all(hi > lo):
        src = tuple(slice(a, b) for a, b in zip(lo, hi))
        dst = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin))
        patch[dst] = volume[src]
    return patch


def boxes_in_patch(boxes: NDArray[np.float32], origin_zyx: NDArray[np.int64], size: int) -> NDArray[np.float32]:
    """Boxes (M', 6) in patch coordinates of every box (M, 6) whose centre lies in the patch."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 6)
    shift = np.tile(np.asarray(origin_zyx, dtype=np.float32), 2)
    local = boxes - shift
    centres = (local[:, :3] + local[:, 3:]) / 2.0
    inside = np.all((centres >= -0.5) & (centres < size - 0.5), axis=1)
    return local[inside].astype(np.float32)


def random_lung_voxel(scan: PreprocessedScan, rng: np.random.Generator) -> NDArray[np.int64]:
    """A uniformly random voxel (z, y, x) of the lung mask (of the whole volume if the mask is empty)."""
    mask = scan.lung_mask
    shape = np.asarray(mask.shape)
    for _ in range(_LUNG_DRAWS):
        voxel = (rng.random(3) * shape).astype(np.int64)
        if mask[tuple(voxel)]:
            return voxel
    lung = np.flatnonzero(mask)
    if lung.size == 0:
        return (rng.random(3) * shape).astype(np.int64)
    return np.asarray(np.unravel_index(lung[rng.integers(lung.size)], mask.shape), dtype=np.int64)


def _origin_for_centre(centre_zyx: NDArray[np.float64], size: int) -> NDArray[np.int64]:
    """Patch origin that puts the continuous point ``centre_zyx`` at the patch centre (size - 1) / 2."""
    return np.floor(np.asarray(centre_zyx, dtype=np.float64) - (size - 1) / 2.0 + 0.5).astype(np.int64)


def nodule_patch(scan: PreprocessedScan, patch_size: int, index: int = 0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A (P, P, P) patch centred on nodule ``index`` of the scan, and its boxes (M, 6) in patch
    coordinates: a labeled patch without the training jitter (the chapters show these)."""
    box = scan.boxes[index].astype(np.float64)
    origin = _origin_for_centre((box[:3] + box[3:]) / 2.0, patch_size)
    return extract_patch(scan.volume, origin, patch_size), boxes_in_patch(scan.boxes, origin, patch_size)


def sample_labeled_patch(
    scan: PreprocessedScan, patch_size: int, rng: np.random.Generator, positive_fraction: float = 0.5,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A (P, P, P) patch and its boxes (M, 6) in patch coordinates.

    With probability ``positive_fraction`` (and if the scan has nodules) the patch
    holds a random nodule, shifted from the patch centre by a uniform jitter of up to
    (P - side) / 2 per axis so that the nodule stays inside; otherwise it is centred
    on a random lung voxel. Boxes of every nodule whose centre falls inside the patch
    come along. Deterministic given ``rng``.
    """
    positive = rng.random() < positive_fraction
    if positive and len(scan.boxes):
        box = scan.boxes[rng.integers(len(scan.boxes))].astype(np.float64)
        centre = (box[:3] + box[3:]) / 2.0
        reach = np.maximum(0.0, (patch_size - (box[3:] - box[:3])) / 2.0 - 1.0)
        centre = centre + rng.uniform(-1.0, 1.0, size=3) * reach
    else:
        centre = random_lung_voxel(scan, rng).astype(np.float64)
    origin = _origin_for_centre(centre, patch_size)
    return extract_patch(scan.volume, origin, patch_size), boxes_in_patch(scan.boxes, origin, patch_size)


def sample_unlabeled_patch(scan: PreprocessedScan, patch_size: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """A (P, P, P) patch centred on a random lung voxel. Deterministic given ``rng``."""
    origin = _origin_for_centre(random_lung_voxel(scan, rng).astype(np.float64), patch_size)
    return extract_patch(scan.volume, origin, patch_size)
