"""A hub's connections to its peers' link accounts, and the loops that watch them.

One NATS connection per peer country, to that peer's link account on this
country's server (docs/nats-topology.md). :func:`link_keeper` restarts an
idle cross-border source as soon as the peer answers again; :func:`gauges`
keeps the backlog and link metrics current.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from broker.metrics import Metrics
from broker.pull import sleep_or_stop
from transport import streams

log = structlog.get_logger("ixb.hub")

LINK_CHECK_S = 2.0
GAUGE_PERIOD_S = 2.0
INFO_TIMEOUT_S = 1.0


@dataclass
class LinkState:
    peer: str
    nc: NatsClient
    js: JetStreamContext


async def link_keeper(link: LinkState, stop: asyncio.Event) -> None:
    """Restart an idle cross-border source as soon as the peer answers again.

    nats-server alone resumes a source about 40 s after a restart
    (docs/nats-topology.md); this brings it down to about a second.
    """
    while not stop.is_set():
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError):
            if await streams.resume_link_source(link.nc, link.peer):
                log.info("link_source_resumed", peer=link.peer)
        await sleep_or_stop(stop, LINK_CHECK_S)


async def gauges(
    country: str,
    links: dict[str, LinkState],
    metrics: Metrics,
    stop: asyncio.Event,
    *,
    in_flight: Callable[[], int],
    versions: Callable[[], dict[str, int | None]],
) -> None:
    """Messages in flight, backlogs both ways, link state and directory versions."""
    while not stop.is_set():
        metrics.set("ixb_in_flight", in_flight())
        for peer, link in links.items():
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError):
                info = await link.js.consumer_info(
                    streams.in_stream(peer), streams.HUB_CONSUMER, timeout=INFO_TIMEOUT_S
                )
                metrics.set("ixb_backlog", info.num_pending or 0, source=peer)
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                out = await streams.outbound_backlog(link.nc, country, peer)
                if out is not None:
                    metrics.set("ixb_backlog_out", out, destination=peer)
            metrics.set("ixb_link_up", 1.0 if link.nc.is_connected else 0.0, peer=peer)
        for c, version in versions().items():
            metrics.set("ixb_directory_version", float(version or 0), country=c)
        await sleep_or_stop(stop, GAUGE_PERIOD_S)
