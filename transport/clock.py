"""The wall clock in the protocol's unit: milliseconds since the Unix epoch.

The one clock read that ``protocols`` leaves to its callers (``now_ms``
arguments); hubs and agencies pass :func:`wall_ms`, tests a fixed clock.
"""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Now, in whole milliseconds since the Unix epoch."""
    return int(time.time() * 1000)
