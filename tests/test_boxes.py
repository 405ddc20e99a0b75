"""3D IoU against voxel counting, box coder round trip, NMS against a plain greedy loop."""

from __future__ import annotations

import numpy as np
import torch

from focalmix_lib.detection.boxes import BoxCoder, box_iou, nms_3d


def _random_boxes(count: int, generator: torch.Generator, extent: float = 10.0) -> torch.Tensor:
    """Boxes with corners on a half-voxel grid inside [0, extent]^3 (some of zero width)."""
    corners = torch.randint(0, int(2 * extent) + 1, (count, 2, 3), generator=generator).float() / 2
    return torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)


def _occupancy(box: torch.Tensor, extent: float = 10.0) -> np.ndarray:
    """Which cells of a half-voxel grid over [0, extent]^3 the box covers (cell centres inside)."""
    centres = np.arange(0.25, extent, 0.5)
    masks = [(centres > box[a].item()) & (centres < box[a + 3].item()) for a in range(3)]
    return masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]


def test_box_iou_matches_cell_counting():
    generator = torch.Generator().manual_seed(0)
    a, b = _random_boxes(25, generator), _random_boxes(30, generator)
    iou = box_iou(a, b)
    assert iou.shape == (25, 30)
    occ_a, occ_b = [_occupancy(box) for box in a], [_occupancy(box) for box in b]
    for i, cells_a in enumerate(occ_a):
        for j, cells_b in enumerate(occ_b):
            union = np.count_nonzero(cells_a | cells_b)
            expected = np.count_nonzero(cells_a & cells_b) / union if union else 0.0
            assert abs(iou[i, j].item() - expected) < 1e-6


def test_box_iou_identities():
    box = torch.tensor([[1.0, 2.0, 3.0, 4.0, 6.0, 9.0]])
    assert box_iou(box, box).item() == 1.0
    assert box_iou(box, box + 20).item() == 0.0
    half = torch.tensor([[1.0, 2.0, 3.0, 4.0, 6.0, 6.0]])
    assert abs(box_iou(box, half).item() - 0.5) < 1e-7


def test_box_coder_round_trip_and_encoding():
    generator = torch.Generator().manual_seed(1)
    centres = torch.rand(200, 3, generator=generator, dtype=torch.float64) * 60
    anchor_sides = torch.rand(200, 1, generator=generator, dtype=torch.float64) * 20 + 2
    sides = torch.rand(200, 3, generator=generator, dtype=torch.float64) * 25 + 1
    anchors = torch.cat([centres - anchor_sides / 2, centres + anchor_sides / 2], dim=1)
    shifted = centres + torch.randn(200, 3, generator=generator, dtype=torch.float64) * 3
    boxes = torch.cat([shifted - sides / 2, shifted + sides / 2], dim=1)
    for weights in [(1.0,) * 6, (10.0, 10.0, 10.0, 5.0, 5.0, 5.0)]:
        coder = BoxCoder(weights)
        deltas = coder.encode(anchors, boxes)
        assert torch.allclose(coder.decode(anchors, deltas), boxes, atol=1e-9)
        expected_dz = weights[0] * (shifted[:, 0] - centres[:, 0]) / anchor_sides[:, 0]
        assert torch.allclose(deltas[:, 0], expected_dz)
        assert torch.allclose(deltas[:, 5], weights[5] * torch.log(sides[:, 2] / anchor_sides[:, 0]))
    wild = BoxCoder().decode(anchors[:3].float(), torch.full((3, 6), 1e4))
    assert torch.isfinite(wild).all()


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Textbook greedy NMS: keep the best box unless it overlaps a kept box too much."""
    iou = box_iou(boxes, boxes).tolist()
    order = sorted(range(len(scores)), key=lambda i: -scores[i].item())
    keep: list[int] = []
    for i in order:
        if all(iou[i][k] <= threshold for k in keep):
            keep.append(i)
    return keep


def test_nms_matches_greedy_reference():
    generator = torch.Generator().manual_seed(2)
    centres = torch.rand(8, 3, generator=generator) * 30  # clusters of overlapping boxes
    centres = centres.repeat_interleave(25, dim=0) + torch.randn(200, 3, generator=generator)
    sides = torch.rand(200, 1, generator=generator) * 6 + 2
    boxes = torch.cat([centres - sides / 2, centres + sides / 2], dim=1)
    scores = torch.rand(200, generator=generator)
    for threshold in (0.0, 0.1, 0.3, 0.7):
        assert nms_3d(boxes, scores, threshold).tolist() == _greedy_nms(boxes, scores, threshold)
    assert nms_3d(torch.zeros(0, 6), torch.zeros(0), 0.5).numel() == 0


def test_nms_on_thousands_of_boxes_with_a_cap():
    generator = torch.Generator().manual_seed(3)
    centres = torch.rand(2000, 3, generator=generator) * 120
    boxes = torch.cat([centres - 3, centres + 3], dim=1)
    scores = torch.rand(2000, generator=generator)
    keep = nms_3d(boxes, scores, 0.1)
    assert torch.equal(keep[:50], nms_3d(boxes, scores, 0.1, max_kept=50))
    kept_iou = box_iou(boxes[keep], boxes[keep]).fill_diagonal_(0)
    assert torch.all(kept_iou <= 0.1)
    # Every dropped box overlaps a kept box of higher score.
    dropped = torch.ones(2000, dtype=torch.bool)
    dropped[keep] = False
    blockers = (box_iou(boxes[dropped], boxes[keep]) > 0.1) & (scores[keep][None, :] > scores[dropped][:, None])
    assert blockers.any(dim=1).all()
