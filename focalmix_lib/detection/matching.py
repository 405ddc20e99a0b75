"""Anchor matching and per-anchor training targets.

Rules (RetinaNet's, with thresholds suited to small 3D cubes; defaults in
:class:`~focalmix_lib.detection.model.DetectorConfig`):

- an anchor whose best IoU with any annotation is ``>= positive_iou`` is positive
  for that annotation;
- below ``negative_iou`` it is negative; in between it is ignored;
- each annotation's best anchor is always positive (all anchors sharing that best
  IoU, when it is above 0), so that a nodule smaller than every anchor, or between
  grid cells, is still learned. An anchor claimed by several annotations this way
  takes the one it overlaps most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from focalmix_lib.detection.boxes import BoxCoder, box_iou

NEGATIVE = -1
IGNORED = -2


def match_anchors(anchors: Tensor, gt_boxes: Tensor, positive_iou: float, negative_iou: float) -> Tensor:
    """Annotation index of every anchor: ``anchors (N, 6)``, ``gt_boxes (M, 6)`` -> ``(N,)`` long.

    Values: ``-1`` negative, ``-2`` ignored, ``m >= 0`` positive for annotation ``m``.
    """
    if negative_iou > positive_iou:
        raise ValueError(f"negative_iou {negative_iou} exceeds positive_iou {positive_iou}")
    matched = torch.full((anchors.shape[0],), NEGATIVE, dtype=torch.long, device=anchors.device)
    if gt_boxes.numel() == 0:
        return matched
    iou = box_iou(anchors, gt_boxes.to(anchors.dtype))  # (N, M)
    best_iou, best_gt = iou.max(dim=1)
    matched[best_iou >= negative_iou] = IGNORED
    positive = best_iou >= positive_iou
    matched[positive] = best_gt[positive]
    per_gt_best = iou.max(dim=0).values  # (M,)
    is_best = (iou == per_gt_best[None, :]) & (per_gt_best[None, :] > 0)  # (N, M)
    forced = is_best.any(dim=1)
    matched[forced] = torch.where(is_best, iou, torch.full_like(iou, -1.0)).argmax(dim=1)[forced]
    return matched


@dataclass(frozen=True)
class AnchorTargets:
    """Training targets of one patch's ``N`` anchors.

    ``matched_gt (N,)`` long as :func:`match_anchors`; ``cls_target (N,)`` float in
    {0, 1}; ``valid (N,)`` bool, False for ignored anchors; ``box_target (N, 6)``
    deltas (zeros where not positive); ``positive (N,)`` bool.
    """

    matched_gt: Tensor
    cls_target: Tensor
    valid: Tensor
    box_target: Tensor
    positive: Tensor


def build_targets(
    anchors: Tensor, gt_boxes: Tensor, coder: BoxCoder, positive_iou: float, negative_iou: float
) -> AnchorTargets:
    """Match ``anchors (N, 6)`` to ``gt_boxes (M, 6)`` and encode the positives' boxes."""
    matched = match_anchors(anchors, gt_boxes, positive_iou, negative_iou)
    positive = matched >= 0
    box_target = torch.zeros_like(anchors)
    if positive.any():
        box_target[positive] = coder.encode(anchors[positive], gt_boxes.to(anchors.dtype)[matched[positive]])
    return AnchorTargets(
        matched_gt=matched,
        cls_target=positive.to(anchors.dtype),
        valid=matched != IGNORED,
        box_target=box_target,
        positive=positive,
    )
