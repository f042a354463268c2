"""Scale: THA as a three-node nats-server cluster, and THA's hub with one ingress worker and two.

Three federations of THA and MYS (:mod:`bench.federation`: hubs as their own
processes, the load generator in this one), one after the other, each
measured the same way:

- ``single``: every country on one nats-server, ``[hub] workers = 1``: the
  reference every ratio divides by;
- ``clustered``: THA as three nats-servers (routes, streams kept as three
  replicas, so each JetStream write is acknowledged only once a quorum of two
  nodes has it); MYS stays one server;
- ``workers2``: as ``single``, with ``IXB_HUB__HUB__WORKERS=2`` for every hub.
  Only THA's hub feels it: workers are pull loops on a country's ``INGRESS``
  (what its own agencies send), and the traffic here enters at THA; MYS takes
  it on its one ``IN_THA`` loop whatever the setting;
- ``standby``: as ``single``, with THA's hub as two processes (``[hub]
  instance``): the active one, holding its lease and copying its audit
  leaves into ``AUDIT`` before each ack as always, and a standby following
  that stream into its own log on the same two cores.

Each federation runs three measures:

1. **End to end**, :mod:`bench.e2e`'s machinery at :data:`LEVELS` concurrent
   senders, the same count of 1 KiB alerts each: THA/DSI-ATHD seals and
   sends, both hubs verify, audit and route, MYS/RMP-ATIPSOM fetches,
   verifies and decrypts. Alerts received a second, and latency from sealing
   to the reader holding the plaintext.
2. **THA's hub draining a backlog.** End to end is the wrong measure of a hub:
   this process seals, sends, fetches and decrypts in one Python interpreter
   on the same two shared cores as both hubs and every nats-server, and is
   often the slowest part, so a faster hub barely moves the figure. Here
   :data:`BACKLOG` alerts are sealed first, then published as fast as
   JetStream takes them (publish and ack only, :data:`PUBLISHERS` at once);
   from the moment the last is stored, this process only reads THA's
   ``/metrics`` (every :data:`POLL_S`). The hub's figure is the messages it
   settled (``ixb_batch_messages_total``: the alerts, plus the few receipts
   MYS's hub sends back for them, one per batch) from then until it has been
   idle for :data:`IDLE_S`, divided by that time. Settling includes what the
   hub causes: relaying each alert to MYS and each receipt to its sender are
   JetStream writes it waits for, R3 ones on the cluster. Beside it, the CPU
   the hub process used over that time (:class:`CpuUse`: cores busy, and the
   share of the time its event loop ran and waited for a core), which says
   whether the hub was bound by its one interpreter, by waiting, or by a
   machine too busy to run it.

3. **One publish at a time**: :data:`PUBLISH_SAMPLES` sealed alerts published
   and acknowledged one after the other, p50 and p99: what storing one
   JetStream write costs, on the cluster acknowledged once two of the three
   nodes hold it.

Every configuration runs :data:`PASSES` times, in alternating order, each in a
fresh federation; each figure is the best of its passes (interference on a
shared machine only ever slows a run).

The ratios: clustered / single, workers2 / single and standby / single, throughput and latency,
per measure and level. No target: what a cluster costs and what a second
worker buys are findings to report, not promises (docs/performance.md, Scale).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from agency_client.sdk import DEFAULT_TTL_MS, AgencyClient
from bench import e2e
from bench.common import (
    alert_1k,
    batch_profiles,
    hub_batch_counters,
    latency_figures,
)
from bench.federation import Bench, running
from ixb.deployment import Layout
from protocols.envelope import seal_envelope
from protocols.identifiers import parse_agency
from protocols.keys import KdfProfile

SENDER, RECIPIENT, HUB = e2e.SENDER, e2e.RECIPIENT, "THA"
LEVELS = (16, 64)
MESSAGES = 1000
"""Alerts per end-to-end level, in every federation."""
SEND_SECONDS = 15.0
DRAIN_SECONDS = 20.0
BACKLOG = 3000
"""Alerts published for THA's hub to drain, per round."""
DRAIN_ROUNDS = 1
"""Drains per federation, after its end-to-end levels."""
PASSES = 2
"""Federations per configuration, started in alternating order."""
PUBLISH_SAMPLES = 300
"""Alerts published one at a time, for the time JetStream takes to store one."""
PUBLISHERS = 64
POLL_S = 0.05
IDLE_S = 0.5
"""THA's hub counts as idle once its settled count has not moved for this long."""
DRAIN_TIMEOUT_S = 60.0
QUIET_TIMEOUT_S = 10.0
CLUSTER_NODES = 3
WORKERS_ENV = "IXB_HUB__HUB__WORKERS"


