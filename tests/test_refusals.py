"""A flood of refusals: every one answered and counted, the audit log grows by a bounded amount."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.audit.search import AuditQuery
from broker.refusals import RefusalWindows, Suppressed
from protocols import subjects
from protocols.audit import decode_entry
from tests.federation import Federation, running_federation

T0 = 1_795_000_000_000


def test_the_first_refusals_of_a_window_are_logged_the_rest_counted() -> None:
    w = RefusalWindows(window_ms=1_000, logged_per_window=3)
    admitted = [w.admit("ingress:DSI-ATHD", "ixb.E_EXPIRED", T0 + i) for i in range(10)]
    assert admitted == [True] * 3 + [False] * 7
    assert w.admit("ingress:DSI-ATHD", "ixb.E_REPLAY", T0)  # another code: its own window
    assert w.admit("ingress:IMMIGRATION", "ixb.E_EXPIRED", T0)  # another source: its own
    assert w.close(T0 + 999) == []  # still open
    assert w.close(T0 + 1_000) == [
        Suppressed("ingress:DSI-ATHD", "ixb.E_EXPIRED", 7, T0, T0 + 1_000)
    ]
    assert w.close(T0 + 5_000) == []  # reported once


def test_a_refusal_after_the_window_opens_the_next_and_the_count_is_kept() -> None:
    w = RefusalWindows(window_ms=1_000, logged_per_window=1)
    assert w.admit("link:MMR", "ixb.E_SIGNATURE", T0)
    assert not w.admit("link:MMR", "ixb.E_SIGNATURE", T0 + 10)
    assert w.admit("link:MMR", "ixb.E_SIGNATURE", T0 + 1_500)  # the next window's first
    assert w.close(T0 + 1_600) == [Suppressed("link:MMR", "ixb.E_SIGNATURE", 1, T0, T0 + 1_000)]


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as f:
        yield f


async def test_a_flood_of_garbage_grows_the_audit_log_by_a_bounded_amount(fed: Federation) -> None:
    hub = fed.hubs["THA"].hub
    hub.settler.refusals = RefusalWindows(window_ms=2_000, logged_per_window=5)
    sender = await fed.client("THA/DSI-ATHD")
    flood = 300
    for _ in range(flood):
        await sender.js.publish(
            subjects.ingress(sender.principal), b"\xc1", headers={"Nats-Msg-Id": str(uuid.uuid4())}
        )
    query = AuditQuery(event="rejected")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while hub.metrics.counter_value("ixb_messages_total", decision="rejected") < flood:
        assert loop.time() < deadline, "the hub did not decide the whole flood"
        await asyncio.sleep(0.1)
    rows = hub.audit_log.search(query, limit=1_000)
    # every refusal decided and answered, but only the window's allowance logged one by one
    assert len(rows) <= 2 * 5, [r.code for r in rows]
    deadline = loop.time() + 10
    while True:  # the windows close, and the counts are logged
        summed = [r for r in hub.audit_log.search(query, limit=1_000) if r.msg_id is None]
        counted = sum(int(decode_entry(r.data).detail.split(" ", 1)[0]) for r in summed)  # type: ignore[union-attr]
        logged_one_by_one = len(hub.audit_log.search(query, limit=1_000)) - len(summed)
        if logged_one_by_one + counted == flood:
            break
        assert loop.time() < deadline, (logged_one_by_one, counted)
        await asyncio.sleep(0.2)
    assert {r.code for r in summed} <= {"ixb.E_MALFORMED", "ixb.E_RATE_LIMITED"}
    assert hub.health()["ready"]


def test_a_refusal_taken_back_is_counted_again_when_it_comes_back() -> None:
    """A batch whose audit commit failed is naked: its refusals are admitted again later."""
    w = RefusalWindows(window_ms=1_000, logged_per_window=1)
    assert w.admit("ingress:DSI-ATHD", "ixb.E_EXPIRED", T0)
    assert not w.admit("ingress:DSI-ATHD", "ixb.E_EXPIRED", T0 + 1)
    w.retract("ingress:DSI-ATHD", "ixb.E_EXPIRED", logged=True)
    w.retract("ingress:DSI-ATHD", "ixb.E_EXPIRED", logged=False)
    w.retract("link:MMR", "ixb.E_EXPIRED", logged=True)  # no window: nothing to take back
    assert w.admit("ingress:DSI-ATHD", "ixb.E_EXPIRED", T0 + 2)  # the same refusal, again
    assert not w.admit("ingress:DSI-ATHD", "ixb.E_EXPIRED", T0 + 3)
    assert w.close(T0 + 1_000) == [
        Suppressed("ingress:DSI-ATHD", "ixb.E_EXPIRED", 1, T0, T0 + 1_000)
    ]
