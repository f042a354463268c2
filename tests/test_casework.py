"""Case state from what was sent and received: follow-ups decided once, MLA statuses folded
through the state machine, anything else kept flagged, never applied (real SQLite stores)."""

from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agency_client.casework import (
    FOLLOWUP,
    MLA,
    NEW,
    OWNER,
    PENDING,
    REQUESTER,
    Casework,
    check_mla_sender,
)
from agency_client.casework_cli import _decision, _mla_priority, _sent
from agency_client.msgstore import MessageStore
from ixb.cli import build_parser
from protocols.envelope import Header
from protocols.errors import (
    TransitionError,
    UnauthorisedError,
    UnknownOutcomeError,
    UsageError,
)
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import format_message_id, new_message_id, parse_agency
from protocols.keys import Identity
from protocols.limits import MS_PER_DAY
from protocols.messages import (
    Body,
    Decision,
    FollowupDecision,
    FollowupRequest,
    MlaMeasure,
    MlaRequest,
    MlaStatus,
    MlaStatusCode,
    check_mla_transition,
)

NOW = 1_800_000_000_000
US = parse_agency("THA/OAG")
PEER = "MYS/AGC"
STRANGER = "MMR/AGO"
S = MlaStatusCode


@pytest.fixture
def me() -> Identity:
    return Identity.generate(US)


class Desk:
    """One agency's message store and casework state, in one state file."""

    def __init__(self, path: Path, me: Identity) -> None:
        self.store = MessageStore(path, [me], content_days=0, now=NOW)
        self.casework = Casework(path, [me])
        self.clock = NOW

    def receive(
        self,
        body: Body,
        *,
        sender: str = PEER,
        reply_to: str | None = None,
        priority: str = "normal",
    ) -> str:
        """Store ``body`` as received from ``sender`` (as ``ixb inbox`` does); its id."""
        self.clock += 1000
        header = Header(
            id=new_message_id(self.clock, os.urandom(10)),
            type=body.TYPE,
            sender=sender,
            sender_key=b"\x00" * 16,
            recipients=[str(US)],
            created=self.clock,
            expires=self.clock + 7 * MS_PER_DAY,
            handling=HandlingCode.H0,
            priority=Priority(priority),
            in_reply_to=None if reply_to is None else bytes.fromhex(reply_to.replace("-", "")),
        )
        assert self.store.keep(header=header, body=body, via=[], received_at=self.clock)
        return header.message_id

    def sent_mla(self) -> str:
        case_id = format_message_id(new_message_id(self.clock, os.urandom(10)))
        self.casework.open_case(
            kind=MLA,
            case_id=case_id,
            side=REQUESTER,
            peer=PEER,
            created=self.clock,
            due=self.clock + MS_PER_DAY,
            state=NEW,
            by=str(US),
            case_ref=None,
            priority="normal",
            details={"legal_basis": "EXAMPLE treaty"},
        )
        return case_id

    def states(self, kind: str, case_id: str) -> list[tuple[str, bool]]:
        return [(e.state, e.flagged is not None) for e in self.casework.history(kind, case_id)]


@pytest.fixture
def desk(tmp_path: Path, me: Identity) -> Desk:
    return Desk(tmp_path / "THA-OAG.state", me)


def mla_request() -> MlaRequest:
    return MlaRequest(
        legal_basis="EXAMPLE treaty",
        requesting_authority="MYS/AGC",
        case_summary="EXAMPLE summary",
        measures=(MlaMeasure.BANK_RECORDS,),
        contact="EXAMPLE desk",
        deadline_ms=NOW + 3 * MS_PER_DAY,
    )


def test_mla_statuses_in_order_move_the_request(desk: Desk) -> None:
    case_id = desk.sent_mla()
    previous = None
    for status in (S.RECEIVED, S.ACKNOWLEDGED, S.IN_EXECUTION, S.EXECUTED):
        desk.receive(MlaStatus(status=status, previous=previous), reply_to=case_id)
        previous = status
    assert desk.casework.sync(desk.store) == 4
    assert desk.casework.sync(desk.store) == 0  # each message applies once
    case = desk.casework.case(MLA, case_id)
    assert case is not None and case.state == "executed"
    assert desk.states(MLA, case_id) == [
        ("new", False),
        ("received", False),
        ("acknowledged", False),
        ("in_execution", False),
        ("executed", False),
    ]


