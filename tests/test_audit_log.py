"""broker.audit: answers exactly as protocols.merkle, survives kills, shows tampering.

- Equivalence: every root, inclusion proof and consistency proof of every
  tree up to 70 leaves equals the O(n) reference and verifies; the published
  CT vectors' node hashes are what lands in ``nodes``; hypothesis varies the
  batch sizes appends arrive in.
- Durability: a writer process SIGKILLed while appending leaves a log whose
  size is the last committed batch (never less than acknowledged) and whose
  stored nodes all recompute from the leaves.
- Tamper evidence: raw SQL edits of leaves, nodes, rows and checkpoints are
  each reported by ``verify_storage`` naming the first bad index.
- Search: every filter combination against a brute-force filter, paged to the
  end, with ordered and unordered clocks, and query plans that walk an index.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.index import BLOCK_BITS
from broker.audit.log import AuditLog
from broker.audit.records import SCHEMA, AuditRecord, StoredEntry
from broker.audit.search import MAX_SEARCH_LIMIT, AuditQuery
from protocols import merkle, tlog
from protocols.audit import AuditEntry, AuditEvent, decode_entry
from protocols.errors import IxbError, LocalError, MerkleProofError

MAX_SIZE = 70
ENTRIES = [b""] + [f"entry {i}".encode() * (i % 3 + 1) for i in range(1, MAX_SIZE)]
HASHES = [merkle.leaf_hash(e) for e in ENTRIES]
VECTORS: dict[str, Any] = json.loads(
    (Path(merkle.__file__).parent / "vectors" / "merkle.json").read_text()
)
FAST = settings(max_examples=40, deadline=None, database=None)


def rec(data: bytes, at_ms: int = 1000, **meta: Any) -> AuditRecord:
    return AuditRecord(data=data, at_ms=at_ms, event=meta.pop("event", "accepted"), **meta)


def fill(log: AuditLog, entries: list[bytes], batches: list[int]) -> None:
    """Append ``entries`` in batches of the given sizes (cycled), checking the indexes."""
    i, b = 0, 0
    while i < len(entries):
        k = max(1, batches[b % len(batches)])
        chunk = entries[i : i + k]
        assert log.append([rec(x, 1000 + i + j) for j, x in enumerate(chunk)]) == list(
            range(i, i + len(chunk))
        )
        i, b = i + len(chunk), b + 1


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    audit = AuditLog(tmp_path / "audit.db")
    yield audit
    audit.close()


@pytest.fixture
def full(log: AuditLog) -> AuditLog:
    fill(log, ENTRIES, [1, 2, 3, 5, 8, 13])
    return log


def raw(log: AuditLog) -> sqlite3.Connection:
    """A second connection to the same file, as an attacker with disk access has."""
    path = log._db.execute("PRAGMA database_list").fetchone()[2]
    return sqlite3.connect(path, isolation_level=None)


# --- same answers as protocols.merkle ---------------------------------------------


def test_every_root_and_proof_up_to_70_leaves_equals_the_reference(full: AuditLog) -> None:
    assert full.size == MAX_SIZE
    for n in range(MAX_SIZE + 1):
        root = full.root(n)
        assert root == merkle.root_from_hashes(HASHES[:n]), n
        for m in range(n):
            proof = full.inclusion_proof(m, n)
            assert proof == merkle.inclusion_proof_from_hashes(HASHES[:n], m), (m, n)
            merkle.verify_inclusion(full.leaf(m), m, n, proof, root)
        for m in range(n + 1):
            proof = full.consistency_proof(m, n)
            assert proof == merkle.consistency_proof_from_hashes(HASHES[:n], m), (m, n)
            merkle.verify_consistency(m, n, full.root(m), root, proof)
    assert full.root() == full.root(MAX_SIZE)
    full.verify_storage()


def test_published_vectors_land_in_the_nodes_table(log: AuditLog) -> None:
    leaves = [bytes.fromhex(x) for x in VECTORS["tree"]["leaves"]]
    fill(log, leaves, [3])
    for size, want in enumerate(VECTORS["tree"]["roots_by_size"]):
        assert log.root(size).hex() == want
    stored = log._db.execute("SELECT level, idx, hash FROM nodes").fetchall()
    assert {(lv, i): h.hex() for lv, i, h in stored} == {
        (lv, i): h
        for lv, hashes in enumerate(VECTORS["tree"]["node_hashes_by_level"])
        for i, h in enumerate(hashes)
    }
    for case in VECTORS["inclusion"]["cases"]:
        assert [p.hex() for p in log.inclusion_proof(case["index"], case["size"])] == case["proof"]
    for case in VECTORS["consistency"]["cases"]:
        got = log.consistency_proof(case["old_size"], case["new_size"])
        assert [p.hex() for p in got] == case["proof"]


def test_leaf_by_leaf_and_one_batch_store_the_same_nodes(tmp_path: Path) -> None:
    one, many = AuditLog(tmp_path / "one.db"), AuditLog(tmp_path / "many.db")
    try:
        for n, x in enumerate(ENTRIES, start=1):
            one.append([rec(x)])
            assert one.size == n
            assert one.root() == merkle.root_from_hashes(HASHES[:n])
        many.append([rec(x) for x in ENTRIES])
        nodes = "SELECT level, idx, hash FROM nodes ORDER BY level, idx"
        assert one._db.execute(nodes).fetchall() == many._db.execute(nodes).fetchall()
        # 2n - popcount(n) complete subtrees, leaves included: O(1) amortised per leaf.
        assert len(many._db.execute(nodes).fetchall()) == 2 * MAX_SIZE - MAX_SIZE.bit_count()
    finally:
        one.close()
        many.close()


@FAST
@given(
    batches=st.lists(st.integers(0, 17), min_size=1, max_size=10),
    picks=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=8),
)
def test_any_batching_gives_the_reference_answers(
    batches: list[int], picks: list[tuple[int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(Path(tmp) / "audit.db")
        try:
            n = 0
            for k in batches:
                audit.append([rec(ENTRIES[i % MAX_SIZE] + b"%d" % i) for i in range(n, n + k)])
                n += k
                assert audit.size == n
            hashes = [merkle.leaf_hash(ENTRIES[i % MAX_SIZE] + b"%d" % i) for i in range(n)]
            for size in range(n + 1):
                assert audit.root(size) == merkle.root_from_hashes(hashes[:size])
            for a, b in picks:
                if n == 0:
                    break
                size = 1 + b % n
                index, old = a % size, a % (size + 1)
                want = merkle.inclusion_proof_from_hashes(hashes[:size], index)
                assert audit.inclusion_proof(index, size) == want
                want = merkle.consistency_proof_from_hashes(hashes[:size], old)
                assert audit.consistency_proof(old, size) == want
            audit.verify_storage()
        finally:
            audit.close()


def test_empty_log(log: AuditLog) -> None:
    assert log.size == 0
    assert log.root() == log.root(0) == merkle.EMPTY_ROOT
    assert log.consistency_proof(0, 0) == []
    assert log.append([]) == []
    assert log.entries(0, 0) == []
    assert log.search() == []
    assert log.count() == 0
    log.verify_storage()


BAD_ARGUMENTS: dict[str, tuple[Any, type[Exception]]] = {
    "root above size": (lambda a: a.root(MAX_SIZE + 1), ValueError),
    "negative root": (lambda a: a.root(-1), ValueError),
    "leaf at size": (lambda a: a.leaf(MAX_SIZE), ValueError),
    "inclusion index at size": (lambda a: a.inclusion_proof(5, 5), ValueError),
    "inclusion size above": (lambda a: a.inclusion_proof(0, MAX_SIZE + 1), ValueError),
    "inclusion in empty tree": (lambda a: a.inclusion_proof(0, 0), ValueError),
    "consistency old above new": (lambda a: a.consistency_proof(6, 5), ValueError),
    "consistency new above size": (lambda a: a.consistency_proof(1, MAX_SIZE + 1), ValueError),
    "entries past the end": (lambda a: a.entries(0, MAX_SIZE + 1), ValueError),
    "entries backwards": (lambda a: a.entries(5, 4), ValueError),
    "size as bool": (lambda a: a.root(True), TypeError),
    "limit zero": (lambda a: a.search(limit=0), ValueError),
    "limit too big": (lambda a: a.search(limit=MAX_SEARCH_LIMIT + 1), ValueError),
    "append a non-record": (lambda a: a.append([b"raw"]), TypeError),
    "search by a dict": (lambda a: a.search({"msg_id": "m1"}), TypeError),
    "count by a dict": (lambda a: a.count({"msg_id": "m1"}), TypeError),
}


@pytest.mark.parametrize(("call", "error"), BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_are_refused(full: AuditLog, call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        call(full)
    assert full.size == MAX_SIZE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "text"},
        {"at_ms": -1},
        {"at_ms": True},
        {"event": ""},
        {"msg_id": 5},
        {"recipients": ["THA/A"]},
        {"recipients": ("THA/A", None)},
    ],
)
def test_records_are_checked_on_construction(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"data": b"x", "at_ms": 1, "event": "accepted", **kwargs}
    with pytest.raises((TypeError, ValueError)):
        AuditRecord(**fields)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"msg_id": 5},
        {"agency": b"THA/A"},
        {"since_ms": "2025-01-01"},
        {"until_ms": 1.5},
        {"before_index": True},
        {"before_index": -1},
    ],
)
def test_queries_are_checked_on_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        AuditQuery(**kwargs)


def test_a_query_is_a_value() -> None:
    q = AuditQuery(agency="THA/DSI", before_index=10)
    assert q == AuditQuery(before_index=10, agency="THA/DSI")
    assert hash(q) == hash(AuditQuery(agency="THA/DSI", before_index=10))
    assert dataclasses.replace(q, before_index=3).before_index == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.agency = "MYS/RMP"  # type: ignore[misc]


# --- one query per proof -------------------------------------------------------------


def _node_reads(log: AuditLog, call: Callable[[], object]) -> list[str]:
    statements: list[str] = []
    log._db.set_trace_callback(statements.append)
    try:
        call()
    finally:
        log._db.set_trace_callback(None)
    return [s for s in statements if "FROM nodes" in s]


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.root(),
        lambda a: a.root(37),
        lambda a: a.inclusion_proof(13, MAX_SIZE),
        lambda a: a.inclusion_proof(0, 64),
        lambda a: a.consistency_proof(5, MAX_SIZE),
        lambda a: a.consistency_proof(64, 69),
    ],
)
def test_a_root_or_proof_reads_its_hashes_in_one_query(full: AuditLog, call: Any) -> None:
    assert len(_node_reads(full, lambda: call(full))) == 1


def test_proofs_that_need_no_hash_read_none(full: AuditLog) -> None:
    assert _node_reads(full, lambda: full.consistency_proof(0, MAX_SIZE)) == []
    assert _node_reads(full, lambda: full.consistency_proof(MAX_SIZE, MAX_SIZE)) == []
    assert _node_reads(full, lambda: full.root(0)) == []


def test_appends_read_the_tree_once_then_never(full: AuditLog) -> None:
    """The right edge is read in one query on the first append, then kept in memory."""
    reopened = AuditLog(Path(full._db.execute("PRAGMA database_list").fetchone()[2]))
    try:
        assert len(_node_reads(reopened, lambda: reopened.append([rec(b"a"), rec(b"b")]))) == 1
        assert _node_reads(reopened, lambda: reopened.append([rec(b"c")])) == []
        assert reopened.root() == merkle.root([*ENTRIES, b"a", b"b", b"c"])
    finally:
        reopened.close()


# --- durability ---------------------------------------------------------------------


def test_the_file_is_wal_with_full_sync(log: AuditLog) -> None:
    assert log._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_an_acknowledged_append_is_visible_to_another_connection(
    log: AuditLog, tmp_path: Path
) -> None:
    log.append([rec(b"first"), rec(b"second")])
    other = AuditLog(tmp_path / "audit.db")
    try:
        assert other.size == 2
        assert other.root() == log.root() == merkle.root([b"first", b"second"])
        other.append([rec(b"third")])  # a writer that reopens continues the same tree
        assert log.size == 3
        assert log.root() == merkle.root([b"first", b"second", b"third"])
        assert log.append([rec(b"fourth")]) == [3]  # and the first one sees it had moved on
        assert other.root() == merkle.root([b"first", b"second", b"third", b"fourth"])
        log.verify_storage()
    finally:
        other.close()


def test_a_failed_batch_leaves_nothing_behind(log: AuditLog) -> None:
    log.append([rec(b"a", sender="THA/A")])
    root = log.root()
    with raw(log) as db:  # make the next batch's last node row collide
        db.execute("INSERT INTO nodes (pos, level, idx, hash) VALUES (3, 0, 2, zeroblob(32))")
    batch = [rec(b"b", sender="THA/A"), rec(b"c", sender="THA/A")]
    with pytest.raises(LocalError, match="audit log write failed"):
        log.append(batch)
    assert log.size == 1
    assert log.root() == root
    assert log._db.execute("SELECT level, idx FROM nodes").fetchall() == [(0, 0), (0, 2)]
    assert log._db.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
    assert log.count(AuditQuery(agency="THA/A")) == 1
    log._db.execute("DELETE FROM nodes WHERE idx = 2")
    assert log.append(batch) == [1, 2]  # the rolled-back batch left no trace in memory either
    assert log.root() == merkle.root([b"a", b"b", b"c"])
    assert [e.index for e in log.search(AuditQuery(agency="THA/A"))] == [2, 1, 0]
    log.verify_storage()


WRITER = """
import sys
from pathlib import Path
from broker.audit.log import AuditLog
from broker.audit.records import AuditRecord

