"""Real nats-server federations for tests: random free ports, tmp dirs, always stopped.

Import the fixtures into a test module (``from tests.nats_fixtures import
federation``). Every connection a test opens goes through :class:`Federation`,
which records the errors nats-py reports asynchronously (permission
violations arrive that way) and closes all connections before the servers
stop, so no transport is left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamInfo

from broker.natsd import NatsServer, free_ports, start_federation
from broker.natsplan import FederationPlan
from broker.natstls import write_throwaway_tls
from protocols import subjects
from transport.connect import NatsAuth, server_list, tls_context
from transport.streams import ensure_country_streams, ensure_link_streams

AGENCIES = {
    "THA": ("DSI-ATHD", "IMMIGRATION"),
    "MYS": ("RMP-ATIPSOM",),
    "MMR": ("MOHA-ATTU",),
}


@dataclass
class Conn:
    """A client connection and the errors nats-py reported on it."""

    nc: NatsClient
    errors: list[str] = field(default_factory=list)

    async def wait_error(self, fragment: str, timeout: float = 2.0) -> str:
        """The first reported error containing ``fragment`` (nats-py lower-cases them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for err in self.errors:
                if fragment.lower() in err.lower():
                    return err
            await asyncio.sleep(0.02)
        raise AssertionError(f"no error containing {fragment!r}; got {self.errors}")


@dataclass
class Federation:
    plan: FederationPlan
    servers: dict[str, NatsServer]
    conns: list[Conn] = field(default_factory=list)

    async def _connect(self, country: str, auth: NatsAuth, **kw: object) -> Conn:
        conn = Conn(nc=NatsClient())

        async def on_error(exc: Exception) -> None:
            conn.errors.append(str(exc))

        await conn.nc.connect(
            server_list(self.plan.client_url(country)),
            **auth.connect_options(),
            tls=tls_context(self.plan.client_ca_file(country)),
            error_cb=on_error,
            reconnect_time_wait=0.1,
            max_reconnect_attempts=-1,
            connect_timeout=2,
            **kw,
        )
        self.conns.append(conn)
        return conn

    async def hub(self, country: str) -> Conn:
        return await self._connect(country, self.plan.hub_credentials(country))

    async def link(self, country: str, peer: str) -> Conn:
        return await self._connect(country, self.plan.link_credentials(country, peer))

    async def agency(self, country: str, name: str) -> Conn:
        auth = self.plan.agency_credentials(country, name)
        return await self._connect(country, auth, inbox_prefix=subjects.reply_prefix(name))

    async def close_all(self) -> None:
        for conn in self.conns:
            if not conn.nc.is_closed:
                await conn.nc.close()
        self.conns.clear()

    async def setup_streams(self) -> None:
        """What each hub does at startup: IXB streams, then both link streams."""
        for country in self.plan.countries:
            hub = await self.hub(country)
            await ensure_country_streams(hub.nc.jetstream(), country, AGENCIES[country])
            for peer in self.plan.peers(country):
                link = await self.link(country, peer)
                await ensure_link_streams(link.nc.jetstream(), country, peer)


async def stream_info(conn: Conn, stream: str) -> StreamInfo:
    return await conn.nc.jetstream().stream_info(stream, subjects_filter=">")


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, step: float = 0.05
) -> float:
    """Poll ``check`` until it holds; return how long it took (no fixed sleeps)."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not true after {timeout:.0f} s")
        await asyncio.sleep(step)


async def stream_count(conn: Conn, stream: str) -> int:
    return (await conn.nc.jetstream().stream_info(stream)).state.messages


@pytest.fixture
def plan(tmp_path: Path) -> FederationPlan:
    """THA, MYS and MMR on free ports, every link over TLS with a throwaway CA."""
    return tls_plan(list(AGENCIES), AGENCIES, tmp_path / "fed")


def tls_plan(
    countries: list[str], agencies: dict[str, tuple[str, ...]] | dict[str, list[str]], base: Path
) -> FederationPlan:
    """A plan on free ports with its throwaway CA and certificates written."""
    plan = FederationPlan.create(countries, agencies, base, ports=free_ports())
    write_throwaway_tls(plan)
    return plan


@contextlib.asynccontextmanager
async def running(plan: FederationPlan) -> AsyncIterator[Federation]:
    """The plan's servers, every hub's streams created; everything closed after."""
    async with start_federation(plan) as servers:
        fed = Federation(plan, servers)
        try:
            await fed.setup_streams()
            yield fed
        finally:
            await fed.close_all()


@pytest.fixture
async def federation(plan: FederationPlan) -> AsyncIterator[Federation]:
    """THA, MYS and MMR in a triangle, with every hub's streams created."""
    async with running(plan) as fed:
        yield fed


def one_country(base: Path) -> contextlib.AbstractAsyncContextManager[Federation]:
    """THA alone on one nats-server (one agency), its streams made."""
    return running(tls_plan(["THA"], {"THA": ["DSI-ATHD"]}, base / "fed"))
