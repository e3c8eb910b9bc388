"""The ``gestures`` command line.

The parsers live in :mod:`gestures_hub.commands` (no heavy imports, so ``--help`` is instant); each names the
function that runs it, which takes the parsed arguments and returns an exit code. Options that do not fit together
(:class:`gestures_hub.arguments.UsageError`) are usage errors: exit code 2, like argparse's own.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .arguments import UsageError
from .commands import COMMANDS, add_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gestures",
        description=(
            "GESTURES for the Hugging Face ecosystem: turn seizure videos of any length into a "
            "seizure-level classification (FOS vs TCS) with a timeline of evidence. "
            "Research software: not a medical device."
        ),
        epilog="Run 'gestures COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"gestures-hub {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        add_command(subparsers, name)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Import the module of the parsed command and run it; usage errors exit with code 2."""
    module, function = args.func.split(":")
    try:
        return int(getattr(importlib.import_module(f"gestures_hub.{module}"), function)(args) or 0)
    except UsageError as error:
        args.parser.error(str(error))  # exits with code 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
