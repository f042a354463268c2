"""The hub's side of the audit log: record decisions, sign checkpoints, witness peers, reconcile.

- :meth:`HubAudit.record` appends entries (protocols/audit.py) to the Merkle
  log (broker/audit/) in one durable transaction; the hub calls it before
  it marks the messages the entries describe routed, and before it
  acknowledges them. :meth:`HubAudit.recorded` tells whether an acceptance is
  in the log already (a retry after the routed mark failed to be written).
- :meth:`HubAudit.checkpoint` signs a C2SP checkpoint when the log grew.
- :meth:`HubAudit.publication_for` is what goes to a peer hub over the link:
  the checkpoint, a consistency proof from the one that peer saw last, and
  our entries about traffic with that peer, each with its inclusion proof.
- :meth:`HubAudit.witness` is the other side (C2SP tlog-witness): verify the
  peer's signature; a publication proving from another size than the one we
  last cosigned gets a :class:`Conflict` (our size, signed), nothing else;
  otherwise check consistency from our size, keep the shared entries, and
  cosign. A log that fails to extend what we cosigned raises an alarm
  instead (audit entry, log line, metric), once: the same fork shown again
  is counted, not raised again.
- :meth:`HubAudit.accept_witness_size` is the origin hearing such a conflict:
  its next publication to that peer proves from the peer's size.
- :meth:`HubAudit.reconcile` compares our entries about a peer with the
  entries the peer shared: anything one side logged and the other did not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from broker.audit.log import AuditLog
from broker.audit.records import AuditRecord, StoredEntry
from broker.audit.search import AuditQuery
from broker.store import HubStore, PeerEntry
from broker.trust import WitnessPins
from protocols.audit import (
    MAX_SHARED_ENTRIES,
    AuditEntry,
    AuditEvent,
    CheckpointPublication,
    SharedEntry,
    WitnessSize,
    decode_entry,
    decode_publication,
    decode_witness_size,
    encode_entry,
    encode_publication,
    encode_witness_size,
    make_entry,
)
from protocols.checkpoint import (
    Checkpoint,
    check_consistency,
    cosign,
    log_origin,
    new_checkpoint,
    parse_checkpoint,
    parse_signed_note,
    sign_checkpoint,
    verify_checkpoint_by_any,
    verify_cosignature_by_any,
    witness_name,
)
from protocols.errors import (
    CheckpointError,
    ForkError,
    IxbError,
    MerkleProofError,
    WitnessStateError,
)
from protocols.federation import TrustAnchors
from protocols.identifiers import format_message_id
from protocols.keys import Identity, KeyAlg, fingerprint
from protocols.merkle import verify_inclusion

log = structlog.get_logger("ixb.audit")

RECONCILE_GRACE_MS = 60_000
COSIGN_RECORD_PERIOD_MS = 3_600_000
"""A ``checkpoint_cosigned`` entry per peer at most this often (SPEC §13.5)."""
RECONCILE_LIMIT = 100_000
INBOUND_EVENTS = frozenset({"accepted", "rejected", "duplicate"})


@dataclass(frozen=True, slots=True)
class ReconcileItem:
    msg_id: str
    event: str
    type: str | None
    at_ms: int
    side: str


@dataclass(frozen=True, slots=True)
class Reconciliation:
    peer: str
    since_ms: int
    matched: int
    only_here: tuple[ReconcileItem, ...]
    only_there: tuple[ReconcileItem, ...]
    different: tuple[tuple[str, str], ...]
    """(message id, what differs)."""

    @property
    def clean(self) -> bool:
        return not (self.only_here or self.only_there or self.different)


@dataclass(frozen=True, slots=True)
class Witnessed:
    """A peer checkpoint we verified: our cosignature, and what to keep of it."""

    origin: str
    size: int
    cosigned: bytes
    peer_entries: tuple[PeerEntry, ...] = ()
    checkpoint: tuple[bytes, bytes, int] | None = None
    """(root, note, at_ms) to save as witnessed; None when it was witnessed before."""
    entries: tuple[AuditEntry, ...] = ()
    pin: bytes | None = None
    """The origin's hub key to pin (first witnessing, a repin, a key rotation)."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """A publication proving from a size we did not last cosign: answer with ours (SPEC §13.9).

    Nothing is written and nothing alarms: the origin lost an acknowledgement
    or restarted, and proves again from ``size``.
    """

    origin: str
    size: int
    answer: bytes
    """The encoded :class:`~protocols.audit.WitnessSize`."""
    refused: tuple[int, int]
    """(old_size, size) of the publication answered, for the log and the de-dup id."""


@dataclass(frozen=True, slots=True)
class Alarm:
    """A peer log that does not extend the checkpoint we last cosigned: evidence, an audit entry.

    ``against`` is the size of that checkpoint (0: none). ``repeat`` is True when
    an alarm against it stands already: the repeat is counted, not recorded again,
    so an origin that keeps publishing cannot grow our log (and our next checkpoint).
    """

    origin: str
    detail: str
    evidence: bytes
    at_ms: int
    entry: AuditEntry
    against: int = 0
    repeat: bool = False
    repeats: int = 0


@dataclass(frozen=True, slots=True)
class WitnessHolds:
    """A peer's verified conflict answer: it last cosigned our log at ``size``.

    ``ours`` is False when that checkpoint is not our log's (a larger size, or
    another root): our log lost or changed entries the peer cosigned.
    """

    peer: str
    size: int
    ours: bool


@dataclass(frozen=True, slots=True)
class Cosigned:
    """A peer's verified cosignature of our checkpoint at ``size``."""

    peer: str
    size: int
    note: bytes
    at_ms: int


