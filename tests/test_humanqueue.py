"""The human queue's record of answers: real SQLite, the real message store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agency_client.humanqueue import AnswerBook
from agency_client.msgstore import MessageStore
from protocols.envelope import Header
from protocols.errors import UsageError
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import new_message_id
from protocols.keys import Identity
from protocols.limits import MS_PER_DAY, MS_PER_HOUR
from protocols.messages import DocPurpose, DocVerifyRequest, PersonQuery
from protocols.mrz import build_td3
from tests.test_msgstore import ME, NOW, alert

CHECK = DocVerifyRequest(
    mrz=build_td3(
        issuing_state="MYS",
        surname="SAMPLE",
        given_names="SITI",
        document_number="A1",
        nationality="MYS",
        birth_date="900101",
        sex="F",
        expiry_date="310101",
    ),
    purpose=DocPurpose.BORDER_CHECK,
)
QUERY = PersonQuery(surname="EXAMPLE", birth_date="1985-06-15", purpose="X", legal_basis="Y")


def header(type_name: str, created: int, priority: Priority) -> Header:
    return Header(
        id=new_message_id(created, os.urandom(10)),
        type=type_name,
        sender="THA/IMMIGRATION",
        sender_key=b"\x00" * 16,
        recipients=[str(ME)],
        created=created,
        expires=created + 7 * MS_PER_DAY,
        handling=HandlingCode.H0,
        priority=priority,
    )


def test_the_queue_is_what_was_received_and_not_answered(tmp_path: Path) -> None:
    path = tmp_path / "MYS-RMP-ATIPSOM.state"
    store = MessageStore(path, [Identity.generate(ME)], content_days=0, now=NOW)
    check = header(CHECK.TYPE, NOW - MS_PER_HOUR, Priority.URGENT)
    query = header(QUERY.TYPE, NOW - 2 * MS_PER_DAY, Priority.NORMAL)
    late = header(CHECK.TYPE, NOW - 9 * MS_PER_HOUR, Priority.URGENT)
    for h, body in ((check, CHECK), (query, QUERY), (late, CHECK)):
        store.keep(header=h, body=body, via=[], received_at=h.created + 1000)
    store.keep(header=header("alert", NOW, Priority.URGENT), body=alert(), via=[], received_at=NOW)
    book = AnswerBook(path)

    queued = book.queued(store)
    assert [e.message.id for e in queued] == [late.message_id, check.message_id, query.message_id]
    assert [e.due_text(NOW) for e in queued] == ["overdue by 1 h", "due in 7 h", "due in 5 d"]

    book.claim(check.sender, check.message_id, "EXAMPLE Insp. Aziz", NOW)
    with pytest.raises(UsageError, match=r"answered already, .* by EXAMPLE Insp\. Aziz"):
        book.claim(check.sender, check.message_id, "someone else", NOW)
    book.sent(check.sender, check.message_id, "answer-id")
    book.release(check.sender, check.message_id)  # sent: a release no longer applies
    book.claim(query.sender, query.message_id, "X", NOW)
    book.release(query.sender, query.message_id)  # not sent: back in the queue
    book.record(late.sender, late.message_id, "automated", "auto-id", NOW)
    assert [e.message.id for e in book.queued(store)] == [query.message_id]
    answered = book.get(check.sender, check.message_id)
    assert answered is not None and answered.answer_id == "answer-id"
    book.close()
    store.close()
