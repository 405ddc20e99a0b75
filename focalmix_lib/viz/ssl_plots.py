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

from focalmix_lib.ssl.mixup import mixup_lambda
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


def _show_map(ax: plt.Axes, image: NDArray, side: int, title: str, vmax: float = 1.0):
    """An anchor-map image over the patch's extent (cells line up with the voxels they cover)."""
    shown = ax.imshow(image, cmap="magma", vmin=0.0, vmax=vmax, extent=(-0.5, side - 0.5, side - 0.5, -0.5),
                      interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (voxels)")
    ax.set_ylabel("y (voxels)")
    return shown


def _show_patch_slice(ax: plt.Axes, patch: NDArray, z: int, title: str) -> None:
    side = patch.shape[-1]
    ax.imshow(to_hu(patch[z]), cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1],
              extent=(-0.5, side - 0.5, side - 0.5, -0.5))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (voxels)")
    ax.set_ylabel("y (voxels)")


def plot_target_prediction(patch: NDArray, z: int, transforms: Sequence[SpatialTransform], view_maps: torch.Tensor,
                           back_maps: torch.Tensor, temperature: float) -> Figure:
    """Paper Figure 1b for one patch (P, P, P) and one FPN level.

    Columns: the K views. Rows: the view's axial slice through the object, the anchor
    probabilities predicted on that view, the same map mapped back with g_k^-1. Last
    column: the original patch, the K-average p_bar and Sharpen(p_bar, T).
    """
    k, side = len(transforms), patch.shape[-1]
    average = back_maps.mean(dim=0)
    vmax = max(float(back_maps.max()), float(sharpen(average, temperature).max()), 1e-6)
    fig, axes = plt.subplots(3, k + 1, figsize=(3.0 * (k + 1), 8.6))
    for column, transform in enumerate(transforms):
        view = transform.apply(torch.as_tensor(patch)).numpy()
        view_z = side - 1 - z if transform.flip_z else z
        _show_patch_slice(axes[0, column], view, view_z, f"view {column + 1}: {describe(transform)}")
        _show_map(axes[1, column], projection(view_maps[column]), side, "predicted on the view", vmax)
        _show_map(axes[2, column], projection(back_maps[column]), side, "mapped back with g^-1", vmax)
    _show_patch_slice(axes[0, k], patch, z, "original patch")
    _show_map(axes[1, k], projection(average), side, f"average of the K = {k} maps", vmax)
    shown = _show_map(axes[2, k], projection(sharpen(average, temperature)), side, f"sharpened, T = {temperature:g}",
                     vmax)
    fig.colorbar(shown, ax=axes[1:, :].ravel().tolist(), label="anchor probability (max over sizes and depth)",
                 shrink=0.6)
    fig.suptitle("Anchor-level target prediction: predict on K transformed views, map back, average, sharpen")
    return fig


