"""Figures of FocalMix's semi-supervised parts (notebooks 03 and 04).

Anchor maps are shown as maximum projections: a level map (A, D_l, H_l, W_l) becomes
an (H_l, W_l) image, the maximum over the anchor sizes and the depth, drawn over the
patch's extent so that it lines up with the image (cell j covers voxels j s .. j s + s - 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import NDArray

from focalmix_lib.detection.anchors import unflatten_levels
from focalmix_lib.ssl.mixup import image_mixup, mixup_lambda
from focalmix_lib.ssl.target_prediction import sharpen
from focalmix_lib.ssl.transforms import SpatialTransform
from focalmix_lib.viz.scan_plots import LUNG_WINDOW, to_hu
from focalmix_lib.viz.widgets import explorer

Logits = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def describe(transform: SpatialTransform) -> str:
    """'flip z, flip x, rot 90' style name of a group element ('identity' for none)."""
    parts = [f"flip {axis}" for axis, on in zip("zyx", (transform.flip_z, transform.flip_y, transform.flip_x)) if on]
    if transform.rot90:
        parts.append(f"rot {90 * transform.rot90}")
    return ", ".join(parts) or "identity"


def per_view_maps(predict_logits: Logits, patch: torch.Tensor, transforms: Sequence[SpatialTransform],
                  level: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view anchor probabilities of one patch (1, 1, P, P, P) on one FPN level.

    Returns (in the views' own frames, mapped back to the original grid), each (K, A, D_l, H_l, W_l).
    The mean of the second over K is ``averaged_view_probabilities``' map of that level.
    """
    with torch.no_grad():
        views = torch.cat([t.apply(patch) for t in transforms])
        probabilities = torch.sigmoid(predict_logits(views)[level])
    back = torch.stack([t.invert(p) for t, p in zip(transforms, probabilities)])
    return probabilities, back


def projection(level_map: torch.Tensor | NDArray) -> NDArray:
    """(A, D_l, H_l, W_l) -> (H_l, W_l): maximum over anchor sizes and depth."""
    values = torch.as_tensor(level_map)
    return values.amax(dim=(0, 1)).numpy()


def projection_all_levels(level_maps: Sequence[torch.Tensor | NDArray], side: int) -> NDArray:
    """Per-level maps (A, D_l, H_l, W_l) -> (side, side): each level's projection repeated over its
    cells' voxels (stride side / H_l), then the maximum over levels."""
    images = []
    for level_map in level_maps:
        image = projection(level_map)
        stride = side // image.shape[0]
        images.append(np.kron(image, np.ones((stride, stride))))
    return np.max(images, axis=0)


def nodule_level(box_side: float, anchor_sizes: Sequence[Sequence[float]]) -> int:
    """The FPN level whose anchor sides (voxels) lie closest to ``box_side`` on a log scale: the
    level that holds the nodule's best-matching anchors, where its peak shows."""
    return int(np.argmin([min(abs(np.log(size / box_side)) for size in sizes) for sizes in anchor_sizes]))


def peak_cell(level_map: torch.Tensor | NDArray) -> tuple[int, int, int]:
    """(z, y, x) cell of the largest anchor probability of a level map (A, D_l, H_l, W_l)."""
    values = torch.as_tensor(level_map).amax(dim=0)
    return tuple(int(i) for i in np.unravel_index(int(values.argmax()), tuple(values.shape)))  # type: ignore[return-value]


def box_centre_cell(box: NDArray, stride: int) -> tuple[int, int, int]:
    """(z, y, x) cell whose centre j s + (s - 1) / 2 lies nearest the centre of ``box`` (z1, y1, x1, z2, y2, x2)."""
    centre = (np.asarray(box[:3], float) + np.asarray(box[3:6], float)) / 2
    return tuple(int(i) for i in np.rint((centre - (stride - 1) / 2) / stride))  # type: ignore[return-value]


