"""The federation of the fault suite: real processes, proxies we control, traffic we count.

:class:`Federation` lays out THA, MYS and MMR as ``make demo`` does
(:func:`ixb.deployment.create_deployment`), then runs

- three ``nats-server`` processes, each country's leaf links dialled through
  a :class:`~tests.faults.proxy.TcpProxy` per link (the dialing server's
  config names the proxy's port; no server advertises its leaf URL,
  ``no_advertise``, so a reconnect cannot go around the proxy);
- three hub processes (``ixb hub run``), each reaching its server through a
  proxy, logging into a pipe (as under a service manager: a full disk does
  not stop its logs) that we copy to ``logs/hub-CC.log``; a clustered
  country runs two, as on two hosts (``[hub] instance`` a and b, each with its
  own state and trust directories and HTTP port): one active, one standing by;
- the agencies in this process, as :class:`~agency_client.sdk.AgencyClient`
  instances with their own handled-message files.

:class:`Traffic` sends a bounded, steady mix of every message type through
the agencies, answers the requests the way officers and responders would,
and counts: what each sender got acknowledged (JetStream stored it at its
hub), what each recipient's application was handed (and how often), what
was refused with a signed receipt. Sends whose outcome is unknown are
retried with :meth:`~agency_client.sdk.AgencyClient.resend` (same bytes,
same ``Nats-Msg-Id``), as the SDK documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats.errors
import structlog

from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, Incoming, load_identity_for
from broker.audit.log import AuditLog
from broker.auditing import reconcile_logs
from broker.natsd import (
    NatsServer,
    _parent_death_signal,
    free_ports,
    start_servers,
    wait_links_up,
)
from broker.natsplan import FederationPlan
from broker.store import HubStore
from ixb.demo import AGENCIES
from ixb.demo import VALID_PASSPORT as PASSPORT
from ixb.deployment import Deployment, Layout, create_deployment
from protocols.errors import IxbError, UnknownOutcomeError
from protocols.examples import example_bodies
from protocols.identifiers import Principal, format_message_id, parse_agency
from protocols.keys import KdfProfile
from protocols.messages import (
    Body,
    DocPurpose,
    DocVerifyRequest,
    DocVerifyResponse,
    MlaStatus,
    MlaStatusCode,
    Receipt,
    ReceiptStatus,
)
from transport.clock import wall_ms

log = structlog.get_logger("ixb.faults")

PASSPHRASE = "ixb fault suite passphrase - throwaway keys"

HEALTH_TIMEOUT_S = 2.0
HUB_STOP_S = 15.0


# --- processes ------------------------------------------------------------------


class HubProcess:
    """``ixb hub run`` as a child process whose output goes through a pipe to a log file."""

    def __init__(
        self,
        deployment: Deployment,
        country: str,
        config: Path,
        log_path: Path,
        *,
        instance: str = "",
        overrides: dict[str, str] | None = None,
    ) -> None:
        """``overrides``: ``IXB_HUB__…`` settings of this process (its instance name, state
        and trust directories, HTTP port) over the country's config file."""
        self.deployment = deployment
        self.country = country
        self.config = config
        self.log_path = log_path
        self.instance = instance
        self.overrides = dict(overrides or {})
        if instance:
            self.overrides["IXB_HUB__HUB__INSTANCE"] = instance
        port = self.overrides.get("IXB_HUB__HTTP__PORT")
        self.url = deployment.hub_url(country) if port is None else f"http://127.0.0.1:{port}"
        state = self.overrides.get("IXB_HUB__HUB__STATE_DIR")
        self.state = deployment.base / "state" / country if state is None else Path(state)
        self.proc: subprocess.Popen[bytes] | None = None
        self._copier: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"{self.country}/{self.instance}" if self.instance else self.country

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ixb", "hub", "run", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**self.deployment.env(), **self.overrides},
            preexec_fn=_parent_death_signal(),  # noqa: PLW1509 - gone with us, whatever happens
        )
        self._copier = threading.Thread(target=self._copy, args=(self.proc,), daemon=True)
        self._copier.start()

    def _copy(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout, self.log_path.open("ab") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._copier is not None:
            self._copier.join(timeout=5)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def limit_file_size(self, limit: int | None) -> None:
        """Every file write of the hub past ``limit`` bytes fails (EFBIG), as on a full disk;
        ``None`` lifts it. Python ignores SIGXFSZ, so the writes fail instead of killing it."""
        _soft, hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (hard if limit is None else limit, hard))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=HUB_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._copier is not None:
            self._copier.join(timeout=5)
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --- the federation -------------------------------------------------------------


