"""``focalmix detect``: a trained run's detector on its test scans, on other subsets, or on a user's own scans."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    detect = subparsers.add_parser(
        "detect", help="detect nodules with a trained run and write a LUNA16 submission CSV",
        description="Detect nodules with the newest checkpoint of a completed run. Without --scans or --subsets: "
                    "the run's test scans, into RUN/predictions.csv. --subsets: those subsets of the LUNA16-layout "
                    "--data folder. --scans: your own scans (.mhd, .nii, .nii.gz files, DICOM series folders, "
                    "folders of them, LUNA16-layout folders). --evaluate scores the submission where annotations "
                    "of the scans exist (RUN's test scans: RUN/froc.json; else froc.json beside --out).",
    )
    detect.add_argument("--run", required=True, help="run folder written by focalmix train")
    detect.add_argument("--data", help="LUNA16-layout data folder (default: the run's data_dir); its "
                                       "annotations.csv is used by --evaluate")
    source = detect.add_mutually_exclusive_group()
    source.add_argument("--subsets", help="subsets of --data to detect in: 'all' or numbers, e.g. 0,3")
    source.add_argument("--scans", nargs="+", metavar="PATH", help="scans to detect in (files or folders)")
    detect.add_argument("--out", help="submission CSV (default: RUN/predictions.csv; required with --scans "
                                      "or --subsets)")
    detect.add_argument("--evaluate", action="store_true", help="also write the LUNA16 FROC (froc.json, .csv, "
                                                                ".png, .html) where annotations exist")
    detect.add_argument("--allow-incomplete", action="store_true",
                        help="detect with a diverged, failed or unfinished run's newest checkpoint")
    detect.set_defaults(handler=run_detect)


def run_detect(args: argparse.Namespace) -> int:
    from focalmix_lib.data.dataset import Luna16Folder
    from focalmix_lib.data.luna_csv import read_predictions
    from focalmix_lib.data.scans import scan_uid
    from focalmix_lib.errors import KitInputError
    from focalmix_lib.evaluation.luna16 import evaluate_froc
    from focalmix_lib.evaluation.outputs import write_outputs
    from focalmix_lib.evaluation.run_evaluation import evaluate_run
    from focalmix_lib.inference.run_detection import TrainedRun, detect_run, detect_scans
    from focalmix_lib.inference.scan_sources import find_scans, subset_scans

    if args.scans is None and args.subsets is None:
        path = detect_run(args.run, args.data, args.out, allow_incomplete=args.allow_incomplete)
        print(f"predictions: {path}")
        if args.evaluate:
            print_froc(evaluate_run(args.run, args.data, predictions=path))
        return 0

    # Every check first (run, scans, output), so that bad input ends before any scan is read.
    option = "--scans" if args.scans is not None else "--subsets"
    if args.out is None:
        raise KitInputError(args.run, f"{option} needs --out: RUN/predictions.csv holds the run's test scans")
    trained = TrainedRun.load(args.run, args.data, allow_incomplete=args.allow_incomplete)
    data_dir = Path(trained.config.data_dir)
    scans = find_scans(args.scans) if args.scans is not None else \
        subset_scans(data_dir, _parse_subsets(args.subsets, data_dir))
    if Path(args.out).is_dir():
        raise KitInputError(args.out, "is a folder; --out names the submission CSV to write")
    path = detect_scans(trained, scans, args.out)
    print(f"predictions: {path} ({len(scans)} scans)")
    if not args.evaluate:
        return 0
    uids = [scan_uid(scan) for scan in scans]
    folder = Luna16Folder(data_dir) if (data_dir / "annotations.csv").is_file() else None
    if folder is None or not set(uids) & set(folder.annotations.seriesuid.tolist()):
        print(f"not evaluated: {data_dir / 'annotations.csv'} annotates none of these scans", file=sys.stderr)
        return 0
    result = evaluate_froc(folder.annotations, folder.excluded, uids, read_predictions(path),
                           seed=trained.config.seed)
    write_outputs(result, path.parent)
    print_froc(result)
    return 0


def _parse_subsets(text: str, data_dir: Path) -> list[int] | None:
    """``all`` -> None (every subset); ``0,3`` -> [0, 3]."""
    from focalmix_lib.errors import KitInputError

    if text.strip().lower() == "all":
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KitInputError(data_dir, f"--subsets takes 'all' or numbers such as 0,3, got {text!r}") from None


def print_froc(result) -> None:
    """The CPM and the sensitivity at each LUNA16 operating point, on two lines."""
    points = "  ".join(f"{k}: {v:.3f}" for k, v in result.sensitivity_at.items())
    print(f"CPM {result.cpm:.3f}  ({result.n_detected}/{result.n_nodules} nodules found)\nsensitivity at FP/scan  {points}")
