"""``ixb``: one command for everybody, a thin dispatcher over the packages' own CLIs.

Each command group lives in the package that owns it (``agency_client.cli``
for keys, MRZ and envelopes; ``broker`` for hub commands once they exist).
This module only maps group names to their ``register`` functions and turns
every typed error into one readable line and exit status 2 (with ``--json``,
also ``{"error": {"code", "detail"}}`` on stdout: :mod:`transport.cliout`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Sequence

import structlog

from agency_client import cli as agency_cli
from agency_client import commands as agency_commands
from agency_client import directory_cli, index_cli, profile_cli
from broker import audit_cli, federation_cli
from broker import cli as broker_cli
from ixb import compose, demo
from protocols.errors import IxbError, UsageError
from transport.cliout import error_document, json_text, wants_json

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cat big | head`

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

GROUPS: tuple[Register, ...] = (
    agency_cli.register,
    agency_commands.register,
    directory_cli.register,
    index_cli.register,
    profile_cli.register,
    broker_cli.register,
    audit_cli.register,
    federation_cli.register,
    demo.register,
    compose.register,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line in the ixb error format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(UsageError(f"{self.prog}: {message}").one_line() + "\n")
        raise SystemExit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="ixb",
        description="Secure cross-border intelligence exchange (signed, end-to-end encrypted).",
    )
    parser.add_argument("--version", action="version", version=f"ixb {version()}")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    for register in GROUPS:
        register(sub)
    return parser


def configure_cli_logging() -> None:
    """People get key=value lines on stderr, warnings only (IXB_LOG_LEVEL=info for more).

    Services (``ixb hub run``) switch to JSON lines themselves.
    """
    level = getattr(logging, os.environ.get("IXB_LOG_LEVEL", "WARNING").upper(), logging.WARNING)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def version() -> str:
    """The installed package's version."""
    try:
        return importlib.metadata.version("ixb")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    configure_cli_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.group is None:  # `ixb` alone: what it can do
        parser.print_help()
        return 0
    try:
        status: int = args.func(args)
    except IxbError as exc:
        sys.stderr.write(exc.one_line() + "\n")
        if wants_json(args):  # a script reading stdout gets one object either way
            sys.stdout.write(json_text(error_document(exc)))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`ixb inbox | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
