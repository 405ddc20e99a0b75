"""BDCL: the supervised contrastive loss, TDL temperatures, HEP prototypes, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from focalmix_lib.config import from_preset
from focalmix_lib.related import bdcl


def _loop_supcon(features, labels, temps, extra=None, extra_labels=None):
    """Khosla et al. eq. 2 written out anchor by anchor; None where no positive."""
    keys = [(features[j], int(labels[j]), j) for j in range(len(features))]
    if extra is not None:
        keys += [(extra[k], int(extra_labels[k]), None) for k in range(len(extra))]
    losses = []
    for i in range(len(features)):
        others = [(k, y) for k, y, j in keys if j != i]
        denominator = sum(math.exp(float(features[i] @ k) / temps[i]) for k, _ in others)
        positives = [k for k, y in others if y == int(labels[i])]
        if not positives:
            losses.append(None)
            continue
        losses.append(-sum(math.log(math.exp(float(features[i] @ p) / temps[i]) / denominator)
                           for p in positives) / len(positives))
    return losses


def _batch(n=7, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def test_supervised_contrastive_loss_matches_a_direct_loop():
    features, labels = _batch(), torch.tensor([0, 1, 0, 2, 1, 0, 2])
    expected = np.mean(_loop_supcon(features, labels, [0.5] * 7))
    assert bdcl.supervised_contrastive_loss(features, labels, 0.5).item() == pytest.approx(expected, rel=1e-10)
    temps = torch.tensor([0.1, 0.2, 0.1, 0.3, 0.2, 0.1, 0.3], dtype=torch.float64)
    expected = np.mean(_loop_supcon(features, labels, temps.tolist()))
    assert bdcl.supervised_contrastive_loss(features, labels, temps).item() == pytest.approx(expected, rel=1e-10)


def test_single_sample_class_gives_no_nan_and_is_left_out_of_the_mean():
    features = _batch(6).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])  # class 2 has one sample
    loss = bdcl.supervised_contrastive_loss(features, labels, 0.2)
    per_anchor = _loop_supcon(features.detach(), labels, [0.2] * 6)
    assert per_anchor[5] is None
    assert loss.item() == pytest.approx(np.mean(per_anchor[:5]), rel=1e-10)
    loss.backward()
    assert torch.isfinite(features.grad).all()


def test_batch_without_any_positive_gives_zero_loss_with_finite_gradient():
    features = _batch(3).requires_grad_(True)
    loss = bdcl.supervised_contrastive_loss(features, torch.tensor([0, 1, 2]), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(features.grad).all()


def test_extra_keys_are_positives_of_their_class_and_in_every_denominator():
    features, labels = _batch(5), torch.tensor([0, 1, 0, 1, 2])
    prototypes, proto_labels = _batch(2, seed=9), torch.tensor([2, 0])
    loss = bdcl.supervised_contrastive_loss(features, labels, 0.3, prototypes, proto_labels)
    per_anchor = _loop_supcon(features, labels, [0.3] * 5, prototypes, proto_labels)
    assert all(v is not None for v in per_anchor)  # class 2's single sample has its prototype
    assert loss.item() == pytest.approx(np.mean(per_anchor), rel=1e-10)


def test_class_temperatures_are_positive_learnable_and_start_at_the_initial_value():
    temps = bdcl.ClassTemperatures(3, initial=0.1, minimum=0.02)
    assert torch.allclose(temps(), torch.full((3,), 0.1))
    with torch.no_grad():
        temps.theta.copy_(torch.tensor([-100.0, 0.0, 100.0]))
    values = temps()
    assert torch.all(values > 0.0) and values[0].item() == pytest.approx(0.02)
    with pytest.raises(ValueError):
        bdcl.ClassTemperatures(3, initial=0.01, minimum=0.02)


def test_tdl_uses_the_temperature_of_each_anchors_class_and_gradients_reach_it():
    loss_fn = bdcl.BDCLLoss(4, 5, temperature=0.1, use_tdl=True, use_hep=False)
    with torch.no_grad():
        loss_fn.class_temperatures.theta.copy_(torch.tensor([0.1, 0.5, 1.0, 2.0]))
    features, labels = _batch(6).float(), torch.tensor([0, 1, 0, 1, 2, 2])  # class 3 absent
    taus = loss_fn.class_temperatures()
    assert torch.equal(loss_fn.anchor_temperatures(labels), taus[labels])
    loss = loss_fn(features, labels)
    expected = bdcl.supervised_contrastive_loss(features, labels, taus[labels].detach())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    grad = loss_fn.class_temperatures.theta.grad
    assert torch.all(grad[:3] != 0) and grad[3] == 0  # only classes with anchors get a gradient


def test_without_tdl_and_hep_bdcl_is_supcon():
    features, labels = _batch(6).float(), torch.tensor([0, 1, 0, 1, 2, 2])
    loss_fn = bdcl.BDCLLoss(3, 5, temperature=0.2, use_tdl=False, use_hep=False)
    assert loss_fn(features, labels).item() == pytest.approx(
        bdcl.supervised_contrastive_loss(features, labels, 0.2).item(), rel=1e-6)
    assert not loss_fn.prototype_ready.any()


def test_prototype_update_is_an_ema_of_the_hardest_samples_of_each_class():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 0, 0, 1])
    hardness = torch.tensor([0.1, 5.0, 0.2, 3.0, 1.0])
    prototypes, ready = torch.zeros(3, 2), torch.zeros(3, dtype=torch.bool)
    new, new_ready = bdcl.update_hard_example_prototypes(prototypes, ready, features, labels, hardness,
                                                         momentum=0.9, hard_fraction=0.5)
    # Class 0: the 2 hardest of 4 are samples 1 and 3 -> mean (-0.5, 0.5), normalised. First update: no EMA.
    assert torch.allclose(new[0], F.normalize(torch.tensor([-0.5, 0.5]), dim=0))
    assert torch.allclose(new[1], torch.tensor([0.0, -1.0]))
    assert new_ready.tolist() == [True, True, False] and torch.equal(new[2], torch.zeros(2))
    assert not ready.any() and torch.equal(prototypes, torch.zeros(3, 2))  # inputs untouched
    # Second update of class 1: EMA with momentum 0.9, then normalised.
    again, _ = bdcl.update_hard_example_prototypes(new, new_ready, torch.tensor([[1.0, 0.0]]), torch.tensor([1]),
                                                   torch.tensor([0.0]), momentum=0.9, hard_fraction=0.5)
    assert torch.allclose(again[1], F.normalize(torch.tensor([0.1, -0.9]), dim=0))
    assert torch.equal(again[0], new[0])


def test_bdcl_loss_updates_prototypes_in_training_only_and_uses_them_as_keys():
    loss_fn = bdcl.BDCLLoss(3, 5, temperature=0.2, use_tdl=False, use_hep=True, momentum=0.5, hard_fraction=0.5)
    features, labels = _batch(6).float(), torch.tensor([0, 0, 1, 1, 1, 2])
    first = loss_fn(features, labels)  # no prototype yet: plain SupCon
    assert first.item() == pytest.approx(bdcl.supervised_contrastive_loss(features, labels, 0.2).item(), rel=1e-6)
    assert loss_fn.prototype_ready.tolist() == [True, True, True]
    # Class 2's only sample has no positive: it is the hardest of its class, so its prototype is itself.
    assert torch.allclose(loss_fn.prototypes[2], features[5], atol=1e-6)
    stored = loss_fn.prototypes.clone()
    loss_fn.eval()
    second = loss_fn(features, labels)
    assert torch.equal(loss_fn.prototypes, stored)
    expected = bdcl.supervised_contrastive_loss(features, labels, 0.2, stored, torch.arange(3))
    assert second.item() == pytest.approx(expected.item(), rel=1e-6)


def test_metrics_against_hand_computed_values():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 0])
    cm = bdcl.confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 1, 1], [2, 0, 2]]
    m = bdcl.classification_metrics(y_true, y_pred, 3)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["g_mean"] == pytest.approx((0.75 * 0.5 * 0.5) ** (1 / 3))
    # F1: class 0: 2*3/(6+2+1)=6/9, class 1: 2/(2+1+1)=0.5, class 2: 4/(4+1+2)=4/7
    assert m["macro_f1"] == pytest.approx((6 / 9 + 0.5 + 4 / 7) / 3)
    # One-vs-rest (TPR, TNR): class 0 (3/4, 4/6), class 1 (1/2, 7/8), class 2 (2/4, 5/6)
    iba = [(1 + 0.1 * (t - n)) * t * n for t, n in ((0.75, 4 / 6), (0.5, 7 / 8), (0.5, 5 / 6))]
    assert m["iba"] == pytest.approx(np.mean(iba))


def test_binary_iba_and_absent_classes():
    assert bdcl.index_of_balanced_accuracy(0.8, 0.6, alpha=0.1) == pytest.approx(1.02 * 0.48)
    assert bdcl.index_of_balanced_accuracy(1.0, 1.0) == 1.0
    # Class 2 never occurs in y_true: it does not enter G-mean, F1 or IBA.
    cm = bdcl.confusion_matrix([0, 0, 1, 1], [0, 2, 1, 1], 3)
    assert bdcl.g_mean(cm) == pytest.approx(math.sqrt(0.5))
    assert bdcl.macro_f1(cm) == pytest.approx((2 / 3 + 1.0) / 2)
    assert np.isnan(bdcl.per_class_recall(cm)[2])


def test_class_balanced_sampling_draws_classes_equally():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    drawn = labels[bdcl.class_balanced_indices(labels, 30000, torch.Generator().manual_seed(0))]
    shares = torch.bincount(drawn, minlength=3) / 30000
    assert torch.allclose(shares, torch.full((3,), 1 / 3), atol=0.02)


def test_augment_applies_one_dihedral_element_per_patch():
    x = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).reshape(2, 2, 3, 3)
    out = bdcl.augment(x, torch.Generator().manual_seed(0))
    for i in range(2):
        images = [torch.rot90(v, k, dims=(-2, -1)) for v in (x[i], x[i].flip(-1)) for k in range(4)]
        assert any(torch.equal(out[i], im) for im in images)


def test_two_stage_training_runs_every_variant_on_a_tiny_set():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 12 + [1] * 3 + [2] * 1)
    patches = torch.rand(16, 3, 16, 16, generator=g) + labels[:, None, None, None]
    config = from_preset(bdcl.BDCLConfig, "quick", width=4, projection_dim=4, representation_epochs=1,
                         classifier_epochs=1, batch_size=8)
    rows, models = bdcl.run_ablation(patches, labels, patches, labels, 3, config, progress=False)
    assert [r["method"] for r in rows] == list(bdcl.LOSS_VARIANTS)
    for row in rows:
        assert all(0.0 <= row[k] <= 1.0 for k in ("accuracy", "g_mean", "macro_f1", "iba"))
    assert models["BDCL"].temperatures.shape == (3,) and np.all(models["BDCL"].temperatures > 0)
    assert models["SupCon"].temperatures is None
    assert all(not p.requires_grad for p in models["CE"].net.backbone.parameters())
    with pytest.raises(ValueError, match="unknown loss variant"):
        bdcl.train_two_stage(patches, labels, 3, "Hinge", config, progress=False)


# ---------------------------------------------------------------- candidate extraction (related/candidates.py)

from focalmix_lib.errors import KitInputError  # noqa: E402
from focalmix_lib.related import candidates  # noqa: E402


def _tube_and_blob_volume():
    z, y, x = np.mgrid[:24, :32, :40].astype(np.float64)
    tube = np.exp(-((z - 6) ** 2 + (y - 8) ** 2) / (2 * 1.5 ** 2))               # along x
    blob = np.exp(-((z - 16) ** 2 + (y - 22) ** 2 + (x - 28) ** 2) / (2 * 2.0 ** 2))
    return (tube + blob).astype(np.float32)


def test_hessian_tells_a_tube_from_a_blob_and_blobs_are_found():
    volume = _tube_and_blob_volume()
    eig = candidates.hessian_eigenvalues(volume, np.array([[6, 8, 20], [16, 22, 28]]))
    assert candidates.is_tubular(eig).tolist() == [True, False]
    points, values = candidates.bright_blob_candidates(volume, np.ones(volume.shape, bool), threshold=0.5)
    assert [16, 22, 28] in points.tolist() and values[0] == pytest.approx(volume.max())


def test_patches_are_centred_on_the_point_and_padded_with_air():
    volume = np.zeros((10, 12, 14), np.float32)
    volume[3, 4, 5] = 1.0
    axial = candidates.axial_patch(volume, np.array([3, 4, 5]), 8)
    assert axial.shape == (8, 8) and axial[4, 4] == 1.0 and axial.sum() == 1.0
    planes = candidates.orthogonal_patches(volume, np.array([3, 4, 5]), 8)
    assert planes.shape == (3, 8, 8) and np.all(planes[:, 4, 4] == 1.0)
    assert candidates.axial_patch(volume, np.array([30, 4, 5]), 8).sum() == 0.0  # outside the volume


def test_nodule_free_patches_and_distances_to_nodules():
    boxes = np.array([[10.0, 10, 10, 14, 14, 14]])  # centre 12, radius 2
    centres = np.array([[12, 12, 30], [12, 12, 50], [20, 12, 12]])
    assert candidates.axial_patch_is_nodule_free(centres, boxes, 32).tolist() == [False, True, True]
    assert candidates.distance_to_nodules(np.array([[12, 12, 22]]), boxes)[0] == pytest.approx(8.0)
    assert np.isinf(candidates.distance_to_nodules(centres, np.zeros((0, 6)))).all()


def test_read_nodule_kinds_names_the_bad_row(tmp_path):
    path = tmp_path / "nodule_kinds.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm,kind,location\n"
                    "a,1,2,3,8.5,solid,isolated\nb,1,2,3,6,calcified,isolated\n")
    with pytest.raises(KitInputError, match="row 3"):
        candidates.read_nodule_kinds(path)
    path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm,kind,location\na,1,2,3,8.5,ground-glass,juxta-pleural\n")
    kinds = candidates.read_nodule_kinds(path)
    assert kinds.kind.tolist() == ["ground-glass"] and kinds.world_xyz.tolist() == [[1.0, 2.0, 3.0]]
