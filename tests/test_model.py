"""FPNDetector: output shapes per preset, classification prior, GroupNorm behaviour, config."""

from __future__ import annotations

import math

import pytest
import torch

from focalmix_lib.config import from_preset, load_yaml, save_yaml
from focalmix_lib.detection.anchors import flatten_levels
from focalmix_lib.detection.model import DetectorConfig, FPNDetector


def _check_shapes(config: DetectorConfig, side: int, batch: int = 2) -> None:
    torch.manual_seed(0)
    model = FPNDetector(config)
    with torch.no_grad():
        output = model(torch.rand(batch, 1, side, side, side))
    count = config.anchors_per_location
    assert len(output.cls_logits) == len(output.box_deltas) == len(config.strides)
    for stride, logits, deltas in zip(config.strides, output.cls_logits, output.box_deltas):
        cells = side // stride
        assert logits.shape == (batch, count, cells, cells, cells)
        assert deltas.shape == (batch, count, 6, cells, cells, cells)
    anchors = model.anchors((side,) * 3)
    assert flatten_levels(output.cls_logits).shape == (batch, anchors.shape[0])
    assert flatten_levels(output.box_deltas).shape == (batch, anchors.shape[0], 6)
    assert model.anchors((side,) * 3) is anchors  # cached


@pytest.mark.parametrize("preset,side", [("quick", 32), ("standard", 64)])
def test_output_shapes_at_the_preset_patch_size(preset, side):
    _check_shapes(from_preset(DetectorConfig, preset), side)


def test_paper_preset_shapes_at_a_small_input():
    # 160^3 patches are for the GPU; the architecture is the same at 32^3 (largest stride 16).
    _check_shapes(from_preset(DetectorConfig, "paper"), 32, batch=1)


def test_classification_starts_at_the_prior():
    config = from_preset(DetectorConfig, "quick")
    model = FPNDetector(config)
    anchors = config.anchors_per_location
    assert model.cls_head.output.bias.detach().allclose(torch.full((anchors,), -math.log(99.0)))
    with torch.no_grad():
        probabilities = torch.sigmoid(flatten_levels(model(torch.rand(2, 1, 32, 32, 32)).cls_logits))
    assert abs(probabilities.mean().item() - 0.01) < 0.003
    assert probabilities.max().item() < 0.03


def test_group_norm_makes_outputs_independent_of_mode_and_batch():
    torch.manual_seed(1)
    model = FPNDetector(from_preset(DetectorConfig, "quick"))
    patches = torch.rand(3, 1, 32, 32, 32)
    with torch.no_grad():
        together = model(patches).cls_logits[0]
        alone = model(patches[1:2]).cls_logits[0]
        model.eval()
        evaluated = model(patches).cls_logits[0]
    assert torch.allclose(together[1:2], alone, atol=1e-5)
    assert torch.allclose(together, evaluated, atol=1e-6)


def test_config_presets_round_trip_through_yaml(tmp_path):
    for preset in ("quick", "standard", "paper"):
        config = from_preset(DetectorConfig, preset)
        save_yaml(config, tmp_path / f"{preset}.yaml")
        assert load_yaml(DetectorConfig, tmp_path / f"{preset}.yaml") == config
    assert from_preset(DetectorConfig, "standard") == DetectorConfig()


@pytest.mark.parametrize("fields,message", [
    (dict(strides=(4, 8), anchor_sizes=((2.0,),)), "anchor-size levels"),
    (dict(anchor_sizes=((2.0,), (4.0, 8.0), (16.0,))), "same number"),
    (dict(strides=(4, 12, 16)), "powers of two"),
    (dict(stage_channels=(8, 8)), "stage widths"),
])
def test_bad_configs_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        DetectorConfig(**fields)