@dataclass(frozen=True)
class Config:
    name: str
    tha_nodes: int = 1
    workers: int = 1
    standby: bool = False

    @property
    def layout(self) -> Layout:
        return Layout(nats_clusters={HUB: self.tha_nodes}) if self.tha_nodes > 1 else Layout()

    @property
    def hub_env(self) -> dict[str, str]:
        return {WORKERS_ENV: str(self.workers)} if self.workers != 1 else {}


SINGLE = Config("single")
CONFIGS = (
    SINGLE,
    Config("clustered", tha_nodes=CLUSTER_NODES),
    Config("workers2", workers=2),
    Config("standby", standby=True),
)


@dataclass(frozen=True)
class Sizes:
    levels: Sequence[int] = LEVELS
    messages: int = MESSAGES
    send_seconds: float = SEND_SECONDS
    drain_seconds: float = DRAIN_SECONDS
    backlog: int = BACKLOG
    drain_rounds: int = DRAIN_ROUNDS
    passes: int = PASSES
    publish_samples: int = PUBLISH_SAMPLES


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuUse:
    """A process's CPU use so far, from /proc: all its threads, and its main thread (the
    hub's event loop, which holds the GIL whenever Python runs) on a CPU and runnable but
    waiting for one."""

    cpu_s: float
    loop_running_s: float
    loop_waiting_s: float

    @classmethod
    def of(cls, pid: int) -> CpuUse | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            sched = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
        except OSError:
            return None
        # after the command, stat(5)'s field 3 (state) comes first: utime is 14, stime 15
        return cls(
            (int(stat[11]) + int(stat[12])) / CLOCK_TICKS,
            int(sched[0]) / 1e9,
            int(sched[1]) / 1e9,
        )

    @staticmethod
    def over(before: CpuUse | None, after: CpuUse | None, wall: float) -> dict[str, float | None]:
        """``hub_cpu_cores``: CPU seconds a second (1.0: one core busy throughout);
        ``hub_loop_running`` and ``hub_loop_waiting_cpu``: the share of the time the event
        loop ran, and was ready to run but had no core (a busy machine)."""
        if before is None or after is None or wall <= 0:
            return dict.fromkeys(("hub_cpu_cores", "hub_loop_running", "hub_loop_waiting_cpu"))
        return {
            "hub_cpu_cores": round((after.cpu_s - before.cpu_s) / wall, 2),
            "hub_loop_running": round((after.loop_running_s - before.loop_running_s) / wall, 2),
            "hub_loop_waiting_cpu": round((after.loop_waiting_s - before.loop_waiting_s) / wall, 2),
        }


def _settled(bench: Bench) -> float:
    return hub_batch_counters(bench.deployment)[HUB]["messages"]


async def _quiet(bench: Bench) -> None:
    """Until THA's hub has settled nothing new for ``IDLE_S`` (bounded)."""
    deadline = time.perf_counter() + QUIET_TIMEOUT_S
    last, since = await asyncio.to_thread(_settled, bench), time.perf_counter()
    while time.perf_counter() < deadline:
        await asyncio.sleep(POLL_S)
        now_settled = await asyncio.to_thread(_settled, bench)
        if now_settled != last:
            last, since = now_settled, time.perf_counter()
        elif time.perf_counter() - since >= IDLE_S:
            return


@dataclass
class _Publish:
    sealed: list[bytes]
    errors: int = 0
    next: int = 0


async def _publisher(client: AgencyClient, work: _Publish) -> None:
    while work.next < len(work.sealed):
        data = work.sealed[work.next]
        work.next += 1
        try:
            await client.resend(data)
        except Exception:  # noqa: BLE001 - counted and reported, the load goes on
            work.errors += 1


