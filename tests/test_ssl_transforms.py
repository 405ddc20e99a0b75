"""The 16-element transform group: exact inverses, group structure, boxes and anchors."""

from __future__ import annotations

import itertools

import pytest
import torch

from focalmix_lib.detection.anchors import generate_anchors, level_shapes
from focalmix_lib.ssl.mixup import box_region
from focalmix_lib.ssl.transforms import GROUP, IDENTITY, SpatialTransform, random_transforms

ALL_ELEMENTS = pytest.mark.parametrize("transform", GROUP, ids=str)


def _random(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@ALL_ELEMENTS
def test_invert_undoes_apply_on_patches_and_anchor_maps(transform):
    patch = _random(2, 1, 6, 8, 8)
    anchor_map = _random(2, 3, 3, 4, 4, seed=1)
    for t in (patch, anchor_map):
        assert torch.equal(transform.invert(transform.apply(t)), t)
        assert torch.equal(transform.apply(transform.invert(t)), t)


def test_group_has_16_distinct_elements_identity_first():
    assert len(GROUP) == 16 and GROUP[0] == IDENTITY
    t = _random(3, 5, 5)
    images = [g.apply(t) for g in GROUP]
    assert torch.equal(images[0], t)
    for a, b in itertools.combinations(images, 2):
        assert not torch.equal(a, b)


def test_group_is_closed_under_composition_and_inverse():
    t = _random(3, 5, 5)
    images = [g.apply(t) for g in GROUP]

    def index_of(result: torch.Tensor) -> int:
        matches = [i for i, image in enumerate(images) if torch.equal(image, result)]
        assert len(matches) == 1
        return matches[0]

    for g, h in itertools.product(GROUP, repeat=2):
        index_of(g.apply(h.apply(t)))
    for g in GROUP:
        index_of(g.invert(t))
    # A y flip is not listed because it is a half turn after an x flip.
    assert torch.equal(SpatialTransform(flip_y=True).apply(t), SpatialTransform(flip_x=True, rot90=2).apply(t))


def test_rotation_needs_a_square_axial_plane_and_valid_quarter_turns():
    with pytest.raises(ValueError, match="H == W"):
        SpatialTransform(rot90=1).apply(torch.zeros(4, 6, 8))
    assert SpatialTransform(rot90=2, flip_z=True).apply(torch.zeros(4, 6, 8)).shape == (4, 6, 8)
    with pytest.raises(ValueError, match="0..3"):
        SpatialTransform(rot90=4)


def _box_mask(boxes: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for box in boxes:
        region = box_region(box, shape)
        if region is not None:
            mask[region] = True
    return mask


@ALL_ELEMENTS
def test_apply_to_boxes_agrees_with_apply_on_a_box_mask(transform):
    shape = (7, 9, 9) if transform.rot90 % 2 else (7, 9, 11)
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0, 6.0, 5.0], [0.0, 0.0, 7.0, 2.0, 3.0, 8.0]])
    moved = transform.apply_to_boxes(boxes, shape)
    assert torch.all(moved[:, :3] <= moved[:, 3:])
    assert torch.equal(_box_mask(moved, shape), transform.apply(_box_mask(boxes, shape)))


@ALL_ELEMENTS
def test_anchors_map_onto_anchors_where_the_anchor_map_moves(transform):
    # Each anchor box, moved as the patch moves, must be the anchor at the cell to which
    # apply() sends that anchor's entry of the class map.
    patch_shape, strides, sizes = (8, 8, 8), (2, 4), ((3.0, 5.0), (9.0,))
    anchors = generate_anchors(patch_shape, strides, sizes).double()
    shapes = level_shapes(patch_shape, strides, [len(s) for s in sizes])
    index_maps = []
    start = 0
    for shape in shapes:
        count = torch.tensor(shape).prod().item()
        index_maps.append(torch.arange(start, start + count).reshape(1, *shape))
        start += count
    # apply() puts the entry of anchor p at the position of anchor g(p): entry n of the
    # moved map holds the index of the anchor that lands on anchor n.
    where_from = torch.cat([transform.apply(m).reshape(-1) for m in index_maps])
    assert torch.allclose(transform.apply_to_boxes(anchors[where_from], patch_shape), anchors)


def test_random_transforms_are_distinct_and_deterministic():
    draws = random_transforms(4, torch.Generator().manual_seed(3))
    assert len(set(draws)) == 4 and set(draws) <= set(GROUP)
    assert draws == random_transforms(4, torch.Generator().manual_seed(3))
    assert set(random_transforms(16, torch.Generator().manual_seed(0))) == set(GROUP)
    for bad in (0, 17):
        with pytest.raises(ValueError):
            random_transforms(bad, torch.Generator())
