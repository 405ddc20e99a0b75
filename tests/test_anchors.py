"""Anchors: counts, order, flatten/unflatten, invariance under flips and axial rot90; matching rules."""

from __future__ import annotations

import itertools

import pytest
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.detection.anchors import flatten_levels, generate_anchors, level_shapes, unflatten_levels
from focalmix_lib.detection.boxes import BoxCoder, box_iou
from focalmix_lib.detection.matching import IGNORED, NEGATIVE, build_targets, match_anchors
from focalmix_lib.detection.model import DetectorConfig

PRESET_PATCHES = {"quick": 32, "standard": 64, "paper": 160}


def _shapes(config: DetectorConfig, side: int):
    return level_shapes((side,) * 3, config.strides, [len(s) for s in config.anchor_sizes])


@pytest.mark.parametrize("preset", sorted(PRESET_PATCHES))
def test_anchor_count_and_order(preset):
    config = from_preset(DetectorConfig, preset)
    side = PRESET_PATCHES[preset]
    anchors = generate_anchors((side,) * 3, config.strides, config.anchor_sizes)
    expected = sum(len(sizes) * (side // s) ** 3 for s, sizes in zip(config.strides, config.anchor_sizes))
    assert anchors.shape == (expected, 6)
    first = 0
    for stride, sizes in zip(config.strides, config.anchor_sizes):
        cells = side // stride
        level = anchors[first:first + len(sizes) * cells ** 3].reshape(len(sizes), cells, cells, cells, 6)
        a, k, j, i = 1 % len(sizes), cells - 1, 0, min(2, cells - 1)  # one anchor, spelled out
        centre = torch.tensor([k, j, i], dtype=torch.float32) * stride + (stride - 1) / 2
        half = sizes[a] / 2
        assert torch.allclose(level[a, k, j, i], torch.cat([centre - half, centre + half]))
        first += len(sizes) * cells ** 3


def test_flatten_matches_anchor_order_and_round_trips():
    config = from_preset(DetectorConfig, "quick")
    shapes = _shapes(config, 32)
    anchors = generate_anchors((32,) * 3, config.strides, config.anchor_sizes)
    # Delta-like maps whose six channels hold each cell's anchor box, built per level.
    maps = []
    for stride, sizes, (count, d, h, w) in zip(config.strides, config.anchor_sizes, shapes):
        grid = torch.stack(torch.meshgrid(*(torch.arange(n) * stride + (stride - 1) / 2 for n in (d, h, w)),
                                          indexing="ij"))  # (3, D, H, W)
        half = torch.tensor(sizes).reshape(count, 1, 1, 1, 1) / 2
        maps.append(torch.cat([grid - half, grid + half], dim=1).unsqueeze(0))  # (1, A, 6, D, H, W)
    assert torch.allclose(flatten_levels(maps)[0], anchors)

    generator = torch.Generator().manual_seed(0)
    cls_maps = [torch.randn(2, *shape, generator=generator) for shape in shapes]
    flat = flatten_levels(cls_maps)
    assert flat.shape == (2, anchors.shape[0])
    for back, original in zip(unflatten_levels(flat, shapes), cls_maps):
        assert torch.equal(back, original)
    delta_maps = [torch.randn(2, s[0], 6, *s[1:], generator=generator) for s in shapes]
    flat = flatten_levels(delta_maps)
    assert flat.shape == (2, anchors.shape[0], 6)
    for back, original in zip(unflatten_levels(flat, shapes), delta_maps):
        assert torch.equal(back, original)
    with pytest.raises(ValueError):
        unflatten_levels(flat[:, 1:], shapes)


def _transforms(side: int):
    """The 32 transforms: flips of any axes, then rot90 k times in the axial (y, x) plane.

    Each is (image function on (..., D, H, W), point function on (z, y, x) columns).
    """
    last = side - 1
    for flips, k in itertools.product(itertools.product([False, True], repeat=3), range(4)):
        dims = [d for d, f in zip((-3, -2, -1), flips) if f]

        def image(x, dims=dims, k=k):
            x = torch.flip(x, dims) if dims else x
            return torch.rot90(x, k, dims=(-2, -1))

        def point(p, flips=flips, k=k):
            p = torch.stack([last - p[:, a] if f else p[:, a] for a, f in enumerate(flips)], dim=1)
            for _ in range(k):  # np/torch rot90: (y, x) -> (W - 1 - x, y)
                p = torch.stack([p[:, 0], last - p[:, 2], p[:, 1]], dim=1)
            return p

        yield image, point


def test_point_maps_follow_the_image_transforms():
    side = 8
    for image, point in _transforms(side):
        volume = torch.zeros(side, side, side)
        volume[1, 2, 5] = 1
        moved = torch.nonzero(image(volume)).float()
        assert torch.equal(moved, point(torch.tensor([[1.0, 2.0, 5.0]])))


@pytest.mark.parametrize("preset", ["quick", "standard"])
def test_anchors_map_onto_anchors_under_flips_and_axial_rot90(preset):
    config = from_preset(DetectorConfig, preset)
    side = PRESET_PATCHES[preset]
    anchors = generate_anchors((side,) * 3, config.strides, config.anchor_sizes)
    shapes = _shapes(config, side)
    index_maps = unflatten_levels(torch.arange(anchors.shape[0], dtype=torch.float64)[None], shapes)
    for image, point in _transforms(side):
        # After the image transform, flat position n holds the prediction of original anchor source[n] ...
        source = flatten_levels([image(m) for m in index_maps])[0].long()
        # ... so moving that anchor's box by the same transform must give the anchor at n.
        centres = (anchors[:, :3] + anchors[:, 3:]) / 2
        sides = anchors[:, 3:] - anchors[:, :3]
        moved = point(centres[source])
        moved_boxes = torch.cat([moved - sides[source] / 2, moved + sides[source] / 2], dim=1)
        assert torch.allclose(moved_boxes, anchors, atol=1e-5)  # sides like 3.2 round in float32


def test_patch_not_divisible_by_stride_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        generate_anchors((32, 32, 36), (4, 8), ((2.0,), (8.0,)))


def test_matching_thresholds_and_forced_best_anchor():
    anchors = torch.tensor([
        [0.0, 0, 0, 10, 10, 10],    # identical to gt 0: IoU 1
        [0.0, 0, 1, 10, 10, 11],    # IoU 0.9/1.1 = 0.818
        [0.0, 0, 5, 10, 10, 15],    # IoU 1/3: between the thresholds
        [0.0, 0, 9, 10, 10, 19],    # IoU 0.1/1.9: negative
        [50.0, 50, 50, 60, 60, 60],  # far away: negative
        [30.0, 30, 30, 34, 34, 34],  # best for the tiny gt 1, IoU 1/64 < 0.1
        [30.0, 30, 34, 34, 34, 38],  # touches gt 1 only on a face: IoU 0
    ])
    gt = torch.tensor([[0.0, 0, 0, 10, 10, 10], [31.0, 31, 31, 32, 32, 32]])
    matched = match_anchors(anchors, gt, positive_iou=0.5, negative_iou=0.2)
    assert matched.tolist() == [0, 0, IGNORED, NEGATIVE, NEGATIVE, 1, NEGATIVE]

    # Ties: every anchor sharing an annotation's best IoU is positive.
    twins = torch.tensor([[0.0, 0, 0, 4, 4, 4], [0.0, 0, 2, 4, 4, 6], [20.0, 20, 20, 24, 24, 24]])
    matched = match_anchors(twins, torch.tensor([[0.0, 0, 1, 4, 4, 5]]), positive_iou=0.9, negative_iou=0.5)
    assert matched.tolist() == [0, 0, NEGATIVE]

    # An anchor forced by two annotations takes the one it overlaps most.
    pair = torch.tensor([[0.0, 0, 0, 4, 4, 4], [0.0, 0, 0, 6, 6, 6], [0.0, 0, 0, 5, 5, 5]])
    matched = match_anchors(pair[:1], pair[1:], positive_iou=0.9, negative_iou=0.1)
    assert matched.tolist() == [1]


def test_every_annotation_gets_a_positive_anchor():
    config = from_preset(DetectorConfig, "quick")
    anchors = generate_anchors((32,) * 3, config.strides, config.anchor_sizes)
    # One nodule of 1.5-12 voxels in each octant, at a random offset (apart, so no two compete).
    generator = torch.Generator().manual_seed(1)
    octants = torch.tensor(list(itertools.product([8.0, 24.0], repeat=3)))
    centres = octants + torch.rand(8, 3, generator=generator) * 4 - 2
    sides = torch.rand(8, 1, generator=generator) * 10.5 + 1.5
    gt = torch.cat([centres - sides / 2, centres + sides / 2], dim=1)
    matched = match_anchors(anchors, gt, config.positive_iou, config.negative_iou)
    assert set(matched[matched >= 0].tolist()) == set(range(8))
    iou = box_iou(anchors, gt).max(dim=1).values
    assert (matched[iou >= config.positive_iou] >= 0).all()
    assert (matched[iou < config.negative_iou] != IGNORED).all()


def test_build_targets():
    anchors = torch.tensor([[0.0, 0, 0, 10, 10, 10], [0.0, 0, 5, 10, 10, 15], [40.0, 40, 40, 50, 50, 50]])
    gt = torch.tensor([[1.0, 0, 0, 11, 10, 12]])
    coder = BoxCoder()
    targets = build_targets(anchors, gt, coder, positive_iou=0.5, negative_iou=0.2)
    assert targets.positive.tolist() == [True, False, False]
    assert targets.valid.tolist() == [True, False, True]
    assert targets.cls_target.tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(coder.decode(anchors[:1], targets.box_target[:1]), gt, atol=1e-5)
    assert torch.equal(targets.box_target[1:], torch.zeros(2, 6))

    empty = build_targets(anchors, torch.zeros(0, 6), coder, 0.5, 0.2)
    assert empty.cls_target.sum() == 0 and empty.valid.all() and not empty.positive.any()
