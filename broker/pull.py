"""The hub's pull loop: fetch a batch from a durable consumer, hand it over, fetch the next.

Up to ``in_flight`` batches are settling at once: each waits mostly on disks
(JetStream's and ours), and those waits overlap. The handler keeps decisions
in stream order (:class:`broker.settle.Settler`); this loop only bounds how
many batches are out and re-binds after transport errors. On stop, the
batches in flight finish before the subscription goes.

The consumers' ack wait is short (:data:`transport.streams.HUB_ACK_WAIT_S`),
so that what a dead worker fetched comes back within seconds; a batch still
waiting for its turn or settling keeps its messages with ``in_progress()``.
Transport failures are logged once per change of state, not per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from transport import streams
from transport.connect import StateLog
from transport.fetch import fetch_ready, keep_in_progress

log = structlog.get_logger("ixb.hub")

FETCH_BATCH = 64
BATCHES_IN_FLIGHT = 8
FETCH_TIMEOUT_S = 1.0
REBIND_DELAY_S = 1.0
FETCH_ERROR_DELAY_S = 0.5


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def pull_loop(
    js: JetStreamContext,
    stream: str,
    stop: asyncio.Event,
    handle: Callable[[list[Msg]], Awaitable[None]],
    *,
    what: str,
    on_count: Callable[[int], None] = lambda _delta: None,
    in_flight: int = BATCHES_IN_FLIGHT,
) -> None:
    """Serve ``stream``'s ``HUB`` consumer until ``stop``; ``on_count`` tracks what is out."""
    slots = asyncio.Semaphore(in_flight)

    async def settle(msgs: list[Msg]) -> None:
        alive = asyncio.create_task(keep_in_progress(lambda: msgs, streams.KEEPALIVE_S))
        try:
            await handle(msgs)
        finally:
            alive.cancel()
            on_count(-len(msgs))
            slots.release()

    bind_log = StateLog("bind_failed", logger=log, worker=what)
    fetch_log = StateLog("fetch_failed", logger=log, worker=what)
    while not stop.is_set():
        try:
            psub = await js.pull_subscribe_bind(streams.HUB_CONSUMER, stream)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            bind_log.failed(exc)
            await sleep_or_stop(stop, REBIND_DELAY_S)
            continue
        bind_log.ok()
        try:
            async with asyncio.TaskGroup() as batches:
                while not stop.is_set():
                    await slots.acquire()
                    try:
                        msgs = await fetch_ready(psub, FETCH_BATCH, FETCH_TIMEOUT_S)
                    except (TimeoutError, nats.errors.TimeoutError):
                        slots.release()
                        continue
                    except (nats.errors.Error, nats.js.errors.Error) as exc:
                        slots.release()
                        fetch_log.failed(exc)
                        await sleep_or_stop(stop, FETCH_ERROR_DELAY_S)
                        break  # re-bind (nats-py subscriptions can die on reconnect)
                    fetch_log.ok()
                    on_count(len(msgs))
                    batches.create_task(settle(msgs))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await psub.unsubscribe()