@contextlib.asynccontextmanager
async def live_federation(
    base: Path, *, clusters: dict[str, int] | None = None
) -> AsyncIterator[tuple[Federation, Traffic]]:
    """A started federation with its traffic running; both stopped on exit, and a hub
    that did not exit cleanly fails the caller."""
    fed = await Federation.start(base, clusters=clusters)
    traffic = Traffic(fed)
    traffic.start()
    try:
        yield fed, traffic
    finally:
        await traffic.close()
        unclean = await fed.stop()
    assert not unclean, unclean


def _dialer_plan(plan: FederationPlan, country: str, leaf_ports: dict[str, int]) -> FederationPlan:
    """``plan`` as ``country``'s server sees it: the peers it dials at our proxies' ports."""
    nodes = dict(plan.nodes)
    for peer, port in leaf_ports.items():
        if plan.cluster_size(peer) > 1:
            raise ValueError(f"the suite proxies leaf links to single servers only, not {peer}")
        nodes[peer] = dataclasses.replace(nodes[peer], leaf_port=port)
    return dataclasses.replace(plan, nodes=nodes)


@dataclass
class Federation:
    base: Path
    deployment: Deployment
    servers: dict[str, NatsServer]
    hubs: dict[str, HubProcess]
    """The country's first hub process (a clustered country's instance ``a``)."""
    leaf_proxies: dict[tuple[str, str], object]
    """(dialer, listener) → the proxy of that border link."""
    hub_proxies: dict[str, object]
    """country → the proxy between its hub and its server."""
    http: aiohttp.ClientSession
    nodes: dict[str, tuple[NatsServer, ...]] = field(default_factory=dict)
    """Every server of each country (a clustered one has several; ``servers``: the first)."""
    agencies: dict[str, AgencyClient] = field(default_factory=dict)
    failovers: dict[str, str] = field(default_factory=dict)
    """``CC/STREAM`` → the node seen leading it after its leader was killed."""
    standbys: dict[str, tuple[HubProcess, ...]] = field(default_factory=dict)
    """A country's other hub processes (instance ``b`` of a clustered one)."""
    measured: dict[str, object] = field(default_factory=dict)
    """What the scenario running now measured besides the counts (cleared by each run)."""

    @classmethod
    async def start(cls, base: Path, *, clusters: dict[str, int] | None = None) -> Federation:
        """``clusters``: countries that run a nats-server cluster of that size; their hub
        connects to its nodes directly (no proxy), and no peer may dial them (the suite
        proxies leaf links to single servers only: cluster the country sorting last).
        Such a country runs two hub processes: ``a`` (the config's state directory and
        port) starts first and takes the lease, ``b`` then stands by."""
        from tests.faults.proxy import TcpProxy

        deployment = await asyncio.to_thread(
            create_deployment,
            base,
            AGENCIES,
            passphrase=PASSPHRASE,
            kdf=KdfProfile.INTERACTIVE,
            liaison_password=None,
            layout=Layout(nats_clusters=clusters),
        )
        plan = deployment.plan
        (base / "logs").mkdir(exist_ok=True)
        leaf_proxies: dict[tuple[str, str], TcpProxy] = {}
        nodes: dict[str, tuple[NatsServer, ...]] = {}
        for country in plan.countries:
            ports: dict[str, int] = {}
            for peer in plan.peers(country):
                if peer < country:  # the later country dials the earlier one's leaf port
                    listener_port = plan.node(peer).leaf_port
                    assert listener_port is not None
                    proxy = TcpProxy(listener_port)
                    await proxy.start()
                    leaf_proxies[(country, peer)] = proxy
                    ports[peer] = proxy.port
            sees = _dialer_plan(plan, country, ports)
            nodes[country] = tuple(
                NatsServer(sees, country, index=i) for i in range(1, plan.cluster_size(country) + 1)
            )
        servers = {country: members[0] for country, members in nodes.items()}
        hub_proxies: dict[str, TcpProxy] = {}
        hubs: dict[str, HubProcess] = {}
        standbys: dict[str, tuple[HubProcess, ...]] = {}
        for country in plan.countries:
            if plan.cluster_size(country) > 1:
                hubs[country], standbys[country] = _two_hub_processes(deployment, country)
                continue
            proxy = TcpProxy(plan.node(country).client_port)
            await proxy.start()
            hub_proxies[country] = proxy
            config = deployment.hub_config(country)
            text = config.read_text(encoding="utf-8")
            direct = plan.client_url(country)
            assert direct in text
            proxied = base / "hubs" / f"{country}-proxied.toml"
            proxied.write_text(
                text.replace(direct, f"tls://127.0.0.1:{proxy.port}"), encoding="utf-8"
            )
            proxied.chmod(0o600)
            hubs[country] = HubProcess(
                deployment, country, proxied, base / "logs" / f"hub-{country}.log"
            )
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S))
        fed = cls(
            base,
            deployment,
            servers,
            hubs,
            dict(leaf_proxies),
            dict(hub_proxies),
            http,
            nodes,
            standbys=standbys,
        )
        try:
            await start_servers(fed.every_server())
            await wait_links_up(servers, 30.0)
            for hub in hubs.values():
                hub.start()
            await fed.wait_ready(60.0)
            for hub in fed.every_standby():
                hub.start()
            await fed.wait_ready(60.0)
            for agency in AGENCIES:
                fed.agencies[agency] = await fed.connect_agency(agency)
        except BaseException:
            await fed.stop()
            raise
        return fed

    async def connect_agency(self, agency: str, clock: Callable[[], int] = wall_ms) -> AgencyClient:
        profile = load_profile(self.deployment.profile(agency))
        identity = await asyncio.to_thread(load_identity_for, profile, PASSPHRASE)
        handled = self.base / "handled" / f"{agency.replace('/', '-')}.sqlite"
        handled.parent.mkdir(exist_ok=True)
        return await AgencyClient.connect(profile, identity, clock, handled_path=handled)

    async def stop(self) -> list[str]:
        """Stop everything; returns the hubs that did not exit cleanly."""
        unclean: list[str] = []
        for agency, client in list(self.agencies.items()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=10)
            self.agencies.pop(agency, None)
        # standbys first, as the runbook says: the lease does not move
        active = {await self.active(c) for c in self.standbys}
        for hub in sorted(self.every_hub(), key=lambda h: h in active):
            code = await asyncio.to_thread(hub.stop)
            if code not in (0, None):
                unclean.append(f"hub {hub.name} exited {code}")
        for server in self.every_server():
            await server.stop()
        for proxy in (*self.leaf_proxies.values(), *self.hub_proxies.values()):
            await proxy.stop()  # type: ignore[attr-defined]
        await self.http.close()
        return unclean

    def every_server(self) -> tuple[NatsServer, ...]:
        return tuple(s for members in self.nodes.values() for s in members)

    def processes(self, country: str) -> tuple[HubProcess, ...]:
        """Every hub process of ``country``: one, or ``a`` and ``b``."""
        return (self.hubs[country], *self.standbys.get(country, ()))

    def every_standby(self) -> tuple[HubProcess, ...]:
        return tuple(h for hubs in self.standbys.values() for h in hubs)

    def every_hub(self) -> tuple[HubProcess, ...]:
        return tuple(h for country in self.hubs for h in self.processes(country))

    async def stream_leader(self, country: str, stream: str, account: str = "IXB") -> NatsServer:
        """The node of ``country``'s cluster that leads ``stream`` now (asked of any live node)."""
        for server in self.nodes[country]:
            if not server.running:
                continue
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                jsz = await server.monitor("jsz?accounts=true&streams=true")
                for acc in jsz.get("account_details") or ():
                    if acc.get("name") != account:
                        continue
                    for info in acc.get("stream_detail") or ():
                        if info.get("name") == stream:
                            leader = (info.get("cluster") or {}).get("leader")
                            for candidate in self.nodes[country]:
                                if candidate.node.name == leader:
                                    return candidate
        raise RuntimeError(f"no leader of {account}/{stream} in {country}")

    async def stream_replicas(self, country: str) -> dict[str, int]:
        """Every stream of ``country`` (all accounts) → its configured number of replicas."""
        jsz = await self.nodes[country][0].monitor("jsz?accounts=true&streams=true&config=true")
        return {
            f"{acc.get('name')}/{info.get('name')}": int(
                (info.get("config") or {}).get("num_replicas") or 1
            )
            for acc in jsz.get("account_details") or ()
            for info in acc.get("stream_detail") or ()
        }

    # --- health -----------------------------------------------------------------

    async def process_health(self, hub: HubProcess) -> dict[str, object] | None:
        try:
            async with self.http.get(f"{hub.url}/healthz") as resp:
                data: dict[str, object] = await resp.json(content_type=None)
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def active(self, country: str) -> HubProcess | None:
        """The country's one process that says it is active (None: none, or several)."""
        found = [
            hub
            for hub in self.processes(country)
            if hub.alive and ((await self.process_health(hub)) or {}).get("role") == "active"
        ]
        return found[0] if len(found) == 1 else None

    async def health(self, country: str) -> dict[str, object] | None:
        """What the country's active process shows (its first process's, when none is)."""
        return await self.process_health(await self.active(country) or self.hubs[country])

    async def ready(self, country: str) -> bool:
        """The country answers: one process active and ready with every link up and every
        peer's directory, each other one standing by (connected, following the log)."""
        started = [hub for hub in self.processes(country) if hub.proc is not None]
        healths = [await self.process_health(hub) for hub in started]
        active = [h for h in healths if h and h.get("role") == "active"]
        standing_by = [h for h in healths if h and h.get("role") == "standby" and h.get("nats")]
        if len(active) != 1 or len(standing_by) != len(started) - 1:
            return False
        health = active[0]
        if not health.get("ready") or not health.get("nats"):
            return False
        links = health.get("links")
        directories = health.get("directories")
        return (
            isinstance(links, dict)
            and all(links.values())
            and isinstance(directories, dict)
            and all(v is not None for v in directories.values())
        )

    async def wait_ready(self, timeout: float) -> float:
        """Seconds until every country is ready (:meth:`ready`); raises after ``timeout``."""
        start = time.monotonic()
        pending = set(self.hubs)
        while pending:
            for country in list(pending):
                for hub in self.processes(country):
                    if hub.proc is not None and not hub.alive:
                        raise RuntimeError(f"hub {hub.name} exited:\n{hub.log_tail()}")
                if await self.ready(country):
                    pending.discard(country)
            if not pending:
                break
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"hubs not ready after {timeout:g} s: {sorted(pending)}")
            await asyncio.sleep(0.2)
        return time.monotonic() - start

    # --- audit ------------------------------------------------------------------

    async def audit_problems(self, grace_ms: int) -> list[str]:
        """Every log verifies, no witness alarm, every pair reconciles; what does not.

        A country's log is its active process's; a standby's log must verify too and be
        the active one's as it was at some size (the same leaves, the same root).
        """
        problems: list[str] = []
        logs: dict[str, tuple[Path, tuple[Path, ...]]] = {}
        for country in self.deployment.countries:
            active = await self.active(country)
            if active is None:
                problems.append(f"{country} has no one active hub process")
                active = self.hubs[country]
            others = tuple(h.state for h in self.processes(country) if h is not active)
            logs[country] = (active.state, others)
        problems += await asyncio.to_thread(_audit_problems, logs, grace_ms)
        return problems


