"""``focalmix reproduce``: the teaching notebooks, the paper's ablation grid and its tables."""

from __future__ import annotations

import argparse

from focalmix_lib.cli import int_at_least


def register(subparsers: argparse._SubParsersAction) -> None:
    from focalmix_lib.reproduction.grid import TABLES, parse_shard
    from focalmix_lib.reproduction.profiles import CPU_EVIDENCE_TIME, PROFILES

    parser = subparsers.add_parser(
        "reproduce", help="run the paper's ablation grid through papermill and write its tables",
        description="Make the profile's phantoms (unless --data), execute chapters 00-06 once, then every run of "
                    "the paper's tables (notebook 05 per run, deduplicated, resumable) and write OUT/tables.md, "
                    ".csv, .html and figure3.png with the paper's numbers beside the kit's.",
    )
    parser.add_argument("--profile", choices=tuple(PROFILES), default="quick",
                        help="quick: a smoke test of the pipeline (minutes); cpu: Table 1 and the label-budget "
                             f"curve with 3 seeds on a 2-core CPU ({CPU_EVIDENCE_TIME}); standard, paper: a GPU")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument("--seeds", type=int_at_least(1),
                        help="seeds per cell: mean ± std (default: the profile's, 3 for cpu, else 1)")
    parser.add_argument("--shard", type=parse_shard, help="run only shard i of n (0 <= i < n), e.g. $SLURM_ARRAY_TASK_ID/4")
    parser.add_argument("--only", type=_tables, metavar="TABLES",
                        help=f"comma-separated tables of {','.join(TABLES)} (default: the profile's; "
                             "table1,labels for cpu, every table otherwise)")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: read every run folder (all shards) and write the tables")
    parser.add_argument("--data", help="LUNA16-layout folder (default: the profile's phantoms in OUT/data)")
    parser.add_argument("--no-chapters", dest="chapters", action="store_false",
                        help="skip executing the teaching notebooks 00-06")
    parser.set_defaults(handler=run_reproduce)


def _tables(text: str) -> tuple[str, ...]:
    """``--only``: comma-separated table names, each known, none empty."""
    from focalmix_lib.reproduction.grid import TABLES

    names = tuple(name.strip() for name in text.split(","))
    bad = [name for name in names if name not in TABLES]
    if bad:
        shown = ", ".join(repr(name) if name else "an empty entry" for name in dict.fromkeys(bad))
        raise argparse.ArgumentTypeError(f"{shown} in {text!r}: choose from {','.join(TABLES)}")
    return names


def run_reproduce(args: argparse.Namespace) -> int:
    import sys

    from focalmix_lib.reproduction.profiles import CPU_EVIDENCE_COMMAND, CPU_EVIDENCE_TIME, PROFILES
    from focalmix_lib.reproduction.runner import reproduce

    outcome = reproduce(args.profile, args.out, seeds=args.seeds, shard=args.shard, only=args.only,
                        collect=args.collect, data=args.data, chapters=args.chapters)
    shard = f"{args.shard[0]}/{args.shard[1]}" if args.shard else ""
    flags = (f" --seeds {args.seeds}" if args.seeds else "") + (f" --only {','.join(args.only)}" if args.only else "")
    print(f"tables: {outcome.tables}" if outcome.tables else f"shard {shard} done; when every shard has finished "
          f"run: focalmix reproduce --profile {args.profile} --out {args.out}{flags} --collect")
    if outcome.tables and PROFILES[args.profile].smoke:
        print("smoke scale: these numbers check the pipeline, not the paper; the evidence on a 2-core CPU "
              f"({CPU_EVIDENCE_TIME}): {CPU_EVIDENCE_COMMAND}")
    failed = [*(f"chapter {line}" for line in outcome.failed_chapters), *(f"run {line}" for line in outcome.failed_runs)]
    if failed:
        print(f"focalmix reproduce: {len(failed)} failed (rerun the same command to retry them):", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0
