"""The national hub service: NATS in, :mod:`broker.pipeline` decisions, NATS out.

Connections (NATS-FEDERATION.md): one to the country's ``IXB`` account as
``hub``, and one per peer country to its link account. The hub is the only
bridge between them.

Tasks (one ``TaskGroup``, all cancelled together on shutdown):

- ``workers`` local ingress workers: pull batches from ``INGRESS`` (a work queue
  shared by every worker of this country), decide, route, receipt, ack;
- one per peer: pull from ``IN_<PEER>`` (sourced from the peer's
  ``OUT_<CC>``), the same, plus the peer's signed directory updates;
- a responder for ``ixb.<CC>.directory.get`` (agencies fetch the verified
  directories they encrypt to);
- the HTTP server (``/healthz``, ``/metrics``).

A message is acked only after everything it caused was acknowledged by
JetStream (inbox, outbound stream, receipts) and its decision was committed
to disk; a crash before that means redelivery, which the store recognises,
and ``Nats-Msg-Id`` de-duplication makes the re-publishes no-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from broker import streams
from broker.audit import AuditLog
from broker.auditing import HubAudit
from broker.config import HubConfig
from broker.metrics import Metrics
from broker.pipeline import Accepted, Pipeline, Rejected, rejection_recipient
from broker.store import HubStore
from broker.web import setup_liaison
from broker.web.view import LiaisonContext, LiaisonView, ReconcileReport, UserRecord, WitnessRow
from protocols import subjects
from protocols.audit import AuditEntry, AuditEvent, encode_publication
from protocols.checkpoint import log_origin, parse_checkpoint, parse_signed_note, witness_name
from protocols.directory import (
    DirectoryKeys,
    RevocationInfo,
    TrustAnchors,
    build_directory,
    entry_for,
    sign_directory,
)
from protocols.envelope import decode_envelope, seal_envelope
from protocols.errors import IxbError, LocalError
from protocols.identifiers import Principal, format_message_id, parse_message_id
from protocols.keys import Identity, PublicIdentity
from protocols.limits import MS_PER_DAY, MS_PER_HOUR
from protocols.messages import Receipt, ReceiptStatus

log = structlog.get_logger("ixb.hub")

KIND_HEADER = "Ixb-Kind"
KIND_DIRECTORY = "directory"
KIND_CHECKPOINT = "checkpoint"
KIND_COSIGNATURE = "cosignature"
CHECKPOINT_PERIOD_S = 1.0
FETCH_BATCH = 64
BATCHES_IN_FLIGHT = 8
FETCH_TIMEOUT_S = 1.0
RECEIPT_TTL_MS = 7 * MS_PER_DAY
NO_ID = b"\x00" * 16
LINK_CHECK_S = 2.0
MAX_RECEIPT_IDS = 256  # for_id + up to 255 in Receipt.also


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LinkState:
    peer: str
    nc: NatsClient
    js: JetStreamContext
    connected: bool = True


@dataclass
class HubState:
    started_ms: int = field(default_factory=wall_ms)
    in_flight: int = 0
    ready: bool = False


@dataclass
class _Work:
    """One fetched message, its decision, and what settling it records and reports."""

    msg: Msg
    outcome: Accepted | Rejected
    publisher: str | None
    via: str | None
    entries: list[AuditEntry] = field(default_factory=list)
    routed: bytes | None = None
    """The message id to mark routed once everything it caused is published."""
    report: Callable[[], None] = lambda: None
    """Metrics and the log line, once the message is acked."""


@dataclass
class _Job:
    """A JetStream publish, the batch messages that depend on it, and its audit entry."""

    publish: Coroutine[Any, Any, None]
    works: set[int]
    entry: AuditEntry | None = None

    async def run(self) -> None:
        await self.publish


@dataclass
class _Receipts:
    """Receipt statements of a batch, grouped: one receipt per (recipient, status, code, detail)."""

    groups: dict[
        tuple[Principal, ReceiptStatus, str | None, str | None], list[tuple[set[int], bytes]]
    ] = field(default_factory=dict)
    """Per statement: (the batch messages a receipt item answers for, its message id)."""
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


def _work_id(w: _Work) -> str | None:
    if isinstance(w.outcome, Accepted):
        return w.outcome.envelope.header.message_id
    header = w.outcome.header
    return header.message_id if header is not None else _nats_msg_id(w.msg)


class Hub:
    def __init__(
        self,
        config: HubConfig,
        identity: Identity,
        trust: TrustAnchors,
        agency_keys: dict[Principal, PublicIdentity],
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        if identity.principal != config.hub_id:
            raise LocalError(f"key file is for {identity.principal}, config for {config.hub_id}")
        self.config = config
        self.country = config.country
        self.identity = identity
        self.clock = clock
        self.keys = DirectoryKeys(trust, clock)
        state = config.path(config.hub.state_dir)
        self.store = HubStore(state / "hub.sqlite")
        self.pipeline = Pipeline(config, identity, self.keys, self.store)
        self.metrics = Metrics()
        self.audit_log = AuditLog(state / "audit.sqlite")
        self.audit = HubAudit(
            identity,
            self.audit_log,
            self.store,
            trust,
            sorted(config.links),
            clock,
            on_alarm=lambda origin, _detail: self.metrics.inc(
                "ixb_witness_alarms_total", origin=origin
            ),
        )
        self.state = HubState()
        self.agency_keys = agency_keys
        self.links: dict[str, LinkState] = {}
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.http_port: int | None = None
        self._stopping = asyncio.Event()

    @property
    def _ixb(self) -> NatsClient:
        if self.nc is None:
            raise LocalError("hub is not connected")
        return self.nc

    @property
    def _js(self) -> JetStreamContext:
        if self.js is None:
            raise LocalError("hub is not connected")
        return self.js

    # --- lifecycle --------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or SIGTERM/SIGINT when run as a process)."""
        if stop is not None:
            self._stopping = stop
        stop = self._stopping
        if not await _until_stopped(self._connect(), stop):
            await self._close()  # stopped while NATS was still unreachable
            return
        runner = await self._start_http()
        try:
            self._record_start()
            await self._publish_own_directory()
            self._load_peer_directories()
            self.state.ready = True
            log.info("hub_ready", hub=str(self.config.hub_id), http_port=self.http_port)
            async with asyncio.TaskGroup() as tg:
                for i in range(self.config.hub.workers):
                    tg.create_task(self._ingress_worker(i, stop))
                for peer in self.links:
                    tg.create_task(self._peer_worker(peer, stop))
                    tg.create_task(self._link_keeper(peer, stop))
                tg.create_task(self._directory_responder(stop))
                tg.create_task(self._gauges(stop))
                tg.create_task(self._directory_refresher(stop))
                tg.create_task(self._checkpointer(stop))
        finally:
            self.state.ready = False
            await runner.cleanup()
            with contextlib.suppress(IxbError, OSError):
                self.audit.record([self.audit.entry(AuditEvent.HUB_STOPPED)])
            await self._close()
            log.info("hub_stopped", hub=str(self.config.hub_id))

    def _record_start(self) -> None:
        """``hub_started``, and ``policy_changed`` when the policy differs from the last run's.

        The policy (exchange lists, rate limits, agencies, roles, revocations,
        users) is fingerprinted so an auditor sees in the log when it changed.
        """
        policy = msgspec.json.encode(
            [self.config.policy, self.config.agency, [(u.name, u.role) for u in self.config.user]]
        )
        digest = hashlib.sha256(policy).hexdigest()[:16]
        previous = self.store.meta("policy")
        entries = [self.audit.entry(AuditEvent.HUB_STARTED, detail=f"policy {digest}")]
        if previous is not None and previous != digest:
            entries.append(
                self.audit.entry(AuditEvent.POLICY_CHANGED, detail=f"policy {previous} → {digest}")
            )
        self.audit.record(entries)
        self.store.set_meta("policy", digest)

    def request_stop(self) -> None:
        self._stopping.set()

    async def _connect(self) -> None:
        cfg = self.config
        self.nc = await nats.connect(
            cfg.nats.url,
            user=cfg.nats.user,
            password=cfg.nats.password,
            name=f"ixb-hub-{self.country}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
        self.js = self.nc.jetstream()
        await streams.ensure_country_streams(
            self.js, self.country, [p.name for p in self.agency_keys]
        )
        await self.js.add_consumer(
            streams.INGRESS_STREAM,
            ConsumerConfig(
                durable_name=streams.HUB_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=streams.HUB_ACK_WAIT_S,
                max_deliver=-1,
            ),
        )
        for peer, creds in sorted(cfg.links.items()):
            nc = await nats.connect(
                cfg.nats.url,
                user=creds.user,
                password=creds.password,
                name=f"ixb-hub-{self.country}-link-{peer}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
            )
            js = nc.jetstream()
            await streams.ensure_link_streams(js, self.country, peer)
            self.links[peer] = LinkState(peer, nc, js)

    async def _close(self) -> None:
        for link in self.links.values():
            with contextlib.suppress(nats.errors.Error):
                await link.nc.drain()
        if self.nc is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.drain()
        self.store.close()
        self.audit_log.close()

    # --- directories ------------------------------------------------------------

    async def _publish_own_directory(self) -> None:
        now = self.clock()
        stored = self.store.directories().get(self.country)
        if stored is not None and self.keys.version(self.country) is None:
            with contextlib.suppress(IxbError):  # expired after a long outage: re-issued below
                self.keys.update(self.country, stored)
        # versions only go up, across restarts and long outages alike
        previous = max(
            self.keys.version(self.country) or 0, self.store.directory_version(self.country) or 0
        )
        roles = self.config.agency_roles()
        revoked = self.config.revoked()
        entries = [
            entry_for(
                pub,
                roles[p],
                valid_from=0,
                valid_until=now + 365 * MS_PER_DAY,
                revoked=self._revocation(p, revoked.get(p), now),
            )
            for p, pub in sorted(self.agency_keys.items())
        ]
        directory = build_directory(
            self.config.hub_id,
            version=previous + 1,
            issued_ms=now,
            ttl_ms=self.config.hub.directory_ttl_hours * MS_PER_HOUR,
            entries=entries,
        )
        signed = sign_directory(directory, self.identity)
        self.keys.update(self.country, signed)
        self.store.save_directory(self.country, directory.version, signed)
        self.audit.record(
            [self.audit.entry(AuditEvent.DIRECTORY_PUBLISHED, detail=f"v{directory.version}")]
        )
        for peer in self.links:
            dedup = f"dir:{self.country}:{directory.version}"
            await self._publish_out(peer, signed, dedup, kind=KIND_DIRECTORY)
        log.info("directory_published", version=directory.version, agencies=len(entries))

    def _revocation(self, agency: Principal, reason: str | None, now: int) -> RevocationInfo | None:
        """Revoked from the first directory that said so: a restart never moves the time."""
        if reason is None:
            return None
        with contextlib.suppress(IxbError):
            earlier = self.keys.entry(agency).revoked
            if earlier is not None:
                return earlier
        return RevocationInfo(at=now, reason=reason)

    async def _checkpointer(self, stop: asyncio.Event) -> None:
        """Sign a checkpoint each second the log grew, and send it to every peer to witness."""
        while not stop.is_set():
            try:
                made = self.audit.checkpoint()
                if made is not None:
                    self.metrics.set("ixb_checkpoint_size", made[0])
                for peer in self.links:
                    publication = self.audit.publication_for(peer)
                    if publication is None:
                        continue
                    cp = parse_checkpoint(parse_signed_note(publication.note)[0])
                    # the root is part of the id: a rewritten log reusing a size must still
                    # reach the witness, not vanish as a JetStream duplicate
                    size, root = cp.size, cp.root[:8].hex()
                    await self._publish_out(
                        peer,
                        encode_publication(publication),
                        f"ckpt:{self.country}:{peer}:{size}:{root}",
                        kind=KIND_CHECKPOINT,
                        timeout=2.0,
                    )
                    self.audit.published(peer, publication)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("checkpoint_publish_failed", error=str(exc))
            await _sleep_or_stop(stop, CHECKPOINT_PERIOD_S)

    def _witness(self, peer: str, msg: Msg) -> Coroutine[Any, Any, object] | None:
        """A peer's checkpoint: verify, check it extends what we saw, cosign.

        Returns the publish that sends the cosignature back (None when refused),
        so a batch can check every checkpoint in stream order first.
        """
        try:
            size, cosigned = self.audit.witness(peer, msg.data)
        except IxbError as exc:
            self.metrics.inc("ixb_witness_refused_total", origin=peer, code=exc.code)
            log.warning("checkpoint_refused", origin=peer, code=exc.code, detail=exc.detail)
            return None
        dedup = f"cosig:{peer}:{self.country}:{size}"
        return self._publish_out(peer, cosigned, dedup, kind=KIND_COSIGNATURE)

    def _accept_cosignature(self, peer: str, data: bytes) -> None:
        try:
            size = self.audit.accept_cosignature(peer, data)
        except IxbError as exc:
            log.warning("cosignature_refused", witness=peer, code=exc.code, detail=exc.detail)
            return
        self.metrics.set("ixb_cosigned_size", size, witness=peer)

    async def _directory_refresher(self, stop: asyncio.Event) -> None:
        """Re-sign well before expiry: peers refuse every agency of an expired directory."""
        period_s = self.config.hub.directory_ttl_hours * 3600 / 3
        while not stop.is_set():
            await _sleep_or_stop(stop, period_s)
            if not stop.is_set():
                await self._publish_own_directory()

    def _load_peer_directories(self) -> None:
        for country, signed in self.store.directories().items():
            if country != self.country:
                with contextlib.suppress(IxbError):
                    self.keys.update(country, signed)

    def _install_peer_directory(self, peer: str, data: bytes) -> None:
        try:
            changed = self.keys.update(peer, data)
        except IxbError as exc:
            self.audit.record(
                [
                    self.audit.entry(
                        AuditEvent.DIRECTORY_REJECTED, code=exc.code, detail=exc.detail, peer=peer
                    )
                ]
            )
            self.metrics.inc("ixb_directory_rejected_total", peer=peer, code=exc.code)
            log.warning("directory_rejected", peer=peer, code=exc.code, detail=exc.detail)
            return
        version = self.keys.version(peer)
        if changed and version is not None:
            self.store.save_directory(peer, version, data)
            self.audit.record(
                [self.audit.entry(AuditEvent.DIRECTORY_INSTALLED, detail=f"v{version}", peer=peer)]
            )
            log.info("directory_installed", peer=peer, version=version)

    async def _directory_responder(self, stop: asyncio.Event) -> None:

        async def answer(msg: Msg) -> None:
            payload = msgspec.msgpack.encode(self.store.directories())
            await msg.respond(payload)

        sub = await self._ixb.subscribe(subjects.directory_request(self.country), cb=answer)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    # --- workers ----------------------------------------------------------------

    async def _pull_loop(
        self,
        js: JetStreamContext,
        stream: str,
        stop: asyncio.Event,
        handle: Callable[[list[Msg]], Awaitable[None]],
        what: str,
    ) -> None:
        """Fetch a batch, start handling it, fetch the next; re-bind after errors.

        Up to ``BATCHES_IN_FLIGHT`` batches are settling at once: each waits
        mostly on disks (JetStream's and ours), and those waits overlap. A
        batch is decided as soon as its task starts, before the next batch's
        task runs, so decisions (replay checks, directories from a peer) keep
        the stream's order, and so do the publishes they cause. On stop, the
        batches in flight finish before the subscription goes.
        """
        slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)

        async def settle(msgs: list[Msg]) -> None:
            try:
                await handle(msgs)
            finally:
                self.state.in_flight -= len(msgs)
                slots.release()

        while not stop.is_set():
            try:
                psub = await js.pull_subscribe_bind(streams.HUB_CONSUMER, stream)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("bind_failed", worker=what, error=str(exc))
                await _sleep_or_stop(stop, 1.0)
                continue
            try:
                async with asyncio.TaskGroup() as batches:
                    while not stop.is_set():
                        await slots.acquire()
                        try:
                            msgs = await streams.fetch_ready(psub, FETCH_BATCH, FETCH_TIMEOUT_S)
                        except (TimeoutError, nats.errors.TimeoutError):
                            slots.release()
                            continue
                        except (nats.errors.Error, nats.js.errors.Error) as exc:
                            slots.release()
                            log.warning("fetch_failed", worker=what, error=str(exc))
                            await _sleep_or_stop(stop, 0.5)
                            break  # re-bind (nats-py subscriptions can die on reconnect)
                        self.state.in_flight += len(msgs)
                        batches.create_task(settle(msgs))
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await psub.unsubscribe()

    async def _link_keeper(self, peer: str, stop: asyncio.Event) -> None:
        """Restart an idle cross-border source as soon as the peer answers again.

        nats-server alone resumes a source about 40 s after a restart
        (docs/nats-topology.md); this brings it down to about a second.
        """
        link = self.links[peer]
        while not stop.is_set():
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError):
                if await streams.resume_link_source(link.nc, peer):
                    log.info("link_source_resumed", peer=peer)
            await _sleep_or_stop(stop, LINK_CHECK_S)

    async def _ingress_worker(self, index: int, stop: asyncio.Event) -> None:
        await self._pull_loop(
            self._js, streams.INGRESS_STREAM, stop, self._handle_local, f"ingress-{index}"
        )

    async def _peer_worker(self, peer: str, stop: asyncio.Event) -> None:
        link = self.links[peer]

        async def handle(msgs: list[Msg]) -> None:
            await self._handle_peer(peer, msgs)

        await self._pull_loop(link.js, streams.in_stream(peer), stop, handle, f"peer-{peer}")

    async def _handle_local(self, msgs: list[Msg]) -> None:
        started = time.perf_counter()
        await self._settle(self._decide(msgs, self.clock(), peer=None), started)

    def _decide(self, msgs: Sequence[Msg], now: int, *, peer: str | None) -> list[_Work]:
        """The pipeline's decisions, in order, in one store transaction (no await inside).

        The transaction commits without the disk; ``_settle``'s ``mark_routed``
        makes it durable before any of these messages is acked.
        """
        works: list[_Work] = []
        with self.store.transaction(durable=False):
            for msg in msgs:
                redelivered = _redelivered(msg)
                if peer is None:
                    publisher = msg.subject.rsplit(".", 1)[-1]
                    outcome = self.pipeline.from_local(
                        msg.data, publisher, now, redelivered=redelivered
                    )
                    works.append(_Work(msg, outcome, publisher=publisher, via=None))
                else:
                    outcome = self.pipeline.from_peer(msg.data, peer, now, redelivered=redelivered)
                    works.append(_Work(msg, outcome, publisher=None, via=peer))
        return works

    async def _handle_peer(self, peer: str, msgs: list[Msg]) -> None:
        """A batch from a peer's link: decide all of it in stream order, then settle.

        Control items (directories, checkpoints, cosignatures) are applied
        where they stand, so a directory counts for the messages after it;
        nothing is awaited until every item is decided, so a next batch
        settling alongside cannot be decided in between.
        """
        started = time.perf_counter()
        now = self.clock()
        batch: list[_Work] = []
        control: list[Coroutine[Any, Any, None]] = []
        for is_message, run in itertools.groupby(msgs, key=lambda m: _kind(m) is None):
            if is_message:
                batch += self._decide(list(run), now, peer=peer)
            else:
                control += [self._peer_control(peer, m) for m in run]
        await asyncio.gather(self._settle(batch, started), *control)

    def _peer_control(self, peer: str, msg: Msg) -> Coroutine[Any, Any, None]:
        """Apply a control item now; what returns publishes (a cosignature) and acks."""
        kind = _kind(msg) or ""
        publish: Coroutine[Any, Any, object] | None = None
        if kind == KIND_DIRECTORY:
            self._install_peer_directory(peer, msg.data)
        elif kind == KIND_CHECKPOINT:
            publish = self._witness(peer, msg)
        elif kind == KIND_COSIGNATURE:
            self._accept_cosignature(peer, msg.data)
        else:
            log.warning("unknown_kind", peer=peer, kind=kind[:40])

        async def finish() -> None:
            try:
                if publish is not None:
                    await publish
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("link_control_failed_will_retry", peer=peer, error=str(exc))
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak(delay=1.0)
                return
            await msg.ack()

        return finish()

    async def _settle(self, batch: list[_Work], started: float) -> None:
        """Route, receipt, record, then ack a decided batch.

        Everything the batch causes is published at once (JetStream acks
        awaited together, not one after another); each receipt covers every
        message of one sender with the same statement. Then one audit commit
        and one store commit (in worker threads, in parallel, so the event
        loop goes on with other batches while the disk syncs) make the batch's
        decisions durable, and only then are its messages acked. A message
        whose publishes (or whose receipts') failed is neither recorded nor
        acked but left for redelivery; the store knows it is not routed yet,
        and ``Nats-Msg-Id`` de-duplication makes the repeated publishes no-ops.
        """
        jobs: list[_Job] = []
        receipts = _Receipts()
        for n, w in enumerate(batch):
            if isinstance(w.outcome, Accepted):
                self._plan_accepted(n, w, w.outcome, jobs, receipts)
            else:
                self._plan_rejected(n, w, w.outcome, receipts)
        self._seal_receipts(receipts, jobs)
        planned = time.perf_counter()
        results = await asyncio.gather(*(job.run() for job in jobs), return_exceptions=True)
        published = time.perf_counter()
        failed: set[int] = set()
        entries: list[AuditEntry] = []
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, (TimeoutError, nats.errors.Error, nats.js.errors.Error)):
                    raise result
                failed |= job.works
                log.warning(
                    "route_failed_will_retry",
                    error=str(result),
                    msg_ids=[_work_id(batch[n]) for n in sorted(job.works)],
                )
            elif job.entry is not None:
                entries.append(job.entry)
        done = [w for n, w in enumerate(batch) if n not in failed]
        entries[:0] = [e for w in done for e in w.entries]
        # durable before the acks: the two files sync in parallel, off the event loop
        routed = [w.routed for w in done if w.routed is not None]
        await asyncio.gather(
            asyncio.to_thread(self.audit.record, entries),
            asyncio.to_thread(self.store.mark_routed, *routed),
        )
        committed = time.perf_counter()
        elapsed = committed - started
        self.metrics.inc("ixb_batches_total")
        self.metrics.inc("ixb_batch_messages_total", len(batch))
        self.metrics.inc("ixb_batch_seconds_total", planned - started, stage="decide_plan_seal")
        self.metrics.inc("ixb_batch_seconds_total", published - planned, stage="publish_wait")
        self.metrics.inc("ixb_batch_seconds_total", committed - published, stage="durable_commit")
        for n, w in enumerate(batch):
            if n in failed:
                with contextlib.suppress(nats.errors.Error):
                    await w.msg.nak(delay=1.0)
                continue
            await w.msg.ack()
            self.metrics.observe_latency(elapsed)
            w.report()

    def _plan_accepted(
        self, n: int, w: _Work, outcome: Accepted, jobs: list[_Job], receipts: _Receipts
    ) -> None:
        env = outcome.envelope
        header = env.header
        via = w.via
        bound = log.bind(msg_id=header.message_id, type=header.type, sender=header.sender)
        if outcome.duplicate:
            w.entries.append(self.audit.entry(AuditEvent.DUPLICATE, envelope=env, peer=via))

            def duplicate() -> None:
                self.metrics.inc("ixb_messages_total", decision="duplicate")
                bound.info("duplicate_ignored", via=via)

            w.report = duplicate
            return
        data = env.to_bytes()
        jobs.extend(
            _Job(self._publish_inbox(a, data, f"{header.message_id}:{a.name}"), {n})
            for a in outcome.local
        )
        jobs.extend(_Job(self._publish_out(p, data, header.message_id), {n}) for p in outcome.peers)
        sender = header.sender_principal
        if header.type != "receipt" and not sender.is_hub:
            if via is None:
                receipts.add(sender, n, header.id, ReceiptStatus.ACCEPTED)
                if outcome.peers:
                    receipts.add(
                        sender, n, header.id, ReceiptStatus.RELAYED, ", ".join(outcome.peers)
                    )
            if outcome.local:
                delivered = ", ".join(str(a) for a in outcome.local)
                receipts.add(sender, n, header.id, ReceiptStatus.DELIVERED, delivered)
        w.entries.append(self.audit.entry(AuditEvent.ACCEPTED, envelope=env, peer=via))
        w.entries += [
            self.audit.entry(AuditEvent.DELIVERED, envelope=env, peer=via, recipients=[str(a)])
            for a in outcome.local
        ]
        w.entries += [
            self.audit.entry(AuditEvent.RELAYED, envelope=env, peer=p) for p in outcome.peers
        ]
        w.routed = header.id
        local, peers = len(outcome.local), list(outcome.peers)

        def accepted() -> None:
            self.metrics.inc("ixb_messages_total", decision="accepted")
            bound.info("accepted", via=via, local=local, peers=peers)

        w.report = accepted

    def _plan_rejected(self, n: int, w: _Work, outcome: Rejected, receipts: _Receipts) -> None:
        err = outcome.error
        header = outcome.header
        via, publisher = w.via, w.publisher
        msg_id = _work_id(w)
        w.entries.append(
            self.audit.entry(
                AuditEvent.REJECTED,
                header=header,
                msg_id=_id_bytes(msg_id) if header is None and msg_id else None,
                code=err.code,
                detail=err.detail if via else f"{err.detail} (ingress of {publisher})",
                peer=via,
            )
        )

        def report() -> None:
            self.metrics.inc("ixb_messages_total", decision="rejected")
            self.metrics.inc("ixb_rejected_total", code=err.code)
            log.warning(
                "rejected",
                msg_id=msg_id,
                code=err.code,
                detail=err.detail,
                via=via or f"ingress:{publisher}",
            )

        w.report = report
        target = rejection_recipient(outcome, country=self.country, publisher=publisher)
        if target is not None:
            for_id = header.id if header is not None else _id_bytes(msg_id)
            receipts.add(target, n, for_id, ReceiptStatus.REJECTED, err.detail[:200], code=err.code)

    # --- publishing ---------------------------------------------------------------

    async def _publish_inbox(self, agency: Principal, data: bytes, dedup: str) -> None:
        await self._js.publish(subjects.inbox(agency), data, headers={"Nats-Msg-Id": dedup})

    async def _publish_out(
        self,
        peer: str,
        data: bytes,
        dedup: str,
        *,
        kind: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Onto the cross-border stream to ``peer``; ``kind`` marks a control item."""
        headers = (
            {"Nats-Msg-Id": dedup} if kind is None else {KIND_HEADER: kind, "Nats-Msg-Id": dedup}
        )
        link = self.links[peer]
        await link.js.publish(
            subjects.cross_border(self.country, peer), data, headers=headers, timeout=timeout
        )

    def _seal_receipts(self, receipts: _Receipts, jobs: list[_Job]) -> None:
        """One receipt signed by this hub per (recipient, statement), encrypted to the recipient."""
        now = self.clock()
        for (to, status, code, detail), items in receipts.groups.items():
            local = self.agency_keys.get(to)
            try:
                recipient = local if local is not None else self.keys.encryption_key(to)
            except IxbError as exc:
                log.warning("receipt_unroutable", to=str(to), code=exc.code)
                continue
            for start in range(0, len(items), MAX_RECEIPT_IDS):
                chunk = items[start : start + MAX_RECEIPT_IDS]
                ids = [for_id for _works, for_id in chunk]
                body = Receipt(
                    for_id=ids[0],
                    also=tuple(ids[1:]),
                    status=status,
                    by=str(self.config.hub_id),
                    at_ms=now,
                    code=code,
                    detail=detail,
                )
                data = seal_envelope(
                    sender=self.identity,
                    recipients=[recipient],
                    body=body,
                    now_ms=now,
                    ttl_ms=RECEIPT_TTL_MS,
                    in_reply_to=ids[0],
                )
                key = "\0".join(
                    [str(to), status.value, code or "", detail or "", *map(bytes.hex, ids)]
                )
                dedup = "rcpt:" + hashlib.sha256(key.encode()).hexdigest()[:40]
                if to.country == self.country:
                    publish = self._publish_inbox(to, data, dedup)
                    event, peer = AuditEvent.DELIVERED, None
                elif to.country in self.links:
                    publish = self._publish_out(to.country, data, dedup)
                    event, peer = AuditEvent.RELAYED, to.country
                else:
                    continue
                entry = self.audit.entry(event, envelope=decode_envelope(data), peer=peer)
                jobs.append(_Job(publish, set().union(*(w for w, _id in chunk)), entry))
                self.metrics.inc("ixb_receipts_total", len(ids), status=status.value)

    # --- gauges -------------------------------------------------------------------

    async def _gauges(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.metrics.set("ixb_in_flight", self.state.in_flight)
            for peer, link in self.links.items():
                with contextlib.suppress(
                    nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError
                ):
                    info = await link.js.consumer_info(
                        streams.in_stream(peer), streams.HUB_CONSUMER, timeout=1.0
                    )
                    self.metrics.set("ixb_backlog", info.num_pending or 0, source=peer)
                    link.connected = link.nc.is_connected
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                    out = await streams.outbound_backlog(link.nc, self.country, peer)
                    if out is not None:
                        self.metrics.set("ixb_backlog_out", out, destination=peer)
                self.metrics.set("ixb_link_up", 1.0 if link.nc.is_connected else 0.0, peer=peer)
            for country in [self.country, *self.links]:
                version = self.keys.version(country)
                self.metrics.set("ixb_directory_version", float(version or 0), country=country)
            await _sleep_or_stop(stop, 2.0)

    # --- HTTP -----------------------------------------------------------------------

    def liaison_context(self) -> LiaisonView:
        """What the liaison pages read: this hub's log, witness state, deadlines, peers."""

        async def reconcile(peer: str) -> ReconcileReport:
            r = await asyncio.to_thread(self.audit.reconcile, peer)
            return ReconcileReport(
                peer=peer,
                since_ms=r.since_ms,
                only_here=[(i.msg_id, i.event, i.at_ms) for i in r.only_here],
                only_there=[(i.msg_id, i.event, i.at_ms) for i in r.only_there],
                different=[(m, f"{d} differs", "see their shared entry") for m, d in r.different],
                matched=r.matched,
            )

        return LiaisonContext(
            hub_id=str(self.config.hub_id),
            audit=self.audit_log,
            users={
                u.name: UserRecord(name=u.name, role=u.role, password_hash=u.password_hash)
                for u in self.config.user
            },
            clock=self.clock,
            record_read=self.audit.record_read,
            witness_status=self.witness_rows,
            deadlines=lambda _now: self.store.open_requests(),
            reconcile=reconcile,
            peers=sorted(self.links),
            secure_cookies=self.config.http.secure_cookies,
        )

    def witness_rows(self) -> list[WitnessRow]:
        rows: list[WitnessRow] = []
        alarms = {origin for origin, _at, _d in self.audit_log.alarms()}
        latest = self.audit_log.latest_checkpoint()
        cosigned = (
            {who: at for who, _size, _note, at in self.audit_log.cosignatures(latest[0])}
            if latest is not None
            else {}
        )
        for peer in sorted(self.config.links):
            at = cosigned.get(witness_name(peer))
            if latest is not None and at is not None:
                rows.append(
                    WitnessRow(
                        peer,
                        "they witness us",
                        latest[0],
                        latest[1].hex(),
                        at,
                        "cosigned our latest checkpoint",
                    )
                )
            else:
                rows.append(
                    WitnessRow(
                        peer,
                        "they witness us",
                        None,
                        None,
                        None,
                        "not yet cosigned our latest checkpoint",
                    )
                )
            seen = self.audit_log.last_witnessed(log_origin(peer))
            alarm = log_origin(peer) in alarms
            status = "ALARM: log rewritten or forked" if alarm else "consistent"
            if seen is None:
                rows.append(
                    WitnessRow(peer, "we witness them", None, None, None, "nothing seen yet", alarm)
                )
            else:
                rows.append(
                    WitnessRow(
                        peer, "we witness them", seen[0], seen[1].hex(), seen[3], status, alarm
                    )
                )
        return rows

    def health(self) -> dict[str, object]:
        return {
            "hub": str(self.config.hub_id),
            "ready": self.state.ready,
            "nats": self.nc is not None and self.nc.is_connected,
            "links": {p: link.nc.is_connected for p, link in self.links.items()},
            "directories": {c: self.keys.version(c) for c in sorted([self.country, *self.links])},
            "in_flight": self.state.in_flight,
        }

    async def _start_http(self) -> web.AppRunner:
        app = web.Application()

        async def healthz(_: web.Request) -> web.Response:
            body = self.health()
            ok = bool(body["ready"]) and bool(body["nats"])
            return web.json_response(body, status=200 if ok else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(text=self.metrics.render(), content_type="text/plain")

        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        setup_liaison(app, self.liaison_context())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.http.host, self.config.http.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.config.http.port
        return runner


def _kind(msg: Msg) -> str | None:
    """The control kind of a link item (directory, checkpoint, cosignature), None for a message."""
    return (msg.headers or {}).get(KIND_HEADER)


def _redelivered(msg: Msg) -> bool:
    return msg.metadata.num_delivered > 1


def _nats_msg_id(msg: Msg) -> str | None:
    value = (msg.headers or {}).get("Nats-Msg-Id")
    if value is None:
        return None
    try:
        return format_message_id(parse_message_id(value))
    except IxbError:
        return None


def _id_bytes(msg_id: str | None) -> bytes:
    if msg_id is None:
        return NO_ID
    try:
        return parse_message_id(msg_id)
    except IxbError:
        return NO_ID


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop`` comes first (then cancel it); True if it finished.

    nats-py retries an unreachable server forever; a hub told to stop must not wait.
    """
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, nats.errors.Error):
        await task
    return False


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def install_signal_handlers(hub: Hub) -> None:
    """SIGTERM / SIGINT: stop fetching, finish in-flight messages, close cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, hub.request_stop)
