"""The one-stage 3D FPN detector (RetinaNet-style) of the paper's base model.

Forward, in four steps:
1. stem: a stride-2 convolution block;
2. backbone: residual stages at strides 2, 4, 8, ... (each after the first halves
   the resolution);
3. FPN: 1x1x1 laterals on the levels that carry heads, top-down nearest upsampling
   and addition, a 3x3x3 smoothing convolution per level;
4. heads shared by all levels: ``head_depth`` conv blocks, then per-anchor logits
   ``(B, A, D_l, H_l, W_l)`` and box deltas ``(B, A, 6, D_l, H_l, W_l)``.

Normalisation is GroupNorm everywhere: it uses no batch statistics and has no
running state, so train and eval mode compute the same function and a patch's
prediction never depends on the other patches of its batch. That is what the
semi-supervised engine needs when it runs K transformed views of unlabeled patches
under ``torch.no_grad()`` without switching the model to eval mode, and it keeps
CPU runs bit-reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from focalmix_lib.detection.anchors import LevelShape, generate_anchors, level_shapes
from focalmix_lib.detection.boxes import BoxCoder


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture, anchors and matching thresholds of :class:`FPNDetector`.

    Defaults are the ``standard`` preset (1.5 mm voxels, 64^3 patches); ``quick``
    is meant for 2.0 mm voxels and 32^3 patches on a 2-core CPU, ``paper`` for
    1.0 mm voxels and 160^3 patches on one GPU. Anchor sides (voxels) cover nodules
    of 3-30 mm at the preset's spacing with a ratio of about 1.6 between neighbours,
    so that a nodule between two sizes still overlaps one of them with IoU ~0.5
    when centred.

    ``stage_channels[i]`` is the width of the residual stage at stride ``2^(i+1)``;
    there is one stage per halving up to ``max(strides)``. ``strides`` are the FPN
    levels that carry heads (finest first); every level has the same number of
    anchor sizes because the heads are shared.

    Matching: ``positive_iou=0.3``, ``negative_iou=0.1`` (ignored in between).
    RetinaNet's 0.5 / 0.4 is too strict for cubes of a few voxels on a stride-4 grid,
    where a centre offset of one or two voxels already halves the IoU; each
    annotation's best anchor is positive anyway.
    """

    in_channels: int = 1
    stem_channels: int = 16
    stage_channels: tuple[int, ...] = (16, 32, 48, 64)
    blocks_per_stage: int = 1
    fpn_channels: int = 48
    strides: tuple[int, ...] = (4, 8, 16)
    anchor_sizes: tuple[tuple[float, ...], ...] = ((2.5, 4.0), (6.5, 10.0), (16.0, 25.0))
    head_depth: int = 2
    norm_groups: int = 8
    prior_probability: float = 0.01
    positive_iou: float = 0.3
    negative_iou: float = 0.1

    PRESETS: ClassVar[dict[str, dict[str, object]]] = {
        # 2.0 mm voxels: nodules of 1.5-15 voxels; 32^3 patches. A stride-2 level:
        # on a stride-4 grid the best anchor of a 3-5 voxel nodule has a median IoU of
        # only 0.35 (about one positive per nodule); at stride 2 it is 0.5 (about 4.5).
        "quick": dict(
            stem_channels=8,
            stage_channels=(16, 24, 32),
            fpn_channels=24,
            strides=(2, 4, 8),
            anchor_sizes=((3.0, 4.5), (6.5, 10.0), (14.0, 20.0)),
            head_depth=1,
            norm_groups=4,
        ),
        # 1.0 mm voxels: nodules of 3-30 voxels; 160^3 patches.
        "paper": dict(
            stem_channels=24,
            stage_channels=(32, 64, 96, 128),
            blocks_per_stage=2,
            fpn_channels=96,
            strides=(4, 8, 16),
            anchor_sizes=((3.0, 5.0), (8.0, 12.5), (20.0, 32.0)),
            head_depth=3,
            norm_groups=8,
        ),
    }

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.anchor_sizes):
            raise ValueError(f"{len(self.strides)} strides but {len(self.anchor_sizes)} anchor-size levels")
        if len({len(sizes) for sizes in self.anchor_sizes}) != 1:
            raise ValueError(f"every level needs the same number of anchor sizes, got {self.anchor_sizes}")
        if list(self.strides) != sorted(set(self.strides)):
            raise ValueError(f"strides must increase, got {self.strides}")
        for stride in self.strides:
            if stride < 2 or stride & (stride - 1):
                raise ValueError(f"strides must be powers of two >= 2, got {self.strides}")
        if len(self.stage_channels) != int(math.log2(max(self.strides))):
            raise ValueError(
                f"max stride {max(self.strides)} needs {int(math.log2(max(self.strides)))} stage widths, "
                f"got {self.stage_channels}"
            )
        if not 0 < self.prior_probability < 1:
            raise ValueError(f"prior_probability must lie in (0, 1), got {self.prior_probability}")

    @property
    def anchors_per_location(self) -> int:
        return len(self.anchor_sizes[0])