def _two_hub_processes(
    deployment: Deployment, country: str
) -> tuple[HubProcess, tuple[HubProcess, ...]]:
    """Instance ``a`` with the config's state directory and HTTP port, and instance ``b``
    as on another host: its own state and trust directories and port."""
    config = deployment.hub_config(country)
    logs = deployment.base / "logs"
    a = HubProcess(deployment, country, config, logs / f"hub-{country}-a.log", instance="a")
    other = deployment.base / "standby" / country
    b = HubProcess(
        deployment,
        country,
        config,
        logs / f"hub-{country}-b.log",
        instance="b",
        overrides={
            "IXB_HUB__HUB__STATE_DIR": str(other / "state"),
            "IXB_HUB__HUB__TRUST_DIR": str(other / "trust"),
            "IXB_HUB__HTTP__PORT": str(free_ports()("127.0.0.1")),
        },
    )
    return a, (b,)


def _reconcile_problems(
    log_: AuditLog, store: HubStore, country: str, peers: list[str], *, grace_ms: int
) -> list[str]:
    problems: list[str] = []
    now = wall_ms()
    for peer in peers:
        report = reconcile_logs(log_, store, country, peer, now_ms=now, grace_ms=grace_ms)
        if not report.clean:
            problems.append(
                f"{country}↔{peer} do not reconcile: {len(report.only_here)} only here,"
                f" {len(report.only_there)} only there,"
                f" {len(report.different)} differ"
                f" (e.g. {[(i.msg_id, i.event) for i in report.only_here[:2]]}"
                f" {[(i.msg_id, i.event) for i in report.only_there[:2]]}"
                f" {report.different[:2]})"
            )
    return problems


