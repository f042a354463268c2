"""The victims' rule (SPEC §6): which bodies name a victim, and which handling codes they take."""

from __future__ import annotations

import msgspec
import pytest

from protocols.errors import HandlingError
from protocols.examples import EXAMPLE_VICTIM, example_bodies, example_victim_alert
from protocols.handling import HandlingCode
from protocols.messages import (
    MESSAGE_TYPES,
    Alert,
    AlertCategory,
    Decision,
    FollowupDecision,
    SubjectRole,
)
from protocols.victims import check_victim_handling, names_victim

NOW = 1_795_000_000_000


@pytest.mark.parametrize("type_name", sorted(MESSAGE_TYPES))
def test_no_example_body_names_a_victim(type_name: str) -> None:
    """The examples go out under every handling code, so none of them may name one."""
    body = example_bodies(NOW)[type_name]
    assert not names_victim(body)
    for code in HandlingCode:
        check_victim_handling(body, code)


def _alert() -> Alert:
    alert = example_bodies(NOW)[Alert.TYPE]
    assert isinstance(alert, Alert)
    return alert


VICTIM_BODIES = {
    "alert with a victim subject": example_victim_alert(NOW),
    "victim-at-risk alert without subjects": msgspec.structs.replace(
        _alert(), category=AlertCategory.VICTIM_AT_RISK, subjects=()
    ),
    "follow-up decision releasing a victim": FollowupDecision(
        decision=Decision.APPROVED, decided_by="Insp. EXAMPLE", subjects=(EXAMPLE_VICTIM,)
    ),
}


@pytest.mark.parametrize("name", list(VICTIM_BODIES))
def test_a_body_naming_a_victim_travels_only_under_h2(name: str) -> None:
    body = VICTIM_BODIES[name]
    assert names_victim(body)
    check_victim_handling(body, HandlingCode.H2)
    for code in (HandlingCode.H0, HandlingCode.H1, HandlingCode.H3):
        with pytest.raises(HandlingError, match=f"not {code}"):
            check_victim_handling(body, code)


@pytest.mark.parametrize("role", [r for r in SubjectRole if r is not SubjectRole.VICTIM])
def test_other_roles_are_not_victims(role: SubjectRole) -> None:
    subject = msgspec.structs.replace(EXAMPLE_VICTIM, role=role)
    assert not names_victim(msgspec.structs.replace(_alert(), subjects=(subject,)))
    decision = FollowupDecision(
        decision=Decision.APPROVED, decided_by="Insp. EXAMPLE", subjects=(subject,)
    )
    assert not names_victim(decision)
