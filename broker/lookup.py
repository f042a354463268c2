"""Lookups on the synchronous path at one hub (SPEC §14): NATS request/reply, audited durably.

A document check or person query arrives as a request: from a local agency on
``ixb.<CC>.lookup.<NAME>``, or from a peer hub on ``ixb.<PEER>.lookup.<CC>``
in that peer's link account. The hub decides it with the same
:class:`~broker.pipeline.Pipeline` as the durable path (rate limit, decode,
verify, replay, policy, countersignature), then asks onward: the owner's
country's hub over the link, or, at the owner's hub, the owning agency's
responders on ``ixb.<CC>.serve.<NAME>``. The reply that comes back is decided
again (the peer's hub or the responder signed it) and handed back.

What each hub records, and when (docs/design-decisions.md, "Lookups"):

- the request's entries (``accepted``, and ``relayed`` or ``delivered``) go to
  the :class:`~broker.groupcommit.GroupCommitter` as soon as it is decided,
  and the request moves on without waiting for them;
- the answer's entries too, and the answer is held until the entries of both
  request and answer are durable: nobody holds an answer this hub has not
  recorded;
- refusals are answered at once with a signed rejection receipt and recorded
  without holding it (a refusal releases nothing); beyond the per-source
  allowance of :class:`~broker.refusals.RefusalWindows` they are counted and
  summed up in one entry.

Beyond the lookups it takes at once (an adaptive limit under ``[lookup]
max_in_flight``, :mod:`broker.limit`) the hub refuses with ``ixb.E_BUSY``
before any other work but what the signed refusal needs. When
the owner's responders do not answer within ``responder_timeout_ms`` (none
subscribed: at once), the owner's hub delivers the request into the owner's
durable inbox and answers with a signed ``queued`` receipt and the due time.
When the owner's country's hub does not answer (none subscribed over the link,
or nothing within ``peer_timeout_ms``), the requester's hub sends the lookup
on over the link's durable path and answers ``queued`` itself: the link's
stream holds it until the peer is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from broker.config import LookupSection
from broker.groupcommit import GroupCommitter
from broker.limit import AdaptiveLimit
from broker.links import LinkState
from broker.metrics import Metrics
from broker.pipeline import Accepted, Pipeline, Rejected, rejection_recipient
from broker.plan import NO_ID, RECEIPT_TTL_MS, REJECTION_DETAIL_CHARS, message_dedup
from broker.refusals import RefusalWindows
from broker.storage_health import STORAGE_ERRORS, StorageHealth
from broker.store import HubStore
from protocols import subjects
from protocols.audit import AuditEntry, AuditEvent, make_entry
from protocols.deadlines import due_ms
from protocols.envelope import Envelope, Header, decode_envelope, seal_envelope, verify_envelope
from protocols.errors import (
    BusyError,
    IoError,
    IxbError,
    PeerError,
    ReplayError,
    UnauthorisedError,
)
from protocols.identifiers import Principal
from protocols.keys import Identity, PublicIdentity
from protocols.lookups import check_lookup_answer, check_lookup_request
from protocols.messages import Receipt, ReceiptStatus
from transport import streams

log = structlog.get_logger("ixb.hub")

TRANSPORT_ERRORS = (TimeoutError, nats.errors.Error)
QUEUE_PUBLISH_TIMEOUT_S = 5.0
"""How long the owner's hub waits for its inbox stream to store a queued lookup."""


@dataclass(frozen=True, slots=True)
class Held:
    """A reply to hand back, the entries to make durable first, and how it ended."""

    data: bytes
    entries: tuple[AuditEntry, ...]
    marks: tuple[tuple[str, bytes], ...] = ()
    outcome: str = "answered"
    hold: bool = True
    """Whether the reply waits for its entries (an answer) or not (a refusal at once)."""


