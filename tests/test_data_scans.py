"""Scan IO on phantom data (.mhd, NIfTI, DICOM), bad scan files, resampling, preprocessing cache."""

import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from focalmix_lib.cli import main
from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world, world_to_voxel
from focalmix_lib.data.dataset import Luna16Folder, load_preprocessed
from focalmix_lib.data.scans import normalize_hu, read_scan, resample_isotropic, write_mhd
from focalmix_lib.errors import KitInputError


@pytest.fixture(scope="module")
def phantom_scan(quick_phantoms):
    folder = Luna16Folder(quick_phantoms)
    return read_scan(folder.scan_path(folder.seriesuids[0]))


def test_mhd_round_trip_matches_simpleitk(tmp_path, phantom_scan):
    path = tmp_path / "scan.mhd"
    write_mhd(path, phantom_scan.volume, phantom_scan.geometry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.mhd", "scan.raw"]  # no temporaries left
    again = read_scan(path)
    assert again.geometry == phantom_scan.geometry
    np.testing.assert_array_equal(again.volume, phantom_scan.volume)
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), phantom_scan.volume)
    assert image.GetOrigin() == phantom_scan.geometry.origin_xyz


def test_mhd_keeps_a_non_identity_direction(tmp_path):
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    g = ScanGeometry((3, 4, 5), (-170.0, -165.5, -310.0), (0.7, 0.8, 2.5), direction)
    volume = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    write_mhd(tmp_path / "a.mhd", volume, g)
    assert sitk.ReadImage(str(tmp_path / "a.mhd")).GetDirection() == direction
    assert read_scan(tmp_path / "a.mhd").geometry == g


def test_nifti_and_dicom_series_read_like_the_mhd(tmp_path, phantom_scan):
    image = sitk.GetImageFromArray(phantom_scan.volume[:12])
    image.SetOrigin(phantom_scan.geometry.origin_xyz)
    image.SetSpacing(phantom_scan.geometry.spacing_xyz)
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    nifti = read_scan(tmp_path / "scan.nii.gz")
    np.testing.assert_array_equal(nifti.volume, phantom_scan.volume[:12])
    np.testing.assert_allclose(nifti.geometry.spacing_xyz, phantom_scan.geometry.spacing_xyz, rtol=1e-6)
    np.testing.assert_allclose(nifti.geometry.origin_xyz, phantom_scan.geometry.origin_xyz, atol=1e-3)

    series = tmp_path / "dicom"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    sx, sy, sz = phantom_scan.geometry.spacing_xyz
    for k in range(12):
        slice_k = image[:, :, k]
        for tag, value in (("0010|0020", "PHANTOM"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|000e", "1.2.826.0.1.3680043.2.1125.2"), ("0020|0013", str(k + 1)),
                           ("0028|0030", f"{sy}\\{sx}"), ("0018|0050", str(sz)),
                           ("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k)))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0")):
            slice_k.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"{k:03d}.dcm"))
        writer.Execute(slice_k)
    dicom = read_scan(series)
    np.testing.assert_array_equal(dicom.volume, phantom_scan.volume[:12])
    np.testing.assert_allclose(dicom.geometry.spacing_xyz, phantom_scan.geometry.spacing_xyz, rtol=1e-4)
    np.testing.assert_allclose(dicom.geometry.origin_xyz, phantom_scan.geometry.origin_xyz, atol=1e-2)


def _copy_scan(src, dst_dir):
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".raw"), dst.with_suffix(".raw"))
    return dst


def test_missing_raw(tmp_path, phantom_scan):
    path = _copy_scan(phantom_scan.path, tmp_path)
    path.with_suffix(".raw").unlink()
    with pytest.raises(KitInputError, match="missing") as info:
        read_scan(path)
    assert info.value.path == path.with_suffix(".raw")


def test_truncated_raw(tmp_path, phantom_scan):
    path = _copy_scan(phantom_scan.path, tmp_path)
    raw = path.with_suffix(".raw")
    os.truncate(raw, raw.stat().st_size - 1000)
    with pytest.raises(KitInputError, match="truncated") as info:
        read_scan(path)
    assert info.value.path == raw


def test_dimsize_not_matching_data(tmp_path, phantom_scan):
    path = _copy_scan(phantom_scan.path, tmp_path)
    d, h, w = phantom_scan.volume.shape
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(f"DimSize = {w} {h} {d}", f"DimSize = {w} {h} {d + 3}"))
    with pytest.raises(KitInputError, match="DimSize"):
        read_scan(path)
    path.write_text(text.replace(f"DimSize = {w} {h} {d}", f"DimSize = {w} {h} {d - 3}"))
    with pytest.raises(KitInputError, match="more than"):
        read_scan(path)


def test_resample_isotropic_samples_the_same_world_points():
    rng = np.random.default_rng(0)
    g = ScanGeometry((10, 20, 24), (-100.0, -90.0, -300.0), (0.8, 0.8, 2.5))
    # A linear function of world position is reproduced exactly by trilinear resampling.
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.shape_zyx), indexing="ij")
    world = voxel_to_world(np.stack([k, j, i], -1).reshape(-1, 3), g)
    volume = (world @ np.array([0.5, -1.0, 2.0])).reshape(g.shape_zyx).astype(np.float32)
    out, target = resample_isotropic(volume, g, 1.0)
    assert out.shape == target.shape_zyx == (25, 16, 19) and out.dtype == np.float32
    for voxel in rng.integers(0, 14, size=(20, 3)):
        expected = voxel_to_world(voxel, target) @ np.array([0.5, -1.0, 2.0])
        assert out[tuple(voxel)] == pytest.approx(expected, abs=1e-3)
    np.testing.assert_allclose(world_to_voxel(target.origin_xyz, g), 0.0)


def test_normalize_hu():
    out = normalize_hu(np.array([-3000, -1200, -300, 600, 2000], dtype=np.int16))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_load_preprocessed_cache_and_boxes(tmp_path, quick_phantoms):
    folder = Luna16Folder(quick_phantoms)
    uid = folder.annotations.seriesuid[0]
    cache = tmp_path / "cache"
    first = load_preprocessed(folder.scan_path(uid), 2.0, folder.annotations, cache)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"
    second = load_preprocessed(folder.scan_path(uid), 2.0, folder.annotations, cache)
    np.testing.assert_array_equal(first.volume, second.volume)
    np.testing.assert_array_equal(first.lung_mask, second.lung_mask)
    assert first.geometry == second.geometry and first.volume.dtype == np.float32
    rows = folder.annotations.for_series(uid)
    assert first.boxes.shape == (len(rows), 6)
    np.testing.assert_allclose(first.boxes[:, 3:] - first.boxes[:, :3], np.repeat(rows.value[:, None] / 2.0, 3, 1), rtol=1e-5)
    centres = (first.boxes[:, :3] + first.boxes[:, 3:]) / 2
    np.testing.assert_allclose(centres, world_to_voxel(rows.world_xyz, first.geometry).reshape(-1, 3), atol=1e-4)
    assert first.lung_mask.dtype == bool and 0.05 < first.lung_mask.mean() < 0.6
    # A corrupt entry is rebuilt, not trusted.
    entries[0].write_bytes(b"not a zip file")
    third = load_preprocessed(folder.scan_path(uid), 2.0, None, cache)
    np.testing.assert_array_equal(third.volume, first.volume)
    assert third.boxes.shape == (0, 6)


def test_unlabeled_paths(quick_phantoms):
    paths = Luna16Folder(quick_phantoms).unlabeled_paths()
    assert len(paths) == 16 and all(p.suffix == ".mhd" for p in paths)
