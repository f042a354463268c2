"""A fetched batch from decision to acknowledgement: decide → plan → execute.

:class:`Settler` takes the messages of one JetStream fetch (from this
country's ingress, or from a peer's link) and

1. **decides** each in stream order with the :class:`~broker.pipeline.Pipeline`
   (one store transaction, no await inside, one ``now`` for the batch); on a
   link, control items (directories, checkpoints, cosignatures) are decided
   by the :class:`~broker.control.ControlPlane` where they stand;
2. **plans** what the batch must do (:func:`~broker.plan.plan_batch`) and
   seals the receipts (:func:`~broker.plan.seal_receipts`) — pure;
3. **executes** the plan: every publish at once, then one audit commit and
   one store commit in worker threads, and only then the acks.

A message whose publishes (or whose receipts') failed is neither recorded nor
acked but left for redelivery; the store knows it is not routed yet, and
``Nats-Msg-Id`` de-duplication makes the repeated publishes no-ops. Decisions
of one source are taken in stream order even with batches settling side by
side: a batch holds its source's lock from its first decision to its last.
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
from broker.plan import BatchPlan, Decided, Publish, Sealed, plan_batch, seal_receipts, valid_msg_id
from broker.refusals import RefusalWindows
from broker.store import HubStore
from protocols.audit import AuditEntry, AuditEvent, make_entry
from protocols.identifiers import Principal
from protocols.keys import Identity, PublicIdentity

log = structlog.get_logger("ixb.hub")

PublishFn = Callable[[Publish], Awaitable[None]]
TRANSPORT_ERRORS = (TimeoutError, nats.errors.Error, nats.js.errors.Error)
RETRY_DELAY_S = 1.0


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
    refusals: RefusalWindows = field(default_factory=RefusalWindows)
    _order: dict[str | None, asyncio.Lock] = field(default_factory=dict, init=False)

    # --- 1. decide ------------------------------------------------------------------

    def decide(self, msgs: Sequence[Msg], now: int, *, peer: str | None) -> list[Decided]:
        """The pipeline's decisions, in order, in one store transaction (no await inside).

        The transaction commits without the disk; the store commit of
        :meth:`execute` makes it durable before any of these messages is acked.
        """
        out: list[Decided] = []
        with self.store.transaction(durable=False):
            for msg in msgs:
                redelivered = msg.metadata.num_delivered > 1
                nats_id = valid_msg_id((msg.headers or {}).get("Nats-Msg-Id"))
                if peer is None:
                    publisher = msg.subject.rsplit(".", 1)[-1]
                    outcome = self.pipeline.from_local(
                        msg.data, publisher, now, redelivered=redelivered
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
            decided = self.decide(msgs, now, peer=None)
        await self.execute(msgs, decided, now, started)

    async def from_peer(self, peer: str, msgs: list[Msg]) -> None:
        """A batch from ``peer``'s link: messages and control items decided in stream order."""
        started = time.perf_counter()
        batch: list[Msg] = []
        decided: list[Decided] = []
        control: list[tuple[Msg, ControlDecision]] = []
        async with self._lock(peer):
            now = self.clock()
            for is_message, run in itertools.groupby(msgs, key=lambda m: kind_of(m) is None):
                items = list(run)
                if is_message:
                    batch += items
                    decided += self.decide(items, now, peer=peer)
                    continue
                for msg in items:
                    decision = self.control.decide(peer, kind_of(msg) or "", msg.data, now)
                    if decision.writes is not None:  # later items read what this one wrote
                        await asyncio.to_thread(decision.writes)
                    control.append((msg, decision))
        await asyncio.gather(
            self.execute(batch, decided, now, started),
            *(self._finish_control(peer, msg, d) for msg, d in control),
        )

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
        """Publish, record durably, then ack (or leave for redelivery what failed to publish)."""
        if not msgs:
            return
        plan, sealed = self.plan(decided, now)
        publishes = (*plan.publishes, *sealed.publishes)
        planned = time.perf_counter()
        results = await asyncio.gather(*map(self.publish, publishes), return_exceptions=True)
        published = time.perf_counter()
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
            elif p.entry is not None:
                receipt_entries.append(p.entry)
        quiet = self._quiet(decided, plan, failed, now)
        done = [m for n, m in enumerate(plan.messages) if n not in failed | quiet]
        entries = [e for m in done for e in m.entries] + receipt_entries
        entries += self.refusal_summaries(now)
        routed = [m.routed for m in done if m.routed is not None]
        # durable before the acks: the two files sync in parallel, off the event loop
        await asyncio.gather(
            asyncio.to_thread(self.audit.record, entries),
            asyncio.to_thread(self.store.mark_routed, *routed),
        )
        committed = time.perf_counter()
        self.metrics.inc("ixb_batches_total")
        self.metrics.inc("ixb_batch_messages_total", len(msgs))
        self.metrics.inc("ixb_batch_seconds_total", planned - started, stage="decide_plan_seal")
        self.metrics.inc("ixb_batch_seconds_total", published - planned, stage="publish_wait")
        self.metrics.inc("ixb_batch_seconds_total", committed - published, stage="durable_commit")
        for n, (msg, settled) in enumerate(zip(msgs, plan.messages, strict=True)):
            if n in failed:
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak(delay=RETRY_DELAY_S)
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

    def _quiet(
        self, decided: Sequence[Decided], plan: BatchPlan, failed: set[int], now: int
    ) -> set[int]:
        """Refusals beyond the per-window allowance of their source: no entry of their own."""
        quiet: set[int] = set()
        for n, (d, m) in enumerate(zip(decided, plan.messages, strict=True)):
            if n in failed or m.report.decision != "rejected" or m.report.code is None:
                continue
            source = f"ingress:{d.publisher}" if d.via is None else f"link:{d.via}"
            if not self.refusals.admit(source, m.report.code, now):
                quiet.add(n)
        return quiet

    def refusal_summaries(self, now: int) -> list[AuditEntry]:
        """One entry per closed window of refusals that were counted, not logged one by one."""
        hub = str(self.identity.principal)
        out: list[AuditEntry] = []
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

    async def _finish_control(self, peer: str, msg: Msg, decision: ControlDecision) -> None:
        """Send what a control item causes (a cosignature), then ack it; nak to retry."""
        try:
            await asyncio.gather(*map(self.publish, decision.publishes))
        except TRANSPORT_ERRORS as exc:
            log.warning("link_control_failed_will_retry", peer=peer, error=str(exc))
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=RETRY_DELAY_S)
            return
        await msg.ack()
