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

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from focalmix_lib.detection.boxes import BoxCoder, box_iou

NEGATIVE = -1
IGNORED = -2


def padded_boxes(gt_boxes: Sequence[Tensor], like: Tensor) -> tuple[Tensor, Tensor]:
    """The ``B`` patches' boxes ``(M_b, 6)`` as one zero-padded ``(B, M, 6)`` tensor, ``M = max M_b``,
    with the dtype and device of ``like``, and the ``(B, M)`` bool mask of the real boxes."""
    boxes = [b.to(like).reshape(-1, 6) for b in gt_boxes]
    counts = torch.tensor([len(b) for b in boxes], device=like.device)
    padded = pad_sequence(boxes, batch_first=True)
    return padded, torch.arange(padded.shape[1], device=like.device)[None, :] < counts[:, None]


def _match_padded(anchors: Tensor, padded: Tensor, real: Tensor, positive_iou: float, negative_iou: float) -> Tensor:
    """:func:`match_anchors_batch` on :func:`padded_boxes` output: ``(B, N)`` long.

    One IoU tensor ``(B, M, N)`` for the whole batch (anchors innermost, so the reductions
    over annotations run across whole rows of anchors); padding holds ``-inf``, so it is
    never an anchor's best box and never passes a threshold. Every reduction sees the
    values of one patch's ``(M_b, N)`` IoU in the same order (padding last), so ties
    break as on one patch alone: the lowest annotation index wins.
    """
    if negative_iou > positive_iou:
        raise ValueError(f"negative_iou {negative_iou} exceeds positive_iou {positive_iou}")
    batch, count = real.shape
    if count == 0:
        return torch.full((batch, anchors.shape[0]), NEGATIVE, dtype=torch.long, device=anchors.device)
    # IoU of the real boxes only; it is symmetric bit for bit (min, max and + commute).
    iou = anchors.new_full((batch, count, anchors.shape[0]), -torch.inf)
    iou[real] = box_iou(padded[real], anchors)
    best_iou, best_gt = iou.max(dim=1)  # (B, N)
    labels = torch.tensor([NEGATIVE, IGNORED], device=anchors.device)
    matched = torch.where(best_iou >= positive_iou, best_gt, labels[(best_iou >= negative_iou).long()])
    per_gt_best = iou.max(dim=2, keepdim=True).values  # (B, M, 1)
    is_best = (iou == per_gt_best) & (per_gt_best > 0)  # (B, M, N)
    # The claiming annotation it overlaps most (max's index, not argmax: argmax over a
    # non-innermost axis is many times slower on the CPU; both return the first maximum).
    claimed = torch.where(is_best, iou, -1.0).max(dim=1).indices
    return torch.where(is_best.any(dim=1), claimed, matched)


def match_anchors_batch(anchors: Tensor, gt_boxes: Sequence[Tensor], positive_iou: float,
                        negative_iou: float) -> Tensor:
    """Annotation index of every anchor in every patch: ``anchors (N, 6)``, ``B`` boxes ``(M_b, 6)`` -> ``(B, N)`` long.

    Values: ``-1`` negative, ``-2`` ignored, ``m >= 0`` positive for annotation ``m`` of its patch.
    Row ``b`` equals :func:`match_anchors` of patch ``b`` alone (bit for bit).
    """
    return _match_padded(anchors, *padded_boxes(gt_boxes, anchors), positive_iou, negative_iou)


def match_anchors(anchors: Tensor, gt_boxes: Tensor, positive_iou: float, negative_iou: float) -> Tensor:
    """Annotation index of every anchor: ``anchors (N, 6)``, ``gt_boxes (M, 6)`` -> ``(N,)`` long.

    Values: ``-1`` negative, ``-2`` ignored, ``m >= 0`` positive for annotation ``m``.
    """
    return match_anchors_batch(anchors, [gt_boxes], positive_iou, negative_iou)[0]


@dataclass(frozen=True)
class AnchorTargets:
    """Training targets of ``N`` anchors, of one patch or (with a leading ``B``) of a batch.

    ``matched_gt (N,)`` long as :func:`match_anchors`; ``cls_target (N,)`` float in
    {0, 1}; ``valid (N,)`` bool, False for ignored anchors; ``box_target (N, 6)``
    deltas (zeros where not positive); ``positive (N,)`` bool.
    """

    matched_gt: Tensor
    cls_target: Tensor
    valid: Tensor
    box_target: Tensor
    positive: Tensor


def build_batch_targets(anchors: Tensor, gt_boxes: Sequence[Tensor], coder: BoxCoder, positive_iou: float,
                        negative_iou: float) -> AnchorTargets:
    """Match ``anchors (N, 6)`` to every patch's ``gt_boxes`` ``(M_b, 6)`` at once and encode the positives.

    Returns :class:`AnchorTargets` with a leading batch axis: ``(B, N)`` and ``(B, N, 6)``.
    Patch ``b``'s targets equal :func:`build_targets` of that patch alone, bit for bit: matching
    is as :func:`match_anchors_batch`, and the box coder works element by element.
    """
    padded, real = padded_boxes(gt_boxes, anchors)
    matched = _match_padded(anchors, padded, real, positive_iou, negative_iou)
    positive = matched >= 0
    box_target = anchors.new_zeros(*matched.shape, 6)
    patch, anchor = positive.nonzero(as_tuple=True)  # row-major: patch by patch, as a per-patch mask selects
    if patch.numel():
        box_target[patch, anchor] = coder.encode(anchors[anchor], padded[patch, matched[patch, anchor]])
    return AnchorTargets(
        matched_gt=matched,
        cls_target=positive.to(anchors.dtype),
        valid=matched != IGNORED,
        box_target=box_target,
        positive=positive,
    )


def build_targets(
    anchors: Tensor, gt_boxes: Tensor, coder: BoxCoder, positive_iou: float, negative_iou: float
) -> AnchorTargets:
    """Match ``anchors (N, 6)`` to ``gt_boxes (M, 6)`` and encode the positives' boxes (one patch)."""
    batch = build_batch_targets(anchors, [gt_boxes], coder, positive_iou, negative_iou)
    return AnchorTargets(**{field.name: getattr(batch, field.name)[0] for field in fields(AnchorTargets)})
