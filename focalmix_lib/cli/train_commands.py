"""``focalmix train``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train a detector (supervised or FocalMix); resumes an interrupted run",
        description="Train one run into --out (config.yaml, metrics.jsonl, checkpoints/, status). "
                    "Rerunning the same command resumes from the newest checkpoint.",
    )
    train.add_argument("--data", required=True, help="LUNA16-layout folder (e.g. made by focalmix make-data)")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--preset", default="quick", choices=("quick", "standard", "paper"))
    train.add_argument("--method", default="supervised", choices=("supervised", "focalmix"))
    train.add_argument("--labeled", type=int, help="number of labeled scans (0 = all training scans)")
    train.add_argument("--unlabeled", type=int, help="size of the unlabeled pool (focalmix)")
    train.add_argument("--steps", type=int, help="training steps")
    train.add_argument("--seed", type=int, help="run seed")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="override any TrainConfig field, e.g. --set gamma=1.5 (repeatable)")
    train.add_argument("--detect", action="store_true", help="after training, detect and evaluate the test scans")
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from focalmix_lib.cli.detect_command import print_froc
    from focalmix_lib.config import from_preset, parse_overrides
    from focalmix_lib.reproduction.pipeline import run_pipeline
    from focalmix_lib.training.config import TrainConfig

    named = {"labeled": args.labeled, "unlabeled": args.unlabeled, "steps": args.steps, "seed": args.seed}
    overrides = {"data_dir": args.data, "method": args.method,
                 **{k: v for k, v in named.items() if v is not None}, **parse_overrides(args.overrides)}
    cfg = from_preset(TrainConfig, args.preset, **overrides)
    outcome = run_pipeline(cfg, args.out, detect=args.detect, evaluate=args.detect)
    print(f"run {args.out}: {outcome.status}")
    if outcome.status != "completed":
        return 1
    if outcome.predictions is not None:
        print(f"predictions: {outcome.predictions}")
    if outcome.froc is not None:
        print_froc(outcome.froc)
    return 0
