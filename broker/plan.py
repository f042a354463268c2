"""What a decided batch must do, as data: the middle step of decide → plan → execute.

:func:`plan_batch` takes the pipeline's outcomes for one fetched batch and
returns a :class:`BatchPlan`: the publishes (subject, bytes, de-duplication
id, which batch messages depend on each), the receipt statements to seal,
the audit entries and the ids to mark routed per message, and what to report
once each message is acked. :func:`seal_receipts` turns the receipt
statements into hub-signed envelopes and their publishes.

Both are pure: no NATS, no disk, no clock (``now`` is passed in, one per
batch). The hub only executes a plan (:mod:`broker.hub`), so what a batch
does is tested here without a server (``tests/test_plan.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from broker.pipeline import Accepted, Rejected, rejection_recipient
from protocols import subjects
from protocols.audit import AuditEntry, AuditEvent, make_entry
from protocols.envelope import Header, decode_envelope, seal_envelope
from protocols.errors import IxbError
from protocols.identifiers import Principal, format_message_id, parse_message_id
from protocols.keys import Identity, PublicIdentity
from protocols.limits import MS_PER_DAY
from protocols.messages import Receipt, ReceiptStatus

RECEIPT_TTL_MS = 7 * MS_PER_DAY
MAX_RECEIPT_IDS = 256  # for_id + up to 255 in Receipt.also
NO_ID = b"\x00" * 16
REJECTION_DETAIL_CHARS = 200


@dataclass(frozen=True, slots=True)
class Decided:
    """One fetched message and the pipeline's outcome for it.

    ``publisher`` is the local agency whose ingress subject carried it (None
    over a link); ``via`` the peer country whose link carried it (None on
    ingress); ``nats_msg_id`` the ``Nats-Msg-Id`` header when it is a valid
    message id (it names a message that did not parse).
    """

    outcome: Accepted | Rejected
    publisher: str | None
    via: str | None
    nats_msg_id: str | None = None

    @property
    def msg_id(self) -> str | None:
        """The message id as text, for logs: the header's, else the publisher's Nats-Msg-Id."""
        if isinstance(self.outcome, Accepted):
            return self.outcome.envelope.header.message_id
        header = self.outcome.header
        return header.message_id if header is not None else self.nats_msg_id


@dataclass(frozen=True, slots=True)
class Publish:
    """One JetStream publish: onto this country's streams (``peer`` None) or a link to ``peer``."""

    subject: str
    data: bytes
    dedup: str
    """The ``Nats-Msg-Id``: a retried publish is stored once."""
    works: frozenset[int]
    """Batch positions that may be acked only once this publish is acknowledged."""
    peer: str | None = None
    entry: AuditEntry | None = None
    """Recorded only when the publish succeeded (a receipt's delivered/relayed entry)."""
    kind: str | None = None
    """A control item on a link (directory, checkpoint, cosignature); None for a message."""


def link_item(country: str, peer: str, data: bytes, dedup: str, kind: str) -> Publish:
    """A control item (directory, checkpoint, cosignature, witness size) onto the link to
    ``peer``: no batch message depends on it."""
    return Publish(
        subjects.cross_border(country, peer), data, dedup, frozenset(), peer=peer, kind=kind
    )


@dataclass(frozen=True, slots=True)
class ReceiptStatement:
    """One hub-signed receipt to seal: ``status`` about ``ids``, to ``to``."""

    to: Principal
    status: ReceiptStatus
    code: str | None
    detail: str | None
    ids: tuple[bytes, ...]
    works: frozenset[int]


Decision = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class Report:
    """What is logged and counted for one message once it is acked."""

    decision: Decision
    event: str
    msg_id: str | None
    code: str | None = None
    fields: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class MessagePlan:
    """What settling one message records: its audit entries, the id to mark routed, its report."""

    entries: tuple[AuditEntry, ...]
    routed: tuple[str, bytes] | None
    """(sender, message id) to mark routed once everything it caused is published."""
    report: Report


