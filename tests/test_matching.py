"""Batched matching: the targets of a whole batch from one call equal, bit for bit, the
per-patch matching rules (a plain reference written here) and ``build_targets`` of each
patch alone; the model's cached anchors give the same targets as fresh ones."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from torch import Tensor

from focalmix_lib.config import from_preset
from focalmix_lib.detection.anchors import generate_anchors
from focalmix_lib.detection.boxes import BoxCoder, box_iou
from focalmix_lib.detection.matching import (
    IGNORED,
    NEGATIVE,
    AnchorTargets,
    build_batch_targets,
    build_targets,
    match_anchors,
    match_anchors_batch,
)
from focalmix_lib.detection.model import DetectorConfig, FPNDetector

PATCHES = {"quick": 32, "standard": 64}


def reference_targets(anchors: Tensor, gt: Tensor, coder: BoxCoder, positive_iou: float,
                      negative_iou: float) -> AnchorTargets:
    """The matching rules of one patch, step by step (the kit's per-patch code before batching)."""
    matched = torch.full((anchors.shape[0],), NEGATIVE, dtype=torch.long)
    gt = gt.to(anchors.dtype)
    if gt.numel():
        iou = box_iou(anchors, gt)
        best_iou, best_gt = iou.max(dim=1)
        matched[best_iou >= negative_iou] = IGNORED
        matched[best_iou >= positive_iou] = best_gt[best_iou >= positive_iou]
        per_gt_best = iou.max(dim=0).values
        is_best = (iou == per_gt_best[None, :]) & (per_gt_best[None, :] > 0)
        forced = is_best.any(dim=1)
        matched[forced] = torch.where(is_best, iou, torch.full_like(iou, -1.0)).argmax(dim=1)[forced]
    positive = matched >= 0
    box_target = torch.zeros_like(anchors)
    if positive.any():
        box_target[positive] = coder.encode(anchors[positive], gt[matched[positive]])
    return AnchorTargets(matched, positive.to(anchors.dtype), matched != IGNORED, box_target, positive)


def random_batch(side: int, generator: torch.Generator) -> list[Tensor]:
    """Eight patches' boxes: none, tiny ones (every anchor below the positive IoU), duplicates
    (ties between annotations), boxes between two cells (ties between anchors), boxes crossing
    the patch border, float64 boxes and a crowd of eight."""
    def cubes(count: int, low: float, high: float) -> Tensor:
        centres = torch.rand(count, 3, generator=generator, dtype=torch.float64) * (side + 4) - 2
        sides = torch.rand(count, 1, generator=generator, dtype=torch.float64) * (high - low) + low
        return torch.cat([centres - sides / 2, centres + sides / 2], dim=1).float()

    # x centre 7.5: halfway between two cells of strides 2, 4 and 8, so anchors tie in pairs.
    between = torch.tensor([[8.0, 8.0, 5.5, 12.0, 12.0, 9.5]])
    one = cubes(1, 3.0, 12.0)
    return [
        torch.zeros((0, 6)),
        cubes(2, 0.3, 1.0),
        torch.cat([one, one]),
        between,
        cubes(3, 1.0, 20.0),
        cubes(2, 2.0, 8.0).double(),
        torch.zeros((0, 6)),
        cubes(8, 1.0, 14.0),
    ]


def assert_targets_equal(got: AnchorTargets, expected: AnchorTargets) -> None:
    for field in fields(AnchorTargets):
        a, b = getattr(got, field.name), getattr(expected, field.name)
        assert a.dtype == b.dtype and a.shape == b.shape, field.name
        assert torch.equal(a, b), field.name


@pytest.mark.parametrize("preset", sorted(PATCHES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_targets_equal_the_per_patch_rules(preset, seed):
    config = from_preset(DetectorConfig, preset)
    anchors = generate_anchors((PATCHES[preset],) * 3, config.strides, config.anchor_sizes)
    coder = BoxCoder()
    boxes = random_batch(PATCHES[preset], torch.Generator().manual_seed(seed))
    batch = build_batch_targets(anchors, boxes, coder, config.positive_iou, config.negative_iou)
    assert batch.matched_gt.shape == (len(boxes), anchors.shape[0])
    assert batch.box_target.shape == (len(boxes), anchors.shape[0], 6)
    forced_below_threshold = 0
    for index, gt in enumerate(boxes):
        expected = reference_targets(anchors, gt, coder, config.positive_iou, config.negative_iou)
        row = AnchorTargets(**{f.name: getattr(batch, f.name)[index] for f in fields(AnchorTargets)})
        assert_targets_equal(row, expected)
        assert_targets_equal(build_targets(anchors, gt, coder, config.positive_iou, config.negative_iou), expected)
        assert torch.equal(match_anchors(anchors, gt, config.positive_iou, config.negative_iou), expected.matched_gt)
        if gt.numel():
            best = box_iou(anchors, gt.float()).max(dim=1).values
            forced_below_threshold += int((expected.positive & (best < config.positive_iou)).sum())
    assert forced_below_threshold > 0  # the batch does exercise the forced best anchors
    assert not batch.positive[0].any() and batch.valid[0].all()  # a patch without boxes: all negative
    assert (batch.matched_gt[2][batch.positive[2]] == 0).all()  # duplicate annotations: the first one wins
    assert batch.positive[3].sum() >= 2  # both anchors tied for the box between two cells


def test_batch_without_any_box_and_threshold_check():
    anchors = generate_anchors((16,) * 3, (4, 8), ((3.0,), (6.0,)))
    matched = match_anchors_batch(anchors, [torch.zeros((0, 6)), torch.zeros(0)], 0.3, 0.1)
    assert matched.dtype == torch.long and matched.shape == (2, anchors.shape[0])
    assert (matched == NEGATIVE).all()
    targets = build_batch_targets(anchors, [torch.zeros((0, 6))], BoxCoder(), 0.3, 0.1)
    assert targets.box_target.shape == (1, anchors.shape[0], 6) and not targets.box_target.any()
    with pytest.raises(ValueError, match="exceeds"):
        match_anchors_batch(anchors, [torch.zeros((0, 6))], 0.1, 0.3)


def test_cached_anchors_give_the_targets_of_fresh_anchors():
    config = from_preset(DetectorConfig, "quick")
    model = FPNDetector(config)
    boxes = random_batch(32, torch.Generator().manual_seed(5))
    for shape in [(32, 32, 32), (16, 32, 48), (32, 32, 32)]:
        cached = model.anchors(shape)
        fresh = generate_anchors(shape, config.strides, config.anchor_sizes)
        assert cached.dtype == fresh.dtype and torch.equal(cached, fresh)
        assert model.anchors(shape) is cached
        assert_targets_equal(
            build_batch_targets(cached, boxes, model.box_coder, model.positive_iou, model.negative_iou),
            build_batch_targets(fresh, boxes, model.box_coder, model.positive_iou, model.negative_iou))
