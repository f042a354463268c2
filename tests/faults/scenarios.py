"""The faults, one scenario each, and what is checked after every one of them.

A scenario runs on a live :class:`~tests.faults.harness.Federation` under
steady :class:`~tests.faults.harness.Traffic`: some traffic first, then the
fault and its end ("heal": the process restarted or resumed, the link back,
the disk writable), traffic after it, then a settling time. Then:

- every message acknowledged to its sender was handed to each recipient's
  application exactly once, or refused with a signed receipt the sender got
  (only where the scenario expects that refusal code);
- nothing was handed over that nobody sent; no hub receipt twice;
- every hub is ready again by itself (the one service-manager step a
  scenario takes is restarting a killed process, as ``Restart=always`` does);
  a country with two hub processes has one active and ready, the other
  standing by;
- every audit log verifies (a standby's too, and it is the active one's log
  as it was at some size), no witness raised an alarm, and every pair of
  hubs reconciles (each side logged what the other did);
- what the scenario itself expects (:attr:`Scenario.expect`).

``recovery_s`` is the time from the heal until every message acknowledged
before it had reached all its recipients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.natsd import NatsServer
from tests.faults.harness import Federation, HubProcess, Traffic
from tests.faults.proxy import TcpProxy
from transport.clock import wall_ms

Inject = Callable[[Federation, Traffic], Awaitable[float]]
"""Cause the fault, end it; returns the monotonic time it ended."""
Expect = Callable[[Federation], Awaitable[list[str]]]
"""Checked once every hub is ready again: what went wrong, beyond the common checks."""

SETTLE_TIMEOUT_S = 120.0
AUDIT_TIMEOUT_S = 60.0
RECONCILE_GRACE_MS = 5_000
"""Entries younger than this may still be on their way to the peer."""
"""A receipt sealed, published and not recorded is sent again and recorded by this time."""


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    inject: Inject
    fast: bool = False
    """Part of ``make test`` (seconds, not minutes)."""
    refusals: frozenset[str] = frozenset()
    """Rejection codes this scenario is expected to cause (signed, reaching the sender)."""
    expect: Expect | None = None


@dataclass
class Result:
    name: str
    what: str
    counts: dict[str, int]
    recovery_s: float | None
    ready_s: float
    problems: list[str] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)
    measured: dict[str, object] = field(default_factory=dict)
    """What the scenario measured besides the counts (a takeover's time, a new leader)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "what": self.what,
            **self.counts,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "ready_s": round(self.ready_s, 2),
            "refusals": self.refusals,
            "measured": self.measured,
            "ok": self.ok,
            "problems": self.problems,
        }


# --- the faults -------------------------------------------------------------------


