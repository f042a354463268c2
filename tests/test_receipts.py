"""Receipts are statements by their signer, and only the owner's answer closes a request."""

from __future__ import annotations

import pytest

from protocols.errors import UnauthorisedError
from protocols.identifiers import Principal, parse_principal
from protocols.messages import Receipt, ReceiptStatus
from protocols.receipts import (
    check_receipt_envelope,
    check_receipt_signer,
    check_receipt_statement,
    closes_request,
)

NOW = 1_795_000_000_000
FOR_ID = b"\x01" * 16
THA_SENDER = parse_principal("THA/DSI-ATHD")
MYS_OWNER = parse_principal("MYS/RMP-ATIPSOM")
MMR_AGENCY = parse_principal("MMR/MOHA-ATTU")
RECIPIENTS = (MYS_OWNER,)  # a THA → MYS message


def receipt(status: ReceiptStatus, by: str, **kw: object) -> Receipt:
    code = "ixb.E_UNAUTHORISED" if status is ReceiptStatus.REJECTED else None
    return Receipt(for_id=FOR_ID, status=status, by=by, at_ms=NOW, code=code, **kw)  # type: ignore[arg-type]


def full(r: Receipt, signer: str) -> None:
    """Both parts of the rule, as the original's sender checks a receipt."""
    check_receipt_signer(r, parse_principal(signer), in_reply_to=FOR_ID)
    check_receipt_statement(r, parse_principal(signer), THA_SENDER, RECIPIENTS)


@pytest.mark.parametrize(
    ("status", "signer"),
    [
        (ReceiptStatus.ACCEPTED, "THA/HUB"),
        (ReceiptStatus.RELAYED, "THA/HUB"),
        (ReceiptStatus.REJECTED, "THA/HUB"),
        (ReceiptStatus.REJECTED, "MYS/HUB"),  # a destination hub refuses what it won't deliver
        (ReceiptStatus.DELIVERED, "MYS/HUB"),
        (ReceiptStatus.READ, "MYS/RMP-ATIPSOM"),
    ],
)
def test_genuine_statements_are_accepted(status: ReceiptStatus, signer: str) -> None:
    full(receipt(status, signer), signer)
    check_receipt_envelope(parse_principal(signer), [THA_SENDER], THA_SENDER, RECIPIENTS)


@pytest.mark.parametrize(
    ("status", "by", "signer", "match"),
    [
        # the finding: an MMR agency's envelope carrying MYS's hub's delivery
        (ReceiptStatus.DELIVERED, "MYS/HUB", "MMR/MOHA-ATTU", "by is not"),
        (ReceiptStatus.READ, "MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU", "by is not"),
        (ReceiptStatus.DELIVERED, "MYS/RMP-ATIPSOM", "MYS/RMP-ATIPSOM", "agency may not"),
        (ReceiptStatus.ACCEPTED, "MYS/RMP-ATIPSOM", "MYS/RMP-ATIPSOM", "agency may not"),
        (ReceiptStatus.REJECTED, "MYS/RMP-ATIPSOM", "MYS/RMP-ATIPSOM", "agency may not"),
        (ReceiptStatus.READ, "MYS/HUB", "MYS/HUB", "hub may not"),
    ],
)
def test_statements_refused_without_the_original(
    status: ReceiptStatus, by: str, signer: str, match: str
) -> None:
    with pytest.raises(UnauthorisedError, match=match):
        check_receipt_signer(receipt(status, by), parse_principal(signer), in_reply_to=FOR_ID)


@pytest.mark.parametrize(
    ("status", "signer", "match"),
    [
        (ReceiptStatus.READ, "MMR/MOHA-ATTU", "recipient"),  # not a recipient
        (ReceiptStatus.READ, "THA/DSI-ATHD", "recipient"),  # the sender itself
        (ReceiptStatus.DELIVERED, "MMR/HUB", "recipient's country"),
        (ReceiptStatus.DELIVERED, "THA/HUB", "recipient's country"),  # no THA recipient
        (ReceiptStatus.ACCEPTED, "MYS/HUB", "sender's country"),
        (ReceiptStatus.RELAYED, "MMR/HUB", "sender's country"),
        (ReceiptStatus.REJECTED, "MMR/HUB", "sender's or a recipient's"),
    ],
)
def test_statements_refused_against_the_original(
    status: ReceiptStatus, signer: str, match: str
) -> None:
    with pytest.raises(UnauthorisedError, match=match):
        full(receipt(status, signer), signer)


