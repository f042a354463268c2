"""How many lookups a hub takes at once: a limit that follows the latency it measures.

In: each lookup's time at this hub (arrival to the reply's release), when it
ended, and how many were in flight when it arrived. Out:
:attr:`AdaptiveLimit.current`, how many the hub admits before it refuses
with ``ixb.E_BUSY``. Guaranteed: between ``floor`` and ``ceiling`` (``[lookup]
max_in_flight``); it shrinks while a queue stands and grows while the hub is
full without one, so under overload a check waits about as long as an
unloaded one (plus what the shrinking allows), not ``ceiling`` ÷ throughput.

The rule is CoDel's standing-queue test with an AIMD limit: each interval
(:data:`INTERVAL_MS`) keeps the least time any lookup took; a queue *stands*
when even that least time exceeds twice the best of the recent intervals
(:data:`BASELINE_MS`) plus :data:`SLACK_MS`. A burst that drains within
the interval does not count; a queue that persists does. A standing queue
multiplies the limit by :data:`DECREASE`; an interval that reached the limit
without one adds 1. The best recent interval is the baseline, so a hub that
became slower for good (a slower responder) settles on the new normal
within :data:`BASELINE_MS`. docs/design-decisions.md ("Lookups") says why
not a fixed limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

INTERVAL_MS = 100
BASELINE_MS = 10_000
SLACK_MS = 2.0
DECREASE = 0.9
FLOOR = 4


@dataclass
class AdaptiveLimit:
    ceiling: int
    floor: int = FLOOR
    limit: float = field(init=False)
    _start: int | None = None
    _least: float | None = None
    _fullest: int = 0
    _best: deque[tuple[int, float]] = field(default_factory=deque)
    """(end of interval, its least time) of the last :data:`BASELINE_MS`."""

    def __post_init__(self) -> None:
        self.floor = min(self.floor, self.ceiling)
        self.limit = float(self.ceiling)

    @property
    def current(self) -> int:
        return max(self.floor, int(self.limit))

    def sample(self, took_ms: float, in_flight: int, now_ms: int) -> None:
        """A lookup ended at ``now_ms`` after ``took_ms``; ``in_flight`` were at the hub when
        it arrived (itself included)."""
        if self._start is None:
            self._start = now_ms
        elif now_ms - self._start >= INTERVAL_MS:
            self._close(now_ms)
            self._start = now_ms
        self._least = took_ms if self._least is None else min(self._least, took_ms)
        self._fullest = max(self._fullest, in_flight)

    def _close(self, now_ms: int) -> None:
        least, fullest = self._least, self._fullest
        self._least, self._fullest = None, 0
        if least is None:
            return
        while self._best and self._best[0][0] < now_ms - BASELINE_MS:
            self._best.popleft()
        baseline = min((b for _, b in self._best), default=least)
        self._best.append((now_ms, least))
        if least > 2 * baseline + SLACK_MS:
            self.limit = max(float(self.floor), self.limit * DECREASE)
        elif fullest >= self.current:
            self.limit = min(float(self.ceiling), self.limit + 1)