@dataclass
class DetectorOutput:
    """Per-level raw outputs, finest first.

    ``cls_logits[l]``: ``(B, A, D_l, H_l, W_l)``; ``box_deltas[l]``: ``(B, A, 6, D_l, H_l, W_l)``.
    """

    cls_logits: list[Tensor]
    box_deltas: list[Tensor]


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count ``<= groups`` that divides ``channels``."""
    count = max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(count, channels)


class ConvBlock(nn.Sequential):
    """3x3x3 convolution, GroupNorm, ReLU: ``(B, C_in, D, H, W)`` -> ``(B, C_out, D/s, H/s, W/s)``."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            _group_norm(out_channels, groups),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Basic residual block: ``relu(GN(conv(relu(GN(conv(x))))) + shortcut(x))``.

    The shortcut is the identity, or a strided 1x1x1 convolution with GroupNorm when
    the shape changes. ``(B, C_in, D, H, W)`` -> ``(B, C_out, D/s, H/s, W/s)``.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBlock(in_channels, out_channels, groups, stride)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(out_channels, groups)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                _group_norm(out_channels, groups),
            )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))


class Backbone(nn.Module):
    """Stem and residual stages; returns the feature map of every stride ``2^(i+1)``.

    The stem is a strided convolution: nothing runs at full resolution with many
    channels (in 3D that is where most of a step's time would go), so stage 0 works
    at stride 2 without downsampling and every later stage halves the resolution.
    """

    def __init__(self, config: DetectorConfig):
        super().__init__()
        groups = config.norm_groups
        self.stem = ConvBlock(config.in_channels, config.stem_channels, groups, stride=2)
        stages = []
        width = config.stem_channels
        for index, out in enumerate(config.stage_channels):
            blocks = [ResidualBlock(width, out, groups, stride=1 if index == 0 else 2)]
            blocks += [ResidualBlock(out, out, groups) for _ in range(config.blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            width = out
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        features = {}
        x = self.stem(x)
        for index, stage in enumerate(self.stages):
            x = stage(x)
            features[2 ** (index + 1)] = x
        return features


class FeaturePyramid(nn.Module):
    """Top-down FPN over the backbone levels at ``strides``: each output has ``fpn_channels``."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.strides = config.strides
        widths = {2 ** (i + 1): c for i, c in enumerate(config.stage_channels)}
        self.laterals = nn.ModuleList(nn.Conv3d(widths[s], config.fpn_channels, 1) for s in config.strides)
        self.smooth = nn.ModuleList(
            ConvBlock(config.fpn_channels, config.fpn_channels, config.norm_groups) for _ in config.strides
        )

    def forward(self, features: dict[int, Tensor]) -> list[Tensor]:
        merged: list[Tensor] = []
        top: Tensor | None = None
        for stride, lateral in zip(reversed(self.strides), reversed(self.laterals)):
            x = lateral(features[stride])
            if top is not None:
                x = x + F.interpolate(top, size=x.shape[2:], mode="nearest")
            merged.append(x)
            top = x
        merged.reverse()
        return [smooth(x) for smooth, x in zip(self.smooth, merged)]


class DetectionHead(nn.Module):
    """``depth`` conv blocks and a 3x3x3 output convolution, shared across levels."""

    def __init__(self, channels: int, outputs: int, depth: int, groups: int, bias: float = 0.0):
        super().__init__()
        self.tower = nn.Sequential(*(ConvBlock(channels, channels, groups) for _ in range(depth)))
        self.output = nn.Conv3d(channels, outputs, 3, padding=1)
        nn.init.normal_(self.output.weight, std=0.01)
        nn.init.constant_(self.output.bias, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.tower(x))


class FPNDetector(nn.Module):
    """Residual 3D backbone + FPN + shared classification and box heads.

    ``forward(x (B, in_channels, D, H, W))`` -> :class:`DetectorOutput`; every side
    of the input must be divisible by ``max(config.strides)``. The classification
    bias starts at ``-log((1 - prior) / prior)`` so that every anchor first predicts
    ``prior_probability`` (RetinaNet), which keeps the early focal loss from being
    swamped by the many easy negatives. ``box_coder`` is the coder that training
    targets and inference decoding share.
    """

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        anchors = config.anchors_per_location
        prior = config.prior_probability
        self.backbone = Backbone(config)
        self.fpn = FeaturePyramid(config)
        self.cls_head = DetectionHead(
            config.fpn_channels, anchors, config.head_depth, config.norm_groups, bias=-math.log((1 - prior) / prior)
        )
        self.box_head = DetectionHead(config.fpn_channels, anchors * 6, config.head_depth, config.norm_groups)
        self.box_coder = BoxCoder()
        self._anchor_cache: dict[tuple[tuple[int, ...], str], Tensor] = {}

    def classify(self, x: Tensor) -> list[Tensor]:
        """Classification logits only, ``(B, A, D_l, H_l, W_l)`` per level (target prediction
        needs no box deltas, so the box head is skipped)."""
        return [self.cls_head(level) for level in self.fpn(self.backbone(x))]

    def forward(self, x: Tensor) -> DetectorOutput:
        levels = self.fpn(self.backbone(x))
        anchors = self.config.anchors_per_location
        cls_logits = [self.cls_head(level) for level in levels]
        box_deltas = []
        for level in levels:
            batch, _, d, h, w = level.shape
            box_deltas.append(self.box_head(level).view(batch, anchors, 6, d, h, w))
        return DetectorOutput(cls_logits=cls_logits, box_deltas=box_deltas)

    @property
    def positive_iou(self) -> float:
        return self.config.positive_iou

    @property
    def negative_iou(self) -> float:
        return self.config.negative_iou

    def level_shapes(self, patch_shape_zyx: tuple[int, int, int]) -> list[LevelShape]:
        """``(A, D_l, H_l, W_l)`` of every level for a patch of this shape."""
        return level_shapes(patch_shape_zyx, self.config.strides, [len(s) for s in self.config.anchor_sizes])

    def anchors(self, patch_shape_zyx: tuple[int, int, int], device: torch.device | str = "cpu") -> Tensor:
        """Anchors ``(N, 6)`` of a patch of this shape, in the order of :func:`flatten_levels` (cached)."""
        key = (tuple(int(s) for s in patch_shape_zyx), str(torch.device(device)))
        if key not in self._anchor_cache:
            anchors = generate_anchors(key[0], self.config.strides, self.config.anchor_sizes)
            self._anchor_cache[key] = anchors.to(device)
        return self._anchor_cache[key]
