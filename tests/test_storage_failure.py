"""A hub whose SQLite files refuse writes keeps serving, loses nothing, records each decision once.

Real nats-servers and hubs (in this process, so their state can be read);
the refusal is SQLite's own: a trigger added from another connection to the
hub's file makes the writes it names fail, as a full disk would make every
write fail (tests/test_storage_full.py does that to a hub process). Each
test refuses one of the two writes a routed message needs, the audit
entries or the store's routed mark, since a failure of either alone is what
could lose an entry or write it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from broker.audit.search import AuditQuery
from broker.hub import Hub
from broker.metrics import Metrics
from broker.storage_health import RETRY_S, StorageHealth
from protocols.examples import example_bodies
from protocols.identifiers import format_message_id
from protocols.messages import ReceiptStatus
from protocols.roles import Role
from tests.federation import Federation, running_federation
from tests.nats_fixtures import eventually
from tests.test_delivery import copies, receive

SENDER = "THA/DSI-ATHD"
RECEIVER = "MYS/RMP-ATIPSOM"
AGENCIES = {SENDER: [Role.TRAFFICKING_UNIT], RECEIVER: [Role.TRAFFICKING_UNIT]}


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path, AGENCIES) as federation:
        yield federation


@contextlib.contextmanager
def refused(db: Path, trigger: str, when: str) -> Iterator[None]:
    """SQLite refuses the hub's writes ``when`` (``BEFORE INSERT ON entries`` …) meanwhile."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as c:
        c.execute(f"CREATE TRIGGER {trigger} {when} BEGIN SELECT RAISE(ABORT, 'refused'); END")
    try:
        yield
    finally:
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as c:
            c.execute(f"DROP TRIGGER {trigger}")


def state(hub: Hub, name: str) -> Path:
    return hub.config.path(hub.config.hub.state_dir) / name


def events(hub: Hub, msg_id: bytes) -> list[str]:
    query = AuditQuery(msg_id=format_message_id(msg_id))
    return sorted(e.event for e in hub.audit_log.search(query, limit=100))


async def failing(hub: Hub) -> bool:
    return str(hub.health()["storage"]).startswith("failing")


async def routed(hub: Hub, msg_id: bytes) -> bool:
    known = hub.store.known(SENDER, msg_id)
    return known is not None and known.routed


async def recovered(hub: Hub) -> bool:
    return hub.health()["storage"] == "ok" and hub.health()["ready"] is True


async def test_refused_audit_entries_are_recorded_once_when_the_log_takes_writes_again(
    fed: Federation,
) -> None:
    """The entries fail: nothing is marked routed or acked, and the redelivery records them.

    Before, the store's mark succeeded beside the failed entries, and the
    redelivery was taken for a finished one: its entries were never written.
    """
    tha = fed.hubs["THA"].hub
    sender = await fed.client(SENDER)
    receiver = await fed.client(RECEIVER)
    with structlog.testing.capture_logs() as logs:
        with refused(state(tha, "audit.sqlite"), "full", "BEFORE INSERT ON entries"):
            msg_id = await sender.send(example_bodies(0)["alert"], [RECEIVER])
            await eventually(lambda: failing(tha), 20, "THA reports its storage failing")
            health = tha.health()
            assert health["ready"] is False and "refused" in str(health["storage"])
            # published before the failed commit (as before a crash): MYS has it once
            item = await receive(receiver, msg_id, timeout=30)
            await item.ack()
            before = tha.metrics.counter_value("ixb_storage_failures_total", writer="settle")

            async def retried() -> bool:
                failures = tha.metrics.counter_value("ixb_storage_failures_total", writer="settle")
                return failures >= before + 2

            await eventually(retried, 20, "the message came back and failed again")
            assert events(tha, msg_id) == []  # not one entry of it yet
            assert tha.store.known(SENDER, msg_id) is not None
            assert not tha.store.known(SENDER, msg_id).routed  # type: ignore[union-attr]
            assert "ixb_storage_failing 1.0" in tha.metrics.render()
        await eventually(lambda: recovered(tha), 20, "THA recovered by itself")
    # "ok" follows any write that succeeds (another writer's may come first): the message's
    # own entries and mark follow on its next redelivery
    await eventually(lambda: routed(tha, msg_id), 20, "the message marked routed")
    assert events(tha, msg_id) == ["accepted", "relayed"]
    assert await copies(receiver, msg_id, 2.0) == 0  # the redeliveries' publishes: no-ops
    tha.audit_log.verify_storage()
    states = [e for e in logs if e["event"] in ("storage_failed", "storage_recovered")]
    assert [e["event"] for e in states] == ["storage_failed", "storage_recovered"], states
    assert "refused" in states[0]["detail"]


