"""The ``dynamig`` console script: one entry point, one module per subcommand.

Exit status: 0 success, 1 user error (one line naming the file, field or object), 2 usage error.
``--json`` prints one JSON document on stdout; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from models.errors import DynamigError

#: Subcommand modules under dynamig.commands, in --help order.
COMMANDS = (
    "demo",
    "plan",
    "simulate",
    "bench",
    "catalog",
    "validate_config",
    "extender",
    "deviceplugin",
    "hwcheck",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamig",
        description="On-demand MIG and HAMi-core GPU sharing for Kubernetes, planned by CP-SAT.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"dynamig.commands.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args))
    except DynamigError as e:
        print(f"dynamig {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
