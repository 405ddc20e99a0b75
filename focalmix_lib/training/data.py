"""The data of a training run: its preprocessed scans, its patch batches, its test scans.

Scans are preprocessed once per data folder (``<data_dir>/.cache`` or ``cache_dir``) and
shared by every run on that folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from focalmix_lib.data.dataset import Luna16Folder, PreprocessedScan, load_preprocessed, preprocessed_cache_dir
from focalmix_lib.data.patches import sample_labeled_patch, sample_unlabeled_patch
from focalmix_lib.data.splits import split_scans
from focalmix_lib.data.validate import check_training_scans
from focalmix_lib.training.config import TrainConfig


def scan_cache_dir(cfg: TrainConfig) -> Path:
    """Where preprocessed scans are cached, shared by every run on the same data: ``cache_dir``,
    else ``<data_dir>/.cache``, else (read-only data) a per-user cache folder."""
    return preprocessed_cache_dir(cfg.data_dir, cfg.cache_dir or None)


@dataclass(frozen=True)
class TrainingData:
    """The preprocessed scans a run samples patches from."""

    labeled: list[PreprocessedScan]
    unlabeled: list[PreprocessedScan]

    @classmethod
    def load(cls, cfg: TrainConfig, progress: bool = True) -> "TrainingData":
        folder = Luna16Folder(cfg.data_dir)
        split = split_scans(folder, cfg.test_subsets, cfg.labeled, cfg.unlabeled if cfg.method == "focalmix" else 0,
                            cfg.split_seed)
        check_training_scans(folder, [*split.labeled, *split.test])  # headers only: before any long work
        cache = scan_cache_dir(cfg)
        labeled = [load_preprocessed(folder.scan_path(uid), cfg.spacing_mm, folder.annotations, cache)
                   for uid in tqdm(split.labeled, desc="labeled scans", disable=not progress, leave=False)]
        unlabeled = [load_preprocessed(path, cfg.spacing_mm, None, cache)
                     for path in tqdm(split.unlabeled, desc="unlabeled scans", disable=not progress, leave=False)]
        return cls(labeled, unlabeled)


@dataclass(frozen=True)
class Batch:
    """The patches of one step: ``labeled`` (B_l, 1, P, P, P) with ``boxes`` (B_l tensors (M_b, 6),
    patch voxels), and ``unlabeled`` (B_u, 1, P, P, P) or None (supervised runs)."""

    labeled: Tensor
    boxes: list[Tensor]
    unlabeled: Tensor | None = None

    def to(self, device: torch.device) -> "Batch":
        unlabeled = self.unlabeled.to(device) if self.unlabeled is not None else None
        return Batch(self.labeled.to(device), self.boxes, unlabeled)


def sample_batch(data: TrainingData, cfg: TrainConfig, rng: np.random.Generator) -> Batch:
    """Draw the labeled patches (nodule-centred with probability ``positive_fraction``) and, for
    FocalMix, the unlabeled patches of one step from ``rng``."""
    images, boxes = [], []
    for index in rng.integers(len(data.labeled), size=cfg.batch_labeled):
        patch, patch_boxes = sample_labeled_patch(data.labeled[index], cfg.patch_size, rng, cfg.positive_fraction)
        images.append(patch)
        boxes.append(torch.from_numpy(patch_boxes))
    unlabeled = None
    if cfg.method == "focalmix":
        patches = [sample_unlabeled_patch(data.unlabeled[i], cfg.patch_size, rng)
                   for i in rng.integers(len(data.unlabeled), size=cfg.batch_unlabeled)]
        unlabeled = torch.from_numpy(np.stack(patches))[:, None]
    return Batch(torch.from_numpy(np.stack(images))[:, None], boxes, unlabeled)


def test_uids(cfg: TrainConfig) -> list[str]:
    """The series uids of the run's test subsets (the first ``test_scans`` of them, if set)."""
    uids = list(split_scans(Luna16Folder(cfg.data_dir), cfg.test_subsets, 0, 0, cfg.split_seed).test)
    return uids[:cfg.test_scans] if cfg.test_scans else uids
