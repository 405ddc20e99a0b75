"""A tiny detector overfits one patch with a bright ball; whole-volume inference finds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world
from focalmix_lib.detection.anchors import flatten_levels
from focalmix_lib.detection.boxes import box_iou
from focalmix_lib.inference.sliding_window import detect_volume, detections_to_world, window_starts
from focalmix_lib.detection.matching import build_targets
from focalmix_lib.detection.model import DetectorConfig, FPNDetector
from focalmix_lib.losses import box_regression_loss, soft_focal_loss

BALL_CENTRE = (13.0, 18.0, 11.0)
BALL_RADIUS = 4.0


def _ball_patch(side: int = 32) -> np.ndarray:
    """A bright ball with a soft edge on a zero background (no phantom generator needed)."""
    grid = np.stack(np.meshgrid(*(np.arange(side),) * 3, indexing="ij")).astype(np.float32)
    distance = np.sqrt(((grid - np.array(BALL_CENTRE, dtype=np.float32)[:, None, None, None]) ** 2).sum(axis=0))
    return np.clip(BALL_RADIUS + 0.5 - distance, 0, 1).astype(np.float32)


def _ball_box() -> torch.Tensor:
    centre = torch.tensor(BALL_CENTRE)
    return torch.cat([centre - BALL_RADIUS, centre + BALL_RADIUS])[None]


def _overfit_ball_patch(seed: int, steps: int = 80) -> FPNDetector:
    """Train a tiny quick-preset detector on the ball patch alone (focal + box loss, Adam)."""
    torch.manual_seed(seed)
    config = from_preset(DetectorConfig, "quick", stem_channels=4, stage_channels=(8, 8, 8), fpn_channels=8,
                         norm_groups=2)
    model = FPNDetector(config)
    patch = torch.from_numpy(_ball_patch())[None, None]
    anchors = model.anchors((32, 32, 32))
    targets = build_targets(anchors, _ball_box(), model.box_coder, config.positive_iou, config.negative_iou)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        output = model(patch)
        logits, deltas = flatten_levels(output.cls_logits)[0], flatten_levels(output.box_deltas)[0]
        positives = targets.positive.sum()
        cls_loss = soft_focal_loss(logits[targets.valid], targets.cls_target[targets.valid], 0.25, 0.75, 2.0,
                                   reduction="sum") / positives
        box_loss = box_regression_loss(deltas[targets.positive], targets.box_target[targets.positive],
                                       reduction="sum") / positives
        optimizer.zero_grad()
        (cls_loss + box_loss).backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def overfit_model():
    # One thread: the tiny convolutions gain nothing from two, and a busy shared CPU stalls them.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _overfit_ball_patch(seed=0)
    torch.set_num_threads(threads)


def test_window_starts_cover_the_side():
    assert window_starts(20, 32, 0.5) == [0]
    assert window_starts(64, 32, 0.0) == [0, 32]
    assert window_starts(65, 32, 0.25) == [0, 24, 48]
    with pytest.raises(ValueError):
        window_starts(64, 32, 1.0)


def test_overfit_patch_then_detect_the_ball_in_a_padded_shifted_volume(overfit_model):
    # The ball's patch, cropped to 30 x 32 x 28, sits at x >= 32 of a 30 x 32 x 60 volume: inference
    # pads with zeros back to whole windows and must shift the second window's boxes by 32 in x.
    volume = np.zeros((30, 32, 60), dtype=np.float32)
    volume[:, :, 32:] = _ball_patch()[:30, :, :28]
    boxes, scores = detect_volume(overfit_model, volume, patch_size=32, overlap=0.0, score_threshold=0.05,
                                  nms_iou=0.1, max_detections=10, batch_size=2, device="cpu")
    assert boxes.shape[1] == 6 and boxes.shape[0] == scores.shape[0] >= 1
    assert np.all(np.diff(scores) <= 0)
    expected = _ball_box() + torch.tensor([0.0, 0, 32, 0, 0, 32])
    assert box_iou(torch.from_numpy(boxes[:1]), expected).item() > 0.3
    assert scores[0] > 0.5
    assert overfit_model.training  # detect_volume restores the mode it found


def test_detections_to_world():
    geometry = ScanGeometry((40, 50, 60), (-100.0, 20.0, -300.0), (2.0, 2.0, 2.0))
    boxes = np.array([[10.0, 20.0, 30.0, 14.0, 24.0, 34.0], [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]])
    world, diameters, probabilities = detections_to_world(boxes, np.array([0.9, 0.2]), geometry)
    assert np.allclose(world, voxel_to_world(np.array([[12.0, 22.0, 32.0], [1.0, 1.0, 1.0]]), geometry))
    assert np.allclose(diameters, [8.0, 4.0])
    assert np.allclose(probabilities, [0.9, 0.2])