def test_out_of_order_wrong_side_and_stranger_are_flagged_not_applied(desk: Desk) -> None:
    case_id = desk.sent_mla()
    desk.receive(MlaStatus(status=S.ACKNOWLEDGED, previous=S.RECEIVED), reply_to=case_id)
    desk.receive(MlaStatus(status=S.RECEIVED), reply_to=case_id)
    desk.receive(MlaStatus(status=S.ACKNOWLEDGED), sender=STRANGER, reply_to=case_id)
    desk.receive(MlaStatus(status=S.WITHDRAWN, previous=S.RECEIVED), reply_to=case_id)
    desk.receive(MlaStatus(status=S.ACKNOWLEDGED, previous=S.RECEIVED), reply_to=case_id)
    # legal from here, but sent after in_execution, which never came
    desk.receive(
        MlaStatus(status=S.REFUSED, previous=S.IN_EXECUTION, reason="EXAMPLE"), reply_to=case_id
    )
    desk.casework.sync(desk.store)
    history = desk.casework.history(MLA, case_id)
    assert [(e.state, e.flagged is not None) for e in history] == [
        ("new", False),
        ("acknowledged", True),  # before received
        ("received", False),
        ("acknowledged", True),  # from a third party
        ("withdrawn", True),  # only the requester withdraws
        ("acknowledged", False),
        ("refused", True),  # out of order
    ]
    flags = [e.flagged or "" for e in history]
    assert flags[1].startswith("ixb.E_TRANSITION: MLA status: the first status must be received")
    assert "not a party" in flags[3]
    assert flags[4].startswith("ixb.E_UNAUTHORISED:")
    assert flags[6] == "out of order: sent after in_execution, here it is acknowledged"
    case = desk.casework.case(MLA, case_id)
    assert case is not None and case.state == "acknowledged"


def test_received_mla_request_and_withdrawal_by_its_requester(desk: Desk) -> None:
    request_id = desk.receive(mla_request(), priority="high")
    desk.receive(MlaStatus(status=S.WITHDRAWN), reply_to=request_id)  # not yet received
    desk.casework.sync(desk.store)
    case = desk.casework.case(MLA, request_id)
    assert case is not None
    assert (case.side, case.state, case.due) == (OWNER, NEW, NOW + 3 * MS_PER_DAY)
    assert case.details["measures"] == ["bank_records"]
    assert desk.states(MLA, request_id) == [("new", False), ("withdrawn", True)]


@pytest.mark.parametrize(
    ("side", "status", "allowed"),
    [
        (OWNER, S.RECEIVED, True),
        (OWNER, S.REFUSED, True),
        (OWNER, S.WITHDRAWN, False),
        (REQUESTER, S.WITHDRAWN, True),
        (REQUESTER, S.ACKNOWLEDGED, False),
        (REQUESTER, S.EXECUTED, False),
    ],
)
def test_who_may_set_which_status(side: str, status: MlaStatusCode, allowed: bool) -> None:
    if allowed:
        check_mla_sender(side, status)
    else:
        with pytest.raises(UnauthorisedError):
            check_mla_sender(side, status)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(statuses=st.lists(st.sampled_from(list(S)), max_size=8))
def test_state_is_the_fold_of_the_legal_statuses(
    tmp_path_factory: pytest.TempPathFactory, me: Identity, statuses: list[MlaStatusCode]
) -> None:
    desk = Desk(tmp_path_factory.mktemp("desk") / "state", me)
    case_id = desk.sent_mla()
    for status in statuses:
        reason = "EXAMPLE" if status is S.REFUSED else None
        desk.receive(MlaStatus(status=status, reason=reason), reply_to=case_id)
    desk.casework.sync(desk.store)
    expected: MlaStatusCode | None = None
    flagged = 0
    for status in statuses:
        try:
            check_mla_sender(OWNER, status)
            check_mla_transition(expected, status)
        except (UnauthorisedError, TransitionError):
            flagged += 1
        else:
            expected = status
    case = desk.casework.case(MLA, case_id)
    assert case is not None and case.state == (expected or NEW)
    history = desk.casework.history(MLA, case_id)
    assert len(history) == len(statuses) + 1
    assert sum(e.flagged is not None for e in history) == flagged


