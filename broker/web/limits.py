"""Every bound of the liaison pages in one place: sessions, logins, field sizes, page sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from broker.audit.search import MAX_SEARCH_LIMIT

__all__ = ["LIMITS", "WebLimits"]


@dataclass(frozen=True)
class WebLimits:
    """Every bound of the liaison pages in one place."""

    page_size: int = 50
    session_absolute_ms: int = 8 * 3600 * 1000
    session_idle_ms: int = 30 * 60 * 1000
    max_sessions: int = 10_000
    max_failures: int = 5
    failure_window_ms: int = 15 * 60 * 1000
    max_throttle_keys: int = 100_000
    max_field_chars: int = 128
    max_password_chars: int = 1024
    max_cookie_chars: int = 100
    trail_entries: int = MAX_SEARCH_LIMIT
    reconcile_rows: int = 500
    alarms_shown: int = 50
    password_checks_at_once: int = 4


LIMITS: Final = WebLimits()
