"""Figures of scans for the teaching notebooks: axial slices with nodules, HU windows, anchors.

Images are drawn in millimetres: a (H, W) axial slice with in-plane spacing (sy, sx)
covers x in [-sx/2, (W - 1/2) sx] and y likewise (voxel centres at index * spacing),
so a nodule of diameter d mm is drawn as a circle of radius d / 2 mm. Axial slices are
shown as stored, row 0 at the top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle
from numpy.typing import NDArray

from focalmix_lib.data.coordinates import world_to_voxel
from focalmix_lib.data.dataset import PreprocessedScan
from focalmix_lib.data.scans import Scan
from focalmix_lib.data.scans import HU_MAX, HU_MIN
from focalmix_lib.detection.matching import IGNORED

# Display windows (low, high) in HU: lung (level -600, width 1500), mediastinum (level 40, width 400).
LUNG_WINDOW = (-1350.0, 150.0)
MEDIASTINAL_WINDOW = (-160.0, 240.0)
HU_WINDOWS: dict[str, tuple[float, float]] = {"lung window": LUNG_WINDOW, "mediastinal window": MEDIASTINAL_WINDOW}


def to_hu(volume: NDArray) -> NDArray[np.float32]:
    """Inverse of ``normalize_hu`` on [0, 1]: ``HU = v (HU_MAX - HU_MIN) + HU_MIN`` (clipped values stay clipped)."""
    return (np.asarray(volume, dtype=np.float32) * (HU_MAX - HU_MIN) + HU_MIN).astype(np.float32)


def _extent_mm(shape_yx: Sequence[int], spacing_yx: Sequence[float]) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in mm with voxel centres at index * spacing."""
    (h, w), (sy, sx) = shape_yx, spacing_yx
    return (-sx / 2, (w - 0.5) * sx, (h - 0.5) * sy, -sy / 2)


def show_slice(ax: plt.Axes, slice_hu: NDArray, spacing_yx: Sequence[float], window: tuple[float, float],
               title: str) -> plt.Axes:
    """Draw one axial slice (H, W) in HU through ``window`` on ``ax`` with mm axes."""
    image = ax.imshow(slice_hu, cmap="gray", vmin=window[0], vmax=window[1],
                      extent=_extent_mm(slice_hu.shape, spacing_yx), interpolation="nearest")
    ax.set_xlabel("x (mm from the first voxel)")
    ax.set_ylabel("y (mm from the first voxel)")
    ax.set_title(title)
    return image


def nodule_slices(scan: PreprocessedScan, count: int) -> list[int]:
    """Axial indices through the centres of up to ``count`` nodules (evenly spaced slices if none)."""
    if len(scan.boxes):
        centres = np.rint((scan.boxes[:, 0] + scan.boxes[:, 3]) / 2).astype(int)
        return sorted(set(np.clip(centres, 0, scan.volume.shape[0] - 1).tolist()))[:count]
    return np.linspace(0, scan.volume.shape[0] - 1, count + 2)[1:-1].round().astype(int).tolist()