@dataclass(frozen=True, slots=True)
class BatchPlan:
    messages: tuple[MessagePlan, ...]
    """By batch position."""
    publishes: tuple[Publish, ...]
    receipts: tuple[ReceiptStatement, ...]


@dataclass
class _Statements:
    """Receipt statements grouped: one receipt per (recipient, status, code, detail)."""

    groups: dict[
        tuple[Principal, ReceiptStatus, str | None, str | None], list[tuple[set[int], bytes]]
    ] = field(default_factory=dict)
    _seen: dict[tuple[Principal, ReceiptStatus, bytes], set[int]] = field(default_factory=dict)

    def add(
        self,
        to: Principal,
        work: int,
        for_id: bytes,
        status: ReceiptStatus,
        detail: str | None = None,
        *,
        code: str | None = None,
    ) -> None:
        works = self._seen.get((to, status, for_id))
        if works is not None:  # the same id twice in one batch: one item, both depend on it
            works.add(work)
            return
        works = self._seen[(to, status, for_id)] = {work}
        self.groups.setdefault((to, status, code, detail or None), []).append((works, for_id))

    def statements(self) -> tuple[ReceiptStatement, ...]:
        out: list[ReceiptStatement] = []
        for (to, status, code, detail), items in self.groups.items():
            for start in range(0, len(items), MAX_RECEIPT_IDS):
                chunk = items[start : start + MAX_RECEIPT_IDS]
                out.append(
                    ReceiptStatement(
                        to,
                        status,
                        code,
                        detail,
                        tuple(for_id for _works, for_id in chunk),
                        frozenset().union(*(works for works, _id in chunk)),
                    )
                )
        return tuple(out)


def plan_batch(batch: Sequence[Decided], *, hub: Principal, now: int) -> BatchPlan:
    """What ``hub`` does for a decided batch: routes, receipts, audit entries, reports.

    Receipts to a sender group the whole batch: one per (recipient, status,
    code, detail), naming up to :data:`MAX_RECEIPT_IDS` messages.
    """
    planner = _Planner(str(hub), hub.country, now)
    messages = [
        planner.accepted(n, d, d.outcome)
        if isinstance(d.outcome, Accepted)
        else planner.rejected(n, d, d.outcome)
        for n, d in enumerate(batch)
    ]
    return BatchPlan(tuple(messages), tuple(planner.publishes), planner.statements.statements())