def _show_map(ax: plt.Axes, image: NDArray, side: int, title: str, vmax: float = 1.0):
    """An anchor-map image over the patch's extent (cells line up with the voxels they cover)."""
    shown = ax.imshow(image, cmap="magma", vmin=0.0, vmax=vmax, extent=(-0.5, side - 0.5, side - 0.5, -0.5),
                      interpolation="nearest")
    ax.set_title(title, fontsize=9)
    return shown


def _show_patch_slice(ax: plt.Axes, patch: NDArray, z: int, title: str) -> None:
    side = patch.shape[-1]
    ax.imshow(to_hu(patch[z]), cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1],
              extent=(-0.5, side - 0.5, side - 0.5, -0.5))
    ax.set_title(title, fontsize=9)


def _label_voxel_axes(axes: NDArray) -> None:
    """x / y labels on the outer panels of a grid whose panels share both axes (no label overlaps a neighbour)."""
    grid = np.atleast_2d(axes)
    for ax in grid[-1, :]:
        ax.set_xlabel("x (voxels)")
    for ax in grid[:, 0]:
        ax.set_ylabel("y (voxels)")


def _mark_peak(ax: plt.Axes, level_map: torch.Tensor, stride: int) -> None:
    """A cyan cross on the centre of the peak anchor's cell."""
    _, y, x = peak_cell(level_map)
    ax.plot([x * stride + (stride - 1) / 2], [y * stride + (stride - 1) / 2], "+", color="cyan", ms=14, mew=2,
            label="peak anchor")


def plot_target_prediction(patch: NDArray, z: int, transforms: Sequence[SpatialTransform], view_maps: torch.Tensor,
                           back_maps: torch.Tensor, temperature: float, box: NDArray | None = None) -> Figure:
    """Paper Figure 1b for one patch (P, P, P) and one FPN level.

    Columns: the K views. Rows: the view's axial slice through the object, the anchor
    probabilities predicted on that view, the same map mapped back with g_k^-1. Last
    column: the original patch, the K-average p_bar and Sharpen(p_bar, T). ``box``
    (z1, y1, x1, z2, y2, x2), the annotation, is drawn in red in every panel, moved with
    g_k in the views' own frames; a cyan cross marks the peak anchor of p_bar.
    """
    k, side = len(transforms), patch.shape[-1]
    stride = side // view_maps.shape[-1]
    average = back_maps.mean(dim=0)
    vmax = max(float(back_maps.max()), float(sharpen(average, temperature).max()), 1e-6)
    fig, axes = plt.subplots(3, k + 1, figsize=(2.7 * (k + 1) + 1.2, 8.4), sharex=True, sharey=True,
                             layout="constrained")
    for column, transform in enumerate(transforms):
        view = transform.apply(torch.as_tensor(patch)).numpy()
        view_z = side - 1 - z if transform.flip_z else z
        _show_patch_slice(axes[0, column], view, view_z, f"view {column + 1}: {describe(transform)}")
        _show_map(axes[1, column], projection(view_maps[column]), side, "predicted on the view", vmax)
        _show_map(axes[2, column], projection(back_maps[column]), side, "mapped back with g^-1", vmax)
        if box is not None:
            moved = transform.apply_to_boxes(torch.as_tensor(np.asarray(box, np.float32)[None]), (side,) * 3)[0]
            for row in (0, 1):
                axes[row, column].add_patch(_box_patch(moved.numpy(), "red"))
            axes[2, column].add_patch(_box_patch(box, "red"))
    _show_patch_slice(axes[0, k], patch, z, "original patch (unlabeled)")
    _show_map(axes[1, k], projection(average), side, f"p_bar: average of the K = {k} maps", vmax)
    shown = _show_map(axes[2, k], projection(sharpen(average, temperature)), side,
                      f"q = Sharpen(p_bar, T = {temperature:g})", vmax)
    for row in (1, 2):
        _mark_peak(axes[row, k], average, stride)
    handles = list(axes[1, k].get_lines())
    if box is not None:
        for row in range(3):
            axes[row, k].add_patch(_box_patch(box, "red"))
        handles.insert(0, Rectangle((0, 0), 1, 1, fill=False, color="red",
                                    label="annotation (drawn for you; the model sees no label)"))
    # Below the panels, where it can never hide the nodule.
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    _label_voxel_axes(axes)
    fig.colorbar(shown, ax=axes[1:, :], label="anchor probability\n(max over sizes and depth)", shrink=0.8)
    fig.suptitle("Anchor-level target prediction: predict on K transformed views, map back with g^-1, "
                 "average, sharpen")
    return fig