def plot_nodule_slices(scan: PreprocessedScan, count: int = 4, window: tuple[float, float] = LUNG_WINDOW,
                       detections: tuple[NDArray, NDArray] | None = None) -> Figure:
    """Axial slices through the scan's nodules, each nodule circled where its sphere cuts the slice.

    The circle of a nodule of diameter d centred at depth c has radius sqrt((d/2)^2 - (z - c)^2)
    on slice z (the cross-section of the sphere), in mm. ``detections``: boxes (K, 6) in voxels
    of ``scan.volume`` and their probabilities (K,); a box that spans a slice is drawn on it as
    a square labelled with its probability.
    """
    slices = nodule_slices(scan, count)
    spacing = scan.geometry.spacing_zyx
    hu = to_hu(scan.volume)
    fig, axes = plt.subplots(1, len(slices), figsize=(4.2 * len(slices), 4.4), squeeze=False)
    centres = (scan.boxes[:, :3] + scan.boxes[:, 3:]) / 2
    for ax, z in zip(axes[0], slices):
        show_slice(ax, hu[z], spacing[1:], window, f"slice z = {z} ({z * spacing[0]:.0f} mm)")
        for (cz, cy, cx), diameter in zip(centres, scan.diameters_mm):
            radius_sq = (diameter / 2) ** 2 - ((z - cz) * spacing[0]) ** 2
            if radius_sq > 0:
                ax.add_patch(Circle((cx * spacing[2], cy * spacing[1]), np.sqrt(radius_sq) + 1.5, fill=False,
                                    color="red", lw=1.5))
        for box, probability in zip(*detections) if detections is not None else ():
            if box[0] <= z <= box[3]:
                (y1, x1), (y2, x2) = box[1:3] * spacing[1:], box[4:6] * spacing[1:]
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="gold", lw=1.2, ls="--"))
                ax.annotate(f"p = {probability:.2f}", (x2, y1), color="gold", fontsize=8, va="bottom")
    found = "" if detections is None else f"; the detector's {len(detections[1])} best marks (gold squares)"
    fig.suptitle(f"Scan {scan.uid[-12:]}: {len(scan.boxes)} annotated nodules (red circles){found}\n"
                 f"{spacing[0]:g} mm voxels, window {window[0]:.0f}..{window[1]:.0f} HU")
    fig.tight_layout()
    return fig


def plot_hu_windows(slice_hu: NDArray, spacing_yx: Sequence[float],
                    windows: Mapping[str, tuple[float, float]] = HU_WINDOWS) -> Figure:
    """The same axial slice (H, W) in HU through each display window, side by side, with HU colour bars."""
    fig, axes = plt.subplots(1, len(windows), figsize=(5.2 * len(windows), 4.6), squeeze=False)
    for ax, (name, window) in zip(axes[0], windows.items()):
        image = show_slice(ax, slice_hu, spacing_yx, window, f"{name}: {window[0]:.0f} to {window[1]:.0f} HU")
        fig.colorbar(image, ax=ax, label="intensity (HU)", shrink=0.8)
    fig.suptitle("One slice, two windows: the lung window shows parenchyma and nodules, "
                 "the mediastinal window soft tissue")
    fig.tight_layout()
    return fig


def plot_resampling(scan: Scan, resampled: PreprocessedScan, world_xyz: Sequence[float],
                    window: tuple[float, float] = LUNG_WINDOW) -> Figure:
    """Coronal slices (z, x) through the world point ``world_xyz`` (mm), as stored and resampled, in voxel indices.

    A network sees voxel indices, not millimetres: a scan stored with spacing
    (sz, sy, sx), sz != sx, shows a sphere as an ellipse of height/width sx/sz in index
    space (left); after resampling to isotropic voxels it is round again (right). The
    point is located in each grid by ``world_to_voxel`` and marked with a cross.
    """
    panels = ((np.asarray(scan.volume, dtype=np.float32), scan.geometry, "as stored"),
              (to_hu(resampled.volume), resampled.geometry, "resampled to isotropic voxels"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), layout="constrained")
    for ax, (hu, geometry, name) in zip(axes, panels):
        z, y, x = world_to_voxel(world_xyz, geometry)
        sz, _, sx = geometry.spacing_zyx
        row = int(np.clip(np.rint(y), 0, hu.shape[1] - 1))
        ax.imshow(hu[:, row, :], cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest",
                  origin="lower", aspect="equal")
        ax.plot(x, z, "+", color="red", ms=14, mew=1.5, label=f"nodule centre: voxel (z, x) = ({z:.1f}, {x:.1f})")
        ax.set_xlabel("x index (voxels)")
        ax.set_ylabel("z index (voxels)")
        ax.set_title(f"{name}\n{hu.shape[0]} x {hu.shape[2]} voxels (z, x) of {sz:.3g} x {sx:.3g} mm")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Coronal slice through a nodule, one image pixel per voxel: only isotropic voxels keep it round")
    return fig


