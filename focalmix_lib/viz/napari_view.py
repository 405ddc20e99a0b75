"""napari 3D views of a CT scan with its annotations and detections, and headless PNG renders.

The view is in the patient's frame whatever the scan's direction cosines
(:func:`patient_oriented`): the array is flipped and transposed so that its axes run
feet -> head, front -> back and right -> left (the LUNA16 world axes, LPS, in (z, y, x)
order), and every point moves with it. Display millimetres are the reoriented voxel
index times the spacing, that is world (z, y, x) less the scan's lowest corner.

- ``CT``: the whole scan, a faint maximum-intensity projection in a bone window:
  ribs and spine show where the chest is without hiding the lungs;
- ``lungs``: the scan inside the lung mask (``data.lung_mask.segment_lungs``),
  air elsewhere, as an iso-surface at ``LUNG_ISO_THRESHOLD_HU``: the chest wall no
  longer hides the inside, and vessels and nodules stand out as solid shapes;
- ``annotations``: a ring round each annotated nodule, wider than the nodule
  (:func:`annotation_ring_sizes`), drawn over every surface: neither a vessel in front
  nor the nodule's own surface hides it, and the nodule shows inside it;
- ``detections``: a dot at each detection, ``DETECTION_DOT_SCALE`` times its diameter
  (a fixed display size where the detector gives none), coloured by probability with
  a colour bar, left out below a probability threshold that a slider docked on the
  right controls. A found nodule is a dot inside a ring;
- ``orientation``: the words head, feet, right and left (the patient's) at the middle
  of the faces of the scan's box; they turn with the camera;
- a text overlay: the scan, the threshold with how many detections pass it, the legend.

napari draws with OpenGL through Qt, so it needs an X display even with
``show=False``. Headless machines use Xvfb with Mesa's software GL:
:func:`ensure_display` starts one when ``DISPLAY`` is unset (notebooks, tests), or
the caller wraps the process in ``xvfb-run -a``. ``QT_QPA_PLATFORM=offscreen`` does
not work: Qt's offscreen platform gives napari no GL context.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from focalmix_lib import atomic
from focalmix_lib.data import luna_csv
from focalmix_lib.data.coordinates import ScanGeometry, world_to_voxel
from focalmix_lib.data.dataset import Luna16Folder
from focalmix_lib.data.lung_mask import segment_lungs
from focalmix_lib.data.scans import read_scan

if TYPE_CHECKING:
    import napari

# Display size of a detection whose CSV has no diameter_mm column: a typical nodule.
DEFAULT_DETECTION_DIAMETER_MM = 6.0
# Iso-surface level inside the lungs: parenchyma (about -850 HU) stays clear, vessels
# and nodules (soft tissue, -100 to 100 HU, blurred by partial volume) become solid.
LUNG_ISO_THRESHOLD_HU = -450.0
# Bone window of the context projection.
BONE_WINDOW_HU = (150.0, 1200.0)
# Annotation ring: diameter RING_SCALE * d + RING_MARGIN_MM round a nodule of diameter d,
# so the nodule's surface shows inside the ring. render_png widens rings and dots to
# MIN_WIDTH of the image's width where the image is too small for them (napari's
# canvas_size_limits would draw a widened marker in its border colour).
ANNOTATION_COLOR = "lime"
ANNOTATION_RING_SCALE = 1.5
ANNOTATION_RING_MARGIN_MM = 6.0
ANNOTATION_RING_MIN_WIDTH = 0.045
# Red (low) to yellow (high): apart from the lime rings and the pale vessels. The dot is
# smaller than the detection so that a found nodule still shows round it.
DETECTION_COLORMAP = "autumn"
DETECTION_DOT_SCALE = 0.6
DETECTION_DOT_MIN_WIDTH = 0.02
# napari's default 3D frame (depth towards the viewer, vertical down, horizontal right,
# in (z, y, x)) is left-handed in (x, y, z): every view would be a mirror image. Depth
# away from the viewer makes it right-handed, so the view is what an eye would see.
CAMERA_ORIENTATION = ("away", "down", "right")
# Camera (rx, ry, rz) in degrees in that frame. (0, 0, -90) looks at the patient from
# the front (towards +y) with the head (+z) up and the patient's left (+x) on the
# right: the radiological frontal view. rx turns it about the vertical axis, to show
# depth; -20 looks in from the patient's right front.
DEFAULT_ANGLES = (-20.0, 0.0, -90.0)
# Caption font size in points per pixel of canvas width (10 pt at 600 pixels); the
# colour bar and the orientation labels (LABEL_SCALE times the caption's size) scale
# alike. The caption's lines take the top CAPTION_FRACTION of the width; render_png
# fits the scan below them.
CAPTION_POINTS_PER_PIXEL = 10.0 / 600.0
COLORBAR_PIXELS_PER_PIXEL = (0.04, 0.25)
CAPTION_FRACTION = 0.3
LABEL_SCALE = 1.35
# Caption lines wrap a long series uid at its dots to this many characters.
CAPTION_UID_WIDTH = 36

CT_LAYER = "CT"
LUNG_LAYER = "lungs"
ANNOTATION_LAYER = "annotations"
DETECTION_LAYER = "detections"
ORIENTATION_LAYER = "orientation"
THRESHOLD_WIDGET = "detection threshold"


@dataclass(frozen=True)
class Scene:
    """What a view shows, in voxel coordinates of ``volume_hu`` as stored.

    ``volume_hu`` (D, H, W) HU; ``spacing_zyx`` mm; ``annotations_zyx`` (M, 3) and
    ``detections_zyx`` (K, 3) continuous voxel indices (z, y, x); diameters in mm;
    ``probabilities`` (K,) in [0, 1]; ``direction`` the scan's direction cosines
    (``ScanGeometry.direction``, row-major); ``uid`` the series shown.
    """

    volume_hu: NDArray
    spacing_zyx: tuple[float, float, float]
    annotations_zyx: NDArray[np.float64]
    annotation_diameters_mm: NDArray[np.float64]
    detections_zyx: NDArray[np.float64]
    detection_diameters_mm: NDArray[np.float64]
    probabilities: NDArray[np.float64]
    direction: tuple[float, ...] = ScanGeometry.direction
    uid: str = ""


def patient_axes(direction: ArrayLike) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """How a stored (z, y, x) array turns into the patient frame: ``(order, flip)``.

    Column c of the direction matrix D (row-major, as ``ScanGeometry.direction``) is the
    world direction of index axis c (x, y, z). Index axis c goes to world axis pi(c),
    the permutation maximising sum_c |D[pi(c), c]| (exact for the axis-aligned CT
    directions, the nearest axis-aligned frame for oblique ones), and runs against it
    where D[pi(c), c] < 0. In array terms: ``flip[a]`` reverses array axis a, then
    patient axis b (0 feet->head, 1 front->back, 2 right->left) is array axis ``order[b]``.
    """
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    world_of_index = max(itertools.permutations(range(3)),
                         key=lambda pi: sum(abs(matrix[pi[c], c]) for c in range(3)))
    # Array axis a is index axis 2 - a; patient axis b is world axis 2 - b.
    flip = tuple(bool(matrix[world_of_index[2 - a], 2 - a] < 0) for a in range(3))
    order = tuple(2 - world_of_index.index(2 - b) for b in range(3))
    return order, flip  # type: ignore[return-value]


def patient_oriented(scene: Scene) -> Scene:
    """``scene`` with its array and points in the patient frame (:func:`patient_axes`).

    A reversed axis of length L maps index u to L - 1 - u; the transposition reorders
    the volume's axes, the points' columns and the spacing alike. The result has the
    identity direction, so applying this twice changes nothing.
    """
    order, flip = patient_axes(scene.direction)
    volume = np.asarray(scene.volume_hu)
    shape = np.asarray(volume.shape, dtype=np.float64)

    def move(points_zyx: ArrayLike) -> NDArray[np.float64]:
        points = np.asarray(points_zyx, dtype=np.float64).reshape(-1, 3)
        points = np.where(flip, shape - 1.0 - points, points)
        return points[:, list(order)]

    reoriented = np.flip(volume, axis=tuple(a for a in range(3) if flip[a])).transpose(order)
    return replace(
        scene, volume_hu=reoriented, spacing_zyx=tuple(float(scene.spacing_zyx[a]) for a in order),
        annotations_zyx=move(scene.annotations_zyx), detections_zyx=move(scene.detections_zyx),
        direction=ScanGeometry.direction,
    )


def annotation_ring_sizes(diameters_mm: ArrayLike) -> NDArray[np.float64]:
    """Ring diameter (mm) round nodules of diameter d: ``ANNOTATION_RING_SCALE * d + ANNOTATION_RING_MARGIN_MM``."""
    return ANNOTATION_RING_SCALE * np.asarray(diameters_mm, dtype=np.float64).reshape(-1) + ANNOTATION_RING_MARGIN_MM


def overlay_text(uid: str, threshold: float, shown: int, total: int, annotated: int) -> str:
    """The view's caption: the scan, the threshold with the detections it keeps, the legend."""
    return (
        f"scan {_wrap_at_dots(uid or '(no uid)', CAPTION_UID_WIDTH)}\n"
        f"green rings: {annotated} annotated nodule{'s' * (annotated != 1)}\n"
        f"dots: {shown} of {total} detections, p >= {threshold:.2f}\n"
        f"dot colour: p, red 0 to yellow 1"
    )


