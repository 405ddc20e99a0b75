"""Frozen-dataclass configs: presets, overrides by name, YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from focalmix_lib.config import from_preset, load_yaml, parse_overrides, replace_fields, save_yaml
from focalmix_lib.training.config import TrainConfig


def test_presets_change_only_their_fields() -> None:
    quick = from_preset(TrainConfig, "quick")
    assert quick.patch_size == 32 and quick.model_preset == "quick"
    assert from_preset(TrainConfig, "standard") == TrainConfig()
    with pytest.raises(ValueError, match="unknown preset"):
        from_preset(TrainConfig, "huge")


def test_overrides_are_parsed_and_coerced() -> None:
    values = parse_overrides(["gamma=1", "soft_alpha=false", "test_subsets=[7, 8]", "image_mixup=null"])
    cfg = replace_fields(TrainConfig(), values)
    assert cfg.gamma == 1.0 and isinstance(cfg.gamma, float)
    assert cfg.soft_alpha is False and cfg.test_subsets == (7, 8) and cfg.image_mixup is None
    for bad in (["steps=1.5"], ["soft_beta=yes please"], ["gamma"]):
        with pytest.raises(ValueError):
            replace_fields(TrainConfig(), parse_overrides(bad))


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = from_preset(TrainConfig, "paper", method="focalmix", test_subsets=(3,)).resolved()
    save_yaml(cfg, tmp_path / "config.yaml")
    assert load_yaml(TrainConfig, tmp_path / "config.yaml") == cfg
