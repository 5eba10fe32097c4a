"""``vtr-qdrant``: the parser and entry point; each command lives in its own module of this package.

Add a command by writing a module with ``add(subparsers)`` (registering the parser and
``set_defaults(func=...)``) and listing it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import VtrError
from . import demo, eval, info, ingest, search, serve, train_head, verify

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = (info, search, ingest, verify, demo, eval, train_head, serve)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vtr-qdrant`` command."""
    parser = argparse.ArgumentParser(prog="vtr-qdrant", description="Text-to-video retrieval on Qdrant.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vtr-qdrant`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except VtrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
