"""Sharpening and anchor-level target prediction over K transformed views (paper sec. 3.2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from focalmix_lib.detection.boxes import BoxCoder
from focalmix_lib.ssl.target_prediction import (
    averaged_view_predictions,
    averaged_view_probabilities,
    delta_inverse_matrix,
    predict_anchor_targets,
    sharpen,
    sharpen_logits,
)
from focalmix_lib.ssl.transforms import GROUP, random_transforms

STRIDES = (2, 4)
ANCHOR_SCALES = (torch.tensor([1.0, -0.5]), torch.tensor([2.0]))  # A = 2 on level 0, A = 1 on level 1


def equivariant_logits(patches: torch.Tensor) -> list[torch.Tensor]:
    """A per-voxel function, average-pooled to each level's stride: commutes with every group element."""
    per_voxel = 3.0 * torch.sin(7.0 * patches)
    return [
        F.avg_pool3d(per_voxel, stride) * scales.to(patches.dtype).reshape(1, -1, 1, 1, 1)
        for stride, scales in zip(STRIDES, ANCHOR_SCALES)
    ]


def position_dependent_logits(patches: torch.Tensor) -> list[torch.Tensor]:
    """Not equivariant: adds a ramp along x, so each view predicts something different."""
    ramp = torch.linspace(-2.0, 2.0, patches.shape[-1], dtype=patches.dtype)
    return equivariant_logits(patches + ramp)


def _patches(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sharpen_with_temperature_one_is_the_identity():
    p = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    assert torch.allclose(sharpen(p, 1.0), p, atol=1e-12)


def test_sharpen_equals_the_power_form_and_the_logit_form():
    p = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    for temperature in (0.25, 0.5, 2.0):
        powered = p ** (1 / temperature)
        reference = powered / (powered + (1 - p) ** (1 / temperature))
        assert torch.allclose(sharpen(p, temperature), reference, atol=1e-12)
        assert torch.allclose(sharpen(p, temperature), torch.sigmoid(torch.logit(p) / temperature), atol=1e-15)


def test_sharpen_hardens_towards_zero_and_one_as_temperature_falls():
    p = torch.tensor([0.0, 0.1, 0.45, 0.5, 0.55, 0.9, 1.0], dtype=torch.float64)
    distances = [(sharpen(p, t) - 0.5).abs() for t in (2.0, 1.0, 0.5, 0.1, 0.01)]
    for looser, harder in zip(distances, distances[1:]):
        assert torch.all(harder >= looser)
    cold = sharpen(p, 0.01)
    assert torch.allclose(cold, torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0], dtype=torch.float64), atol=1e-4)
    assert torch.equal(cold[[0, 3, 6]], torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))


def test_sharpen_logits_matches_sharpen_and_stays_finite():
    logits = torch.tensor([-1e4, -3.0, 0.0, 2.5, 1e4], dtype=torch.float64)
    sharpened = sharpen_logits(logits, 0.5)
    assert torch.all(torch.isfinite(sharpened))
    assert torch.allclose(sharpened[1:4], sharpen(torch.sigmoid(logits[1:4]), 0.5), atol=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        sharpen(torch.tensor([0.3]), 0.0)


@pytest.mark.parametrize("transform", GROUP, ids=str)
def test_equivariant_model_predicts_the_same_after_mapping_back(transform):
    patches = _patches()
    original = equivariant_logits(patches)
    moved_back = [transform.invert(level) for level in equivariant_logits(transform.apply(patches))]
    for a, b in zip(moved_back, original):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4, 16])
def test_targets_of_an_equivariant_model_are_its_sharpened_prediction(k):
    patches = _patches(seed=k)
    transforms = random_transforms(k, torch.Generator().manual_seed(k))
    targets = predict_anchor_targets(equivariant_logits, patches, transforms, temperature=0.5)
    for target, logits in zip(targets, equivariant_logits(patches)):
        assert target.shape == logits.shape
        assert torch.allclose(target, sharpen_logits(logits, 0.5), atol=1e-12)


