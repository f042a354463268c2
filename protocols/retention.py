"""How long the content of a delivered message is kept, by message type.

The same table serves an agency's message store (profile ``[store]``) and a
hub's streams (hub config ``[retention]``). Only content goes: the metadata
(who, when, type, ids) stays in the store and the audit log. Days of 0 keep
content for ever (a stream still drops it at its maximum age).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from protocols.errors import ConfigError
from protocols.limits import MS_PER_DAY
from protocols.messages import MESSAGE_TYPES

MAX_DAYS = 36_500

DEFAULT_DAYS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "alert": 30,
        "doc.verify.request": 7,
        "doc.verify.response": 7,
        "person.query": 7,
        "person.result": 7,
        "followup.request": 180,
        "followup.decision": 180,
        "mla.request": 730,
        "mla.status": 730,
        "receipt": 30,
    }
)
"""Built-in days per type (docs/design-decisions.md gives the reasons)."""
DEFAULT_OTHER_DAYS = 90
"""Days for a type the table does not name."""


@dataclass(frozen=True, slots=True)
class Retention:
    """Days to keep content per type; ``other`` for any type not in ``days``."""

    days: Mapping[str, int] = field(default_factory=lambda: DEFAULT_DAYS)
    other: int = DEFAULT_OTHER_DAYS

    def days_for(self, type_name: str) -> int:
        return self.days.get(type_name, self.other)

    def cutoff(self, type_name: str, now_ms: int) -> int | None:
        """Content stored before this time (ms) is due to go; None: kept for ever."""
        days = self.days_for(type_name)
        return None if days == 0 else now_ms - days * MS_PER_DAY

    def expired(self, type_name: str, stored_ms: int, now_ms: int) -> bool:
        cutoff = self.cutoff(type_name, now_ms)
        return cutoff is not None and stored_ms < cutoff

    @property
    def shortest_days(self) -> int:
        """The shortest non-zero retention in force (0: everything kept for ever)."""
        positive = [d for d in (*self.days.values(), self.other) if d > 0]
        return min(positive, default=0)


def make_retention(overrides: Mapping[str, int], other: int | None, where: str) -> Retention:
    """The built-in table with ``overrides``; ``other`` (when given) replaces the
    built-in table as the default for every type not overridden.

    ``where`` names the config section in errors (``[store] days``).
    """
    for name, days in overrides.items():
        if name not in MESSAGE_TYPES:
            known = ", ".join(sorted(MESSAGE_TYPES))
            raise ConfigError(f"{where}: unknown message type {name!r} (one of {known})")
        if not 0 <= days <= MAX_DAYS:
            raise ConfigError(f"{where}.{name}: days must be 0..{MAX_DAYS}, not {days}")
    if other is not None and not 0 <= other <= MAX_DAYS:
        raise ConfigError(f"{where}: default days must be 0..{MAX_DAYS}, not {other}")
    if other is None:
        return Retention(MappingProxyType({**DEFAULT_DAYS, **overrides}), DEFAULT_OTHER_DAYS)
    return Retention(MappingProxyType(dict(overrides)), other)
