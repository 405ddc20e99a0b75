"""Anchors on every FPN level, and the flat (B, N) view of per-level maps.

On a level of stride ``s`` the cell ``j`` of an axis has its centre at voxel
coordinate ``j * s + (s - 1) / 2``. A flip maps a coordinate ``u`` to ``L - 1 - u``
on a side of ``L`` voxels; with ``L % s == 0`` cell ``j`` goes to cell
``L / s - 1 - j``, so every (cubic) anchor lands on an anchor of the same size. An
axial rot90 swaps y and x, which for a cubic patch is again a permutation of cells.

Anchor order (docs/architecture.md): level by level, finest first; within a level
the C order of an ``(A, D_l, H_l, W_l)`` array, ``A`` = anchor sizes of that level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

LevelShape = tuple[int, int, int, int]  # (A, D_l, H_l, W_l)


def level_shapes(
    patch_shape_zyx: Sequence[int], strides: Sequence[int], anchors_per_level: Sequence[int]
) -> list[LevelShape]:
    """``(A, D_l, H_l, W_l)`` of every level; every patch side must be divisible by every stride."""
    shapes = []
    for stride, count in zip(strides, anchors_per_level, strict=True):
        if any(side % stride for side in patch_shape_zyx):
            raise ValueError(f"patch shape {tuple(patch_shape_zyx)} is not divisible by the FPN stride {stride}")
        d, h, w = (side // stride for side in patch_shape_zyx)
        shapes.append((count, d, h, w))
    return shapes


def generate_anchors(
    patch_shape_zyx: Sequence[int], strides: Sequence[int], anchor_sizes: Sequence[Sequence[float]]
) -> Tensor:
    """Cubic anchors of every level as boxes ``(z1, y1, x1, z2, y2, x2)``.

    Shapes: returns ``(N, 6)`` float32 with ``N = sum_l A_l * D_l * H_l * W_l``. The
    anchor of size ``a`` at cell ``(k, j, i)`` of stride ``s`` is the cube of side
    ``a`` centred at ``((k, j, i) * s + (s - 1) / 2)``.
    """
    shapes = level_shapes(patch_shape_zyx, strides, [len(sizes) for sizes in anchor_sizes])
    levels = []
    for stride, sizes, (count, d, h, w) in zip(strides, anchor_sizes, shapes):
        axes = [torch.arange(n, dtype=torch.float64) * stride + (stride - 1) / 2 for n in (d, h, w)]
        cz, cy, cx = torch.meshgrid(*axes, indexing="ij")
        centres = torch.stack([cz, cy, cx], dim=-1).reshape(1, d * h * w, 3)
        half = torch.tensor(sizes, dtype=torch.float64).reshape(count, 1, 1) / 2
        boxes = torch.cat([centres - half, centres + half], dim=-1)  # (A, D*H*W, 6): C order of (A, D, H, W)
        levels.append(boxes.reshape(-1, 6))
    return torch.cat(levels).to(torch.float32)


def flatten_levels(maps: Sequence[Tensor]) -> Tensor:
    """Concatenate per-level maps in anchor order.

    Class maps ``(B, A, D_l, H_l, W_l)`` give ``(B, N)``; box-delta maps
    ``(B, A, 6, D_l, H_l, W_l)`` give ``(B, N, 6)``.
    """
    flat = []
    for level in maps:
        if level.dim() == 5:
            flat.append(level.reshape(level.shape[0], -1))
        elif level.dim() == 6:
            flat.append(level.permute(0, 1, 3, 4, 5, 2).reshape(level.shape[0], -1, level.shape[2]))
        else:
            raise ValueError(f"expected (B, A, D, H, W) or (B, A, 6, D, H, W) maps, got shape {tuple(level.shape)}")
    return torch.cat(flat, dim=1)


def unflatten_levels(flat: Tensor, shapes: Sequence[LevelShape]) -> list[Tensor]:
    """Inverse of :func:`flatten_levels`.

    ``(B, N)`` -> list of ``(B, A, D_l, H_l, W_l)``; ``(B, N, C)`` -> list of
    ``(B, A, C, D_l, H_l, W_l)``. ``shapes`` are the ``(A, D_l, H_l, W_l)`` of the levels.
    """
    sizes = [a * d * h * w for a, d, h, w in shapes]
    if flat.shape[1] != sum(sizes):
        raise ValueError(f"{flat.shape[1]} anchors given, the levels {list(shapes)} hold {sum(sizes)}")
    levels = []
    for chunk, shape in zip(torch.split(flat, sizes, dim=1), shapes):
        if flat.dim() == 2:
            levels.append(chunk.reshape(flat.shape[0], *shape))
        else:
            channels = flat.shape[2]
            levels.append(chunk.reshape(flat.shape[0], *shape, channels).permute(0, 1, 5, 2, 3, 4))
    return levels
