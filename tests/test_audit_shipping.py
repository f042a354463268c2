"""The audit log's copy in the ``AUDIT`` stream: batches, their assembly, and a rebuild.

What goes into the stream is cut into batches (:func:`broker.audit.shipping.batches`);
what comes back, in any order, repeated or overlapping after a crash, assembles into
the same leaves, and two different leaves at one index or a gap are refused. A log
rebuilt from them (:func:`broker.audit_rebuild.apply_leaves`) has the original's root;
a log that holds other leaves is refused.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit import shipping
from broker.audit.log import AuditLog
from broker.audit.records import StoredEntry
from broker.audit.shipping import Batch, assemble, decode_batch
from broker.audit_copy import append_leaves, apply_batches
from broker.audit_rebuild import apply_leaves
from broker.auditing import to_record
from protocols.audit import AuditEvent, decode_entry, encode_entry, make_entry
from protocols.errors import AuditStreamError


def stored(leaves: list[bytes], start: int = 0) -> list[StoredEntry]:
    return [
        StoredEntry(start + i, leaf, 0, "accepted", None, None, None, (), None, None, None)
        for i, leaf in enumerate(leaves)
    ]


def entries(n: int, start: int = 0) -> list[bytes]:
    return [
        encode_entry(
            make_entry(
                "THA/HUB",
                1_700_000_000_000 + i,
                AuditEvent.ACCEPTED,
                msg_id=i.to_bytes(16, "big"),
                detail=f"entry {i}",
            )
        )
        for i in range(start, start + n)
    ]


leaf_lists = st.lists(st.binary(min_size=1, max_size=40), min_size=0, max_size=60)


@settings(max_examples=200)
@given(leaves=leaf_lists, cuts=st.lists(st.integers(0, 60), max_size=8), seed=st.integers())
def test_overlapping_repeated_batches_in_any_order_assemble_to_the_leaves(
    leaves: list[bytes], cuts: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    found = shipping.batches(stored(leaves))
    # what a crash between a publish and its mark leaves: batches sent again from an
    # earlier index, with more leaves, and some twice
    for cut in cuts:
        if cut < len(leaves):
            found += shipping.batches(stored(leaves[cut:], cut))
    found += rng.sample(found, k=min(3, len(found)))
    rng.shuffle(found)
    assert assemble(decode_batch(b.encode()) for b in found) == leaves


@given(leaves=st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=1500))
@settings(max_examples=30)
def test_batches_are_consecutive_and_within_their_limits(leaves: list[bytes]) -> None:
    cut = shipping.batches(stored(leaves, 7))
    assert cut[0].first == 7 and cut[-1].end == 7 + len(leaves)
    for before, after in itertools.pairwise(cut):
        assert before.end == after.first
    for batch in cut:
        assert len(batch.leaves) <= shipping.MAX_BATCH_LEAVES
        assert len(batch.leaves) == 1 or sum(map(len, batch.leaves)) <= shipping.MAX_BATCH_BYTES
    assert [leaf for b in cut for leaf in b.leaves] == leaves
    assert len({b.msg_id("THA") for b in cut}) == len(cut)


def test_two_different_leaves_at_one_index_are_refused() -> None:
    with pytest.raises(AuditStreamError, match="two different leaves at index 1"):
        assemble([Batch(0, (b"a", b"b")), Batch(1, (b"B",))])


def test_a_missing_index_is_refused() -> None:
    with pytest.raises(AuditStreamError, match="no leaf at index 2"):
        assemble([Batch(0, (b"a", b"b")), Batch(3, (b"d",))])


@pytest.mark.parametrize(
    "data",
    [b"", b"\x93\x02\x00\x91\xc4\x01a", b"\x93\x01\xff\x91\xc4\x01a", b"\x93\x01\x00\x90", b"x"],
    ids=["empty", "format-2", "negative-first", "no-leaves", "not-msgpack"],
)
def test_what_is_not_a_batch_is_refused(data: bytes) -> None:
    with pytest.raises(AuditStreamError):
        decode_batch(data)


def _log(path: Path, leaves: list[bytes]) -> AuditLog:
    log = AuditLog(path)
    if leaves:
        log.append([to_record(decode_entry(b)) for b in leaves])
    return log


def test_a_log_rebuilt_from_the_stream_has_the_original_root(tmp_path: Path) -> None:
    leaves = entries(2500)
    original = _log(tmp_path / "original.sqlite", leaves)
    older = _log(tmp_path / "older.sqlite", leaves[:900])  # an older backup
    empty = _log(tmp_path / "lost.sqlite", [])  # the disk lost
    try:
        for log, before in ((older, 900), (empty, 0)):
            done = apply_leaves(log, leaves)
            assert (done.before, done.appended, done.size) == (before, 2500 - before, 2500)
            assert log.root() == original.root() and done.root == original.root().hex()
            found = log.search(limit=1)[0]  # the search index was rebuilt too
            assert found.index == 2499 and found.event == "accepted"
        again = apply_leaves(older, leaves[:2000])  # the log is ahead of the stream
        assert (again.appended, again.ahead, again.size) == (0, 500, 2500)
    finally:
        for log in (original, older, empty):
            log.close()


def test_a_log_with_other_leaves_is_not_rebuilt_from_the_stream(tmp_path: Path) -> None:
    leaves = entries(50)
    other = entries(10, start=1000)
    log = _log(tmp_path / "other.sqlite", leaves[:20] + other[:1])
    try:
        with pytest.raises(AuditStreamError, match="leaf 20 of the audit log differs"):
            apply_leaves(log, leaves)
        assert log.size == 21  # nothing appended
    finally:
        log.close()


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(1, 40),
    held=st.integers(0, 40),
    steps=st.lists(st.tuples(st.integers(0, 6), st.integers(1, 8)), min_size=1, max_size=12),
)
def test_a_standby_following_batches_in_stream_order_ends_with_the_log(
    tmp_path_factory: pytest.TempPathFactory,
    total: int,
    held: int,
    steps: list[tuple[int, int]],
) -> None:
    """Batches as the stream holds them (each starting at or before the end of the ones
    before, as a resend after a lost answer does), read from where a standby's log ends:
    the log ends as the leaves, whatever overlapped."""
    leaves = entries(total)
    held = min(held, total)
    found: list[Batch] = []
    end = 0
    for back, count in steps:
        first = max(0, end - back)
        found.append(Batch(first, tuple(leaves[first : first + count])))
        end = max(end, first + count)
        if end >= total:
            break
    if end < total:
        found.append(Batch(end, tuple(leaves[end:])))
    found = [b for b in found if b.leaves]
    log = AuditLog(tmp_path_factory.mktemp("follow") / "audit.sqlite")
    try:
        append_leaves(log, leaves[:held])
        appended = apply_batches(log, found[: len(found) // 2])
        appended += apply_batches(log, found[len(found) // 2 :])
        assert appended == total - held
        assert [e.data for e in log.entries(0, log.size)] == leaves
        log.verify_storage()
    finally:
        log.close()


def test_a_standby_refuses_batches_that_differ_from_its_log_or_leave_a_gap(
    tmp_path: Path,
) -> None:
    leaves, other = entries(6), entries(6, 100)
    log = AuditLog(tmp_path / "audit.sqlite")
    try:
        append_leaves(log, leaves[:4])
        with pytest.raises(AuditStreamError, match="leaf 3 of the audit log differs"):
            apply_batches(log, [Batch(2, (leaves[2], other[3], leaves[4]))])
        with pytest.raises(AuditStreamError, match="after the end"):
            apply_batches(log, [Batch(5, (leaves[5],))])
        with pytest.raises(AuditStreamError, match="two different leaves at index 4"):
            apply_batches(log, [Batch(4, (leaves[4],)), Batch(4, (other[4],))])
        assert log.size == 4  # nothing appended by a refused call
    finally:
        log.close()
