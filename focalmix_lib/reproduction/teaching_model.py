"""The teaching model: one supervised detector trained once on the quick phantoms and shared.

Chapters that show predictions (00's teaser, 03, 04, 06) need a detector that has
learned something: an untrained one predicts its prior (about 0.01) on every anchor,
and every map is flat. :func:`teaching_model` trains the ``quick`` preset with the
kit's own engine the first time it is asked (a few CPU minutes), caches the run
folder, and loads it on every later call, from any chapter or papermill run.

The cache lives beside the data's preprocessed scans,
``<data_dir>/.cache/teaching_models/<key>/`` (``TrainConfig.cache_dir`` moves both),
and ``key`` names the kit version, the preset, the method, the seed, the step count and
a hash of every training setting, so a new kit version or a changed preset trains a
new model instead of reusing a stale one.

Two guarantees:

* **No half model.** Training writes into a hidden temporary folder that is renamed to
  ``<key>`` only once the run has completed; a killed training leaves no ``<key>``.
* **One trainer.** An exclusive lock (``<key>.lock``, ``fcntl.flock``) is held while
  training; a second caller waits for it and then loads the finished model. The
  operating system releases the lock when its process dies, so it never goes stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

import focalmix_lib
from focalmix_lib.config import from_preset, to_dict
from focalmix_lib.inference.run_detection import load_trained_model
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import scan_cache_dir
from focalmix_lib.training.engine import train
from focalmix_lib.training.run_folder import RunFolder

TEACHING_PRESET = "quick"
TEACHING_METHOD = "supervised"  # chapter 03 needs peaks; the quick preset's MixUp runs stay flat (README)
# Where a setting only says where files are, not what is learned: left out of the key.
_LOCATION_FIELDS = ("data_dir", "cache_dir", "device")


@dataclass(frozen=True)
class TeachingModel:
    """A loaded teaching model: ``model`` (eval mode, CPU), the ``config`` it was trained with
    (pointing at the caller's data folder), its cached ``run_dir``, and whether this call
    trained it (``trained_now``)."""

    model: torch.nn.Module
    config: TrainConfig
    run_dir: Path
    trained_now: bool


def kit_version() -> str:
    """``focalmix_lib.__version__``, else the installed package's metadata version."""
    return getattr(focalmix_lib, "__version__", None) or importlib.metadata.version("focalmix-kit")


def teaching_config(data_dir: str | Path, steps: int | None = None, seed: int = 0) -> TrainConfig:
    """The ``quick`` preset, supervised, on ``data_dir``; ``steps`` (default: the preset's 600)
    lets CI train a smaller model."""
    overrides = {"steps": steps} if steps is not None else {}
    return from_preset(TrainConfig, TEACHING_PRESET, data_dir=str(data_dir), method=TEACHING_METHOD, seed=seed,
                       **overrides)


def cache_key(cfg: TrainConfig) -> str:
    """``v<version>-<preset>-<method>-seed<seed>-<steps>steps-<hash>``.

    The hash is SHA-256 (first 12 hex digits) of every setting but the locations
    (data and cache folder, device), so the same training on a moved data folder is
    still found, and any change of what is learned gives a new key.
    """
    settings = {k: v for k, v in to_dict(cfg.resolved()).items() if k not in _LOCATION_FIELDS}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    return f"v{kit_version()}-{TEACHING_PRESET}-{cfg.method}-seed{cfg.seed}-{cfg.steps}steps-{digest}"


def teaching_run_dir(cfg: TrainConfig) -> Path:
    """Where the teaching model of ``cfg`` is (or will be) cached."""
    return scan_cache_dir(cfg) / "teaching_models" / cache_key(cfg)


def teaching_model(data_dir: str | Path, steps: int | None = None, seed: int = 0, progress: bool = True,
                   say: Callable[[str], None] = print) -> TeachingModel:
    """Load the cached teaching model of ``data_dir``, training it first if there is none.

    ``say`` receives one line when (and only when) a model has to be trained, before the
    training starts; ``progress`` shows the engine's tqdm bars. Raises ``RuntimeError``
    if the training ends other than ``completed`` (nothing is cached then).
    """
    cfg = teaching_config(data_dir, steps, seed)
    final = teaching_run_dir(cfg)
    trained_now = False
    if not _complete(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(final.parent / f"{final.name}.lock"):
            if not _complete(final):  # another process may have finished it while we waited
                say(f"No teaching model cached for these phantoms; training one now ({cfg.steps} steps of the "
                    f"'{TEACHING_PRESET}' preset, supervised; a few CPU minutes, once). It will be kept in {final}.")
                _train_into(cfg, final, progress)
                trained_now = True
    return TeachingModel(load_trained_model(final), cfg, final, trained_now)


def _complete(run_dir: Path) -> bool:
    return RunFolder(run_dir).status() == "completed"


def _train_into(cfg: TrainConfig, final: Path, progress: bool) -> None:
    """Train in a fresh hidden folder beside ``final`` and rename it into place when completed.

    Called with the lock held, so hidden folders of the same key left by killed
    trainings are stale and removed first.
    """
    for stale in final.parent.glob(f".{final.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)  # an incomplete folder put there by hand
    work = final.parent / f".{final.name}.{os.getpid()}"  # unique: the lock is ours, stale ones are gone
    work.mkdir()
    try:
        status = train(cfg, work, progress=progress)
        if status != "completed":
            raise RuntimeError(f"the teaching model's training ended '{status}': "
                               f"{RunFolder(work).error() or 'see its metrics'}; nothing was cached")
        os.rename(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (blocking) for the duration of the block."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
