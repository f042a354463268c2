"""Which envelopes may take the synchronous path, and which replies answer a lookup (SPEC §14.2)."""

from __future__ import annotations

import pytest

from protocols.envelope import Header, decode_envelope, seal_envelope
from protocols.errors import UnauthorisedError
from protocols.examples import example_bodies
from protocols.lookups import check_lookup_answer, check_lookup_request
from protocols.messages import Receipt, ReceiptStatus
from tests.conftest import NOW_MS, Parties

BODIES = example_bodies(NOW_MS)


def header(parties: Parties, type_name: str, sender: str, to: list[str], **kw: object) -> Header:
    data = seal_envelope(
        sender=parties[sender],
        recipients=[parties.pub(r) for r in to],
        body=BODIES[type_name],
        now_ms=NOW_MS,
        ttl_ms=3_600_000,
        **kw,  # type: ignore[arg-type]
    )
    return decode_envelope(data).header


def test_lookups_are_document_checks_and_person_queries_to_one_agency(parties: Parties) -> None:
    check_lookup_request(
        header(parties, "doc.verify.request", "THA/IMMIGRATION", ["MYS/IMMIGRATION"])
    )
    check_lookup_request(header(parties, "person.query", "THA/DSI-ATHD", ["MMR/MOHA-ATTU"]))
    refused = {
        "an alert": header(parties, "alert", "THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"]),
        "two recipients": header(
            parties, "person.query", "THA/DSI-ATHD", ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"]
        ),
        "a forward": header(
            parties, "person.query", "THA/DSI-ATHD", ["MMR/MOHA-ATTU"], forward_of=b"\x01" * 16
        ),
        "an answer": header(
            parties,
            "doc.verify.response",
            "MYS/IMMIGRATION",
            ["THA/IMMIGRATION"],
            in_reply_to=b"\x01" * 16,
        ),
    }
    for what, h in refused.items():
        with pytest.raises(UnauthorisedError):
            check_lookup_request(h)
            pytest.fail(f"{what} was let through")


def test_only_the_owners_answer_or_a_hubs_receipt_answers_a_lookup(parties: Parties) -> None:
    request = header(parties, "doc.verify.request", "THA/IMMIGRATION", ["MYS/IMMIGRATION"])
    answer = header(
        parties,
        "doc.verify.response",
        "MYS/IMMIGRATION",
        ["THA/IMMIGRATION"],
        in_reply_to=request.id,
    )
    check_lookup_answer(answer, request)
    receipt = Receipt(
        for_id=request.id, status=ReceiptStatus.QUEUED, by="MYS/HUB", at_ms=NOW_MS, due_ms=NOW_MS
    )
    hub_receipt = decode_envelope(
        seal_envelope(
            sender=parties["MYS/HUB"],
            recipients=[parties.pub("THA/IMMIGRATION")],
            body=receipt,
            now_ms=NOW_MS,
            ttl_ms=3_600_000,
            in_reply_to=request.id,
        )
    ).header
    check_lookup_answer(hub_receipt, request)
    wrong = {
        "names another message": header(
            parties,
            "doc.verify.response",
            "MYS/IMMIGRATION",
            ["THA/IMMIGRATION"],
            in_reply_to=b"\x02" * 16,
        ),
        "from another agency": header(
            parties, "person.result", "MYS/RMP-ATIPSOM", ["THA/IMMIGRATION"], in_reply_to=request.id
        ),
        "not the answering type": header(
            parties, "alert", "MYS/RMP-ATIPSOM", ["THA/IMMIGRATION"], in_reply_to=request.id
        ),
        "a copy to someone else": header(
            parties,
            "doc.verify.response",
            "MYS/IMMIGRATION",
            ["THA/IMMIGRATION", "THA/DSI-ATHD"],
            in_reply_to=request.id,
        ),
    }
    for what, h in wrong.items():
        with pytest.raises(UnauthorisedError):
            check_lookup_answer(h, request)
            pytest.fail(f"a reply that {what} was let through")
