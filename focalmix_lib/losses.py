"""Classification and box losses of the detector: focal, soft-target focal, smooth L1.

All classification losses take logits ``z`` (any shape) and targets of the same
shape, and are computed in log space so that every logit, +-100 included, gives a
finite value and a finite gradient. ``p = sigmoid(z)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def focal_loss(logits: Tensor, targets: Tensor, alpha0: float, alpha1: float, gamma: float,
               reduction: str = "none") -> Tensor:
    """Focal loss (Lin et al. 2017) for hard targets ``y`` in {0, 1}.

        FL = -alpha_t (1 - p_t)^gamma log(p_t),
        p_t = p, alpha_t = alpha1 if y = 1;   p_t = 1 - p, alpha_t = alpha0 if y = 0.

    With ``z_t = z`` for positives and ``-z`` for negatives, ``log p_t =
    logsigmoid(z_t)`` and ``(1 - p_t)^gamma = exp(gamma * logsigmoid(-z_t))``.
    Shapes: ``logits``, ``targets`` ``(...)`` -> ``(...)`` (``reduction="none"``) or a scalar.
    """
    positive = targets >= 0.5
    signed = torch.where(positive, logits, -logits)
    alpha_t = torch.where(positive, torch.full_like(logits, alpha1), torch.full_like(logits, alpha0))
    loss = -alpha_t * torch.exp(gamma * F.logsigmoid(-signed)) * F.logsigmoid(signed)
    return _reduce(loss, reduction)


def _distance_to_target(logits: Tensor, targets: Tensor) -> Tensor:
    """``|y - p|``, written as ``|y sigmoid(-z) - (1 - y) sigmoid(z)|`` to keep precision near 0 and 1."""
    return (targets * torch.sigmoid(-logits) - (1 - targets) * torch.sigmoid(logits)).abs()


def _modulating_factor(logits: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """``|y - p|^gamma``; the base is clamped at the smallest normal float so the gradient stays finite."""
    return _distance_to_target(logits, targets).clamp_min(torch.finfo(logits.dtype).tiny).pow(gamma)


def _cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``CE(y, p) = -y logsigmoid(z) - (1 - y) logsigmoid(-z)``.

    Each term keeps full relative precision, unlike the ``(1 - y) z - logsigmoid(z)``
    form that loses the small losses of confident anchors to cancellation in float32.
    """
    return -targets * F.logsigmoid(logits) - (1 - targets) * F.logsigmoid(-logits)


def soft_focal_loss(logits: Tensor, targets: Tensor, alpha0: float, alpha1: float, gamma: float,
                    soft_alpha: bool = True, soft_beta: bool = True, reduction: str = "none") -> Tensor:
    """Soft-target focal loss, FocalMix eq. (9), for targets ``y`` in [0, 1].

        SFL = [alpha0 + y (alpha1 - alpha0)] * |y - p|^gamma * CE(y, p),
        CE(y, p) = -y log p - (1 - y) log(1 - p)   (computed from logits).

    Ablations (paper Table 3a), with the hardened label ``h = 1 if y >= 0.5 else 0``:
    ``soft_alpha=False`` takes the weight ``alpha0 + h (alpha1 - alpha0)``;
    ``soft_beta=False`` takes the factor ``|h - p|^gamma = (1 - p_t)^gamma``. The
    cross-entropy keeps the soft ``y`` in every variant. For ``y`` in {0, 1} all four
    equal :func:`focal_loss`.
    Shapes: ``logits``, ``targets`` ``(...)`` -> ``(...)`` (``reduction="none"``) or a scalar.
    """
    targets = targets.to(logits.dtype)
    hard = (targets >= 0.5).to(logits.dtype)
    alpha_label = targets if soft_alpha else hard
    beta_label = targets if soft_beta else hard
    alpha = alpha0 + alpha_label * (alpha1 - alpha0)
    cross_entropy = _cross_entropy(logits, targets)
    loss = alpha * _modulating_factor(logits, beta_label, gamma) * cross_entropy
    return _reduce(loss, reduction)


def box_regression_loss(pred_deltas: Tensor, target_deltas: Tensor, beta: float = 1.0 / 9,
                        reduction: str = "none") -> Tensor:
    """Smooth L1 of the box deltas, summed over the six coordinates of each anchor.

        l(d) = 0.5 d^2 / beta  if |d| < beta,  else |d| - 0.5 beta,   d = pred - target.

    ``beta = 1/9`` (Detectron's RetinaNet) makes it L1 beyond a ninth of an anchor
    side (or of a log size ratio). Call it on positive anchors only.
    Shapes: ``(..., 6)`` x ``(..., 6)`` -> ``(...)`` (``reduction="none"``) or a scalar.
    """
    per_coordinate = F.smooth_l1_loss(pred_deltas, target_deltas, beta=beta, reduction="none")
    return _reduce(per_coordinate.sum(dim=-1), reduction)
