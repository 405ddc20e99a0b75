"""Where one training step spends its time, stage by stage; and what thread settings,
the weights' memory layout and ``torch.compile`` do to a supervised step on this machine.

    PYTHONPATH=. python benchmarks/bench_step_profile.py [--presets quick standard]
        [--methods supervised focalmix] [--steps 4] [--threads 2] [--options]

The profiled step is the engine's (``sample_batch``, ``step_losses``, backward,
gradient clipping, AdamW) on synthetic scans of the preset's resampled size (noise,
a few bright cubes with their boxes, a box-shaped lung mask), run under cProfile.
Each stage is the cumulative time of one library function (a function called inside
another stage is counted in both: IoU is part of matching, the training forward is
not part of target prediction). "rest" is the step's time outside every top-level
stage. cProfile adds a per-call overhead, so the step's plain seconds are printed too.

``--options`` times, in alternation on the same batches, the default supervised step
(the engine's: channels-last weights on the CPU) against the same step with one
thread, with the weights in the contiguous layout the kit used before, and with the
training forward under ``torch.compile``, each from the same initial weights; it
prints seconds per step, the ratio to the default, and whether the weights after the
timed steps are bit-identical to the default's (an option that is not changes every
run's rounding: each run stays bit-reproducible, but its numbers differ from runs
made without it).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import inspect
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.data.coordinates import ScanGeometry
from focalmix_lib.data.dataset import PreprocessedScan
from focalmix_lib.detection.boxes import BoxCoder, box_iou
from focalmix_lib.detection.matching import build_batch_targets
from focalmix_lib.detection.model import FPNDetector
from focalmix_lib.losses import box_regression_loss
from focalmix_lib.ssl.mixup import image_mixup, object_mixup
from focalmix_lib.ssl.target_prediction import predict_anchor_targets
from focalmix_lib.training import objective
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import Batch, TrainingData, sample_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import STANDARD_SCAN_SHAPE, Step, compare, kit_model, our_training_step, synthetic_batch

# Resampled shape (D, H, W) of a quick phantom at 2.0 mm (the standard one is bench_training's).
SCAN_SHAPES = {"quick": (130, 168, 168), "standard": STANDARD_SCAN_SHAPE}

# (stage, function, top-level): the functions a step is made of. Top-level stages do not
# nest in one another; their sum and the step's total give "rest".
STAGES: list[tuple[str, Callable, bool]] = [
    ("patch sampling", sample_batch, True),
    ("anchors (model cache)", FPNDetector.anchors, True),
    ("matching of the labeled boxes", build_batch_targets, True),
    ("  of it: IoU (matching and NMS)", box_iou, False),
    ("  of it: box encoding", BoxCoder.encode, False),
    ("target prediction (K views, no grad)", predict_anchor_targets, True),
    ("confident boxes (threshold + NMS)", objective.confident_boxes, True),
    ("image MixUp", image_mixup, True),
    ("object MixUp", object_mixup, True),
    ("training forward", FPNDetector.forward, True),
    ("soft-target focal losses", objective.classification_loss, True),
    ("box loss", box_regression_loss, True),
    ("backward", torch.Tensor.backward, True),
    ("gradient clipping", torch.nn.utils.clip_grad_norm_, True),
    ("optimiser (AdamW)", torch.optim.AdamW.step, True),
]


def _code_key(function: Callable) -> tuple[str, int, str]:
    """cProfile's key ``(filename, first line, name)`` of a (possibly decorated) function."""
    code = inspect.unwrap(function).__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def synthetic_scan(uid: str, shape_zyx: tuple[int, int, int], spacing_mm: float,
                   rng: np.random.Generator) -> PreprocessedScan:
    """Noise with three bright cubes (2-8 voxels) and their boxes; the lung is the middle 60 % box."""
    volume = rng.normal(0.3, 0.1, shape_zyx).astype(np.float32)
    boxes = []
    for _ in range(3):
        side = int(rng.integers(2, 9))
        z, y, x = (int(rng.integers(s // 5, 4 * s // 5 - side)) for s in shape_zyx)
        volume[z:z + side, y:y + side, x:x + side] += 0.5
        boxes.append([z, y, x, z + side, y + side, x + side])
    lung = np.zeros(shape_zyx, dtype=bool)
    lung[tuple(slice(s // 5, 4 * s // 5) for s in shape_zyx)] = True
    geometry = ScanGeometry(shape_zyx, (0.0, 0.0, 0.0), (spacing_mm,) * 3)
    return PreprocessedScan(uid, volume, geometry, np.asarray(boxes, dtype=np.float32),
                            np.asarray([b[3] - b[0] for b in boxes], dtype=np.float32) * spacing_mm, lung)


def synthetic_data(cfg: TrainConfig) -> TrainingData:
    rng = np.random.default_rng(0)
    shape = SCAN_SHAPES[cfg.model_preset]
    return TrainingData([synthetic_scan(f"labeled{i}", shape, cfg.spacing_mm, rng) for i in range(2)],
                        [synthetic_scan(f"unlabeled{i}", shape, cfg.spacing_mm, rng) for i in range(2)])


def engine_step(cfg: TrainConfig, data: TrainingData) -> Callable[[int], None]:
    """The body of ``engine.train_loop`` on the CPU: sample the step's batch, then bench_training's step."""
    step = our_training_step(cfg, kit_model(cfg))

    def run(index: int) -> None:
        step(index, sample_batch(data, cfg, np.random.default_rng([cfg.seed, index, 0])))

    return run


def profile_step(cfg: TrainConfig, steps: int) -> None:
    """Print seconds per step of every stage in :data:`STAGES` (cProfile) and of the whole step."""
    run = engine_step(cfg, synthetic_data(cfg))
    run(0)  # warm-up: first-call allocations
    start = time.perf_counter()
    for index in range(1, steps + 1):
        run(index)
    plain = (time.perf_counter() - start) / steps
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for index in range(steps + 1, 2 * steps + 1):
        run(index)
    profiler.disable()
    profiled = (time.perf_counter() - start) / steps
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    cumulative = {key: value[3] / steps for key, value in stats.items()}
    print(f"  {cfg.method} step: {plain:.3f} s/step plain, {profiled:.3f} s/step under cProfile "
          f"({steps} steps each, load average {os.getloadavg()[0]:.1f})")
    top = 0.0
    for name, function, top_level in STAGES:
        seconds = cumulative.get(_code_key(function), 0.0)
        top += seconds if top_level else 0.0
        print(f"    {1000 * seconds:8.1f} ms  {100 * seconds / profiled:5.1f} %  {name}")
    rest = profiled - top
    print(f"    {1000 * rest:8.1f} ms  {100 * rest / profiled:5.1f} %  rest (step bookkeeping, zero_grad, batch assembly)")


def option_steps(cfg: TrainConfig, threads: int) -> dict[str, Step]:
    """The default supervised step and its variants, each on its own copy of the same initial model."""
    cfg = cfg.resolved()
    model = kit_model(cfg)

    def variant(prepare: Callable[[FPNDetector], Callable[[Batch], Batch]], step_threads: int = threads) -> Step:
        copy_ = copy.deepcopy(model)
        convert = prepare(copy_)
        inner = our_training_step(cfg, copy_)

        def step(index: int, batch: Batch) -> None:
            torch.set_num_threads(step_threads)
            try:
                inner(index, convert(batch))
            finally:
                torch.set_num_threads(threads)

        step.model = copy_  # type: ignore[attr-defined]
        return step

    def unchanged(_: FPNDetector) -> Callable[[Batch], Batch]:
        return lambda batch: batch

    def contiguous(m: FPNDetector) -> Callable[[Batch], Batch]:
        m.to(memory_format=torch.contiguous_format)
        return lambda batch: batch

    def compiled(m: FPNDetector) -> Callable[[Batch], Batch]:
        # step_losses calls detector(images): compiling the module's forward in place keeps the detector's API.
        m.forward = torch.compile(m.forward, dynamic=False)  # type: ignore[method-assign]
        return lambda batch: batch

    return {
        f"default ({threads} threads)": variant(unchanged),
        "1 thread": variant(unchanged, 1),
        "contiguous weights": variant(contiguous),
        "torch.compile": variant(compiled),
    }


def compare_options(cfg: TrainConfig, steps: int, repeats: int, threads: int) -> None:
    rng = np.random.default_rng(1)
    batches = [synthetic_batch(cfg, rng) for _ in range(steps)]
    variants = option_steps(cfg, threads)
    load_before = os.getloadavg()[0]
    seconds = compare(variants, batches, warmup=2, repeats=repeats)
    default_name = next(iter(variants))
    default = statistics.median(seconds[default_name])
    reference = variants[default_name].model  # type: ignore[attr-defined]
    print(f"  options, supervised step, {repeats} x {steps} steps after 2 warm-up, load average "
          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}:")
    for name, values in seconds.items():
        median = statistics.median(values)
        model = variants[name].model  # type: ignore[attr-defined]
        same = all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), model.state_dict().values()))
        print(f"    {name:22s} {median:6.3f} s/step  {cfg.batch_labeled / median:6.2f} patches/s  "
              f"speed vs default {default / median:4.2f}  weights bit-identical to default: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["quick", "standard"], choices=sorted(SCAN_SHAPES))
    parser.add_argument("--methods", nargs="+", default=["supervised", "focalmix"], choices=["supervised", "focalmix"])
    parser.add_argument("--augmentations", type=int, default=4, help="K")
    parser.add_argument("--steps", type=int, default=4, help="profiled steps per method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--options", action="store_true", help="also time threads, the weights' layout, torch.compile")
    parser.add_argument("--option-steps", type=int, default=4)
    parser.add_argument("--option-repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for preset in args.presets:
        base = from_preset(TrainConfig, preset)
        print(f"{preset}: {base.patch_size}^3 patches, batch {base.batch_labeled} labeled "
              f"(+ {base.batch_labeled} unlabeled, K = {args.augmentations} for FocalMix), {args.threads} threads")
        for method in args.methods:
            cfg = replace(base, method=method, augmentations=args.augmentations, batch_unlabeled=base.batch_labeled)
            profile_step(cfg.resolved(), args.steps)
        if args.options:
            compare_options(replace(base, method="supervised"), args.option_steps, args.option_repeats, args.threads)


if __name__ == "__main__":
    main()