async def test_a_refused_routed_mark_neither_loses_nor_repeats_the_entries(
    fed: Federation,
) -> None:
    """The entries are in, the mark fails: the message comes back, found in the log, and gets
    its mark alone, with no second entry, publish or receipt.

    Before, both ran side by side and the redelivery decided it again as new:
    accepted and relayed twice in the log.
    """
    tha = fed.hubs["THA"].hub
    sender = await fed.client(SENDER)
    receiver = await fed.client(RECEIVER)
    with refused(state(tha, "hub.sqlite"), "full", "BEFORE UPDATE OF routed ON messages"):
        msg_id = await sender.send(example_bodies(0)["alert"], [RECEIVER])
        item = await receive(receiver, msg_id, timeout=30)
        await item.ack()
        await eventually(lambda: failing(tha), 20, "THA reports its storage failing")
        before = tha.metrics.counter_value("ixb_storage_failures_total", writer="settle")

        async def retried() -> bool:
            failures = tha.metrics.counter_value("ixb_storage_failures_total", writer="settle")
            return failures >= before + 2

        await eventually(retried, 20, "the message came back and its mark failed again")
        assert tha.health()["ready"] is False
        assert events(tha, msg_id) == ["accepted", "relayed"]
    await eventually(lambda: recovered(tha), 20, "THA recovered by itself")
    await eventually(lambda: routed(tha, msg_id), 20, "the mark applied on a redelivery")
    assert events(tha, msg_id) == ["accepted", "relayed"]  # once, and no duplicate entry
    assert tha.metrics.counter_value("ixb_messages_total", decision="duplicate") == 0
    assert await copies(receiver, msg_id, 2.0) == 0
    mys = fed.hubs["MYS"].hub
    assert events(mys, msg_id) == ["accepted", "delivered"]
    await sender.wait_receipt(msg_id, ReceiptStatus.DELIVERED, timeout=20)
    await copies(sender, msg_id, 2.0)  # anything more the sender would get
    statuses = [r.status.value for r in sender.receipts[format_message_id(msg_id)]]
    assert sorted(statuses) == ["accepted", "delivered", "relayed"]
    tha.audit_log.verify_storage()


def test_storage_health_logs_each_change_of_state_once() -> None:
    metrics = Metrics()
    health = StorageHealth(metrics)
    with structlog.testing.capture_logs() as logs:
        assert health.status() == "ok" and not health.failing
        health.failed("settle", sqlite3.OperationalError("database or disk is full"))
        health.failed("checkpoint", OSError(27, "File too large"))
        health.failed("settle", sqlite3.OperationalError("disk I/O error"))
        assert health.status() == "failing: disk I/O error"
        health.ok("settle")
        assert health.failing  # the checkpointer's last write failed still
        health.ok("prune")  # a writer that never failed changes nothing
        health.ok("checkpoint")
        assert health.status() == "ok"
        health.ok("checkpoint")
    assert [(e["event"], e.get("writer")) for e in logs] == [
        ("storage_failed", "settle"),
        ("storage_recovered", None),
    ]
    assert logs[0]["detail"] == "database or disk is full" and logs[1]["repeats"] == 2
    assert metrics.counter_value("ixb_storage_failures_total", writer="settle") == 2
    assert "ixb_storage_failing 0.0" in metrics.render()


async def test_a_hub_started_on_a_refusing_disk_waits_unready_then_starts_by_itself(
    fed: Federation,
) -> None:
    await fed.stop_hub("THA")
    audit_db = fed.deployment.base / "state" / "THA" / "audit.sqlite"
    with refused(audit_db, "full", "BEFORE INSERT ON entries"):
        starting = asyncio.create_task(fed.start_hub("THA"))  # until ready
        hub: Hub | None = None
        for _ in range(100):
            running = fed.hubs.get("THA")
            if running is not None and await failing(running.hub):
                hub = running.hub
                break
            await asyncio.sleep(0.05)
        assert hub is not None, "THA did not report its storage failing"
        await asyncio.sleep(2 * RETRY_S)  # it retries, and waits
        assert not starting.done() and hub.health()["ready"] is False
        assert hub.metrics.counter_value("ixb_storage_failures_total", writer="start") >= 2
    await asyncio.wait_for(starting, 30)
    assert hub.health()["ready"] is True and hub.health()["storage"] == "ok"
    started = hub.audit_log.search(AuditQuery(event="hub_started"), limit=10)
    assert len(started) == 2  # the first start's, and this one's: once
