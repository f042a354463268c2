"""Bounded audit growth under a flood of refusals.

Every refusal is answered (a signed rejection receipt, coalesced per batch)
and counted (metrics), but only the first ``logged_per_window`` refusals of
one source and code in a window get an audit entry each; the rest of the
window becomes one entry with their count when the window closes. A source
is an agency's ingress or a peer's link: a flood from one member cannot
grow the log, and the checkpoints every peer cosigns, without bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOW_MS = 60_000
LOGGED_PER_WINDOW = 10


@dataclass
class _Window:
    start_ms: int
    logged: int = 0
    suppressed: int = 0


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Refusals of one source and code in one window that got no entry of their own."""

    source: str
    code: str
    count: int
    start_ms: int
    end_ms: int


@dataclass
class RefusalWindows:
    window_ms: int = WINDOW_MS
    logged_per_window: int = LOGGED_PER_WINDOW
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    _pending: list[Suppressed] = field(default_factory=list)

    def admit(self, source: str, code: str, now_ms: int) -> bool:
        """Whether this refusal gets an audit entry of its own (else it is counted)."""
        key = (source, code)
        window = self._windows.get(key)
        if window is None or now_ms - window.start_ms >= self.window_ms:
            if window is not None and window.suppressed:  # ended, not yet closed: keep its count
                self._pending.append(self._summary(source, code, window, now_ms))
            window = self._windows[key] = _Window(now_ms)
        if window.logged < self.logged_per_window:
            window.logged += 1
            return True
        window.suppressed += 1
        return False

    def retract(self, source: str, code: str, *, logged: bool) -> None:
        """Take back one :meth:`admit` (its message was not settled: it will come back)."""
        window = self._windows.get((source, code))
        if window is None:
            return  # closed meanwhile: its count was summed up already
        if logged and window.logged:
            window.logged -= 1
        elif not logged and window.suppressed:
            window.suppressed -= 1

    def close(self, now_ms: int) -> list[Suppressed]:
        """The counts of every window that has ended (each reported once)."""
        out, self._pending = self._pending, []
        for key, window in list(self._windows.items()):
            if now_ms - window.start_ms >= self.window_ms:
                del self._windows[key]
                if window.suppressed:
                    out.append(self._summary(*key, window, now_ms))
        return out

    def _summary(self, source: str, code: str, window: _Window, now_ms: int) -> Suppressed:
        end = min(now_ms, window.start_ms + self.window_ms)
        return Suppressed(source, code, window.suppressed, window.start_ms, end)
