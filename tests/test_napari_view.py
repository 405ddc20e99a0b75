"""napari scenes of scans and detections: file loading, the patient frame, the markers,
the caption, the threshold slider, headless PNGs.

A tiny synthetic chest (two lungs in a body, two nodules) keeps the napari tests to
seconds: the software GL of Xvfb renders every pixel on the CPU.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import replace
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


def _z_flipped(geometry: ScanGeometry) -> ScanGeometry:
    """The same voxels stored head first: index z runs against world z, from the old last slice."""
    x, y, z = geometry.origin_xyz
    top = z + (geometry.shape_zyx[0] - 1) * geometry.spacing_xyz[2]
    return replace(geometry, origin_xyz=(x, y, top), direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))


def _write_findings(path: Path, voxels_zyx: np.ndarray, columns: dict[str, np.ndarray],
                    geometry: ScanGeometry = GEOMETRY) -> None:
    world = voxel_to_world(voxels_zyx, geometry)
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
    assert scene.direction == GEOMETRY.direction and scene.uid == UID

    unsized = scene_from_files(luna_folder, UID, luna_folder / "predictions.csv")
    np.testing.assert_array_equal(unsized.detection_diameters_mm, [DEFAULT_DETECTION_DIAMETER_MM] * 3)
    assert len(scene_from_files(luna_folder, UID).detections_zyx) == 0


@pytest.mark.parametrize("world_of_index", list(itertools.permutations(range(3))))
def test_patient_frame_is_the_world_frame_for_every_axis_aligned_direction(world_of_index: tuple[int, ...]) -> None:
    """Display mm of the reoriented scene = world (z, y, x) less the scan's lowest corner; voxels move alike."""
    from focalmix_lib.viz.napari_view import Scene, patient_oriented

    rng = np.random.default_rng(list(world_of_index))
    for signs in itertools.product((1.0, -1.0), repeat=3):
        matrix = np.zeros((3, 3))
        matrix[list(world_of_index), [0, 1, 2]] = signs  # index axis c runs along world axis world_of_index[c]
        geometry = ScanGeometry(shape_zyx=(5, 6, 7), origin_xyz=tuple(rng.normal(0.0, 50.0, 3)),
                                spacing_xyz=(0.7, 0.9, 2.5), direction=tuple(matrix.reshape(-1)))
        volume = rng.normal(size=geometry.shape_zyx)
        voxels = np.indices(geometry.shape_zyx).reshape(3, -1).T.astype(np.float64)
        points = rng.uniform(0.0, np.asarray(geometry.shape_zyx) - 1.0, size=(9, 3))
        scene = Scene(volume, geometry.spacing_zyx, points, np.ones(9), voxels, np.ones(len(voxels)),
                      np.zeros(len(voxels)), direction=geometry.direction, uid=UID)

        oriented = patient_oriented(scene)

        corner_zyx = voxel_to_world(voxels, geometry)[:, ::-1].min(axis=0)
        expected_mm = voxel_to_world(points, geometry)[:, ::-1] - corner_zyx
        np.testing.assert_allclose(oriented.annotations_zyx * oriented.spacing_zyx, expected_mm, atol=1e-9)
        moved = np.rint(oriented.detections_zyx).astype(int)
        np.testing.assert_array_equal(oriented.volume_hu[tuple(moved.T)], volume[tuple(voxels.astype(int).T)])
        assert oriented.direction == ScanGeometry.direction and oriented.uid == UID
        again = patient_oriented(oriented)
        np.testing.assert_array_equal(again.volume_hu, oriented.volume_hu)
        np.testing.assert_array_equal(again.annotations_zyx, oriented.annotations_zyx)


