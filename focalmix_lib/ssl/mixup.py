"""Image-level and object-level MixUp of FocalMix (paper eq. 10-13 and sec. 3.3).

Image level: every sample of the batch (labeled and unlabeled together) is mixed with a
partner from a shuffled copy of the batch, images and per-anchor targets alike:

    lambda ~ Beta(eta, eta),  l = max(lambda, 1 - lambda)          (eq. 10, 11)
    x^ = l x + (1 - l) x'                                          (eq. 12)
    y^_i = l y_i + (1 - l) y'_i  for every anchor i                 (eq. 13)

Since l >= 0.5 the mixed sample stays closer to its own original, and targets in [0, 1]
stay in [0, 1]. Object level: every object box is mixed with another object of the batch,
resized to the same box, with the same l; targets are not mixed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.special import betaincinv


def mixup_lambda(eta: float, generator: torch.Generator) -> float:
    """l = max(lambda, 1 - lambda) with lambda ~ Beta(eta, eta) (paper eq. 10-11).

    lambda is drawn by inverse transform sampling: one uniform u from ``generator``
    (``torch.rand``, so the draw follows the run's torch seed and nothing else), then
    lambda = I^-1_u(eta, eta), the inverse regularised incomplete beta function
    (``scipy.special.betaincinv``, float64). ``torch.distributions.Beta`` takes no
    generator, hence this route. Returns a float in [0.5, 1].
    """
    if not eta > 0:
        raise ValueError(f"the Beta parameter eta must be > 0, got {eta}")
    uniform = float(torch.rand((), generator=generator, dtype=torch.float64))
    lam = float(betaincinv(eta, eta, uniform))
    return max(lam, 1.0 - lam)


def mix_with_partner(x: torch.Tensor, lam: float, permutation: torch.Tensor) -> torch.Tensor:
    """``l * x + (1 - l) * x[permutation]`` along the batch dim 0 (eq. 12 for images, eq. 13 for targets)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"the mixing weight l must be in [0, 1], got {lam}")
    if permutation.shape != (x.shape[0],):
        raise ValueError(f"permutation must have shape ({x.shape[0]},), got {tuple(permutation.shape)}")
    return lam * x + (1.0 - lam) * x[permutation]


def image_mixup(
    images: torch.Tensor, targets: torch.Tensor, lam: float, permutation: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level MixUp of a batch: images (B, 1, D, H, W) and targets (B, N) in [0, 1].

    Sample b is mixed with sample ``permutation[b]`` (a permutation of 0..B-1, e.g.
    ``torch.randperm(B, generator=...)``) with weight ``lam`` on itself. Returns
    (mixed images (B, 1, D, H, W), mixed targets (B, N)).
    """
    if images.shape[0] != targets.shape[0]:
        raise ValueError(f"images and targets disagree on the batch size: {images.shape[0]} vs {targets.shape[0]}")
    return mix_with_partner(images, lam, permutation), mix_with_partner(targets, lam, permutation)


def mixup_valid_mask(valid: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Anchors that count after mixing (B, N) bool: ``valid & valid[permutation]``.

    An anchor ignored in either partner (e.g. between the matcher's IoU thresholds) has
    no defined target there, so it stays ignored in the mix.
    """
    if permutation.shape != (valid.shape[0],):
        raise ValueError(f"permutation must have shape ({valid.shape[0]},), got {tuple(permutation.shape)}")
    return valid & valid[permutation]


def box_region(box: torch.Tensor, shape_zyx: tuple[int, int, int]) -> tuple[slice, slice, slice] | None:
    """The voxels of a box (z1, y1, x1, z2, y2, x2): those whose centre lies in the closed box.

    On each axis the indices ceil(u1) .. floor(u2), clipped to the volume. Returns the
    three slices, or None when no voxel centre lies inside the volume and the box.
    """
    region = []
    for low, high, side in zip(box[:3].tolist(), box[3:].tolist(), shape_zyx):
        start, stop = max(math.ceil(low), 0), min(math.floor(high) + 1, side)
        if start >= stop:
            return None
        region.append(slice(start, stop))
    return tuple(region)  # type: ignore[return-value]


def object_mixup(
    images: torch.Tensor, boxes: list[torch.Tensor], lam: float, generator: torch.Generator
) -> torch.Tensor:
    """Object-level MixUp (paper sec. 3.3): mix every object with a partner object of the batch.

    Args:
        images: (B, 1, D, H, W).
        boxes: per sample, its objects (M_b, 6) as (z1, y1, x1, z2, y2, x2): the annotated
            boxes of labeled patches and the confident predicted boxes of unlabeled ones.
        lam: the mixing weight l (the same l as the image-level MixUp of the step).
        generator: draws the partners.

    Returns:
        (B, 1, D, H, W): inside the voxel region R of each object (:func:`box_region`),
        ``l * x[R] + (1 - l) * resize(x'[R'])``, where R' is the region of the partner
        object, drawn uniformly from the other objects of the whole batch (itself only when
        it is the sole object), and resize is trilinear to the size of R. Every voxel
        outside all regions is unchanged. Each mix reads the input batch, so the result
        does not depend on the order of the objects; where regions overlap the later
        object is written last. Targets are not mixed.
    """
    if images.dim() != 5 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, D, H, W), got {tuple(images.shape)}")
    if len(boxes) != images.shape[0]:
        raise ValueError(f"need one box tensor per sample: {len(boxes)} for a batch of {images.shape[0]}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"the mixing weight l must be in [0, 1], got {lam}")
    shape_zyx = tuple(images.shape[2:])
    objects = []  # (sample index, voxel region)
    for sample, sample_boxes in enumerate(boxes):
        if sample_boxes.numel() and (sample_boxes.dim() != 2 or sample_boxes.shape[1] != 6):
            raise ValueError(f"boxes of sample {sample} must be (M, 6), got {tuple(sample_boxes.shape)}")
        for box in sample_boxes.reshape(-1, 6):
            region = box_region(box, shape_zyx)
            if region is not None:
                objects.append((sample, region))

    mixed = images.clone()
    for index, (sample, region) in enumerate(objects):
        partner_sample, partner_region = objects[_partner_index(index, len(objects), generator)]
        own = images[sample, :, region[0], region[1], region[2]]
        partner = images[partner_sample, :, partner_region[0], partner_region[1], partner_region[2]]
        resized = F.interpolate(partner[None], size=tuple(own.shape[1:]), mode="trilinear", align_corners=False)[0]
        mixed[sample, :, region[0], region[1], region[2]] = lam * own + (1.0 - lam) * resized
    return mixed


def _partner_index(index: int, count: int, generator: torch.Generator) -> int:
    """Uniform over 0..count-1 without ``index`` (``index`` itself when it is the only one)."""
    if count == 1:
        return index
    draw = int(torch.randint(count - 1, (), generator=generator))
    return draw + 1 if draw >= index else draw