def test_views_run_as_one_batch_without_gradients_and_are_averaged_on_the_original_grid():
    patches = _patches(seed=5)
    transforms = random_transforms(4, torch.Generator().manual_seed(1))
    weight = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    batch_sizes = []

    def model(batch: torch.Tensor) -> list[torch.Tensor]:
        batch_sizes.append(batch.shape[0])
        return [weight * level for level in position_dependent_logits(batch)]

    averaged = averaged_view_probabilities(model, patches, transforms)
    assert batch_sizes == [4 * 2]
    assert not any(level.requires_grad for level in averaged)

    with torch.no_grad():
        per_view = [
            [g.invert(torch.sigmoid(weight * level)) for level in position_dependent_logits(g.apply(patches))]
            for g in transforms
        ]
    for index, level in enumerate(averaged):
        reference = torch.stack([view[index] for view in per_view]).mean(dim=0)
        assert torch.allclose(level, reference, atol=1e-12)
    targets = predict_anchor_targets(model, patches, transforms, temperature=0.5)
    for target, level in zip(targets, averaged):
        assert torch.allclose(target, sharpen(level, 0.5), atol=1e-12)
    # the ramp makes the views disagree, so the average is not a single view's prediction
    assert not torch.allclose(averaged[0], torch.sigmoid(model(patches)[0].detach()), atol=1e-3)


def test_level_maps_that_do_not_tile_the_patch_are_refused():
    def cropped(batch: torch.Tensor) -> list[torch.Tensor]:
        return [level[..., :3] for level in equivariant_logits(batch)]

    with pytest.raises(ValueError, match="not a multiple"):
        predict_anchor_targets(cropped, _patches(), list(GROUP[:2]), temperature=0.5)


WEIGHTS = (10.0, 10.0, 5.0, 5.0, 2.0, 1.0)  # unequal on purpose: the inverse must carry their ratios


@pytest.mark.parametrize("transform", GROUP)
def test_deltas_read_in_a_view_map_back_to_the_deltas_of_the_patch(transform):
    """The same box seen in view g: its deltas against the mapped anchor, mapped back, are its deltas."""
    coder, shape = BoxCoder(WEIGHTS), (8, 8, 8)
    anchors = torch.tensor([[1.0, 2.0, 3.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 4.0, 4.0, 4.0]], dtype=torch.float64)
    boxes = torch.tensor([[1.5, 1.0, 2.5, 3.0, 4.5, 6.5], [0.5, -1.0, 1.0, 3.0, 5.0, 2.0]], dtype=torch.float64)
    seen = coder.encode(transform.apply_to_boxes(anchors, shape), transform.apply_to_boxes(boxes, shape))
    back = seen @ delta_inverse_matrix(transform, WEIGHTS).T
    torch.testing.assert_close(back, coder.encode(anchors, boxes), rtol=1e-12, atol=1e-12)


def _consistent_predictor(delta_maps, transforms):
    """A detector that sees the same boxes in every view: view k's delta maps are g_k of the patch's
    maps, read in view k's axes; the class branch is :func:`equivariant_logits`."""
    def predict(views):
        deltas = []
        for level in delta_maps:
            per_view = []
            for transform in transforms:
                forward = torch.linalg.inv(delta_inverse_matrix(transform, WEIGHTS)).to(level)
                per_view.append(torch.einsum("ij,bajdhw->baidhw", forward, transform.apply(level)))
            deltas.append(torch.cat(per_view))
        return equivariant_logits(views), deltas
    return predict


@pytest.mark.parametrize("k", [1, 4, 16])
def test_view_average_of_consistent_deltas_is_exact_and_probabilities_are_unchanged(k):
    patches = _patches()
    transforms = random_transforms(k, torch.Generator().manual_seed(k))
    generator = torch.Generator().manual_seed(3)
    delta_maps = [torch.randn(2, len(scales), 6, 8 // stride, 8 // stride, 8 // stride, generator=generator,
                              dtype=torch.float64) for stride, scales in zip(STRIDES, ANCHOR_SCALES)]
    probabilities, deltas = averaged_view_predictions(_consistent_predictor(delta_maps, transforms), patches,
                                                      transforms, WEIGHTS)
    for got, want in zip(deltas, delta_maps):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for got, want in zip(probabilities, averaged_view_probabilities(equivariant_logits, patches, transforms)):
        assert torch.equal(got, want)


def test_view_average_of_inconsistent_deltas_cancels_what_the_views_disagree_on():
    """A head that always says 'the box is one anchor side further along z' in its own axes: the
    identity and the z flip disagree on the direction, and their average is the anchor itself."""
    transforms = [GROUP[0], next(g for g in GROUP if g.flip_z and not g.flip_x and g.rot90 == 0)]
    patches = _patches()

    def predict(views):
        shift = torch.tensor([1.0, 0, 0, 0, 0, 0], dtype=views.dtype).reshape(1, 1, 6, 1, 1, 1)
        return equivariant_logits(views), [shift.expand(views.shape[0], len(scales), 6, *[8 // stride] * 3)
                                           for stride, scales in zip(STRIDES, ANCHOR_SCALES)]

    _, deltas = averaged_view_predictions(predict, patches, transforms, WEIGHTS)
    assert all(torch.equal(level, torch.zeros_like(level)) for level in deltas)