def _seal_backlog(client: AgencyClient, n: int, offset: int) -> list[bytes]:
    now = client.clock()
    public = client.keys.encryption_key(parse_agency(RECIPIENT), now)
    return [
        seal_envelope(
            sender=client.identity,
            recipients=[public],
            body=alert_1k(offset + i),
            now_ms=now,
            ttl_ms=DEFAULT_TTL_MS,
        )
        for i in range(n)
    ]


async def publish_acks(bench: Bench, sender: AgencyClient, n: int) -> dict[str, object]:
    """``n`` sealed alerts published one at a time: how long JetStream takes to store one.

    On the cluster a write is acknowledged once a quorum (two of three nodes) holds it; on
    one server once that server does. Sealed beforehand, so the time is the publish and its
    acknowledgement alone.
    """
    sealed = await asyncio.to_thread(_seal_backlog, sender, n, 0)
    await _quiet(bench)
    latencies, errors = [], 0
    for data in sealed:
        started = time.perf_counter()
        try:
            await sender.resend(data)
        except Exception:  # noqa: BLE001 - counted and reported, the measure goes on
            errors += 1
            continue
        latencies.append(time.perf_counter() - started)
    return {"samples": len(latencies), "errors": errors, **latency_figures(latencies)}


async def hub_drain(
    bench: Bench, senders: Sequence[AgencyClient], backlog: int, offset: int = 0
) -> dict[str, object]:
    """One round: ``backlog`` alerts published at once, THA's hub timed draining them."""
    work = _Publish(await asyncio.to_thread(_seal_backlog, senders[0], backlog, offset))
    await _quiet(bench)
    before_profile = await asyncio.to_thread(hub_batch_counters, bench.deployment)
    before = before_profile[HUB]["messages"]
    started = time.perf_counter()
    await asyncio.gather(*(_publisher(senders[i % len(senders)], work) for i in range(PUBLISHERS)))
    published = time.perf_counter()
    hub_pid = bench.pid(f"hub-{HUB}")
    cpu_at_published = CpuUse.of(hub_pid)
    at_published = last = await asyncio.to_thread(_settled, bench)
    last_change, cpu_at_last = published, cpu_at_published
    while time.perf_counter() < published + DRAIN_TIMEOUT_S:
        await asyncio.sleep(POLL_S)
        now_settled = await asyncio.to_thread(_settled, bench)
        now = time.perf_counter()
        if now_settled != last:
            last, last_change, cpu_at_last = now_settled, now, CpuUse.of(hub_pid)
        elif now - last_change >= IDLE_S and last - before >= backlog - work.errors:
            break
    window = last_change - published
    drained = last - at_published
    profile = await asyncio.to_thread(batch_profiles, bench.deployment, before_profile)
    return {
        "published": backlog - work.errors,
        "publish_errors": work.errors,
        "publish_seconds": round(published - started, 2),
        "settled_while_publishing": int(at_published - before),
        "settled": int(last - before),
        "complete": last - before >= backlog - work.errors,
        "drain_seconds": round(window, 2),
        "msgs_per_s": round(drained / window, 1) if window > 0 and drained > 0 else 0.0,
        **CpuUse.over(cpu_at_published, cpu_at_last, window),
        "hub_batches": profile[HUB],
    }