@dataclass(kw_only=True, eq=False, repr=False)  # holds the hub's keys: no repr
class LookupService:
    config: LookupSection
    identity: Identity
    pipeline: Pipeline
    store: HubStore
    committer: GroupCommitter
    metrics: Metrics
    storage: StorageHealth
    refusals: RefusalWindows
    encryption_key: Callable[[Principal, int], PublicIdentity]
    clock: Callable[[], int]
    nc: NatsClient | None = None
    js: JetStreamContext | None = None
    links: Mapping[str, LinkState] = field(default_factory=dict)
    in_flight: int = 0
    _adaptive: AdaptiveLimit | None = None
    _pending: set[tuple[str, bytes]] = field(default_factory=set)
    """(sender, id) of lookups being answered: the same envelope again meanwhile is a replay."""

    @property
    def country(self) -> str:
        return self.identity.principal.country

    @property
    def hub(self) -> str:
        return str(self.identity.principal)

    # --- serving ------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Answer lookups from local agencies and from every peer until ``stop``; then finish
        the lookups in flight (each bounded by its timeouts), their commits last."""
        if self.nc is None:
            raise IoError("the hub is not connected")
        finished = asyncio.Event()
        async with asyncio.TaskGroup() as writer:
            writer.create_task(self.committer.run(finished))
            try:
                await self._serve(stop)
            finally:
                finished.set()

    async def _serve(self, stop: asyncio.Event) -> None:
        assert self.nc is not None  # noqa: S101 - checked by serve
        async with asyncio.TaskGroup() as tasks:

            async def from_agency(msg: Msg) -> None:
                tasks.create_task(self._answer(msg, publisher=msg.subject.rsplit(".", 1)[-1]))

            def from_peer(peer: str) -> Callable[[Msg], object]:
                async def cb(msg: Msg) -> None:
                    tasks.create_task(self._answer(msg, peer=peer))

                return cb

            subs = [
                await self.nc.subscribe(
                    subjects.lookup_all(self.country), queue=subjects.LOOKUP_QUEUE, cb=from_agency
                )
            ]
            for peer, link in self.links.items():
                subs.append(
                    await link.nc.subscribe(
                        subjects.link_lookup(peer, self.country),
                        queue=subjects.LOOKUP_QUEUE,
                        cb=from_peer(peer),  # type: ignore[arg-type]
                    )
                )
            try:
                await stop.wait()
            finally:
                for sub in subs:
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()

    async def _answer(
        self, msg: Msg, *, publisher: str | None = None, peer: str | None = None
    ) -> None:
        if not msg.reply:
            return  # a publish, not a request: nobody would hear the answer
        data = await self.handle(msg.data, publisher=publisher, peer=peer)
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(data)

    async def handle(self, data: bytes, *, publisher: str | None, peer: str | None) -> bytes:
        """The reply to one lookup: an answer envelope or a signed receipt (empty: no statement
        can be made to anybody, e.g. an unverified sender over a link)."""
        source = "agency" if peer is None else "link"
        now = self.clock()
        if self.in_flight >= self.admitted():
            held = self._busy(data, now, publisher=publisher, peer=peer)
        else:
            self.in_flight += 1
            arrived, holding = time.monotonic(), self.in_flight
            try:
                held = await self._lookup(data, now, publisher=publisher, peer=peer)
            except STORAGE_ERRORS as exc:  # the store failed a replay lookup
                self.storage.failed("lookup", exc)
                error = IoError(f"{self.hub} could not record the lookup; try again")
                held = self._busy(data, now, publisher=publisher, peer=peer, error=error)
            finally:
                self.in_flight -= 1
            if held.outcome == "answered":  # a queued or refused lookup says nothing of queues
                self._sample((time.monotonic() - arrived) * 1000, holding)
        self.metrics.inc("ixb_lookups_total", source=source, outcome=held.outcome)
        return held.data

    def admitted(self) -> int:
        """How many lookups this hub takes at once now: the adaptive limit (``[lookup]
        adaptive_limit``, broker/limit.py) under ``max_in_flight``, or that alone."""
        if not self.config.adaptive_limit:
            return self.config.max_in_flight
        return self._limit().current

    def _limit(self) -> AdaptiveLimit:
        if self._adaptive is None or self._adaptive.ceiling != self.config.max_in_flight:
            self._adaptive = AdaptiveLimit(self.config.max_in_flight)  # the config was changed
            self.metrics.set("ixb_lookup_limit", self.config.max_in_flight)  # where it starts
        return self._adaptive

    def _sample(self, took_ms: float, holding: int) -> None:
        """An answered lookup's time to the limit; the gauge follows when the limit moves."""
        limit = self._limit()
        before = limit.current
        limit.sample(took_ms, holding, self.clock())
        if limit.current != before:
            self.metrics.set("ixb_lookup_limit", self.admitted())

    async def _lookup(
        self, data: bytes, now: int, *, publisher: str | None, peer: str | None
    ) -> Held:
        # the pipeline's replay row waits in memory for the group commit (broker/seen.py)
        outcome = (
            self.pipeline.from_local(data, publisher, now)
            if publisher is not None
            else self.pipeline.from_peer(data, peer or "", now)
        )
        if isinstance(outcome, Rejected):
            return await self._finish(self._refusal(outcome, now, publisher=publisher, peer=peer))
        env = outcome.envelope
        header = env.header
        key = (header.sender, header.id)
        try:
            if outcome.duplicate or outcome.unmarked or key in self._pending:
                raise ReplayError(f"lookup {header.message_id} was already received")
            check_lookup_request(header)
            if peer is not None and header.recipient_principals[0].country != self.country:
                # as on the durable path, a peer's hub hands us only what is for our agencies
                raise UnauthorisedError(f"a lookup from {peer} for another country than ours")
        except IxbError as exc:
            refused = Rejected(exc, header, verified=True)
            return await self._finish(self._refusal(refused, now, publisher=publisher, peer=peer))
        (owner,) = header.recipient_principals
        entries = [make_entry(self.hub, now, AuditEvent.ACCEPTED, envelope=env, peer=peer)]
        if owner.country != self.country:
            entries.append(
                make_entry(self.hub, now, AuditEvent.RELAYED, envelope=env, peer=owner.country)
            )
        self._pending.add(key)
        try:
            # the request's entries are written while it moves on; only the answer waits
            request_durable = self.committer.submit(entries, [key])
            request_durable.add_done_callback(_retrieve)  # awaited below, unless a write raises
            if owner.country != self.country:
                held = await self._ask_peer(owner.country, env)
            else:
                held = await self._ask_owner(owner, env, via=peer)
            return await self._finish(held, request_durable, header=header, peer=peer)
        finally:
            self._pending.discard(key)

    async def _finish(
        self,
        held: Held,
        request_durable: asyncio.Future[None] | None = None,
        *,
        header: Header | None = None,
        peer: str | None = None,
    ) -> Held:
        """Commit ``held``'s entries; hold its reply until they (and the request's) are durable."""
        done = self.committer.submit(held.entries, held.marks)
        waiting = [f for f in (request_durable, done) if f is not None]
        if not held.hold:
            for f in waiting:
                f.add_done_callback(_retrieve)
            return held
        await asyncio.wait(waiting)
        failed = [f.exception() for f in waiting if f.exception() is not None]
        if not failed:
            return held
        # not recorded: the answer is withheld; the requester hears why (nothing to record)
        log.warning("lookup_unrecorded", msg_id=None if header is None else header.message_id)
        error = IoError(f"{self.hub} could not record the lookup; try again")
        target = None
        if header is not None:
            target = rejection_recipient(
                Rejected(error, header, verified=True), country=self.country, publisher=None
            )
        data = b""
        if target is not None and header is not None:
            with contextlib.suppress(IxbError):
                data, _entry = self._seal_receipt(
                    target,
                    ReceiptStatus.REJECTED,
                    header.id,
                    self.clock(),
                    code=error.code,
                    detail=error.detail,
                )
        return Held(data, (), outcome="unrecorded", hold=False)

    # --- asking onward ----------------------------------------------------------------

    async def _ask_peer(self, peer: str, env: Envelope) -> Held:
        """The owner's country's hub answers (an answer, or its signed receipt about it)."""
        header = env.header
        link = self.links.get(peer)
        if link is None:
            return self._refused_after(IoError(f"no link to {peer}"), env)
        try:
            reply = await link.nc.request(
                subjects.link_lookup(self.country, peer),
                env.to_bytes(),
                timeout=self.config.peer_timeout_ms / 1000,
            )
        except nats.errors.NoRespondersError:
            return await self._relay_durably(link, env, f"the hub of {peer} does not answer")
        except TRANSPORT_ERRORS:
            wait = f"{self.config.peer_timeout_ms / 1000:g} s"
            return await self._relay_durably(
                link, env, f"the hub of {peer} did not answer within {wait}"
            )
        if not reply.data:
            return self._refused_after(
                PeerError(f"the hub of {peer} refused the lookup without a statement"), env
            )
        now = self.clock()
        outcome = self.pipeline.from_peer(reply.data, peer, now)
        if isinstance(outcome, Rejected):
            error = type(outcome.error)(f"the reply of {peer}'s hub: {outcome.error.detail}")
            extra = make_entry(
                self.hub,
                now,
                AuditEvent.REJECTED,
                header=outcome.header,
                code=outcome.error.code,
                detail=outcome.error.detail,
                peer=peer,
            )
            return self._refused_after(error, env, extra=(extra,))
        answer = outcome.envelope
        refused = self._refused_answer(outcome, header, now, peer=peer)
        if refused is not None:
            why, extra = refused
            return self._refused_after(why, env, extra=(extra,))
        entries = (
            make_entry(self.hub, now, AuditEvent.ACCEPTED, envelope=answer, peer=peer),
            make_entry(
                self.hub,
                now,
                AuditEvent.DELIVERED,
                envelope=answer,
                peer=peer,
                recipients=[header.sender],
            ),
        )
        outcome_name = _outcome_of(answer)
        return Held(
            answer.to_bytes(),
            entries,
            ((answer.header.sender, answer.header.id),),
            outcome=outcome_name,
        )

    async def _relay_durably(self, link: LinkState, env: Envelope, why: str) -> Held:
        """The owner's country's hub did not answer: the lookup goes on over the link's durable
        path (its stream holds it until the link is back; ``relayed`` is recorded already), and
        the requester is told it is queued, with its due time (SPEC §14.4)."""
        header = env.header
        (owner,) = header.recipient_principals
        try:
            await streams.publish_within(
                link.js,
                subjects.cross_border(self.country, link.peer),
                env.to_bytes(),
                headers={"Nats-Msg-Id": message_dedup(header.message_id, header.sender)},
                timeout=QUEUE_PUBLISH_TIMEOUT_S,
            )
        except TRANSPORT_ERRORS:
            return self._refused_after(
                IoError(f"{why}, and the link's stream could not take the lookup"), env
            )
        detail = f"queued for {owner}: {why}; sent on over the durable path"
        return self._queued(header, self.clock(), detail, why)

    async def _ask_owner(self, owner: Principal, env: Envelope, *, via: str | None) -> Held:
        """The owning agency's responders answer; none in time: the lookup is queued."""
        header = env.header
        if self.nc is None:
            raise IoError("the hub is not connected")
        try:
            reply = await self.nc.request(
                subjects.serve(owner),
                env.to_bytes(),
                timeout=self.config.responder_timeout_ms / 1000,
            )
        except TRANSPORT_ERRORS as exc:  # no responders (at once), or none answered in time
            return await self._queue(owner, env, via=via, why=type(exc).__name__)
        now = self.clock()
        delivered = make_entry(
            self.hub, now, AuditEvent.DELIVERED, envelope=env, peer=via, recipients=[str(owner)]
        )
        outcome = self.pipeline.from_local(reply.data, owner.name, now)
        if isinstance(outcome, Rejected):
            extra = make_entry(
                self.hub,
                now,
                AuditEvent.REJECTED,
                header=outcome.header,
                code=outcome.error.code,
                detail=f"{outcome.error.detail} (lookup answer of {owner})",
            )
            error = type(outcome.error)(f"the answer of {owner}: {outcome.error.detail}")
            return self._refused_after(error, env, extra=(delivered, extra), via=via)
        answer = outcome.envelope
        refused = self._refused_answer(outcome, header, now, peer=None, from_agency=True)
        if refused is not None:
            why, extra = refused
            return self._refused_after(why, env, extra=(delivered, extra), via=via)
        requester = header.sender_principal
        onward = (
            make_entry(
                self.hub, now, AuditEvent.DELIVERED, envelope=answer, recipients=[str(requester)]
            )
            if requester.country == self.country
            else make_entry(
                self.hub, now, AuditEvent.RELAYED, envelope=answer, peer=requester.country
            )
        )
        entries = (
            delivered,
            make_entry(self.hub, now, AuditEvent.ACCEPTED, envelope=answer),
            onward,
        )
        return Held(answer.to_bytes(), entries, ((answer.header.sender, answer.header.id),))

    async def _queue(self, owner: Principal, env: Envelope, *, via: str | None, why: str) -> Held:
        """No responder answered: into the owner's durable inbox, and a signed ``queued``."""
        header = env.header
        try:
            if self.js is None:
                raise nats.errors.ConnectionClosedError
            dedup = f"{message_dedup(header.message_id, header.sender)}:{owner.name}"
            await streams.publish_within(
                self.js,
                subjects.inbox(owner),
                env.to_bytes(),
                headers={"Nats-Msg-Id": dedup},
                timeout=QUEUE_PUBLISH_TIMEOUT_S,
            )
        except TRANSPORT_ERRORS:
            return self._refused_after(
                IoError(f"{owner} did not answer and its inbox could not take the lookup"),
                env,
                via=via,
            )
        now = self.clock()
        delivered = make_entry(
            self.hub, now, AuditEvent.DELIVERED, envelope=env, peer=via, recipients=[str(owner)]
        )
        return self._queued(header, now, f"queued at {owner}", why, (delivered,))

    def _queued(
        self,
        header: Header,
        now: int,
        detail: str,
        why: str,
        entries: tuple[AuditEntry, ...] = (),
    ) -> Held:
        """The lookup waits on the durable path now: the requester's signed ``queued`` receipt
        with the due time its priority and the agreement give, after ``entries``."""
        (owner,) = header.recipient_principals
        due = due_ms(header.created, header.priority, self.store.tiers_for(header))
        try:
            data, entry = self._seal_receipt(
                header.sender_principal,
                ReceiptStatus.QUEUED,
                header.id,
                now,
                detail=detail,
                due=due,
            )
        except IxbError as exc:
            log.warning("receipt_unroutable", to=header.sender, code=exc.code)
            return Held(b"", entries, outcome="queued")
        log.info("lookup_queued", msg_id=header.message_id, owner=str(owner), due_ms=due, why=why)
        return Held(data, (*entries, entry), outcome="queued")

    # --- refusals -----------------------------------------------------------------------

    def _busy(
        self,
        data: bytes,
        now: int,
        *,
        publisher: str | None,
        peer: str | None,
        error: IxbError | None = None,
    ) -> Held:
        """``ixb.E_BUSY`` (or ``error``) at once: only the work a signed refusal needs (decode;
        over a link, the sender's signature, since only a verified sender is answered)."""
        header: Header | None = None
        verified = False
        with contextlib.suppress(IxbError):
            env = decode_envelope(data, self.pipeline.limits)
            header = env.header
            if peer is not None:
                verify_envelope(env, self.pipeline.keys, now, self.pipeline.limits)
                verified = header.sender_principal.country == peer
        if error is None:
            error = BusyError(f"{self.hub} has {self.in_flight} lookups in flight; retry")
        held = self._refusal(Rejected(error, header, verified), now, publisher=publisher, peer=peer)
        self.committer.submit(held.entries).add_done_callback(_retrieve)
        return Held(held.data, (), outcome=held.outcome, hold=False)

    def _refusal(
        self, outcome: Rejected, now: int, *, publisher: str | None, peer: str | None
    ) -> Held:
        """A refusal of the request: its entry (or only a count, under a flood) and the signed
        rejection receipt to whoever may be told (SPEC §9.1), not held."""
        err = outcome.error
        header = outcome.header
        source = f"lookup:{publisher}" if peer is None else f"link:{peer}"
        logged = self.refusals.admit(source, err.code, now)
        entries: list[AuditEntry] = []
        if logged:
            entries.append(
                make_entry(
                    self.hub,
                    now,
                    AuditEvent.REJECTED,
                    header=header,
                    msg_id=None if header is not None else NO_ID,
                    code=err.code,
                    detail=err.detail if peer else f"{err.detail} (lookup of {publisher})",
                    peer=peer,
                )
            )
            log.warning(
                "lookup_rejected",
                msg_id=None if header is None else header.message_id,
                code=err.code,
                detail=err.detail,
                via=peer or f"lookup:{publisher}",
            )
        target = rejection_recipient(outcome, country=self.country, publisher=publisher)
        if peer is not None and (
            header is None or all(r.country != self.country for r in header.recipient_principals)
        ):
            target = None  # a hub of neither the sender's nor a recipient's country states nothing
        data = b""
        if target is not None:
            for_id = header.id if header is not None else NO_ID
            try:
                data, entry = self._seal_receipt(
                    target,
                    ReceiptStatus.REJECTED,
                    for_id,
                    now,
                    code=err.code,
                    detail=err.detail[:REJECTION_DETAIL_CHARS],
                )
            except IxbError as exc:
                log.warning("receipt_unroutable", to=str(target), code=exc.code)
            else:
                if logged:
                    entries.append(entry)
        return Held(
            data,
            tuple(entries),
            outcome="busy" if isinstance(err, BusyError) else "rejected",
            hold=False,
        )

    def _refused_answer(
        self,
        outcome: Accepted,
        request: Header,
        now: int,
        *,
        peer: str | None,
        from_agency: bool = False,
    ) -> tuple[IxbError, AuditEntry] | None:
        """Why a reply that passed the pipeline still does not answer ``request`` (a replay,
        not the answering type from its recipient, or an agency's receipt), with its
        ``rejected`` entry; None when it answers it."""
        answer = outcome.envelope
        try:
            if outcome.duplicate or outcome.unmarked:
                raise ReplayError(f"{answer.header.message_id} was already received")
            check_lookup_answer(answer.header, request)
            if from_agency and answer.header.type == "receipt":
                raise PeerError("an agency answers a lookup with its answer, not a receipt")
        except IxbError as exc:
            entry = make_entry(
                self.hub,
                now,
                AuditEvent.REJECTED,
                envelope=answer,
                code=exc.code,
                detail=exc.detail,
                peer=peer,
            )
            return exc, entry
        return None

    def _refused_after(
        self,
        error: IxbError,
        request: Envelope,
        *,
        extra: Sequence[AuditEntry] = (),
        via: str | None = None,
    ) -> Held:
        """The accepted request ends in a refusal further on: a signed rejection receipt to
        its sender, held like an answer (the request's entries are durable first)."""
        header = request.header
        now = self.clock()
        entries = [
            *extra,
            make_entry(
                self.hub,
                now,
                AuditEvent.REJECTED,
                header=header,
                code=error.code,
                detail=error.detail,
                peer=via,
            ),
        ]
        data = b""
        try:
            data, entry = self._seal_receipt(
                header.sender_principal,
                ReceiptStatus.REJECTED,
                header.id,
                now,
                code=error.code,
                detail=error.detail[:REJECTION_DETAIL_CHARS],
            )
            entries.append(entry)
        except IxbError as exc:
            log.warning("receipt_unroutable", to=header.sender, code=exc.code)
        log.warning(
            "lookup_refused", msg_id=header.message_id, code=error.code, detail=error.detail
        )
        return Held(data, tuple(entries), outcome="rejected")

    def _seal_receipt(
        self,
        to: Principal,
        status: ReceiptStatus,
        for_id: bytes,
        now: int,
        *,
        code: str | None = None,
        detail: str | None = None,
        due: int | None = None,
    ) -> tuple[bytes, AuditEntry]:
        """A receipt this hub signs to ``to``, and its entry (delivered here, or relayed)."""
        body = Receipt(
            for_id=for_id,
            status=status,
            by=self.hub,
            at_ms=now,
            code=code,
            detail=detail or None,
            due_ms=due,
        )
        data = seal_envelope(
            sender=self.identity,
            recipients=[self.encryption_key(to, now)],
            body=body,
            now_ms=now,
            ttl_ms=RECEIPT_TTL_MS,
            in_reply_to=for_id,
        )
        envelope = decode_envelope(data)
        if to.country == self.country:
            entry = make_entry(self.hub, now, AuditEvent.DELIVERED, envelope=envelope)
        else:
            entry = make_entry(
                self.hub, now, AuditEvent.RELAYED, envelope=envelope, peer=to.country
            )
        return data, entry


def _outcome_of(answer: Envelope) -> str:
    """How a peer's reply ended the lookup, for the metrics (a receipt's status is sealed:
    the hub sees only that it is a receipt)."""
    return "receipt" if answer.header.type == "receipt" else "answered"


def _retrieve(future: asyncio.Future[None]) -> None:
    """A refusal's entries are not waited for; their failure is reported by the committer."""
    if not future.cancelled():
        future.exception()