@dataclass
class HubAudit:
    identity: Identity
    log: AuditLog
    store: HubStore
    trust: TrustAnchors
    peers: Sequence[str]
    clock: Callable[[], int]
    _published: dict[str, int] = field(default_factory=dict)
    _shared_upto: dict[str, int] = field(default_factory=dict)
    _cosign_recorded: dict[str, int] = field(default_factory=dict)
    pins: WitnessPins | None = None
    """Which peer logs this hub witnessed, kept outside the audit database (broker/trust.py)."""
    _pinned: set[str] = field(default_factory=set)

    @property
    def hub_id(self) -> str:
        return str(self.identity.principal)

    @property
    def country(self) -> str:
        return self.identity.principal.country

    # --- recording ------------------------------------------------------------------

    def entry(
        self, event: AuditEvent, *, detail: str | None = None, actor: str | None = None
    ) -> AuditEntry:
        """An entry about the hub itself (started, stopped, read) at this hub's clock.

        Entries about messages are made by the batch plan, at the batch's one ``now``.
        """
        return make_entry(self.hub_id, self.clock(), event, detail=detail, actor=actor)

    def record(self, entries: Sequence[AuditEntry]) -> list[int]:
        """Append durably; returns the leaf indexes.

        The delivered/relayed entry of a receipt this hub sealed is recorded once:
        a batch and the receipt sweeper (:meth:`broker.hub.Hub.sweep_receipts`)
        may both have sent the same receipt (same bytes, stored once).
        """
        hub = self.hub_id
        return self.log.append(
            [to_record(e) for e in entries],
            once=lambda r: r.sender == hub and r.type == "receipt",
        )

    def holds(self, entry: AuditEntry) -> bool:
        """Whether the log holds an entry of ``entry``'s event about its message by its sender."""
        r = to_record(entry)
        if r.msg_id is None or r.sender is None:
            return False
        return self.log.holds(r.event, r.msg_id, r.sender)

    def recorded(self, sender: str, message_id: bytes) -> bool:
        """Whether the log holds our acceptance of ``sender``'s message ``message_id``.

        The hub records a message's entries only once everything it caused was
        published, and marks it routed in the store after that: an acceptance
        in the log is a finished routing, even if the store's mark was never
        written (:class:`broker.pipeline.RecordedDecisions`).
        """
        return self.log.holds(AuditEvent.ACCEPTED.value, format_message_id(message_id), sender)

    def record_read(self, actor: str, what: str) -> None:
        """Every read of the audit log is itself in the log."""
        self.record([self.entry(AuditEvent.AUDIT_READ, actor=actor, detail=what)])

    # --- checkpoints ----------------------------------------------------------------

    def checkpoint(self, upto: int | None = None) -> tuple[int, bytes] | None:
        """Sign a new checkpoint if the log grew since the last one; (size, note).

        ``upto``: sign no further than this size (the leaves the ``AUDIT`` stream
        holds, :mod:`broker.audit.shipping`: what a witness cosigns must be
        rebuildable)."""
        size = self.log.size if upto is None else min(self.log.size, upto)
        latest = self.log.latest_checkpoint()
        if size == 0 or (latest is not None and latest[0] >= size):
            return None
        root = self.log.root(size)
        now = self.clock()
        note = sign_checkpoint(new_checkpoint(self.country, size, root, now), self.identity)
        self.log.save_checkpoint(size, root, note, now)
        return size, note

    def publication_for(self, peer: str) -> CheckpointPublication | None:
        """The latest checkpoint for ``peer`` if it has not seen it, with proofs and entries."""
        latest = self.log.latest_checkpoint()
        if latest is None:
            return None
        size, _root, note = latest
        old = self._published.get(peer)
        if old is None:
            old = self._last_cosigned_by(peer)  # after a restart; a conflict corrects it
        if old >= size:
            return None
        start = self._shared_upto.get(peer, old)
        theirs: list[StoredEntry] = []
        for stored in self._entries(start, size):
            if stored.peer != peer:
                continue
            theirs.append(stored)
            if len(theirs) >= MAX_SHARED_ENTRIES:
                break
        proofs = self.log.inclusion_proofs([s.index for s in theirs], size) if theirs else []
        shared = [
            SharedEntry(index=s.index, entry=s.data, proof=tuple(proof))
            for s, proof in zip(theirs, proofs, strict=True)
        ]
        return CheckpointPublication(
            note=note,
            old_size=old,
            consistency=tuple(self.log.consistency_proof(old, size)) if old else (),
            shared=tuple(shared),
        )

    def published(self, peer: str, publication: CheckpointPublication) -> None:
        """Remember what ``peer`` was sent (after JetStream acknowledged it)."""
        size = parse_checkpoint(parse_signed_note(publication.note)[0]).size
        self._published[peer] = size
        last_shared = publication.shared[-1].index + 1 if publication.shared else None
        full = len(publication.shared) < MAX_SHARED_ENTRIES
        self._shared_upto[peer] = size if full else (last_shared or size)

    def accept_witness_size(self, peer: str, data: bytes) -> WitnessHolds:
        """A peer's conflict answer, verified; prove from its size from now on (SPEC §13.9).

        Takes effect at once (the next publication to ``peer`` proves from that
        size and shares again what the refused publications carried); it
        writes nothing. Raises an ``ixb.E_…`` error for an answer that does not verify.
        """
        answer = decode_witness_size(data)
        ours = True
        if answer.note is not None:
            cp, _ = verify_checkpoint_by_any(
                answer.note, self._own_keys(), log_origin(self.country)
            )
            verify_cosignature_by_any(
                answer.note, self.trust.hub_keys_at(peer, self.clock()), witness_name(peer)
            )
            if cp.size != answer.size:
                raise CheckpointError(f"witness size {answer.size}, checkpoint size {cp.size}")
            ours = cp.size <= self.log.size and cp.root == self.log.root(cp.size)
        self._published[peer] = answer.size
        shared = self._shared_upto.get(peer)
        if shared is None or shared > answer.size:
            self._shared_upto[peer] = answer.size
        return WitnessHolds(peer, answer.size, ours)

    def _entries(self, start: int, end: int, batch: int = 1000) -> Iterable[StoredEntry]:
        for lo in range(start, end, batch):
            yield from self.log.entries(lo, min(end, lo + batch))

    def _own_keys(self) -> tuple[bytes, ...]:
        """Our key now, then those earlier federation versions listed: our log's older
        checkpoints were signed with them (a witness answers with the last it holds)."""
        keys = [self.identity.signing.public]
        with contextlib.suppress(IxbError):
            keys += [k for k in self.trust.hub_keys_ever(self.country) if k not in keys]
        return tuple(keys)

    def _last_cosigned_by(self, peer: str) -> int:
        name = witness_name(peer)
        sizes = [size for who, size, _note, _at in self.log.cosignatures() if who == name]
        return max(sizes, default=0)

    def accept_cosignature(self, peer: str, note: bytes, now: int) -> Cosigned:
        """A peer's cosigned copy of our checkpoint, verified; :meth:`apply` keeps it."""
        cp, _ = verify_checkpoint_by_any(note, self._own_keys(), log_origin(self.country))
        verify_cosignature_by_any(note, self.trust.hub_keys_at(peer, now), witness_name(peer))
        return Cosigned(peer, cp.size, note, now)

    # --- witnessing -----------------------------------------------------------------

    def witness(self, origin: str, data: bytes, now: int) -> Witnessed | Conflict | Alarm:
        """Check ``origin``'s publication against what we last cosigned; decide, write nothing.

        As C2SP tlog-witness's add-checkpoint (SPEC §13.5, §13.6, §13.9), with
        ``W`` the size of ``origin``'s checkpoint we last cosigned (0: none):

        - a checkpoint of size ``W``: the same root is cosigned again, another
          root is a fork (two roots for one size);
        - a checkpoint that contradicts one we keep (another root at a size we
          cosigned, or a smaller size signed later than the one of size ``W``:
          the log shrank) is a fork;
        - ``old_size ≠ W`` otherwise: :class:`Conflict` with ``W``, no alarm;
        - ``old_size = W``: the consistency proof from our checkpoint must hold
          (else a fork), then :class:`Witnessed` carries our cosignature.

        A fork gives an :class:`Alarm`, a repeat one when an alarm against ``W``
        stands already; a publication that is merely malformed or forged raises
        its ``ixb.E_…`` error. :meth:`apply` makes the decision durable.
        """
        publication = decode_publication(data)
        # the origin's current key, or one a new federation version replaced during its grace
        new, key = verify_checkpoint_by_any(
            publication.note, self.trust.hub_keys_at(origin, now), log_origin(origin)
        )
        if publication.old_size > new.size:
            raise MerkleProofError(
                f"old size {publication.old_size} is above the checkpoint size {new.size}"
            )
        last = self.log.last_witnessed(log_origin(origin))
        pin: bytes | None = None
        if self.pins is not None and origin not in self._pinned:
            pinned = self.pins.get(origin)
            if last is None and pinned is not None and pinned.repin_by is None:
                detail = (
                    f"this witness lost its record of {log_origin(origin)}, which it has "
                    f"witnessed since {pinned.since_ms} ms: it cosigns nothing for {origin} "
                    f"until an operator runs `ixb audit witness repin --peer {origin}`"
                )
                return self._alarm(
                    origin, detail, publication.note, now, 0, code=WitnessStateError.code
                )
            if (
                pinned is None
                or pinned.repin_by is not None
                or pinned.key != fingerprint(KeyAlg.ED25519, key)
            ):
                pin = key
            else:
                self._pinned.add(origin)
        old: Checkpoint | None = None
        secs = now // 1000
        held = 0
        if last is not None:
            old = parse_checkpoint(parse_signed_note(last[2])[0])
            held = old.size
            if new.size == old.size:
                if new.root != old.root:
                    detail = f"{origin} signed two roots for size {new.size}: its log was rewritten"
                    return self._alarm(origin, detail, publication.note, now, held)
                note = cosign(last[2], self.identity, witness_name(self.country), secs)
                return Witnessed(origin, new.size, note, pin=pin)
            seen = self.log.witnessed_root(log_origin(origin), new.size)
            if seen is not None and seen != new.root:
                detail = f"{origin} signed two roots for size {new.size}: its log was rewritten"
                return self._alarm(origin, detail, publication.note, now, held)
            later = (new.time_ms or 0) > (old.time_ms or 0)
            if new.size < old.size and later:
                detail = (
                    f"{origin} signed size {new.size} after size {old.size}: "
                    "its log was rewritten or reset"
                )
                return self._alarm(origin, detail, publication.note, now, held)
        if publication.old_size != held:
            answer = WitnessSize(
                size=held, note=None if last is None else self._recosign(last[2], secs)
            )
            return Conflict(
                origin, held, encode_witness_size(answer), (publication.old_size, new.size)
            )
        try:
            check_consistency(old, new, publication.consistency)
        except ForkError as exc:
            detail = f"{origin} could not prove size {new.size} extends size {held}: {exc.detail}"
            return self._alarm(origin, detail, publication.note, now, held)
        received: list[PeerEntry] = []
        for shared in publication.shared:
            verify_inclusion(shared.entry, shared.index, new.size, shared.proof, new.root)
            entry = decode_entry(shared.entry)
            received.append(
                PeerEntry(
                    shared.index,
                    entry.message_id,
                    entry.event.value,
                    entry.at,
                    entry.peer,
                    shared.entry,
                )
            )
        cosigned = cosign(publication.note, self.identity, witness_name(self.country), secs)
        entries: tuple[AuditEntry, ...] = ()
        recorded = self._cosign_recorded.get(origin)
        if recorded is None or now - recorded >= COSIGN_RECORD_PERIOD_MS:
            # Not every cosigning: each entry grows our log, our next checkpoint, the
            # peer's cosigning of it, its log … two idle hubs would log each other forever.
            # Every checkpoint we cosigned stays in the witness table as evidence.
            self._cosign_recorded[origin] = now
            entries = (
                make_entry(
                    self.hub_id,
                    now,
                    AuditEvent.CHECKPOINT_COSIGNED,
                    peer=origin,
                    detail=f"{log_origin(origin)} size {new.size}",
                ),
            )
        return Witnessed(
            origin,
            new.size,
            cosigned,
            peer_entries=tuple(received),
            checkpoint=(new.root, publication.note, now),
            entries=entries,
            pin=pin,
        )

    def _recosign(self, note: bytes, secs: int) -> bytes:
        return cosign(note, self.identity, witness_name(self.country), secs)

    def _alarm(
        self,
        origin: str,
        detail: str,
        evidence: bytes,
        now: int,
        against: int,
        *,
        code: str = ForkError.code,
    ) -> Alarm:
        entry = make_entry(
            self.hub_id,
            now,
            AuditEvent.WITNESS_ALARM,
            peer=origin,
            code=code,
            detail=detail,
        )
        repeats = self.log.alarm_repeats(log_origin(origin), against)
        return Alarm(
            origin,
            detail,
            evidence,
            now,
            entry,
            against=against,
            repeat=repeats is not None,
            repeats=0 if repeats is None else repeats + 1,
        )

    def apply(self, decision: Witnessed | Alarm | Cosigned) -> None:
        """Make a witnessing decision durable (blocking: call it off the event loop)."""
        for step in self.steps(decision):
            step()

    def steps(self, decision: Witnessed | Alarm | Cosigned) -> list[Callable[[], object]]:
        """:meth:`apply`'s writes, one transaction each, to run in order.

        A caller whose step failed (the disk refused it) runs the rest from that
        step on later (:class:`broker.control.Writes`), so none is done twice. An
        alarm's entry goes first: after a crash between the two, the alarm is raised
        again rather than lost.
        """
        if isinstance(decision, Cosigned):
            return [
                lambda: self.log.save_cosigned(
                    decision.size, witness_name(decision.peer), decision.note, decision.at_ms
                )
            ]
        if isinstance(decision, Alarm):
            origin = log_origin(decision.origin)
            if decision.repeat:
                return [lambda: self.log.repeat_alarm(origin, decision.against, decision.at_ms)]
            return [
                lambda: self.record([decision.entry]),
                lambda: self.log.save_alarm(
                    origin, decision.at_ms, decision.detail, decision.evidence, decision.against
                ),
            ]
        steps: list[Callable[[], object]] = []
        if decision.peer_entries:
            steps.append(
                lambda: self.store.save_peer_entries(decision.origin, decision.peer_entries)
            )
        if decision.checkpoint is not None:
            root, note, at = decision.checkpoint
            steps.append(
                lambda: self.log.save_witnessed(
                    log_origin(decision.origin), decision.size, root, note, at
                )
            )
        if decision.entries:
            steps.append(lambda: self.record(decision.entries))
        if decision.pin is not None and self.pins is not None:
            pins, key = self.pins, decision.pin

            def pin() -> None:
                pins.pin(decision.origin, key, self.clock())
                self._pinned.add(decision.origin)

            steps.append(pin)
        return steps

    # --- reconciliation ---------------------------------------------------------------

    def reconcile(
        self, peer: str, since_ms: int = 0, grace_ms: int = RECONCILE_GRACE_MS
    ) -> Reconciliation:
        """See :func:`reconcile_logs`."""
        return reconcile_logs(
            self.log,
            self.store,
            self.country,
            peer,
            now_ms=self.clock(),
            since_ms=since_ms,
            grace_ms=grace_ms,
        )