async def measure_config(
    base: Path, config: Config, sizes: Sizes, kdf: KdfProfile
) -> dict[str, Any]:
    async with running(
        base,
        kdf=kdf,
        layout=config.layout,
        hub_env=config.hub_env,
        standby=HUB if config.standby else None,
    ) as bench:
        reader = await bench.client(RECIPIENT)
        senders = [await bench.client(SENDER) for _ in range(e2e.MAX_CONNECTIONS)]
        levels = []
        hub_pid = bench.pid(f"hub-{HUB}")
        for n in sizes.levels:
            await _quiet(bench)
            cpu_before, started = CpuUse.of(hub_pid), time.perf_counter()
            level = await e2e.run_level(
                bench,
                reader,
                senders,
                n,
                limit=sizes.messages,
                send_seconds=sizes.send_seconds,
                drain_seconds=sizes.drain_seconds,
            )
            cpu_after, wall = CpuUse.of(hub_pid), time.perf_counter() - started
            levels.append(e2e.summary(level, {}))
            del levels[-1]["hub_rss_mib"]
            levels[-1] |= CpuUse.over(cpu_before, cpu_after, wall)
            print(f"  scale {config.name} e2e {n:>2} senders: {levels[-1]}", flush=True)
        rounds = []
        for r in range(sizes.drain_rounds):
            rounds.append(await hub_drain(bench, senders, sizes.backlog, offset=r * sizes.backlog))
            print(f"  scale {config.name} hub drain: {rounds[-1]}", flush=True)
        acks = await publish_acks(bench, senders[0], sizes.publish_samples)
        print(f"  scale {config.name} publish acks: {acks}", flush=True)
    return {"e2e": levels, "hub_drain_rounds": rounds, "publish_ack": acks}


