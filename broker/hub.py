"""The national hub: its NATS connections, its tasks, and the execution of decisions.

Connections (docs/nats-topology.md): one to the country's ``IXB`` account as
``hub``, and one per peer country to its link account. The hub is the only
bridge between them.

Tasks (one ``TaskGroup``, all cancelled together on shutdown): ``workers``
ingress pull loops sharing this country's ``INGRESS`` work queue; per peer a
pull loop on ``IN_<PEER>`` and a link keeper; the directory responder, its
refresher, the checkpointer and the gauges. What a fetched batch does is
decided and planned elsewhere (:mod:`broker.settle`, :mod:`broker.plan`,
:mod:`broker.control`); the hub executes: it publishes, and acks only after
everything a message caused was acknowledged by JetStream and committed to
disk. The liaison pages and ``/healthz`` are served beside it
(:mod:`broker.service`); the hub does not know them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import signal
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from broker import shared_state
from broker.audit import shipping
from broker.audit.log import AuditLog
from broker.audit_copy import COPY_ERRORS, AuditCopy
from broker.auditing import HubAudit
from broker.config import HubConfig
from broker.control import KIND_CHECKPOINT, KIND_HEADER, ControlPlane, Writes
from broker.groupcommit import GroupCommitter
from broker.keyupdates import actor, claimed_agency, decide_key_update
from broker.lease import HubLease
from broker.links import LinkState, gauges, link_keeper
from broker.lookup import LookupService
from broker.metrics import Metrics
from broker.pipeline import Pipeline
from broker.plan import Publish, link_item, receipt_entry, receipt_publish
from broker.pull import pull_loop, sleep_or_stop
from broker.registry import (
    POLL_S,
    REGISTRY_FILE,
    AgencyRecord,
    Registry,
    UserRow,
    config_agencies,
    merged_agencies,
    merged_users,
)
from broker.reminders import Reminders, check_period_s
from broker.retention import retention_loop, sweep_streams
from broker.seen import SeenRows
from broker.settle import Settler
from broker.shared_state import SharedState
from broker.storage_health import RETRY_S, STORAGE_ERRORS, StorageHealth
from broker.store import HubStore
from broker.trust import WitnessPins, anchors_in_force, held_federation, read_installed
from protocols import subjects
from protocols.audit import AuditEntry, AuditEvent, encode_publication
from protocols.checkpoint import log_origin, parse_checkpoint, parse_signed_note
from protocols.deadlines import DEFAULT_TIERS
from protocols.enckey import MIN_INTERVAL_MS, KeyUpdateAnswer, LastUpdate, encode_answer
from protocols.envelope import decode_envelope
from protocols.errors import AuditStreamError, ConfigError, IoError, IxbError, LocalError
from protocols.federation import (
    FEDERATION_REQUEST,
    TrustAnchors,
    check_successor,
    render_federation_file,
)
from protocols.identifiers import Principal, check_country, format_message_id
from protocols.keys import (
    NATS_HUB,
    Identity,
    KeyAlg,
    PublicIdentity,
    fingerprint,
    nats_link_label,
)
from protocols.trusted import TrustedDirectories
from transport import streams
from transport.clock import wall_ms
from transport.connect import UNBOUNDED, NatsAuth, StateLog, connect, unreachable
from transport.retention import StreamSweep
from transport.streams import TRANSPORT_ERRORS

log = structlog.get_logger("ixb.hub")

CHECKPOINT_PERIOD_S = 1.0
RECEIPT_SWEEP_S = 5.0
"""How often :meth:`Hub.sweep_receipts` looks for receipts sent but never recorded."""
RECEIPT_SETTLE_MS = 15_000
"""Receipts sealed more recently belong to batches still settling."""
RECEIPT_SWEEP_WINDOW_MS = 10 * 60_000
"""The streams' duplicate window: a receipt older than that is not sent again."""
RECEIPT_SWEEP_ROWS = 1000
RECEIPT_SWEEP_META = "receipt_sweep_ms"
PRUNE_PERIOD_S = 3600.0
PRUNE_KEEP_MS = 30 * 24 * 3600 * 1000
"""Messages are remembered this long after they expire: replays of an expired envelope are
refused by freshness anyway, and the deadline register keeps a month of past requests."""
CHECKPOINT_PUBLISH_TIMEOUT_S = 2.0
RECEIPT_READ_TIMEOUT_S = 2.0
CLI_CONNECT_TIMEOUT_S = 10.0
"""How long a one-off command (``ixb retention run``) waits for the hub's NATS server."""


@dataclass(frozen=True)
class Succession:
    """One of several hub processes of a country: who is active, and what it shares."""

    lease: HubLease
    shared: SharedState


