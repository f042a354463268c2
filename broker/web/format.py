"""Formatting of values on the liaison pages, as Jinja filters.

In: raw values from the log (ms since the epoch, hex strings, origins). Out:
plain strings; escaping is left to the templates' autoescaping.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from protocols.checkpoint import parse_checkpoint, parse_signed_note
from protocols.errors import IxbError

__all__ = [
    "FILTERS",
    "count",
    "duration",
    "log_name",
    "note_time",
    "short_hex",
    "urlpath",
    "utc",
    "utc_iso",
]


def utc(ms: int | None) -> str:
    """``2026-11-18 09:30:00`` for ms since the epoch; ``—`` for None."""
    if ms is None:
        return "—"
    try:
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    except OverflowError:
        return str(ms)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def utc_iso(ms: int) -> str:
    """``2026-11-18T09:30:00Z``: ISO 8601 UTC, for files others read."""
    return utc(ms).replace(" ", "T") + "Z"


def duration(ms: int) -> str:
    """``2 d 3 h``, ``1 h 0 min``, ``5 min``: how long overdue or until due."""
    minutes = max(ms, 0) // 60_000
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


def count(n: int) -> str:
    """``1,234,567``."""
    return f"{n:,}"


def short_hex(value: str | None) -> str:
    if not value:
        return ""
    return value if len(value) <= 16 else value[:16] + "…"


def log_name(origin: str) -> str:
    """``MMR's log`` for ``ixb.MMR``: officers think in countries, not origins."""
    cc = origin.removeprefix("ixb.")
    return f"{cc}'s log" if cc != origin and len(cc) == 3 else origin


def urlpath(value: str) -> str:
    """One path segment, percent-encoded (``/`` included)."""
    return urllib.parse.quote(value, safe="")


def note_time(note: bytes) -> int | None:
    """When a signed checkpoint note says it was made; None if it cannot be read."""
    try:
        body, _ = parse_signed_note(note)
        return parse_checkpoint(body).time_ms
    except IxbError:
        return None


FILTERS: Final[Mapping[str, Callable[..., Any]]] = {
    "utc": utc,
    "duration": duration,
    "count": count,
    "short_hex": short_hex,
    "log_name": log_name,
    "urlpath": urlpath,
}
