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
    register_scan: int = 20_000  # entries one register page reads at most
    export_rows: int = 10_000  # rows of a CSV export
    session_absolute_ms: int = 8 * 3600 * 1000
    session_idle_ms: int = 30 * 60 * 1000
    max_sessions: int = 10_000
    backoff_free_failures: int = 2  # failures of a (name, client) before it must wait
    backoff_base_ms: int = 1_000  # the first wait; doubled at each further failure
    backoff_max_ms: int = 5 * 60 * 1000
    max_client_failures: int = 30  # per client over all names, within the window
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
