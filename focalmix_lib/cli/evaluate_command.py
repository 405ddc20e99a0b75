"""``focalmix evaluate``: the LUNA16 FROC and CPM of a submission, with an optional bootstrap."""

from __future__ import annotations

import argparse
from pathlib import Path

from focalmix_lib.cli import int_at_least


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="FROC and CPM of a LUNA16 submission, exactly as the challenge evaluates it",
        description="Evaluate a LUNA16 submission (seriesuid,coordX,coordY,coordZ,probability) with the "
                    "official challenge rules; write froc.json, froc.csv, froc_nodules.csv, froc.png and "
                    "froc.html to --out.",
    )
    parser.add_argument("--annotations", type=Path, required=True, help="annotations.csv (included nodules)")
    parser.add_argument("--excluded", type=Path, required=True, help="annotations_excluded.csv (irrelevant findings)")
    parser.add_argument("--seriesuids", type=Path, required=True, help="seriesuids.csv: the scans to evaluate on")
    parser.add_argument("--predictions", type=Path, required=True, help="the submission CSV")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--bootstrap", type=int_at_least(0), default=0, metavar="N",
                        help="bootstrap resamples of the scans for 95%% intervals (0: none; the challenge used 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from focalmix_lib.atomic import check_writable_folder
    from focalmix_lib.evaluation.luna16 import evaluate_files
    from focalmix_lib.evaluation.outputs import write_outputs

    check_writable_folder(args.out)  # before the (possibly long) bootstrap, not after it
    result = evaluate_files(args.annotations, args.excluded, args.seriesuids, args.predictions,
                            bootstrap=args.bootstrap, seed=args.seed, progress=args.bootstrap > 0)
    boot = result.bootstrap
    print(f"CPM {result.cpm:.4f}" + (f"  (95% interval {boot.cpm.low:.4f}-{boot.cpm.high:.4f}, "
                                      f"{boot.n_valid} bootstrap resamples)" if boot else ""))
    for key, sensitivity in result.sensitivity_at.items():
        extra = f"  [{boot.sensitivity_at[key].low:.4f}, {boot.sensitivity_at[key].high:.4f}]" if boot else ""
        print(f"  sensitivity at {float(key):g} FP/scan: {sensitivity:.4f}{extra}")
    print(f"{result.n_detected} of {result.n_nodules} nodules detected in {result.n_scans} scans; "
          f"{result.n_false_positives} false positives")
    paths = write_outputs(result, args.out)
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0
