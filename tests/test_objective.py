"""The training objective: ramp-up, loss normalisation, predicted objects, the total of one step."""

from __future__ import annotations

import math

import pytest
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.detection.model import DetectorConfig, FPNDetector
from focalmix_lib.losses import soft_focal_loss
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import Batch
from focalmix_lib.training.objective import (
    MAX_PREDICTED_OBJECTS,
    classification_loss,
    confident_boxes,
    predicted_targets,
    step_losses,
    total_objective,
    unlabeled_weight,
)


def test_unlabeled_weight_ramps_up_linearly() -> None:
    cfg = from_preset(TrainConfig, "quick", unlabeled_weight=2.0, rampup_steps=10)
    assert [unlabeled_weight(s, cfg) for s in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]


def test_classification_loss_is_sfl_over_valid_anchors_per_soft_positive() -> None:
    cfg = from_preset(TrainConfig, "quick")
    logits = torch.randn(2, 7, dtype=torch.float64)
    targets = torch.rand(2, 7, dtype=torch.float64)
    valid = torch.rand(2, 7) > 0.3
    expected = (soft_focal_loss(logits, targets, cfg.alpha0, cfg.alpha1, cfg.gamma)[valid].sum()
                / max(1.0, float(targets[valid].sum())))
    assert float(classification_loss(logits, targets, valid, cfg)) == pytest.approx(float(expected))


def test_confident_boxes_keeps_confident_separate_anchors() -> None:
    anchors = torch.tensor([[0, 0, 0, 4, 4, 4], [0, 0, 1, 4, 4, 5], [10, 10, 10, 14, 14, 14]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.85, 0.95], [0.1, 0.2, 0.3]])
    first, second = confident_boxes(anchors.expand(2, -1, -1), scores, threshold=0.8)
    assert torch.equal(first, anchors[[2, 0]])  # the overlapping 0.85 anchor is suppressed
    assert second.shape == (0, 6)
    many = torch.full((1, 3), 0.99)
    assert len(confident_boxes(anchors[None], many, 0.5)[0]) <= MAX_PREDICTED_OBJECTS


def test_confident_boxes_suppresses_predicted_boxes_that_overlap_after_decoding() -> None:
    # anchors 0 and 2 are far apart, but their predicted boxes are the same box: NMS keeps one
    predicted = torch.tensor([[[4, 4, 4, 8, 8, 8], [0, 0, 0, 2, 2, 2], [4, 4, 4, 8, 8, 8]]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.95, 0.85]])
    (kept,) = confident_boxes(predicted, scores, threshold=0.8)
    assert torch.equal(kept, predicted[0, [1, 0]])


def _quick_detector() -> FPNDetector:
    torch.manual_seed(0)
    return FPNDetector(from_preset(DetectorConfig, "quick"))


@pytest.mark.parametrize("log_size", [0.0, math.log(2.0)])
def test_predicted_boxes_are_the_decoded_view_averaged_deltas(log_size: float) -> None:
    """A box head that predicts (0, 0, 0, s, s, s) everywhere: every view sees the same box, so the
    objects are the anchors (s = 0) or the anchors scaled by e^s about their centres; the targets
    equal the class branch's."""
    detector = _quick_detector()
    with torch.no_grad():
        detector.box_head.output.weight.zero_()
        detector.box_head.output.bias.copy_(torch.tensor([0.0, 0.0, 0.0, log_size, log_size, log_size]).repeat(
            detector.config.anchors_per_location))
    cfg = from_preset(TrainConfig, "quick", method="focalmix").resolved()
    patches = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    anchors = detector.anchors((32, 32, 32))
    guessed, boxes = predicted_targets(detector, anchors, patches, cfg, torch.Generator().manual_seed(2), True)
    plain, cubes = predicted_targets(detector, anchors, patches, cfg, torch.Generator().manual_seed(2), False)
    assert torch.equal(guessed, plain) and torch.equal(cubes, anchors.expand(2, -1, -1))
    centres, sides = (anchors[:, :3] + anchors[:, 3:]) / 2, (anchors[:, 3:] - anchors[:, :3]) * math.exp(log_size)
    expected = torch.cat([centres - sides / 2, centres + sides / 2], dim=1)
    torch.testing.assert_close(boxes, expected.expand(2, -1, -1), rtol=1e-6, atol=1e-5)


def test_mixup_waits_for_the_burn_in_and_then_mixes_as_the_paper() -> None:
    detector = _quick_detector()
    generator = torch.Generator().manual_seed(0)
    batch = Batch(torch.rand(2, 1, 32, 32, 32, generator=generator),
                  [torch.tensor([[10.0, 10.0, 10.0, 16.0, 16.0, 16.0]]), torch.zeros((0, 6))])

    def losses(step: int, **overrides: object) -> tuple[float, float]:
        cfg = from_preset(TrainConfig, "quick", **overrides).resolved()
        out = step_losses(detector, batch, cfg, step, torch.Generator().manual_seed(step))
        return out.total.item(), out.mixup_lambda

    burn_in = dict(image_mixup=True, object_mixup=True, mixup_start_step=3)
    assert losses(2, **burn_in) == losses(2, image_mixup=False, object_mixup=False)  # burn-in: no MixUp at all
    after = losses(3, **burn_in)
    assert after == losses(3, image_mixup=True, object_mixup=True) and after[1] < 1.0  # then the paper's step


@pytest.mark.parametrize("overrides", [dict(mixup_start_step=-1), dict(object_boxes="centres")])
def test_config_refuses_bad_mixup_settings(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        from_preset(TrainConfig, "quick", **overrides)


def test_total_objective_is_labeled_plus_weighted_box_and_unlabeled_terms() -> None:
    cfg = from_preset(TrainConfig, "quick", box_loss_weight=0.5)
    labeled, box, unlabeled = torch.tensor(1.25), torch.tensor(0.5), torch.tensor(2.0)
    assert float(total_objective(labeled, box, unlabeled, 0.25, cfg)) == 1.25 + 0.5 * 0.5 + 0.25 * 2.0


@pytest.mark.parametrize("method", ["supervised", "focalmix"])
def test_a_step_minimises_the_total_objective_of_its_logged_parts(method: str) -> None:
    cfg = from_preset(TrainConfig, "quick", method=method, rampup_steps=4).resolved()
    detector = FPNDetector(from_preset(DetectorConfig, "quick"))
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 32, 32, 32, generator=generator)
    boxes = [torch.tensor([[10.0, 10.0, 10.0, 16.0, 16.0, 16.0]]), torch.zeros((0, 6))]
    unlabeled = torch.rand(2, 1, 32, 32, 32, generator=generator) if method == "focalmix" else None
    losses = step_losses(detector, Batch(images, boxes, unlabeled), cfg, step=2, generator=generator)
    assert losses.unlabeled_weight == (0.5 if method == "focalmix" else 0.0)
    expected = losses.labeled + cfg.box_loss_weight * losses.box + losses.unlabeled_weight * losses.unlabeled
    assert losses.total.item() == pytest.approx(expected, rel=1e-6)
    losses.total.backward()  # the total carries the gradient to every head
    assert detector.cls_head.output.weight.grad is not None and detector.box_head.output.weight.grad is not None