@dataclass
class _Planner:
    hub: str
    country: str
    now: int
    publishes: list[Publish] = field(default_factory=list)
    statements: _Statements = field(default_factory=_Statements)

    def accepted(self, n: int, d: Decided, outcome: Accepted) -> MessagePlan:
        hub, now, country = self.hub, self.now, self.country
        publishes, statements = self.publishes, self.statements
        env = outcome.envelope
        header = env.header
        via = d.via
        if outcome.duplicate:
            entry = make_entry(hub, now, AuditEvent.DUPLICATE, envelope=env, peer=via)
            report = Report(
                "duplicate",
                "duplicate_ignored",
                header.message_id,
                fields=(("type", header.type), ("sender", header.sender), ("via", via)),
            )
            return MessagePlan((entry,), None, report)
        if outcome.unmarked:
            # routed and recorded before; only the store's routed mark failed to be written
            report = _accepted_report(header, via, ("recorded_before", True))
            return MessagePlan((), (header.sender, header.id), report)
        data = env.to_bytes()
        works = frozenset({n})
        dedup = message_dedup(header.message_id, header.sender)
        publishes.extend(
            Publish(subjects.inbox(a), data, f"{dedup}:{a.name}", works) for a in outcome.local
        )
        publishes.extend(
            Publish(subjects.cross_border(country, p), data, dedup, works, peer=p)
            for p in outcome.peers
        )
        sender = header.sender_principal
        if header.type != "receipt" and not sender.is_hub:
            if via is None:
                statements.add(sender, n, header.id, ReceiptStatus.ACCEPTED)
                if outcome.peers:
                    statements.add(
                        sender, n, header.id, ReceiptStatus.RELAYED, ", ".join(outcome.peers)
                    )
            if outcome.local:
                delivered = ", ".join(str(a) for a in outcome.local)
                statements.add(sender, n, header.id, ReceiptStatus.DELIVERED, delivered)
        entries = [
            make_entry(hub, now, AuditEvent.ACCEPTED, envelope=env, peer=via),
            *(
                make_entry(
                    hub, now, AuditEvent.DELIVERED, envelope=env, peer=via, recipients=[str(a)]
                )
                for a in outcome.local
            ),
            *(
                make_entry(hub, now, AuditEvent.RELAYED, envelope=env, peer=p)
                for p in outcome.peers
            ),
        ]
        report = _accepted_report(
            header, via, ("local", len(outcome.local)), ("peers", list(outcome.peers))
        )
        return MessagePlan(tuple(entries), (header.sender, header.id), report)

    def rejected(self, n: int, d: Decided, outcome: Rejected) -> MessagePlan:
        hub, now, country, statements = self.hub, self.now, self.country, self.statements
        err = outcome.error
        header = outcome.header
        via, publisher = d.via, d.publisher
        msg_id = d.msg_id
        entry = make_entry(
            hub,
            now,
            AuditEvent.REJECTED,
            header=header,
            msg_id=_id_bytes(msg_id) if header is None and msg_id else None,
            code=err.code,
            detail=err.detail if via else f"{err.detail} (ingress of {publisher})",
            peer=via,
        )
        target = rejection_recipient(outcome, country=country, publisher=publisher)
        if target is not None:
            for_id = header.id if header is not None else _id_bytes(msg_id)
            statements.add(
                target,
                n,
                for_id,
                ReceiptStatus.REJECTED,
                err.detail[:REJECTION_DETAIL_CHARS],
                code=err.code,
            )
        report = Report(
            "rejected",
            "rejected",
            msg_id,
            code=err.code,
            fields=(("detail", err.detail), ("via", via or f"ingress:{publisher}")),
        )
        return MessagePlan((entry,), None, report)


@dataclass(frozen=True, slots=True)
class Sealed:
    """The receipts of a batch as publishes, and the statements nobody can be sent."""

    publishes: tuple[Publish, ...]
    unroutable: tuple[tuple[ReceiptStatement, str], ...]
    """(statement, error code): the recipient's encryption key is unknown, or no route."""
    fresh: tuple[tuple[str, bytes], ...] = ()
    """(de-dup id, bytes) of receipts sealed now: kept before they are published, so a
    statement planned again (after a crash) is sent as the same bytes."""


SealedBefore = Callable[[str], bytes | None]
"""The bytes sealed earlier under a receipt's de-dup id, if any (the hub store's)."""


def _nothing_sealed(_dedup: str) -> bytes | None:
    return None