def test_z_flipped_scan_is_shown_as_the_unflipped_one(luna_folder: Path, tmp_path: Path) -> None:
    """The same chest stored head first: the stored arrays differ, the patient-frame arrays and points do not."""
    from focalmix_lib.viz.napari_view import patient_oriented, scene_from_files

    flipped_geometry = _z_flipped(GEOMETRY)
    flipped_nodules = NODULES_ZYX * [-1.0, 1.0, 1.0] + [GEOMETRY.shape_zyx[0] - 1.0, 0.0, 0.0]
    write_mhd(tmp_path / "subset0" / f"{UID}.mhd", _synthetic_chest()[::-1], flipped_geometry)
    _write_findings(tmp_path / "annotations.csv", flipped_nodules, {"diameter_mm": NODULE_DIAMETERS_MM},
                    flipped_geometry)
    stored = scene_from_files(luna_folder, UID)
    flipped = scene_from_files(tmp_path, UID)
    # Same world positions, mirrored stored slices: the second nodule is nearer the head,
    # last but one slice from the top in the flipped file.
    np.testing.assert_array_equal(flipped.volume_hu, stored.volume_hu[::-1])
    np.testing.assert_allclose(flipped.annotations_zyx, flipped_nodules, atol=1e-9)

    shown, shown_flipped = patient_oriented(stored), patient_oriented(flipped)

    np.testing.assert_array_equal(shown_flipped.volume_hu, shown.volume_hu)
    np.testing.assert_allclose(shown_flipped.annotations_zyx, shown.annotations_zyx, atol=1e-9)
    np.testing.assert_allclose(shown.annotations_zyx, NODULES_ZYX, atol=1e-9)
    assert shown_flipped.spacing_zyx == shown.spacing_zyx == GEOMETRY.spacing_zyx
    head_first = np.argsort(-shown_flipped.annotations_zyx[:, 0])
    np.testing.assert_array_equal(head_first, [1, 0])


def test_caption_wraps_the_uid_and_states_threshold_and_legend() -> None:
    from focalmix_lib.viz.napari_view import overlay_text

    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.647178794901963557277539677059"
    assert overlay_text(uid, 0.5, 3, 8, 5).splitlines() == [
        "scan 1.3.6.1.4.1.14519.5.2.1.6279.6001.",
        "647178794901963557277539677059",
        "green rings: 5 annotated nodules",
        "dots: 3 of 8 detections, p >= 0.50",
        "dot colour: p, red 0 to yellow 1",
    ]
    assert overlay_text("1.2.3", 0.25, 0, 0, 1).splitlines()[:3] == [
        "scan 1.2.3", "green rings: 1 annotated nodule", "dots: 0 of 0 detections, p >= 0.25",
    ]


def test_render_fits_the_scan_box_below_the_caption() -> None:
    """Frontal view of a 300 x 200 x 400 mm box (z, y, x) in 300 x 400 pixels under a 90-pixel caption."""
    from focalmix_lib.viz.napari_view import _fit_below_caption

    zoom, centre = _fit_below_caption(np.array([300.0, 200.0, 400.0]), np.array([0.0, 1.0, 0.0]),
                                      np.array([1.0, 0.0, 0.0]), (300, 400), 90.0)
    # Width 400 mm in 400 pixels; height 300 mm in the 210 pixels below the caption: the height binds.
    assert zoom == pytest.approx(0.7)
    # The box's centre sits 45 pixels below the image's centre: the camera looks 45 / 0.7 mm higher.
    np.testing.assert_allclose(centre, [150.0 + 45.0 / 0.7, 100.0, 200.0])


def test_camera_frame_is_not_a_mirror_image() -> None:
    """At DEFAULT_ANGLES without the tilt a front sphere hides the one behind it, +x is right, +z up."""
    pytest.importorskip("napari", reason="napari is not installed (pip install -e '.[viz]')")
    from focalmix_lib.viz.napari_view import CAMERA_ORIENTATION, DEFAULT_ANGLES, _show_off_screen, ensure_display

    ensure_display()
    import napari

    viewer = napari.Viewer(ndisplay=3, show=False)
    try:
        viewer.add_image(np.zeros((20, 20, 20), dtype=np.float32), opacity=0.0)
        # Red in front (small y: anterior), blue behind it; lime on the patient's left, magenta at the head.
        viewer.add_points([[10.0, 2.0, 10.0], [10.0, 17.0, 10.0]], face_color=["red", "blue"], size=6.0)
        viewer.add_points([[10.0, 10.0, 19.0], [19.0, 10.0, 10.0]], face_color=["lime", "magenta"], size=3.0,
                          blending="translucent_no_depth")
        _show_off_screen(viewer)
        camera = viewer.scene.camera
        camera.orientation = CAMERA_ORIENTATION
        camera.angles = (0.0, *DEFAULT_ANGLES[1:])
        camera.zoom = 4.0
        rgb = viewer.screenshot(canvas_only=True, size=(100, 100))[..., :3].astype(int)
    finally:
        viewer.close()
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert ((red > 150) & (green < 80) & (blue < 80)).sum() > 100
    assert not ((blue > 150) & (red < 80)).any()
    left_marker = np.argwhere((green > 150) & (red < 100) & (blue < 100))
    head_marker = np.argwhere((red > 150) & (green < 100) & (blue > 150))
    assert left_marker[:, 1].min() > 60 and head_marker[:, 0].max() < 40


