"""What training and inference need of a detector, written down.

:class:`~focalmix_lib.detection.model.FPNDetector` is the kit's detector; any other
one-stage anchor detector that offers these members can be trained by the FocalMix
engine and run by whole-scan inference unchanged.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from focalmix_lib.detection.boxes import BoxCoder
from focalmix_lib.detection.model import DetectorOutput


@runtime_checkable
class Detector(Protocol):
    """A one-stage anchor detector on cubic patches.

    * ``detector(images (B, 1, D, H, W))`` -> per-level class logits ``(B, A, D_l, H_l, W_l)``
      and box deltas ``(B, A, 6, D_l, H_l, W_l)``;
    * ``classify(images)``: the class logits alone (target prediction needs no boxes);
    * ``anchors(patch_shape, device)``: the anchors ``(N, 6)`` of a patch, in the order of
      :func:`~focalmix_lib.detection.anchors.flatten_levels`; every flip and axial
      rotation of the patch maps them onto themselves;
    * ``box_coder``: the coder shared by training targets and inference decoding;
    * ``positive_iou`` / ``negative_iou``: the matching thresholds of its anchors.
    """

    box_coder: BoxCoder

    def __call__(self, images: Tensor) -> DetectorOutput: ...

    def classify(self, images: Tensor) -> list[Tensor]: ...

    def anchors(self, patch_shape_zyx: tuple[int, int, int], device: torch.device | str = "cpu") -> Tensor: ...

    @property
    def positive_iou(self) -> float: ...

    @property
    def negative_iou(self) -> float: ...