def plot_sharpening(average: torch.Tensor, side: int, temperature: float) -> Figure:
    """Sharpen(p, T) = sigmoid(logit(p) / T) as curves, and applied to a level map p_bar (A, D_l, H_l, W_l)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0), layout="constrained")
    p = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)
    for t in sorted({1.0, 0.5, 0.25, temperature}, reverse=True):
        axes[0].plot(p, sharpen(p, t), lw=2.5 if t == temperature else 1.0, label=f"T = {t:g}")
    axes[0].set_xlabel("averaged probability p_bar")
    axes[0].set_ylabel("sharpened target q")
    axes[0].set_title("Sharpen(p, T) = p^(1/T) / (p^(1/T) + (1 - p)^(1/T))", fontsize=9)
    axes[0].legend()
    _show_map(axes[1], projection(average), side, "p_bar (before sharpening)")
    shown = _show_map(axes[2], projection(sharpen(average, temperature)), side, f"q = Sharpen(p_bar, T = {temperature:g})")
    for ax in axes[1:]:
        ax.set_xlabel("x (voxels)")
        ax.set_ylabel("y (voxels)")
    fig.colorbar(shown, ax=axes[1:].tolist(), label="anchor probability", shrink=0.8)
    return fig


def sharpen_explorer(average: torch.Tensor, side: int, temperature: float = 0.5):
    """An ipywidgets slider for T that redraws :func:`plot_sharpening` (:func:`focalmix_lib.viz.widgets.explorer`)."""
    import ipywidgets as widgets

    def draw(temperature: float) -> None:
        plt.show(plot_sharpening(average, side, temperature))

    # Linear steps of 0.05: the slider shows the values T is usually given (0.5, not 0.501187).
    return explorer(draw, temperature=widgets.FloatSlider(value=temperature, min=0.05, max=2.0, step=0.05,
                                                          readout_format=".2f", description="T"))


def plot_label_guessing(back_maps: torch.Tensor, side: int, temperature: float) -> Figure:
    """MixMatch's class-level label guess next to FocalMix's anchor-level guess, from the same K views.

    MixMatch guesses one label per image: here the patch-level probability "holds a
    nodule" = the largest anchor probability of a view, averaged over the K views and
    sharpened. It says *whether*, not *where*; the anchor-level guess keeps one soft
    target per anchor.
    """
    k = back_maps.shape[0]
    per_view = back_maps.reshape(k, -1).amax(dim=1)
    guess = per_view.mean()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [f"view {i + 1}" for i in range(k)] + ["average", f"sharpened (T = {temperature:g})"]
    values = per_view.tolist() + [float(guess), float(sharpen(guess, temperature))]
    left.bar(labels, values, color=["C0"] * k + ["C1", "C2"])
    left.set_ylim(0, 1)
    left.set_ylabel("patch-level probability of a nodule")
    left.set_xlabel("view")
    left.tick_params(axis="x", rotation=30)
    left.set_title("MixMatch: one guessed label per patch", fontsize=10)
    shown = _show_map(right, projection(sharpen(back_maps.mean(dim=0), temperature)), side,
                      "FocalMix: one guessed target per anchor")
    right.set_xlabel("x (voxels)")
    right.set_ylabel("y (voxels)")
    fig.colorbar(shown, ax=right, label="anchor target q")
    fig.suptitle("Label guessing: class level (MixMatch) vs anchor level (FocalMix)")
    fig.tight_layout()
    return fig


def _box_patch(box: NDArray, color: str) -> Rectangle:
    return Rectangle((box[2], box[1]), box[5] - box[2], box[4] - box[1], fill=False, color=color, lw=1.5)


def mean_change_hu(before: NDArray, after: NDArray) -> float:
    """Mean absolute intensity change |after - before| in HU, over all voxels of two equal arrays in [0, 1].

    For image MixUp, after - before = (1 - l)(x' - x), so the change grows linearly with
    1 - l: about a third of |x' - x| at l = 0.65, a hundredth at l = 0.99.
    """
    return float(np.abs(to_hu(np.asarray(after)) - to_hu(np.asarray(before))).mean())


def _show_difference(ax: plt.Axes, difference: NDArray, title: str, limit: float, cmap: str = "coolwarm"):
    side = difference.shape[-1]
    shown = ax.imshow(difference, cmap=cmap, vmin=-limit, vmax=limit, extent=(-0.5, side - 0.5, side - 0.5, -0.5),
                      interpolation="nearest")
    ax.set_title(title, fontsize=9)
    return shown


def plot_image_mixup(images: NDArray, target_maps: Sequence[torch.Tensor], mixed_images: NDArray,
                     mixed_maps: Sequence[torch.Tensor], sample: int, partner: int, z: int, lam: float) -> Figure:
    """Paper Figure 4 (image level): x, its partner x', the mix, what the mix changed, and their anchor targets.

    ``images`` / ``mixed_images`` (B, 1, P, P, P); ``target_maps`` / ``mixed_maps`` per
    level (B, A, D_l, H_l, W_l) (``unflatten_levels`` of the (B, N) targets). Row 1: axial
    slices z; row 2: the targets as a maximum projection over levels, sizes and depth
    (ignored anchors count as 0). Column 4: x^ - x = (1 - l)(x' - x) and y^ - y.
    """
    side = images.shape[-1]
    fig, axes = plt.subplots(2, 4, figsize=(14, 7.2), sharex=True, sharey=True, layout="constrained")
    columns = [(images[sample, 0], target_maps, sample, "x"), (images[partner, 0], target_maps, partner, "x'"),
               (mixed_images[sample, 0], mixed_maps, sample, f"x^ = l x + (1 - l) x', l = {lam:.2f}")]
    targets = []
    for column, (image, maps, row, name) in enumerate(columns):
        _show_patch_slice(axes[0, column], image, z, name)
        targets.append(projection_all_levels([level[row] for level in maps], side))
        shown = _show_map(axes[1, column], targets[-1], side, f"anchor targets of {name.split(' =')[0]}")
    change = to_hu(mixed_images[sample, 0, z]) - to_hu(images[sample, 0, z])
    hu = _show_difference(axes[0, 3], change, f"x^ - x: mean |change| {np.abs(change).mean():.0f} HU",
                          max(float(np.abs(change).max()), 1.0))
    fig.colorbar(hu, ax=axes[0, 3], label="change (HU)", shrink=0.8)
    moved = _show_difference(axes[1, 3], targets[2] - targets[0], "y^ - y (targets)", 1.0)
    fig.colorbar(moved, ax=axes[1, 3], label="target change", shrink=0.8)
    _label_voxel_axes(axes)
    fig.colorbar(shown, ax=axes[1, :3], label="anchor target y\n(max over levels, sizes, depth)", shrink=0.8)
    fig.suptitle("Image-level MixUp: images and per-anchor targets mixed with the same l = max(lambda, 1 - lambda)")
    return fig


def image_mixup_explorer(images: torch.Tensor, targets: torch.Tensor, levels: Sequence[tuple[int, ...]],
                         permutation: torch.Tensor, sample: int, z: int, lam: float):
    """A slider for l that mixes the batch with the kit's ``image_mixup`` and redraws :func:`plot_image_mixup`.

    ``images`` (B, 1, P, P, P), ``targets`` (B, N) flat per-anchor targets, ``levels`` the
    detector's level shapes (``unflatten_levels``), ``permutation`` the partners.
    """
    import ipywidgets as widgets

    target_maps = unflatten_levels(targets, levels)

    def draw(lam: float) -> None:
        mixed_images, mixed_targets = image_mixup(images, targets, lam, permutation)
        plt.show(plot_image_mixup(images.numpy(), target_maps, mixed_images.numpy(),
                                  unflatten_levels(mixed_targets, levels), sample, int(permutation[sample]), z, lam))

    # l >= 0.5 by construction (l = max(lambda, 1 - lambda)), so the slider starts there.
    return explorer(draw, lam=widgets.FloatSlider(value=lam, min=0.5, max=1.0, step=0.01, readout_format=".2f",
                                                  description="l"))


def plot_object_mixup(images: NDArray, mixed: NDArray, boxes: Sequence[NDArray], sample: int, lam: float) -> Figure:
    """Paper Figure 4 (object level): a patch before and after, with the difference, through its first object."""
    box = np.asarray(boxes[sample])[0]
    z = int(round((box[0] + box[3]) / 2))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), sharex=True, sharey=True, layout="constrained")
    _show_patch_slice(axes[0], images[sample, 0], z, "before: the object (red box)")
    _show_patch_slice(axes[1], mixed[sample, 0], z, f"after: l object + (1 - l) partner object, l = {lam:.2f}")
    difference = to_hu(mixed[sample, 0, z]) - to_hu(images[sample, 0, z])
    shown = _show_difference(axes[2], difference, "after - before (only inside object boxes)",
                             max(float(np.abs(difference).max()), 1.0))
    fig.colorbar(shown, ax=axes[2], label="change (HU)")
    for ax in axes:
        for other in np.asarray(boxes[sample]).reshape(-1, 6):
            ax.add_patch(_box_patch(other, "red"))
    _label_voxel_axes(axes)
    fig.suptitle("Object-level MixUp: each object mixed with another object of the batch, resized to its box")
    return fig


def plot_beta_draws(eta: float, draws: int = 20000, seed: int = 0) -> Figure:
    """Histograms of lambda ~ Beta(eta, eta) and of l = max(lambda, 1 - lambda) (the kit's ``mixup_lambda``)."""
    from scipy.stats import beta

    lambdas = np.random.default_rng(seed).beta(eta, eta, size=draws)
    generator = torch.Generator().manual_seed(seed)
    kept = np.asarray([mixup_lambda(eta, generator) for _ in range(draws)])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.0), sharey=True)
    grid = np.linspace(0.005, 0.995, 200)
    left.hist(lambdas, bins=50, range=(0, 1), density=True, alpha=0.6, label=f"{draws} draws")
    left.plot(grid, beta.pdf(grid, eta, eta), color="k", label=f"Beta({eta:g}, {eta:g}) density")
    left.set_title("lambda ~ Beta(eta, eta)")
    left.set_xlabel("lambda")
    left.set_ylabel("probability density")
    left.legend()
    right.hist(kept, bins=50, range=(0, 1), density=True, alpha=0.6, color="C1", label="mixup_lambda draws")
    right.plot(grid[grid >= 0.5], 2 * beta.pdf(grid[grid >= 0.5], eta, eta), color="k", label="2 x Beta density on [0.5, 1]")
    right.set_title("l = max(lambda, 1 - lambda): the own image always dominates")
    right.set_xlabel("mixing weight l")
    right.legend()
    fig.suptitle(f"MixUp weights for eta = {eta:g}")
    fig.tight_layout()
    return fig
