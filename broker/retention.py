"""Retention of delivered content in the streams a hub owns: ``INBOX`` and its links.

Each stream's messages are erased (:func:`transport.retention.erase_expired`)
once past their type's retention (hub config ``[retention]``) and
acknowledged by the consumer that reads them:

- ``INBOX``: the agency's durable consumer whose filter is the message's subject;
- ``IN_<PEER>``: this hub's ``HUB`` consumer;
- ``OUT_<PEER>``: up to what the peer's ``IN_<CC>`` has stored (asked of the
  peer across the leaf; while it does not answer nothing is erased).

The audit log and the hub store hold metadata only; they are not touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import structlog
from nats.js import JetStreamContext

from broker.links import LinkState
from broker.pull import sleep_or_stop
from protocols.retention import Retention
from transport import streams
from transport.connect import StateLog
from transport.retention import Acked, StreamSweep, erase_expired, sourced_upto
from transport.streams import TRANSPORT_ERRORS

log = structlog.get_logger("ixb.retention")


async def sweep_streams(
    country: str,
    js: JetStreamContext,
    links: Mapping[str, LinkState],
    retention: Retention,
    now_ms: int,
) -> list[StreamSweep]:
    """One pass over ``INBOX`` and each link's ``IN_``/``OUT_`` stream."""
    floors = {
        c.config.filter_subject: _floor(c.ack_floor)
        for c in await js.consumers_info(streams.INBOX_STREAM)
        if c.config.filter_subject
    }
    sweeps = [
        await erase_expired(
            js, streams.INBOX_STREAM, retention, now_ms, lambda s, q: q <= floors.get(s, 0)
        )
    ]
    for peer, state in sorted(links.items()):
        link = state.js
        hub = await link.consumer_info(streams.in_stream(peer), streams.HUB_CONSUMER)
        sweeps.append(
            await erase_expired(
                link, streams.in_stream(peer), retention, now_ms, _upto(_floor(hub.ack_floor))
            )
        )
        sourced = await sourced_upto(state.nc, country, peer)
        sweeps.append(
            await erase_expired(link, streams.out_stream(peer), retention, now_ms, _upto(sourced))
        )
    for sweep in sweeps:
        if sweep.removed or sweep.unacked:
            log.info(
                "retention_erased",
                stream=sweep.stream,
                removed=sweep.removed,
                unacked=sweep.unacked,
            )
    return sweeps


async def retention_loop(
    country: str,
    js: JetStreamContext,
    links: Mapping[str, LinkState],
    retention: Retention,
    *,
    period_s: float,
    clock: Callable[[], int],
    stop: asyncio.Event,
) -> None:
    """:func:`sweep_streams` every ``period_s``; failures logged once a spell."""
    failures = StateLog("retention_failed", logger=log)
    while not stop.is_set():
        try:
            await sweep_streams(country, js, links, retention, clock())
        except TRANSPORT_ERRORS as exc:
            failures.failed(exc)
        else:
            failures.ok()
        await sleep_or_stop(stop, period_s)


def _floor(seq: object) -> int:
    stream_seq = getattr(seq, "stream_seq", 0)
    return stream_seq if isinstance(stream_seq, int) else 0


def _upto(floor: int) -> Acked:
    return lambda _subject, seq: seq <= floor
