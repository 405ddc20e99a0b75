"""Patch sampling: shapes, boxes in patch coordinates, padding, lungs, determinism."""

import dataclasses

import numpy as np
import pytest

from focalmix_lib.data.dataset import Luna16Folder, PreprocessedScan, load_preprocessed
from focalmix_lib.data.patches import extract_patch, nodule_patch, sample_labeled_patch, sample_unlabeled_patch


@pytest.fixture(scope="module")
def scan(quick_phantoms):
    folder = Luna16Folder(quick_phantoms)
    uid = folder.annotations.seriesuid[0]
    return load_preprocessed(folder.scan_path(uid), 2.0, folder.annotations, None)


def test_extract_patch_pads_with_air():
    volume = np.arange(27, dtype=np.float32).reshape(3, 3, 3) + 1
    patch = extract_patch(volume, (-1, 1, 2), 3)
    assert patch.shape == (3, 3, 3)
    assert (patch[0] == 0).all() and (patch[:, :, 1:] == 0).all() and (patch[:, 2] == 0).all()
    np.testing.assert_array_equal(patch[1:, :2, 0], volume[:2, 1:, 2])


def test_positive_patches_hold_their_nodule(scan):
    rng = np.random.default_rng(0)
    for _ in range(20):
        patch, boxes = sample_labeled_patch(scan, 32, rng, positive_fraction=1.0)
        assert patch.shape == (32, 32, 32) and patch.dtype == np.float32 and boxes.dtype == np.float32
        assert len(boxes) >= 1
        centres = (boxes[:, :3] + boxes[:, 3:]) / 2
        assert ((centres >= -0.5) & (centres < 31.5)).all()
        # The nodule in patch coordinates is brighter than lung (lung ~ 0.19 after normalisation).
        k, j, i = np.clip(np.rint(centres[0]).astype(int), 0, 31)
        assert patch[k, j, i] > 0.3


def test_a_nodule_patch_is_centred_on_its_nodule():
    volume = np.zeros((40, 40, 40), np.float32)
    boxes = np.array([[10, 10, 10, 14, 14, 14], [30.5, 29.5, 8.5, 34.5, 33.5, 12.5]], np.float32)
    scan = PreprocessedScan("x", volume, None, boxes, np.array([4.0, 4.0], np.float32), np.ones_like(volume, bool))
    for index in range(2):
        patch, local = nodule_patch(scan, 16, index)
        centre = (local[0, :3] + local[0, 3:]) / 2
        assert patch.shape == (16, 16, 16) and len(local) == 1
        assert np.all(np.abs(centre - (16 - 1) / 2) <= 0.5)  # the patch centre, to the nearest voxel


def test_boxes_are_volume_boxes_minus_origin():
    volume = np.zeros((40, 40, 40), np.float32)
    boxes = np.array([[10, 10, 10, 14, 14, 14], [30.3, 30.3, 30.3, 34.3, 34.3, 34.3]], np.float32)
    scan = PreprocessedScan("x", volume, None, boxes, np.array([4.0, 4.0], np.float32), np.ones_like(volume, bool))
    _, local = sample_labeled_patch(scan, 16, np.random.default_rng(5), positive_fraction=1.0)
    assert len(local) == 1
    side = local[0, 3:] - local[0, :3]
    np.testing.assert_allclose(side, 4.0)
    shift = local[0] - boxes  # (2, 6): minus the patch origin, the same for both corners
    same = np.all(shift[:, :3] == shift[:, 3:], axis=1) & np.all(np.mod(shift, 1) == 0, axis=1)
    assert same.sum() == 1


def test_negative_and_unlabeled_patches_sit_in_the_lungs(scan):
    # Sample from the lung mask itself: the patch centre voxel (P - 1) // 2 must be lung.
    mask_scan = dataclasses.replace(scan, volume=scan.lung_mask.astype(np.float32))
    rng = np.random.default_rng(1)
    for _ in range(10):
        patch = sample_unlabeled_patch(mask_scan, 24, rng)
        assert patch.shape == (24, 24, 24) and patch[11, 11, 11] == 1.0
        patch, _ = sample_labeled_patch(mask_scan, 24, rng, positive_fraction=0.0)
        assert patch[11, 11, 11] == 1.0


def test_deterministic_from_the_rng(scan):
    a = [sample_labeled_patch(scan, 32, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(a[0][0], a[1][0])
    np.testing.assert_array_equal(a[0][1], a[1][1])
    u = [sample_unlabeled_patch(scan, 32, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(u[0], u[1])
