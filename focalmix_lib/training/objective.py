"""The training objective of one step: targets, MixUp, soft-target focal loss, box loss.

One function serves every method of the paper's tables:

* supervised (Table 1, "0 unlabeled"): labeled patches, hard anchor targets; the
  soft-target focal loss then equals the focal loss;
* supervised with MixUp (Table 4): the same patches, image- and object-level MixUp;
* FocalMix: labeled + unlabeled patches; unlabeled targets from anchor-level target
  prediction (K views, inverse transforms, average, sharpen); MixUp over the whole
  batch; the soft-target focal loss on every anchor.

Box regression is trained only where a real annotation stands behind the target:
on the positive anchors of *labeled* patches, against their own annotations. With
``l = max(lambda, 1 - lambda) >= 0.5`` a mixed patch is dominated by its own image, so
its own nodules stay where the annotation says; the partner's nodules (weight <= 0.5)
and predicted boxes of unlabeled patches get no box target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from focalmix_lib.detection.anchors import flatten_levels
from focalmix_lib.detection.boxes import nms_3d
from focalmix_lib.detection.matching import build_batch_targets
from focalmix_lib.detection.model import DetectorOutput
from focalmix_lib.detection.protocol import Detector
from focalmix_lib.losses import box_regression_loss, soft_focal_loss
from focalmix_lib.ssl.mixup import image_mixup, mixup_lambda, mixup_valid_mask, object_mixup
from focalmix_lib.ssl.target_prediction import averaged_view_predictions, predict_anchor_targets, sharpen
from focalmix_lib.ssl.transforms import random_transforms
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import Batch

# Object MixUp takes at most this many confident predicted boxes per unlabeled patch.
MAX_PREDICTED_OBJECTS = 4


@dataclass(frozen=True)
class StepLosses:
    """The loss of one step and its parts (``total`` carries the gradient)."""

    total: Tensor
    labeled: float
    unlabeled: float
    box: float
    unlabeled_weight: float
    mixup_lambda: float


def unlabeled_weight(step: int, cfg: TrainConfig) -> float:
    """Weight of the unlabeled loss: a linear ramp from 0 to ``unlabeled_weight`` over ``rampup_steps``."""
    if cfg.rampup_steps <= 0:
        return cfg.unlabeled_weight
    return cfg.unlabeled_weight * min(1.0, step / cfg.rampup_steps)


def classification_loss(logits: Tensor, targets: Tensor, valid: Tensor, cfg: TrainConfig) -> Tensor:
    """Soft-target focal loss summed over valid anchors, divided by the (soft) positive count.

    ``logits``, ``targets``, ``valid``: (B, N). As in RetinaNet the sum is normalised by
    the number of positives; with soft targets that is their sum, at least 1.
    """
    loss = soft_focal_loss(logits, targets, cfg.alpha0, cfg.alpha1, cfg.gamma,
                           soft_alpha=cfg.soft_alpha, soft_beta=cfg.soft_beta)
    return (loss * valid).sum() / (targets * valid).sum().clamp_min(1.0)


def confident_boxes(boxes: Tensor, probabilities: Tensor, threshold: float) -> list[Tensor]:
    """Predicted objects of unlabeled patches for object MixUp.

    ``boxes`` (B, N, 6): each anchor's predicted box (the decoded, view-averaged box deltas,
    or the anchor cube itself with ``object_boxes="anchors"``); ``probabilities`` (B, N): the
    averaged, sharpened anchor predictions. The boxes of anchors above ``threshold``, after
    NMS (IoU 0.1) by probability, at most :data:`MAX_PREDICTED_OBJECTS`. Returns per patch
    a (M_b, 6) tensor.
    """
    objects = []
    for patch_boxes, scores in zip(boxes, probabilities):
        above = torch.nonzero(scores > threshold).squeeze(1)
        keep = nms_3d(patch_boxes[above], scores[above], iou_threshold=0.1, max_kept=MAX_PREDICTED_OBJECTS)
        objects.append(patch_boxes[above[keep]])
    return objects


def predicted_targets(detector: Detector, anchors: Tensor, patches: Tensor, cfg: TrainConfig,
                      generator: torch.Generator, with_boxes: bool) -> tuple[Tensor, Tensor]:
    """Anchor-level target prediction for unlabeled patches (B, 1, D, H, W), without gradient.

    Returns the sharpened targets q (B, N) and each anchor's predicted box (B, N, 6). With
    ``with_boxes`` the box head runs on the K views too, its deltas are averaged over them
    (exactly, :func:`averaged_view_predictions`) and decoded at the anchors; without it only
    the class branch runs and the boxes are the anchor cubes.
    """
    views = random_transforms(cfg.augmentations, generator)
    if not with_boxes:
        def predict_logits(images: Tensor) -> list[Tensor]:
            return [logits.float() for logits in detector.classify(images)]

        guessed = flatten_levels(predict_anchor_targets(predict_logits, patches, views, cfg.temperature))
        return guessed, anchors.expand(patches.shape[0], -1, -1)

    def predict(images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        output = detector(images)
        return [logits.float() for logits in output.cls_logits], [deltas.float() for deltas in output.box_deltas]

    probabilities, deltas = averaged_view_predictions(predict, patches, views, detector.box_coder.weights)
    guessed = flatten_levels([sharpen(p_bar, cfg.temperature) for p_bar in probabilities])
    return guessed, detector.box_coder.decode(anchors, flatten_levels(deltas))


def total_objective(loss_labeled: Tensor, loss_box: Tensor, loss_unlabeled: Tensor, weight: float,
                    cfg: TrainConfig) -> Tensor:
    """The loss one step minimises (docs/method.md, "The objective")::

        L = L_SFL(labeled) + lambda_box * L_box(labeled) + w(t) * L_SFL(unlabeled)

    ``L_SFL`` is :func:`classification_loss` (eq. 9 over the anchors), ``L_box`` the
    smooth-L1 box loss on the positive anchors of labeled patches, ``w(t)`` the ramped
    :func:`unlabeled_weight` (0 for supervised runs). All terms are scalars.
    """
    return loss_labeled + cfg.box_loss_weight * loss_box + weight * loss_unlabeled


def step_losses(detector: Detector, batch: Batch, cfg: TrainConfig, step: int, generator: torch.Generator,
                forward: Callable[[Tensor], DetectorOutput] | None = None) -> StepLosses:
    """Losses of one training step (``cfg`` must be :meth:`TrainConfig.resolved`).

    1. match the labeled boxes to the detector's anchors (hard targets);
    2. FocalMix: predict the unlabeled patches' anchor targets over K views (sec. 3.2);
    3. image-level MixUp of images and targets over the whole batch (eq. 10-13), then
       object-level MixUp of annotated and confidently predicted objects (sec. 3.3); both
       from step ``cfg.mixup_start_step`` on (a supervised burn-in; 0 = the paper);
    4. forward the mixed batch and combine the losses with :func:`total_objective`.

    ``forward`` is the training forward (a DistributedDataParallel wrapper of
    ``detector``, say); target prediction uses ``detector`` without gradient (only
    ``detector.classify`` when no predicted boxes are needed).
    ``generator`` draws every random choice of the step (views, lambda, partners), so a
    step is reproducible from ``(seed, step)``.
    """
    forward = forward or detector
    labeled_images, unlabeled_images = batch.labeled, batch.unlabeled
    n_labeled = labeled_images.shape[0]
    anchors = detector.anchors(tuple(labeled_images.shape[-3:]), labeled_images.device)
    targets = build_batch_targets(anchors, [b.to(anchors) for b in batch.boxes], detector.box_coder,
                                  detector.positive_iou, detector.negative_iou)
    images, soft_targets, valid = labeled_images, targets.cls_target, targets.valid
    objects = list(batch.boxes)
    mixing = step >= cfg.mixup_start_step  # after the supervised burn-in (docs/method.md, departures)
    if unlabeled_images is not None:
        with_boxes = bool(cfg.object_mixup) and mixing and cfg.object_boxes == "predicted"
        guessed, boxes = predicted_targets(detector, anchors, unlabeled_images, cfg, generator, with_boxes)
        images = torch.cat([images, unlabeled_images])
        soft_targets = torch.cat([soft_targets, guessed])
        valid = torch.cat([valid, torch.ones_like(guessed, dtype=torch.bool)])
        objects += confident_boxes(boxes, guessed, cfg.object_confidence)

    lam = 1.0
    if cfg.image_mixup and mixing:
        lam = mixup_lambda(cfg.eta, generator)
        permutation = torch.randperm(images.shape[0], generator=generator).to(images.device)
        images, soft_targets = image_mixup(images, soft_targets, lam, permutation)
        valid = mixup_valid_mask(valid, permutation)
    if cfg.object_mixup and mixing:
        lam = mixup_lambda(cfg.eta, generator) if not cfg.image_mixup else lam
        images = object_mixup(images, objects, lam, generator)

    output = forward(images)
    logits = flatten_levels(output.cls_logits).float()
    deltas = flatten_levels(output.box_deltas).float()

    loss_labeled = classification_loss(logits[:n_labeled], soft_targets[:n_labeled], valid[:n_labeled], cfg)
    positive = targets.positive
    box = (box_regression_loss(deltas[:n_labeled][positive], targets.box_target[positive]).sum()
           / positive.sum().clamp_min(1))
    weight, loss_unlabeled = 0.0, torch.zeros((), device=logits.device)
    if unlabeled_images is not None:
        weight = unlabeled_weight(step, cfg)
        loss_unlabeled = classification_loss(logits[n_labeled:], soft_targets[n_labeled:], valid[n_labeled:], cfg)
    total = total_objective(loss_labeled, box, loss_unlabeled, weight, cfg)
    return StepLosses(total, loss_labeled.item(), loss_unlabeled.item(), box.item(), weight, lam)
