"""The ``gestures`` command line.

Each subcommand lives in the module that does the work; that module defines
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking
the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "gestures_hub.presets",
    "gestures_hub.extract",
    "gestures_hub.gestures_import",
    "gestures_hub.hub",
    "gestures_hub.synthetic",
    "gestures_hub.train", "gestures_hub.reproduce",
    "gestures_hub.predict", "gestures_hub.quickstart",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gestures",
        description=(
            "GESTURES for the Hugging Face ecosystem: turn seizure videos of any length into a "
            "seizure-level classification (FOS vs TCS) with a timeline of evidence. "
            "Research software: not a medical device."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gestures-hub {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