log = AuditLog(Path(sys.argv[1]))
batch = int(sys.argv[2])
n = log.size
while True:
    log.append([
        AuditRecord(data=b"leaf %d" % i, at_ms=i, event="accepted",
                    sender="THA/A", recipients=("MYS/B",), msg_id="m%d" % i)
        for i in range(n, n + batch)
    ])
    n += batch
    print(n, flush=True)
"""


def test_a_writer_killed_mid_append_leaves_a_consistent_log(tmp_path: Path) -> None:
    path, batch = tmp_path / "audit.db", 7
    root = Path(__file__).resolve().parents[1]
    for acks_before_kill in (15, 40, 25):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        assert proc.stdout is not None
        acked = 0
        for _ in range(acks_before_kill):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "writer died"
            acked = int(line)
        os.kill(proc.pid, signal.SIGKILL)  # while it is in its next transaction
        rest = proc.stdout.read().split()
        proc.wait()
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        acked = int(rest[-1]) if rest else acked

        audit = AuditLog(path)
        try:
            size = audit.size
            assert acked <= size <= acked + batch  # nothing acknowledged is lost
            assert size % batch == 0  # batches are all or nothing
            audit.verify_storage()
            leaves = [e.data for e in audit.entries(0, size)]
            assert leaves == [b"leaf %d" % i for i in range(size)]
            assert audit.root() == merkle.root(leaves)
            assert audit.search(AuditQuery(msg_id=f"m{size - 1}"))[0].index == size - 1
        finally:
            audit.close()


# --- tamper evidence ------------------------------------------------------------------


def _flip_first_byte(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def _set(db: sqlite3.Connection, sql: str, *args: object) -> None:
    db.execute(sql, args)


def _tamper_leaf(db: sqlite3.Connection) -> None:
    data = db.execute("SELECT data FROM entries WHERE idx = 13").fetchone()[0]
    _set(db, "UPDATE entries SET data = ? WHERE idx = 13", _flip_first_byte(data))


def _tamper_hash(level: int, idx: int) -> Any:
    def tamper(db: sqlite3.Connection) -> None:
        sql = "SELECT hash FROM nodes WHERE level = ? AND idx = ?"
        h = db.execute(sql, (level, idx)).fetchone()[0]
        _set(
            db,
            "UPDATE nodes SET hash = ? WHERE level = ? AND idx = ?",
            _flip_first_byte(h),
            level,
            idx,
        )

    return tamper


def _swap_entries(db: sqlite3.Connection) -> None:
    a = db.execute("SELECT data FROM entries WHERE idx = 7").fetchone()[0]
    b = db.execute("SELECT data FROM entries WHERE idx = 40").fetchone()[0]
    _set(db, "UPDATE entries SET data = ? WHERE idx = 7", b)
    _set(db, "UPDATE entries SET data = ? WHERE idx = 40", a)


def _swap_leaf_hashes(db: sqlite3.Connection) -> None:
    sql = "SELECT hash FROM nodes WHERE level = 0 AND idx = ?"
    three, four = (db.execute(sql, (i,)).fetchone()[0] for i in (3, 4))
    _set(db, "UPDATE nodes SET hash = ? WHERE level = 0 AND idx = 3", four)
    _set(db, "UPDATE nodes SET hash = ? WHERE level = 0 AND idx = 4", three)


def _swap_entry_rows(db: sqlite3.Connection) -> None:
    _set(db, "UPDATE entries SET idx = -1 WHERE idx = 21")
    _set(db, "UPDATE entries SET idx = 21 WHERE idx = 22")
    _set(db, "UPDATE entries SET idx = 22 WHERE idx = -1")


TAMPERING: dict[str, tuple[Any, str]] = {
    "flip a byte of a leaf": (_tamper_leaf, r"leaf 13 does not match"),
    "alter a leaf hash": (_tamper_hash(0, 13), r"leaf 13 does not match"),
    "alter an interior node": (_tamper_hash(2, 3), r"node \(2, 3\) over leaves 12\.\.15"),
    "alter the top node": (_tamper_hash(6, 0), r"node \(6, 0\) over leaves 0\.\.63"),
    "delete a middle entry": (
        lambda db: _set(db, "DELETE FROM entries WHERE idx = 20"),
        r"leaf 20 is missing",
    ),
    "delete the last entry": (
        lambda db: _set(db, "DELETE FROM entries WHERE idx = 69"),
        r"node \(0, 69\) lies beyond size 69",
    ),
    "delete a node": (
        lambda db: _set(db, "DELETE FROM nodes WHERE level = 1 AND idx = 5"),
        r"hash of node \(1, 5\) .* is missing",
    ),
    "swap two entries' bytes": (_swap_entries, r"leaf 7 does not match"),
    "swap two entry rows": (_swap_entry_rows, r"leaf 21 does not match"),
    "swap two leaf hashes": (_swap_leaf_hashes, r"leaf 3 does not match"),
    "relabel a leaf hash": (
        lambda db: _set(db, "UPDATE nodes SET idx = 4 WHERE level = 0 AND idx = 3"),
        r"the place of leaf 3 holds node \(0, 4\)",
    ),
    "add a node beyond the tree": (
        lambda db: _set(db, "INSERT INTO nodes VALUES (500, 9, 0, zeroblob(32))"),
        r"node \(9, 0\) lies beyond",
    ),
    "add a node before the tree": (
        lambda db: _set(db, "INSERT INTO nodes VALUES (-1, 0, 0, zeroblob(32))"),
        r"stray node row at position -1",
    ),
    "add a checkpoint beyond the log": (
        lambda db: _set(db, "INSERT INTO checkpoints VALUES (500, zeroblob(32), x'', 0)"),
        r"checkpoint of size 500 is beyond",
    ),
    "alter a checkpoint root": (
        lambda db: _set(db, "UPDATE checkpoints SET root = zeroblob(32) WHERE size = 40"),
        r"checkpoint root at size 40",
    ),
}


@pytest.mark.parametrize(("tamper", "message"), TAMPERING.values(), ids=TAMPERING.keys())
def test_verify_storage_names_the_first_bad_index(
    full: AuditLog, tamper: Any, message: str
) -> None:
    full.save_checkpoint(40, full.root(40), b"note 40", 1)
    full.save_checkpoint(MAX_SIZE, full.root(), b"note 70", 2)
    full.verify_storage()
    with raw(full) as db:
        tamper(db)
    with pytest.raises(MerkleProofError, match=message) as info:
        full.verify_storage()
    assert info.value.code == "ixb.E_PROOF"


def test_a_consistent_rewrite_is_caught_by_our_own_checkpoint(
    full: AuditLog, tmp_path: Path
) -> None:
    """Leaves and every node rewritten to match: only a saved (signed) root can tell."""
    full.save_checkpoint(MAX_SIZE, full.root(), b"signed note", 1)
    forged = [*ENTRIES[:5], b"forged", *ENTRIES[6:]]
    other = AuditLog(tmp_path / "forged.db")
    fill(other, forged, [MAX_SIZE])
    other.close()
    with raw(full) as db:
        db.execute("ATTACH DATABASE ? AS f", (str(tmp_path / "forged.db"),))
        db.execute("UPDATE entries SET data = ? WHERE idx = 5", (b"forged",))
        db.execute("DELETE FROM nodes")
        db.execute("INSERT INTO nodes SELECT * FROM f.nodes")
    with pytest.raises(MerkleProofError, match=f"checkpoint root at size {MAX_SIZE}"):
        full.verify_storage()


def test_proofs_from_altered_storage_do_not_verify(full: AuditLog) -> None:
    root = full.root()
    with raw(full) as db:
        _tamper_hash(3, 1)(db)
    proof = full.inclusion_proof(0, MAX_SIZE)
    with pytest.raises(MerkleProofError):
        merkle.verify_inclusion(full.leaf(0), 0, MAX_SIZE, proof, root)


def test_verify_storage_goes_on_past_its_first_chunk_of_leaves(log: AuditLog) -> None:
    n = 9000  # over two chunks of 4096 leaves, checkpoints on both sides of the first boundary
    log.append([rec(b"%d" % i) for i in range(n)])
    for size in (4095, 4096, 4097, 8192, n):
        log.save_checkpoint(size, log.root(size), b"note", 1)
    log.verify_storage()
    with raw(log) as db:
        _tamper_hash(0, 8300)(db)
        db.execute("DELETE FROM entries WHERE idx = 8500")
    with pytest.raises(MerkleProofError, match=r"leaf 8300 does not match"):
        log.verify_storage()
    with raw(log) as db:
        db.execute("UPDATE nodes SET hash = ? WHERE level = 0 AND idx = 8300", (HASH_8300,))
    with pytest.raises(MerkleProofError, match=r"leaf 8500 is missing"):
        log.verify_storage()
    with raw(log) as db:
        db.execute("UPDATE checkpoints SET root = zeroblob(32) WHERE size = 4097")
    with pytest.raises(MerkleProofError, match=r"checkpoint root at size 4097"):
        log.verify_storage()


HASH_8300 = merkle.leaf_hash(b"8300")


def test_a_missing_node_is_a_local_error_not_a_wrong_answer(full: AuditLog) -> None:
    with raw(full) as db:
        db.execute("DELETE FROM nodes WHERE level = 6 AND idx = 0")
    with pytest.raises(LocalError, match=r"no node \(6, 0\)"):
        full.root()


# --- checkpoints, cosignatures, witnessing ----------------------------------------------


def test_checkpoints(full: AuditLog) -> None:
    assert full.latest_checkpoint() is None
    with pytest.raises(ValueError, match="not the log's root"):
        full.save_checkpoint(10, full.root(11), b"bad", 1)
    full.save_checkpoint(10, full.root(10), b"note 10", 1)
    full.save_checkpoint(64, full.root(64), b"note 64", 2)
    full.save_checkpoint(10, full.root(10), b"note 10 again", 3)
    assert full.latest_checkpoint() == (64, full.root(64), b"note 64")
    assert full.checkpoint_for(10) == b"note 10 again"
    assert full.checkpoint_for(11) is None
    full.verify_storage()


def test_cosignatures(full: AuditLog) -> None:
    full.save_cosigned(10, "MYS/HUB", b"mys cosig", 5)
    full.save_cosigned(10, "KHM/HUB", b"khm cosig", 6)
    full.save_cosigned(20, "MYS/HUB", b"mys cosig 20", 7)
    full.save_cosigned(10, "MYS/HUB", b"mys cosig newer", 8)
    assert full.cosignatures(10) == [
        ("KHM/HUB", 10, b"khm cosig", 6),
        ("MYS/HUB", 10, b"mys cosig newer", 8),
    ]
    assert [c[:2] for c in full.cosignatures()] == [
        ("KHM/HUB", 10),
        ("MYS/HUB", 10),
        ("MYS/HUB", 20),
    ]


def test_witnessed_checkpoints_and_alarms(log: AuditLog) -> None:
    r1, r2 = b"\x01" * 32, b"\x02" * 32
    assert log.last_witnessed("MYS") is None
    log.save_witnessed("MYS", 10, r1, b"n10", 100)
    log.save_witnessed("MYS", 30, r2, b"n30", 200)
    log.save_witnessed("KHM", 99, r1, b"k99", 300)
    log.save_witnessed("MYS", 10, r1, b"n10 again", 400)  # same root: fine
    assert log.last_witnessed("MYS") == (30, r2, b"n30", 200)
    with pytest.raises(ValueError, match="different root"):
        log.save_witnessed("MYS", 10, r2, b"split view", 500)
    log.save_alarm("MYS", 500, "two roots for size 10", b"evidence")
    log.save_alarm("KHM", 600, "not consistent", b"")
    assert log.alarms() == [("MYS", 500, "two roots for size 10"), ("KHM", 600, "not consistent")]


# --- search --------------------------------------------------------------------------------

AGENCIES = ("THA/DSI", "THA/IMM", "MYS/RMP", "MYS/IMM", "KHM/NP")
EVENTS = ("accepted", "rejected", "forwarded", "delivered")
N_SEARCH = 700


def make_records(ordered: bool) -> list[AuditRecord]:
    rng = random.Random(5)
    out = []
    for i in range(N_SEARCH):
        at = 10_000 + (i // 2) * 10  # pairs share a time
        if not ordered and i >= 150:
            at -= 700  # the clock stepped back
        event = rng.choice(EVENTS)
        out.append(
            AuditRecord(
                data=b"entry %d" % i,
                at_ms=at,
                event=event,
                msg_id=f"m{rng.randrange(120)}" if rng.random() < 0.9 else None,
                type=rng.choice(("alert", "request", None)),
                sender=rng.choice((*AGENCIES, None)),
                recipients=tuple(rng.sample(AGENCIES, rng.randrange(3))),
                case_ref=f"C{rng.randrange(15)}" if rng.random() < 0.5 else None,
                code=rng.choice(("ixb.E_REPLAY", "ixb.E_EXPIRED")) if event == "rejected" else None,
                peer=rng.choice(("LAO/HUB", "MYS/HUB", "VNM", None)),
                in_reply_to=f"m{i % 41}" if i % 5 == 0 else None,  # a reply or receipt
            )
        )
    return out


def country_of(p: str | None) -> str | None:
    return None if p is None else p[:3]


def matches(i: int, r: AuditRecord, f: dict[str, Any]) -> bool:
    checks: dict[str, Callable[[Any], bool]] = {
        "msg_id": lambda v: r.msg_id == v,
        "case_ref": lambda v: r.case_ref == v,
        "type": lambda v: r.type == v,
        "event": lambda v: r.event == v,
        "code": lambda v: r.code == v,
        "in_reply_to": lambda v: r.in_reply_to == v,
        "agency": lambda v: v in (r.sender, *r.recipients),
        "country": lambda v: v in {country_of(p) for p in (r.sender, r.peer, *r.recipients)},
        "since_ms": lambda v: r.at_ms >= v,
        "until_ms": lambda v: r.at_ms < v,
        "before_index": lambda v: i < v,
    }
    return all(checks[k](v) for k, v in f.items())


@pytest.fixture(scope="module", params=[True, False], ids=["ordered-clock", "clock-stepped-back"])
def searchable(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AuditLog, list[AuditRecord]]]:
    records = make_records(ordered=request.param)
    audit = AuditLog(tmp_path_factory.mktemp("search") / "audit.db")
    for k in range(0, N_SEARCH, 37):
        audit.append(records[k : k + 37])
    assert (audit._index._unordered_from() is None) == request.param
    yield audit, records
    audit.close()


FILTERS: list[dict[str, Any]] = [
    {},
    {"msg_id": "m7"},
    {"msg_id": "nope"},
    {"case_ref": "C3"},
    {"agency": "THA/DSI"},
    {"agency": "MYS/IMM", "event": "rejected"},
    {"country": "MYS"},
    {"country": "LAO"},  # only ever a peer
    {"country": "VNM", "agency": "KHM/NP"},
    {"type": "alert", "code": "ixb.E_REPLAY"},
    {"event": "forwarded", "case_ref": "C1", "country": "THA"},
    {"since_ms": 10_500},
    {"until_ms": 10_300},
    {"since_ms": 10_200, "until_ms": 10_900},
    {"since_ms": 10_205, "until_ms": 10_206},
    {"since_ms": 99_999},
    {"event": "accepted", "since_ms": 10_100, "until_ms": 11_000, "agency": "THA/IMM"},
    {"before_index": 100, "country": "THA"},
    {"before_index": 0},
    {"msg_id": "m3", "case_ref": "C2", "agency": "THA/DSI", "country": "THA", "type": "alert"},
    {"in_reply_to": "m7"},
    {"in_reply_to": "nope"},
    {"in_reply_to": "m7", "event": "accepted"},
    {"in_reply_to": "m3", "case_ref": "C2"},
    {"in_reply_to": "m3", "msg_id": "m12"},
    {"in_reply_to": "m9", "since_ms": 10_100, "agency": "THA/DSI"},
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_search_pages_through_exactly_the_matches(
    searchable: tuple[AuditLog, list[AuditRecord]], f: dict[str, Any]
) -> None:
    audit, records = searchable
    want = [i for i in reversed(range(N_SEARCH)) if matches(i, records[i], f)]
    assert audit.count(AuditQuery(**f)) == len(want)
    got: list[int] = []
    page = audit.search(AuditQuery(**f), limit=7)
    while page:
        got += [e.index for e in page]
        before = page[-1].index
        if "before_index" in f:
            before = min(before, f["before_index"])
        page = audit.search(AuditQuery(**{**f, "before_index": before}), limit=7)
    assert got == want


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_search_agrees_with_brute_force(
    searchable: tuple[AuditLog, list[AuditRecord]], data: st.DataObject
) -> None:
    audit, records = searchable
    pools: dict[str, st.SearchStrategy[Any]] = {
        "msg_id": st.sampled_from([f"m{i}" for i in range(0, 120, 3)]),
        "case_ref": st.sampled_from([f"C{i}" for i in range(15)]),
        "agency": st.sampled_from(AGENCIES),
        "country": st.sampled_from(("THA", "MYS", "KHM", "LAO", "VNM", "FRA")),
        "type": st.sampled_from(("alert", "request")),
        "event": st.sampled_from(EVENTS),
        "code": st.sampled_from(("ixb.E_REPLAY", "ixb.E_EXPIRED")),
        "in_reply_to": st.sampled_from([f"m{i}" for i in range(0, 50, 2)]),
        "since_ms": st.integers(9_000, 10_000 + N_SEARCH * 5 + 100),
        "until_ms": st.integers(9_000, 10_000 + N_SEARCH * 5 + 100),
        "before_index": st.integers(0, N_SEARCH + 5),
    }
    names = data.draw(st.sets(st.sampled_from(sorted(pools)), max_size=4))
    f = {name: data.draw(pools[name]) for name in names}
    limit = data.draw(st.integers(1, 40))
    want = [i for i in reversed(range(N_SEARCH)) if matches(i, records[i], f)]
    got = audit.search(AuditQuery(**f), limit=limit)
    assert [e.index for e in got] == want[:limit]
    assert audit.count(AuditQuery(**f)) == len(want)


def test_stored_entries_keep_every_field(searchable: tuple[AuditLog, list[AuditRecord]]) -> None:
    audit, records = searchable
    for e in audit.entries(0, N_SEARCH):
        r = records[e.index]
        assert e == StoredEntry(
            e.index,
            r.data,
            r.at_ms,
            r.event,
            r.msg_id,
            r.type,
            r.sender,
            r.recipients,
            r.case_ref,
            r.code,
            r.peer,
        )


def plan(audit: AuditLog, sql: str, args: Sequence[object]) -> str:
    rows = audit._db.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
    return "\n".join(r[3] for r in rows)


@pytest.mark.parametrize(
    ("f", "index"),
    [
        ({}, "INTEGER PRIMARY KEY"),
        ({"msg_id": "m1", "event": "accepted", "type": "alert"}, "entries_msg_id"),
        ({"msg_id": "m1", "case_ref": "C1", "code": "x"}, "entries_msg_id"),
        ({"since_ms": 10_100, "until_ms": 10_500}, "INTEGER PRIMARY KEY"),
    ],
)
def test_entry_queries_walk_an_index_newest_first(
    searchable: tuple[AuditLog, list[AuditRecord]], f: dict[str, Any], index: str
) -> None:
    """No full scans and no sorts: a page costs its rows, not the size of the log."""
    audit, _ = searchable
    unordered = audit._index._unordered_from() is not None
    sql, args = audit._search._column_query(AuditQuery(**f), "e.idx", unordered)
    text = plan(audit, sql + " ORDER BY e.idx DESC LIMIT ?", [*args, 0, 10, 5])
    assert index in text, text
    assert not re.search(r"\bSCAN\b", text), text
    assert "TEMP B-TREE" not in text, text


def test_postings_cases_and_rows_by_index_are_key_lookups(log: AuditLog) -> None:
    from broker.audit.search import _CASE_PROBE, _POSTINGS_PROBE, _ROWS_BY_INDEX

    text = plan(log, _POSTINGS_PROBE, ["[3, 2, 1]", '["country=THA", "type=alert"]'])
    assert "SEARCH postings USING PRIMARY KEY (block=? AND tag=?)" in text, text
    assert "TEMP B-TREE" not in text, text
    text = plan(log, _CASE_PROBE, ["[1, 0]", "C1", 0, 8000, 100])
    assert "SEARCH cases USING PRIMARY KEY (span=? AND case_ref=? AND idx>? AND idx<?)" in text, (
        text
    )
    assert "TEMP B-TREE" not in text, text
    text = plan(log, _ROWS_BY_INDEX + " ORDER BY e.idx DESC", ["[3, 2]"])
    assert "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)" in text, text
    assert not re.search(r"\bSCAN e\b", text), text
    assert "TEMP B-TREE" not in text, text


def test_tag_searches_read_postings_and_the_rows_they_return(log: AuditLog) -> None:
    """A combination that never occurs costs the postings of its tags, not a scan."""
    n = 8 << BLOCK_BITS  # eight blocks of postings
    senders, types = ("THA/DSI", "MYS/RMP"), ("alert", "request")
    log.append([rec(b"%d" % i, i, sender=senders[i % 2], type=types[i % 2]) for i in range(n)])
    statements: list[str] = []
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    log._db.set_trace_callback(statements.append)
    log._db.set_progress_handler(step, 1)
    assert log.search(AuditQuery(country="THA", type="request")) == []
    assert log.count(AuditQuery(country="THA", type="request")) == 0
    assert not [s for s in statements if "FROM entries" in s]
    assert steps[0] < n, steps  # a scan would run several instructions per entry
    statements.clear()
    page = log.search(AuditQuery(country="THA", type="alert", event="accepted"), limit=10)
    assert [e.index for e in page] == list(range(n - 2, n - 22, -2))
    assert len([s for s in statements if "FROM entries" in s]) == 1
    assert log.count(AuditQuery(agency="MYS/RMP", before_index=n - 1)) == n // 2 - 1
    log._db.set_progress_handler(None, 1)
    log._db.set_trace_callback(None)


def test_a_batch_over_several_blocks_writes_the_postings_of_each(log: AuditLog) -> None:
    second = 1 << BLOCK_BITS  # the first leaf of block 1: the same bit as leaf 0 in block 0
    log.append([rec(b"0", sender="THA/A"), *(rec(b"%d" % i) for i in range(1, 10))])
    log.append(
        [rec(b"%d" % i, sender="THA/A" if i == second else None) for i in range(10, 2 * second)]
    )
    assert [e.index for e in log.search(AuditQuery(agency="THA/A"))] == [second, 0]
    assert log.count(AuditQuery(country="THA")) == 2


def test_searches_over_several_spans_of_cases_and_blocks_of_postings(tmp_path: Path) -> None:
    """Cases cross the 2^14-leaf spans, tags start late and stop early, the clock steps back."""
    n = 2 * 16384 + 700
    rng = random.Random(11)
    records = []
    for i in range(n):
        late = i >= 20_000
        sender = rng.choice(("THA/DSI", "MYS/RMP", "LAO/NEW" if late else "KHM/OLD"))
        records.append(
            AuditRecord(
                data=b"%d" % i,
                at_ms=10 * i - (5000 if i >= 30_000 else 0),
                event=rng.choice(EVENTS),
                type=rng.choice(("alert", "request", None)),
                sender=sender,
                recipients=(rng.choice(AGENCIES),),
                case_ref=f"C{rng.randrange(9)}" if rng.random() < 0.2 else None,
            )
        )
    audit = AuditLog(tmp_path / "audit.db")
    try:
        for k, size in ((0, 5000), (5000, 20_000), (25_000, n - 25_000)):
            audit.append(records[k : k + size])
        for f in [
            {"case_ref": "C4"},
            {"case_ref": "C4", "country": "MYS", "type": "alert"},
            {"case_ref": "C2", "before_index": 30_000, "since_ms": 100_000},
            {"agency": "LAO/NEW", "event": "rejected"},
            {"agency": "KHM/OLD", "before_index": 25_000},
            {"country": "KHM", "type": "request", "until_ms": 250_000},
            {"country": "LAO", "agency": "KHM/OLD"},
            {"type": "alert", "since_ms": 200_000, "until_ms": 300_000},
        ]:
            want = [i for i in reversed(range(n)) if matches(i, records[i], f)]
            assert audit.count(AuditQuery(**f)) == len(want), f
            got: list[int] = []
            page = audit.search(AuditQuery(**f), limit=500)
            while page:
                got += [e.index for e in page]
                before = min(page[-1].index, f.get("before_index", n))
                page = audit.search(AuditQuery(**{**f, "before_index": before}), limit=500)
            assert got == want, f
    finally:
        audit.close()


def test_nodes_are_stored_in_the_order_appends_complete_them(full: AuditLog) -> None:
    rows = full._db.execute("SELECT pos, level, idx FROM nodes ORDER BY pos").fetchall()
    assert [pos for pos, _, _ in rows] == list(range(tlog.stored_hash_count(MAX_SIZE)))
    assert all(tlog.stored_hash_index(level, idx) == pos for pos, level, idx in rows)


def test_a_log_of_an_older_schema_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=1")
    with pytest.raises(LocalError, match=r"audit log schema 1, not 3 \(a schema 1 log needs"):
        AuditLog(path)


def test_a_log_of_map16_leaves_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """Schema 2 wrote each leaf with a map16 header (SPEC §1.1 wants the shortest): such a
    file cannot be read back through the canonical decoder, nor rewritten (its leaves are
    in cosigned checkpoints), so it is refused by name, untouched."""
    path = tmp_path / "audit.sqlite"
    old_leaf = msgspec.msgpack.encode(
        AuditEntry(v=1, hub="THA/HUB", at=1, event=AuditEvent.HUB_STARTED)
    )
    assert old_leaf[0] == 0xDE  # what schema 2 stored
    with pytest.raises(IxbError) as info:
        decode_entry(old_leaf)
    assert info.value.code == "ixb.E_NONCANONICAL"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.execute(
            "INSERT INTO entries VALUES (0, ?, 1, 'hub_started', NULL, NULL, NULL,"
            " '[]', NULL, NULL, NULL)",
            (old_leaf,),
        )
        db.execute("PRAGMA user_version=2")
    with pytest.raises(LocalError) as refused:
        AuditLog(path)
    assert refused.value.code == "ixb.E_LOCAL"
    detail = refused.value.detail
    assert str(path) in detail and "audit log schema 2, not 3" in detail
    assert "old leaf encoding" in detail and "new audit log path" in detail
    with sqlite3.connect(path) as db:  # refused, not migrated: the file is as it was
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        assert db.execute("SELECT data FROM entries").fetchall() == [(old_leaf,)]


def test_time_windows_are_half_open(log: AuditLog) -> None:
    log.append([rec(b"%d" % t, at_ms=t) for t in (100, 200, 200, 300)])
    assert [e.index for e in log.search(AuditQuery(since_ms=200, until_ms=300))] == [2, 1]
    assert [e.index for e in log.search(AuditQuery(since_ms=201))] == [3]
    assert [e.index for e in log.search(AuditQuery(until_ms=200))] == [0]
    assert log.count(AuditQuery(since_ms=100, until_ms=301)) == 4
    log.append([rec(b"late", at_ms=150)])  # a clock stepping back switches to row filters
    assert log._index._unordered_from() == 4
    assert [e.index for e in log.search(AuditQuery(since_ms=120, until_ms=250))] == [4, 2, 1]
