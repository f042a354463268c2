"""Argument types for the ``ixb`` commands: every number and code checked where it is parsed.

argparse calls these on the text the user typed; an ``ArgumentTypeError``
becomes the dispatcher's one line (``error ixb.E_USAGE: … argument --limit:
…``) and exit 2, so no value out of range reaches a command (or a traceback).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from protocols.errors import IxbError
from protocols.identifiers import check_country
from transport.connect import RECONNECT_WAIT_S

DEFAULT_CONNECT_TIMEOUT_S = 5.0
"""How long a command tries to reach its hub's NATS before it says so (``--timeout``)."""
MAX_SECONDS = 24 * 3600.0
CLI_RECONNECTS = 10
"""A command's least reconnects after a lost connection (every 0.5 s); then it gives up."""


def reconnects_for(timeout: float) -> int:
    """Reconnect attempts for a command whose connect gives up after ``timeout`` seconds.

    nats-py counts the first connect's attempts against the same bound: enough
    of them that ``timeout``, not the count, ends a first connect that fails,
    and a lost connection is retried for about as long."""
    return max(CLI_RECONNECTS, math.ceil(timeout / RECONNECT_WAIT_S) + 2)


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An integer from ``low`` to ``high`` inclusive."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: {low} to {high}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its messages
    return parse


def seconds(*, allow_zero: bool = False, high: float = MAX_SECONDS) -> Callable[[str], float]:
    """A duration in seconds: more than 0 (or at least 0), at most ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            low = "at least 0" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{text} seconds: must be {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{text} seconds: at most {high:g}")
        return value

    parse.__name__ = "seconds"
    return parse


def country(text: str) -> str:
    """A 3-letter country code (ISO 3166-1 alpha-3, as in the identifiers), e.g. ``MYS``."""
    try:
        return check_country(text.strip().upper())
    except IxbError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a 3-letter country code (e.g. MYS)"
        ) from None


def add_connect_timeout(parser: argparse.ArgumentParser) -> None:
    """``--timeout SECONDS``: how long the command tries to reach the hub's NATS."""
    parser.add_argument(
        "--timeout",
        type=seconds(),
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up reaching the hub's NATS server after SECONDS "
        f"(default {DEFAULT_CONNECT_TIMEOUT_S:g})",
    )
