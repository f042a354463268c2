"""``ixb``: one command for everybody, a thin dispatcher over the packages' own CLIs.

Each command group lives in the package that owns it (``agency_client.cli``
for keys, MRZ and envelopes; ``broker`` for hub commands once they exist).
This module only maps group names to their ``register`` functions and turns
every typed error into one readable line and exit status 2 (with ``--json``,
also ``{"error": {"code", "detail"}}`` on stdout: :mod:`transport.cliout`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Sequence

import structlog

from protocols.errors import IxbError, UsageError
from transport.cliout import error_document, json_text, wants_json

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cat big | head`

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

GROUPS: dict[str, tuple[str, ...]] = {
    "agency_client.cli": ("keys", "mrz", "envelope"),
    "agency_client.commands": (
        "agency", "send", "verify-doc", "query", "receipts", "inbox", "show", "export",
    ),
    "agency_client.casework_cli": ("followup", "mla"),
    "agency_client.directory_cli": ("directory",),
    "agency_client.index_cli": ("index",),
    "agency_client.profile_cli": ("profile",),
    "agency_client.registry_cli": ("registry",),
    "agency_client.queue_cli": ("queue",),
    "broker.cli": ("hub",),
    "broker.audit_cli": ("audit",),
    "broker.federation_cli": ("federation",),
    "ixb.retention_cli": ("retention",),
    "ixb.demo": ("demo",),
    "ixb.compose": ("compose",),
    "ixb.overdue": ("overdue",),
}  # fmt: skip
"""Each module with a ``register`` function → the commands it adds, in the order of ``ixb --help``.

A command line imports only the module of its command (a connecting command
need not load the hub's web server): start-up time is part of every
command's time to fail. ``tests/test_cli_json.py`` checks this table against
what each ``register`` really adds."""


def _register(module: str) -> Register:
    register: Register = importlib.import_module(module).register
    return register


def _modules_for(argv: Sequence[str]) -> list[str]:
    """The modules ``argv`` needs: its command's alone, or all (help, unknown commands)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    owners = [m for m, commands in GROUPS.items() if first in commands]
    return owners or list(GROUPS)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line in the ixb error format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(UsageError(f"{self.prog}: {message}").one_line() + "\n")
        raise SystemExit(EXIT_USER_ERROR)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ixb`` parser: every command, or (given ``argv``) only what ``argv`` needs."""
    parser: argparse.ArgumentParser = _Parser(
        prog="ixb",
        description="Secure cross-border intelligence exchange (signed, end-to-end encrypted).",
    )
    parser.add_argument("--version", action="version", version=f"ixb {version()}")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    for module in list(GROUPS) if argv is None else _modules_for(argv):
        _register(module)(sub)
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
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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
