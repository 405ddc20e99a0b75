"""The teaching figures: titled, labelled axes, and drawn from the kit's own functions."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from focalmix_lib.data.coordinates import ScanGeometry  # noqa: E402
from focalmix_lib.data.dataset import PreprocessedScan  # noqa: E402
from focalmix_lib.detection.anchors import generate_anchors  # noqa: E402
from focalmix_lib.detection.matching import match_anchors  # noqa: E402
from focalmix_lib.losses import soft_focal_loss  # noqa: E402
from focalmix_lib.ssl.target_prediction import averaged_view_probabilities  # noqa: E402
from focalmix_lib.ssl.transforms import GROUP  # noqa: E402
from focalmix_lib.viz import loss_plots, run_plots, scan_plots, ssl_plots  # noqa: E402


def assert_labelled(fig):
    """Every axes with content has a title (or the figure a suptitle) and both axis labels."""
    drawn = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and (ax.lines or ax.images or ax.patches
                                                                          or ax.collections)]
    assert drawn
    for ax in drawn:
        assert ax.get_title() or fig._suptitle is not None
        # Panels with a shared axis (twins, sharey) label it once.
        assert any(sibling.get_xlabel() for sibling in ax.get_shared_x_axes().get_siblings(ax))
        assert any(sibling.get_ylabel() for sibling in ax.get_shared_y_axes().get_siblings(ax))
    plt.close(fig)


@pytest.fixture
def ball_scan() -> PreprocessedScan:
    volume = np.full((24, 32, 32), 0.1, np.float32)
    zz, yy, xx = np.mgrid[:24, :32, :32]
    volume[(zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 14) ** 2 <= 9] = 0.7
    geometry = ScanGeometry((24, 32, 32), (0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    return PreprocessedScan("1.2.3", volume, geometry, np.asarray([[9, 13, 11, 15, 19, 17]], np.float32),
                            np.asarray([12.0], np.float32), volume > 0.05)


def test_detections_are_drawn_on_the_slices_they_span(ball_scan):
    boxes = np.asarray([[10, 13, 11, 14, 19, 17], [0, 0, 0, 4, 4, 4]], np.float32)  # on the nodule; far from slice 12
    fig = scan_plots.plot_nodule_slices(ball_scan, detections=(boxes, np.asarray([0.93, 0.4], np.float32)))
    squares = [p for p in fig.axes[0].patches if not hasattr(p, "radius")]
    assert len(squares) == 1 and squares[0].get_xy() == (11 * 2.0, 13 * 2.0)  # mm, x then y
    assert squares[0].get_width() == squares[0].get_height() == 12.0
    assert [text.get_text() for text in fig.axes[0].texts] == ["p = 0.93"]
    assert "2 best marks" in fig._suptitle.get_text()


def test_hu_round_trip():
    hu = np.asarray([-1200.0, -600.0, 0.0, 600.0])
    from focalmix_lib.data.scans import normalize_hu
    np.testing.assert_allclose(scan_plots.to_hu(normalize_hu(hu)), hu, atol=1e-3)


def test_scan_figures(ball_scan):
    assert scan_plots.nodule_slices(ball_scan, 3) == [12]
    fig = scan_plots.plot_nodule_slices(ball_scan)
    circles = [p for p in fig.axes[0].patches]
    assert len(circles) == 1 and circles[0].radius == pytest.approx(6.0 + 1.5)  # centred slice: d / 2 (+ margin)
    assert_labelled(fig)
    fig = scan_plots.plot_hu_windows(scan_plots.to_hu(ball_scan.volume[12]), (2.0, 2.0))
    assert [ax.images[0].get_clim() for ax in fig.axes if ax.images][:2] == [scan_plots.LUNG_WINDOW,
                                                                            scan_plots.MEDIASTINAL_WINDOW]
    assert_labelled(fig)


def test_anchor_figure_counts_every_label(ball_scan):
    anchors = generate_anchors((24, 32, 32)[:1] * 3, (4, 8), ((2.0, 5.0), (8.0, 12.0)))
    box = torch.as_tensor(ball_scan.boxes)
    matched = match_anchors(anchors, box, 0.3, 0.1)
    sizes = [2 * 6 ** 3, 2 * 3 ** 3]
    fig = scan_plots.plot_anchor_labels(np.pad(ball_scan.volume, ((0, 0), (0, 0), (0, 0)))[:24, :24, :24], anchors.numpy(),
                                        matched.numpy(), ball_scan.boxes[0], sizes, (4, 8), 2.0)
    legend = " ".join(t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
    total = sum(int(word) for word in legend.split() if word.isdigit())
    assert total == len(anchors)
    assert_labelled(fig)


def test_loss_figures_draw_the_kits_loss():
    fig = loss_plots.plot_focal_curves((0.0, 2.0))
    ce = fig.axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(ce, -np.log(loss_plots.P_GRID), rtol=1e-9)  # gamma = 0 is cross-entropy
    assert_labelled(fig)
    y, p = 0.3, np.asarray([0.1, 0.3, 0.9])
    expected = soft_focal_loss(torch.logit(torch.tensor(p)), torch.full((3,), y, dtype=torch.float64), 0.25, 0.75, 2.0)
    np.testing.assert_allclose(loss_plots.sfl_values(y, p, 0.25, 0.75, 2.0), expected.numpy())
    for fig in (loss_plots.plot_alpha_beta_terms(), loss_plots.plot_sfl_variants(), loss_plots.plot_sfl_at(0.2, 0.8, 2, 0.4)):
        assert_labelled(fig)
    surface = loss_plots.sfl_surface(samples=11)
    assert surface.layout.title.text and surface.layout.scene.xaxis.title.text == "prediction p"
    assert np.nanmin(np.asarray(surface.data[0].z)) >= 0


def test_sfl_surface_keeps_its_axis_titles_in_view_and_opens_offline(tmp_path):
    surface = loss_plots.sfl_surface(samples=11)
    scene = surface.layout.scene
    assert scene.aspectmode == "manual" and scene.aspectratio.z == loss_plots.SURFACE_Z_ASPECT < 1
    assert [scene.xaxis.title.text, scene.yaxis.title.text, scene.zaxis.title.text] == [
        "prediction p", "soft target y", "SFL (nats)"]
    valley = surface.data[1]  # the zero line p = y
    assert list(valley.x) == list(valley.y) and not any(valley.z)
    loss_plots.write_plotly_html(surface, tmp_path / "sfl_surface.html")
    page = (tmp_path / "sfl_surface.html").read_text(encoding="utf-8")
    assert not [src for src in re.findall(r'<script[^>]*src="([^"]*)"', page)]  # plotly.js inside, no CDN
    assert "Plotly.newPlot" in page and len(page) > 1_000_000


def test_explorer_figure_shows_each_minimum_on_a_log_axis():
    fig = loss_plots.plot_sfl_at(0.25, 0.75, 2.0, 0.4)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    step = loss_plots.P_GRID[1] - loss_plots.P_GRID[0]
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == len(loss_plots.SFL_VARIANTS)
    soft, _, hard_beta, _ = (float(dot.get_xdata()[0]) for dot in dots)
    assert abs(soft - 0.4) <= step and hard_beta == loss_plots.P_GRID[0]  # the hardened beta pulls p to 0
    assert_labelled(fig)


def test_resampling_figure_marks_the_same_world_point_in_both_grids(ball_scan):
    from focalmix_lib.data.coordinates import voxel_to_world, world_to_voxel
    from focalmix_lib.data.scans import Scan

    stored = ScanGeometry((12, 32, 32), (0.0, 0.0, 0.0), (2.0, 2.0, 4.0))
    scan = Scan(np.full((12, 32, 32), -800, np.int16), stored, None)
    point = voxel_to_world([12.0, 16.0, 14.0], ball_scan.geometry)
    fig = scan_plots.plot_resampling(scan, ball_scan, point)
    for ax, geometry in zip(fig.axes, (stored, ball_scan.geometry)):
        z, _, x = world_to_voxel(point, geometry)
        cross = ax.lines[0]
        assert (cross.get_xdata()[0], cross.get_ydata()[0]) == pytest.approx((x, z))
    assert fig.axes[0].images[0].get_array().shape == (12, 32)  # one pixel per stored voxel
    assert_labelled(fig)


def test_explorers_build_with_their_sliders():
    explorer = loss_plots.sfl_explorer()
    assert [child.description for child in explorer.children[:4]] == ["alpha0", "alpha1", "gamma", "target y"]
    sharpen_box = ssl_plots.sharpen_explorer(torch.rand(2, 4, 4, 4), 16)
    slider = sharpen_box.children[0]
    assert slider.description == "T" and type(slider).__name__ == "FloatSlider"  # linear: 0.5 reads 0.50
    assert slider.step == 0.05 and slider.value == 0.5


def test_target_prediction_figures_average_like_the_library():
    torch.manual_seed(0)
    weights = torch.randn(2, 1, 1, 1, 1)
    predict = lambda views: [torch.nn.functional.avg_pool3d(views, 4) * weights.view(1, 2, 1, 1, 1)]  # noqa: E731
    patch = torch.rand(1, 1, 16, 16, 16)
    transforms = [GROUP[0], GROUP[5], GROUP[10]]
    views, back = ssl_plots.per_view_maps(predict, patch, transforms)
    assert views.shape == back.shape == (3, 2, 4, 4, 4)
    torch.testing.assert_close(back.mean(0), averaged_view_probabilities(predict, patch, transforms)[0][0])
    box = np.asarray([2.0, 1.0, 3.0, 6.0, 5.0, 9.0], np.float32)
    fig = ssl_plots.plot_target_prediction(patch[0, 0].numpy(), 8, transforms, views, back, 0.5, box=box)
    # The annotation in every panel, moved with g_k in the views' own frames (rows 1-2), as is in row 3.
    for column, transform in enumerate(transforms):
        moved = transform.apply_to_boxes(torch.as_tensor(box[None]), (16, 16, 16))[0].numpy()
        for row, expected in ((0, moved), (1, moved), (2, box)):
            rectangle = fig.axes[row * 4 + column].patches[0]
            assert rectangle.get_xy() == pytest.approx((expected[2], expected[1]))
            assert rectangle.get_width() == pytest.approx(expected[5] - expected[2])
    assert len(fig.legends) == 1
    for fig in (fig, ssl_plots.plot_sharpening(back.mean(0), 16, 0.5), ssl_plots.plot_label_guessing(back, 16, 0.5)):
        assert_labelled(fig)


def test_peak_and_nodule_cells():
    level_map = torch.zeros(2, 4, 4, 4)
    level_map[1, 3, 0, 2] = 0.9
    assert ssl_plots.peak_cell(level_map) == (3, 0, 2)
    # Stride 4: cell j has its centre at 4 j + 1.5; a box centred on (13.5, 1.5, 9.5) is in cell (3, 0, 2).
    assert ssl_plots.box_centre_cell(np.asarray([12.0, 0.0, 8.0, 15.0, 3.0, 11.0]), 4) == (3, 0, 2)
    sizes = ((3.0, 4.5), (6.5, 10.0), (14.0, 20.0))
    assert [ssl_plots.nodule_level(side, sizes) for side in (3.4, 5.4, 8.0, 11.0, 30.0)] == [0, 0, 1, 1, 2]


def test_projection_over_levels_lines_up_with_voxels():
    fine, coarse = torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 2, 2)
    fine[0, 1, 0, 3], coarse[0, 0, 1, 0] = 0.5, 0.9
    image = ssl_plots.projection_all_levels([fine, coarse], 8)
    assert image.shape == (8, 8) and image[0:2, 6:8].min() == 0.5 and image[4:8, 0:4].min() == pytest.approx(0.9)
    assert image.sum() == pytest.approx(4 * 0.5 + 16 * 0.9)


def test_mixup_figures():
    images = np.random.default_rng(0).random((2, 1, 16, 16, 16)).astype(np.float32)
    maps = [torch.zeros(2, 1, 4, 4, 4)]
    assert_labelled(ssl_plots.plot_image_mixup(images, maps, images, maps, 0, 1, 8, 0.7))
    # x^ - x = (1 - l)(x' - x): the mean change in HU is (1 - l) * 1800 * mean |x' - x| (HU span of [0, 1]).
    mixed = 0.7 * images[0] + 0.3 * images[1]
    expected = 0.3 * 1800.0 * np.abs(images[1] - images[0]).mean()
    assert ssl_plots.mean_change_hu(images[0], mixed) == pytest.approx(expected, rel=1e-4)
    boxes = [np.asarray([[4, 4, 4, 9, 9, 9]], np.float32), np.zeros((0, 6), np.float32)]
    assert_labelled(ssl_plots.plot_object_mixup(images, images * 0.5, boxes, 0, 0.7))
    fig = ssl_plots.plot_beta_draws(0.75, draws=500)
    right = fig.axes[1]
    assert min(patch.get_x() for patch in right.patches if patch.get_height() > 0) >= 0.5  # l >= 0.5
    assert_labelled(fig)


def test_image_mixup_explorer_mixes_with_the_slider_value(monkeypatch):
    from focalmix_lib.viz.widgets import STATIC_WIDGETS_ENV

    monkeypatch.setenv(STATIC_WIDGETS_ENV, "1")
    drawn = []
    monkeypatch.setattr(ssl_plots, "plot_image_mixup", lambda *args: drawn.append(args) or plt.figure())
    monkeypatch.setattr(ssl_plots.plt, "show", lambda *_: None)
    images, targets = torch.rand(2, 1, 8, 8, 8), torch.tensor([[1.0] * 64, [0.0] * 64])
    box = ssl_plots.image_mixup_explorer(images, targets, [(1, 4, 4, 4)], torch.tensor([1, 0]), 0, 4, 0.65)
    slider = box.children[0]
    assert (slider.description, slider.value, slider.min, slider.max) == ("l", 0.65, 0.5, 1.0)
    _, _, mixed, mixed_maps, sample, partner, z, lam = drawn[0]
    torch.testing.assert_close(torch.as_tensor(mixed), 0.65 * images + 0.35 * images[[1, 0]])
    assert mixed_maps[0][0].unique().tolist() == pytest.approx([0.65]) and (sample, partner, z, lam) == (0, 1, 4, 0.65)


def test_loss_curves_and_live_plot():
    records = [{"step": s, "loss": 2.0 / s, "loss_labeled": 1.0 / s, "loss_unlabeled": 0.0, "loss_box": 1.0 / s,
                "unlabeled_weight": 0.0, "lr": 1e-3} for s in range(1, 6)]
    fig = run_plots.plot_loss_curves(records)
    assert len(fig.axes[0].lines) == 3  # no unlabeled curve for a supervised run
    assert_labelled(fig)
    live = run_plots.LiveLossPlot(enabled=False)
    for record in records:
        live(record)
    live.finish()
    assert live.records == records



def test_schedule_figure_draws_the_run_schedules_by_their_formulas():
    from dataclasses import replace

    from focalmix_lib.config import from_preset
    from focalmix_lib.training.config import TrainConfig

    cfg = from_preset(TrainConfig, "quick", method="focalmix", steps=60, warmup_steps=10, rampup_steps=30)
    fig = run_plots.plot_schedules(cfg)
    weight, rate = fig.axes[0].lines[0], fig.axes[1].lines[0]
    np.testing.assert_array_equal(weight.get_xdata(), np.arange(61))
    np.testing.assert_allclose(weight.get_ydata(), np.minimum(1.0, np.arange(61) / 30))  # w(t) = min(1, t / 30)
    # lr(t) = lr f(t): f(9) = 10 / 10 ends the warm-up, f(35) = (1 + cos(pi / 2)) / 2 halfway down, f(60) = 0.
    assert rate.get_ydata()[[9, 35]] == pytest.approx([cfg.lr, cfg.lr / 2])
    assert rate.get_ydata()[60] == pytest.approx(0.0, abs=1e-12)
    assert "not used" not in fig.axes[0].get_title()
    assert_labelled(fig)
    supervised = run_plots.plot_schedules(replace(cfg, method="supervised"))
    assert "not used" in supervised.axes[0].get_title()
    plt.close(supervised)

def test_nodule_outcomes_join_kinds(tmp_path):
    from focalmix_lib.evaluation.luna16 import evaluate_froc
    from focalmix_lib.data.luna_csv import read_annotations, read_predictions

    uid = "1.2.3"
    (tmp_path / "annotations.csv").write_text(
        f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{uid},1.0,2.0,3.0,8.0\n{uid},40.0,2.0,3.0,4.0\n")
    (tmp_path / "nodule_kinds.csv").write_text(
        f"seriesuid,coordX,coordY,coordZ,diameter_mm,kind,location\n{uid},40.0000,2.0000,3.0000,4.0,ground-glass,"
        f"isolated\n{uid},1.0000,2.0000,3.0000,8.0,solid,juxta-pleural\n")
    (tmp_path / "pred.csv").write_text(f"seriesuid,coordX,coordY,coordZ,probability\n{uid},1.5,2.0,3.0,0.9\n")
    annotations = read_annotations(tmp_path / "annotations.csv")
    empty = read_annotations(tmp_path / "annotations.csv", excluded=True).for_series("none")
    result = evaluate_froc(annotations, empty, [uid], read_predictions(tmp_path / "pred.csv"))
    table = run_plots.nodule_outcomes(result, tmp_path)
    assert table[["kind", "detected"]].values.tolist() == [["solid", True], ["ground-glass", False]]
    assert_labelled(run_plots.plot_nodule_hits(table))
    assert "kind" not in run_plots.nodule_outcomes(result, None)



def test_nodule_hits_keep_the_order_of_the_diameter_bins():
    import pandas as pd

    outcomes = pd.DataFrame({"diameter_mm": [10.8, 7.3, 4.0, 12.0], "detected": [False, True, False, True]})
    fig = run_plots.plot_nodule_hits(outcomes)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["[3.0, 6.0)", "[6.0, 10.0)", "[10.0, 20.0)"]
    detected, missed = ax.containers
    assert [bar.get_height() for bar in detected] == [0, 1, 1] and [bar.get_height() for bar in missed] == [1, 0, 1]
    assert_labelled(fig)

def test_explorer_draws_once_without_interact_under_batch_execution(monkeypatch):
    import ipywidgets as widgets

    from focalmix_lib.viz.widgets import STATIC_WIDGETS_ENV, explorer

    calls = []
    monkeypatch.setenv(STATIC_WIDGETS_ENV, "1")
    box = explorer(lambda a, b: calls.append((a, b)), a=widgets.FloatSlider(value=0.25), b=widgets.IntSlider(value=3))
    assert calls == [(0.25, 3)]
    assert isinstance(box, widgets.VBox) and not isinstance(box, widgets.interactive)
    assert [child.value for child in box.children] == [0.25, 3]
