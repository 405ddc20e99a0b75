"""FROC figures of an evaluation: a PNG (matplotlib) and an interactive HTML page (plotly).

Both show sensitivity against the average number of false positives per scan on a
log2 axis from 1/8 to 8, the seven CPM operating points, and the bootstrap 95 % band
when the evaluation was bootstrapped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from focalmix_lib import atomic
from focalmix_lib.evaluation.results import FrocResult

X_LABEL = "Average number of false positives per scan (FP/scan)"
Y_LABEL = "Sensitivity (fraction of included nodules detected)"
X_RANGE = (0.125, 8.0)


def froc_title(result: FrocResult) -> str:
    """'FROC: CPM 0.812 [0.790, 0.833]; 1186 nodules in 888 scans' (interval when bootstrapped)."""
    interval = ""
    if result.bootstrap is not None and result.bootstrap.n_valid:
        interval = f" [{result.bootstrap.cpm.low:.3f}, {result.bootstrap.cpm.high:.3f}]"
    return f"FROC: CPM {result.cpm:.3f}{interval}; {result.n_nodules} nodules in {result.n_scans} scans"


def write_froc_png(result: FrocResult, path: str | Path) -> None:
    """The FROC curve as interpolated by the evaluation (numpy.interp), on a log2 x axis."""
    # A bare Figure draws with Agg without touching pyplot's global backend (a notebook's
    # inline backend must survive an evaluation).
    from matplotlib.figure import Figure

    points = np.asarray([float(key) for key in result.sensitivity_at])
    grid = 2.0 ** np.linspace(-3.0, 3.0, 481)
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    boot = result.bootstrap
    if boot is not None and boot.n_valid:
        ax.fill_between(boot.band_fps_per_scan, boot.band_low, boot.band_high, color="C0", alpha=0.2,
                        label=f"bootstrap 95 % band ({boot.n_valid} resamples)")
        ax.plot(boot.band_fps_per_scan, boot.band_mean, color="C0", ls="--", lw=1, label="bootstrap mean")
    ax.plot(grid, np.interp(grid, result.fps_per_scan, result.sensitivity), color="C0", lw=2, label="FROC")
    ax.plot(points, list(result.sensitivity_at.values()), "o", color="C1", label="CPM operating points")
    ax.set_xscale("log", base=2)
    ax.set_xlim(*X_RANGE)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(points, [f"{p:g}" for p in points])
    ax.set_yticks(np.linspace(0.0, 1.0, 11))
    ax.grid(True, which="both", alpha=0.4)
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.set_title(froc_title(result))
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150)


def write_froc_html(result: FrocResult, path: str | Path) -> None:
    """The FROC vertices in plotly (self-contained page); hovering a vertex shows its threshold."""
    import plotly.graph_objects as go

    x, y, thresholds = result.fps_per_scan, result.sensitivity, result.thresholds
    # The vertices that draw the curve over [1/8, 8] (one beyond each end).
    lo = max(int(np.searchsorted(x, X_RANGE[0], side="right")) - 1, 0)
    hi = min(int(np.searchsorted(x, X_RANGE[1], side="left")) + 1, len(x))
    fig = go.Figure()
    boot = result.bootstrap
    if boot is not None and boot.n_valid:
        fig.add_trace(go.Scatter(x=boot.band_fps_per_scan, y=boot.band_high, mode="lines", line={"width": 0},
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=boot.band_fps_per_scan, y=boot.band_low, mode="lines", line={"width": 0},
                                 fill="tonexty", fillcolor="rgba(31,119,180,0.2)", hoverinfo="skip",
                                 name=f"bootstrap 95 % band ({boot.n_valid} resamples)"))
    fig.add_trace(go.Scatter(
        x=x[lo:hi], y=y[lo:hi], customdata=thresholds[lo:hi], mode="lines+markers", marker={"size": 3},
        name="FROC", hovertemplate="FP/scan %{x:.4f}<br>sensitivity %{y:.4f}<br>threshold %{customdata:.6g}"
                                   "<extra></extra>",
    ))
    fig.add_trace(go.Scatter(
        x=[float(key) for key in result.sensitivity_at], y=list(result.sensitivity_at.values()), mode="markers",
        marker={"size": 9}, name="CPM operating points", hovertemplate="FP/scan %{x}<br>sensitivity %{y:.4f}"
                                                                       "<extra></extra>",
    ))
    fig.update_layout(
        title=froc_title(result), xaxis_title=X_LABEL, yaxis_title=Y_LABEL, template="plotly_white",
        xaxis={"type": "log", "range": [np.log10(X_RANGE[0]), np.log10(X_RANGE[1])],
               "tickvals": [0.125, 0.25, 0.5, 1, 2, 4, 8], "ticktext": ["1/8", "1/4", "1/2", "1", "2", "4", "8"]},
        yaxis={"range": [0.0, 1.0]}, legend={"x": 0.99, "y": 0.01, "xanchor": "right", "yanchor": "bottom"},
    )
    with atomic.atomic_path(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, full_html=True)
