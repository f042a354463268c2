"""Copying the audit log into the ``AUDIT`` stream behind its fence (broker.audit_copy),
on a real nats-server: a try whose answer was lost is this hub's own progress, a batch
of another process deposes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.client import JetStreamContext

from broker.audit import shipping
from broker.audit.log import AuditLog
from broker.audit_copy import AuditCopy, append_leaves
from broker.auditing import to_record
from broker.metrics import Metrics
from protocols.audit import AuditEvent, make_entry
from tests.nats_fixtures import one_country
from transport.clock import wall_ms
from transport.streams import AUDIT_STREAM


@pytest.fixture
async def js(tmp_path: Path) -> AsyncIterator[JetStreamContext]:
    async with one_country(tmp_path) as fed:
        yield (await fed.hub("THA")).nc.jetstream()


def grown(log: AuditLog, count: int, detail: str = "") -> AuditLog:
    for _ in range(count):
        entry = make_entry("THA/HUB", wall_ms(), AuditEvent.HUB_STARTED, detail=detail or None)
        log.append([to_record(entry)])
    return log


async def publish_behind(copy: AuditCopy, log: AuditLog, first: int) -> None:
    """What ``_publish`` sends for the leaves from ``first``, stored by the stream while the
    copy never hears back (the answer lost, as through a connection dropping replies)."""
    js = copy.js
    assert js is not None
    (batch,) = shipping.batches(log.entries(first, log.size))
    await js.publish(
        copy.subject,
        batch.encode(),
        headers={
            "Nats-Msg-Id": batch.msg_id("THA"),
            "Nats-Expected-Last-Sequence": str(copy.seq),
        },
    )


async def stream_leaves(js: JetStreamContext) -> list[bytes]:
    info = await js.stream_info(AUDIT_STREAM)
    found = [
        shipping.decode_batch((await js.get_msg(AUDIT_STREAM, seq)).data or b"")
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    return shipping.assemble(found)


async def test_a_try_whose_answer_was_lost_is_progress_though_leaves_came_since(
    js: JetStreamContext, tmp_path: Path
) -> None:
    log = grown(AuditLog(tmp_path / "audit.sqlite"), 3)
    copy = AuditCopy(log, "THA", Metrics(), js=js)
    await copy.check_at_start()
    await publish_behind(copy, log, 0)  # leaves 0..2 stored, the copy does not know
    grown(log, 2)  # appended before the next try: it cuts 0..4, refused by the fence
    assert await copy.ship() == 5
    assert not copy.deposed.is_set()
    assert await stream_leaves(js) == [e.data for e in log.entries(0, log.size)]
    # a restart finds the stream's last batch within its log
    again = AuditCopy(log, "THA", Metrics(), js=js)
    await again.check_at_start()
    assert again.shipped == 5
    log.close()


async def test_a_batch_another_process_wrote_deposes_this_one(
    js: JetStreamContext, tmp_path: Path
) -> None:
    log = grown(AuditLog(tmp_path / "audit.sqlite"), 3)
    copy = AuditCopy(log, "THA", Metrics(), js=js)
    await copy.check_at_start()
    assert await copy.ship() == 3
    # another process that followed the stream to 3 leaves, then appended its own
    other = AuditLog(tmp_path / "other.sqlite")
    append_leaves(other, [e.data for e in log.entries(0, 3)])
    grown(other, 2, "the other process")
    other_copy = AuditCopy(other, "THA", Metrics(), js=js, shipped=3, seq=copy.seq)
    await publish_behind(other_copy, other, 3)
    grown(log, 2, "this process")
    assert await copy.ship() == 3
    assert copy.deposed.is_set()
    other.close()
    log.close()
