"""Roles: what an agency does, and so which message types it may send (SPEC.md §12 Roles).

An agency may send a type if any of its roles may (:data:`ROLE_MAY_SEND`);
a hub may send only receipts (:data:`HUB_MAY_SEND`). :func:`check_may_send`
is the one check, raising :class:`~protocols.errors.UnauthorisedError`, or
:class:`~protocols.errors.SchemaError` for a type that does not exist.
Which roles an agency holds comes from its verified directory entry
(:mod:`protocols.trusted`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from protocols.errors import SchemaError, UnauthorisedError
from protocols.messages import MESSAGE_TYPES


class Role(enum.StrEnum):
    """What an agency does, and so which message types it may send."""

    TRAFFICKING_UNIT = "trafficking_unit"
    IMMIGRATION = "immigration"
    DOCUMENT_AUTHORITY = "document_authority"
    INVESTIGATOR = "investigator"
    CENTRAL_AUTHORITY = "central_authority"
    LIAISON = "liaison"
    AUDITOR = "auditor"


MAX_ROLES: Final = len(Role)

_CASEWORK: Final = frozenset(
    {
        "alert",
        "person.query",
        "person.result",
        "followup.request",
        "followup.decision",
        "receipt",
    }
)

ROLE_MAY_SEND: Final[Mapping[Role, frozenset[str]]] = MappingProxyType(
    {
        Role.TRAFFICKING_UNIT: _CASEWORK,
        Role.INVESTIGATOR: _CASEWORK,
        Role.IMMIGRATION: frozenset({"doc.verify.request", "alert", "receipt"}),
        Role.DOCUMENT_AUTHORITY: frozenset({"doc.verify.response", "receipt"}),
        Role.CENTRAL_AUTHORITY: frozenset({"mla.request", "mla.status", "alert", "receipt"}),
        # Oversight reads the audit log through its hub; it takes no part in exchanges.
        Role.LIAISON: frozenset(),
        Role.AUDITOR: frozenset(),
    }
)
"""Message types each role may send; an agency may send the union over its roles."""

HUB_MAY_SEND: Final = frozenset({"receipt"})
"""Hubs sign rejection and relay receipts, nothing else."""


def check_may_send(roles: Iterable[Role], type_name: str) -> None:
    """Refuse unless one of ``roles`` may send ``type_name`` (:data:`ROLE_MAY_SEND`)."""
    if type_name not in MESSAGE_TYPES:
        raise SchemaError(f"unknown message type {type_name[:40]!r}")
    held = sorted(set(roles))
    if not any(type_name in ROLE_MAY_SEND[r] for r in held):
        named = ", ".join(held) or "no role"
        raise UnauthorisedError(f"{named} may not send {type_name}")
