"""The teaching model: trained once, cached by version and settings, never half-written, and it has learned.

The mechanics use 2-step models (seconds); the peak test uses the session's
200-step model (conftest.py ``teaching_steps``), the one chapter 03 runs with in CI.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.data.dataset import Luna16Folder, load_preprocessed
from focalmix_lib.data.patches import sample_labeled_patch
from focalmix_lib.detection.model import DetectorConfig
from focalmix_lib.reproduction import teaching_model as teaching
from focalmix_lib.ssl.transforms import random_transforms
from focalmix_lib.training.data import scan_cache_dir
from focalmix_lib.training.data import test_uids as held_out_uids
from focalmix_lib.training.run_folder import RunFolder
from focalmix_lib.viz.ssl_plots import box_centre_cell, nodule_level, peak_cell, per_view_maps

TINY_STEPS = 2


def test_cache_key_names_version_preset_seed_and_every_learned_setting(monkeypatch, tmp_path):
    (tmp_path / "a").mkdir()  # a writable data folder keeps its cache beside it
    cfg = teaching.teaching_config(tmp_path / "a", steps=150, seed=3)
    key = teaching.cache_key(cfg)
    assert key.startswith(f"v{teaching.kit_version()}-quick-supervised-seed3-150steps-")
    assert teaching.teaching_run_dir(cfg) == tmp_path / "a" / ".cache" / "teaching_models" / key
    # Where the files are does not change what is learned; any learned setting does.
    assert teaching.cache_key(replace(cfg, data_dir=str(tmp_path / "b"), device="cuda")) == key
    assert teaching.cache_key(replace(cfg, lr=1e-3)) != key
    assert teaching.cache_key(teaching.teaching_config(tmp_path / "a", steps=150, seed=4)) != key
    monkeypatch.setattr(teaching.focalmix_lib, "__version__", "9.9.9")
    assert teaching.cache_key(cfg) != key and teaching.cache_key(cfg).startswith("v9.9.9-")


def test_kit_version_falls_back_to_the_package_metadata(monkeypatch):
    import importlib.metadata

    monkeypatch.delattr(teaching.focalmix_lib, "__version__")
    assert teaching.kit_version() == importlib.metadata.version("focalmix-kit")


def test_trains_once_says_so_then_loads_the_same_weights(tiny_phantoms):
    said: list[str] = []
    first = teaching.teaching_model(tiny_phantoms, steps=TINY_STEPS, progress=False, say=said.append)
    second = teaching.teaching_model(tiny_phantoms, steps=TINY_STEPS, progress=False, say=said.append)
    assert first.trained_now and not second.trained_now
    assert len(said) == 1 and "training one now" in said[0]
    assert first.run_dir == second.run_dir and RunFolder(first.run_dir).status() == "completed"
    assert not first.model.training
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [p.name for p in first.run_dir.parent.iterdir() if p.name.startswith(".")] == []  # no work folder left


def test_a_killed_training_caches_nothing_and_its_leftovers_are_cleared(tiny_phantoms, monkeypatch):
    cfg = teaching.teaching_config(tiny_phantoms, steps=TINY_STEPS + 1)
    final = teaching.teaching_run_dir(cfg)

    def killed(cfg, run_dir, progress=True):
        (Path(run_dir) / "config.yaml").write_text("half\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(teaching, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        teaching.teaching_model(tiny_phantoms, steps=TINY_STEPS + 1, progress=False, say=lambda _: None)
    assert not final.exists()
    stale = final.parent / f".{final.name}.99999"  # what a SIGKILLed trainer leaves
    stale.mkdir()
    monkeypatch.undo()
    model = teaching.teaching_model(tiny_phantoms, steps=TINY_STEPS + 1, progress=False, say=lambda _: None)
    assert model.trained_now and RunFolder(final).status() == "completed" and not stale.exists()


def _ask(data_dir: str, steps: int, results) -> None:
    results.put(teaching.teaching_model(data_dir, steps=steps, progress=False, say=lambda _: None).trained_now)


def test_two_callers_at_once_train_once(tiny_phantoms):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    callers = [context.Process(target=_ask, args=(str(tiny_phantoms), TINY_STEPS + 2, results)) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=300)
        assert caller.exitcode == 0
    assert sorted(results.get(timeout=5) for _ in callers) == [False, True]


def test_the_teaching_model_peaks_on_the_test_nodule(tiny_phantoms, teaching_steps):
    """Chapter 03's computation on its test patch: the K-view average peaks within one cell of the nodule."""
    teacher = teaching.teaching_model(tiny_phantoms, steps=teaching_steps, progress=False)
    cfg = teacher.config
    folder = Luna16Folder(cfg.data_dir)
    uid = next(u for u in held_out_uids(cfg) if len(folder.annotations.for_series(u)))
    scan = load_preprocessed(folder.scan_path(uid), cfg.spacing_mm, folder.annotations, scan_cache_dir(cfg))
    detector_cfg = from_preset(DetectorConfig, cfg.model_preset)
    for seed in range(3):  # three test patches around the nodule, three sets of K = 4 views
        patch, boxes = sample_labeled_patch(scan, cfg.patch_size, np.random.default_rng(seed), positive_fraction=1.0)
        level = nodule_level(float(boxes[0, 3] - boxes[0, 0]), detector_cfg.anchor_sizes)
        _, back = per_view_maps(teacher.model.classify, torch.from_numpy(patch)[None, None],
                                random_transforms(4, torch.Generator().manual_seed(seed)), level)
        peak, nodule = peak_cell(back.mean(0)), box_centre_cell(boxes[0], detector_cfg.strides[level])
        assert max(abs(a - b) for a, b in zip(peak, nodule)) <= 1, (seed, peak, nodule)
