"""Lookups on the synchronous path (SPEC §14): which messages may take it, and which replies
answer them. Pure: headers in, a typed error out.

A lookup is a document check or a person query to exactly one agency. Its
answer is the answering type from that agency to the requester, naming the
lookup in ``in_reply_to``; or a hub's receipt about it (``rejected``, or
``queued`` by the owner's hub when no responder answered in time).
"""

from __future__ import annotations

from typing import Final

from protocols.envelope import Header
from protocols.errors import UnauthorisedError
from protocols.messages import DocVerifyRequest, PersonQuery
from protocols.receipts import closes_request

LOOKUP_TYPES: Final = frozenset({DocVerifyRequest.TYPE, PersonQuery.TYPE})
"""The only types the synchronous path carries; everything else takes the durable one."""


def check_lookup_request(header: Header) -> None:
    """Refuse what may not take the synchronous path: other types, several recipients,
    declared forwards."""
    if header.type not in LOOKUP_TYPES:
        raise UnauthorisedError(f"{header.type} takes the durable path, not a lookup")
    if len(header.recipients) != 1:
        raise UnauthorisedError("a lookup goes to exactly one agency (one lookup per country)")
    if header.forward_of is not None:
        raise UnauthorisedError("a forward takes the durable path, not a lookup")


def check_lookup_answer(answer: Header, request: Header) -> None:
    """Refuse a reply that does not answer ``request``: an answer of the answering type from
    its recipient to its sender naming it in ``in_reply_to``, or a hub's receipt about it."""
    if answer.in_reply_to != request.id:
        raise UnauthorisedError("the reply names another message than the lookup")
    sender = answer.sender_principal
    if answer.type == "receipt":
        if not sender.is_hub or answer.recipients != [request.sender]:
            raise UnauthorisedError("a lookup's receipt comes from a hub, to the requester")
        return
    if (
        not closes_request(
            answer.type,
            sender,
            answer.recipient_principals,
            request_type=request.type,
            request_sender=request.sender_principal,
            request_recipients=request.recipient_principals,
        )
        or len(answer.recipients) != 1
    ):
        raise UnauthorisedError(f"{answer.type} from {sender} does not answer the lookup")
