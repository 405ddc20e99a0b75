"""AnoGAN / f-AnoGAN: the paper's loss and score definitions, the mapping, ROC AUC."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.data.coordinates import ScanGeometry, world_to_voxel
from focalmix_lib.related import anogan


def test_anomaly_score_is_the_convex_combination_of_eq_5():
    r, d = torch.tensor([10.0, 0.0, 3.0]), torch.tensor([2.0, 5.0, 3.0])
    assert torch.allclose(anogan.anomaly_score(r, d), 0.9 * r + 0.1 * d)
    assert torch.allclose(anogan.anomaly_score(r, d, lam=0.0), r)
    assert torch.allclose(anogan.anomaly_score(r, d, lam=1.0), d)
    assert anogan.anomaly_score(torch.tensor(100.0), torch.tensor(20.0), lam=0.25).item() == pytest.approx(80.0)


def test_residual_and_discrimination_losses_are_per_patch_l1_sums():
    x = torch.zeros(2, 1, 2, 2)
    g = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]], [[[0.0, 0.0], [0.0, 3.0]]]])
    assert anogan.residual_loss(x, g).tolist() == [3.5, 3.0]
    fx, fg = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 4.0, 3.5]])
    assert anogan.discrimination_loss(fx, fg).tolist() == [3.5]


def test_izif_loss_is_mean_squared_image_plus_kappa_mean_squared_features():
    x, rec = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 1.0], [2.0, 0.0]]]])
    fx, frec = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 1.0]])
    # image: (1 + 1 + 4 + 0) / 4 = 1.5; features: (9 + 1) / 2 = 5
    assert anogan.izif_loss(x, rec, fx, frec, kappa=1.0).item() == pytest.approx(6.5)
    assert anogan.izif_loss(x, rec, fx, frec, kappa=0.5).item() == pytest.approx(4.0)


def _pairwise_auc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    labels = rng.integers(0, 2, 40)
    assert anogan.roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels))
    assert anogan.roc_auc([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1]) == 1.0
    assert anogan.roc_auc([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 1]) == 0.0
    assert anogan.roc_auc([1.0, 1.0], [0, 1]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        anogan.roc_auc([0.1, 0.2], [1, 1])


def test_roc_curve_area_equals_roc_auc():
    rng = np.random.default_rng(1)
    scores, labels = rng.normal(size=50).round(1), rng.integers(0, 2, 50)
    fpr, tpr = anogan.roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(anogan.roc_auc(scores, labels))


@pytest.fixture(scope="module")
def tiny_model():
    config = from_preset(anogan.AnoGANConfig, "quick", latent_dim=8, width=4, gan_epochs=1, encoder_epochs=1,
                         batch_size=8, mapping_steps=8)
    patches = torch.rand(16, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    model = anogan.train_dcgan(patches, config, seed=0, progress=False)
    return anogan.train_izif_encoder(model, patches, seed=0, progress=False)


def test_training_freezes_the_networks_and_records_history(tiny_model):
    assert len(tiny_model.history["d_loss"]) == len(tiny_model.history["izif_loss"]) == 1
    nets = (tiny_model.generator, tiny_model.discriminator, tiny_model.encoder)
    assert all(not p.requires_grad for net in nets for p in net.parameters())
    assert tiny_model.generator(torch.zeros(3, 8)).shape == (3, 1, 64, 64)


def test_discriminator_features_do_not_depend_on_the_batch(tiny_model):
    x = torch.rand(4, 1, 64, 64)
    disc = tiny_model.discriminator
    assert torch.allclose(disc.features(x)[1:2], disc.features(x[1:2]), atol=1e-6)


def test_iterative_mapping_lowers_the_score_and_reports_consistent_terms(tiny_model):
    x = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    result = anogan.iterative_mapping(tiny_model, x, seed=0)
    assert result.trace.shape == (8, 5)
    assert torch.all(result.score < result.trace[0])
    assert torch.allclose(result.residual_map, (x - result.generated).abs())
    assert torch.allclose(result.residual, anogan.residual_loss(x, result.generated))
    assert torch.allclose(result.score, anogan.anomaly_score(result.residual, result.discrimination, 0.1))
    # Patches are mapped independently: changing the others leaves patch 0's mapping as it was.
    others_changed = torch.cat([x[:1], torch.rand(4, 1, 64, 64)])
    again = anogan.iterative_mapping(tiny_model, others_changed, seed=0)
    assert torch.allclose(again.z[0], result.z[0], atol=1e-5)


def test_compare_scoring_and_score_patches(tiny_model):
    x = torch.rand(6, 1, 64, 64)
    labels = np.array([0, 0, 0, 1, 1, 1])
    comparison = anogan.compare_scoring(tiny_model, x, labels, batch_size=4, progress=False)
    assert 0.0 <= comparison.encoder_auc <= 1.0 and comparison.iterative_seconds_per_patch > 0
    assert np.allclose(anogan.score_patches(tiny_model, x, "encoder", batch_size=4), comparison.encoder_scores,
                       rtol=1e-5)
    assert np.allclose(anogan.score_patches(tiny_model, x, "iterative", batch_size=4), comparison.iterative_scores,
                       rtol=1e-5)
    with pytest.raises(ValueError, match="unknown scoring method"):
        anogan.score_patches(tiny_model, x, "magic")


def test_scores_to_probability_is_monotone_in_0_1():
    scores = np.array([-5.0, 0.0, 1.0, 2.0, 5.0])
    p = anogan.scores_to_probability(scores, normal_scores=np.array([0.0, 1.0, 2.0]))
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p < 1))
    assert p[2] == pytest.approx(0.5)


def test_candidate_findings_are_world_marks_of_the_voxel_centres():
    geometry = ScanGeometry((40, 50, 60), (-100.0, 20.0, 300.0), (0.7, 0.8, 1.5))
    centres = np.array([[10.0, 20.0, 30.0], [1.5, 2.5, 3.5]])
    table = anogan.candidate_findings(["a", "b"], [centres, centres[:1]], [geometry, geometry],
                                      [np.array([0.2, 0.9]), np.array([0.5])])
    assert table.seriesuid.tolist() == ["a", "a", "b"]
    assert table.value.tolist() == [0.2, 0.9, 0.5]
    assert np.allclose(world_to_voxel(table.world_xyz[:2], geometry), centres)
