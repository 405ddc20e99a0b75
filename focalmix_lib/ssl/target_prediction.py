"""Anchor-level target prediction for unlabeled patches (FocalMix, sec. 3.2).

For an unlabeled patch x the detector predicts per-anchor probabilities on K transformed
copies g_1(x), ..., g_K(x); each map is brought back to the original anchor grid with
g_k^-1, the K maps are averaged and every anchor is sharpened:

    p_bar = (1 / K) sum_k g_k^-1( sigmoid(f(g_k(x))) ),        q = Sharpen(p_bar, T).

The K views run as one batch in one forward pass without gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from focalmix_lib.ssl.transforms import SpatialTransform

PredictLogits = Callable[[torch.Tensor], Sequence[torch.Tensor]]
"""``predict_logits(patches (N, 1, D, H, W)) -> per-level class logits [(N, A, D_l, H_l, W_l), ...]``."""


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
    if patches.dim() != 5 or patches.shape[1] != 1:
        raise ValueError(f"patches must be (B, 1, D, H, W), got {tuple(patches.shape)}")
    if not transforms:
        raise ValueError("target prediction needs at least one transform (K >= 1)")
    batch, num_views = patches.shape[0], len(transforms)
    with torch.no_grad():
        views = torch.cat([transform.apply(patches) for transform in transforms], dim=0)
        level_logits = predict_logits(views)
        averaged = []
        for logits in level_logits:
            _check_level_map(logits, num_views * batch, tuple(patches.shape[2:]))
            probabilities = torch.sigmoid(logits).split(batch, dim=0)
            back = [transform.invert(view) for transform, view in zip(transforms, probabilities)]
            averaged.append(torch.stack(back, dim=0).mean(dim=0))
    return averaged


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
    if logits.dim() != 5 or logits.shape[0] != rows:
        raise ValueError(f"a level's logits must be ({rows}, A, D_l, H_l, W_l), got {tuple(logits.shape)}")
    for side, level_side in zip(patch_shape, logits.shape[2:]):
        if side % level_side:
            raise ValueError(
                f"patch shape {patch_shape} is not a multiple of level map shape {tuple(logits.shape[2:])}: "
                "flips would not map anchors onto anchors; choose patch sides divisible by the largest stride"
            )
