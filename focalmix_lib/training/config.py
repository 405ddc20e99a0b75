"""The configuration of one training run, with the presets ``quick``, ``standard``, ``paper``.

The defaults are the ``standard`` preset. Every field can be overridden by name
(``focalmix train --set gamma=1.5``, a papermill parameter, or ``from_preset``).
Values the paper leaves open are documented where they are set (design.md,
"Numbers the paper does not give").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

METHODS = ("supervised", "focalmix")
OBJECT_BOXES = ("predicted", "anchors")


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train --------------------------------------------------------
    method: str = "supervised"  # "supervised" or "focalmix"
    model_preset: str = "standard"  # DetectorConfig preset
    # --- data -------------------------------------------------------------------
    data_dir: str = "data/standard"
    cache_dir: str = ""  # preprocessed-scan cache; "" = <data_dir>/.cache
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

    def resolved(self) -> "TrainConfig":
        """The config with the method's MixUp defaults filled in (what a run folder records)."""
        default = self.method == "focalmix"
        return replace(
            self,
            image_mixup=default if self.image_mixup is None else self.image_mixup,
            object_mixup=default if self.object_mixup is None else self.object_mixup,
        )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.augmentations < 1:
            raise ValueError(f"augmentations (K) must be at least 1, got {self.augmentations}")
        if not 0 < self.temperature:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.steps < 0 or self.batch_labeled < 1:
            raise ValueError("steps must be >= 0 and batch_labeled >= 1")
        if self.object_boxes not in OBJECT_BOXES:
            raise ValueError(f"object_boxes must be one of {OBJECT_BOXES}, got {self.object_boxes!r}")
        if self.mixup_start_step < 0:
            raise ValueError(f"mixup_start_step must be >= 0, got {self.mixup_start_step}")
