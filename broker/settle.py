"""A fetched batch from decision to acknowledgement: decide → plan → execute.

:class:`Settler` takes the messages of one JetStream fetch (from this
country's ingress, or from a peer's link) and

1. **decides** each in stream order with the :class:`~broker.pipeline.Pipeline`
   (one store transaction, no await inside, one ``now`` for the batch); on a
   link, control items (directories, checkpoints, cosignatures) are decided
   by the :class:`~broker.control.ControlPlane` where they stand;
2. **plans** what the batch must do (:func:`~broker.plan.plan_batch`) and
   seals the receipts (:func:`~broker.plan.seal_receipts`) — pure;
3. **executes** the plan: every publish at once; then, in worker threads,
   the audit commit (with a sync of the store's decision rows), and only
   after it the store's routed marks; only then the acks.

A message whose publishes (or whose receipts') failed is neither recorded nor
acked but left for redelivery; the store knows it is not routed yet, and
``Nats-Msg-Id`` de-duplication makes the repeated publishes no-ops. Decisions
of one source are taken in stream order even with batches settling side by
side: a batch holds its source's lock from its first decision to its last.

**When the disk refuses a write** (full, I/O error, file size limit; see
:mod:`broker.storage_health`), nothing escapes to the pull loop, nothing is
acked that is not durable, and no audit entry is lost or written twice:

- the audit entries are written before the routed marks, never beside them
  (side by side, a mark without its entries made the redelivery look
  finished and the entries were never written; entries without their mark
  made it look new and they were written twice). Entries that failed leave
  the whole batch naked: nothing of it was recorded, it is decided again
  when it comes back, refusal windows take back what it counted, and its
  refusal summaries wait for the next commit. Marks that failed (or the
  store's sync beside the entries) leave naked only the messages that
  needed one, the others being recorded; such a message comes back known
  but not routed, the pipeline finds its acceptance in the audit log
  (:meth:`~broker.auditing.HubAudit.recorded`) and it gets its mark alone:
  no second publish, receipt or entry;
- a failure while deciding or keeping receipts naks the batch before
  anything was published or recorded;
- a control item whose writes failed is naked with what follows it in its
  batch; its decision is kept, and when the item comes back the rest of the
  same writes runs (:class:`~broker.control.Writes`), not a new decision.

Each failure is reported to :class:`~broker.storage_health.StorageHealth`
(one log line per change of state, ``/healthz``), each success after one too;
naked messages come back after :data:`RETRY_DELAY_S`, so the hub neither
stops nor spins, and recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg

from broker.auditing import HubAudit
from broker.control import KIND_HEADER, ControlDecision, ControlPlane
from broker.metrics import Metrics
from broker.pipeline import Pipeline
from broker.plan import (
    BatchPlan,
    Decided,
    Publish,
    Sealed,
    plan_batch,
    receipt_entry,
    seal_receipts,
    valid_msg_id,
)
from broker.refusals import RefusalWindows
from broker.storage_health import STORAGE_ERRORS, StorageHealth
from broker.store import HubStore
from protocols.audit import AuditEntry, AuditEvent, make_entry
from protocols.identifiers import Principal, format_message_id
from protocols.keys import Identity, PublicIdentity
from transport.streams import TRANSPORT_ERRORS

log = structlog.get_logger("ixb.hub")

PublishFn = Callable[[Publish], Awaitable[bytes | None]]
"""Returns the bytes JetStream already held under a receipt's de-dup id, when not these."""
RETRY_DELAY_S = 1.0
"""How long a message left unsettled (a publish or a write failed) waits to come back."""
MAX_UNWRITTEN = 1024
"""Control decisions kept for their items' return at most (oldest dropped: decided again)."""


def kind_of(msg: Msg) -> str | None:
    """The control kind of a link item (directory, checkpoint, cosignature), None for a message."""
    return (msg.headers or {}).get(KIND_HEADER)