def _log_problems(log_: AuditLog, name: str) -> list[str]:
    problems: list[str] = []
    try:
        log_.verify_storage()
    except IxbError as exc:
        problems.append(f"{name} audit log does not verify: {exc.detail}")
    for origin, _at, detail in log_.alarms():
        problems.append(f"{name} raised a witness alarm about {origin}: {detail}")
    return problems


def _audit_problems(logs: dict[str, tuple[Path, tuple[Path, ...]]], grace_ms: int) -> list[str]:
    """:meth:`Federation.audit_problems` over the files: country → (the active process's
    state directory, the others')."""
    problems: list[str] = []
    for country, (state, others) in logs.items():
        peers = [c for c in logs if c != country]
        log_ = AuditLog(state / "audit.sqlite")
        try:
            problems += _log_problems(log_, country)
            for other in others:
                problems += _standby_problems(log_, other, country)
            with _peer_entries(state, others, peers) as store:
                problems += _reconcile_problems(log_, store, country, peers, grace_ms=grace_ms)
        finally:
            log_.close()
    return problems


def _standby_problems(active: AuditLog, state: Path, country: str) -> list[str]:
    standby = AuditLog(state / "audit.sqlite")
    name = f"{country}'s standby ({state})"
    try:
        problems = _log_problems(standby, name)
        size = standby.size
        if size > active.size or (size and standby.root() != active.root(size)):
            problems.append(
                f"{name} log of {size} leaves is not the active one's at that size"
                f" ({active.size} leaves)"
            )
        return problems
    finally:
        standby.close()


