"""Replay rows of the lookup path: known to both paths at once, in the store by the group commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.audit.log import AuditLog
from broker.auditing import to_record
from broker.groupcommit import GroupCommitter
from broker.metrics import Metrics
from broker.pipeline import Accepted, Pipeline
from broker.seen import SeenRows
from broker.storage_health import StorageHealth
from protocols.audit import AuditEvent, make_entry
from protocols.envelope import decode_envelope
from tests.test_pipeline import NOW, _squat, code, make_pipeline, seal, store_of


def _paths(tmp_path: Path) -> tuple[Pipeline, Pipeline, SeenRows]:
    """The durable path's pipeline and the lookup path's, over one set of replay rows."""
    durable = make_pipeline(tmp_path)
    rows = SeenRows(store_of(durable))
    durable.seen = rows
    lookup = Pipeline(
        durable.config, durable.identity, durable.keys, rows.deferred(), durable.limiter
    )
    return durable, lookup, rows


def _committer(tmp_path: Path, rows: SeenRows) -> tuple[GroupCommitter, AuditLog]:
    log = AuditLog(tmp_path / "audit.sqlite")
    metrics = Metrics()
    committer = GroupCommitter(
        record=lambda entries: log.append([to_record(e) for e in entries]),
        sync=rows.store.sync,
        mark=lambda marks: rows.store.mark_routed(*marks),
        storage=StorageHealth(metrics),
        metrics=metrics,
        rows=rows,
    )
    return committer, log


async def test_a_lookups_row_waits_for_the_group_commit_but_is_known_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    durable, lookup, rows = _paths(tmp_path)
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    header = decode_envelope(data).header
    assert isinstance(lookup.from_local(data, "DSI-ATHD", NOW), Accepted)
    assert rows.store.known(header.sender, header.id) is None  # nothing written on the loop
    assert rows.known(header.sender, header.id) is not None
    # the sender's other envelope under the same id, on the durable path meanwhile: a replay
    again = _squat(monkeypatch, "THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"], header.id)
    assert code(durable.from_local(again, "DSI-ATHD", NOW)) == "ixb.E_REPLAY"

    committer, log = _committer(tmp_path, rows)
    entry = make_entry("THA/HUB", NOW, AuditEvent.ACCEPTED, msg_id=header.id, code=None)
    done = committer.submit([entry], [(header.sender, header.id)])
    await committer.commit_once()
    assert done.exception() is None
    assert rows.store.known(header.sender, header.id) is not None  # written by the group
    await committer.flush_marks()  # the mark goes with the next group, or when idle
    known = rows.store.known(header.sender, header.id)
    assert known is not None and known.routed
    assert rows.unwritten() == []
    assert log.size == 1


async def test_rows_a_refusing_disk_did_not_take_are_written_by_the_next_group(
    tmp_path: Path,
) -> None:
    _durable, lookup, rows = _paths(tmp_path)
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    header = decode_envelope(data).header
    assert isinstance(lookup.from_local(data, "DSI-ATHD", NOW), Accepted)
    committer, log = _committer(tmp_path, rows)
    broken = AuditLog(tmp_path / "broken.sqlite")
    broken.close()
    committer.record = lambda entries: broken.append([to_record(e) for e in entries])
    entry = make_entry("THA/HUB", NOW, AuditEvent.ACCEPTED, msg_id=header.id, code=None)
    failed = committer.submit([entry])
    await committer.commit_once()
    assert failed.exception() is not None
    assert len(rows.unwritten()) == 1  # still held, still known
    committer.record = lambda entries: log.append([to_record(e) for e in entries])
    await committer.commit_once()
    assert rows.unwritten() == []
    assert rows.store.known(header.sender, header.id) is not None
