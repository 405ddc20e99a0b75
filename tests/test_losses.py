"""Focal and soft-target focal loss (paper eq. 9) against their formulas; smooth L1."""

from __future__ import annotations

import itertools

import pytest
import torch

from focalmix_lib.losses import box_regression_loss, focal_loss, soft_focal_loss

ALPHA0, ALPHA1, GAMMA = 0.25, 0.75, 2.0


def _inputs(seed: int = 0, count: int = 2000):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, generator=generator, dtype=torch.float64) * 5
    soft = torch.rand(count, generator=generator, dtype=torch.float64)
    return logits, soft


def _reference(logits, y, alpha0, alpha1, gamma, alpha_label, beta_label):
    """Eq. (9) written out in float64: [a0 + l (a1 - a0)] |b - p|^gamma (-y log p - (1 - y) log(1 - p))."""
    p = torch.sigmoid(logits.double())
    y = y.double()
    cross_entropy = -y * torch.log(p) - (1 - y) * torch.log(1 - p)
    return (alpha0 + alpha_label * (alpha1 - alpha0)) * (beta_label - p).abs() ** gamma * cross_entropy


@pytest.mark.parametrize("soft_alpha,soft_beta", list(itertools.product([True, False], repeat=2)))
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_soft_focal_loss_variants_match_their_definitions(soft_alpha, soft_beta, gamma):
    logits, y = _inputs()
    hard = (y >= 0.5).double()
    expected = _reference(logits, y, ALPHA0, ALPHA1, gamma,
                          y if soft_alpha else hard, y if soft_beta else hard)
    got64 = soft_focal_loss(logits, y, ALPHA0, ALPHA1, gamma, soft_alpha=soft_alpha, soft_beta=soft_beta)
    assert torch.allclose(got64, expected, rtol=1e-10, atol=1e-12)
    got32 = soft_focal_loss(logits.float(), y.float(), ALPHA0, ALPHA1, gamma,
                            soft_alpha=soft_alpha, soft_beta=soft_beta)
    assert got32.dtype == torch.float32
    assert torch.allclose(got32.double(), expected, rtol=1e-4, atol=1e-6)


def test_focal_loss_matches_lin_et_al():
    logits, y = _inputs(1)
    hard = (y >= 0.5).double()
    p = torch.sigmoid(logits)
    p_t = torch.where(hard == 1, p, 1 - p)
    alpha_t = torch.where(hard == 1, torch.full_like(p, ALPHA1), torch.full_like(p, ALPHA0))
    expected = -alpha_t * (1 - p_t) ** GAMMA * torch.log(p_t)
    assert torch.allclose(focal_loss(logits, hard, ALPHA0, ALPHA1, GAMMA), expected, rtol=1e-10)


@pytest.mark.parametrize("soft_alpha,soft_beta", list(itertools.product([True, False], repeat=2)))
def test_hard_targets_give_the_focal_loss(soft_alpha, soft_beta):
    logits, y = _inputs(2)
    hard = (y >= 0.5).float()
    for gamma in (0.0, 1.0, 2.0):
        soft = soft_focal_loss(logits.float(), hard, ALPHA0, ALPHA1, gamma, soft_alpha=soft_alpha, soft_beta=soft_beta)
        assert torch.allclose(soft, focal_loss(logits.float(), hard, ALPHA0, ALPHA1, gamma), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_finite_values_and_gradients_at_extreme_logits(dtype, gamma):
    logits = torch.tensor([-100.0, 100.0] * 5, dtype=dtype)
    targets = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.3, 0.3, 0.5, 0.5, 0.99, 0.99], dtype=dtype)
    for soft_alpha, soft_beta in itertools.product([True, False], repeat=2):
        z = logits.clone().requires_grad_(True)
        loss = soft_focal_loss(z, targets, ALPHA0, ALPHA1, gamma, soft_alpha, soft_beta)
        loss.sum().backward()
        assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
        # The confidently wrong anchors cost about alpha * 100 (the cross-entropy is linear in the logit).
        assert loss[1].item() > 20 and loss[2].item() > 20
    z = logits.clone().requires_grad_(True)
    hard = (targets >= 0.5).to(dtype)
    focal = focal_loss(z, hard, ALPHA0, ALPHA1, gamma)
    focal.sum().backward()
    assert torch.isfinite(focal).all() and torch.isfinite(z.grad).all()


def test_reductions():
    logits, y = _inputs(3, 50)
    per_anchor = soft_focal_loss(logits, y, ALPHA0, ALPHA1, GAMMA)
    assert torch.allclose(soft_focal_loss(logits, y, ALPHA0, ALPHA1, GAMMA, reduction="sum"), per_anchor.sum())
    assert torch.allclose(soft_focal_loss(logits, y, ALPHA0, ALPHA1, GAMMA, reduction="mean"), per_anchor.mean())
    with pytest.raises(ValueError, match="reduction"):
        soft_focal_loss(logits, y, ALPHA0, ALPHA1, GAMMA, reduction="max")


def test_box_regression_loss_is_smooth_l1_summed_over_coordinates():
    generator = torch.Generator().manual_seed(4)
    pred = torch.randn(30, 6, generator=generator, dtype=torch.float64) * 0.3
    target = torch.randn(30, 6, generator=generator, dtype=torch.float64) * 0.3
    beta = 1.0 / 9
    d = (pred - target).abs()
    expected = torch.where(d < beta, 0.5 * d ** 2 / beta, d - 0.5 * beta).sum(dim=1)
    assert torch.allclose(box_regression_loss(pred, target), expected)
    assert torch.allclose(box_regression_loss(pred, target, reduction="sum"), expected.sum())
    assert box_regression_loss(target, target, reduction="sum").item() == 0.0
