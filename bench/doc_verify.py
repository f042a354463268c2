"""Document checks across two hubs, open loop: THA/IMMIGRATION asks, MYS/IMMIGRATION answers.

MYS's automated responder is ``ixb agency respond`` (``AgencyClient.serve``
with a :class:`DocumentRegistry`), its own process, as in ``ixb demo``.

By default (``PATH = "sync"``) each check is a lookup on the synchronous path
(SPEC §14): ``client.lookup`` started at its scheduled time, never waiting for
earlier ones; latency runs from the *scheduled* time to the moment the
requester holds the verified, decrypted answer. A check a hub refuses at once
with ``ixb.E_BUSY`` is counted as ``busy``, not as answered.

With ``PATH = "durable"`` the requester sends ``doc.verify.request``s with
``client.send`` and one reader task fetches its inbox, acking everything and
matching answers by ``in_reply_to`` (the path before lookups). Either way a
system that cannot keep up shows its queue instead of slowing the offered
load down.

Each rate runs on a fresh federation (no rate inherits another's backlog)
for a bounded time, then waits a bounded drain for late answers; what never
came is ``completed < sent``, reported as such.

The rates: a sweep (5 to 200/s), the main rate (500/s, 30 s) and an overload
rate (1,000/s) for the lookup targets (:mod:`bench.targets`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agency_client.docregistry import DocumentRegistry
from agency_client.sdk import AgencyClient, Incoming
from bench.common import (
    batch_profiles,
    hub_batch_counters,
    latency_figures,
    open_loop,
    quiet_client_logs,
    rss_mib,
)
from bench.federation import running
from ixb.demo import REGISTRY, VALID_PASSPORT
from protocols.errors import BusyError
from protocols.handling import Priority
from protocols.messages import DocPurpose, DocVerifyRequest, DocVerifyResponse

REQUESTER = "THA/IMMIGRATION"
RESPONDER = "MYS/IMMIGRATION"
MAIN_RATE = 500.0
MAIN_SECONDS = 30.0
SWEEP = ((5.0, 5.0), (20.0, 5.0), (50.0, 5.0), (100.0, 5.0), (200.0, 5.0))
LOOKUP_SWEEP = ((100.0, 5.0),)
"""The sweep of ``make bench BENCH_ARGS='--only lookup'``: the unloaded rate the targets use."""
OVERLOAD = ((1000.0, 10.0),)
"""Beyond the main rate, for the overload target (every check answered or refused at once)."""
WARMUP_RATE = 2.0
WARMUP_SECONDS = 1.0
DRAIN_SECONDS = 8.0
PATH = "sync"
"""``sync``: lookups (SPEC §14); ``durable``: send and read the inbox."""


@dataclass
class Run:
    rate: float
    seconds: float
    scheduled: dict[bytes, float] = field(default_factory=dict)
    early: dict[bytes, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    answered: set[bytes] = field(default_factory=set)
    send_errors: int = 0
    wrong_answers: int = 0
    busy: int = 0

    def answer(self, request_id: bytes, at: float, ok: bool) -> None:
        if request_id in self.answered:
            return
        if not ok:
            self.wrong_answers += 1
        start = self.scheduled.get(request_id)
        if start is None:
            self.early[request_id] = at  # the answer beat send()'s return
            return
        self.answered.add(request_id)
        self.latencies.append(at - start)


async def _reader(client: AgencyClient, runs: list[Run], stop: asyncio.Event) -> None:
    while not stop.is_set():
        items = await client.fetch(batch=64, timeout=0.1)
        at = time.perf_counter()
        for item in items:
            if not isinstance(item, Incoming):
                continue
            await item.ack()
            reply_to = item.header.in_reply_to
            if item.header.type == "doc.verify.response" and reply_to is not None and runs:
                body = item.body
                ok = isinstance(body, DocVerifyResponse) and body.status.value == "valid"
                runs[-1].answer(reply_to, at, ok)


async def one_rate(client: AgencyClient, runs: list[Run], rate: float, seconds: float) -> Run:
    run = Run(rate, seconds)
    runs.append(run)
    request = DocVerifyRequest(mrz=VALID_PASSPORT, purpose=DocPurpose.BORDER_CHECK)

    async def fire(_i: int, scheduled: float) -> None:
        if PATH == "sync":
            await _lookup(client, run, request, scheduled)
            return
        try:
            msg_id = await client.send(request, [RESPONDER], priority=Priority.URGENT)
        except Exception:  # noqa: BLE001 - counted and reported, the load goes on
            run.send_errors += 1
            return
        run.scheduled[msg_id] = scheduled
        if msg_id in run.early:
            run.answer(msg_id, run.early.pop(msg_id), ok=True)

    started = time.perf_counter()
    _sent, tasks = await open_loop(rate, seconds, fire)
    await asyncio.gather(*tasks)
    send_window = time.perf_counter() - started
    drain_until = time.perf_counter() + DRAIN_SECONDS
    while len(run.answered) < len(run.scheduled) and time.perf_counter() < drain_until:  # noqa: ASYNC110 - a bounded poll of a counter
        await asyncio.sleep(0.1)
    run.seconds = send_window
    return run


async def _lookup(
    client: AgencyClient, run: Run, request: DocVerifyRequest, scheduled: float
) -> None:
    request_id = len(run.scheduled).to_bytes(16, "big")
    run.scheduled[request_id] = scheduled
    try:
        answer = await client.lookup(request, RESPONDER, priority=Priority.URGENT)
    except BusyError:
        run.busy += 1
        return
    except Exception:  # noqa: BLE001 - counted and reported, the load goes on
        run.send_errors += 1
        return
    at = time.perf_counter()
    ok = (
        isinstance(answer, Incoming)
        and isinstance(answer.body, DocVerifyResponse)
        and answer.body.status.value == "valid"
    )
    run.answer(request_id, at, ok)


async def _responder_up(client: AgencyClient, timeout: float = 60.0) -> None:
    """Until a lookup is answered: the responder process subscribed (before, its hub queues
    every lookup in the inbox, which the durable path would have buffered unnoticed)."""
    request = DocVerifyRequest(mrz=VALID_PASSPORT, purpose=DocPurpose.BORDER_CHECK)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if isinstance(await client.lookup(request, RESPONDER), Incoming):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{RESPONDER}'s responder answered no lookup within {timeout:g} s")


def _write_registry(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DocumentRegistry.dump(REGISTRY))


def summary(run: Run, sent: int | None = None) -> dict[str, object]:
    return {
        "offered_per_s": run.rate,
        "send_window_s": round(run.seconds, 2),
        "sent": len(run.scheduled) if sent is None else sent,
        "send_errors": run.send_errors,
        "refused_busy": run.busy,
        "completed": len(run.answered),
        "achieved_sent_per_s": round(len(run.scheduled) / run.seconds, 1),
        "wrong_answers": run.wrong_answers,
        **latency_figures(run.latencies),
    }


async def fresh_rate(base: Path, registry: Path, rate: float, seconds: float) -> dict[str, object]:
    """One offered rate on a fresh federation, so no rate inherits another's backlog."""
    async with running(base, responders={RESPONDER: registry}) as bench:
        client = await bench.client(REQUESTER)
        runs: list[Run] = []
        stop = asyncio.Event()
        # the durable path's answers come to the inbox; lookups' come back on the request
        # (no inbox poll beside them: the load generator shares the box with the hubs)
        reader = asyncio.create_task(_reader(client, runs, stop)) if PATH == "durable" else None
        if PATH == "sync":
            await _responder_up(client)
        # a few answered checks first: the responder is up and every cache is warm
        await one_rate(client, runs, WARMUP_RATE, WARMUP_SECONDS)
        before = hub_batch_counters(bench.deployment)
        result = summary(await one_rate(client, runs, rate, seconds))
        result["hub_batches"] = batch_profiles(bench.deployment, before)
        stop.set()
        if reader is not None:
            await reader
        result["hub_rss_mib"] = {
            c: rss_mib(bench.pid(f"hub-{c}")) for c in bench.deployment.countries
        }
    print(f"  doc-verify {rate:>5.0f}/s: {result}", flush=True)
    return result