def followup_request() -> FollowupRequest:
    return FollowupRequest(
        reference="MYS-REF-1",
        legal_basis="EXAMPLE basis",
        purpose="EXAMPLE purpose",
        requested="EXAMPLE details",
    )


def test_followup_decided_once(desk: Desk) -> None:
    request_id = desk.receive(followup_request(), priority="urgent")
    desk.casework.sync(desk.store)
    case = desk.casework.case(FOLLOWUP, request_id)
    assert case is not None and case.state == PENDING
    assert case.due == case.created + 8 * 3600 * 1000
    assert case.details == {
        "reference": "MYS-REF-1",
        "legal_basis": "EXAMPLE basis",
        "purpose": "EXAMPLE purpose",
    }

    desk.casework.claim_decision(request_id)
    with pytest.raises(TransitionError, match="being decided"):
        desk.casework.claim_decision(request_id)
    desk.casework.unclaim(request_id)  # the send failed: pending again
    desk.casework.claim_decision(request_id)
    desk.casework.record(
        FOLLOWUP,
        request_id,
        at=NOW,
        state="approved",
        by="Insp. EXAMPLE",
        msg_id=format_message_id(new_message_id(NOW, os.urandom(10))),
        sender=str(US),
        expected="deciding",
        details={},
    )
    with pytest.raises(TransitionError, match=r"decided already \(approved by Insp. EXAMPLE\)"):
        desk.casework.claim_decision(request_id)
    with pytest.raises(TransitionError, match="no follow-up request"):
        desk.casework.claim_decision(format_message_id(new_message_id(NOW, os.urandom(10))))


def test_requester_takes_the_first_decision_of_the_owner_only(desk: Desk) -> None:
    case_id = format_message_id(new_message_id(NOW, os.urandom(10)))
    desk.casework.open_case(
        kind=FOLLOWUP,
        case_id=case_id,
        side=REQUESTER,
        peer=PEER,
        created=NOW,
        due=NOW + MS_PER_DAY,
        state=PENDING,
        by=str(US),
        case_ref=None,
        priority="normal",
        details={"purpose": "EXAMPLE purpose"},
    )
    refusal = FollowupDecision(decision=Decision.REFUSED, decided_by="X", reason="EXAMPLE")
    desk.receive(refusal, sender=STRANGER, reply_to=case_id)
    approval = FollowupDecision(decision=Decision.APPROVED, decided_by="Y", released="EXAMPLE")
    desk.receive(approval, reply_to=case_id)
    desk.receive(refusal, reply_to=case_id)
    desk.casework.sync(desk.store)
    assert desk.states(FOLLOWUP, case_id) == [
        ("pending", False),
        ("refused", True),
        ("approved", False),
        ("refused", True),
    ]
    case = desk.casework.case(FOLLOWUP, case_id)
    assert case is not None and case.state == "approved"
    assert desk.casework.history(FOLLOWUP, case_id)[2].by == "Y"


def test_details_are_sealed_and_need_the_key(tmp_path: Path, desk: Desk) -> None:
    request_id = desk.receive(followup_request())
    desk.casework.sync(desk.store)
    desk.casework.close()
    path = tmp_path / "THA-OAG.state"
    raw = b"".join(bytes(r[0]) for r in sqlite3.connect(path).execute("SELECT details FROM cases"))
    assert b"EXAMPLE purpose" not in raw and b"MYS-REF-1" not in raw
    without_key = Casework(path, [])
    case = without_key.case(FOLLOWUP, request_id)
    assert case is not None and case.state == PENDING and case.details == {}
    other = Casework(path, [Identity.generate(US)])
    case = other.case(FOLLOWUP, request_id)
    assert case is not None and case.details == {}
    assert msgspec.json.encode(repr(other))  # the repr names no key
    assert "Sealer(1 keys)" in repr(other._sealer)


def test_two_processes_apply_each_message_once(tmp_path: Path, desk: Desk, me: Identity) -> None:
    case_id = desk.sent_mla()
    desk.receive(MlaStatus(status=S.RECEIVED), reply_to=case_id)
    desk.receive(MlaStatus(status=S.ACKNOWLEDGED, previous=S.RECEIVED), reply_to=case_id)
    other = Casework(tmp_path / "THA-OAG.state", [me])
    messages = desk.store.since(0)
    assert other.apply_all(messages[:1]) == 1
    assert desk.casework.apply_all(messages) == 1  # the one the other had not applied
    # a process that checked before the other applied: the unique key refuses it whole
    with pytest.raises(sqlite3.IntegrityError):
        desk.casework._apply(messages[0], f"{messages[0].sender} {messages[0].id}")
    assert desk.states(MLA, case_id) == [
        ("new", False),
        ("received", False),
        ("acknowledged", False),
    ]
    case = desk.casework.case(MLA, case_id)
    assert case is not None and case.state == "acknowledged"