def _wrap_at_dots(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters after a dot, where it has one to break at."""
    lines = [""]
    for part in text.split("."):
        piece = part if not lines[-1] else "." + part
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines[-1] += "."
            lines.append(part)
        else:
            lines[-1] += piece
    return "\n".join(lines)


def ensure_display() -> str:
    """Return ``DISPLAY``; where it is unset, start an Xvfb server first and set it.

    Xvfb picks a free display number itself and reports it through ``-displayfd``
    once it accepts connections, so there is no race with other servers. The server
    lives as long as this Python process. Call this before napari creates its Qt
    application (:func:`build_viewer` and :func:`render_png` do).
    """
    display = os.environ.get("DISPLAY")
    if display:
        return display
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError(
            "napari needs an X display and DISPLAY is unset; install Xvfb and Mesa GL "
            "(.ci/install-system-packages.sh) or run the command under xvfb-run -a"
        )
    read_fd, write_fd = os.pipe()
    # A file, not a pipe, for the server's log: a full pipe would block the server.
    with tempfile.TemporaryFile() as log:
        try:
            server = subprocess.Popen(
                [xvfb, "-displayfd", str(write_fd), "-screen", "0", "1920x1200x24", "-nolisten", "tcp"],
                pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )
        finally:
            os.close(write_fd)
        # Blocks until Xvfb is ready; an empty read means it exited instead.
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            server.wait(timeout=10)
            log.seek(0)
            message = log.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"Xvfb failed to start: {message[-1] if message else 'no message'}")
    atexit.register(_stop_server, server)
    os.environ["DISPLAY"] = f":{number}"
    return os.environ["DISPLAY"]


def _stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()


def build_viewer(
    scene: Scene, threshold: float = 0.5, show: bool = False, title: str = "FocalMix kit",
) -> napari.Viewer:
    """A napari viewer in 3D showing ``scene`` in the patient frame, as this module's docstring describes.

    Shapes (:class:`Scene`): ``volume_hu`` (D, H, W); ``annotations_zyx`` (M, 3) with
    ``annotation_diameters_mm`` (M,); ``detections_zyx`` (K, 3) with
    ``detection_diameters_mm`` (K,) and ``probabilities`` (K,). Detections with
    probability below ``threshold`` start hidden.
    """
    scene = patient_oriented(scene)
    volume = np.asarray(scene.volume_hu, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"volume_hu must be (D, H, W), got shape {volume.shape}")
    spacing = np.asarray(scene.spacing_zyx, dtype=np.float64).reshape(3)
    annotations = _points_mm(scene.annotations_zyx, spacing)
    detections = _points_mm(scene.detections_zyx, spacing)
    annotation_sizes = np.asarray(scene.annotation_diameters_mm, dtype=np.float64).reshape(-1)
    detection_sizes = np.asarray(scene.detection_diameters_mm, dtype=np.float64).reshape(-1)
    probability = np.asarray(scene.probabilities, dtype=np.float64).reshape(-1)
    if len(annotation_sizes) != len(annotations):
        raise ValueError(f"{len(annotations)} annotations but {len(annotation_sizes)} diameters")
    if not len(detections) == len(detection_sizes) == len(probability):
        raise ValueError(
            f"{len(detections)} detections, {len(detection_sizes)} diameters, {len(probability)} probabilities"
        )

    ensure_display()
    import napari
    from magicgui.widgets import FloatSlider

    viewer = napari.Viewer(title=title, ndisplay=3, show=show)
    viewer.add_image(
        volume, name=CT_LAYER, scale=spacing, rendering="mip", contrast_limits=BONE_WINDOW_HU,
        colormap="gray", opacity=0.3, blending="additive", metadata={"seriesuid": scene.uid},
    )
    viewer.add_image(
        _lung_interior(volume, spacing), name=LUNG_LAYER, scale=spacing, rendering="iso",
        iso_threshold=LUNG_ISO_THRESHOLD_HU, contrast_limits=(-1000.0, 200.0), colormap="bone",
        blending="translucent",
    )
    # Markers draw without the depth test: a surface in front of a nodule must not hide its mark.
    viewer.add_points(
        annotations, name=ANNOTATION_LAYER, size=annotation_ring_sizes(annotation_sizes), symbol="ring",
        face_color=ANNOTATION_COLOR, border_width=0.0, blending="translucent_no_depth",
    )
    dots = viewer.add_points(
        detections, name=DETECTION_LAYER, size=DETECTION_DOT_SCALE * detection_sizes,
        features={"probability": probability}, face_color="probability", face_colormap=DETECTION_COLORMAP,
        face_contrast_limits=(0.0, 1.0), border_color="black", border_width=0.1,
        blending="translucent_no_depth",
        metadata={"all": {"points_mm": detections, "sizes_mm": DETECTION_DOT_SCALE * detection_sizes,
                          "probability": probability}},
    )
    dots.face_colorbar.visible = len(detections) > 0
    _add_orientation_labels(viewer, volume.shape, spacing)
    caption = viewer.canvas.overlays.text
    caption.visible, caption.color, caption.position = True, "white", "top_left"
    slider = FloatSlider(value=float(threshold), min=0.0, max=1.0, step=0.01, label="probability ≥")
    slider.changed.connect(lambda value: set_detection_threshold(viewer, value))
    viewer.window.add_dock_widget(slider, name=THRESHOLD_WIDGET, area="right")
    set_detection_threshold(viewer, threshold)
    viewer.reset_view()
    viewer.scene.camera.orientation = CAMERA_ORIENTATION
    viewer.scene.camera.angles = DEFAULT_ANGLES
    return viewer


def _add_orientation_labels(viewer: napari.Viewer, shape_zyx: tuple[int, ...], spacing: NDArray[np.float64]) -> None:
    """The patient's head, feet, right and left written at the middle of the scan box's faces.

    In the patient frame display z grows towards the head and x towards the patient's left.
    """
    top = (np.asarray(shape_zyx, dtype=np.float64) - 1.0) * spacing
    middle = top / 2.0
    places = {"head": (top[0], middle[1], middle[2]), "feet": (0.0, middle[1], middle[2]),
              "right": (middle[0], middle[1], 0.0), "left": (middle[0], middle[1], top[2])}
    viewer.add_points(
        np.asarray(list(places.values())), name=ORIENTATION_LAYER, features={"side": list(places)},
        text={"string": "{side}", "color": "white", "size": 10}, size=0.0, face_color="transparent",
        border_width=0.0, blending="translucent_no_depth",
    )


def set_detection_threshold(viewer: napari.Viewer, threshold: float) -> None:
    """Show the detections with probability >= ``threshold``, hide the others, and say so in the caption.

    The layer holds only the detections shown (its metadata keeps them all): napari 0.9
    ignores ``Points.shown`` where every axis is displayed, as in 3D, and draws them all.
    """
    layer = viewer.layers[DETECTION_LAYER]
    everything = layer.metadata["all"]
    keep = everything["probability"] >= threshold
    layer.data = everything["points_mm"][keep]
    layer.features = {"probability": everything["probability"][keep]}
    layer.size = everything["sizes_mm"][keep]
    layer.face_color = "probability"  # the colours of the rows kept, from the colormap again
    layer.metadata["threshold"] = float(threshold)
    viewer.canvas.overlays.text.text = overlay_text(
        viewer.layers[CT_LAYER].metadata["seriesuid"], threshold, int(keep.sum()), len(keep),
        len(viewer.layers[ANNOTATION_LAYER].data),
    )


def render_png(
    out_path: str | Path,
    scene: Scene,
    threshold: float = 0.5,
    angles: tuple[float, float, float] = DEFAULT_ANGLES,
    zoom: float = 0.95,
    size: tuple[int, int] = (800, 800),
) -> Path:
    """Render ``scene`` as :func:`build_viewer` shows it, headless, and write it as a PNG (atomically).

    ``angles``: camera (rx, ry, rz) in degrees in ``CAMERA_ORIENTATION``'s frame;
    ``zoom``: factor on the zoom at which the scan's box, seen from ``angles``, just
    fills the image below the caption (:func:`_fit_below_caption`); ``size``: (height,
    width) of the image in pixels; the caption's font, the colour bar and the labels grow
    with the width, and so do the smallest rings and dots. Starts Xvfb
    where ``DISPLAY`` is unset (:func:`ensure_display`). Returns ``out_path``.
    """
    from PIL import Image

    out_path = Path(out_path)
    viewer = build_viewer(scene, threshold=threshold, show=False)
    try:
        _show_off_screen(viewer)
        height, width = size
        viewer.canvas.overlays.text.font_size = CAPTION_POINTS_PER_PIXEL * width
        colorbar = viewer.layers[DETECTION_LAYER].face_colorbar
        colorbar.size = tuple(f * width for f in COLORBAR_PIXELS_PER_PIXEL)
        colorbar.font_size = CAPTION_POINTS_PER_PIXEL * width
        viewer.layers[ORIENTATION_LAYER].text.size = LABEL_SCALE * CAPTION_POINTS_PER_PIXEL * width
        camera = viewer.scene.camera
        camera.angles = tuple(float(a) for a in angles)
        ct = viewer.layers[CT_LAYER]
        fit, camera.center = _fit_below_caption(
            (np.asarray(ct.data.shape) - 1.0) * ct.scale, np.asarray(camera.view_direction),
            np.asarray(camera.up_direction), (height, width), CAPTION_FRACTION * width,
        )
        camera.zoom = zoom * fit
        for name, smallest in ((ANNOTATION_LAYER, ANNOTATION_RING_MIN_WIDTH), (DETECTION_LAYER, DETECTION_DOT_MIN_WIDTH)):
            markers = viewer.layers[name]
            markers.size = np.maximum(markers.size, smallest * width / camera.zoom)
        pixels = viewer.screenshot(canvas_only=True, size=tuple(int(n) for n in size))
    finally:
        viewer.close()
    with atomic.atomic_path(out_path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
    return out_path


def _fit_below_caption(
    box_mm: NDArray[np.float64], view: NDArray[np.float64], up: NDArray[np.float64],
    size: tuple[int, int], caption_pixels: float,
) -> tuple[float, tuple[float, float, float]]:
    """Zoom (pixels per mm) and camera centre (z, y, x) mm that fit the box [0, box_mm] below the caption.

    The 3D camera is orthographic: a corner p lands at (p . right, p . up) on the
    screen, right = up x view, so the box spans ptp(corners . right) by ptp(corners . up)
    mm. Zoom = min(W / width, (H - caption) / height); the centre moves from the box's
    centre towards ``up`` by caption / 2 pixels, which moves the box down by as much.
    """
    right = np.cross(up, view)
    corners = np.asarray(list(itertools.product(*((0.0, side) for side in box_mm))))
    height, width = size
    zoom = min(width / np.ptp(corners @ right), (height - caption_pixels) / np.ptp(corners @ up))
    centre = box_mm / 2.0 + up * (caption_pixels / 2.0) / zoom
    return float(zoom), tuple(float(c) for c in centre)  # type: ignore[return-value]


def _show_off_screen(viewer: napari.Viewer) -> None:
    """Show the viewer's window to Qt without mapping it on the screen.

    napari's canvas draws only in a shown window (screenshots of a hidden one are
    black); with ``WA_DontShowOnScreen`` nothing appears even on a desktop display.
    """
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window  # napari has no public handle on its QMainWindow
    window.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
    window.show()


def scene_from_files(data_dir: str | Path, uid: str, predictions_csv: str | Path | None = None) -> Scene:
    """The scene of series ``uid`` in a LUNA16-layout folder, with a submission's detections.

    Reads ``subset*/<uid>.mhd`` and ``annotations.csv``; the optional predictions CSV
    (``seriesuid,coordX,coordY,coordZ,probability``, world mm) may carry a
    ``diameter_mm`` column, else each detection is drawn
    ``DEFAULT_DETECTION_DIAMETER_MM`` wide. World points become voxel indices with
    ``data.coordinates.world_to_voxel``.
    """
    folder = Luna16Folder(data_dir)
    scan = read_scan(folder.scan_path(uid))
    annotations = folder.annotations.for_series(uid)
    if predictions_csv is None:
        detections_zyx, diameters, probabilities = np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    else:
        predictions = luna_csv.read_predictions(predictions_csv).for_series(uid)
        detections_zyx = world_to_voxel(predictions.world_xyz, scan.geometry).reshape(-1, 3)
        diameters = _prediction_diameters(Path(predictions_csv), predictions)
        probabilities = predictions.value
    return Scene(
        volume_hu=scan.volume,
        spacing_zyx=scan.geometry.spacing_zyx,
        annotations_zyx=world_to_voxel(annotations.world_xyz, scan.geometry).reshape(-1, 3),
        annotation_diameters_mm=annotations.value,
        detections_zyx=detections_zyx,
        detection_diameters_mm=diameters,
        probabilities=probabilities,
        direction=scan.geometry.direction,
        uid=uid,
    )


def _prediction_diameters(path: Path, predictions: luna_csv.FindingTable) -> NDArray[np.float64]:
    """The ``diameter_mm`` of each prediction row where the file has that column, else the default."""
    with path.open(encoding="utf-8-sig") as handle:
        header = [name.strip() for name in handle.readline().split(",")]
    if "diameter_mm" not in header:
        return np.full(len(predictions), DEFAULT_DETECTION_DIAMETER_MM)
    # The same file read as an annotation table: same rows, with the diameter as value.
    sized = luna_csv.read_annotations(path)
    diameter_of_row = dict(zip(sized.rows.tolist(), sized.value.tolist()))
    return np.asarray([diameter_of_row[row] for row in predictions.rows.tolist()], dtype=np.float64)


def _points_mm(points_zyx: ArrayLike, spacing: NDArray[np.float64]) -> NDArray[np.float64]:
    """Voxel indices (N, 3) to display millimetres (N, 3), where napari sizes are in mm."""
    return np.asarray(points_zyx, dtype=np.float64).reshape(-1, 3) * spacing


def _lung_interior(volume: NDArray[np.float32], spacing: NDArray[np.float64]) -> NDArray[np.float32]:
    """``volume`` inside the lung mask, -1000 HU (air) outside it.

    ``segment_lungs`` wants one voxel side; the geometric mean keeps the voxel volume
    (what its minimum component size is measured in) exact.
    """
    mask = segment_lungs(volume, float(np.prod(spacing)) ** (1.0 / 3.0))
    return np.where(mask, volume, np.float32(-1000.0))
