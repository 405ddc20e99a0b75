"""Seconds per FocalMix step divided by seconds per supervised step at the same labeled batch size.

    PYTHONPATH=. python benchmarks/bench_focalmix_step.py [--preset quick] [--steps 5] [--repeats 3]

The kit's step (``step_losses``, backward, clipping, AdamW, as in the training
engine) with ``method=supervised`` and with ``method=focalmix`` (K = 4 views,
``batch_unlabeled = batch_labeled``, image and object MixUp on), on the same
synthetic labeled batches, timed in alternation after a warm-up. The issue asks
for a ratio of at most 3. A FocalMix step costs a no-grad forward pass over
K x B_u views (target prediction) plus a training pass over B_l + B_u patches,
against B_l for the supervised step.

``--profile`` adds where a FocalMix step spends its time (cProfile, cumulative
seconds per step of the parts of ``step_losses``; the rest is the training forward and backward).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.training.detector import build_model
from focalmix_lib.training.config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import compare, our_training_step, synthetic_batch  # noqa: E402  (a sibling script)

# The functions a FocalMix step is made of, as cProfile names them.
PROFILED_PARTS = {
    "labeled_targets": "anchor matching of the labeled boxes",
    "predict_anchor_targets": "target prediction (no-grad forward on K x B_u views, inverse maps, sharpening)",
    "confident_boxes": "confident predicted boxes (threshold + NMS)",
    "image_mixup": "image-level MixUp",
    "object_mixup": "object-level MixUp",
    "classification_loss": "soft-target focal losses",
    "step": "optimiser step (AdamW)",
}


def profile_focalmix(cfg: TrainConfig, batches: list, steps: int) -> None:
    """Cumulative seconds per FocalMix step of each part in :data:`PROFILED_PARTS`."""
    step = our_training_step(cfg, build_model(cfg))
    step(0, batches[0])
    profiler = cProfile.Profile()
    profiler.enable()
    for index, batch in enumerate(batches[:steps]):
        step(index + 1, batch)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    cumulative: dict[str, float] = {}
    for (filename, _, name), (_, _, _, seconds, _) in stats.items():
        if not ("focalmix_lib" in filename or (name == "step" and "adam" in filename)):
            continue
        if name in PROFILED_PARTS:
            cumulative[name] = cumulative.get(name, 0.0) + seconds
    total = sum(seconds for (f, _, n), (_, _, _, seconds, _) in stats.items()
                if n == "step" and "bench_training" in f)
    print(f"  FocalMix step profile ({steps} steps, {total / steps:.3f} s/step under cProfile):")
    for name, description in PROFILED_PARTS.items():
        seconds = cumulative.get(name, 0.0) / steps
        print(f"    {seconds:7.3f} s  {100 * seconds * steps / total:5.1f} %  {name}: {description}")
    rest = total - sum(cumulative.values())
    print(f"    {rest / steps:7.3f} s  {100 * rest / total:5.1f} %  the rest: training forward on B_l + B_u and backward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=["quick", "standard", "paper"])
    parser.add_argument("--augmentations", type=int, default=4, help="K")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = from_preset(TrainConfig, args.preset)
    supervised = replace(base, method="supervised")
    focalmix = replace(base, method="focalmix", augmentations=args.augmentations,
                       batch_unlabeled=base.batch_labeled)
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(focalmix, rng, with_unlabeled=True) for _ in range(max(args.steps, args.warmup))]

    load_before = os.getloadavg()[0]
    steps = {"supervised": our_training_step(supervised, build_model(supervised)),
             "focalmix": our_training_step(focalmix, build_model(focalmix))}
    # compare() feeds both the same batches; the supervised step ignores the unlabeled patches.
    seconds = compare({"supervised": lambda i, b: steps["supervised"](i, (b[0], b[1], None)),
                       "focalmix": steps["focalmix"]}, batches[:args.steps], args.warmup, args.repeats)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.preset}: {base.patch_size}^3 patches, batch {base.batch_labeled} labeled "
          f"(+ {focalmix.batch_unlabeled} unlabeled for FocalMix), K = {focalmix.augmentations}, "
          f"{args.repeats} x {args.steps} steps after {args.warmup} warm-up, {torch.get_num_threads()} threads, "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    for name, values in seconds.items():
        print(f"  {name:10s}: {median[name]:6.3f} s/step (all: " + ", ".join(f"{v:.3f}" for v in values) + ")")
    print(f"  ratio FocalMix / supervised: {median['focalmix'] / median['supervised']:.2f} (target <= 3)")
    if args.profile:
        profile_focalmix(focalmix, batches, args.steps)


if __name__ == "__main__":
    main()
