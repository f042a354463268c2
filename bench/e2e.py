"""End to end: agency → THA hub → MYS hub → agency inbox, at 1, 4, 16 and 64 concurrent senders.

Each sender is a task calling ``AgencyClient.send`` (seal, sign, JetStream
publish to THA's ingress, wait for the ack) in a loop; tasks share up to
``MAX_CONNECTIONS`` client connections of THA/DSI-ATHD. One reader,
MYS/RMP-ATIPSOM, fetches its inbox (every envelope verified, hop
countersignatures checked, decrypted by the SDK) and acks. Both hubs verify,
audit and route every message and send the sender its receipts (accepted,
relayed, delivered), which are real traffic too: one receipt per statement
for all of a sender's messages in a fetched batch.

Every level sends the same bounded count (the hubs, not the senders, are the
bottleneck: a larger count only grows the backlog the next level would
inherit) within a time limit, then drains for a bounded time. Only alerts
sent in the level are counted. Throughput is alerts received and decrypted
divided by the time from the first send to the last receipt by the reader.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from agency_client.sdk import AgencyClient, Incoming
from bench.common import (
    alert_1k,
    batch_profiles,
    hub_batch_counters,
    ms,
    percentile,
    quiet_client_logs,
    rss_mib,
)
from bench.federation import Bench, running

SENDER = "THA/DSI-ATHD"
RECIPIENT = "MYS/RMP-ATIPSOM"
LEVELS = (1, 4, 16, 64)
MAX_MESSAGES = {1: 1500, 4: 1500, 16: 1500, 64: 1500}
MAX_SEND_SECONDS = 15.0
DRAIN_SECONDS = 20.0
MAX_CONNECTIONS = 8
ENVELOPES_PER_ALERT = 4
"""At most: the alert and its accepted, relayed and delivered receipts. Hubs give one
receipt per sender and statement per fetched batch, so under load far fewer."""


@dataclass
class Level:
    senders: int
    sent: set[bytes] = field(default_factory=set)
    received: int = 0
    latencies: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_receive: float = 0.0
    send_errors: int = 0


async def _send_loop(client: AgencyClient, level: Level, limit: int, deadline: float) -> None:
    while len(level.sent) + level.send_errors < limit and time.perf_counter() < deadline:
        i = len(level.sent) + level.send_errors
        try:
            msg_id = await client.send(alert_1k(i), [RECIPIENT])
        except Exception:  # noqa: BLE001 - counted and reported, the load goes on
            level.send_errors += 1
            continue
        level.sent.add(msg_id)


async def _read_loop(reader: AgencyClient, level: Level, stop: asyncio.Event) -> None:
    while not stop.is_set():
        items = await reader.fetch(batch=64, timeout=0.25)
        now = time.perf_counter()
        wall_ms = time.time() * 1000
        for item in items:
            if isinstance(item, Incoming):
                await item.ack()
                if item.header.type == "alert" and item.header.id in level.sent:
                    level.received += 1
                    level.last_receive = now
                    level.latencies.append((wall_ms - item.header.created) / 1000)


async def run_level(
    bench: Bench,
    reader: AgencyClient,
    senders: list[AgencyClient],
    n: int,
    *,
    limit: int | None = None,
    send_seconds: float = MAX_SEND_SECONDS,
    drain_seconds: float = DRAIN_SECONDS,
) -> Level:
    """``n`` senders send ``limit`` alerts (default :data:`MAX_MESSAGES`) within
    ``send_seconds``; the reader takes them for at most ``drain_seconds`` more."""
    level = Level(n)
    limit = MAX_MESSAGES[n] if limit is None else limit
    stop = asyncio.Event()
    read_task = asyncio.create_task(_read_loop(reader, level, stop))
    level.first_send = time.perf_counter()
    deadline = level.first_send + send_seconds
    await asyncio.gather(
        *(_send_loop(senders[i % len(senders)], level, limit, deadline) for i in range(n))
    )
    drain_until = time.perf_counter() + drain_seconds
    while level.received < len(level.sent) and time.perf_counter() < drain_until:  # noqa: ASYNC110 - a bounded poll of a counter
        await asyncio.sleep(0.1)
    stop.set()
    await read_task
    return level


def summary(level: Level, rss: dict[str, float | None]) -> dict[str, object]:
    elapsed = max(level.last_receive - level.first_send, 1e-9)
    return {
        "senders": level.senders,
        "sent": len(level.sent),
        "send_errors": level.send_errors,
        "received": level.received,
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(level.received / elapsed, 1) if level.received else 0.0,
        "latency_p50_ms": ms(percentile(level.latencies, 50)),
        "latency_p99_ms": ms(percentile(level.latencies, 99)),
        "hub_rss_mib": rss,
    }


async def run(base: Path) -> dict[str, object]:
    quiet_client_logs()
    async with running(base) as bench:
        reader = await bench.client(RECIPIENT)
        senders = [await bench.client(SENDER) for _ in range(MAX_CONNECTIONS)]
        levels = []
        for n in LEVELS:
            before = hub_batch_counters(bench.deployment)
            level = await run_level(bench, reader, senders, n)
            rss = {c: rss_mib(bench.pid(f"hub-{c}")) for c in bench.deployment.countries}
            levels.append(summary(level, rss))
            levels[-1]["hub_batches"] = batch_profiles(bench.deployment, before)
            print(f"  e2e {n:>2} senders: {levels[-1]}", flush=True)
        bench_rss = rss_mib()
    best = max(levels, key=lambda r: float(r["msgs_per_s"]))  # type: ignore[arg-type]
    last_rss = levels[-1]["hub_rss_mib"]
    assert isinstance(last_rss, dict)
    return {
        "e2e_msgs_per_s": best["msgs_per_s"],
        "e2e_best_senders": best["senders"],
        "e2e_envelopes_per_alert_max": ENVELOPES_PER_ALERT,
        "e2e_levels": levels,
        "hub_rss_mib": max(v for v in last_rss.values() if v is not None),
        "hub_rss_mib_by_hub": last_rss,
        "bench_process_rss_mib": bench_rss,
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ixb-bench-e2e-") as tmp:
        print(asyncio.run(run(Path(tmp))))