def hub_killed(country: str, down_s: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        await traffic.burst(40)
        await asyncio.sleep(0.05)  # the burst is being settled
        fed.hubs[country].kill()
        await asyncio.sleep(down_s)
        fed.hubs[country].start()
        return time.monotonic()

    return inject


def server_killed(country: str, down_s: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        server = fed.servers[country]
        await traffic.burst(20)
        await asyncio.sleep(0.05)
        await server.kill()
        await asyncio.sleep(down_s)
        await server.start()
        return time.monotonic()

    return inject


def upgraded(country: str, down_s: float) -> Inject:
    """The runbook's upgrade (docs/operations/README.md): stop the hub, then its server
    (SIGTERM both), ``down_s`` to install, start the server, then the hub."""

    async def inject(fed: Federation, traffic: Traffic) -> float:
        await traffic.burst(20)
        await asyncio.to_thread(fed.hubs[country].stop)
        await fed.servers[country].stop()
        await asyncio.sleep(down_s)
        await fed.servers[country].start()
        fed.hubs[country].start()
        return time.monotonic()

    return inject


def hub_frozen(country: str, seconds: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        fed.hubs[country].freeze()
        try:
            await asyncio.sleep(seconds)
        finally:
            fed.hubs[country].thaw()
        return time.monotonic()

    return inject


def server_frozen(country: str, seconds: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        pid = fed.servers[country].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return time.monotonic()

    return inject


def link_cut(dialer: str, listener: str, seconds: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        proxy = fed.leaf_proxies[(dialer, listener)]
        assert isinstance(proxy, TcpProxy)
        await proxy.cut()
        try:
            await asyncio.sleep(seconds)
            up = await fed.servers[dialer].leaf_accounts()
            if any(listener in account for account in up):
                raise AssertionError(f"{dialer}'s link to {listener} stayed up through the cut")
        finally:
            await proxy.heal()
        return time.monotonic()

    return inject


def replies_dropped(country: str, seconds: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        proxy = fed.hub_proxies[country]
        assert isinstance(proxy, TcpProxy)
        await traffic.burst(20)
        lost = await proxy.drop_replies(seconds)
        if lost == 0:
            raise AssertionError(f"nothing the server sent to {country}'s hub was dropped")
        return time.monotonic()

    return inject


def agency_offline(agency: str, seconds: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        await traffic.take_offline(agency)
        await asyncio.sleep(seconds)
        await traffic.bring_online(agency)
        return time.monotonic()

    return inject


def disk_full(country: str, seconds: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        hub = fed.hubs[country]
        hub.limit_file_size(0)
        try:
            await asyncio.sleep(seconds)
            health = await fed.health(country)
            if health is not None and health.get("ready"):
                raise AssertionError(f"{country}'s hub says ready while it cannot write")
        finally:
            hub.limit_file_size(None)
        return time.monotonic()

    return inject


def clock_skewed(ahead: dict[str, int], seconds: float) -> Inject:
    async def inject(fed: Federation, traffic: Traffic) -> float:
        for agency, skew_ms in ahead.items():
            fed.agencies[agency].clock = lambda skew=skew_ms: wall_ms() + skew
        try:
            await asyncio.sleep(seconds)
        finally:
            for agency in ahead:
                fed.agencies[agency].clock = wall_ms
        return time.monotonic()

    return inject


async def _killed_at_once(
    fed: Federation, traffic: Traffic, country: str, stream: str
) -> tuple[NatsServer, HubProcess, float]:
    """A burst being settled, then SIGKILL for the node leading ``stream`` and the
    country's active hub process: (the node, the process, when)."""
    hub = await fed.active(country)
    if hub is None:
        raise AssertionError(f"{country} has no one active hub process to kill")
    await traffic.burst(20)
    await asyncio.sleep(0.05)
    node = await fed.stream_leader(country, stream)
    await node.kill()
    hub.kill()
    fed.measured["killed"] = {"node": node.node.name, "hub": hub.name}
    return node, hub, time.monotonic()


async def _watch_failover(fed: Federation, country: str, stream: str, node: NatsServer) -> None:
    with contextlib.suppress(RuntimeError):
        leader = await fed.stream_leader(country, stream)
        if leader is not node:
            fed.failovers[f"{country}/{stream}"] = leader.node.name
            fed.measured[f"{stream}_leader"] = leader.node.name


def cluster_node_killed(country: str, stream: str, hub_down_s: float, node_down_s: float) -> Inject:
    """SIGKILL the node of ``country``'s cluster that leads ``stream`` and, at once, the
    country's active hub process; that process is back after ``hub_down_s`` (while the
    cluster elects new leaders; it takes its lease back, which has not lapsed), the
    node after ``node_down_s``."""

    async def inject(fed: Federation, traffic: Traffic) -> float:
        node, hub, killed = await _killed_at_once(fed, traffic, country, stream)
        await asyncio.sleep(hub_down_s)
        hub.start()
        while time.monotonic() - killed < node_down_s:
            await _watch_failover(fed, country, stream, node)
            await asyncio.sleep(0.5)
        await node.start()
        return time.monotonic()

    return inject


def standby_takeover(country: str, stream: str, hub_down_s: float, node_down_s: float) -> Inject:
    """SIGKILL the node leading ``stream`` and the country's active hub process at once; the
    standby must take over by itself (the lease lapses). The node is back after
    ``node_down_s``, the killed process after ``hub_down_s`` (it stands by)."""

    async def inject(fed: Federation, traffic: Traffic) -> float:
        node, hub, killed = await _killed_at_once(fed, traffic, country, stream)
        others = [h for h in fed.processes(country) if h is not hub]
        node_back = False
        while time.monotonic() - killed < hub_down_s:
            if "takeover_s" not in fed.measured:
                for other in others:
                    health = await fed.process_health(other)
                    if health and health.get("role") == "active" and health.get("ready"):
                        fed.measured["takeover_s"] = round(time.monotonic() - killed, 1)
                        fed.measured["active"] = other.name
            if not node_back:
                await _watch_failover(fed, country, stream, node)
                if time.monotonic() - killed >= node_down_s:
                    await node.start()
                    node_back = True
            await asyncio.sleep(0.2)
        if not node_back:
            await node.start()
        if "takeover_s" not in fed.measured:
            raise AssertionError(f"no standby of {country} took over within {hub_down_s:g} s")
        aside = len(_set_aside(hub))
        hub.start()
        healed = time.monotonic()
        # back, it stands by and follows the stream (a log holding leaves it never
        # copied is set aside first)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while not _following(await fed.process_health(hub)):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
        fed.measured["log_set_aside"] = len(_set_aside(hub)) > aside
        return healed

    return inject


def _following(health: dict[str, object] | None) -> bool:
    if health is None:
        return False
    return health.get("role") == "standby" and health.get("audit_copied") is not None


def _set_aside(hub: HubProcess) -> list[Path]:
    return [
        p
        for p in hub.state.glob("audit.sqlite.diverged-*")
        if not p.name.endswith(("-wal", "-shm"))
    ]


def took_over(country: str, stream: str) -> Expect:
    """The standby that took over is still the active one, the killed process stands by,
    and ``stream`` was led by another node while its leader was dead."""

    async def expect(fed: Federation) -> list[str]:
        problems = []
        active = await fed.active(country)
        if active is None or active.name != fed.measured.get("active"):
            problems.append(
                f"{country}'s active process is {active and active.name},"
                f" not the one that took over ({fed.measured.get('active')})"
            )
        killed = fed.measured.get("killed")
        if isinstance(killed, dict) and fed.measured.get(f"{stream}_leader") in (
            None,
            killed["node"],
        ):
            problems.append(f"{country}'s {stream} did not fail over to another node")
        return problems

    return expect


MINUTE_MS = 60_000

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "hub-kill",
        "SIGKILL THA's hub while it settles a burst; restarted 1 s later",
        hub_killed("THA", 1.0),
        fast=True,
    ),
    Scenario(
        "nats-kill-5s",
        "SIGKILL THA's nats-server, restarted after 5 s",
        server_killed("THA", 5.0),
        fast=True,
    ),
    Scenario(
        "upgrade",
        "THA upgraded as the runbook says: hub, then server stopped, 3 s, server, then hub",
        upgraded("THA", 3.0),
        fast=True,
    ),
    Scenario(
        "replies-dropped-4s",
        "THA's hub connection loses everything the server sends for 4 s",
        replies_dropped("THA", 4.0),
        fast=True,
    ),
    Scenario(
        "agency-offline",
        "MYS/RMP-ATIPSOM offline for 8 s (alerts to it wait in its inbox)",
        agency_offline("MYS/RMP-ATIPSOM", 8.0),
        fast=True,
    ),
    Scenario(
        "disk-full",
        "THA's hub cannot write any file for 6 s",
        disk_full("THA", 6.0),
        fast=True,
    ),
    Scenario(
        "clock-skew",
        "THA/OAG's clock 3 min ahead (accepted), MMR/MOHA-ATTU's 10 min ahead (refused)",
        clock_skewed({"THA/OAG": 3 * MINUTE_MS, "MMR/MOHA-ATTU": 10 * MINUTE_MS}, 4.0),
        fast=True,
        refusals=frozenset({"ixb.E_CLOCK_SKEW"}),
    ),
    Scenario(
        "nats-kill-35s",
        "SIGKILL MYS's nats-server, restarted after 35 s",
        server_killed("MYS", 35.0),
    ),
    Scenario("hub-freeze-20s", "SIGSTOP MYS's hub for 20 s", hub_frozen("MYS", 20.0)),
    Scenario("nats-freeze-20s", "SIGSTOP THA's nats-server for 20 s", server_frozen("THA", 20.0)),
    Scenario(
        "link-cut-30s",
        "the THA-MYS border link cut for 30 s (THA-MMR and MYS-MMR stay up)",
        link_cut("THA", "MYS", 30.0),
    ),
)

CLUSTERED = {"THA": 3}
"""The federation of :data:`CLUSTER_SCENARIOS`: THA runs three nats-servers, R3 streams,
and two hub processes (one active, one standing by)."""

CLUSTER_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "cluster-failover",
        "THA clustered: SIGKILL the node leading INGRESS and THA's active hub process;"
        " that process back after 2 s (the lease still its own), node after 12 s",
        cluster_node_killed("THA", "INGRESS", 2.0, 12.0),
        fast=True,
    ),
    Scenario(
        "standby-takeover",
        "THA clustered: SIGKILL the node leading INGRESS and THA's active hub process;"
        " the standby takes over, node back after 12 s, killed process after 20 s",
        standby_takeover("THA", "INGRESS", 20.0, 12.0),
        fast=True,
        expect=took_over("THA", "INGRESS"),
    ),
)


# --- running one ------------------------------------------------------------------


async def run(
    fed: Federation,
    traffic: Traffic,
    scenario: Scenario,
    *,
    before_s: float = 2.0,
    after_s: float = 2.0,
    settle_timeout: float = SETTLE_TIMEOUT_S,
) -> Result:
    problems: list[str] = []
    fed.measured.clear()
    refused_before = dict(traffic.refusals_seen)
    start = time.monotonic()
    traffic.resume_sending()
    await asyncio.sleep(before_s)
    try:
        healed = await scenario.inject(fed, traffic)
    except AssertionError as exc:
        problems.append(f"the fault did not happen as planned: {exc}")
        healed = time.monotonic()
    await asyncio.sleep(after_s)
    await traffic.stop_sending()
    end = time.monotonic()
    try:
        ready_s = await fed.wait_ready(60.0)
    except RuntimeError as exc:
        problems.append(str(exc))
        ready_s = float("nan")
    deadline = time.monotonic() + settle_timeout
    while not traffic.settled(start) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls counts
        await asyncio.sleep(0.25)
    counts = traffic.counts(start, end)
    drained = traffic.drained_at(healed)
    recovery = None if drained is None else max(0.0, drained - healed)
    refusals = {
        code: n - refused_before.get(code, 0)
        for code, n in traffic.refusals_seen.items()
        if n > refused_before.get(code, 0)
    }
    counted = counts.as_dict()
    problems += [
        f"{counted[label]} {label}"
        for label in ("lost", "duplicates", "phantom", "pending")
        if counted[label]
    ]
    if counts.lost:
        problems.append(f"lost, e.g.: {'; '.join(traffic.lost_examples)}")
    unexpected = set(refusals) - scenario.refusals
    if unexpected:
        problems.append(f"unexpected refusals: { {c: refusals[c] for c in unexpected} }")
    if scenario.refusals and not counts.refused:
        problems.append(f"expected refusals {sorted(scenario.refusals)} never came")
    if counts.acknowledged == 0:
        problems.append("no traffic was acknowledged")
    if scenario.expect is not None:
        problems += await scenario.expect(fed)
    problems += await audit_settled(fed)
    return Result(
        scenario.name,
        scenario.what,
        counts.as_dict(),
        recovery,
        ready_s,
        problems,
        refusals,
        dict(fed.measured),
    )


def assert_passed(scenario: Scenario, result: Result) -> None:
    """A scenario's result as a test asserts it: nothing wrong, and the traffic it was
    meant to exercise did flow and drain."""
    c = result.counts
    assert result.ok, f"{scenario.what}: {c} recovery={result.recovery_s} {result.problems}"
    assert c["acknowledged"] > 0 and c["delivered"] >= c["acknowledged"] - c["refused"]
    assert result.recovery_s is not None


async def audit_settled(fed: Federation, timeout: float = AUDIT_TIMEOUT_S) -> list[str]:
    """The audit checks, retried until they pass or ``timeout`` (peers share every second)."""
    start = time.monotonic()
    while True:
        problems = await fed.audit_problems(RECONCILE_GRACE_MS)
        if not problems or time.monotonic() - start > timeout:
            return problems
        await asyncio.sleep(1.0)
