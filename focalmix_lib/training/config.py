"""The configuration of one training run, with the presets ``quick``, ``standard``, ``paper``.

The defaults are the ``standard`` preset. Every field can be overridden by name
(``focalmix train --set gamma=1.5``, a papermill parameter, or ``from_preset``).
Values the paper leaves open are documented where they are set and in docs/method.md
("Numbers the paper does not give"), with the kit's departures from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from focalmix_lib.config import Check, above, at_least, between, check_fields, each, matches, one_of
from focalmix_lib.errors import ConfigError

METHODS = ("supervised", "focalmix")
# len(ssl.transforms.GROUP): the distinct flips/rotations that K views draw from (tests check it).
VIEW_COUNT = 16
LUNA16_SUBSETS = range(10)
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
OBJECT_BOXES = ("predicted", "anchors")


def _model_preset_problem(name: str) -> str | None:
    from focalmix_lib.detection.model import DetectorConfig

    known = ("standard", *DetectorConfig.PRESETS)
    return None if name in known else f"must be one of {', '.join(known)} (DetectorConfig presets)"


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train --------------------------------------------------------
    method: str = "supervised"  # "supervised" or "focalmix"
    model_preset: str = "standard"  # DetectorConfig preset
    # --- data -------------------------------------------------------------------
    data_dir: str = "data/standard"
    cache_dir: str = ""  # preprocessed-scan cache; "" = <data_dir>/.cache, or a per-user cache for read-only data
    spacing_mm: float = 1.5  # isotropic resampling of every scan
    patch_size: int = 64  # cubic patch side in voxels; the largest stride divides it
    test_subsets: tuple[int, ...] = (8, 9)  # subsets held out for detection + FROC
    test_scans: int = 0  # detect in only the first N test scans (0 = all): smoke runs
    labeled: int = 25  # labeled scans drawn from the other subsets (0 = all of them)
    unlabeled: int = 400  # scans of the unlabeled pool (focalmix only)
    split_seed: int = 0  # which scans are labeled: fixed across run seeds
    positive_fraction: float = 0.5  # labeled patches centred on a nodule
    # --- batches and optimisation ----------------------------------------------
    batch_labeled: int = 8
    batch_unlabeled: int = 8
    steps: int = 6000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 10.0
    # --- soft-target focal loss (paper eq. 9) ----------------------------------
    alpha0: float = 0.25  # weight of negatives (y = 0)
    alpha1: float = 0.75  # weight of positives (y = 1): the rarer class weighs more
    gamma: float = 2.0
    soft_alpha: bool = True
    soft_beta: bool = True
    box_loss_weight: float = 1.0
    # --- FocalMix (sec. 3.2 and 3.3) ------------------------------------------
    augmentations: int = 4  # K views in anchor-level target prediction (Table 3b)
    temperature: float = 0.5  # sharpening T (MixMatch's value)
    eta: float = 0.75  # MixUp's Beta(eta, eta) (MixMatch's value)
    # MixUp: None = the method's own choice (on for focalmix, off for supervised);
    # supervised + both on is Table 4's "fully supervised with MixUp" baseline.
    image_mixup: bool | None = None
    object_mixup: bool | None = None
    object_confidence: float = 0.8  # predicted boxes above this take part in object MixUp
    # Objects of unlabeled patches: "predicted" = the box head decoded at the confident anchors,
    # deltas averaged over the K views (the paper); "anchors" = the confident anchor cubes themselves.
    object_boxes: str = "predicted"
    # Supervised burn-in: image and object MixUp start at this step (0 = from the first step, the paper).
    mixup_start_step: int = 0
    unlabeled_weight: float = 1.0  # weight of the unlabeled loss after ramp-up
    rampup_steps: int = 1000  # linear ramp-up of the unlabeled weight
    # --- inference --------------------------------------------------------------
    window_overlap: float = 0.25
    score_threshold: float = 0.05
    nms_iou: float = 0.1
    max_detections: int = 100  # per scan; the LUNA16 evaluation keeps at most 100
    lung_margin_mm: float = 10.0  # keep detections within this distance of the lungs (-1: keep all)
    # --- bookkeeping ------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    checkpoint_every: int = 500
    log_every: int = 10

    PRESETS: ClassVar[dict[str, dict[str, object]]] = {
        "quick": dict(
            model_preset="quick", data_dir="data/quick", spacing_mm=2.0, patch_size=32,
            test_subsets=(1,), labeled=0, unlabeled=16, batch_labeled=4, batch_unlabeled=4,
            positive_fraction=0.7, steps=600, lr=3e-3, warmup_steps=20, rampup_steps=200, checkpoint_every=100,
            log_every=5,
        ),
        "paper": dict(
            model_preset="paper", data_dir="data/paper", spacing_mm=1.0, patch_size=160,
            labeled=100, unlabeled=400, steps=30000, warmup_steps=500, rampup_steps=5000,
            checkpoint_every=1000,
        ),
    }

    # The paper's value of every field where the kit may depart from it by one setting
    # (docs/method.md, "Where the kit departs from the paper"); reports name these departures.
    PAPER_VALUES: ClassVar[dict[str, object]] = {"mixup_start_step": 0, "object_boxes": "predicted",
                                                 "lung_margin_mm": -1.0}

    # The range of every field (types are checked from the annotations); see config.check_fields.
    CHECKS: ClassVar[dict[str, Check]] = {
        "method": one_of(METHODS),
        "model_preset": _model_preset_problem,
        "data_dir": matches(r".+", "a folder"),
        "cache_dir": matches(r".*", "a folder or empty"),
        "spacing_mm": above(0),
        "patch_size": at_least(1),  # and a multiple of the model's largest stride: _check_combination
        "test_subsets": each(one_of(LUNA16_SUBSETS)),
        "test_scans": at_least(0),
        "labeled": at_least(0),
        "unlabeled": at_least(0),
        "split_seed": at_least(0),
        "positive_fraction": between(0, 1),
        "batch_labeled": at_least(1),
        "batch_unlabeled": at_least(1),
        "steps": at_least(1),
        "lr": above(0),
        "weight_decay": at_least(0),
        "warmup_steps": at_least(0),
        "grad_clip": above(0),
        "alpha0": between(0, 1),
        "alpha1": between(0, 1),
        "gamma": at_least(0),
        "soft_alpha": one_of((True, False)),
        "soft_beta": one_of((True, False)),
        "box_loss_weight": at_least(0),
        "augmentations": between(1, VIEW_COUNT),
        "temperature": above(0),
        "eta": above(0),
        "image_mixup": one_of((True, False)),
        "object_mixup": one_of((True, False)),
        "object_confidence": between(0, 1),
        "object_boxes": one_of(OBJECT_BOXES),
        "mixup_start_step": at_least(0),
        "unlabeled_weight": at_least(0),
        "rampup_steps": at_least(0),
        "window_overlap": between(0, 1, high_open=True),
        "score_threshold": between(0, 1),
        "nms_iou": between(0, 1),
        "max_detections": at_least(1),
        "lung_margin_mm": lambda mm: None if mm == -1 or mm >= 0 else "must be -1 (keep all) or at least 0",
        "seed": at_least(0),
        "device": matches(DEVICE_PATTERN, "auto, cpu, mps, cuda or cuda:N"),
        "amp": one_of((True, False)),
        "checkpoint_every": at_least(1),
        "log_every": at_least(1),
    }

    def resolved(self) -> "TrainConfig":
        """The config with the method's MixUp defaults filled in (what a run folder records)."""
        default = self.method == "focalmix"
        return replace(
            self,
            image_mixup=default if self.image_mixup is None else self.image_mixup,
            object_mixup=default if self.object_mixup is None else self.object_mixup,
        )

    def __post_init__(self) -> None:
        check_fields(self)
        self._check_combination()

    def _check_combination(self) -> None:
        """Checks that involve two fields, or the detector's architecture."""
        from focalmix_lib.config import from_preset
        from focalmix_lib.detection.model import DetectorConfig

        stride = max(from_preset(DetectorConfig, self.model_preset).strides)
        if self.patch_size % stride:
            raise ConfigError("patch_size", self.patch_size, f"must be a multiple of {stride}, the largest stride "
                              f"of model_preset {self.model_preset} (flipped views map anchors onto anchors)")
        if self.method == "focalmix" and self.unlabeled < 1:
            raise ConfigError("unlabeled", self.unlabeled, "focalmix needs at least 1 unlabeled scan")

    def check_machine(self) -> None:
        """The device asked for exists here (config.from_preset calls this for every new run)."""
        import torch

        if self.device.startswith("cuda"):
            index = int(self.device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA"
                raise ConfigError("device", self.device, f"this machine has {found}; use device=auto or cpu")
        if self.device == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("device", self.device, "MPS is not available on this machine; use device=auto or cpu")

