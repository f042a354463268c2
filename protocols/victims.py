"""Victims' data travels only under H2: named recipients, never forwarded (SPEC §6).

Hubs never see bodies, so the rule ties what the body holds to the handling
code in the signed clear header, which hubs do enforce: the sender refuses to
seal, and the receiver refuses to open, a body naming a victim under any other code.
"""

from __future__ import annotations

from protocols.errors import HandlingError
from protocols.handling import HandlingCode
from protocols.messages import Alert, AlertCategory, Body, FollowupDecision, Subject, SubjectRole

VICTIM_HANDLING = HandlingCode.H2
"""The one handling code a body naming a victim may travel under."""


def _any_victim(subjects: tuple[Subject, ...]) -> bool:
    return any(s.role is SubjectRole.VICTIM for s in subjects)


def names_victim(body: Body) -> bool:
    """Whether ``body`` carries a victim's data: a victim subject, or a victim-at-risk alert.

    Structural only: free text is the officer's responsibility, as ever.
    """
    if isinstance(body, Alert):
        return body.category is AlertCategory.VICTIM_AT_RISK or _any_victim(body.subjects)
    if isinstance(body, FollowupDecision):
        return _any_victim(body.subjects)
    return False


def check_victim_handling(body: Body, handling: HandlingCode) -> None:
    """Raise :class:`HandlingError` if ``body`` names a victim and ``handling`` is not H2."""
    if handling is not VICTIM_HANDLING and names_victim(body):
        raise HandlingError(
            f"a body naming a victim travels only under {VICTIM_HANDLING} "
            f"(named recipients, no onward dissemination), not {handling}"
        )
