"""Audit entries: the exact leaf bytes of a hub's audit log (SPEC.md §13.1).

Every decision a hub takes (accepted, rejected and why, relayed, delivered,
a directory installed, a checkpoint cosigned, the audit log read) becomes one
:class:`AuditEntry`. Its canonical MessagePack encoding is the Merkle leaf
(:mod:`protocols.merkle`), so an auditor holding an exported entry, its
inclusion proof and a signed checkpoint needs nothing but the spec to check
it: the bytes are the entry, there is no second serialisation to trust.

Entries hold metadata only: ids, parties, handling code, sizes, the payload
hash, error codes. Never content, never personal data: the log is shown to
auditors and liaison officers of both countries, and it is append-only, so
anything written into it stays there for good.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Annotated, Final

import msgspec

from protocols import wire
from protocols.envelope import Envelope, Header, TypeName
from protocols.errors import MalformedError, SchemaError, TooLargeError, VersionError
from protocols.fields import CountryStr, ErrorCodeStr, ShortText, TimeMs, check_fields
from protocols.handling import HandlingCode
from protocols.identifiers import (
    MessageIdBytes,
    PrincipalStr,
    check_country,
    format_message_id,
    parse_hub,
    parse_principal,
)
from protocols.limits import MAX_RECIPIENTS, MAX_SHORT_TEXT

AUDIT_VERSION: Final = 1
"""The version of an entry that answers no message (no ``in_reply_to``): every entry
written before version 2 existed, and most entries still, so their leaves are unchanged."""
AUDIT_REPLY_VERSION: Final = 2
"""The version of an entry that carries ``in_reply_to`` (SPEC §13.1): the only key it adds."""
AUDIT_VERSIONS: Final = frozenset({AUDIT_VERSION, AUDIT_REPLY_VERSION})
MAX_AUDIT_ENTRY_BYTES: Final = 16 * 1024
"""Above the largest entry the schema allows (256 recipients, every text field full: ~14 KiB)."""
MAX_SIZE_BYTES: Final = (1 << 53) - 1

PayloadHashBytes = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
SizeBytes = Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE_BYTES)]


class AuditEvent(enum.StrEnum):
    """What happened. The value is the wire form; new events are a version change."""

    ACCEPTED = "accepted"  # an envelope passed every check at this hub
    REJECTED = "rejected"  # an envelope was refused (code says why)
    RELAYED = "relayed"  # sent on to the peer hub of a recipient's country
    DELIVERED = "delivered"  # handed to a local recipient's inbox
    DUPLICATE = "duplicate"  # a re-delivery dropped by de-duplication
    DIRECTORY_PUBLISHED = "directory_published"
    DIRECTORY_INSTALLED = "directory_installed"
    DIRECTORY_REJECTED = "directory_rejected"
    CHECKPOINT_COSIGNED = "checkpoint_cosigned"  # this hub witnessed a peer's checkpoint
    WITNESS_ALARM = "witness_alarm"  # a peer's log failed to extend its last checkpoint
    AUDIT_READ = "audit_read"
    AUDIT_EXPORT = "audit_export"
    POLICY_CHANGED = "policy_changed"
    HUB_STARTED = "hub_started"
    HUB_STOPPED = "hub_stopped"


_MESSAGE_EVENTS: Final = frozenset(
    {AuditEvent.ACCEPTED, AuditEvent.RELAYED, AuditEvent.DELIVERED, AuditEvent.DUPLICATE}
)
_SUCCESS_EVENTS: Final = frozenset({AuditEvent.ACCEPTED, AuditEvent.RELAYED, AuditEvent.DELIVERED})
_REFUSAL_EVENTS: Final = frozenset(
    {AuditEvent.REJECTED, AuditEvent.DIRECTORY_REJECTED, AuditEvent.WITNESS_ALARM}
)
_READ_EVENTS: Final = frozenset({AuditEvent.AUDIT_READ, AuditEvent.AUDIT_EXPORT})


class AuditEntry(wire.WireStruct, frozen=True):
    """One audit log entry; its canonical encoding is the Merkle leaf.

    Fields are encoded in this order, absent ones omitted (SPEC §1.1).
    Cross-field rules: message events (accepted, relayed, delivered,
    duplicate) name the message; refusals (rejected, directory_rejected,
    witness_alarm) carry the error code and successes carry none; reads
    and exports of the audit log name the actor. The version follows from
    ``in_reply_to``: 2 exactly when it is present (so an entry has one
    encoding), and a message never answers itself.
    """

    v: int
    hub: PrincipalStr
    at: TimeMs
    event: AuditEvent
    msg_id: MessageIdBytes | None = None
    type: TypeName | None = None
    sender: PrincipalStr | None = None
    recipients: Annotated[tuple[PrincipalStr, ...], msgspec.Meta(max_length=MAX_RECIPIENTS)] = ()
    handling: HandlingCode | None = None
    case_ref: ShortText | None = None
    payload_hash: PayloadHashBytes | None = None
    size: SizeBytes | None = None
    code: ErrorCodeStr | None = None
    detail: ShortText | None = None
    peer: CountryStr | None = None
    actor: ShortText | None = None
    in_reply_to: MessageIdBytes | None = None

    def __post_init__(self) -> None:
        if self.v not in AUDIT_VERSIONS:
            raise VersionError(f"audit entry version {self.v!r} is not 1 or 2")
        check_fields(self)
        if (self.v == AUDIT_REPLY_VERSION) != (self.in_reply_to is not None):
            raise SchemaError("audit entry: in_reply_to exactly in version 2 entries")
        if self.in_reply_to is not None and self.in_reply_to == self.msg_id:
            raise SchemaError("audit entry: a message does not answer itself (in_reply_to)")
        parse_hub(self.hub)
        if self.sender is not None:
            parse_principal(self.sender)
        for r in self.recipients:
            parse_principal(r)
        if len(set(self.recipients)) != len(self.recipients):
            raise SchemaError("audit entry: recipients must not repeat")
        if self.peer is not None:
            check_country(self.peer)
        event = self.event
        if event in _MESSAGE_EVENTS and self.msg_id is None:
            raise SchemaError(f"audit entry: a {event} entry names the message (msg_id)")
        if event in _REFUSAL_EVENTS and self.code is None:
            raise SchemaError(f"audit entry: a {event} entry carries the error code")
        if event in _SUCCESS_EVENTS and self.code is not None:
            raise SchemaError(f"audit entry: a {event} entry carries no error code")
        if event in _READ_EVENTS and self.actor is None:
            raise SchemaError(f"audit entry: an {event} entry names the actor")

    @property
    def message_id(self) -> str | None:
        """The message id as text (lower-case UUID), or None."""
        return None if self.msg_id is None else format_message_id(self.msg_id)

    @property
    def reply_to_id(self) -> str | None:
        """The id of the message this one answers, as text, or None."""
        return None if self.in_reply_to is None else format_message_id(self.in_reply_to)


def make_entry(
    hub: str,
    at: int,
    event: AuditEvent,
    *,
    header: Header | None = None,
    envelope: Envelope | None = None,
    msg_id: bytes | None = None,
    code: str | None = None,
    detail: str | None = None,
    peer: str | None = None,
    actor: str | None = None,
    recipients: Iterable[str] | None = None,
) -> AuditEntry:
    """The entry ``hub`` records at ``at`` for ``event``, with ``header``/``envelope`` metadata.

    Free text (the case reference, ``detail``, ``actor``) goes through
    :func:`audit_text`; ``recipients`` defaults to the header's. The header's
    ``in_reply_to`` links a reply or receipt to the message it answers, in a
    version 2 entry; an entry without it stays version 1.
    """
    h = envelope.header if envelope is not None else header
    reply_to = h.in_reply_to if h is not None and h.in_reply_to != h.id else None
    return AuditEntry(
        v=AUDIT_VERSION if reply_to is None else AUDIT_REPLY_VERSION,
        hub=hub,
        at=at,
        event=event,
        msg_id=h.id if h is not None else msg_id,
        type=h.type if h is not None else None,
        sender=h.sender if h is not None else None,
        recipients=tuple(recipients if recipients is not None else (h.recipients if h else ())),
        handling=h.handling if h is not None else None,
        case_ref=audit_text(h.case_ref) if h is not None else None,
        payload_hash=envelope.payload_hash if envelope is not None else None,
        size=envelope.size if envelope is not None else None,
        code=code,
        detail=audit_text(detail),
        peer=peer,
        actor=audit_text(actor),
        in_reply_to=reply_to,
    )


def encode_entry(entry: AuditEntry) -> bytes:
    """The canonical bytes of ``entry``: the leaf the hub appends to its Merkle tree."""
    return wire.encode(entry)


def decode_entry(data: bytes) -> AuditEntry:
    """Parse leaf bytes into an entry, or raise an ``ixb.E_…`` error; never anything else."""
    if not isinstance(data, bytes):
        raise MalformedError("audit entry: not bytes")
    if len(data) > MAX_AUDIT_ENTRY_BYTES:
        raise TooLargeError(f"audit entry is {len(data)} bytes; limit {MAX_AUDIT_ENTRY_BYTES}")
    return wire.decode(data, AuditEntry, "audit entry")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def audit_text(value: str | None) -> str | None:
    """Fit free text (an error detail, a header's case reference) into an entry's text field.

    Control characters become U+FFFD, the text is cut to 256 characters, and
    blank text becomes None: a hub must never fail to record a decision
    because of what a peer wrote.
    """
    if value is None:
        return None
    cleaned = _CONTROL.sub("\ufffd", value)[:MAX_SHORT_TEXT]
    return cleaned if cleaned.strip() else None


# --- what a hub sends its witnesses -------------------------------------------------

MAX_SHARED_ENTRIES: Final = 4096
MAX_PROOF_HASHES: Final = 64
HashBytes = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Proof = Annotated[tuple[HashBytes, ...], msgspec.Meta(max_length=MAX_PROOF_HASHES)]


class SharedEntry(wire.WireStruct, frozen=True, array_like=True):
    """One entry about traffic with the witness, with its inclusion proof in the new checkpoint."""

    index: Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE_BYTES)]
    entry: Annotated[bytes, msgspec.Meta(max_length=MAX_AUDIT_ENTRY_BYTES)]
    proof: Proof


class CheckpointPublication(wire.WireStruct, frozen=True):
    """A signed checkpoint for a witness (SPEC §13.9).

    ``consistency`` proves the checkpoint extends the one published before it
    (of size ``old_size``); ``shared`` carries the entries about traffic with
    this witness's country, so both countries' logs can be reconciled.
    """

    note: Annotated[bytes, msgspec.Meta(max_length=64 * 1024)]
    old_size: Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE_BYTES)]
    consistency: Proof = ()
    shared: Annotated[tuple[SharedEntry, ...], msgspec.Meta(max_length=MAX_SHARED_ENTRIES)] = ()


def encode_publication(publication: CheckpointPublication) -> bytes:
    return wire.encode(publication)


def decode_publication(data: bytes) -> CheckpointPublication:
    """Parse a publication or raise an ``ixb.E_…`` error; never anything else."""
    if len(data) > (MAX_SHARED_ENTRIES + 1) * (MAX_AUDIT_ENTRY_BYTES + 2048):
        raise TooLargeError("checkpoint publication is too large")
    return wire.decode(data, CheckpointPublication, "checkpoint publication")


class WitnessSize(wire.WireStruct, frozen=True):
    """A witness's conflict answer: the size it last cosigned is not the publication's ``old_size``.

    tlog-witness's "409 Conflict" with the witness's size (SPEC §13.9). ``note``
    is the checkpoint of that size, as the origin signed it, with the witness's
    fresh cosignature line: present exactly when ``size`` is above 0.
    """

    size: Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE_BYTES)]
    note: Annotated[bytes, msgspec.Meta(max_length=64 * 1024)] | None = None

    def __post_init__(self) -> None:
        if (self.size == 0) != (self.note is None):
            raise SchemaError("witness size: a note exactly when the size is above 0")


def encode_witness_size(answer: WitnessSize) -> bytes:
    return wire.encode(answer)


def decode_witness_size(data: bytes) -> WitnessSize:
    """Parse a conflict answer or raise an ``ixb.E_…`` error; never anything else."""
    if len(data) > 65 * 1024:
        raise TooLargeError("witness size answer is too large")
    return wire.decode(data, WitnessSize, "witness size")
