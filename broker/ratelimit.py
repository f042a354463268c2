"""Per-sender token buckets: ``per_minute`` sustained, ``burst`` at once.

The caller passes ``now_ms`` (the decision's one reference time); the
limiter reads no clock, so a batch is limited against one instant and tests
step time by hand. Time going backwards refills nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.errors import RateLimitedError

MS_PER_MINUTE = 60_000


@dataclass
class _Bucket:
    tokens: float
    updated_ms: int


@dataclass
class RateLimiter:
    """Token bucket per sender; ``overrides`` gives some senders their own (per minute, burst)."""

    per_minute: int
    burst: int
    overrides: dict[str, tuple[int, int]] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, who: str, now_ms: int) -> None:
        """Spend one token of ``who``'s bucket, or raise ``ixb.E_RATE_LIMITED``."""
        per_minute, burst = self.overrides.get(who, (self.per_minute, self.burst))
        bucket = self._buckets.setdefault(who, _Bucket(float(burst), now_ms))
        elapsed = max(0, now_ms - bucket.updated_ms)
        bucket.tokens = min(float(burst), bucket.tokens + elapsed * per_minute / MS_PER_MINUTE)
        bucket.updated_ms = max(bucket.updated_ms, now_ms)
        if bucket.tokens < 1.0:
            raise RateLimitedError(f"{who} is over {per_minute} messages a minute")
        bucket.tokens -= 1.0
