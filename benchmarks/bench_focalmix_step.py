"""Seconds per FocalMix step divided by seconds per supervised step at the same labeled batch size.

    PYTHONPATH=. python benchmarks/bench_focalmix_step.py [--preset quick] [--steps 5] [--repeats 3]

The kit's step (``step_losses``, backward, clipping, AdamW, as in the training
engine) with ``method=supervised`` and with ``method=focalmix`` (K = 4 views,
``batch_unlabeled = batch_labeled``, image and object MixUp on), on the same
synthetic labeled batches, timed in alternation after a warm-up. The issue asks
for a ratio of at most 2 at K = 4. A FocalMix step costs a no-grad forward pass over
K x B_u views (target prediction) plus a training pass over B_l + B_u patches,
against B_l for the supervised step.

Where a step spends its time, stage by stage: ``bench_step_profile.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from focalmix_lib.config import from_preset
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import Batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import compare, kit_model, our_training_step, synthetic_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=["quick", "standard", "paper"])
    parser.add_argument("--augmentations", type=int, default=4, help="K")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = from_preset(TrainConfig, args.preset)
    supervised = replace(base, method="supervised")
    focalmix = replace(base, method="focalmix", augmentations=args.augmentations,
                       batch_unlabeled=base.batch_labeled)
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(focalmix, rng, with_unlabeled=True) for _ in range(max(args.steps, args.warmup))]

    load_before = os.getloadavg()[0]
    steps = {"supervised": our_training_step(supervised, kit_model(supervised)),
             "focalmix": our_training_step(focalmix, kit_model(focalmix))}
    # compare() feeds both the same batches; the supervised step ignores the unlabeled patches.
    seconds = compare({"supervised": lambda i, b: steps["supervised"](i, Batch(b.labeled, b.boxes)),
                       "focalmix": steps["focalmix"]}, batches[:args.steps], args.warmup, args.repeats)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.preset}: {base.patch_size}^3 patches, batch {base.batch_labeled} labeled "
          f"(+ {focalmix.batch_unlabeled} unlabeled for FocalMix), K = {focalmix.augmentations}, "
          f"{args.repeats} x {args.steps} steps after {args.warmup} warm-up, {torch.get_num_threads()} threads, "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    for name, values in seconds.items():
        print(f"  {name:10s}: {median[name]:6.3f} s/step (all: " + ", ".join(f"{v:.3f}" for v in values) + ")")
    print(f"  ratio FocalMix / supervised: {median['focalmix'] / median['supervised']:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