def plot_sharpening(average: torch.Tensor, side: int, temperature: float) -> Figure:
    """Sharpen(p, T) = sigmoid(logit(p) / T) as curves, and applied to a level map p_bar (A, D_l, H_l, W_l)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0))
    p = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)
    for t in sorted({1.0, 0.5, 0.25, temperature}, reverse=True):
        axes[0].plot(p, sharpen(p, t), lw=2.5 if t == temperature else 1.0, label=f"T = {t:g}")
    axes[0].set_xlabel("averaged probability p_bar")
    axes[0].set_ylabel("sharpened target q")
    axes[0].set_title("Sharpen(p, T) = p^(1/T) / (p^(1/T) + (1 - p)^(1/T))", fontsize=9)
    axes[0].legend()
    _show_map(axes[1], projection(average), side, "p_bar (before sharpening)")
    shown = _show_map(axes[2], projection(sharpen(average, temperature)), side, f"q = Sharpen(p_bar, T = {temperature:g})")
    fig.colorbar(shown, ax=axes[1:].tolist(), label="anchor probability", shrink=0.8)
    return fig


def sharpen_explorer(average: torch.Tensor, side: int, temperature: float = 0.5):
    """An ipywidgets slider for T that redraws :func:`plot_sharpening` (:func:`focalmix_lib.viz.widgets.explorer`)."""
    import ipywidgets as widgets

    def draw(temperature: float) -> None:
        plt.show(plot_sharpening(average, side, temperature))

    return explorer(draw, temperature=widgets.FloatLogSlider(value=temperature, base=10, min=-1.3, max=0.5,
                                                                        step=0.05, description="T"))


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
    fig.colorbar(shown, ax=right, label="anchor target q")
    fig.suptitle("Label guessing: class level (MixMatch) vs anchor level (FocalMix)")
    fig.tight_layout()
    return fig


def _box_patch(box: NDArray, color: str) -> Rectangle:
    return Rectangle((box[2], box[1]), box[5] - box[2], box[4] - box[1], fill=False, color=color, lw=1.5)


def plot_image_mixup(images: NDArray, target_maps: Sequence[torch.Tensor], mixed_images: NDArray,
                     mixed_maps: Sequence[torch.Tensor], sample: int, partner: int, z: int, lam: float) -> Figure:
    """Paper Figure 4 (image level): x, its partner x', the mix, and their anchor targets.

    ``images`` / ``mixed_images`` (B, 1, P, P, P); ``target_maps`` / ``mixed_maps`` per
    level (B, A, D_l, H_l, W_l) (``unflatten_levels`` of the (B, N) targets). Row 2 shows
    the finest level's targets as a maximum projection (ignored anchors count as 0).
    """
    side = images.shape[-1]
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.4))
    columns = [(images[sample, 0], target_maps, sample, "x"), (images[partner, 0], target_maps, partner, "x'"),
               (mixed_images[sample, 0], mixed_maps, sample, f"l x + (1 - l) x', l = {lam:.2f}")]
    for column, (image, maps, row, name) in enumerate(columns):
        _show_patch_slice(axes[0, column], image, z, name)
        targets = projection_all_levels([level[row] for level in maps], side)
        shown = _show_map(axes[1, column], targets, side, f"anchor targets of {name.split(',')[0]}")
    fig.colorbar(shown, ax=axes[1].tolist(), label="anchor target y (max over levels, sizes, depth)", shrink=0.8)
    fig.suptitle("Image-level MixUp: images and per-anchor targets mixed with the same l = max(lambda, 1 - lambda)")
    return fig


def plot_object_mixup(images: NDArray, mixed: NDArray, boxes: Sequence[NDArray], sample: int, lam: float) -> Figure:
    """Paper Figure 4 (object level): a patch before and after, with the difference, through its first object."""
    box = np.asarray(boxes[sample])[0]
    z = int(round((box[0] + box[3]) / 2))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    _show_patch_slice(axes[0], images[sample, 0], z, "before: the object (red box)")
    _show_patch_slice(axes[1], mixed[sample, 0], z, f"after: l object + (1 - l) partner object, l = {lam:.2f}")
    difference = to_hu(mixed[sample, 0, z]) - to_hu(images[sample, 0, z])
    limit = max(float(np.abs(difference).max()), 1.0)
    side = images.shape[-1]
    shown = axes[2].imshow(difference, cmap="coolwarm", vmin=-limit, vmax=limit, extent=(-0.5, side - 0.5, side - 0.5, -0.5))
    axes[2].set_title("after - before (only inside object boxes)")
    axes[2].set_xlabel("x (voxels)")
    axes[2].set_ylabel("y (voxels)")
    fig.colorbar(shown, ax=axes[2], label="change (HU)")
    for ax in axes:
        for other in np.asarray(boxes[sample]).reshape(-1, 6):
            ax.add_patch(_box_patch(other, "red"))
    fig.suptitle("Object-level MixUp: each object mixed with another object of the batch, resized to its box")
    fig.tight_layout()
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