def test_the_envelope_must_reply_to_the_receipts_first_id() -> None:
    r = receipt(ReceiptStatus.DELIVERED, "MYS/HUB")
    with pytest.raises(UnauthorisedError, match="in_reply_to"):
        check_receipt_signer(r, parse_principal("MYS/HUB"), in_reply_to=b"\x02" * 16)


def test_an_agency_reads_one_message_at_a_time() -> None:
    r = receipt(ReceiptStatus.READ, "MYS/RMP-ATIPSOM", also=(b"\x02" * 16,))
    with pytest.raises(UnauthorisedError, match="also"):
        check_receipt_signer(r, MYS_OWNER, in_reply_to=FOR_ID)
    hub = receipt(ReceiptStatus.DELIVERED, "MYS/HUB", also=(b"\x02" * 16,))
    check_receipt_signer(hub, parse_principal("MYS/HUB"), in_reply_to=FOR_ID)


@pytest.mark.parametrize(
    ("signer", "to", "match"),
    [
        (MMR_AGENCY, [THA_SENDER], "not a recipient"),
        (parse_principal("MMR/HUB"), [THA_SENDER], "neither"),
        (MYS_OWNER, [MMR_AGENCY], "addressed to others"),
        (MYS_OWNER, [THA_SENDER, MMR_AGENCY], "addressed to others"),
    ],
)
def test_a_hub_refuses_what_the_header_shows_is_not_the_signers_to_say(
    signer: Principal, to: list[Principal], match: str
) -> None:
    with pytest.raises(UnauthorisedError, match=match):
        check_receipt_envelope(signer, to, THA_SENDER, RECIPIENTS)


def test_only_the_addressed_owners_answer_of_the_right_type_closes_a_request() -> None:
    owners = frozenset(RECIPIENTS)

    def closes(kind: str, sender: Principal, request: str, to: Principal = THA_SENDER) -> bool:
        return closes_request(
            kind,
            sender,
            [to],
            request_type=request,
            request_sender=THA_SENDER,
            request_recipients=owners,
        )

    assert closes("person.result", MYS_OWNER, "person.query")
    assert closes("mla.status", MYS_OWNER, "mla.request")
    assert not closes("person.result", MMR_AGENCY, "person.query")  # third party
    assert not closes("mla.status", MYS_OWNER, "person.query")  # wrong type
    assert not closes("receipt", MYS_OWNER, "person.query")
    assert not closes("alert", MYS_OWNER, "person.query")
    # another sender's request under the same id: not answered by this reply
    assert not closes("person.result", MYS_OWNER, "person.query", to=MMR_AGENCY)


def test_the_hubs_of_both_countries_state_queued_and_no_third() -> None:
    """SPEC §14.4 and §14.5: the owner's hub queues for a person; the requester's hub queues
    when the owner's hub did not answer; a third country's hub says nothing about it."""
    for signer in ("MYS/HUB", "THA/HUB"):
        full(
            Receipt(
                for_id=FOR_ID, status=ReceiptStatus.QUEUED, by=signer, at_ms=NOW, due_ms=NOW + 1
            ),
            signer,
        )
    forged = Receipt(
        for_id=FOR_ID, status=ReceiptStatus.QUEUED, by="MMR/HUB", at_ms=NOW, due_ms=NOW + 1
    )
    with pytest.raises(UnauthorisedError, match="sender's or a recipient's country"):
        full(forged, "MMR/HUB")
    agency = Receipt(
        for_id=FOR_ID, status=ReceiptStatus.QUEUED, by="MYS/RMP-ATIPSOM", at_ms=NOW, due_ms=NOW
    )
    with pytest.raises(UnauthorisedError, match="agency may not"):
        check_receipt_signer(agency, MYS_OWNER, in_reply_to=FOR_ID)
