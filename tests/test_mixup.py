"""Image-level MixUp (paper eq. 10-13) and object-level MixUp (sec. 3.3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from focalmix_lib.ssl.mixup import (
    box_region,
    image_mixup,
    mixup_lambda,
    mixup_valid_mask,
    object_mixup,
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mixup_lambda_is_the_larger_side_of_a_beta_draw():
    eta = 0.75
    generator = _generator(0)
    draws = [mixup_lambda(eta, generator) for _ in range(2000)]
    assert all(0.5 <= lam <= 1.0 for lam in draws)
    # P(max(lambda, 1 - lambda) <= q) = 2 F(q) - 1 for q >= 0.5, F the Beta(eta, eta) CDF
    result = stats.kstest(draws, lambda q: 2 * stats.beta.cdf(q, eta, eta) - 1)
    assert result.pvalue > 0.01


def test_mixup_lambda_is_deterministic_by_generator():
    first = [mixup_lambda(0.75, _generator(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert mixup_lambda(0.75, _generator(7)) != mixup_lambda(0.75, _generator(8))
    with pytest.raises(ValueError, match="eta"):
        mixup_lambda(0.0, _generator(0))


def test_image_mixup_follows_equations_12_and_13_and_keeps_targets_in_unit_interval():
    generator = _generator(1)
    images = torch.randn(4, 1, 4, 4, 4, generator=generator)
    targets = torch.rand(4, 30, generator=generator)
    targets[:, :5] = targets[:, :5].round()  # hard labels beside soft ones, as in a mixed batch
    permutation = torch.tensor([2, 0, 3, 1])
    for lam in (0.5, mixup_lambda(0.75, generator), 1.0):
        mixed_images, mixed_targets = image_mixup(images, targets, lam, permutation)
        for b, partner in enumerate(permutation.tolist()):
            assert torch.allclose(mixed_images[b], lam * images[b] + (1 - lam) * images[partner])
            assert torch.allclose(mixed_targets[b], lam * targets[b] + (1 - lam) * targets[partner])
        assert mixed_targets.min() >= 0.0 and mixed_targets.max() <= 1.0
    assert torch.equal(image_mixup(images, targets, 1.0, permutation)[1], targets)
    with pytest.raises(ValueError):
        image_mixup(images, targets, 1.2, permutation)
    with pytest.raises(ValueError):
        image_mixup(images, targets[:3], 0.7, permutation)


def test_mixed_valid_mask_ignores_an_anchor_ignored_in_either_partner():
    valid = torch.tensor([[True, True, False], [True, False, True]])
    mixed = mixup_valid_mask(valid, torch.tensor([1, 0]))
    assert torch.equal(mixed, torch.tensor([[True, False, False], [True, False, False]]))


def test_box_region_takes_voxel_centres_inside_the_box_clipped_to_the_volume():
    shape = (10, 10, 10)
    assert box_region(torch.tensor([2.0, 2.5, -3.0, 5.0, 4.9, 2.0]), shape) == (slice(2, 6), slice(3, 5), slice(0, 3))
    assert box_region(torch.tensor([2.2, 0.0, 0.0, 2.8, 4.0, 4.0]), shape) is None
    assert box_region(torch.tensor([12.0, 0.0, 0.0, 14.0, 4.0, 4.0]), shape) is None


def _region(image: torch.Tensor, region: tuple[slice, slice, slice]) -> torch.Tensor:
    return image[:, region[0], region[1], region[2]]


def test_object_mixup_writes_the_resized_partner_into_the_box_only():
    images = torch.rand(2, 1, 12, 12, 12, generator=_generator(2))
    boxes = [torch.tensor([[1.0, 2.0, 3.0, 4.0, 6.0, 5.0]]), torch.tensor([[5.0, 5.0, 5.0, 10.0, 9.0, 11.0]])]
    lam = 0.7
    mixed = object_mixup(images, boxes, lam, _generator(0))
    regions = [box_region(b[0], (12, 12, 12)) for b in boxes]
    # two objects: each one's partner is the other
    for sample, (own, partner) in enumerate([(0, 1), (1, 0)]):
        partner_patch = _region(images[partner], regions[partner])
        resized = F.interpolate(partner_patch[None], size=tuple(_region(images[sample], regions[own]).shape[1:]),
                                mode="trilinear", align_corners=False)[0]
        expected = lam * _region(images[sample], regions[own]) + (1 - lam) * resized
        assert torch.allclose(_region(mixed[sample], regions[own]), expected)
        outside = torch.ones_like(images[sample], dtype=torch.bool)
        outside[:, regions[own][0], regions[own][1], regions[own][2]] = False
        assert torch.equal(mixed[sample][outside], images[sample][outside])


def test_object_mixup_of_same_sized_objects_blends_them_exactly():
    images = torch.rand(1, 1, 10, 10, 10, generator=_generator(3))
    boxes = [torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0, 3.0], [5.0, 5.0, 5.0, 8.0, 8.0, 8.0]])]
    mixed = object_mixup(images, boxes, 0.6, _generator(0))
    a, b = images[0, :, 0:4, 0:4, 0:4], images[0, :, 5:9, 5:9, 5:9]
    assert torch.allclose(mixed[0, :, 0:4, 0:4, 0:4], 0.6 * a + 0.4 * b)
    assert torch.allclose(mixed[0, :, 5:9, 5:9, 5:9], 0.6 * b + 0.4 * a)


def test_object_mixup_picks_another_object_of_the_batch_never_itself():
    # each object is a constant block, so whatever partner is drawn resizes to a constant
    images = torch.zeros(3, 1, 16, 16, 16)
    boxes = [
        torch.tensor([[1.0, 1.0, 1.0, 4.0, 4.0, 4.0], [8.0, 8.0, 8.0, 14.0, 12.0, 13.0]]),
        torch.zeros(0, 6),
        torch.tensor([[2.0, 3.0, 4.0, 6.0, 9.0, 7.0]]),
    ]
    owners = [(0, 0), (0, 1), (2, 0)]
    values = [1.0, 2.0, 4.0]
    for (sample, index), value in zip(owners, values):
        region = box_region(boxes[sample][index], (16, 16, 16))
        images[sample, :, region[0], region[1], region[2]] = value
    lam = 0.75
    for seed in range(10):
        mixed = object_mixup(images, boxes, lam, _generator(seed))
        for (sample, index), value in zip(owners, values):
            region = _region(mixed[sample], box_region(boxes[sample][index], (16, 16, 16)))
            allowed = [lam * value + (1 - lam) * other for other in values if other != value]
            assert any(torch.allclose(region, torch.full_like(region, v)) for v in allowed)


def test_object_mixup_is_deterministic_and_handles_a_lone_or_outside_object():
    images = torch.rand(2, 1, 8, 8, 8, generator=_generator(4))
    boxes = [torch.tensor([[1.0, 1.0, 1.0, 3.0, 3.0, 3.0], [0.0, 4.0, 4.0, 2.0, 7.0, 7.0]]),
             torch.tensor([[3.0, 0.0, 2.0, 6.0, 3.0, 4.0]])]
    first = object_mixup(images, boxes, 0.8, _generator(11))
    assert torch.equal(first, object_mixup(images, boxes, 0.8, _generator(11)))
    assert any(not torch.equal(first, object_mixup(images, boxes, 0.8, _generator(s))) for s in range(5))
    # a single object can only be mixed with itself: unchanged; a box outside the patch is ignored
    lone = [torch.tensor([[1.0, 1.0, 1.0, 3.0, 3.0, 3.0], [20.0, 20.0, 20.0, 22.0, 22.0, 22.0]]), torch.zeros(0, 6)]
    assert torch.allclose(object_mixup(images, lone, 0.8, _generator(0)), images)
    with pytest.raises(ValueError, match="one box tensor per sample"):
        object_mixup(images, boxes[:1], 0.8, _generator(0))
    with pytest.raises(ValueError, match=r"\(M, 6\)"):
        object_mixup(images, [torch.zeros(2, 4), torch.zeros(0, 6)], 0.8, _generator(0))
