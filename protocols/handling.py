"""Handling codes and priorities: the restrictions and deadlines that travel in the clear header.

Hubs must enforce them without reading content, so they live in the signed
header, not in the encrypted body.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from protocols.errors import HandlingError
from protocols.limits import MS_PER_DAY, MS_PER_HOUR


class HandlingCode(enum.StrEnum):
    """Europol-style handling codes."""

    H0 = "H0"  # law-enforcement use only
    H1 = "H1"  # not for judicial proceedings without the originator's consent
    H2 = "H2"  # no onward dissemination without consent: hubs refuse forwards
    H3 = "H3"  # other restrictions, stated in the header's restriction text

    @property
    def meaning(self) -> str:
        return _MEANING[self]


_MEANING = {
    HandlingCode.H0: "law-enforcement use only",
    HandlingCode.H1: "not to be used in judicial proceedings without the originator's consent",
    HandlingCode.H2: "no onward dissemination without the originator's consent",
    HandlingCode.H3: "other restrictions (see restriction text)",
}


class Priority(enum.StrEnum):
    """Urgency tiers with answer deadlines (EU Directive 2023/977 art. 5)."""

    URGENT = "urgent"  # 8 hours
    HIGH = "high"  # 3 days
    NORMAL = "normal"  # 7 days

    @property
    def answer_within_ms(self) -> int:
        return _DEADLINE_MS[self]


_DEADLINE_MS = {
    Priority.URGENT: 8 * MS_PER_HOUR,
    Priority.HIGH: 3 * MS_PER_DAY,
    Priority.NORMAL: 7 * MS_PER_DAY,
}


def answer_deadline_ms(created_ms: int, priority: Priority) -> int:
    """When an answer to a request created at ``created_ms`` is due."""
    return created_ms + priority.answer_within_ms


_STRICTNESS = {HandlingCode.H0: 0, HandlingCode.H1: 1, HandlingCode.H2: 2}


def check_forward(
    *,
    original_handling: HandlingCode,
    original_restriction: str | None,
    original_parties: frozenset[str],
    handling: HandlingCode,
    restriction: str | None,
    recipients: Sequence[str],
) -> None:
    """Refuse a declared forward that its original's handling code forbids (SPEC §6).

    ``original_parties`` are the original's sender and recipients: with H2,
    content may go back and forth among them but nowhere else.
    """
    if original_handling is HandlingCode.H3:
        if handling is not HandlingCode.H3 or restriction != original_restriction:
            raise HandlingError("a forward of an H3 message must keep its H3 restriction")
    elif handling is HandlingCode.H3:
        if original_handling is HandlingCode.H2:
            raise HandlingError("a forward may not replace H2 by H3")
    elif _STRICTNESS[handling] < _STRICTNESS[original_handling]:
        raise HandlingError(f"a forward may not loosen {original_handling} to {handling}")
    if original_handling is HandlingCode.H2:
        outsiders = sorted(set(recipients) - original_parties)
        if outsiders:
            raise HandlingError(
                f"H2: no onward dissemination to {', '.join(outsiders)} without consent"
            )
