"""When a request's answer is due, per bilateral agreement (SPEC §6), and how late it is.

Each pair of countries may agree its own answer times (:class:`Tiers`); the
defaults are EU Directive 2023/977's. A hub computes a request's due time from
its header alone (``created`` and ``priority``) and the tiers agreed with the
other country of the request, so both hubs of a pair, configured with the same
agreement, compute the same time: :func:`due_ms`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from protocols.errors import ConfigError
from protocols.handling import Priority
from protocols.limits import MS_PER_SECOND

MIN_TIER_MS: Final = MS_PER_SECOND
"""The shortest answer time an agreement may set (drills and tests use seconds)."""


@dataclass(frozen=True, slots=True)
class Tiers:
    """Answer times in ms per priority; each at least :data:`MIN_TIER_MS`."""

    urgent_ms: int = Priority.URGENT.answer_within_ms
    high_ms: int = Priority.HIGH.answer_within_ms
    normal_ms: int = Priority.NORMAL.answer_within_ms

    def __post_init__(self) -> None:
        for name in ("urgent_ms", "high_ms", "normal_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < MIN_TIER_MS:
                raise ConfigError(f"deadlines: {name} must be at least {MIN_TIER_MS} ms")

    def within_ms(self, priority: Priority) -> int:
        return {
            Priority.URGENT: self.urgent_ms,
            Priority.HIGH: self.high_ms,
            Priority.NORMAL: self.normal_ms,
        }[priority]

    @property
    def shortest_ms(self) -> int:
        return min(self.urgent_ms, self.high_ms, self.normal_ms)


DEFAULT_TIERS: Final = Tiers()


def agreed_tiers(
    country: str,
    sender_country: str,
    recipient_countries: Collection[str],
    agreements: Mapping[str, Tiers],
) -> Tiers:
    """The tiers that apply at ``country``'s hub to a request between these countries.

    The other side of the request names the agreement: its sender's country at
    the owner's hub, its recipients' country at the requester's hub. A request
    to several countries takes the shortest answer time per tier among their
    agreements (the requester is owed the strictest); one within ``country``
    takes the defaults.
    """
    if sender_country != country:
        return agreements.get(sender_country, DEFAULT_TIERS)
    others = sorted({c for c in recipient_countries if c != country})
    if not others:
        return DEFAULT_TIERS
    found = [agreements.get(c, DEFAULT_TIERS) for c in others]
    return Tiers(
        urgent_ms=min(t.urgent_ms for t in found),
        high_ms=min(t.high_ms for t in found),
        normal_ms=min(t.normal_ms for t in found),
    )


def due_ms(created_ms: int, priority: Priority, tiers: Tiers = DEFAULT_TIERS) -> int:
    """When the answer to a request created at ``created_ms`` is due."""
    return created_ms + tiers.within_ms(priority)
