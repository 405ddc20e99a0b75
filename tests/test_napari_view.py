"""napari scenes of scans and detections: file loading, the threshold slider, headless PNGs.

A tiny synthetic chest (two lungs in a body, two nodules) keeps the napari tests to
seconds: the software GL of Xvfb renders every pixel on the CPU.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world
from focalmix_lib.data.scans import write_mhd

UID = "1.2.3.4.5"
GEOMETRY = ScanGeometry(shape_zyx=(20, 40, 48), origin_xyz=(-60.0, -40.0, -120.0), spacing_xyz=(2.5, 2.0, 4.0))
NODULES_ZYX = np.array([[9.0, 18.0, 14.0], [11.0, 22.0, 33.0]])
NODULE_DIAMETERS_MM = np.array([10.0, 8.0])
# Two detections on the nodules and a false positive below the 0.5 threshold.
DETECTIONS_ZYX = np.array([[9.5, 18.0, 14.5], [11.0, 21.0, 33.0], [6.0, 25.0, 16.0]])
DETECTION_PROBABILITIES = np.array([0.9, 0.6, 0.2])
DETECTION_DIAMETERS_MM = np.array([9.0, 7.0, 5.0])


def _synthetic_chest() -> np.ndarray:
    """(20, 40, 48) int16 HU: air, a soft-tissue body, two lungs, two soft-tissue nodules."""
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(GEOMETRY.shape_zyx, GEOMETRY.spacing_zyx)),
                          indexing="ij")
    volume = np.full(GEOMETRY.shape_zyx, -1000.0)
    volume[((y - 40) / 34) ** 2 + ((x - 96) / 88) ** 2 <= 1] = 40.0
    for centre_x in (56.0, 136.0):
        volume[((y - 40) / 26) ** 2 + ((x - centre_x) / 34) ** 2 + ((z - 24) / 22) ** 2 <= 1] = -850.0
    for (k, j, i), diameter in zip(NODULES_ZYX, NODULE_DIAMETERS_MM):
        centre = np.array([k, j, i]) * GEOMETRY.spacing_zyx
        volume[(z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= (diameter / 2) ** 2] = 30.0
    return volume.astype(np.int16)


def _write_findings(path: Path, voxels_zyx: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    world = voxel_to_world(voxels_zyx, GEOMETRY)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", *columns])
        for n, (x, y, z) in enumerate(world):
            values = [x, y, z, *(column[n] for column in columns.values())]
            writer.writerow([UID, *(repr(float(v)) for v in values)])


@pytest.fixture(scope="module")
def luna_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LUNA16-layout folder with the synthetic chest, its annotations and two prediction CSVs."""
    root = tmp_path_factory.mktemp("napari_luna")
    write_mhd(root / "subset0" / f"{UID}.mhd", _synthetic_chest(), GEOMETRY)
    _write_findings(root / "annotations.csv", NODULES_ZYX, {"diameter_mm": NODULE_DIAMETERS_MM})
    _write_findings(root / "predictions_sized.csv", DETECTIONS_ZYX,
                    {"probability": DETECTION_PROBABILITIES, "diameter_mm": DETECTION_DIAMETERS_MM})
    _write_findings(root / "predictions.csv", DETECTIONS_ZYX, {"probability": DETECTION_PROBABILITIES})
    return root


def test_scene_from_files_places_findings_at_their_voxels(luna_folder: Path) -> None:
    from focalmix_lib.viz.napari_view import DEFAULT_DETECTION_DIAMETER_MM, scene_from_files

    scene = scene_from_files(luna_folder, UID, luna_folder / "predictions_sized.csv")
    np.testing.assert_array_equal(scene.volume_hu, _synthetic_chest())
    assert scene.spacing_zyx == (4.0, 2.0, 2.5)
    np.testing.assert_allclose(scene.annotations_zyx, NODULES_ZYX, atol=1e-9)
    np.testing.assert_array_equal(scene.annotation_diameters_mm, NODULE_DIAMETERS_MM)
    np.testing.assert_allclose(scene.detections_zyx, DETECTIONS_ZYX, atol=1e-9)
    np.testing.assert_array_equal(scene.probabilities, DETECTION_PROBABILITIES)
    np.testing.assert_array_equal(scene.detection_diameters_mm, DETECTION_DIAMETERS_MM)

    unsized = scene_from_files(luna_folder, UID, luna_folder / "predictions.csv")
    np.testing.assert_array_equal(unsized.detection_diameters_mm, [DEFAULT_DETECTION_DIAMETER_MM] * 3)
    assert len(scene_from_files(luna_folder, UID).detections_zyx) == 0


def test_threshold_slider_hides_detections_below_it(luna_folder: Path) -> None:
    pytest.importorskip("napari", reason="napari is not installed (pip install -e '.[viz]')")
    from focalmix_lib.viz import napari_view

    scene = napari_view.scene_from_files(luna_folder, UID, luna_folder / "predictions_sized.csv")
    viewer = napari_view.build_viewer(scene, threshold=0.5)
    try:
        detections = viewer.layers[napari_view.DETECTION_LAYER]
        np.testing.assert_array_equal(detections.shown, [True, True, False])
        # Sizes are diameters in display mm; points sit at voxel index x spacing.
        np.testing.assert_allclose(detections.size, DETECTION_DIAMETERS_MM)
        np.testing.assert_allclose(detections.data, DETECTIONS_ZYX * GEOMETRY.spacing_zyx)
        annotations = viewer.layers[napari_view.ANNOTATION_LAYER]
        np.testing.assert_allclose(annotations.size, NODULE_DIAMETERS_MM)
        assert viewer.dims.ndisplay == 3

        slider = viewer.window.dock_widgets[napari_view.THRESHOLD_WIDGET]
        slider.value = 0.7
        np.testing.assert_array_equal(detections.shown, [True, False, False])
        slider.value = 0.1
        np.testing.assert_array_equal(detections.shown, [True, True, True])
    finally:
        viewer.close()


def test_view_command_renders_a_png_headless(luna_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("napari", reason="napari is not installed (pip install -e '.[viz]')")
    from PIL import Image

    from focalmix_lib.cli import main

    out = tmp_path / "view.png"
    status = main(["view", "--data", str(luna_folder), "--uid", UID, "--predictions",
                   str(luna_folder / "predictions_sized.csv"), "--threshold", "0.5", "--png", str(out),
                   "--size", "120", "160"])
    assert status == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (160, 120)  # PIL gives (width, height)
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    # Not blank: the lungs' surfaces and the spheres vary the picture.
    assert rgb.std() > 5.0
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20
    assert not list(tmp_path.glob(".*tmp*")), "the PNG is written through a temporary name"