@contextlib.contextmanager
def _peer_entries(state: Path, others: tuple[Path, ...], peers: list[str]) -> Iterator[HubStore]:
    """The store holding what the peers shared with the country: the active process's,
    or, with several processes, theirs together in a scratch store. What the peers shared
    before a takeover is in the store of the process active then (docs/operations/
    cluster.md says so to operators); an auditor reconciles over both."""
    if not others:
        store = HubStore(state / "hub.sqlite")
        try:
            yield store
        finally:
            store.close()
        return
    with tempfile.TemporaryDirectory(prefix="ixb-peer-entries-") as tmp:
        merged = HubStore(Path(tmp) / "hub.sqlite")
        try:
            for each in (state, *others):
                store = HubStore(each / "hub.sqlite")
                try:
                    for origin in peers:
                        merged.save_peer_entries(origin, store.peer_entries(origin))
                finally:
                    store.close()
            yield merged
        finally:
            merged.close()


# --- traffic --------------------------------------------------------------------


@dataclass
class Sent:
    sender: str
    type: str
    to: tuple[str, ...]
    sent_at: float
    acked_at: float | None = None
    unknown: bool = False
    """The SDK reported the outcome unknown at least once (then resent)."""
    refused: str | None = None
    """The code of a signed rejection the sender received."""
    delivered: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Counts:
    sent: int = 0
    acknowledged: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    refused: int = 0
    unknown_resent: int = 0
    phantom: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