@dataclass
class HubState:
    started_ms: int = field(default_factory=wall_ms)
    in_flight: int = 0
    ready: bool = False
    role: str = "active"
    """``standby`` while another hub process of the country is the active one."""


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
        # checked here, before any connection: a missing credential is a config error
        self._nats_auth = hub_nats_auth(config, identity)
        self._link_auth = {
            peer: _auth(identity, nats_link_label(peer), c.user, c.password, f"links.{peer}")
            for peer, c in config.links.items()
        }
        self.keys = TrustedDirectories(trust)
        state = config.path(config.hub.state_dir)
        agreements = config.deadline_tiers()
        self.store = HubStore(state / "hub.sqlite", country=config.country, agreements=agreements)
        self.metrics = Metrics()
        self.storage = StorageHealth(self.metrics)
        self.audit_log = AuditLog(state / "audit.sqlite")
        self.audit = HubAudit(
            identity,
            self.audit_log,
            self.store,
            trust,
            sorted(config.links),
            clock,
            pins=WitnessPins(config.trust_path),
        )
        self.seen = SeenRows(self.store)
        self.succession: Succession | None = None
        """Set when this is one of several hub processes of the country (``[hub] instance``)."""
        self.audit_copy = AuditCopy(
            self.audit_log, self.country, self.metrics, may_write=self._may_write
        )
        rebuilt = self.store.meta(shipping.UNKNOWN_ACCEPTANCES_META)
        until = int(rebuilt) if rebuilt is not None and rebuilt.isdigit() else 0
        self.pipeline = Pipeline(
            config,
            identity,
            self.keys,
            self.seen,
            recorded=self.audit,
            unknown_acceptances_until=until,
        )
        self.agency_keys = agency_keys
        self.registry = Registry(state / REGISTRY_FILE)
        self.config_agencies = config_agencies(config, dict(agency_keys))
        self.agencies: dict[Principal, AgencyRecord] = {}
        """The live agencies: the config's, superseded and extended by the registry's."""
        self.users: dict[str, UserRow] = {}
        """The live liaison users (the pages read them at every request)."""
        self._reload_registry()
        self._no_inbox_yet: set[Principal] = set()
        self.registry_seq = int(self.store.meta("registry_seq") or 0)
        self.federation = held_federation(config.trust_path)
        """The federation version in use (the trust anchors of ``self.keys``)."""
        self._refused_federation: str | None = None
        self.control = ControlPlane(
            config=config,
            identity=identity,
            keys=self.keys,
            audit=self.audit,
            store=self.store,
            agency_keys=agency_keys,
            metrics=self.metrics,
            agencies=self.agencies,
            federation=self.federation,
        )
        self.settler = Settler(
            identity=identity,
            pipeline=self.pipeline,
            control=self.control,
            audit=self.audit,
            store=self.store,
            metrics=self.metrics,
            encryption_key=self._encryption_key,
            links=frozenset(config.links),
            clock=clock,
            publish=self._publish,
            storage=self.storage,
            copied=self._copied,
        )
        self.reminders = Reminders(
            identity=identity,
            store=self.store,
            audit=self.audit,
            storage=self.storage,
            metrics=self.metrics,
            encryption_key=self._encryption_key,
            publish=self._publish,
            clock=clock,
            period_s=check_period_s(
                min(t.shortest_ms for t in [DEFAULT_TIERS, *agreements.values()])
            ),
        )
        self.committer = GroupCommitter(
            record=self.audit.record,
            sync=self.store.sync,
            mark=lambda marks: self.store.mark_routed(*marks, durable=False),
            storage=self.storage,
            metrics=self.metrics,
            rows=self.seen,
        )
        self.lookups = LookupService(
            config=config.lookup,
            identity=identity,
            pipeline=Pipeline(
                config,
                identity,
                self.keys,
                self.seen.deferred(),
                self.pipeline.limiter,
                recorded=self.audit,
                unknown_acceptances_until=until,
            ),
            store=self.store,
            committer=self.committer,
            metrics=self.metrics,
            storage=self.storage,
            refusals=self.settler.refusals,
            encryption_key=self._encryption_key,
            clock=clock,
        )
        self.state = HubState()
        self.prune_period_s = PRUNE_PERIOD_S
        self.links: dict[str, LinkState] = {}
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self._stopping = asyncio.Event()
        self._registry_lock = asyncio.Lock()
        """One registry application at a time (the watcher, an agency's key update)."""
        self.key_update_interval_ms = MIN_INTERVAL_MS

    @property
    def _js(self) -> JetStreamContext:
        if self.js is None:
            raise LocalError("hub is not connected")
        return self.js

    def _encryption_key(self, to: Principal, now: int) -> PublicIdentity:
        local = self.agency_keys.get(to)
        return local if local is not None else self.keys.encryption_key(to, now)

    # --- lifecycle --------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or SIGTERM/SIGINT when run as a process)."""
        if stop is not None:
            self._stopping = stop
        stop = self._stopping
        if not await _until_stopped(self._connect(), stop):
            await self._close()  # stopped while NATS was still unreachable
            return
        try:  # before anything is recorded: a refused start leaves the log as it was
            checked = await _until_stopped(self._become_active(stop), stop)
        except BaseException:
            await self._close()
            raise
        if not checked:
            await self._close()
            return
        try:
            if (
                not await self._record_start(stop)
                or not await self.apply_registry(stop, publish=False)
                or not await self.publish_own_directory(stop)
            ):
                return  # stopped while the disk refused the start's writes
            self.control.load_peer_directories(self.clock())
            if self.federation is not None:
                self.metrics.set("ixb_federation_version", self.federation.version)
            self.state.ready = True
            log.info("hub_ready", hub=str(self.config.hub_id))
            async with asyncio.TaskGroup() as tg:
                for i in range(self.config.hub.workers):
                    tg.create_task(
                        pull_loop(
                            self._js,
                            streams.INGRESS_STREAM,
                            stop,
                            self.settler.local,
                            what=f"ingress-{i}",
                            on_count=self._count,
                        )
                    )
                for peer, link in self.links.items():
                    tg.create_task(
                        pull_loop(
                            link.js,
                            streams.in_stream(peer),
                            stop,
                            functools.partial(self.settler.from_peer, peer),
                            what=peer,
                            on_count=self._count,
                        )
                    )
                    tg.create_task(link_keeper(link, stop))
                tg.create_task(self._directory_responder(stop))
                tg.create_task(self._key_update_responder(stop))
                tg.create_task(self.lookups.serve(stop))
                tg.create_task(self._directory_refresher(stop))
                tg.create_task(self._registry_watcher(stop))
                tg.create_task(self._federation_watcher(stop))
                tg.create_task(self._checkpointer(stop))
                tg.create_task(self._stay_active(stop))
                tg.create_task(self.pruner(stop))
                tg.create_task(self._receipt_sweeper(stop))
                tg.create_task(self._retention(stop))
                tg.create_task(self.reminders.loop(stop))
                tg.create_task(
                    gauges(
                        self.country,
                        self.links,
                        self.metrics,
                        stop,
                        in_flight=lambda: self.state.in_flight,
                        versions=self.directory_versions,
                    )
                )
        finally:
            self.state.ready = False
            await self._step_down()
            await self._close()
            log.info("hub_stopped", hub=str(self.config.hub_id))
        if self.audit_copy.deposed.is_set():
            raise LocalError(
                "another hub process of this country became the active one: this one "
                "stopped (started again, it stands by)"
            )

    # --- one active hub process per country ------------------------------------------

    @property
    def lease(self) -> HubLease | None:
        return None if self.succession is None else self.succession.lease

    def _may_write(self) -> bool:
        return self.succession is None or self.succession.lease.valid()

    async def _copied(self) -> bool:
        """Whether everything recorded so far is in the ``AUDIT`` stream (settle asks
        before any ack)."""
        size = await asyncio.to_thread(lambda: self.audit_log.size)
        return await self.audit_copy.through(size)

    async def _become_active(self, stop: asyncio.Event) -> None:
        """Hold the country's lease when this is one of several hub processes (standing by
        until then), then check the local log against the ``AUDIT`` stream."""
        self.audit_copy.js = self._js
        instance = self.config.hub.instance
        if instance:
            replicas = self.config.nats.replicas
            self.succession = Succession(
                HubLease(self._js, instance, replicas=replicas),
                SharedState(self._js, replicas=replicas),
            )
            await self._stand_by(self.succession.lease, stop)
            if stop.is_set():
                return
            await _while_no_leader(self._take_shared, "shared")
        await _while_no_leader(self.audit_copy.check_at_start, "audit")
        if instance:
            await _while_no_leader(self._receipts_sent_before, "receipts")
        self.metrics.set("ixb_hub_active", 1)

    async def _stand_by(self, lease: HubLease, stop: asyncio.Event) -> None:
        """Follow the ``AUDIT`` stream into the local log until this process takes the lease.

        The previous holder appended nothing once its lease ran out, so after taking
        it one more follow makes the local log the country's. Leaves appended here were
        decided by another process: this one's store never knew their messages, so its
        pipeline also looks for acceptances in the log for an envelope's lifetime.
        """
        self.state.role = "standby"
        self.metrics.set("ixb_hub_active", 0)
        failures = StateLog("standby_follow_failed", logger=log)
        announced: str | None = "?"
        appended = 0
        while not stop.is_set():
            try:
                appended += await self._follow()
                if await lease.try_acquire():
                    break
                holder = await lease.holder()
            except COPY_ERRORS as exc:
                failures.failed(exc)
            else:
                failures.ok()
                if holder != announced:
                    log.info("hub_standby", instance=lease.instance, active=holder)
                    announced = holder
            await sleep_or_stop(stop, STANDBY_POLL_S)
        if stop.is_set():
            return
        appended += await _appended(self._follow)
        if appended:
            self._log_holds_unknown()
        self.state.role = "active"
        log.info("hub_active", instance=lease.instance, appended=appended)

    async def _follow(self) -> int:
        """Follow the ``AUDIT`` stream; a log that differs from it is set aside, once.

        It can differ in one way only: this process was the active one, appended
        leaves and died before copying them, and another process has written
        since. Those leaves were never acknowledged (settle acks only what the
        stream holds) nor covered by a checkpoint; the file is kept beside the new
        one for an auditor, and the log is built again from the stream.
        """
        try:
            return await self.audit_copy.follow()
        except AuditStreamError as exc:
            size = await asyncio.to_thread(lambda: self.audit_log.size)
            aside = await asyncio.to_thread(self.audit_log.set_aside, f"diverged-{self.clock()}")
            self.audit_copy.forget()
            log.error(  # noqa: TRY400 - one line with the cause, not a traceback
                "audit_log_set_aside",
                path=str(aside),
                size=size,
                detail=f"{exc.detail}: built again from the {streams.AUDIT_STREAM} stream",
            )
            return await self.audit_copy.follow()

    def _log_holds_unknown(self) -> None:
        until = shipping.unknown_acceptances_until(self.clock(), self.config.wire_limits())
        for pipeline in (self.pipeline, self.lookups.pipeline):
            pipeline.unknown_acceptances_until = max(pipeline.unknown_acceptances_until, until)
        with contextlib.suppress(*STORAGE_ERRORS):  # the window is in memory either way
            self.store.set_meta(shipping.UNKNOWN_ACCEPTANCES_META, str(until))

    def _shared_now(self) -> shared_state.Shared:
        stored = self.store.directories()
        directories: dict[str, shared_state.Directory] = {}
        witnessed: dict[str, shared_state.Witnessed] = {}
        for country in (self.country, *sorted(self.config.links)):
            version = self.keys.version(country)
            if version is not None and country in stored:
                directories[country] = shared_state.Directory(version, stored[country])
        for peer in sorted(self.config.links):
            last = self.audit_log.last_witnessed(log_origin(peer))
            if last is not None:
                witnessed[peer] = shared_state.Witnessed(*last)
        registry = shared_state.Registry(self.registry_seq, self.registry.snapshot())
        return shared_state.Shared(directories, witnessed, registry)

    async def _share(self) -> None:
        """Put the peers' directories and what we last witnessed of each where a standby
        finds them when it takes over (every second, with the checkpoints)."""
        if self.succession is None or not self._may_write():
            return
        shared = self.succession.shared
        try:
            await shared.write(await asyncio.to_thread(self._shared_now))
        except COPY_ERRORS as exc:
            shared.failures.failed(exc)
        else:
            shared.failures.ok()

    async def _take_shared(self) -> None:
        """What the previous active hub shared: directories newer than ours (verified when
        loaded, as after a restart) and the largest checkpoint of each peer it witnessed."""
        if self.succession is None:
            return
        taken = await self.succession.shared.read()

        def apply() -> None:
            for country, d in taken.directories.items():
                if country == self.country or country in self.config.links:
                    self.store.save_directory(country, d.version, d.signed)  # only if newer
            for peer, w in taken.witnessed.items():
                if peer not in self.config.links:
                    continue
                origin = log_origin(peer)
                last = self.audit_log.last_witnessed(origin)
                if last is None or last[0] < w.size:
                    self.audit_log.save_witnessed(origin, w.size, w.root, w.note, w.at_ms)

        await asyncio.to_thread(apply)
        if taken.registry is not None:
            await asyncio.to_thread(self._take_registry, taken.registry)
        log.info(
            "hub_state_taken",
            directories=sorted(taken.directories),
            witnessed={p: w.size for p, w in taken.witnessed.items()},
        )

    async def _receipts_sent_before(self) -> None:
        """Receipts this country's hub sent just before this process took over and the log
        lacks, recorded now as sent.

        A process publishes a batch's receipts, then records, copies and acks: killed in
        between, its receipts are out (the peer logs them) and their messages come back
        to the new process, which seals receipts of its own. Those that cover the same
        messages under the same statement are dropped as JetStream duplicates (and the
        one held recorded, :meth:`_publish`); those cut differently (its batches are not
        the dead one's) go out beside them. Either way the dead process's receipts are
        in the streams it sent them to, ``INBOX`` and each ``OUT_<PEER>``, for
        :data:`RECEIPT_SCAN_S` back: read there, they join the log."""
        since = self.clock() - int(RECEIPT_SCAN_S * 1000)
        sources = [(self._js, streams.INBOX_STREAM, subjects.inbox_all(self.country))] + [
            (link.js, streams.out_stream(peer), subjects.cross_border(self.country, peer))
            for peer, link in sorted(self.links.items())
        ]
        sent: list[bytes] = []
        for js, stream, subject in sources:
            sent += await streams.read_since(js, stream, subject, since, limit=RECEIPT_SCAN_MAX)
        hub, now = self.identity.principal, self.clock()

        def missing() -> list[AuditEntry]:
            out = []
            for data in sent:
                try:
                    header = decode_envelope(data).header
                except IxbError:
                    continue  # a directory, a checkpoint … on a link
                if header.type != "receipt" or header.sender != str(hub):
                    continue
                entry = receipt_entry(hub, data, now)
                held = self.audit_log.holds(entry.event, header.message_id, header.sender)
                if not held and entry not in out:
                    out.append(entry)
            return out

        found = await asyncio.to_thread(missing)
        if found:
            await asyncio.to_thread(self.audit.record, found)
            log.warning("receipts_recorded_at_takeover", count=len(found), read=len(sent))

    def _take_registry(self, taken: shared_state.Registry) -> None:
        """The previous active process's registry and the last change it applied: a change
        it applied is not applied (nor recorded) twice, one it had not is applied next."""
        if taken.image != self.registry.snapshot():
            aside = self.registry.path.with_name(f"{REGISTRY_FILE}.before-{self.clock()}")
            self.registry.replace(taken.image, aside)
            log.warning("registry_taken", applied=taken.applied, kept=str(aside))
        self.store.set_meta("registry_seq", str(taken.applied))
        self.registry_seq = taken.applied

    async def _stay_active(self, stop: asyncio.Event) -> None:
        """Stop the hub when this process is no longer the active one: its lease ran out
        or was taken, or another process appended to the ``AUDIT`` stream."""
        deposed = self.audit_copy.deposed
        if self.lease is not None:
            await self.lease.hold(stop)
            if not stop.is_set():
                deposed.set()
        while not stop.is_set() and not deposed.is_set():
            await sleep_or_stop(stop, STANDBY_POLL_S)
        if deposed.is_set():
            log.error("hub_deposed", hub=str(self.config.hub_id), instance=self.config.hub.instance)
            stop.set()

    async def _step_down(self) -> None:
        """``hub_stopped`` in the log and, when several hub processes share the country, in
        the stream, then the lease given up so a standby takes over at once. A deposed
        process records nothing: another one writes the country's log now."""
        if self.audit_copy.deposed.is_set():
            return
        with contextlib.suppress(IxbError, OSError):
            self.audit.record([self.audit.entry(AuditEvent.HUB_STOPPED)])
        if self.lease is not None and self.lease.valid():
            await self.audit_copy.ship()
            await self.lease.release()

    async def _record_start(self, stop: asyncio.Event) -> bool:
        """``hub_started``, and ``policy_changed`` when the policy differs from the last run's.

        The policy (exchange lists, rate limits, agencies, roles, revocations,
        users) is fingerprinted so an auditor sees in the log when it changed.
        False if told to stop while the disk refused these writes.
        """
        policy = msgspec.json.encode(
            [
                self.config.policy,
                self.config.agency,
                [(u.name, u.role) for u in self.config.user],
                *([self.config.deadlines] if self.config.deadlines else []),
            ]
        )
        digest = hashlib.sha256(policy).hexdigest()[:16]
        previous = self.store.meta("policy")
        entries = [self.audit.entry(AuditEvent.HUB_STARTED, detail=f"policy {digest}")]
        if previous is not None and previous != digest:
            entries.append(
                self.audit.entry(AuditEvent.POLICY_CHANGED, detail=f"policy {previous} → {digest}")
            )
        # a new federation version (members, hub keys, threshold) is a change of trust anchors
        held = held_federation(self.config.trust_path)
        federation = None if held is None else f"federation v{held.version} {held.digest()}"
        before = self.store.meta("federation")
        if federation is not None and before is not None and before != federation:
            entries.append(
                self.audit.entry(AuditEvent.POLICY_CHANGED, detail=f"{before} → {federation}")
            )
        steps: list[Callable[[], object]] = [
            lambda: self.audit.record(entries),
            lambda: self.store.set_meta("policy", digest),
        ]
        if federation is not None:
            steps.append(lambda: self.store.set_meta("federation", federation))
        return await self._write("start", Writes(*steps), stop)

    async def _write(self, writer: str, writes: Callable[[], object], stop: asyncio.Event) -> bool:
        """Run ``writes`` off the event loop until they succeed; False if stopped first.

        For writes nothing waits on but the task making them (start, our own
        directory): the disk refusing them is reported (:class:`StorageHealth`)
        and they are tried again every :data:`RETRY_S`, resuming
        :class:`~broker.control.Writes` where they stopped.
        """
        while True:
            try:
                await asyncio.to_thread(writes)
            except STORAGE_ERRORS as exc:
                self.storage.failed(writer, exc)
            else:
                self.storage.ok(writer)
                return True
            await sleep_or_stop(stop, RETRY_S)
            if stop.is_set():
                return False

    def request_stop(self) -> None:
        self._stopping.set()

    async def _connect(self) -> None:
        cfg = self.config
        self.nc = await connect(
            cfg.nats.url,
            auth=self._nats_auth,
            ca_file=cfg.nats_ca_file(),
            name=f"ixb-hub-{self.country}",
            max_reconnect_attempts=UNBOUNDED,
        )
        self.js = js_own = self.nc.jetstream()

        async def own_streams() -> None:
            await streams.ensure_country_streams(
                js_own, self.country, [p.name for p in self.agency_keys], replicas=cfg.nats.replicas
            )
            await js_own.add_consumer(
                streams.INGRESS_STREAM,
                streams.durable_consumer(streams.HUB_CONSUMER, streams.HUB_ACK_WAIT_S),
            )

        await _while_no_leader(own_streams, "country")
        for peer in sorted(cfg.links):
            nc = await connect(
                cfg.nats.url,
                auth=self._link_auth[peer],
                ca_file=cfg.nats_ca_file(),
                name=f"ixb-hub-{self.country}-link-{peer}",
                max_reconnect_attempts=UNBOUNDED,
                inbox_prefix=subjects.link_reply_prefix(self.country, peer),
            )
            js = nc.jetstream()
            self.links[peer] = LinkState(peer, nc, js)
            await _while_no_leader(
                functools.partial(
                    streams.ensure_link_streams, js, self.country, peer, replicas=cfg.nats.replicas
                ),
                peer,
            )
        self.lookups.nc, self.lookups.js = self.nc, self.js
        self.lookups.links = dict(self.links)

    async def _close(self) -> None:
        for link in self.links.values():
            with contextlib.suppress(nats.errors.Error):
                await link.nc.drain()
        if self.nc is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.drain()
        self.store.close()
        self.audit_log.close()
        self.registry.close()

    # --- executing decisions ---------------------------------------------------------

    async def _publish(self, p: Publish) -> bytes | None:
        """One planned publish, onto our own streams or a peer's link.

        A receipt JetStream already held under its ``Nats-Msg-Id`` with other bytes
        (sealed by another hub process of this country, or before a restore, and sent
        before it was recorded) is what went out: its bytes are returned, so that
        receipt is the one recorded, not this one that was dropped."""
        headers = (
            {"Nats-Msg-Id": p.dedup}
            if p.kind is None
            else {KIND_HEADER: p.kind, "Nats-Msg-Id": p.dedup}
        )
        js = self._js if p.peer is None else self.links[p.peer].js
        timeout = CHECKPOINT_PUBLISH_TIMEOUT_S if p.kind == KIND_CHECKPOINT else None
        ack = await js.publish(p.subject, p.data, headers=headers, timeout=timeout)
        if p.entry is None or not ack.duplicate:
            return None
        async with asyncio.timeout(RECEIPT_READ_TIMEOUT_S):
            held = await js.get_msg(ack.stream, ack.seq)
        return held.data if held.data and held.data != p.data else None

    def _count(self, delta: int) -> None:
        self.state.in_flight += delta

    # --- directories ------------------------------------------------------------

    async def publish_own_directory(self, stop: asyncio.Event | None = None) -> bool:
        """Sign our directory's next version, keep it, send it to every peer.

        The writes are retried while the disk refuses them and the publishes
        (same de-dup id) while the links do; False if told to stop first.
        """
        stop = stop if stop is not None else self._stopping
        decision = self.control.own_directory(self.clock())
        if decision.writes is not None and not await self._write(
            "directory", decision.writes, stop
        ):
            return False
        # a standby taking over must know this version (and the registry behind it) before
        # any peer does: it signs the next one
        await self._share()
        failures = StateLog("directory_publish_failed", logger=log)
        publishes = (*decision.publishes, *self.control.own_federation())
        while True:
            try:
                await asyncio.gather(*map(self._publish, publishes))
            except TRANSPORT_ERRORS as exc:
                failures.failed(exc)
            else:
                failures.ok()
                return True
            await sleep_or_stop(stop, RETRY_S)
            if stop.is_set():
                return False

    async def _directory_refresher(self, stop: asyncio.Event) -> None:
        """Re-sign well before expiry: peers refuse every agency of an expired directory."""
        period_s = self.config.hub.directory_ttl_hours * 3600 / 3
        while not stop.is_set():
            await sleep_or_stop(stop, period_s)
            if stop.is_set() or not await self.publish_own_directory(stop):
                return

    async def _directory_responder(self, stop: asyncio.Event) -> None:
        """Agencies fetch the verified directories they encrypt to."""

        async def answer(msg: Msg) -> None:
            if msg.data == FEDERATION_REQUEST:
                held = self.federation
                await msg.respond(
                    b"" if held is None else render_federation_file(held).encode("utf-8")
                )
                return
            await msg.respond(await asyncio.to_thread(directory_answer, self.store, msg.data))

        if self.nc is None:
            raise LocalError("hub is not connected")
        sub = await self.nc.subscribe(subjects.directory_request(self.country), cb=answer)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _key_update_responder(self, stop: asyncio.Event) -> None:
        """Local agencies list their new encryption keys themselves (SPEC §12.1)."""

        async def answer(msg: Msg) -> None:
            name = msg.subject.rsplit(".", 1)[-1]
            reply = await self.key_update(name, msg.data, stop)
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(encode_answer(reply))

        if self.nc is None:
            raise LocalError("hub is not connected")
        sub = await self.nc.subscribe(subjects.key_update_all(self.country), cb=answer)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def key_update(self, name: str, data: bytes, stop: asyncio.Event) -> KeyUpdateAnswer:
        """Decide one update; accepted: registry row, audit entry, next directory version."""
        async with self._registry_lock:
            now = self.clock()
            try:
                agency = claimed_agency(self.country, name, data)
                last = await asyncio.to_thread(self.registry.last_key_update, agency)
                update, record = decide_key_update(
                    agency,
                    data,
                    self.agencies,
                    last,
                    now,
                    min_interval_ms=self.key_update_interval_ms,
                )
            except IxbError as exc:
                self.metrics.inc("ixb_key_updates_total", result=exc.code)
                log.warning("key_update_refused", agency=name, code=exc.code, detail=exc.detail)
                return KeyUpdateAnswer(code=exc.code, detail=exc.detail[:200])
            fpr = fingerprint(KeyAlg.X25519, update.encryption_key)
            what = f"agency {agency} encryption key rotated by the agency: {fpr}"

            def write() -> None:
                with self.registry.change(actor(agency), now, what) as db:
                    Registry.put_agency(db, record, now)
                    Registry.put_key_update(db, agency, LastUpdate(update.created, now))

            try:
                await asyncio.to_thread(write)
            except sqlite3.Error as exc:
                log.warning("key_update_write_failed", agency=str(agency), error=str(exc))
                return KeyUpdateAnswer(code=IoError.code, detail="the hub could not record it")
            self.metrics.inc("ixb_key_updates_total", result="accepted")
            log.info("key_update_accepted", agency=str(agency), encryption_key=fpr)
            if not await self._apply_registry(stop):
                return KeyUpdateAnswer(code=IoError.code, detail="the hub is stopping")
        return KeyUpdateAnswer(version=self.keys.version(self.country))

    # --- the operator's live changes (broker/registry.py) ------------------------------

    def _read_registry(self) -> tuple[dict[Principal, AgencyRecord], dict[str, UserRow]]:
        return self.registry.agencies(), self.registry.users()

    def _reload_registry(
        self, rows: tuple[dict[Principal, AgencyRecord], dict[str, UserRow]] | None = None
    ) -> set[Principal]:
        """Install the registry's rows as the live agencies and users; the agencies it adds.

        On the event loop (the rows are read in a worker thread), so no decision
        sees the agencies half replaced.
        """
        registry_agencies, registry_users = rows if rows is not None else self._read_registry()
        agencies = merged_agencies(self.config_agencies, registry_agencies)
        added = set(agencies) - set(self.agencies)
        self.agencies.clear()
        self.agencies.update(agencies)
        for principal, record in agencies.items():
            self.agency_keys[principal] = record.public
        self.users = merged_users(self.config, registry_users)
        return added

    async def apply_registry(self, stop: asyncio.Event, *, publish: bool = True) -> bool:
        """Apply the operator's changes made since the last applied one.

        One ``policy_changed`` entry per change (its operator as actor), then
        the new state in memory, and (``publish``) our directory's next
        version to every peer. False if told to stop while the disk refused.
        """
        async with self._registry_lock:
            return await self._apply_registry(stop, publish=publish)

    async def _apply_registry(self, stop: asyncio.Event, *, publish: bool = True) -> bool:
        try:
            changes = await asyncio.to_thread(self.registry.changes_since, self.registry_seq)
            rows = await asyncio.to_thread(self._read_registry)
        except sqlite3.Error as exc:  # the operator's file is busy or damaged: next poll
            log.warning("registry_read_failed", error=str(exc))
            return True
        self._no_inbox_yet |= self._reload_registry(rows)
        if self.js is not None and self._no_inbox_yet:
            try:  # an enrolled agency's inbox consumer, before anyone sends to it
                names = [p.name for p in sorted(self._no_inbox_yet)]
                await streams.ensure_country_streams(
                    self.js, self.country, names, replicas=self.config.nats.replicas
                )
            except TRANSPORT_ERRORS as exc:
                log.warning("inbox_consumer_failed", error=str(exc))  # again at the next poll
            else:
                self._no_inbox_yet.clear()
        if not changes:
            return True
        entries = [
            self.audit.entry(AuditEvent.POLICY_CHANGED, actor=c.actor, detail=c.what)
            for c in changes
        ]
        last = changes[-1].seq
        if not await self._write(
            "registry",
            Writes(
                lambda: self.audit.record(entries),
                lambda: self.store.set_meta("registry_seq", str(last)),
            ),
            stop,
        ):
            return False
        self.registry_seq = last
        for c in changes:
            log.info("operator_change", seq=c.seq, actor=c.actor, what=c.what)
        return not publish or await self.publish_own_directory(stop)

    async def _registry_watcher(self, stop: asyncio.Event) -> None:
        """Every :data:`POLL_S`, apply the operator's new changes (no restart needed)."""
        failures = StateLog("registry_read_failed", logger=log)
        while not stop.is_set():
            await sleep_or_stop(stop, POLL_S)
            if stop.is_set():
                return
            try:
                seq = await asyncio.to_thread(self.registry.last_seq)
            except sqlite3.Error as exc:
                failures.failed(exc)
                continue
            failures.ok()
            pending = seq > self.registry_seq or self._no_inbox_yet
            if pending and not await self.apply_registry(stop):
                return

    # --- a new federation version, installed live (broker/trust.py) --------------------

    async def _federation_watcher(self, stop: asyncio.Event) -> None:
        """Every :data:`POLL_S`, take a newly installed federation version into use."""
        while not stop.is_set():
            await sleep_or_stop(stop, POLL_S)
            if stop.is_set() or not await self.apply_federation(stop):
                return

    async def apply_federation(self, stop: asyncio.Event) -> bool:
        """Use the version ``ixb federation install`` left in ``trust_dir``, if it is new.

        Checked again against the version in use (the file could have been put
        there by other means), then: the anchors replaced and every peer's
        directory verified again under them (SPEC §12, Key validity across
        versions), one ``policy_changed`` entry naming the operator, and our
        directory and the new version sent to every peer. False if told to
        stop while the disk refused the writes.
        """
        path = self.config.trust_path
        held = await asyncio.to_thread(held_federation, path)
        current = self.federation
        if held is None or current is None or held.same_version(current):
            return True  # (a hub started without a held version never installs one live)
        refused: IxbError | None = None
        try:
            check_successor(current, held)
        except IxbError as exc:
            refused = exc
        if refused is not None:
            if self._refused_federation != held.digest():
                self._refused_federation = held.digest()
                self.metrics.inc("ixb_federation_install_refused_total", code=refused.code)
                log.error("federation_install_refused", code=refused.code, detail=refused.detail)
            return True
        trust = await asyncio.to_thread(anchors_in_force, path, held)
        installed = await asyncio.to_thread(read_installed, path)
        actor = (
            installed.actor
            if installed is not None and installed.digest == held.digest()
            else "trust_dir"
        )
        now = self.clock()
        dropped = self.keys.replace_anchors(trust, now)
        self.audit.trust = trust
        self.control.federation = held
        self.metrics.set("ixb_federation_version", held.version)
        before = f"federation v{current.version} {current.digest()}"
        federation = f"federation v{held.version} {held.digest()}"
        entries = [
            self.audit.entry(
                AuditEvent.POLICY_CHANGED, actor=actor, detail=f"{before} → {federation}"
            )
        ]
        self.federation = held
        log.info(
            "federation_installed",
            version=held.version,
            digest=held.digest(),
            actor=actor,
            directories_dropped=list(dropped),
        )
        if not await self._write(
            "federation",
            Writes(
                lambda: self.audit.record(entries),
                lambda: self.store.set_meta("federation", federation),
            ),
            stop,
        ):
            return False
        return await self.publish_own_directory(stop)

    def directory_versions(self) -> dict[str, int | None]:
        return {c: self.keys.version(c) for c in sorted([self.country, *self.links])}

    async def pruner(self, stop: asyncio.Event) -> None:
        """Forget, every ``prune_period_s``, messages expired for longer than a month
        (every :data:`RETRY_S` while the disk refuses it)."""
        while not stop.is_set():
            try:
                forgotten = await asyncio.to_thread(self.store.prune, self.clock(), PRUNE_KEEP_MS)
            except STORAGE_ERRORS as exc:
                self.storage.failed("prune", exc)
                await sleep_or_stop(stop, RETRY_S)
                continue
            self.storage.ok("prune")
            if forgotten:
                log.info("messages_pruned", count=forgotten)
            await sleep_or_stop(stop, self.prune_period_s)

    # --- retention of delivered content (broker.retention) ----------------------------

    async def _retention(self, stop: asyncio.Event) -> None:
        section = self.config.retention
        await retention_loop(
            self.country,
            self._js,
            self.links,
            section.policy(),
            period_s=section.period_minutes * 60,
            clock=self.clock,
            stop=stop,
        )

    async def retention_once(self) -> list[StreamSweep]:
        """One retention pass now, for ``ixb retention run``: connect, sweep, close.

        A server that does not answer within :data:`CLI_CONNECT_TIMEOUT_S` is an
        :class:`IoError` (``cannot reach …``), not a wait for ever."""
        try:
            async with asyncio.timeout(CLI_CONNECT_TIMEOUT_S):
                await self._connect()
        except TimeoutError:
            await self._close()
            url = self.config.nats.url
            raise IoError(f"cannot reach {url}: no answer in {CLI_CONNECT_TIMEOUT_S:g} s") from None
        except (nats.errors.Error, OSError) as exc:
            await self._close()
            raise unreachable(self.config.nats.url, exc) from None
        try:
            return await sweep_streams(
                self.country, self._js, self.links, self.config.retention.policy(), self.clock()
            )
        finally:
            await self._close()

    # --- receipts whose publish was never confirmed -----------------------------------

    async def _receipt_sweeper(self, stop: asyncio.Event) -> None:
        """Every :data:`RECEIPT_SWEEP_S`, :meth:`sweep_receipts`; failures logged once a spell."""
        failures = StateLog("receipt_resend_failed", logger=log)
        while not stop.is_set():
            await sleep_or_stop(stop, RECEIPT_SWEEP_S)
            try:
                await self.sweep_receipts()
            except TRANSPORT_ERRORS as exc:
                failures.failed(exc)
            except STORAGE_ERRORS as exc:
                self.storage.failed("receipts", exc)
            else:
                failures.ok()
                self.storage.ok("receipts")

    async def sweep_receipts(self) -> int:
        """Send again, and record, each receipt we sealed that the audit log does not hold.

        A batch whose receipt publish timed out (its acknowledgement lost, e.g. the
        connection dropped the server's replies) is left for redelivery and planned
        again, possibly grouped otherwise: another statement, another receipt. The
        first one may still have been stored and delivered, so it is published
        again, same bytes and de-dup id (stored once), and recorded (once: see
        :meth:`HubAudit.record`). Receipts sealed in the last
        :data:`RECEIPT_SETTLE_MS` belong to batches still settling; older than the
        streams' duplicate window they are left alone. Returns how many were sent.
        """
        now = self.clock()
        cursor = await asyncio.to_thread(self.store.meta, RECEIPT_SWEEP_META)
        after = max(int(cursor or 0), now - RECEIPT_SWEEP_WINDOW_MS)
        rows = await asyncio.to_thread(
            self.store.sealed_receipts_between, after, now - RECEIPT_SETTLE_MS, RECEIPT_SWEEP_ROWS
        )
        resent = 0
        done = after
        try:
            for dedup, data, at in rows:
                p = receipt_publish(self.identity.principal, dedup, data, now)
                entry = p.entry
                if entry is not None and not await asyncio.to_thread(self.audit.holds, entry):
                    await self._publish(p)
                    await asyncio.to_thread(self.audit.record, [entry])
                    resent += 1
                    log.info(
                        "receipt_resent",
                        msg_id=format_message_id(entry.msg_id or b""),
                        to=p.peer or "local",
                    )
                done = at
        finally:
            if rows:
                # rows sealed at the same ms as the last may lie beyond the limit
                mark = done - 1 if len(rows) == RECEIPT_SWEEP_ROWS else done
                if mark > after:
                    await asyncio.to_thread(self.store.set_meta, RECEIPT_SWEEP_META, str(mark))
        return resent

    # --- checkpoints ----------------------------------------------------------------

    async def _checkpointer(self, stop: asyncio.Event) -> None:
        """Sign a checkpoint each second the log grew, and send it to every peer to witness.

        Refusal summaries whose windows closed are recorded first. A write the
        disk refuses is tried again the next second (summaries are kept for it);
        the latest checkpoint that was made is still sent.
        """
        failures = StateLog("checkpoint_publish_failed", logger=log)
        while not stop.is_set():
            await self._checkpoint(await self.audit_copy.ship())
            await self._share()
            try:
                for peer in self.links:
                    await self._send_checkpoint(peer)
            except TRANSPORT_ERRORS as exc:
                failures.failed(exc)  # once per kind of failure, not each second
            else:
                failures.ok()
            await sleep_or_stop(stop, CHECKPOINT_PERIOD_S)

    async def _checkpoint(self, upto: int | None = None) -> None:
        summaries = self.settler.refusal_summaries(self.clock())
        if summaries:
            try:
                await asyncio.to_thread(self.audit.record, summaries)
            except STORAGE_ERRORS as exc:
                self.settler.unrecorded(summaries)
                self.storage.failed("checkpoint", exc)
                return
        try:
            made = await asyncio.to_thread(self.audit.checkpoint, upto)
        except STORAGE_ERRORS as exc:
            self.storage.failed("checkpoint", exc)
            return
        if made is not None:
            self.metrics.set("ixb_checkpoint_size", made[0])
        if summaries or made is not None:
            self.storage.ok("checkpoint")

    async def _send_checkpoint(self, peer: str) -> None:
        publication = await asyncio.to_thread(self.audit.publication_for, peer)
        if publication is None:
            return
        cp = parse_checkpoint(parse_signed_note(publication.note)[0])
        # the root is part of the id: a rewritten log reusing a size must still
        # reach the witness, not vanish as a JetStream duplicate; so is the old size:
        # proving the same checkpoint again from the witness's size (after its
        # conflict answer) is a new publication
        await self._publish(
            link_item(
                self.country,
                peer,
                encode_publication(publication),
                f"ckpt:{self.country}:{peer}:{cp.size}:{cp.root[:8].hex()}:{publication.old_size}",
                KIND_CHECKPOINT,
            )
        )
        self.audit.published(peer, publication)

    # --- health ---------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        """What ``/healthz`` shows; not ready while a write of the hub's state files fails."""
        return {
            "hub": str(self.config.hub_id),
            "ready": self.state.ready and not self.storage.failing,
            "storage": self.storage.status(),
            "nats": self.nc is not None and self.nc.is_connected,
            "links": {p: link.nc.is_connected for p, link in self.links.items()},
            "directories": self.directory_versions(),
            "federation": None if self.federation is None else self.federation.version,
            "in_flight": self.state.in_flight,
            "role": self.state.role,
            "audit_copied": self.audit_copy.shipped,
        }