def test_threshold_slider_hides_detections_below_it(luna_folder: Path) -> None:
    pytest.importorskip("napari", reason="napari is not installed (pip install -e '.[viz]')")
    from focalmix_lib.viz import napari_view

    scene = napari_view.scene_from_files(luna_folder, UID, luna_folder / "predictions_sized.csv")
    viewer = napari_view.build_viewer(scene, threshold=0.5)
    try:
        detections = viewer.layers[napari_view.DETECTION_LAYER]

        def assert_shows(rows: list[int]) -> None:
            # Sizes are display mm; points sit at voxel index x spacing (the stored frame is the patient's).
            np.testing.assert_allclose(detections.data, DETECTIONS_ZYX[rows] * GEOMETRY.spacing_zyx)
            np.testing.assert_allclose(detections.size, napari_view.DETECTION_DOT_SCALE * DETECTION_DIAMETERS_MM[rows])
            np.testing.assert_array_equal(detections.features["probability"], DETECTION_PROBABILITIES[rows])

        assert_shows([0, 1])
        assert detections.face_colorbar.visible
        annotations = viewer.layers[napari_view.ANNOTATION_LAYER]
        np.testing.assert_allclose(annotations.data, NODULES_ZYX * GEOMETRY.spacing_zyx)
        # Rings wider than the nodule: its surface shows inside, nothing draws over the ring.
        np.testing.assert_allclose(annotations.size, napari_view.annotation_ring_sizes(NODULE_DIAMETERS_MM))
        assert (annotations.size >= 1.5 * NODULE_DIAMETERS_MM + 6.0).all()
        assert set(annotations.symbol) == {"ring"}
        assert annotations.blending == detections.blending == "translucent_no_depth"
        sides = viewer.layers[napari_view.ORIENTATION_LAYER]
        top = (np.asarray(GEOMETRY.shape_zyx) - 1) * GEOMETRY.spacing_zyx
        places = dict(zip(sides.features["side"], sides.data))
        assert places["head"][0] == top[0] and places["feet"][0] == 0.0
        assert places["left"][2] == top[2] and places["right"][2] == 0.0
        assert viewer.dims.ndisplay == 3
        caption = viewer.canvas.overlays.text
        assert caption.visible and caption.text == napari_view.overlay_text(UID, 0.5, 2, 3, 2)

        slider = viewer.window.dock_widgets[napari_view.THRESHOLD_WIDGET]
        slider.value = 0.7
        assert_shows([0])
        assert "dots: 1 of 3 detections, p >= 0.70" in caption.text
        slider.value = 0.1
        assert_shows([0, 1, 2])
        assert "dots: 3 of 3 detections, p >= 0.10" in caption.text
    finally:
        viewer.close()


def test_render_draws_no_detection_below_the_threshold(luna_folder: Path, tmp_path: Path) -> None:
    """The false positive (p = 0.2, autumn colour (255, 51, 0)) is in the scene at threshold 0.1, not at 0.5."""
    pytest.importorskip("napari", reason="napari is not installed (pip install -e '.[viz]')")
    from PIL import Image

    from focalmix_lib.viz.napari_view import CAPTION_FRACTION, render_png, scene_from_files

    scene = scene_from_files(luna_folder, UID, luna_folder / "predictions_sized.csv")
    # Drawn 20 mm wide, so that its dot covers a few pixels of a small image.
    low = replace(scene, detections_zyx=DETECTIONS_ZYX[2:], detection_diameters_mm=np.array([20.0]),
                  probabilities=DETECTION_PROBABILITIES[2:])
    dot_pixels = []
    for threshold in (0.5, 0.1):
        out = render_png(tmp_path / f"at_{threshold}.png", low, threshold=threshold, size=(120, 120))
        with Image.open(out) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
        # Below the caption, left of the colour bar (which shows every colour).
        scene_part = rgb[int(CAPTION_FRACTION * 120):, :90]
        dot_pixels.append(int((np.abs(scene_part - [255, 51, 0]).max(axis=-1) <= 30).sum()))
    assert dot_pixels[0] == 0 and dot_pixels[1] > 3


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
    # Not blank: the lungs' surfaces and the markers vary the picture.
    assert rgb.std() > 5.0
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20
    # Both rings are drawn, the one round the patient's right nodule (small x) on the image's left.
    lime = np.argwhere((rgb[..., 1] > 200) & (rgb[..., 0] < 80) & (rgb[..., 2] < 80))
    assert (lime[:, 1] < 80).any() and (lime[:, 1] >= 80).any()
    assert not list(tmp_path.glob(".*tmp*")), "the PNG is written through a temporary name"