def reconcile_logs(
    log: AuditLog,
    store: HubStore,
    country: str,
    peer: str,
    *,
    now_ms: int,
    since_ms: int = 0,
    grace_ms: int = RECONCILE_GRACE_MS,
) -> Reconciliation:
    """Compare what we logged about traffic with ``peer`` with what ``peer`` shared.

    Every message one hub relayed must appear as received (accepted,
    rejected or duplicate) at the other, and the other way round.
    Entries newer than ``grace_ms`` may still be in flight and are left out.
    """
    horizon = now_ms - grace_ms
    here = [
        e
        for e in log.search(AuditQuery(country=peer, since_ms=since_ms), limit=RECONCILE_LIMIT)
        if e.peer == peer and e.msg_id is not None
    ]
    there = [
        r for r in store.peer_entries(peer, since_ms) if r.peer == country and r.msg_id is not None
    ]
    here_out = {e.msg_id: e for e in here if e.msg_id and e.event == "relayed"}
    here_in = {e.msg_id: e for e in here if e.msg_id and e.event in INBOUND_EVENTS}
    there_out = {r.msg_id: r for r in there if r.msg_id and r.event == "relayed"}
    there_in = {r.msg_id: r for r in there if r.msg_id and r.event in INBOUND_EVENTS}
    only_here: list[ReconcileItem] = []
    only_there: list[ReconcileItem] = []
    different: list[tuple[str, str]] = []
    matched = 0
    for mid, e in here_out.items():
        if mid in there_in:
            matched += 1
            diff = _difference(e.data, there_in[mid].data)
            if diff:
                different.append((mid, diff))
        elif e.at_ms <= horizon:
            only_here.append(ReconcileItem(mid, "relayed", e.type, e.at_ms, "here"))
    for mid, r in there_out.items():
        if mid in here_in:
            matched += 1
            diff = _difference(r.data, here_in[mid].data)
            if diff:
                different.append((mid, diff))
        elif r.at_ms <= horizon:
            only_there.append(ReconcileItem(mid, "relayed", _type(r.data), r.at_ms, "there"))
    for mid, e in here_in.items():
        if mid not in there_out and e.at_ms <= horizon:
            only_here.append(ReconcileItem(mid, e.event, e.type, e.at_ms, "here"))
    for mid, r in there_in.items():
        if mid not in here_out and r.at_ms <= horizon:
            only_there.append(ReconcileItem(mid, r.event, _type(r.data), r.at_ms, "there"))
    return Reconciliation(
        peer, since_ms, matched, tuple(only_here), tuple(only_there), tuple(different)
    )


def to_record(e: AuditEntry) -> AuditRecord:
    return AuditRecord(
        data=encode_entry(e),
        at_ms=e.at,
        event=e.event.value,
        msg_id=e.message_id,
        type=e.type,
        sender=e.sender,
        recipients=tuple(e.recipients),
        case_ref=e.case_ref,
        code=e.code,
        peer=e.peer,
        in_reply_to=e.reply_to_id,
    )


def _type(data: bytes) -> str | None:
    try:
        return decode_entry(data).type
    except IxbError:
        return None


def _difference(a: bytes, b: bytes) -> str | None:
    """What two hubs' entries about one message disagree on.

    Sizes differ by design (every hub appends its hop countersignature); the
    payload hash names the content, which no hop changes.
    """
    try:
        x, y = decode_entry(a), decode_entry(b)
    except IxbError as exc:
        return f"unreadable entry: {exc.code}"
    for name in ("type", "sender", "payload_hash", "handling"):
        vx, vy = getattr(x, name), getattr(y, name)
        if vx is not None and vy is not None and vx != vy:
            return name
    if x.recipients and y.recipients and set(x.recipients) != set(y.recipients):
        return "recipients"
    return None


__all__ = ["HubAudit", "Reconciliation", "encode_publication", "format_message_id"]
