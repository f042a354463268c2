"""transport.fetch against a real nats-server: the contract with nats-py's internals.

``drain_waiting`` has two paths. The fast one speaks the JetStream pull
protocol on four private attributes of nats-py's ``PullSubscription``; if an
upgrade removes them, ``test_installed_nats_py_has_the_internals`` fails
first and names the missing one. The fallback uses only the public ``fetch``
and is run here through a wrapper that has nothing else, so it is exercised
for real, not just present. Both must return exactly the messages that are
ready: no fewer, no more, in stream order.

The reader is an agency on its own inbox consumer, connected as the SDK
connects, so the pulls also pass the agency's NATS permissions.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from broker.natsd import NatsServer
from protocols import subjects
from protocols.identifiers import Principal
from tests.nats_fixtures import tls_plan
from transport.connect import connect
from transport.fetch import DRAIN_TIMEOUT_S, drain_waiting, fetch_ready
from transport.streams import INBOX_STREAM, ensure_country_streams

AGENCY = Principal("THA", "DSI-ATHD")
FAST = DRAIN_TIMEOUT_S / 2
"""A drain that took longer than this waited for its safety timeout instead of the 404."""
INTERNALS = ("_nc", "_nms", "_deliver", "_sub")


@dataclass
class Inbox:
    hub: NatsClient
    agency: NatsClient
    psub: JetStreamContext.PullSubscription

    async def put(self, *payloads: bytes) -> None:
        """Store messages in the agency's inbox, each acknowledged by JetStream."""
        js = self.hub.jetstream()
        for data in payloads:
            await js.publish(subjects.inbox(AGENCY), data, timeout=5)


class PublicOnly:
    """A pull subscription reduced to nats-py's documented API: ``fetch`` and nothing else."""

    def __init__(self, psub: JetStreamContext.PullSubscription) -> None:
        self._psub_fetch = psub.fetch
        self.calls: list[tuple[int, float | None]] = []

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Msg]:
        self.calls.append((batch, timeout))
        return await self._psub_fetch(batch, timeout=timeout)


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    plan = tls_plan(["THA"], {"THA": [AGENCY.name]}, tmp_path)
    ca_file = plan.client_ca_file("THA")
    async with NatsServer(plan, "THA"):
        auth = plan.hub_credentials("THA")
        hub = await connect(plan.client_url("THA"), auth=auth, name="test-hub", ca_file=ca_file)
        auth = plan.agency_credentials("THA", AGENCY.name)
        agency = await connect(
            plan.client_url("THA"),
            auth=auth,
            ca_file=ca_file,
            name="test-agency",
            inbox_prefix=subjects.reply_prefix(AGENCY.name),
        )
        try:
            await ensure_country_streams(hub.jetstream(), "THA", [AGENCY.name])
            psub = await agency.jetstream().pull_subscribe_bind(
                AGENCY.name,
                INBOX_STREAM,
                inbox_prefix=(subjects.reply_prefix(AGENCY.name) + ".").encode(),
            )
            yield Inbox(hub, agency, psub)
        finally:
            await agency.close()
            await hub.close()


def data(msgs: list[Msg]) -> list[bytes]:
    return [m.data for m in msgs]


# --- the fast path ------------------------------------------------------------------


async def test_installed_nats_py_has_the_internals(inbox: Inbox) -> None:
    psub = inbox.psub
    missing = [a for a in INTERNALS if not hasattr(psub, a)]
    assert not missing, f"nats-py's PullSubscription lost {missing}: drain_waiting falls back"
    assert psub._nc is inbox.agency
    assert psub._nms == f"$JS.API.CONSUMER.MSG.NEXT.{INBOX_STREAM}.{AGENCY.name}"
    assert isinstance(psub._deliver, str)
    assert psub._deliver.startswith(subjects.reply_prefix(AGENCY.name) + ".")
    assert psub._sub.subject == psub._deliver
    assert callable(psub._sub.next_msg)


async def test_fast_path_drains_a_burst_in_one_call(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = [f"m{i}".encode() for i in range(5)]
    await inbox.put(*burst)

    async def no_fetch(*args: object, **kwargs: object) -> list[Msg]:
        raise AssertionError("the fast path must not call fetch")

    monkeypatch.setattr(inbox.psub, "fetch", no_fetch)
    start = time.monotonic()
    got = await drain_waiting(inbox.psub, 10)
    took = time.monotonic() - start
    assert data(got) == burst
    assert took < FAST, f"{took:.3f} s: waited instead of ending on the server's 404"

    start = time.monotonic()
    assert await drain_waiting(inbox.psub, 10) == []
    assert time.monotonic() - start < FAST


async def test_fast_path_takes_no_more_than_asked(inbox: Inbox) -> None:
    burst = [f"m{i}".encode() for i in range(5)]
    await inbox.put(*burst)
    first = await drain_waiting(inbox.psub, 3)
    assert data(first) == burst[:3]
    rest = await drain_waiting(inbox.psub, 3)
    assert data(rest) == burst[3:]  # the remaining two, none delivered twice
    for msg in first + rest:
        await msg.ack_sync()
    info = await inbox.psub.consumer_info()
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_fetch_ready_returns_the_first_and_the_ready_rest(inbox: Inbox) -> None:
    with pytest.raises(nats.errors.TimeoutError):
        await fetch_ready(inbox.psub, 10, timeout=0.2)
    burst = [f"m{i}".encode() for i in range(4)]
    await inbox.put(*burst)
    start = time.monotonic()
    got = await fetch_ready(inbox.psub, 10, timeout=5)
    assert data(got) == burst
    assert time.monotonic() - start < FAST  # no wait for a full batch of 10
    await inbox.put(b"one", b"two")
    assert data(await fetch_ready(inbox.psub, 1, timeout=5)) == [b"one"]


# --- the fallback ---------------------------------------------------------------


async def test_fallback_returns_exactly_the_ready_messages(inbox: Inbox) -> None:
    public = PublicOnly(inbox.psub)
    assert not any(hasattr(public, a) for a in INTERNALS)
    burst = [f"m{i}".encode() for i in range(5)]
    await inbox.put(*burst)
    got = await drain_waiting(public, 10, fallback_timeout=0.5)
    assert data(got) == burst
    assert public.calls == [(10, 0.5)]  # it really went through fetch
    assert await drain_waiting(public, 10) == []
    assert len(public.calls) == 2


async def test_fallback_with_its_short_default_loses_nothing(inbox: Inbox) -> None:
    """5 ms may end before everything arrived: what it misses waits for the next fetch."""
    public = PublicOnly(inbox.psub)
    burst = [f"m{i}".encode() for i in range(5)]
    await inbox.put(*burst)
    got = await drain_waiting(public, 10)
    while len(got) < len(burst):
        got += await fetch_ready(public, 10, timeout=5)
    assert data(got) == burst


async def test_fetch_ready_through_the_fallback(inbox: Inbox) -> None:
    public = PublicOnly(inbox.psub)
    burst = [f"m{i}".encode() for i in range(3)]
    await inbox.put(*burst)
    got = await fetch_ready(public, 10, timeout=5)
    while len(got) < len(burst):  # the short fallback may leave some for the next call
        got += await fetch_ready(public, 10, timeout=5)
    assert data(got) == burst
    assert public.calls[0] == (1, 5)
    assert public.calls[1][0] == 9