async def run(
    base: Path,
    *,
    main_rate: float = MAIN_RATE,
    main_seconds: float = MAIN_SECONDS,
    sweep: Sequence[tuple[float, float]] = SWEEP,
    overload: Sequence[tuple[float, float]] = OVERLOAD,
) -> dict[str, object]:
    quiet_client_logs()
    registry = base / "MYS-documents.json"
    await asyncio.to_thread(_write_registry, registry)
    levels = (*sweep, (main_rate, main_seconds), *overload)
    rows = [
        await fresh_rate(base / f"fed-{i}", registry, rate, seconds)
        for i, (rate, seconds) in enumerate(levels)
    ]
    main = rows[len(sweep)]
    return {
        "doc_verify_offered_per_s": main["offered_per_s"],
        "doc_verify_seconds": main_seconds,
        "doc_verify_sent": main["sent"],
        "doc_verify_completed": main["completed"],
        "doc_verify_achieved_sent_per_s": main["achieved_sent_per_s"],
        "doc_verify_p50_ms": main["p50_ms"],
        "doc_verify_p99_ms": main["p99_ms"],
        "doc_verify_sweep": rows[: len(sweep) + 1],
        "doc_verify_overload": rows[len(sweep) + 1 :],
        "doc_verify_hub_rss_mib": main["hub_rss_mib"],
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ixb-bench-doc-") as tmp:
        print(asyncio.run(run(Path(tmp))))