Flow = Callable[["Traffic"], Awaitable[None]]


class Traffic:
    """Steady traffic of every message type, with answers, counted end to end."""

    def __init__(self, fed: Federation, *, rate: float = 8.0, max_in_flight: int = 64) -> None:
        self.fed = fed
        self.rate = rate
        self.messages: dict[tuple[str, bytes], Sent] = {}
        self.phantoms: list[tuple[str, str, bytes, float]] = []
        """Handed to an application before its send returned (so not counted yet), or never
        sent by anyone: (recipient, sender, id, when); resolved by :meth:`_resolve`."""
        self.hub_deliveries: dict[tuple[str, str, bytes], int] = defaultdict(int)
        self.refusals_seen: dict[str, int] = defaultdict(int)
        self.lost_examples: list[str] = []
        self.paused: set[str] = set()
        """Agencies offline: they neither send nor read."""
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._stop_sending = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._rng = random.Random(20261129)
        self._bodies = example_bodies(wall_ms())

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        for agency in self.fed.agencies:
            self._start_reader(agency)
        self.resume_sending()

    def resume_sending(self) -> None:
        self._stop_sending.clear()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_loop())

    async def stop_sending(self) -> None:
        self._stop_sending.set()
        if self._sender is not None:
            await self._sender

    async def close(self) -> None:
        await self.stop_sending()
        for task in list(self._tasks):
            task.cancel()
        for task in self._readers.values():
            task.cancel()
        await asyncio.gather(*self._tasks, *self._readers.values(), return_exceptions=True)

    def _start_reader(self, agency: str) -> None:
        self._readers[agency] = asyncio.create_task(self._read_loop(agency))

    async def take_offline(self, agency: str) -> None:
        """The agency's machine goes away: its client closes (what it held goes back)."""
        self.paused.add(agency)
        reader = self._readers.pop(agency)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        client = self.fed.agencies.pop(agency)
        await client.close()

    async def bring_online(self, agency: str) -> None:
        self.fed.agencies[agency] = await self.fed.connect_agency(agency)
        self.paused.discard(agency)
        self._start_reader(agency)

    # --- sending --------------------------------------------------------------------

    async def _send_loop(self) -> None:
        flows = [Traffic.alert, Traffic.doc_check, Traffic.person_query, Traffic.mla_request]
        period = 1.0 / self.rate
        n = 0
        while not self._stop_sending.is_set():
            flow = flows[n % len(flows)]
            n += 1
            self.spawn(flow(self))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_sending.wait(), timeout=period)

    async def burst(self, count: int) -> None:
        """``count`` alerts at once (a batch the hub is settling when a fault hits)."""
        for _ in range(count):
            self.spawn(self.alert())
        await asyncio.sleep(0)

    def spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            async with self._slots:
                await coro

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, sender: str, body: Body, to: list[str], **kw: object) -> bytes | None:
        """Send and count; an unknown outcome is resent (same bytes) until confirmed."""
        if sender in self.paused:
            return None
        client = self.fed.agencies.get(sender)
        if client is None:
            return None
        started = time.monotonic()
        try:
            msg_id = await client.send(body, to, **kw)  # type: ignore[arg-type]
        except UnknownOutcomeError as exc:
            record = self._record(sender, exc.message_id, body, to, started)
            record.unknown = True
            await self._resend_until_known(sender, exc.sealed, record)
            return exc.message_id
        except (IxbError, nats.errors.Error, TimeoutError) as exc:
            # refused before it left (never stored): not acknowledged, not counted as sent
            log.info("send_failed_before_publish", sender=sender, error=str(exc))
            return None
        record = self._record(sender, msg_id, body, to, started)
        record.acked_at = time.monotonic()
        return msg_id

    def _record(
        self, sender: str, msg_id: bytes, body: Body, to: list[str], started: float
    ) -> Sent:
        record = Sent(sender, body.TYPE, tuple(to), started)
        self.messages[(sender, msg_id)] = record
        return record

    async def _resend_until_known(self, sender: str, sealed: bytes, record: Sent) -> None:
        while True:
            client = self.fed.agencies.get(sender)
            if client is not None:
                try:
                    await client.resend(sealed)
                except UnknownOutcomeError:
                    pass
                except (IxbError, nats.errors.Error, TimeoutError) as exc:
                    log.info("resend_failed", sender=sender, error=str(exc))
                else:
                    record.acked_at = time.monotonic()
                    return
            await asyncio.sleep(1.0)

    # the flows: who sends what to whom, as in the demo

    async def alert(self) -> None:
        to = ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"]
        if self._rng.random() < 0.5:
            await self.send("THA/DSI-ATHD", self._bodies["alert"], to, case_ref="THA-DSI-2026-0412")
        else:
            await self.send("MMR/MOHA-ATTU", self._bodies["alert"], ["THA/DSI-ATHD"])

    async def doc_check(self) -> None:
        body = DocVerifyRequest(mrz=PASSPORT, purpose=DocPurpose.BORDER_CHECK, checkpoint="SADAO")
        await self.send("THA/IMMIGRATION", body, ["MYS/IMMIGRATION"])

    async def person_query(self) -> None:
        await self.send("THA/DSI-ATHD", self._bodies["person.query"], ["MMR/MOHA-ATTU"])

    async def mla_request(self) -> None:
        await self.send("THA/OAG", self._bodies["mla.request"], ["MYS/AGC"])

    # --- receiving ------------------------------------------------------------------

    async def _read_loop(self, agency: str) -> None:
        while True:
            client = self.fed.agencies.get(agency)
            if client is None:
                return
            try:
                items = await client.fetch(timeout=0.5)
            except (nats.errors.Error, TimeoutError, IxbError):
                await asyncio.sleep(0.5)
                continue
            for item in items:
                if isinstance(item, Incoming):
                    await self._handle(agency, client, item)

    async def _handle(self, agency: str, client: AgencyClient, item: Incoming) -> None:
        now = time.monotonic()
        sender = item.header.sender
        key = (sender, item.header.id)
        if item.sender.is_hub:
            self.hub_deliveries[(agency, sender, item.header.id)] += 1
        else:
            record = self.messages.get(key)
            if record is None or agency not in record.to:
                self.phantoms.append((agency, sender, item.header.id, now))
            else:
                record.delivered.setdefault(agency, []).append(now)
        if isinstance(item.body, Receipt):
            if item.body.status is ReceiptStatus.REJECTED:
                self.refusals_seen[item.body.code or "?"] += 1
                for for_id in item.body.ids:
                    refused = self.messages.get((agency, for_id))
                    if refused is not None:
                        refused.refused = item.body.code
        else:
            self._answer(agency, item)
        with contextlib.suppress(nats.errors.Error):
            await item.ack()

    def _answer(self, agency: str, item: Incoming) -> None:
        """What the officer or the responder does with it, sent in the background."""
        t = item.header.type
        reply: Body | None = None
        if t == "alert":
            self.spawn(self._read_receipt(agency, item))
            return
        if t == "doc.verify.request":
            reply = self._bodies["doc.verify.response"]
            assert isinstance(reply, DocVerifyResponse)
        elif t == "person.query":
            reply = self._bodies["person.result"]
        elif t == "person.result":
            reply = self._bodies["followup.request"]
        elif t == "followup.request":
            reply = self._bodies["followup.decision"]
        elif t == "mla.request":
            reply = MlaStatus(status=MlaStatusCode.RECEIVED)
        if reply is not None:
            self.spawn(self._reply(agency, item, reply))

    async def _reply(self, agency: str, item: Incoming, body: Body) -> None:
        await self.send(
            agency,
            body,
            [str(item.sender)],
            in_reply_to=item.header.id,
            case_ref=item.header.case_ref,
        )

    async def _read_receipt(self, agency: str, item: Incoming) -> None:
        body = Receipt(for_id=item.header.id, status=ReceiptStatus.READ, by=agency, at_ms=wall_ms())
        await self.send(agency, body, [str(item.sender)], in_reply_to=item.header.id)

    # --- accounting -----------------------------------------------------------------

    def _resolve(self) -> None:
        """Deliveries that overtook their send's return (a publish confirmed only on a later
        attempt) count once the send returned; what nobody sent stays a phantom."""
        unresolved = []
        for agency, sender, msg_id, when in self.phantoms:
            record = self.messages.get((sender, msg_id))
            if record is not None and agency in record.to:
                record.delivered.setdefault(agency, []).append(when)
            else:
                unresolved.append((agency, sender, msg_id, when))
        self.phantoms = unresolved

    def settled(self, since: float = 0.0) -> bool:
        """Every message sent since ``since`` is confirmed and delivered (or refused)."""
        self._resolve()
        for record in self.messages.values():
            if record.sent_at < since:
                continue
            if record.acked_at is None:
                return False
            if record.refused is None and any(r not in record.delivered for r in record.to):
                return False
        return True

    def counts(self, since: float, until: float) -> Counts:
        self._resolve()
        c = Counts()
        for key, record in self.messages.items():
            if not since <= record.sent_at < until:
                continue
            c.sent += 1
            c.unknown_resent += record.unknown
            if record.acked_at is None:
                c.pending += 1
                continue
            c.acknowledged += 1
            if record.refused is not None:
                c.refused += 1
                c.duplicates += sum(len(v) for v in record.delivered.values())
                continue
            for recipient in record.to:
                times = record.delivered.get(recipient, [])
                if not times:
                    c.lost += 1
                    if len(self.lost_examples) < 5:
                        self.lost_examples.append(
                            f"{record.type} {record.sender} → {recipient} {key[1].hex()}"
                        )
                else:
                    c.delivered += 1
                    c.duplicates += len(times) - 1
        c.duplicates += sum(n - 1 for n in self.hub_deliveries.values() if n > 1)
        c.phantom = len(self.phantoms)
        return c

    def drained_at(self, before: float) -> float | None:
        """When the last message acknowledged before ``before`` reached its last recipient."""
        last: float | None = before
        for record in self.messages.values():
            if record.acked_at is None or record.acked_at >= before or record.refused:
                continue
            for recipient in record.to:
                times = record.delivered.get(recipient)
                if not times:
                    return None
                last = max(last or 0.0, times[0])
        return last


def format_id(msg_id: bytes) -> str:
    return format_message_id(msg_id)


def dump_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def principal(text: str) -> Principal:
    return parse_agency(text)
