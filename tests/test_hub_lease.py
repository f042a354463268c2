"""The active-hub lease on a real nats-server's JetStream KV (broker.lease), and the fence
on the ``AUDIT`` stream that keeps a second writer out (broker.audit_copy)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.audit.log import AuditLog
from broker.audit_copy import AuditCopy, append_leaves
from broker.lease import HubLease
from broker.metrics import Metrics
from tests.nats_fixtures import Federation, one_country
from tests.test_audit_shipping import entries
from transport.streams import AUDIT_STREAM

TTL = 2.0
SAFETY = 0.5


@pytest.fixture
async def country(tmp_path: Path) -> AsyncIterator[Federation]:
    async with one_country(tmp_path) as fed:
        yield fed


async def lease(fed: Federation, instance: str) -> HubLease:
    conn = await fed.hub("THA")
    return HubLease(conn.nc.jetstream(), instance, ttl_s=TTL, safety_s=SAFETY)


async def test_one_holder_at_a_time_and_a_restart_takes_its_own_back(
    country: Federation,
) -> None:
    a, b = await lease(country, "a"), await lease(country, "b")
    assert await a.try_acquire()
    assert a.valid() and 0 < a.remaining() <= TTL - SAFETY
    assert not await b.try_acquire()
    assert not b.valid()
    assert await b.holder() == "a"
    assert await a.renew()
    # "a" restarted (a new process, same instance name) takes the key back at once ...
    a2 = await lease(country, "a")
    assert await a2.try_acquire()
    # ... and the old process's next renewal finds it lost
    assert not await a.renew()
    assert not a.valid()
    assert not await b.try_acquire()


async def test_a_silent_holder_stops_counting_on_the_lease_before_another_takes_it(
    country: Federation,
) -> None:
    a, b = await lease(country, "a"), await lease(country, "b")
    assert await a.try_acquire()
    start = time.monotonic()
    a_gave_up: float | None = None
    while time.monotonic() - start < TTL * 4:
        if a_gave_up is None and not a.valid():
            a_gave_up = time.monotonic()
        if await b.try_acquire():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the key never expired")
    took = time.monotonic()
    assert a_gave_up is not None and a_gave_up < took
    assert took - start >= TTL - 0.2  # not before the key's TTL
    assert not await a.renew()  # the old holder learns it lost
    assert await b.holder() == "b"


async def test_a_released_lease_is_taken_at_once(country: Federation) -> None:
    a, b = await lease(country, "a"), await lease(country, "b")
    assert await a.try_acquire()
    await a.release()
    assert not a.valid()
    assert await b.try_acquire()
    assert await a.holder() == "b"


async def test_hold_renews_until_stopped_and_returns_when_taken(country: Federation) -> None:
    a = await lease(country, "a")
    assert await a.try_acquire()
    stop = asyncio.Event()
    holding = asyncio.create_task(a.hold(stop))
    await asyncio.sleep(TTL * 1.5)  # beyond the TTL: only renewals keep it
    assert a.valid() and not holding.done()
    b = await lease(country, "b")
    assert not await b.try_acquire()
    stop.set()
    await asyncio.wait_for(holding, 5)


def test_names_and_margins_are_checked() -> None:
    with pytest.raises(ValueError, match="instance"):
        HubLease(None, "a b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        HubLease(None, "a", ttl_s=1.0, safety_s=2.0)  # type: ignore[arg-type]


async def _copy(fed: Federation, log: AuditLog, **kw: object) -> AuditCopy:
    conn = await fed.hub("THA")
    copy = AuditCopy(log, "THA", Metrics(), **kw)  # type: ignore[arg-type]
    copy.js = conn.nc.jetstream()
    return copy


async def test_the_audit_copy_is_fenced_against_a_second_writer(
    country: Federation, tmp_path: Path
) -> None:
    ours, theirs = AuditLog(tmp_path / "ours.sqlite"), AuditLog(tmp_path / "theirs.sqlite")
    try:
        append_leaves(ours, entries(5))
        append_leaves(theirs, entries(5, 100))
        first = await _copy(country, ours)
        await first.check_at_start()
        assert await first.ship() == 5 and not first.deposed.is_set()

        # an earlier try whose answer was lost: sent again, found stored, not a takeover
        stored_seq = first.seq
        first.seq, first.shipped = stored_seq - 1, 0
        assert await first.ship() == 5 and first.seq == stored_seq
        assert not first.deposed.is_set()

        # a second process that believes the stream is where it last saw it: refused
        second = await _copy(country, theirs)
        second.shipped, second.seq = 0, 0
        assert await second.ship() == 0
        assert second.deposed.is_set()
        assert not await second.through(5)
        info = await country.conns[0].nc.jetstream().stream_info(AUDIT_STREAM)
        assert info.state.messages == 1  # only the first process's batch

        # a process whose lease ran out copies nothing
        append_leaves(ours, entries(2, 5))
        lapsed = await _copy(country, ours, may_write=lambda: False)
        await lapsed.check_at_start()
        assert await lapsed.ship() == 5 and not await lapsed.through(7)
        assert await first.through(7)  # the holder still can
    finally:
        ours.close()
        theirs.close()
