"""3D boxes ``(z1, y1, x1, z2, y2, x2)``: IoU, the anchor box coder and NMS."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def box_volume(boxes: Tensor) -> Tensor:
    """Volume ``(z2 - z1)(y2 - y1)(x2 - x1)`` of boxes ``(..., 6)`` -> ``(...)``."""
    sides = (boxes[..., 3:] - boxes[..., :3]).clamp_min(0)
    return sides.prod(dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of every pair: ``(N, 6)`` x ``(M, 6)`` -> ``(N, M)``.

    IoU = |a ∩ b| / (|a| + |b| - |a ∩ b|), with the intersection a box whose sides
    are ``min(a2, b2) - max(a1, b1)`` clamped at 0. Empty unions give 0.
    """
    inter = torch.ones(a.shape[0], b.shape[0], dtype=a.dtype, device=a.device)
    for axis in range(3):  # one (N, M) side at a time: faster than an (N, M, 3) broadcast
        high = torch.minimum(a[:, axis + 3, None], b[None, :, axis + 3])
        inter.mul_((high - torch.maximum(a[:, axis, None], b[None, :, axis])).clamp_(min=0))
    union = box_volume(a)[:, None] + box_volume(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def box_centres_sides(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Centres ``(..., 3)`` and sides ``(..., 3)`` (z, y, x) of boxes ``(..., 6)``."""
    return (boxes[..., :3] + boxes[..., 3:]) / 2, boxes[..., 3:] - boxes[..., :3]


class BoxCoder:
    """Boxes <-> regression deltas relative to anchors.

    For an anchor with centre ``c_a`` and sides ``s_a`` and a box with ``c``, ``s``
    (all per axis z, y, x), the six deltas are

        t_c = w_c * (c - c_a) / s_a,     t_s = w_s * log(s / s_a),

    ordered ``(t_z, t_y, t_x, t_d, t_h, t_w)``. Decoding clamps ``t_s / w_s`` at
    ``log(1000 / 16)`` before the exponential so that a wild prediction cannot overflow.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
                 log_size_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 6:
            raise ValueError(f"BoxCoder takes six weights, got {len(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.log_size_clip = log_size_clip

    def encode(self, anchors: Tensor, boxes: Tensor) -> Tensor:
        """Deltas ``(N, 6)`` that turn ``anchors (N, 6)`` into ``boxes (N, 6)``."""
        weights = torch.tensor(self.weights, dtype=boxes.dtype, device=boxes.device)
        anchor_centres, anchor_sides = box_centres_sides(anchors)
        centres, sides = box_centres_sides(boxes)
        deltas = torch.cat([(centres - anchor_centres) / anchor_sides, torch.log(sides / anchor_sides)], dim=-1)
        return deltas * weights

    def decode(self, anchors: Tensor, deltas: Tensor) -> Tensor:
        """Boxes ``(N, 6)`` from ``anchors (N, 6)`` and ``deltas (N, 6)`` (inverse of :meth:`encode`)."""
        weights = torch.tensor(self.weights, dtype=deltas.dtype, device=deltas.device)
        deltas = deltas / weights
        anchor_centres, anchor_sides = box_centres_sides(anchors.to(deltas.dtype))
        centres = anchor_centres + deltas[..., :3] * anchor_sides
        sides = anchor_sides * torch.exp(deltas[..., 3:].clamp(max=self.log_size_clip))
        return torch.cat([centres - sides / 2, centres + sides / 2], dim=-1)


def nms_3d(boxes: Tensor, scores: Tensor, iou_threshold: float, max_kept: int | None = None) -> Tensor:
    """Greedy non-maximum suppression of 3D boxes.

    Visits boxes by decreasing score (ties: lower index first); keeps a box unless a
    box kept before it overlaps it with IoU above ``iou_threshold``; stops after
    ``max_kept`` boxes (None: no limit). Shapes: ``boxes (K, 6)``, ``scores (K,)`` ->
    kept indices ``(K',)`` long, by decreasing score.

    Each kept box suppresses the remaining boxes in one vectorised IoU row, so the
    cost is O(K' K): whole-scan inference, which keeps about 100 of tens of
    thousands of window candidates, never builds the K x K IoU matrix.
    """
    count = boxes.shape[0]
    order = torch.argsort(scores, descending=True, stable=True)
    ranked = boxes[order]
    alive = torch.ones(count, dtype=torch.bool, device=boxes.device)
    limit = count if max_kept is None else min(count, max_kept)
    kept: list[int] = []
    rank = 0
    while len(kept) < limit:
        kept.append(rank)
        rest = ranked[rank + 1:]
        alive[rank + 1:] &= box_iou(ranked[rank:rank + 1], rest)[0] <= iou_threshold
        following = torch.nonzero(alive[rank + 1:])
        if following.numel() == 0:
            break
        rank += 1 + int(following[0])
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]
