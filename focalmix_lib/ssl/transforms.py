"""The spatial transform group of FocalMix's target prediction, with exact inverses.

FocalMix (sec. 3.2) predicts anchor targets for an unlabeled patch on K transformed
copies of it. The transforms are the flips along z, y and x and the quarter turns in
the axial (y, x) plane. They generate a group G of 16 elements:
G = {identity, z flip} x D4, where D4, the symmetry group of the square, holds the four
rotations R^k and the four reflections R^k F_x of the axial plane (F_y = R^2 F_x, so a
y flip adds nothing new).

A :class:`SpatialTransform` ``g = (flip_z, flip_y, flip_x, rot90)`` acts on the last
three dims (..., D, H, W) of a tensor as

    g(t) = R^rot90( F(t) ),

first the chosen flips F, then ``rot90`` quarter turns R = ``torch.rot90(., 1, dims=(-2, -1))``.
On voxel coordinates (continuous indices, docs/architecture.md) a flip maps u to
L - 1 - u on a side of L voxels, and R maps (y, x) to (W - 1 - x, y). Anchors sit at cell
centres ``j * s + (s - 1) / 2``; when the stride s divides every side, both maps send
anchor centres onto anchor centres, so the same ``apply`` / ``invert`` that act on a
patch (B, 1, D, H, W) act exactly on a per-level class map (B, A, D_l, H_l, W_l).
Anchors are cubes, so the anchor axis A is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_AXIAL_DIMS = (-2, -1)


@dataclass(frozen=True)
class SpatialTransform:
    """One element of the group: optional flips along z, y, x, then quarter turns in (y, x).

    ``rot90`` is the number of quarter turns (0..3) applied after the flips, in the
    sense of ``torch.rot90(t, rot90, dims=(-2, -1))``. An odd ``rot90`` swaps H and W
    and is only defined on square axial planes (H == W); ``apply`` and ``invert``
    raise ``ValueError`` otherwise.
    """

    flip_z: bool = False
    flip_y: bool = False
    flip_x: bool = False
    rot90: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.rot90, int) or not 0 <= self.rot90 <= 3:
            raise ValueError(f"rot90 must be an int in 0..3 (quarter turns), got {self.rot90!r}")

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t)`` on the last three dims (..., D, H, W): flips, then quarter turns."""
        self._check_shape(tuple(t.shape))
        flip_dims = self._flip_dims()
        flipped = t.flip(flip_dims) if flip_dims else t
        return torch.rot90(flipped, self.rot90, dims=_AXIAL_DIMS) if self.rot90 else flipped

    def invert(self, t: torch.Tensor) -> torch.Tensor:
        """``g^-1(t)``: undo the quarter turns, then the flips; ``invert(apply(t)) == t`` exactly."""
        self._check_shape(tuple(t.shape))
        unrotated = torch.rot90(t, -self.rot90, dims=_AXIAL_DIMS) if self.rot90 else t
        flip_dims = self._flip_dims()
        return unrotated.flip(flip_dims) if flip_dims else unrotated

    def apply_to_points(self, points: torch.Tensor, shape_zyx: tuple[int, int, int]) -> torch.Tensor:
        """Map voxel coordinates (M, 3) in (z, y, x) of a volume of ``shape_zyx`` as ``apply`` maps voxels.

        Flip: u -> L - 1 - u. Quarter turn: (y, x) -> (W - 1 - x, y) on an H x W plane, which
        becomes a W x H plane; applied ``rot90`` times.
        """
        self._check_shape(tuple(shape_zyx))
        if points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be (M, 3) in (z, y, x), got {tuple(points.shape)}")
        depth, height, width = shape_zyx
        z, y, x = points.unbind(dim=1)
        if self.flip_z:
            z = depth - 1 - z
        if self.flip_y:
            y = height - 1 - y
        if self.flip_x:
            x = width - 1 - x
        for _ in range(self.rot90):  # each turn maps an H x W plane onto a W x H one
            y, x = width - 1 - x, y
            height, width = width, height
        return torch.stack((z, y, x), dim=1)

    def apply_to_boxes(self, boxes: torch.Tensor, shape_zyx: tuple[int, int, int]) -> torch.Tensor:
        """Map boxes (M, 6) ``(z1, y1, x1, z2, y2, x2)`` of a volume of ``shape_zyx`` as ``apply`` maps voxels.

        Both corners are mapped with :meth:`apply_to_points`; the result is re-ordered so
        that ``z1 <= z2`` etc. again (a flip swaps the two faces of an axis).
        """
        if boxes.dim() != 2 or boxes.shape[1] != 6:
            raise ValueError(f"boxes must be (M, 6) as (z1, y1, x1, z2, y2, x2), got {tuple(boxes.shape)}")
        low = self.apply_to_points(boxes[:, :3], shape_zyx)
        high = self.apply_to_points(boxes[:, 3:], shape_zyx)
        return torch.cat((torch.minimum(low, high), torch.maximum(low, high)), dim=1)

    def linear_part(self) -> torch.Tensor:
        """The signed permutation M (3, 3), float64, with ``apply_to_points(p) = M p + c``.

        Offsets between points (a box centre minus its anchor centre, say) map by M alone;
        ``M^-1 = M^T``. The same on every volume the transform accepts, so it is read off a cube.
        """
        unit = torch.cat((torch.zeros(1, 3), torch.eye(3))).to(torch.float64)  # the origin and e_z, e_y, e_x
        mapped = self.apply_to_points(unit, (2, 2, 2))
        return (mapped[1:] - mapped[0]).T  # column i is the image of e_i

    def _flip_dims(self) -> tuple[int, ...]:
        return tuple(dim for dim, on in zip((-3, -2, -1), (self.flip_z, self.flip_y, self.flip_x)) if on)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) < 3:
            raise ValueError(f"a spatial transform acts on the last three dims (D, H, W); got shape {shape}")
        height, width = shape[-2], shape[-1]
        if self.rot90 % 2 == 1 and height != width:
            raise ValueError(
                f"a quarter turn in the axial plane needs H == W, got H={height}, W={width}; "
                "use square patches (or only flips and half turns)"
            )


IDENTITY = SpatialTransform()

# The 16 distinct elements, identity first: z flip or not, times the 8 elements
# R^k (F_x)^m of D4. A y flip is never listed: it equals R^2 F_x.
GROUP: tuple[SpatialTransform, ...] = tuple(
    SpatialTransform(flip_z=flip_z, flip_x=flip_x, rot90=quarter_turns)
    for flip_z in (False, True)
    for flip_x in (False, True)
    for quarter_turns in range(4)
)


def random_transforms(k: int, generator: torch.Generator) -> list[SpatialTransform]:
    """Draw ``k`` distinct elements of :data:`GROUP`, uniformly without replacement.

    Every element, the identity included, is equally likely, so the K views of a patch
    are always K different views (1 <= k <= 16). Deterministic for a given ``generator``.
    """
    if not 1 <= k <= len(GROUP):
        raise ValueError(f"k must be in 1..{len(GROUP)} (distinct group elements), got {k}")
    order = torch.randperm(len(GROUP), generator=generator)[:k]
    return [GROUP[int(index)] for index in order]