LEADER_WAIT_S = 0.5
STANDBY_POLL_S = 1.0
RECEIPT_SCAN_S = 120.0
"""How far back a process taking over looks for receipts its predecessor sent unrecorded:
the lease's TTL and a standby's catching up, with room to spare."""
RECEIPT_SCAN_MAX = 200_000
"""How often a standby hub reads the ``AUDIT`` stream and tries to take the lease."""


async def _appended(follow: Callable[[], Awaitable[int]]) -> int:
    """``follow()``'s count, waiting out a leaderless stream as :func:`_while_no_leader`."""
    got = 0

    async def once() -> None:
        nonlocal got
        got = await follow()

    await _while_no_leader(once, "audit")
    return got


async def _while_no_leader(setup: Callable[[], Awaitable[object]], what: str) -> None:
    """``setup`` (making streams), again while JetStream has no leader to make them: a
    clustered country's node died and its leaders are being elected, or the cluster is
    still forming. Any other refusal is the caller's. Logged once per spell."""
    waiting = StateLog("streams_waiting_for_leader", logger=log, streams=what)
    while True:
        try:
            await setup()
        except (TimeoutError, nats.errors.Error) as exc:
            if not isinstance(exc, TimeoutError | nats.errors.TimeoutError) and not (
                streams.no_leader(exc)
            ):
                raise
            waiting.failed(exc)
            await asyncio.sleep(LEADER_WAIT_S)
        else:
            waiting.ok()
            return


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