def seal_receipts(
    statements: Sequence[ReceiptStatement],
    *,
    identity: Identity,
    encryption_key: Callable[[Principal, int], PublicIdentity],
    links: frozenset[str],
    now: int,
    sealed_before: SealedBefore = _nothing_sealed,
) -> Sealed:
    """One receipt signed by this hub per statement, encrypted to its recipient.

    ``encryption_key`` finds a recipient's key at ``now`` (a local agency's, or a
    peer directory's; it raises an :class:`IxbError` when none is current). A
    receipt to a local agency goes to its inbox (audited as delivered), to a
    peer country's agency over the link (audited as relayed).

    A statement sealed before (``sealed_before`` finds its bytes by de-dup id:
    the batch was planned, published and then not acknowledged, e.g. the hub
    crashed) is sent as those same bytes, and its audit entry describes them:
    JetStream keeps the first copy of a de-dup id, so a new one would never be
    stored. Receipts sealed now are in :attr:`Sealed.fresh`, to keep first.
    """
    hub = identity.principal
    country = hub.country
    publishes: list[Publish] = []
    unroutable: list[tuple[ReceiptStatement, str]] = []
    fresh: list[tuple[str, bytes]] = []
    for st in statements:
        to = st.to
        if to.country != country and to.country not in links:
            unroutable.append((st, "no_link"))
            continue
        dedup = "rcpt:" + receipt_digest(st)
        data = sealed_before(dedup)
        if data is None:
            try:
                recipient = encryption_key(to, now)
            except IxbError as exc:
                unroutable.append((st, exc.code))
                continue
            body = Receipt(
                for_id=st.ids[0],
                also=st.ids[1:],
                status=st.status,
                by=str(hub),
                at_ms=now,
                code=st.code,
                detail=st.detail,
            )
            data = seal_envelope(
                sender=identity,
                recipients=[recipient],
                body=body,
                now_ms=now,
                ttl_ms=RECEIPT_TTL_MS,
                in_reply_to=st.ids[0],
            )
            fresh.append((dedup, data))
        publishes.append(receipt_publish(hub, dedup, data, now, st.works))
    return Sealed(tuple(publishes), tuple(unroutable), tuple(fresh))


def _accepted_report(header: Header, via: str | None, *more: tuple[str, object]) -> Report:
    fields = (("type", header.type), ("sender", header.sender), ("via", via), *more)
    return Report("accepted", "accepted", header.message_id, fields=fields)


def receipt_publish(
    hub: Principal, dedup: str, data: bytes, now: int, works: frozenset[int] = frozenset()
) -> Publish:
    """The publish of a receipt ``hub`` sealed (``data``), with the entry that records it:
    to a local agency's inbox (delivered), or over the link to its country (relayed)."""
    to = _receipt_recipient(data)
    if to.country == hub.country:
        peer, subject = None, subjects.inbox(to)
    else:
        peer, subject = to.country, subjects.cross_border(hub.country, to.country)
    return Publish(subject, data, dedup, works, peer=peer, entry=receipt_entry(hub, data, now))


def receipt_entry(hub: Principal, data: bytes, now: int) -> AuditEntry:
    """The entry that records the receipt ``data`` sent: delivered to a local agency's
    inbox, or relayed over the link to its country."""
    envelope = decode_envelope(data)
    (to,) = envelope.header.recipient_principals
    if to.country == hub.country:
        return make_entry(str(hub), now, AuditEvent.DELIVERED, envelope=envelope)
    return make_entry(str(hub), now, AuditEvent.RELAYED, envelope=envelope, peer=to.country)


def _receipt_recipient(data: bytes) -> Principal:
    (to,) = decode_envelope(data).header.recipient_principals
    return to


def message_dedup(message_id: str, sender: str) -> str:
    """A message's de-duplication id on our streams: ids are unique per sender only.

    Another sender's envelope under the same id (by accident or to squat it)
    must not be dropped as a JetStream duplicate of this one.
    """
    return f"{message_id}:{sender}"


def receipt_digest(st: ReceiptStatement) -> str:
    """A stable name for a statement: a re-sealed receipt (after a crash) is stored once."""
    key = "\0".join(
        [str(st.to), st.status.value, st.code or "", st.detail or "", *map(bytes.hex, st.ids)]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _id_bytes(msg_id: str | None) -> bytes:
    if msg_id is None:
        return NO_ID
    try:
        return parse_message_id(msg_id)
    except IxbError:
        return NO_ID


def valid_msg_id(value: str | None) -> str | None:
    """The message id a ``Nats-Msg-Id`` header names (an agency's, or a hub's
    :func:`message_dedup`), formatted; None if it names none."""
    if value is None:
        return None
    try:
        return format_message_id(parse_message_id(value.split(":", 1)[0]))
    except IxbError:
        return None
