"""A tiny detector overfits one patch with a bright ball; whole-volume inference finds it, and the batched,
lung-restricted inference gives the detections of a plain one-window-at-a-time reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world
from focalmix_lib.detection.anchors import flatten_levels
from focalmix_lib.detection.boxes import box_centres_sides, box_iou, nms_3d
from focalmix_lib.detection.matching import build_targets
from focalmix_lib.detection.model import DetectorConfig, FPNDetector
from focalmix_lib.inference.run_detection import grown_lung_mask, inside_lungs
from focalmix_lib.inference.sliding_window import (
    centres_in_region,
    detect_volume,
    detections_to_world,
    window_origins,
    window_starts,
)
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


def test_window_starts_cover_the_side_evenly_without_padding():
    assert window_starts(20, 32, 0.5) == [0]
    assert window_starts(64, 32, 0.0) == [0, 32]
    assert window_starts(65, 32, 0.25) == [0, 16, 33]  # 3 windows of step <= 24, spread over 0..33
    for side in range(33, 200, 7):
        for overlap in (0.0, 0.125, 0.25, 0.5):
            starts = window_starts(side, 32, overlap)
            assert starts[0] == 0 and starts[-1] + 32 == side
            assert max(np.diff(starts)) <= round(32 * (1 - overlap))
            assert len(starts) == int(np.ceil((side - 32) / round(32 * (1 - overlap)))) + 1
    with pytest.raises(ValueError):
        window_starts(64, 32, 1.0)


def test_window_origins_cover_the_region_and_only_touch_it():
    region = np.zeros((70, 90, 40), dtype=bool)
    region[10:30, 5:60, 3:9] = True
    region[50:52, 80:82, 30:33] = True
    origins = window_origins(region.shape, 16, 0.25, region)
    covered = np.zeros_like(region)
    for z, y, x in origins:
        assert region[z:z + 16, y:y + 16, x:x + 16].any()
        covered[z:z + 16, y:y + 16, x:x + 16] = True
    assert covered[region].all()
    assert (origins >= 0).all() and (origins + 16 <= np.array(region.shape)).all()
    assert len(origins) < len(window_origins(region.shape, 16, 0.25))
    assert window_origins(region.shape, 16, 0.25, np.zeros_like(region)).shape == (0, 3)


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


def _reference_detect(model, volume, patch_size, origins, score_threshold, nms_iou, max_detections, region=None):
    """The plain path: one window per forward pass, per-window threshold, top-k and decoding, then the
    padding / region filter and NMS over the volume."""
    anchors = model.anchors((patch_size,) * 3)
    padded = np.zeros([max(s, patch_size) for s in volume.shape], dtype=np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
    all_boxes, all_scores = [], []
    model.eval()
    with torch.no_grad():
        for z, y, x in origins:
            output = model(torch.from_numpy(padded[z:z + patch_size, y:y + patch_size, x:x + patch_size])[None, None])
            scores = torch.sigmoid(flatten_levels(output.cls_logits))[0]
            deltas = flatten_levels(output.box_deltas)[0]
            candidates = torch.nonzero(scores > score_threshold).squeeze(1)
            if candidates.numel() > max_detections:
                candidates = candidates[scores[candidates].topk(max_detections).indices]
            boxes = model.box_coder.decode(anchors[candidates], deltas[candidates])
            all_boxes.append(boxes + torch.tensor([z, y, x], dtype=boxes.dtype).repeat(2))
            all_scores.append(scores[candidates])
    model.train()
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    centres, _ = box_centres_sides(boxes)
    inside = ((centres >= -0.5) & (centres < torch.tensor(volume.shape) - 0.5)).all(dim=1)
    if region is not None:
        inside &= torch.from_numpy(centres_in_region(boxes.numpy(), region))
    boxes, scores = boxes[inside], scores[inside]
    keep = nms_3d(boxes, scores, nms_iou, max_kept=max_detections)
    return boxes[keep].numpy(), scores[keep].numpy()


def _two_ball_volume() -> np.ndarray:
    """The ball patch twice, side by side in x, with a noisy background: (32, 32, 80)."""
    rng = np.random.default_rng(3)
    volume = rng.normal(0.0, 0.05, (40, 36, 80)).astype(np.float32)
    volume[:32, :32, :32] += _ball_patch()
    volume[4:36, 4:36, 44:76] += _ball_patch()
    return volume


@pytest.mark.parametrize("with_region", [False, True])
def test_batched_inference_equals_one_window_at_a_time(overfit_model, with_region):
    # Batches of 3 windows decoded together must give the reference's detections (to float rounding of
    # convolutions over a different batch size); a low threshold makes hundreds of candidates
    # before NMS.
    volume = _two_ball_volume()
    region = None
    if with_region:
        region = np.zeros(volume.shape, dtype=bool)
        region[2:38, 2:38, 40:80] = True  # the second ball only
    origins = window_origins(volume.shape, 32, 0.25, region)
    expected_boxes, expected_scores = _reference_detect(overfit_model, volume, 32, origins, 0.01, 0.1, 20, region)
    boxes, scores = detect_volume(overfit_model, volume, 32, overlap=0.25, score_threshold=0.01, nms_iou=0.1,
                                  max_detections=20, batch_size=3, region=region)
    assert len(expected_scores) >= 2
    assert boxes.shape == expected_boxes.shape
    assert np.allclose(scores, expected_scores, atol=1e-5)
    assert np.allclose(boxes, expected_boxes, atol=1e-3)
    if with_region:
        assert centres_in_region(boxes, region).all()


def test_region_filter_comes_before_the_cap(overfit_model):
    # With room for one mark and a region around the second ball, the mark is the second ball; filtering
    # after the cap (the old order) would drop the first ball's mark and leave none whenever it scored higher.
    volume = _two_ball_volume()
    region = np.zeros(volume.shape, dtype=bool)
    region[2:38, 2:38, 44:76] = True
    boxes, scores = detect_volume(overfit_model, volume, 32, overlap=0.25, max_detections=1, region=region)
    assert len(scores) == 1 and scores[0] > 0.5
    second_ball = _ball_box() + torch.tensor([4.0, 4, 44, 4, 4, 44])
    assert box_iou(torch.from_numpy(boxes), second_ball).item() > 0.3
    everywhere_boxes, everywhere_scores = detect_volume(overfit_model, volume, 32, overlap=0.25, max_detections=1)
    after_cap = inside_lungs(everywhere_boxes, everywhere_scores, region, margin_voxels=0)[1]
    assert len(after_cap) <= 1  # the old order: at most the one mark, and none if the first ball won


def test_grown_lung_mask_is_the_city_block_neighbourhood():
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[4, 4, 4] = True
    grown = grown_lung_mask(mask, 2.0)
    distance = np.abs(np.indices(mask.shape) - 4).sum(axis=0)
    assert np.array_equal(grown, distance <= 2)
    assert grown_lung_mask(mask, 0.4) is mask
