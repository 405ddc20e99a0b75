"""``focalmix make-data`` (phantoms in the LUNA16 layout) and ``focalmix check-data`` (validation)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    make = subparsers.add_parser(
        "make-data", help="generate synthetic chest CT phantoms in the LUNA16 layout",
        description="Write phantom scans, annotations.csv, annotations_excluded.csv, seriesuids.csv, "
                    "unlabeled/ and nodule_kinds.csv to --out. The same seed gives identical files.",
    )
    make.add_argument("--profile", choices=("quick", "cpu", "standard", "paper"), default="quick",
                      help="quick: 24 + 16 small scans (seconds); cpu: the cpu reproduction's 60 + 32; "
                           "standard: 160 + 400; paper: LUNA16-sized (86 GB)")
    make.add_argument("--out", required=True,
                      help="folder to create (absent or empty; with --force, phantoms of make-data are replaced)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--force", action="store_true",
                      help="replace an --out folder of phantoms that make-data wrote (never any other folder)")
    make.add_argument("--workers", type=int, default=2, help="processes that render scans (default 2)")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(handler=_make_data)

    check = subparsers.add_parser(
        "check-data", help="validate a LUNA16-layout folder and print a summary",
        description="Check that every listed scan is present and consistent with its header, the CSVs are "
                    "well formed and every annotation lies inside its scan. Exit status 2 on any problem.",
    )
    check.add_argument("folder")
    check.set_defaults(handler=_check_data)


def _make_data(args: argparse.Namespace) -> int:
    from focalmix_lib.data.phantoms import make_phantoms, profile_from_name

    summary = make_phantoms(args.out, profile_from_name(args.profile), args.seed, progress=not args.quiet,
                            force=args.force, workers=args.workers)
    print(f"wrote {args.profile} phantoms to {summary['out_dir']} in {summary['seconds']} s: "
          f"{summary['labeled_scans']} labeled scans in {summary['subsets']} subsets "
          f"({summary['nodules']} nodules, {summary['diameter_mm_min']:.1f}-{summary['diameter_mm_max']:.1f} mm; "
          f"{summary['excluded']} excluded findings), {summary['unlabeled_scans']} unlabeled scans")
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from focalmix_lib.data.validate import check_luna16_folder

    report = check_luna16_folder(args.folder)
    print(report.format(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 2
