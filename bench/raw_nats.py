"""Plain nats-py against one country's nats-server: the floor the exchange is compared to.

One server rendered by :mod:`broker.natsplan` from the same templates as a
country (``sync_interval: always``, so every acknowledged publish was
fsynced), no hub, no ixb code on the message path:

- JetStream publish of 1 KiB messages into a file stream with acks,
  ``IN_FLIGHT`` publishes outstanding at any time;
- core NATS request/reply to a trivial responder, open loop at the offered
  rate of the document-check benchmark, latency from the scheduled send time.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import time
from pathlib import Path

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig

from bench.common import PAYLOAD_BYTES, ms, open_loop, percentile
from broker.natsd import NatsServer, free_ports
from broker.natsplan import FederationPlan
from broker.natstls import write_throwaway_tls
from transport.connect import NatsAuth, tls_context

IN_FLIGHT = 64
JS_MAX_MESSAGES = 30_000
JS_MAX_SECONDS = 10.0
REQUEST_RATE = 500.0
REQUEST_SECONDS = 10.0
REQUEST_TIMEOUT_S = 5.0


async def jetstream_publish(
    url: str, auth: NatsAuth, tls: ssl.SSLContext | None
) -> dict[str, object]:
    nc = await nats.connect(url, **auth.connect_options(), tls=tls)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.js"], storage=StorageType.FILE))
    payload = b"x" * PAYLOAD_BYTES
    sem = asyncio.Semaphore(IN_FLIGHT)
    acked = failed = 0

    async def one(i: int) -> None:
        nonlocal acked, failed
        try:
            await js.publish("bench.js", payload, headers={"Nats-Msg-Id": f"m{i}"}, timeout=10)
            acked += 1
        except (TimeoutError, nats.errors.Error):
            failed += 1
        finally:
            sem.release()

    tasks = []
    start = time.perf_counter()
    deadline = start + JS_MAX_SECONDS
    for i in range(JS_MAX_MESSAGES):
        await sem.acquire()
        if time.perf_counter() > deadline:
            sem.release()
            break
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    info = await js.stream_info("BENCH")
    await nc.close()
    return {
        "raw_jetstream_msgs_per_s": round(acked / elapsed, 1),
        "raw_jetstream_acked": acked,
        "raw_jetstream_failed": failed,
        "raw_jetstream_stored": info.state.messages,
        "raw_jetstream_seconds": round(elapsed, 2),
        "raw_jetstream_in_flight": IN_FLIGHT,
    }


async def request_reply(
    url: str, auth: NatsAuth, rate: float, tls: ssl.SSLContext | None
) -> dict[str, object]:
    responder = await nats.connect(url, **auth.connect_options(), tls=tls)
    requester = await nats.connect(url, **auth.connect_options(), tls=tls)

    async def echo(msg: Msg) -> None:
        await msg.respond(b"ok")

    await responder.subscribe("bench.echo", cb=echo)
    await responder.flush()
    payload = b"x" * PAYLOAD_BYTES
    latencies: list[float] = []
    failures = 0

    async def fire(_i: int, scheduled: float) -> None:
        nonlocal failures
        try:
            await requester.request("bench.echo", payload, timeout=REQUEST_TIMEOUT_S)
        except (TimeoutError, nats.errors.Error):
            failures += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    sent, tasks = await open_loop(rate, REQUEST_SECONDS, fire)
    await asyncio.gather(*tasks)
    await requester.close()
    await responder.close()
    return {
        "raw_request_offered_per_s": rate,
        "raw_request_sent": sent,
        "raw_request_completed": len(latencies),
        "raw_request_failed": failures,
        "raw_request_p50_ms": ms(percentile(latencies, 50)),
        "raw_request_p99_ms": ms(percentile(latencies, 99)),
    }


async def run(rate: float = REQUEST_RATE) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ixb-bench-raw-") as tmp:
        plan = FederationPlan.create(("THA",), {"THA": ["BENCH"]}, Path(tmp), ports=free_ports())
        write_throwaway_tls(plan)  # over TLS, as every ixb connection
        creds = plan.hub_credentials("THA")
        tls = tls_context(plan.client_ca_file("THA"))
        async with NatsServer(plan, "THA") as server:
            url = server.client_url
            results = await jetstream_publish(url, creds, tls)
            results |= await request_reply(url, creds, rate, tls)
    return results


if __name__ == "__main__":
    print(asyncio.run(run()))
