"""``focalmix reproduce``: the teaching notebooks, the paper's ablation grid and its tables."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from focalmix_lib.reproduction.grid import TABLES, parse_shard

    parser = subparsers.add_parser(
        "reproduce", help="run the paper's ablation grid through papermill and write its tables",
        description="Make the profile's phantoms (unless --data), execute chapters 00-06 once, then every run of "
                    "the paper's tables (notebook 05 per run, deduplicated, resumable) and write OUT/tables.md, "
                    ".csv, .html and figure3.png with the paper's numbers beside the kit's.",
    )
    parser.add_argument("--profile", choices=("quick", "standard", "paper"), default="quick")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per cell: mean ± std (default 1)")
    parser.add_argument("--shard", type=parse_shard, help="run only shard i of n (0 <= i < n), e.g. $SLURM_ARRAY_TASK_ID/4")
    parser.add_argument("--only", default=",".join(TABLES),
                        help=f"comma-separated tables (default: all of {','.join(TABLES)})")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: read every run folder (all shards) and write the tables")
    parser.add_argument("--data", help="LUNA16-layout folder (default: the profile's phantoms in OUT/data)")
    parser.add_argument("--no-chapters", dest="chapters", action="store_false",
                        help="skip executing the teaching notebooks 00-06")
    parser.set_defaults(handler=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    import sys

    from focalmix_lib.reproduction.runner import reproduce
    from focalmix_lib.reproduction.grid import TABLES

    only = tuple(t.strip() for t in args.only.split(",") if t.strip())
    unknown = sorted(set(only) - set(TABLES))
    if unknown or args.seeds < 1:
        print(f"focalmix reproduce: error: unknown table(s) {unknown} (choose from {','.join(TABLES)})" if unknown
              else "focalmix reproduce: error: --seeds must be at least 1", file=sys.stderr)
        return 2
    outcome = reproduce(args.profile, args.out, seeds=args.seeds, shard=args.shard, only=only,
                        collect=args.collect, data=args.data, chapters=args.chapters)
    shard = f"{args.shard[0]}/{args.shard[1]}" if args.shard else ""
    print(f"tables: {outcome.tables}" if outcome.tables else f"shard {shard} done; when every shard has finished "
          f"run: focalmix reproduce --profile {args.profile} --out {args.out} --seeds {args.seeds} --collect")
    failed = [*(f"chapter {line}" for line in outcome.failed_chapters), *(f"run {line}" for line in outcome.failed_runs)]
    if failed:
        print(f"focalmix reproduce: {len(failed)} failed (rerun the same command to retry them):", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0
