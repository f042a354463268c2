"""Group commit of lookup entries: many lookups per fsync, and a refused group fails whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.audit.log import AuditLog
from broker.auditing import to_record
from broker.groupcommit import GroupCommitter
from broker.metrics import Metrics
from broker.storage_health import StorageHealth
from broker.store import HubStore
from protocols.audit import AuditEntry, AuditEvent, make_entry
from protocols.envelope import decode_envelope
from tests.conftest import NOW_MS
from tests.test_pipeline import seal


def _entry(n: int) -> AuditEntry:
    return make_entry(
        "THA/HUB", NOW_MS + n, AuditEvent.REJECTED, msg_id=n.to_bytes(16, "big"), code="ixb.E_BUSY"
    )


def _committer(
    tmp_path: Path, store: HubStore | None = None
) -> tuple[GroupCommitter, AuditLog, Metrics]:
    log = AuditLog(tmp_path / "audit.sqlite")
    store = store or HubStore(tmp_path / "hub.sqlite")
    metrics = Metrics()
    committer = GroupCommitter(
        record=lambda entries: log.append([to_record(e) for e in entries]),
        sync=store.sync,
        mark=lambda marks: store.mark_routed(*marks, durable=False),
        storage=StorageHealth(metrics),
        metrics=metrics,
    )
    return committer, log, metrics


async def test_concurrent_lookups_share_commits_and_all_are_durable(tmp_path: Path) -> None:
    committer, log, metrics = _committer(tmp_path)
    stop = asyncio.Event()
    writer = asyncio.create_task(committer.run(stop))

    async def lookup(n: int) -> None:
        await asyncio.sleep(0.001 * (n % 7))
        await committer.submit([_entry(n), _entry(n + 10_000)])

    await asyncio.wait_for(asyncio.gather(*(lookup(n) for n in range(300))), timeout=30)
    assert log.size == 600
    commits = metrics.counter_value("ixb_lookup_commits_total")
    assert 1 <= commits < 300  # many lookups per fsync
    assert metrics.counter_value("ixb_lookup_committed_entries_total") == 600
    stop.set()
    await asyncio.wait_for(writer, timeout=5)


async def test_a_group_the_disk_refuses_fails_every_waiter_and_records_nothing(
    tmp_path: Path,
) -> None:
    committer, log, _metrics = _committer(tmp_path)
    log.close()  # every write now fails, as a refusing disk's would
    waiting = [committer.submit([_entry(n)]) for n in range(5)]
    await committer.commit_once()
    for f in waiting:
        with pytest.raises(Exception, match="closed"):
            f.result()


async def test_the_writer_stops_only_after_committing_what_was_submitted(tmp_path: Path) -> None:
    committer, log, _metrics = _committer(tmp_path)
    stop = asyncio.Event()
    stop.set()
    last = committer.submit([_entry(1)])
    await asyncio.wait_for(committer.run(stop), timeout=5)
    assert last.done() and last.exception() is None
    assert log.size == 1


async def test_routed_marks_are_written_with_a_later_commit_or_when_the_writer_stops(
    tmp_path: Path,
) -> None:
    store = HubStore(tmp_path / "hub.sqlite")
    committer, _log, _metrics = _committer(tmp_path, store)
    headers = [decode_envelope(seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])).header for _ in range(2)]
    for h in headers:
        store.remember(h, b"\0" * 32)
    first = committer.submit([_entry(1)], [(headers[0].sender, headers[0].id)])
    await committer.commit_once()
    assert first.exception() is None
    second = committer.submit([_entry(2)], [(headers[1].sender, headers[1].id)])
    await committer.commit_once()  # carries the first group's mark
    assert second.exception() is None
    routed = [store.known(h.sender, h.id) for h in headers]
    assert [k is not None and k.routed for k in routed] == [True, False]
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(committer.run(stop), timeout=5)  # the last mark, at the end
    last = store.known(headers[1].sender, headers[1].id)
    assert last is not None and last.routed