def decide_args(*words: str) -> tuple[FollowupDecision, HandlingCode, str | None]:
    return _decision(build_parser().parse_args(["followup", "decide", str(US), *words]))


@pytest.mark.parametrize(
    ("words", "refusal"),
    [
        (("approve", "--officer", "X"), "--release-text or --release-file is required"),
        (("partial", "--officer", "X", "--release-text", "R"), "--reason is required"),
        (("refuse", "--officer", "X"), "--reason is required"),
        (("refuse", "--officer", "X", "--reason", "Y", "--handling", "H1"), "releases nothing"),
        (("approve", "--officer", "X", "--release-text", "R", "--handling", "H3"), "H3 needs it"),
        (("approve", "--officer", "X", "--release-text", "R", "--restriction", "Z"), "H3"),
    ],
)
def test_incomplete_decisions_are_refused(words: tuple[str, ...], refusal: str) -> None:
    with pytest.raises(UsageError, match=refusal):
        decide_args(*words)


def test_complete_decisions() -> None:
    body, handling, restriction = decide_args("approve", "--officer", "X", "--release-text", "R")
    assert (body.decision, body.released, handling, restriction) == (
        Decision.APPROVED,
        "R",
        HandlingCode.H2,
        None,
    )
    body, handling, restriction = decide_args(
        "partial", "--officer", "X", "--release-text", "R", "--reason", "Y",
        "--handling", "H3", "--restriction", "court use only",
    )  # fmt: skip
    assert body.decision is Decision.PARTIALLY_APPROVED and handling is HandlingCode.H3
    body, handling, _ = decide_args("refuse", "--officer", "X", "--reason", "Y")
    assert body.released is None and handling is HandlingCode.H0


def mla_args(*words: str) -> argparse.Namespace:
    required = ("--legal-basis", "L", "--measure", "other", "--summary", "S", "--contact", "C")
    return build_parser().parse_args(["mla", "request", "--to", PEER, *words, *required])


@pytest.mark.parametrize(
    ("words", "priority", "due"),
    [
        ((), Priority.NORMAL, NOW + 7 * MS_PER_DAY),
        (("--urgency", "urgent"), Priority.URGENT, NOW + 8 * 3_600_000),
        (("--deadline", "2027-01-15T10:00"), Priority.URGENT, 1_800_007_200_000),
        (("--deadline", "2027-01-17"), Priority.HIGH, 1_800_144_000_000),
        (("--deadline", "2027-02-01"), Priority.NORMAL, 1_801_440_000_000),
    ],
)
def test_mla_urgency_and_deadline(words: tuple[str, ...], priority: Priority, due: int) -> None:
    args = mla_args(*words)
    assert _mla_priority(args, NOW) == (priority, due)


@pytest.mark.parametrize(("deadline", "refusal"), [("2020-01-01", "in the past"), ("soon", "ISO")])
def test_mla_deadline_refused(deadline: str, refusal: str) -> None:
    args = mla_args("--deadline", deadline)
    with pytest.raises(UsageError, match=refusal):
        _mla_priority(args, NOW)


async def test_a_send_of_unknown_outcome_is_recorded_a_refused_one_is_not() -> None:
    recorded: list[bytes] = []
    msg_id = new_message_id(NOW, os.urandom(10))

    async def never_confirmed() -> bytes:
        raise UnknownOutcomeError("never confirmed", message_id=msg_id, sealed=b"sealed")

    async def refused() -> bytes:
        raise UnauthorisedError("EXAMPLE refusal")

    async def confirmed() -> bytes:
        return msg_id

    with pytest.raises(UnknownOutcomeError):
        await _sent(never_confirmed(), recorded.append)
    with pytest.raises(UnauthorisedError):
        await _sent(refused(), recorded.append)
    assert await _sent(confirmed(), recorded.append) == msg_id
    assert recorded == [msg_id, msg_id]
