"""``focalmix book``: the executed chapters as a static HTML book that opens without a network."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "book", help="render the executed chapters to an offline HTML book",
        description="Render the executed chapters (NN_name.ipynb, as focalmix reproduce writes them in "
                    "OUT/notebooks) to OUT/book: one page per chapter, a table of contents, plotly.js written "
                    "once beside the pages; nothing is loaded from a network.",
    )
    parser.add_argument("--notebooks", default="reports/notebooks",
                        help="folder of executed chapters (default: reports/notebooks)")
    parser.add_argument("--out", default="reports/book", help="output folder (default: reports/book)")
    parser.set_defaults(handler=run_book)


def run_book(args: argparse.Namespace) -> int:
    from focalmix_lib.reproduction.book import write_book

    print(f"book: {write_book(args.notebooks, args.out)}")
    return 0