@dataclass(kw_only=True, eq=False, repr=False)  # holds keys and credentials: no repr
class Settler:
    """Settles fetched batches for one hub; see the module docstring for the three steps."""

    identity: Identity
    pipeline: Pipeline
    control: ControlPlane
    audit: HubAudit
    store: HubStore
    metrics: Metrics
    encryption_key: Callable[[Principal, int], PublicIdentity]
    links: frozenset[str]
    clock: Callable[[], int]
    publish: PublishFn
    storage: StorageHealth
    copied: Callable[[], Awaitable[bool]]
    """Whether everything recorded so far is in the country's ``AUDIT`` stream (copying
    it if not): asked before any ack, so an acknowledged message's entries survive this
    hub (:mod:`broker.audit_copy`). False leaves the batch for redelivery."""
    refusals: RefusalWindows = field(default_factory=RefusalWindows)
    _order: dict[str | None, asyncio.Lock] = field(default_factory=dict, init=False)
    _summaries: list[AuditEntry] = field(default_factory=list, init=False)
    """Refusal summaries made but not recorded yet (their commit failed)."""
    _unwritten: dict[tuple[str, int], ControlDecision] = field(default_factory=dict, init=False)
    """(peer, stream sequence) → the decision of a control item whose writes failed."""

    # --- 1. decide ------------------------------------------------------------------

    def decide(self, msgs: Sequence[Msg], now: int, *, peer: str | None) -> list[Decided]:
        """The pipeline's decisions, in order, in one store transaction (no await inside).

        The transaction commits without the disk; :meth:`execute` syncs the
        store beside the audit commit, before any of these messages is acked.
        A disk that refuses the commit raises (one of ``STORAGE_ERRORS``).
        """
        out: list[Decided] = []
        with self.store.transaction(durable=False):
            for msg in msgs:
                redelivered = msg.metadata.num_delivered > 1
                raw_id = (msg.headers or {}).get("Nats-Msg-Id")
                nats_id = valid_msg_id(raw_id)
                if peer is None:
                    publisher = msg.subject.rsplit(".", 1)[-1]
                    outcome = self.pipeline.from_local(
                        msg.data, publisher, now, redelivered=redelivered, nats_msg_id=raw_id
                    )
                    out.append(Decided(outcome, publisher, None, nats_id))
                else:
                    outcome = self.pipeline.from_peer(msg.data, peer, now, redelivered=redelivered)
                    out.append(Decided(outcome, None, peer, nats_id))
        return out

    async def local(self, msgs: list[Msg]) -> None:
        """A batch from this country's ingress."""
        started = time.perf_counter()
        async with self._lock(None):
            now = self.clock()
            try:
                decided = self.decide(msgs, now, peer=None)
            except STORAGE_ERRORS as exc:
                self.storage.failed("settle", exc)
                await _nak(msgs)
                return
        await self.execute(msgs, decided, now, started)

    async def from_peer(self, peer: str, msgs: list[Msg]) -> None:
        """A batch from ``peer``'s link: messages and control items decided in stream order.

        When the disk refuses a write, what was decided before it is settled
        and the rest of the batch is naked, undecided.
        """
        started = time.perf_counter()
        batch: list[Msg] = []
        decided: list[Decided] = []
        control: list[tuple[Msg, ControlDecision]] = []
        left: list[Msg] = []
        async with self._lock(peer):
            now = self.clock()
            writer = "settle"
            try:
                for is_message, run in itertools.groupby(msgs, key=lambda m: kind_of(m) is None):
                    items = list(run)
                    if is_message:
                        writer = "settle"
                        decided += self.decide(items, now, peer=peer)
                        batch += items
                        continue
                    writer = "control"
                    for msg in items:
                        decision = await self._control_item(peer, msg, now)
                        control.append((msg, decision))
            except STORAGE_ERRORS as exc:
                self.storage.failed(writer, exc)
                taken = {id(m) for m in batch} | {id(m) for m, _d in control}
                left = [m for m in msgs if id(m) not in taken]
        await asyncio.gather(
            self.execute(batch, decided, now, started),
            *(self._finish_control(peer, msg, d) for msg, d in control),
            _nak(left),
        )

    async def _control_item(self, peer: str, msg: Msg, now: int) -> ControlDecision:
        """Decide one control item and make its writes durable (later items read them).

        An item whose writes failed before gets the rest of the same decision's
        writes, not a new decision; a failure now keeps the decision and raises.
        """
        key = (peer, msg.metadata.sequence.stream)
        decision = self._unwritten.pop(key, None)
        if decision is None:
            decision = self.control.decide(peer, kind_of(msg) or "", msg.data, now)
        if decision.writes is None:
            return decision
        try:
            await asyncio.to_thread(decision.writes)
        except STORAGE_ERRORS:
            if len(self._unwritten) >= MAX_UNWRITTEN:
                del self._unwritten[next(iter(self._unwritten))]
            self._unwritten[key] = decision
            raise
        self.storage.ok("control")
        return decision

    def _lock(self, source: str | None) -> asyncio.Lock:
        lock = self._order.get(source)
        if lock is None:
            lock = self._order[source] = asyncio.Lock()
        return lock

    # --- 2. plan ----------------------------------------------------------------------

    def plan(self, decided: Sequence[Decided], now: int) -> tuple[BatchPlan, Sealed]:
        plan = plan_batch(decided, hub=self.identity.principal, now=now)
        sealed = seal_receipts(
            plan.receipts,
            identity=self.identity,
            encryption_key=self.encryption_key,
            links=self.links,
            now=now,
            sealed_before=self.store.sealed_receipt,
        )
        unroutable = {id(st) for st, _code in sealed.unroutable}
        for st, code in sealed.unroutable:
            log.warning("receipt_unroutable", to=str(st.to), code=code)
        for st in plan.receipts:
            if id(st) not in unroutable:
                self.metrics.inc("ixb_receipts_total", len(st.ids), status=st.status.value)
        return plan, sealed

    # --- 3. execute -------------------------------------------------------------------

    async def execute(
        self, msgs: Sequence[Msg], decided: Sequence[Decided], now: int, started: float
    ) -> None:
        """Publish, record, mark routed, then ack (or leave for redelivery what failed)."""
        if not msgs:
            return
        plan, sealed = self.plan(decided, now)
        # receipts are kept before they are sent: planned again (after a crash) they go
        # out as the same bytes, which is what JetStream stored under their de-dup ids
        try:
            kept = await asyncio.to_thread(self.store.keep_sealed_receipts, sealed.fresh, now)
        except STORAGE_ERRORS as exc:
            self.storage.failed("settle", exc)
            await _nak(msgs)
            return
        if not kept:
            plan, sealed = self.plan(decided, now)
        planned = time.perf_counter()
        failed, receipt_entries = await self._publish_all(
            (*plan.publishes, *sealed.publishes), decided
        )
        published = time.perf_counter()
        admitted = self._admit_refusals(decided, plan, failed, now)
        quiet = {n for n, logged in admitted.items() if not logged}
        unsettled = await self._commit(plan, failed | quiet, receipt_entries, now)
        if unsettled is None:  # nothing recorded: all of it comes back
            self._retract_refusals(decided, plan, admitted)
            await _nak(msgs)
            return
        recorded = time.perf_counter()
        if not await self.copied():  # recorded, but not yet where it survives us
            await _nak(msgs)
            return
        committed = time.perf_counter()
        self.metrics.inc("ixb_batches_total")
        self.metrics.inc("ixb_batch_messages_total", len(msgs))
        self.metrics.inc("ixb_batch_seconds_total", planned - started, stage="decide_plan_seal")
        self.metrics.inc("ixb_batch_seconds_total", published - planned, stage="publish_wait")
        self.metrics.inc("ixb_batch_seconds_total", recorded - published, stage="durable_commit")
        self.metrics.inc("ixb_batch_seconds_total", committed - recorded, stage="audit_copy")
        for n, (msg, settled) in enumerate(zip(msgs, plan.messages, strict=True)):
            if n in failed or n in unsettled:
                await _nak([msg])
                continue
            await msg.ack()
            self.metrics.observe_latency(committed - started)
            report = settled.report
            self.metrics.inc("ixb_messages_total", decision=report.decision)
            if report.code is not None:
                self.metrics.inc("ixb_rejected_total", code=report.code)
            if n in quiet:
                continue  # counted, and summed up in one audit entry when its window closes
            if report.decision == "rejected":
                log.warning(
                    report.event, msg_id=report.msg_id, code=report.code, **dict(report.fields)
                )
            else:
                log.info(report.event, msg_id=report.msg_id, **dict(report.fields))

    async def _publish_all(
        self, publishes: Sequence[Publish], decided: Sequence[Decided]
    ) -> tuple[set[int], list[AuditEntry]]:
        """Every publish at once: the batch positions whose publishes failed, and the entries
        of the receipts that went out."""
        results = await asyncio.gather(*map(self.publish, publishes), return_exceptions=True)
        failed: set[int] = set()
        receipt_entries: list[AuditEntry] = []
        for p, result in zip(publishes, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, TRANSPORT_ERRORS):
                    raise result
                failed |= p.works
                log.warning(
                    "route_failed_will_retry",
                    error=str(result),
                    msg_ids=[decided[n].msg_id for n in sorted(p.works)],
                )
            elif isinstance(result, bytes) and p.entry is not None:
                # the receipt that went out was sealed before (another process, a restore)
                entry = receipt_entry(self.identity.principal, result, p.entry.at)
                log.info(
                    "receipt_sent_before",
                    msg_id=_id_text(entry.msg_id),
                    instead_of=_id_text(p.entry.msg_id),
                )
                receipt_entries.append(entry)
            elif p.entry is not None:
                receipt_entries.append(p.entry)
        return failed, receipt_entries

    async def _commit(
        self,
        plan: BatchPlan,
        skipped: set[int],
        receipt_entries: list[AuditEntry],
        now: int,
    ) -> set[int] | None:
        """The audit entries, then the routed marks, each durable (see the module docstring).

        ``skipped``: positions that record nothing of their own (a publish failed, or
        a refusal only counted). Returns the positions left unsettled because their
        routed mark failed, or None when the entries failed (nothing was recorded).
        """
        done = [m for n, m in enumerate(plan.messages) if n not in skipped]
        summaries = self.refusal_summaries(now)
        entries = [e for m in done for e in m.entries] + receipt_entries + summaries
        routed = {n: m.routed for n, m in enumerate(plan.messages) if n not in skipped}
        marks = [r for r in routed.values() if r is not None]
        # the log first, with the decisions' store rows made durable beside it
        recorded, synced = await asyncio.gather(
            asyncio.to_thread(self.audit.record, entries),
            asyncio.to_thread(self.store.sync),
            return_exceptions=True,
        )
        for result in (recorded, synced):
            if isinstance(result, BaseException) and not isinstance(result, STORAGE_ERRORS):
                raise result
        if isinstance(recorded, BaseException):
            self.storage.failed("settle", recorded)
            self.unrecorded(summaries)
            return None
        # recorded: a message that needed a mark and did not get it comes back, and the
        # pipeline finds it in the log (``Accepted.unmarked``); the others are settled
        unmarked = {n for n, r in routed.items() if r is not None}
        if isinstance(synced, BaseException):
            self.storage.failed("settle", synced)
            return unmarked
        try:
            await asyncio.to_thread(self.store.mark_routed, *marks)
        except STORAGE_ERRORS as exc:
            self.storage.failed("settle", exc)
            return unmarked
        if entries or marks:
            self.storage.ok("settle")
        return set()

    def _admit_refusals(
        self, decided: Sequence[Decided], plan: BatchPlan, failed: set[int], now: int
    ) -> dict[int, bool]:
        """Batch position → whether the refusal gets an entry of its own (False: only
        counted, beyond the per-window allowance of its source)."""
        admitted: dict[int, bool] = {}
        for n, (d, m) in enumerate(zip(decided, plan.messages, strict=True)):
            if n in failed or m.report.decision != "rejected" or m.report.code is None:
                continue
            admitted[n] = self.refusals.admit(_refusal_source(d), m.report.code, now)
        return admitted

    def _retract_refusals(
        self, decided: Sequence[Decided], plan: BatchPlan, admitted: dict[int, bool]
    ) -> None:
        """The batch was not settled: its refusals come back and are counted then."""
        for n, logged in admitted.items():
            code = plan.messages[n].report.code
            if code is not None:
                self.refusals.retract(_refusal_source(decided[n]), code, logged=logged)

    def refusal_summaries(self, now: int) -> list[AuditEntry]:
        """One entry per closed window of refusals that were counted, not logged one by one.

        With the summaries whose recording failed before (:meth:`unrecorded`):
        the caller records them all, or hands them back.
        """
        hub = str(self.identity.principal)
        out, self._summaries = self._summaries, []
        for w in self.refusals.close(now):
            kind, _, name = w.source.partition(":")
            out.append(
                make_entry(
                    hub,
                    now,
                    AuditEvent.REJECTED,
                    code=w.code,
                    detail=(
                        f"{w.count} more refusals from the {kind} of {name}, "
                        f"{w.start_ms}-{w.end_ms} ms, not logged one by one"
                    ),
                    peer=name if kind == "link" else None,
                )
            )
            log.warning("refusals_summed", source=w.source, code=w.code, count=w.count)
        return out

    def unrecorded(self, summaries: Sequence[AuditEntry]) -> None:
        """Summaries from :meth:`refusal_summaries` that could not be recorded: next time."""
        self._summaries[:0] = summaries

    async def _finish_control(self, peer: str, msg: Msg, decision: ControlDecision) -> None:
        """Send what a control item causes (a cosignature), then ack it; nak to retry."""
        try:
            await asyncio.gather(*map(self.publish, decision.publishes))
        except TRANSPORT_ERRORS as exc:
            log.warning("link_control_failed_will_retry", peer=peer, error=str(exc))
            await _nak([msg])
            return
        if not await self.copied():
            await _nak([msg])
            return
        await msg.ack()


def _id_text(msg_id: bytes | None) -> str | None:
    return None if msg_id is None else format_message_id(msg_id)


def _refusal_source(d: Decided) -> str:
    return f"ingress:{d.publisher}" if d.via is None else f"link:{d.via}"


async def _nak(msgs: Sequence[Msg]) -> None:
    """Leave for redelivery after :data:`RETRY_DELAY_S` (a lost nak: after the ack wait)."""
    for msg in msgs:
        with contextlib.suppress(nats.errors.Error):
            await msg.nak(delay=RETRY_DELAY_S)
