"""The detector of a run: built from its config and seed, on the device it asks for."""

from __future__ import annotations

import torch

from focalmix_lib.config import from_preset
from focalmix_lib.detection.model import DetectorConfig, FPNDetector
from focalmix_lib.training.config import TrainConfig


def build_model(cfg: TrainConfig) -> FPNDetector:
    """The detector of a run, initialised from the run's seed."""
    torch.manual_seed(cfg.seed)
    return FPNDetector(from_preset(DetectorConfig, cfg.model_preset))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
