"""Who may say what about a message: receipts are statements by their signer (SPEC §5).

A receipt's ``by`` is the principal that signed the envelope carrying it,
and what it states depends on who that is:

- ``accepted``, ``relayed`` — the hub of the original sender's country;
- ``rejected`` — the hub of the original sender's country or of a recipient's
  country (a destination hub refuses what it will not deliver);
- ``queued`` — a lookup waits, with its due time (SPEC §14): the hub of a
  recipient's country (no responder answered in time: a person will) or of
  the sender's country (the owner's hub did not answer: sent on durably);
- ``delivered`` — the hub of a recipient's country;
- ``read`` — an agency that is a recipient of the original, about that one
  message;
- ``overdue`` — a reminder that a request's answer is past due: the hub of
  the addressee's own country (the requester's hub to the requester, the
  owner's hub to the owner; never across a border), about that one request.

:func:`check_receipt_signer` is the part a receiver checks with the receipt
alone; :func:`check_receipt_statement` the whole rule for one original whose
sender and recipients it knows (the original's sender, for what it sent).
Hubs never see a body, so :func:`check_receipt_envelope` is the rule as far as
an envelope header shows it, for a hub that knows the original.
:func:`closes_request` says which answer closes a request (deadline tracking).

Every refusal is :class:`~protocols.errors.UnauthorisedError`
(``ixb.E_UNAUTHORISED``): the receipt is authentic, its signer may not make
the statement. Errors name fields and roles, never ids or content.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from protocols.errors import UnauthorisedError
from protocols.identifiers import Principal
from protocols.messages import REPLY_TO, Receipt, ReceiptStatus

SENDER_HUB_STATUSES: Final = frozenset({ReceiptStatus.ACCEPTED, ReceiptStatus.RELAYED})
"""Stated only by the hub of the original sender's country."""
EITHER_HUB_STATUSES: Final = frozenset({ReceiptStatus.REJECTED, ReceiptStatus.QUEUED})
"""Stated by the hub of the original sender's country or of a recipient's country."""
RECIPIENT_HUB_STATUSES: Final = frozenset({ReceiptStatus.DELIVERED})
"""Stated only by the hub of a recipient's country."""
AGENCY_STATUSES: Final = frozenset({ReceiptStatus.READ})
"""Stated only by an agency that is a recipient of the original."""
REMINDER_STATUSES: Final = frozenset({ReceiptStatus.OVERDUE})
"""Stated only by the hub of the addressee's own country, about one request that the
addressee sent or was sent (:func:`check_reminder`)."""


def check_receipt_signer(receipt: Receipt, signer: Principal, *, in_reply_to: bytes | None) -> None:
    """The rule as far as it needs no original: refuse unless ``signer`` may state ``receipt``.

    ``by`` is the signer; the envelope's ``in_reply_to`` is ``for_id``; an
    agency states only ``read``, about one message (no ``also``); a hub never
    states ``read``.
    """
    _check_by(receipt, signer)
    if in_reply_to != receipt.for_id:
        raise UnauthorisedError("receipt: for_id is not the envelope's in_reply_to")
    if signer.is_hub:
        if receipt.status in AGENCY_STATUSES:
            raise UnauthorisedError(f"receipt: a hub may not state {receipt.status}")
        if receipt.status in REMINDER_STATUSES and receipt.also:
            raise UnauthorisedError("receipt: a reminder names one request (also is set)")
        return
    if receipt.status not in AGENCY_STATUSES:
        raise UnauthorisedError(f"receipt: an agency may not state {receipt.status}")
    if receipt.also:
        raise UnauthorisedError("receipt: an agency's receipt names one message (also is set)")


def check_receipt_statement(
    receipt: Receipt,
    signer: Principal,
    original_sender: Principal,
    original_recipients: Collection[Principal],
) -> None:
    """The whole rule for one message ``receipt`` names, sent by ``original_sender``.

    The caller checks each id of ``receipt.ids`` whose original it knows.
    """
    _check_by(receipt, signer)
    status = receipt.status
    recipient_countries = {r.country for r in original_recipients}
    if status in AGENCY_STATUSES:
        if signer.is_hub or signer not in original_recipients:
            raise UnauthorisedError(
                f"receipt: {status} is stated only by a recipient of the message"
            )
        return
    if not signer.is_hub:
        raise UnauthorisedError(f"receipt: an agency may not state {status}")
    if status in SENDER_HUB_STATUSES:
        allowed = {original_sender.country}
        who = "the hub of the sender's country"
    elif status in RECIPIENT_HUB_STATUSES:
        allowed = recipient_countries
        who = "the hub of a recipient's country"
    else:
        allowed = {original_sender.country} | recipient_countries
        who = "the hub of the sender's or a recipient's country"
    if signer.country not in allowed:
        raise UnauthorisedError(f"receipt: {status} is stated only by {who}")


def check_reminder(receipt: Receipt, signer: Principal, addressee: Principal) -> None:
    """A reminder (``overdue``) is stated only by the hub of ``addressee``'s own country.

    Each hub reminds its own agencies of requests it carried; a peer hub never
    reminds them (it would be a claim about another country's deadlines). Other
    statuses pass: :func:`check_receipt_signer` and :func:`check_receipt_statement`
    rule them.
    """
    if receipt.status in REMINDER_STATUSES and (
        not signer.is_hub or signer.country != addressee.country
    ):
        raise UnauthorisedError(
            f"receipt: {receipt.status} is stated only by the hub of the addressee's country"
        )


def check_receipt_envelope(
    signer: Principal,
    recipients: Collection[Principal],
    original_sender: Principal,
    original_recipients: Collection[Principal],
) -> None:
    """The rule as a hub sees it: a receipt's header, and what the hub knows of the original.

    The receipt goes to the original's sender alone; an agency that signs it
    is a recipient of the original (it can state only ``read``); a hub that
    signs it is of the sender's or a recipient's country (it can state
    nothing about other countries' messages).
    """
    if list(recipients) != [original_sender]:
        raise UnauthorisedError("receipt: addressed to others than the message's sender")
    if signer.is_hub:
        countries = {original_sender.country} | {r.country for r in original_recipients}
        if signer.country not in countries:
            raise UnauthorisedError(
                "receipt: signed by a hub of neither the sender's nor a recipient's country"
            )
    elif signer not in original_recipients:
        raise UnauthorisedError("receipt: signed by an agency that is not a recipient")


def closes_request(
    answer_type: str,
    answer_sender: Principal,
    answer_recipients: Collection[Principal],
    *,
    request_type: str,
    request_sender: Principal,
    request_recipients: Collection[Principal],
) -> bool:
    """Whether an answer naming a request in ``in_reply_to`` closes it: its type answers
    the request's type (SPEC §5 "answers"), its sender is a recipient of the request, and
    it is addressed to the request's sender (ids are unique per sender). A receipt never
    closes a request."""
    return (
        REPLY_TO.get(answer_type) == request_type
        and answer_sender in request_recipients
        and request_sender in answer_recipients
    )


def _check_by(receipt: Receipt, signer: Principal) -> None:
    if receipt.by != str(signer):
        raise UnauthorisedError("receipt: by is not the envelope's sender")
