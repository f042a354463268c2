"""What every benchmark module shares: machine facts, percentiles, memory, bodies, open loops."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from broker.natsd import find_nats_server
from ixb.deployment import Deployment
from protocols.messages import Alert, AlertCategory, InfoGrade, SourceGrade

PAYLOAD_BYTES = 1024


def machine() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nats_version = subprocess.run(  # noqa: S603 - our own binary
            [str(find_nats_server()), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        nats_version = "unknown"
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "nats_server": nats_version,
        "platform": platform.platform(),
    }


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no samples (never a made-up zero)."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def latency_figures(latencies: list[float]) -> dict[str, float | None]:
    """``p50_ms``, ``p90_ms``, ``p99_ms`` and ``max_ms`` of latencies in seconds."""
    return {
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else None),
    }


def rss_mib(pid: int | str = "self") -> float | None:
    """VmRSS of a process from /proc, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def alert_1k(i: int) -> Alert:
    """An alert whose plaintext body is about 1 KiB (padding rounds the envelope up)."""
    text = (f"bench alert {i:08d} " * 64)[:PAYLOAD_BYTES]
    return Alert(
        category=AlertCategory.TRAFFICKING,
        title=f"bench {i}",
        source_grade=SourceGrade.B,
        info_grade=InfoGrade.CORROBORATED,
        text=text,
    )


async def open_loop(
    rate_per_s: float,
    duration_s: float,
    fire: Callable[[int, float], Coroutine[Any, Any, None]],
    *,
    max_outstanding: int = 20_000,
) -> tuple[int, list[asyncio.Task[None]]]:
    """Start ``fire(i, scheduled)`` at fixed times, never waiting for earlier ones (open loop).

    ``scheduled`` is the perf_counter time the request was due: latency measured
    from it includes any lag of this scheduler, so queueing shows. Bounded by
    ``duration_s`` and by ``max_outstanding`` tasks in flight (reported by the
    caller as not sent, never silently).
    """
    interval = 1.0 / rate_per_s
    total = int(rate_per_s * duration_s)
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    outstanding: set[asyncio.Task[None]] = set()
    sent = 0
    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(outstanding) >= max_outstanding:
            break
        task = asyncio.create_task(fire(i, scheduled))
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
        tasks.append(task)
        sent += 1
    return sent, tasks


def quiet_client_logs() -> None:
    """The benchmark process's own SDK logs: warnings only (hubs log as in production)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


BATCH_SERIES = {
    "ixb_batches_total": "batches",
    "ixb_batch_messages_total": "messages",
    'ixb_batch_seconds_total{stage="decide_plan_seal"}': "decide_s",
    'ixb_batch_seconds_total{stage="publish_wait"}': "publish_wait_s",
    'ixb_batch_seconds_total{stage="durable_commit"}': "commit_s",
    'ixb_batch_seconds_total{stage="audit_copy"}': "copy_s",
}


def hub_batch_counters(deployment: Deployment) -> dict[str, dict[str, float]]:
    """Each hub's per-batch counters from its /metrics (see broker.hub.Hub._settle)."""
    out: dict[str, dict[str, float]] = {}
    for country in deployment.countries:
        url = f"{deployment.hub_url(country)}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - localhost
            text = resp.read().decode()
        counters = out[country] = dict.fromkeys(BATCH_SERIES.values(), 0.0)
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name in BATCH_SERIES:
                counters[BATCH_SERIES[name]] = float(value)
    return out


def batch_profiles(
    deployment: Deployment, before: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Per hub, since ``before``: messages per batch, and ms per batch in each stage."""
    return {
        country: _batch_profile(before[country], after)
        for country, after in hub_batch_counters(deployment).items()
    }


def _batch_profile(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    batches = max(d["batches"], 1.0)
    return {
        "batches": d["batches"],
        "messages_per_batch": round(d["messages"] / batches, 2),
        "decide_ms_per_batch": round(1000 * d["decide_s"] / batches, 2),
        "publish_wait_ms_per_batch": round(1000 * d["publish_wait_s"] / batches, 2),
        "commit_ms_per_batch": round(1000 * d["commit_s"] / batches, 2),
        "audit_copy_ms_per_batch": round(1000 * d["copy_s"] / batches, 2),
    }
