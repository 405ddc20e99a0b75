"""Figures of the focal and soft-target focal losses (notebook 02).

Every curve is computed by :mod:`focalmix_lib.losses` itself (from logits
``z = logit(p)``), so the figures show the kit's loss, not a re-derivation of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from focalmix_lib import atomic
from focalmix_lib.losses import focal_loss, soft_focal_loss
from focalmix_lib.viz.widgets import explorer

# The four rows of the paper's Table 3a: (name, soft_alpha, soft_beta).
SFL_VARIANTS: tuple[tuple[str, bool, bool], ...] = (
    ("SFL (soft alpha, soft beta)", True, True),
    ("without soft alpha", False, True),
    ("without soft beta", True, False),
    ("without both", False, False),
)
P_GRID = np.linspace(0.001, 0.999, 400)
# Losses below this are drawn at it on log axes (the soft loss is exactly 0 at p = y).
LOG_FLOOR = 1e-6
# Height of the SFL surface's box relative to its (p, y) square.
SURFACE_Z_ASPECT = 0.6


def sfl_values(y: float | np.ndarray, p: np.ndarray, alpha0: float, alpha1: float, gamma: float,
               soft_alpha: bool = True, soft_beta: bool = True) -> np.ndarray:
    """``soft_focal_loss`` at probabilities ``p`` (float64; ``y`` broadcast against ``p``)."""
    p_t = torch.as_tensor(np.asarray(p, dtype=np.float64))
    y_t = torch.as_tensor(np.broadcast_to(np.asarray(y, dtype=np.float64), p_t.shape).copy())
    return soft_focal_loss(torch.logit(p_t), y_t, alpha0, alpha1, gamma, soft_alpha, soft_beta).numpy()


def plot_focal_curves(gammas: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 5.0)) -> Figure:
    """RetinaNet's Figure 1: FL(p_t) = -(1 - p_t)^gamma log p_t against p_t (alpha = 1); gamma = 0 is CE."""
    p = torch.as_tensor(P_GRID, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for gamma in gammas:
        loss = focal_loss(torch.logit(p), torch.ones_like(p), 1.0, 1.0, gamma).numpy()
        ax.plot(P_GRID, loss, label=f"gamma = {gamma:g}" + (" (cross-entropy)" if gamma == 0 else ""))
    ax.axvspan(0.6, 1.0, color="grey", alpha=0.12, label="well-classified examples")
    ax.set_xlabel("probability of the ground-truth class p_t")
    ax.set_ylabel("loss (nats)")
    ax.set_ylim(0, 5)
    ax.set_title("Focal loss down-weights easy examples: FL = -(1 - p_t)^gamma log p_t")
    ax.legend()
    fig.tight_layout()
    return fig


def sfl_surface(alpha0: float = 0.25, alpha1: float = 0.75, gamma: float = 2.0, samples: int = 60):
    """Plotly surface of SFL(y, p) (eq. 9) over soft targets y in [0, 1] and predictions p in (0, 1).

    The z axis is drawn at :data:`SURFACE_Z_ASPECT` of the (p, y) square's side: the loss
    reaches ~4 nats at the corners, and an equal aspect would stretch the box upwards
    until the axis titles fall outside the view. The red line is the zero valley p = y.
    """
    import plotly.graph_objects as go

    y = np.linspace(0.0, 1.0, samples)
    p = np.linspace(0.005, 0.995, samples)
    yy, pp = np.meshgrid(y, p, indexing="ij")
    loss = sfl_values(yy, pp, alpha0, alpha1, gamma)
    fig = go.Figure([
        go.Surface(x=p, y=y, z=loss, colorscale="Viridis", colorbar={"title": {"text": "SFL (nats)"}, "len": 0.75}),
        go.Scatter3d(x=p, y=p, z=np.zeros_like(p), mode="lines", line={"color": "red", "width": 6},
                     name="p = y: SFL = 0"),
    ])
    fig.update_layout(
        title={"text": f"Soft-target focal loss (eq. 9), alpha0 = {alpha0:g}, alpha1 = {alpha1:g}, "
                       f"gamma = {gamma:g}<br>zero along the red line p = y; drag to rotate"},
        scene={"xaxis_title": "prediction p", "yaxis_title": "soft target y", "zaxis_title": "SFL (nats)",
               "aspectmode": "manual", "aspectratio": {"x": 1.0, "y": 1.0, "z": SURFACE_Z_ASPECT},
               "camera": {"eye": {"x": 1.9, "y": -0.9, "z": 0.8}}},
        legend={"x": 0.0, "y": 0.0}, width=760, height=600, margin={"l": 10, "r": 10, "b": 10, "t": 70},
    )
    return fig


def write_plotly_html(fig, path: str | Path) -> None:
    """Write a plotly figure as one self-contained page (plotly.js inlined): it opens offline."""
    with atomic.atomic_path(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True)


def plot_alpha_beta_terms(alpha0: float = 0.25, alpha1: float = 0.75, gamma: float = 2.0,
                          y: float = 0.3) -> Figure:
    """The weight alpha(y) and the modulating factor beta(y, p), soft vs hardened (Table 3a's switches)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3))
    ys = np.linspace(0.0, 1.0, 201)
    left.plot(ys, alpha0 + ys * (alpha1 - alpha0), label="soft: alpha0 + y (alpha1 - alpha0)")
    left.plot(ys, np.where(ys >= 0.5, alpha1, alpha0), ls="--", label="hardened: alpha of round(y)")
    left.set_xlabel("soft target y")
    left.set_ylabel("class weight alpha (unitless)")
    left.set_title("alpha term")
    left.legend()
    hard = 1.0 if y >= 0.5 else 0.0
    right.plot(P_GRID, np.abs(y - P_GRID) ** gamma, label=f"soft: |y - p|^gamma, y = {y:g}")
    right.plot(P_GRID, np.abs(hard - P_GRID) ** gamma, ls="--", label=f"hardened: |{hard:g} - p|^gamma")
    right.axvline(y, color="grey", lw=0.8)
    right.set_xlabel("prediction p")
    right.set_ylabel("modulating factor beta (unitless)")
    right.set_title(f"beta term (gamma = {gamma:g}): the soft factor vanishes at p = y")
    right.legend()
    fig.suptitle("The two factors that the soft-target focal loss makes soft")
    fig.tight_layout()
    return fig


def plot_sfl_variants(alpha0: float = 0.25, alpha1: float = 0.75, gamma: float = 2.0,
                      targets: Sequence[float] = (0.0, 0.3, 0.7, 1.0)) -> Figure:
    """The four Table 3a variants side by side: loss against p for several soft targets y.

    Only the soft variant has its minimum at p = y for every y; the hardened beta puts a
    zero of the factor at p = round(y) instead, pulling predictions away from the soft target.
    """
    fig, axes = plt.subplots(1, len(SFL_VARIANTS), figsize=(4.2 * len(SFL_VARIANTS), 4.0), sharey=True)
    for ax, (name, soft_alpha, soft_beta) in zip(axes, SFL_VARIANTS):
        for y in targets:
            loss = sfl_values(y, P_GRID, alpha0, alpha1, gamma, soft_alpha, soft_beta)
            ax.plot(P_GRID, np.maximum(loss, LOG_FLOOR), label=f"y = {y:g}")
        ax.set_title(name)
        ax.set_xlabel("prediction p")
        ax.set_yscale("log")
        ax.set_ylim(LOG_FLOOR, 5)
    axes[0].set_ylabel("loss (nats, log scale)")
    axes[0].legend()
    fig.suptitle(f"Table 3a variants (alpha0 = {alpha0:g}, alpha1 = {alpha1:g}, gamma = {gamma:g})")
    fig.tight_layout()
    return fig


def plot_sfl_at(alpha0: float, alpha1: float, gamma: float, y: float) -> Figure:
    """All four variants at one soft target ``y``, against p (the state of the explorer's sliders).

    The y axis is logarithmic so that the valley of each curve shows: the soft variants
    fall to 0 at p = y, which a linear axis flattens into the floor. Each curve's
    minimum on the grid is marked with a dot.
    """
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    for name, soft_alpha, soft_beta in SFL_VARIANTS:
        loss = sfl_values(y, P_GRID, alpha0, alpha1, gamma, soft_alpha, soft_beta)
        line, = ax.plot(P_GRID, np.maximum(loss, LOG_FLOOR), label=name)
        lowest = int(np.argmin(loss))
        ax.plot(P_GRID[lowest], max(loss[lowest], LOG_FLOOR), "o", color=line.get_color(), ms=5)
    ax.axvline(y, color="grey", lw=0.8, label="p = y")
    ax.set_yscale("log")
    ax.set_ylim(LOG_FLOOR, 10)
    ax.set_xlabel("prediction p")
    ax.set_ylabel("loss (nats, log scale)")
    ax.set_title(f"y = {y:.2f}, alpha0 = {alpha0:.2f}, alpha1 = {alpha1:.2f}, gamma = {gamma:.2f}\n"
                 "dots: each variant's minimum")
    ax.legend(fontsize=8, loc="upper left")  # the minima sit at the bottom
    fig.tight_layout()
    return fig


def sfl_explorer(alpha0: float = 0.25, alpha1: float = 0.75, gamma: float = 2.0, y: float = 0.3):
    """ipywidgets sliders for alpha0, alpha1, gamma and y that redraw :func:`plot_sfl_at`.

    Returns the widget (:func:`focalmix_lib.viz.widgets.explorer`: live in Jupyter,
    the default state drawn once under papermill).
    """
    import ipywidgets as widgets

    def draw(alpha0: float, alpha1: float, gamma: float, y: float) -> None:
        plt.show(plot_sfl_at(alpha0, alpha1, gamma, y))

    return explorer(
        draw,
        alpha0=widgets.FloatSlider(value=alpha0, min=0.0, max=1.0, step=0.05, description="alpha0"),
        alpha1=widgets.FloatSlider(value=alpha1, min=0.0, max=1.0, step=0.05, description="alpha1"),
        gamma=widgets.FloatSlider(value=gamma, min=0.0, max=5.0, step=0.25, description="gamma"),
        y=widgets.FloatSlider(value=y, min=0.0, max=1.0, step=0.05, description="target y"),
    )
