"""The ``dynamig`` console script: one entry point, one module per subcommand.

Exit status: 0 success, 1 user error (one line naming the file, field or object), 2 usage error
(argparse, or a subcommand's own check before any work starts). ``--json`` prints one JSON document
on stdout; logs and progress go to stderr. ``-v``/``--log-level`` work before and after the
subcommand (so a Helm chart's ``extraArgs`` can raise the log level).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence
from importlib import metadata

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

LOG_LEVELS = ("debug", "info", "warning", "error")


def version() -> str:
    try:
        return metadata.version("dynamig")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :class:`x` / :meth:`~a.b`
_LITERAL = re.compile(r"``([^`]+)``")
_INVENTORY_REF = re.compile(r"DESIGN §8\b")  # the inventory format: documented in the repository
_SECTION_REF = re.compile(r"\s*\(?DESIGN §[0-9.]+\)?")


def clean_text(text: str) -> str:
    """Help text without reStructuredText roles and literals, and without references to the design
    file (not in the repository; the inventory's section is docs/formats.md)."""
    out = _ROLE.sub(r"\1", text)
    out = _LITERAL.sub(r"\1", out)
    out = _INVENTORY_REF.sub("docs/formats.md", out)
    return _SECTION_REF.sub("", out)


def clean_doc(text: str | None) -> str | None:
    """A module docstring as plain help text (:func:`clean_text`), bullets as ``-``."""
    if not text:
        return text
    out = re.sub(r"^\* ", "- ", clean_text(text), flags=re.M)
    return out.strip() + "\n"


def _add_logging_options(p: argparse.ArgumentParser, top: bool) -> None:
    # Top level: real defaults. Subcommand: SUPPRESS, so an option not given after the subcommand
    # leaves the value given before it alone; they land in separate dests and are combined in main.
    suffix = "" if top else "_sub"
    p.add_argument("-v", "--verbose", action="count", dest="verbose" + suffix,
                   default=0 if top else argparse.SUPPRESS,
                   help="more log output on stderr (-v info, -vv debug)")
    p.add_argument("--log-level", choices=LOG_LEVELS, dest="log_level" + suffix,
                   default=None if top else argparse.SUPPRESS,
                   help="log level on stderr (default warning; overrides -v)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamig",
        description="On-demand MIG and HAMi-core GPU sharing for Kubernetes, planned by CP-SAT.",
    )
    parser.add_argument("--version", action="version", version=f"dynamig {version()}")
    _add_logging_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"dynamig.commands.{name}")
        p = module.add_parser(sub)
        if p.description:
            p.description = clean_doc(p.description)
            p.formatter_class = argparse.RawDescriptionHelpFormatter
        for action in p._actions:
            if isinstance(action.help, str):
                action.help = clean_text(action.help)
        _add_logging_options(p, top=False)
        p.set_defaults(_run=module.run)
    return parser


def log_level(args: argparse.Namespace) -> int:
    level = getattr(args, "log_level_sub", None) or args.log_level
    if level:
        return int(getattr(logging, level.upper()))
    verbose = args.verbose + getattr(args, "verbose_sub", 0)
    return logging.WARNING - 10 * min(verbose, 2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=log_level(args), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args))
    except DynamigError as e:
        print(f"dynamig {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