def best_of(config: Config, passes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per level the pass with the most alerts a second (its latencies with it), and the
    fastest drain: interference from a shared machine only ever slows a run."""
    levels: dict[int, dict[str, Any]] = {}
    for got in passes:
        for lv in got["e2e"]:
            held = levels.get(lv["senders"])
            if held is None or lv["msgs_per_s"] > held["msgs_per_s"]:
                levels[lv["senders"]] = lv
    rounds = [r for got in passes for r in got["hub_drain_rounds"]]
    acks = [got["publish_ack"] for got in passes if got["publish_ack"]["p50_ms"] is not None]
    best = max(rounds, key=lambda d: cast(float, d["msgs_per_s"]))
    return {
        "tha_nodes": config.tha_nodes,
        "workers": config.workers,
        "e2e": list(levels.values()),
        "e2e_msgs_per_s_by_pass": [
            {str(lv["senders"]): lv["msgs_per_s"] for lv in got["e2e"]} for got in passes
        ],
        "hub_drain_msgs_per_s": best["msgs_per_s"],
        "hub_drain_cpu": {k: best.get(k) for k in CpuUse.over(None, None, 0)},
        "hub_drain_rounds": rounds,
        "publish_ack": min(acks, key=lambda a: cast(float, a["p50_ms"])) if acks else None,
        "publish_ack_p50_ms_by_pass": [got["publish_ack"]["p50_ms"] for got in passes],
    }


def _ratio(a: object, b: object) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b <= 0 or a <= 0:
        return None
    return round(a / b, 3)


def ratios(runs: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, object]:
    """``name``'s figures over ``single``'s: one publish's acknowledgement (p50, p99), the
    hub drain, and per level msgs/s, p50, p99."""
    ref, other = runs[SINGLE.name], runs[name]
    by_senders = {lv["senders"]: lv for lv in ref["e2e"]}
    e2e_ratios = {}
    for lv in other["e2e"]:
        base = by_senders.get(lv["senders"])
        if base is None:
            continue
        e2e_ratios[str(lv["senders"])] = {
            key: _ratio(lv[key], base[key])
            for key in ("msgs_per_s", "latency_p50_ms", "latency_p99_ms")
        }
    ack, ref_ack = other.get("publish_ack") or {}, ref.get("publish_ack") or {}
    return {
        "publish_ack_p50_ms": _ratio(ack.get("p50_ms"), ref_ack.get("p50_ms")),
        "publish_ack_p99_ms": _ratio(ack.get("p99_ms"), ref_ack.get("p99_ms")),
        "hub_drain_msgs_per_s": _ratio(other["hub_drain_msgs_per_s"], ref["hub_drain_msgs_per_s"]),
        "e2e": e2e_ratios,
    }


async def measure(
    base: Path,
    sizes: Sizes = Sizes(),
    *,
    configs: Sequence[Config] = CONFIGS,
    kdf: KdfProfile = KdfProfile.MODERATE,
) -> dict[str, object]:
    """Every configuration in each of ``sizes.passes``, then the ratios to ``single`` (which
    ``configs`` must hold). Passes alternate the order (A B C, then C B A): a machine
    growing busier during the run slows no configuration more than another.

    Logging is the caller's (``make bench`` quiets the benchmark process's own SDK logs;
    a test keeps its own configuration)."""
    passes: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configs}
    for p in range(sizes.passes):
        for config in configs if p % 2 == 0 else tuple(reversed(configs)):
            got = await measure_config(base / f"{config.name}-{p}", config, sizes, kdf)
            passes[config.name].append(got)
    runs = {c.name: best_of(c, passes[c.name]) for c in configs}
    return {
        "runs": runs,
        "ratios": {c.name: ratios(runs, c.name) for c in configs if c != SINGLE},
        "sizes": {
            "e2e_levels": list(sizes.levels),
            "e2e_messages_per_level": sizes.messages,
            "hub_drain_backlog": sizes.backlog,
            "hub_drain_rounds": sizes.drain_rounds,
            "passes": sizes.passes,
        },
        "note": (
            "ratios are each configuration over 'single' (THA on one nats-server, one"
            " ingress worker) in the same run; hub_drain: messages THA's hub settled per"
            " second draining a published backlog; each figure the best of the passes"
        ),
    }


async def run(base: Path) -> dict[str, object]:
    return {"scale": await measure(base)}


def print_table(results: Mapping[str, object], out: Any = None) -> None:
    scale = cast(Mapping[str, Any] | None, results.get("scale"))
    if not scale:
        return
    write = (out or sys.stdout).write
    runs, rel = scale["runs"], scale["ratios"]
    write(
        "\nscale: end to end (THA → MYS) and THA's hub draining a backlog, ratios to single"
        " (hub CPU: cores THA's hub process used; loop r/w: share of the time its event loop"
        " ran / waited for a core; 1 pub: one alert published and acknowledged at a time):\n"
    )
    write(
        f"{'run':<10} {'nodes':>5} {'workers':>7} {'senders':>7} {'msg/s':>8}"
        f" {'p50 ms':>9} {'p99 ms':>9} {'hub CPU':>7} {'loop r/w':>9}   x msg/s   x p50   x p99\n"
    )
    for name, run_ in runs.items():
        ratio = rel.get(name, {})
        for lv in run_["e2e"]:
            r = ratio.get("e2e", {}).get(str(lv["senders"]), {})
            write(
                f"{name:<10} {run_['tha_nodes']:>5} {run_['workers']:>7} {lv['senders']:>7}"
                f" {lv['msgs_per_s']:>8} {lv['latency_p50_ms']!s:>9} {lv['latency_p99_ms']!s:>9}"
                f" {lv.get('hub_cpu_cores')!s:>7} {_run_wait(lv):>9}"
                f"   {_fmt(r.get('msgs_per_s'))} {_fmt(r.get('latency_p50_ms'))}"
                f" {_fmt(r.get('latency_p99_ms'))}\n"
            )
        write(
            f"{name:<10} {run_['tha_nodes']:>5} {run_['workers']:>7} {'drain':>7}"
            f" {run_['hub_drain_msgs_per_s']:>8} {'':>9} {'':>9}"
            f" {run_['hub_drain_cpu']['hub_cpu_cores']!s:>7} {_run_wait(run_['hub_drain_cpu']):>9}"
            f"   {_fmt(ratio.get('hub_drain_msgs_per_s'))}\n"
        )
        ack = run_.get("publish_ack") or {}
        write(
            f"{name:<10} {run_['tha_nodes']:>5} {run_['workers']:>7} {'1 pub':>7} {'':>8}"
            f" {ack.get('p50_ms')!s:>9} {ack.get('p99_ms')!s:>9} {'':>7} {'':>9}   {'':>7}"
            f" {_fmt(ratio.get('publish_ack_p50_ms'))} {_fmt(ratio.get('publish_ack_p99_ms'))}\n"
        )


def _run_wait(use: Mapping[str, Any]) -> str:
    return f"{use.get('hub_loop_running')}/{use.get('hub_loop_waiting_cpu')}"


def _fmt(value: object) -> str:
    return f"{'—' if value is None else value!s:>7}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ixb-bench-scale-") as tmp:
        got = asyncio.run(run(Path(tmp)))
        print_table(got)
