"""Anchor-level target prediction for unlabeled patches (FocalMix, sec. 3.2).

For an unlabeled patch x the detector predicts per-anchor probabilities on K transformed
copies g_1(x), ..., g_K(x); each map is brought back to the original anchor grid with
g_k^-1, the K maps are averaged and every anchor is sharpened:

    p_bar = (1 / K) sum_k g_k^-1( sigmoid(f(g_k(x))) ),        q = Sharpen(p_bar, T).

The K views run as one batch in one forward pass without gradients. For object-level
MixUp on predicted boxes the box deltas are averaged the same way, each view's deltas first
turned back into the patch's axes (:func:`averaged_view_predictions`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from focalmix_lib.ssl.transforms import SpatialTransform

PredictLogits = Callable[[torch.Tensor], Sequence[torch.Tensor]]
"""``predict_logits(patches (N, 1, D, H, W)) -> per-level class logits [(N, A, D_l, H_l, W_l), ...]``."""
PredictOutputs = Callable[[torch.Tensor], tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]]
"""``predict(patches (N, 1, D, H, W)) -> (per-level class logits, per-level box deltas (N, A, 6, D_l, H_l, W_l))``."""


def sharpen_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen(sigmoid(z), T) = sigmoid(z / T), any shape; stable for every finite or infinite z."""
    _check_temperature(temperature)
    return torch.sigmoid(logits / temperature)


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen each probability towards 0 or 1 (MixMatch's sharpening for a binary label).

        Sharpen(p, T) = p^(1/T) / (p^(1/T) + (1 - p)^(1/T)) = sigmoid(logit(p) / T).

    Computed as ``sigmoid(logit(p) / T)``, which stays exact at p = 0 and p = 1 (logit is
    -inf / +inf there) where the power form underflows. T = 1 returns p; T -> 0 sends p > 0.5
    to 1 and p < 0.5 to 0; p = 0.5 is a fixed point. ``p`` in [0, 1], any shape.
    """
    return sharpen_logits(torch.logit(p), temperature)


def averaged_view_probabilities(
    predict_logits: PredictLogits,
    patches: torch.Tensor,
    transforms: Sequence[SpatialTransform],
) -> list[torch.Tensor]:
    """Mean over the K views of the per-anchor probabilities, on the original anchor grid.

    Args:
        predict_logits: the detector's classification branch, see :data:`PredictLogits`.
        patches: (B, 1, D, H, W) unlabeled patches.
        transforms: the K group elements, the same K for every patch of the batch.

    Returns:
        per level, p_bar of shape (B, A, D_l, H_l, W_l) (unsharpened, for notebooks and
        for :func:`predict_anchor_targets`).

    The views are stacked view-major into one batch (K * B, 1, D, H, W): rows
    k * B .. (k + 1) * B - 1 hold g_k of the B patches. The mapping back is exact only when
    every level's stride divides the patch sides; a level map whose sides do not divide the
    patch sides raises ``ValueError``. ``predict_logits`` is called as given: the caller
    decides the model's train / eval mode (batch-norm statistics) for the guess.
    """
    with torch.no_grad():
        level_logits = predict_logits(_stacked_views(patches, transforms))
        return [_mean_back(torch.sigmoid(logits), transforms, patches) for logits in level_logits]


def averaged_view_predictions(
    predict: PredictOutputs,
    patches: torch.Tensor,
    transforms: Sequence[SpatialTransform],
    delta_weights: Sequence[float],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean over the K views of the probabilities and of the box deltas, on the original anchor grid.

    As :func:`averaged_view_probabilities` (same views, same p_bar), and besides, per level,

        t_bar = (1 / K) sum_k Q_k^-1 g_k^-1( t(g_k(x)) )        (B, A, 6, D_l, H_l, W_l),

    where g_k^-1 brings view k's delta map back to the original anchor grid and
    Q_k^-1 = :func:`delta_inverse_matrix` turns deltas read in view k's axes into deltas in
    the patch's axes. For cubic anchors and a coder that scales each delta by a fixed weight
    (``delta_weights``, six floats, the order of the deltas), the pair is exact for all 16
    views, so every view's box at an anchor is the same box and their deltas may be averaged.
    """
    with torch.no_grad():
        level_logits, level_deltas = predict(_stacked_views(patches, transforms))
        probabilities = [_mean_back(torch.sigmoid(logits), transforms, patches) for logits in level_logits]
        inverse = [delta_inverse_matrix(transform, delta_weights) for transform in transforms]
        deltas = [_mean_back(level, transforms, patches, inverse) for level in level_deltas]
    return probabilities, deltas


def delta_inverse_matrix(transform: SpatialTransform, delta_weights: Sequence[float]) -> torch.Tensor:
    """The (6, 6) float64 matrix that maps box deltas read in a view's axes back to the patch's axes.

    The coder's deltas of a box against a cubic anchor of side s are
    ``t_c = W_c (c - c_a) / s`` and ``t_s = W_s log(sides / s)``, with W the diagonal of
    ``delta_weights`` (z, y, x centre; d, h, w size). The view g = (M, c) moves the centre offset
    by M (:meth:`SpatialTransform.linear_part`, a signed permutation) and permutes the sides
    by |M|, so the view's deltas are ``t'_c = W_c M W_c^-1 t_c``, ``t'_s = W_s |M| W_s^-1 t_s``;
    the inverse uses ``M^-1 = M^T``. Exact (up to float rounding of the weights' ratios).
    """
    weights = torch.tensor([float(w) for w in delta_weights], dtype=torch.float64)
    if weights.shape != (6,) or not bool((weights > 0).all()):
        raise ValueError(f"delta_weights must be six positive numbers, got {list(delta_weights)}")
    back = transform.linear_part().T
    inverse = torch.zeros(6, 6, dtype=torch.float64)
    inverse[:3, :3] = back
    inverse[3:, 3:] = back.abs()
    return weights[:, None] * inverse / weights[None, :]


def _stacked_views(patches: torch.Tensor, transforms: Sequence[SpatialTransform]) -> torch.Tensor:
    """The K views of the B patches, view-major: (K * B, 1, D, H, W)."""
    if patches.dim() != 5 or patches.shape[1] != 1:
        raise ValueError(f"patches must be (B, 1, D, H, W), got {tuple(patches.shape)}")
    if not transforms:
        raise ValueError("target prediction needs at least one transform (K >= 1)")
    return torch.cat([transform.apply(patches) for transform in transforms], dim=0)


def _mean_back(
    maps: torch.Tensor,
    transforms: Sequence[SpatialTransform],
    patches: torch.Tensor,
    channel_maps: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean over the views of one level's maps (K * B, A, [C,] D_l, H_l, W_l), each brought back
    with g_k^-1 and, for box deltas, with its (C, C) matrix from ``channel_maps`` (on dim 2)."""
    batch = patches.shape[0]
    _check_level_map(maps, len(transforms) * batch, tuple(patches.shape[2:]))
    back = []
    for k, (transform, view) in enumerate(zip(transforms, maps.split(batch, dim=0))):
        view = transform.invert(view)
        if channel_maps is not None:
            view = torch.einsum("ij,bajdhw->baidhw", channel_maps[k].to(view), view)
        back.append(view)
    return torch.stack(back, dim=0).mean(dim=0)


def predict_anchor_targets(
    predict_logits: PredictLogits,
    patches: torch.Tensor,
    transforms: Sequence[SpatialTransform],
    temperature: float,
) -> list[torch.Tensor]:
    """Soft per-anchor targets q = Sharpen(p_bar, T) for unlabeled patches (paper sec. 3.2).

    Shapes as in :func:`averaged_view_probabilities`: patches (B, 1, D, H, W) in, per level
    (B, A, D_l, H_l, W_l) out, values in [0, 1], no gradient.
    """
    _check_temperature(temperature)
    return [sharpen(p_bar, temperature) for p_bar in averaged_view_probabilities(predict_logits, patches, transforms)]


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"the sharpening temperature T must be > 0, got {temperature}")


def _check_level_map(logits: torch.Tensor, rows: int, patch_shape: tuple[int, ...]) -> None:
    if logits.dim() not in (5, 6) or logits.shape[0] != rows:
        raise ValueError(f"a level's map must be ({rows}, A, [6,] D_l, H_l, W_l), got {tuple(logits.shape)}")
    for side, level_side in zip(patch_shape, logits.shape[-3:]):
        if side % level_side:
            raise ValueError(
                f"patch shape {patch_shape} is not a multiple of level map shape {tuple(logits.shape[2:])}: "
                "flips would not map anchors onto anchors; choose patch sides divisible by the largest stride"
            )
