"""The ``focalmix`` command: one entry point, one subcommand per job.

Each module of this package registers its subcommands with ``register(subparsers)``
and imports the heavy libraries (torch, SimpleITK, napari) inside its handlers, so
that ``focalmix --help`` answers at once. Handlers return an exit status.
Bad input (:class:`~focalmix_lib.errors.KitInputError`: a file and row;
:class:`~focalmix_lib.errors.ConfigError`: a field and its value, or a config.yaml and
a field) ends in a one-line message ``focalmix <command>: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from focalmix_lib import __version__
from focalmix_lib.errors import ConfigError, KitInputError

# Modules of this package that register subcommands, in the order of the help text.
COMMAND_MODULES = ("data_commands", "train_commands", "detect_command", "evaluate_command", "view_command",
                   "reproduce_command", "book_command")


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer that is at least ``low`` (argparse reports anything else)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="focalmix",
        description="FocalMix kit: semi-supervised 3D lung nodule detection (CVPR 2020), reproduced.",
    )
    parser.add_argument("--version", action="version", version=f"focalmix {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (KitInputError, ConfigError) as error:
        print(f"focalmix {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"focalmix {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