def directory_answer(store: HubStore, request: bytes) -> bytes:
    """SPEC §8: the index (country → version) for an empty request, else one signed directory."""
    if not request:
        return msgspec.msgpack.encode(store.directory_index())
    try:
        country = check_country(request.decode("ascii"))
    except (UnicodeDecodeError, IxbError):
        return b""
    return store.directory(country) or b""


def install_signal_handlers(hub: Hub) -> None:
    """SIGTERM / SIGINT: stop fetching, finish in-flight messages, close cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, hub.request_stop)


def hub_nats_auth(config: HubConfig, identity: Identity) -> NatsAuth:
    """How the hub logs into its own country's NATS (``[nats]``)."""
    return _auth(identity, NATS_HUB, config.nats.user, config.nats.password, "nats")


def _auth(
    identity: Identity, label: str, user: str | None, password: str | None, section: str
) -> NatsAuth:
    """The config's password if it has one (configs written before nkeys), else the nkey
    ``label`` sealed in the hub's key file."""
    if password is not None:
        if user is None:
            raise ConfigError(f"{section}.user: needed with {section}.password")
        return NatsAuth(user=user, password=password)
    seed = identity.nats_seed(label)
    if seed is None:
        raise ConfigError(
            f"{section}: no password, and the hub's key file seals no NATS nkey {label!r}"
        )
    return NatsAuth(seed=seed)