ANCHOR_STYLE = {"positive": ("limegreen", "-"), "ignored": ("orange", "--"), "negative": ("deepskyblue", ":")}
# Positives are drawn above the (more numerous) ignored anchors that overlap them.
ANCHOR_ZORDER = {"positive": 3.0, "ignored": 2.0}


def anchor_label_names(matched: NDArray) -> NDArray[np.str_]:
    """'positive' / 'ignored' / 'negative' for the matcher's output (annotation index, IGNORED, NEGATIVE)."""
    return np.where(matched >= 0, "positive", np.where(matched == IGNORED, "ignored", "negative"))


def plot_anchor_labels(patch: NDArray, anchors: NDArray, matched: NDArray, gt_box: NDArray,
                       level_sizes: Sequence[int], strides: Sequence[int], spacing_mm: float) -> Figure:
    """Paper Figure 1a: the anchors around an annotation, coloured by their training label.

    ``patch`` (P, P, P) in [0, 1]; ``anchors`` (N, 6) and ``matched`` (N,) from
    ``match_anchors``; ``gt_box`` (6,); ``level_sizes`` anchors per FPN level (in
    anchor order). One panel per level, on the axial slice through the box centre:
    every anchor whose cube contains that slice and overlaps the annotation is drawn as
    a square (positive green, ignored orange); negatives show as small dots at their
    centres (their squares would cover the image). Counts in the legend are over the
    whole 3D patch.
    """
    names = anchor_label_names(np.asarray(matched))
    level_of = np.repeat(np.arange(len(level_sizes)), level_sizes)
    z = int(round((gt_box[0] + gt_box[3]) / 2))
    fig, axes = plt.subplots(1, len(level_sizes), figsize=(5.4 * len(level_sizes), 6.0), squeeze=False)
    spans_slice = (anchors[:, 0] <= z) & (anchors[:, 3] >= z)
    overlaps = np.all((anchors[:, 3:] > gt_box[:3]) & (anchors[:, :3] < gt_box[3:]), axis=1)
    for level, (ax, stride) in enumerate(zip(axes[0], strides)):
        show_slice(ax, to_hu(patch[z]), (spacing_mm, spacing_mm), LUNG_WINDOW,
                   f"FPN level {level} (stride {stride} voxels = {stride * spacing_mm:g} mm)")
        on_level = level_of == level
        for name, (color, style) in ANCHOR_STYLE.items():
            chosen = on_level & (names == name)
            count = int(chosen.sum())
            label = f"{name}: {count} anchors"
            if name == "negative":
                centre = (anchors[:, :3] + anchors[:, 3:]) / 2
                near = chosen & (np.abs(centre[:, 0] - z) <= stride / 2)
                ax.scatter(centre[near, 2] * spacing_mm, centre[near, 1] * spacing_mm, s=4, color=color, label=label)
                continue
            for i, box in enumerate(anchors[chosen & spans_slice & overlaps]):
                ax.add_patch(Rectangle((box[2] * spacing_mm, box[1] * spacing_mm), (box[5] - box[2]) * spacing_mm,
                                       (box[4] - box[1]) * spacing_mm, fill=False, color=color, ls=style, lw=1.6,
                                       zorder=ANCHOR_ZORDER[name], label=label if i == 0 else None))
            if not (chosen & spans_slice & overlaps).any():
                ax.plot([], [], color=color, ls=style, label=label)
        ax.add_patch(Rectangle((gt_box[2] * spacing_mm, gt_box[1] * spacing_mm), (gt_box[5] - gt_box[2]) * spacing_mm,
                               (gt_box[4] - gt_box[1]) * spacing_mm, fill=False, color="red", lw=2.0,
                               zorder=4.0, label="annotation"))
        # In a corner: the anchors of interest sit in the middle of a patch centred on the nodule.
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    fig.suptitle("Anchor labels of one annotation (Figure 1a)\npositive: IoU >= positive threshold or the best "
                 "anchor; negative: IoU < negative threshold; ignored: in between")
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.93))  # room for the two-line suptitle
    return fig
