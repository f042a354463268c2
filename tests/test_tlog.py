"""protocols.tlog against protocols.merkle, Go's tlog tests, and a counting reader.

- Same answers: for random trees, ``tree_hash`` is merkle's root and
  ``prove_record`` / ``prove_tree`` are merkle's proofs byte for byte, and
  they verify with merkle's verifiers (tlog has no verifier of its own).
- Go's ``tlog_test.go``: the stored hash count after each append, the
  ``SplitStoredHashIndex`` round trip, the empty tree, corrupted proofs fail.
- Reads: each root or proof asks its reader once, for sorted distinct indexes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import merkle, tlog
from protocols.errors import MerkleProofError

VECTORS: dict[str, Any] = json.loads(
    (Path(merkle.__file__).parent / "vectors" / "merkle.json").read_text()
)
FAST = settings(max_examples=100, deadline=None, database=None)


class Storage:
    """Every stored hash in a list, appended as tlog says: a real in-memory store.

    Counts its reads and checks that each asks for sorted, distinct indexes,
    as Go's ``testHashStorage`` does.
    """

    def __init__(self, hashes: Sequence[bytes] = ()) -> None:
        self.hashes = list(hashes)
        self.calls: list[list[int]] = []

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        asked = list(indexes)
        assert asked == sorted(set(asked)), asked
        self.calls.append(asked)
        return [self.hashes[i] for i in asked]

    def append(self, n: int, data: bytes) -> None:
        """Leaf ``n``'s hashes, stored where tlog says they go: right after the last."""
        new = tlog.stored_hashes(n, data, self)
        assert len(self.hashes) == tlog.stored_hash_index(0, n)
        self.hashes += new


def tree(n: int) -> tuple[Storage, list[bytes]]:
    """A store of ``n`` leaves and their leaf hashes."""
    storage, leaves = Storage(), []
    for i in range(n):
        data = b"leaf %d" % i
        storage.append(i, data)
        leaves.append(merkle.leaf_hash(data))
    storage.calls.clear()
    return storage, leaves


STORE, LEAF_HASHES = tree(300)


def _prefix(n: int) -> Storage:
    """The first ``n`` leaves of STORE: a store of that size."""
    return Storage(STORE.hashes[: tlog.stored_hash_count(n)])


# --- same answers as protocols.merkle ------------------------------------------------


@FAST
@given(n=st.integers(0, 300))
def test_tree_hash_is_the_reference_root(n: int) -> None:
    s = _prefix(n)
    assert tlog.tree_hash(n, s) == merkle.root_from_hashes(LEAF_HASHES[:n])
    # One read of the popcount(n) complete subtrees on the right edge; none for n = 0.
    assert [len(c) for c in s.calls] == ([n.bit_count()] if n else [])


@FAST
@given(t=st.integers(1, 300), data=st.data())
def test_record_proofs_equal_and_verify_as_the_reference(t: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, t - 1))
    s = _prefix(t)
    proof = tlog.prove_record(t, n, s)
    assert proof == merkle.inclusion_proof_from_hashes(LEAF_HASHES[:t], n)
    assert len(s.calls) == (1 if proof else 0)
    root = tlog.tree_hash(t, s)
    merkle.verify_inclusion_hash(LEAF_HASHES[n], n, t, proof, root)


@FAST
@given(t=st.integers(1, 300), data=st.data())
def test_many_record_proofs_in_one_read_equal_the_reference(t: int, data: st.DataObject) -> None:
    ns = data.draw(st.lists(st.integers(0, t - 1), max_size=20))
    s = _prefix(t)
    proofs = tlog.prove_records(t, ns, s)
    assert proofs == [merkle.inclusion_proof_from_hashes(LEAF_HASHES[:t], n) for n in ns]
    assert len(s.calls) == (1 if any(proofs) else 0)
    if s.calls:
        assert s.calls[0] == sorted(set(s.calls[0]))  # ascending, each hash once


@FAST
@given(t=st.integers(1, 300), data=st.data())
def test_tree_proofs_equal_and_verify_as_the_reference(t: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, t))
    s = _prefix(t)
    proof = tlog.prove_tree(t, n, s)
    assert proof == merkle.consistency_proof_from_hashes(LEAF_HASHES[:t], n)
    assert len(s.calls) == (1 if proof else 0)
    merkle.verify_consistency(n, t, tlog.tree_hash(n, s), tlog.tree_hash(t, s), proof)


def test_every_proof_up_to_64_leaves_reads_once_and_only_what_it_uses() -> None:
    for t in range(1, 65):
        s = _prefix(t)
        for n in range(t):
            s.calls.clear()
            proof = tlog.prove_record(t, n, s)
            assert len(s.calls) == (1 if t > 1 else 0), (t, n)
            # A hash read is a proof hash or a part of one: never more than 2·log2 t.
            assert sum(map(len, s.calls)) <= 2 * t.bit_length(), (t, n)
            assert len(proof) <= sum(map(len, s.calls)), (t, n)
        for n in range(t + 1):
            s.calls.clear()
            proof = tlog.prove_tree(t, n, s)
            assert len(s.calls) == (0 if n in (0, t) else 1), (t, n)
            assert proof == merkle.consistency_proof_from_hashes(LEAF_HASHES[:t], n)


def test_published_vectors_are_the_stored_hashes() -> None:
    """The CT vectors' node hashes, each where ``stored_hash_index`` puts it."""
    s = Storage()
    for i, leaf in enumerate(VECTORS["tree"]["leaves"]):
        s.append(i, bytes.fromhex(leaf))
    want = {
        tlog.stored_hash_index(level, i): h
        for level, hashes in enumerate(VECTORS["tree"]["node_hashes_by_level"])
        for i, h in enumerate(hashes)
    }
    assert {i: h.hex() for i, h in enumerate(s.hashes)} == want
    for size, root in enumerate(VECTORS["tree"]["roots_by_size"]):
        assert tlog.tree_hash(size, s).hex() == root
    for case in VECTORS["inclusion"]["cases"]:
        proof = tlog.prove_record(case["size"], case["index"], s)
        assert [p.hex() for p in proof] == case["proof"]
    for case in VECTORS["consistency"]["cases"]:
        proof = tlog.prove_tree(case["new_size"], case["old_size"], s)
        assert [p.hex() for p in proof] == case["proof"]


# --- Go's tlog_test.go ---------------------------------------------------------------


def test_stored_hash_count_after_each_append() -> None:
    """TestTree: after appending leaf i, StoredHashCount(i + 1) hashes are stored."""
    s = Storage()
    for i in range(100):
        s.append(i, b"leaf %d" % i)
        assert tlog.stored_hash_count(i + 1) == len(s.hashes), i
    assert tlog.stored_hash_count(0) == 0


def test_split_stored_hash_index_round_trips() -> None:
    """TestSplitStoredHashIndex: levels below 10, nodes below 100."""
    for level in range(10):
        for n in range(100):
            x = tlog.stored_hash_index(level, n)
            assert tlog.split_stored_hash_index(x) == (level, n), (level, n, x)


@FAST
@given(index=st.integers(0, 2**64))
def test_every_stored_index_names_one_node(index: int) -> None:
    level, n = tlog.split_stored_hash_index(index)
    assert tlog.stored_hash_index(level, n) == index


def test_stored_hash_index_by_hand() -> None:
    """The first 15 hashes of a tree of 8 leaves, in the order appends complete them."""
    order = [
        (0, 0), (0, 1), (1, 0),
        (0, 2), (0, 3), (1, 1), (2, 0),
        (0, 4), (0, 5), (1, 2),
        (0, 6), (0, 7), (1, 3), (2, 1), (3, 0),
    ]  # fmt: skip
    assert [tlog.stored_hash_index(level, n) for level, n in order] == list(range(15))
    assert [tlog.split_stored_hash_index(i) for i in range(15)] == order


def test_empty_tree() -> None:
    """TestEmptyTree: TreeHash(0) is SHA-256 of nothing, read from nowhere."""
    s = Storage()
    assert tlog.tree_hash(0, s) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    assert s.calls == []


def test_corrupted_proofs_fail() -> None:
    """TestTree: flipping a bit of any proof hash makes the proof fail."""
    t = 45
    s = _prefix(t)
    root = tlog.tree_hash(t, s)
    for n in range(t):
        proof = tlog.prove_record(t, n, s)
        for k in range(len(proof)):
            bad = [*proof[:k], bytes([proof[k][0] ^ 1]) + proof[k][1:], *proof[k + 1 :]]
            with pytest.raises(MerkleProofError):
                merkle.verify_inclusion_hash(LEAF_HASHES[n], n, t, bad, root)
    for n in range(1, t):
        proof = tlog.prove_tree(t, n, s)
        old = tlog.tree_hash(n, s)
        for k in range(len(proof)):
            bad = [*proof[:k], bytes([proof[k][0] ^ 1]) + proof[k][1:], *proof[k + 1 :]]
            with pytest.raises(MerkleProofError):
                merkle.verify_consistency(n, t, old, root, bad)


# --- appends from the right edge alone -----------------------------------------------


def test_the_right_edge_is_all_an_append_and_a_root_read() -> None:
    for n in range(130):
        edge = tlog.right_edge_indexes(n)
        assert len(edge) == n.bit_count()
        s = _prefix(n)
        tlog.tree_hash(n, s)
        assert s.calls == ([edge] if n else [])
        s.calls.clear()
        tlog.stored_hashes(n, b"next", s)
        read = [i for call in s.calls for i in call]
        assert set(read) <= set(edge), n  # appending leaf n reads only from the edge
        assert len(read) == len(tlog.stored_hashes(n, b"next", s)) - 1


@FAST
@given(batches=st.lists(st.integers(0, 40), max_size=12), start=st.integers(0, 120))
def test_a_right_edge_appends_the_stored_hashes_in_batches(batches: list[int], start: int) -> None:
    edge = tlog.RightEdge.read(start, _prefix(start))
    n = start
    for batch in batches:
        k = min(batch, 300 - n)
        nodes = edge.append(LEAF_HASHES[n : n + k])
        first, last = tlog.stored_hash_count(n), tlog.stored_hash_count(n + k)
        assert [h for _, _, _, h in nodes] == STORE.hashes[first:last]
        assert [i for i, _, _, _ in nodes] == list(range(first, last))
        assert all(tlog.stored_hash_index(lv, j) == i for i, lv, j, _ in nodes)
        n += k
        assert edge.size == n
        assert edge.root() == merkle.root_from_hashes(LEAF_HASHES[:n])
        want = tlog.right_edge_indexes(n)
        assert edge.read_hashes(want) == _prefix(n).read_hashes(want)


def test_a_right_edge_holds_only_the_edge() -> None:
    edge = tlog.RightEdge.read(6, _prefix(6))  # nodes (1, 2) and (2, 0)
    assert edge.read_hashes([6, 9]) == [STORE.hashes[6], STORE.hashes[9]]
    with pytest.raises(ValueError, match="not on the edge"):
        edge.read_hashes([5])
    with pytest.raises(ValueError, match="not 32 bytes"):
        edge.append([LEAF_HASHES[6], b"short"])
    assert edge.size == 6  # the refused batch changed nothing
    assert edge.append([LEAF_HASHES[6]]) == [(10, 0, 6, LEAF_HASHES[6])]
    with pytest.raises(ValueError, match="has 2 edge hashes"):
        tlog.RightEdge(6, [LEAF_HASHES[0]])


# --- bad arguments and bad readers ---------------------------------------------------


class ShortReader:
    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return [b"\x00" * 32 for _ in indexes][1:]


class WrongLengthReader:
    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return [b"\x00" * 31 for _ in indexes]


@pytest.mark.parametrize(
    "call",
    [
        lambda: tlog.prove_record(5, 5, STORE),
        lambda: tlog.prove_record(0, 0, STORE),
        lambda: tlog.prove_tree(5, 6, STORE),
        lambda: tlog.tree_hash(-1, STORE),
        lambda: tlog.stored_hash_index(-1, 0),
        lambda: tlog.stored_hash_index(0, -1),
        lambda: tlog.split_stored_hash_index(-1),
        lambda: tlog.stored_hashes_for_record_hash(3, b"short", STORE),
        lambda: tlog.tree_hash(5, ShortReader()),
        lambda: tlog.prove_record(8, 3, WrongLengthReader()),
        lambda: tlog.stored_hashes(1, b"x", ShortReader()),
    ],
)
def test_bad_arguments_and_readers_are_refused(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


def test_sizes_must_be_integers() -> None:
    with pytest.raises(TypeError):
        tlog.tree_hash(True, STORE)
    with pytest.raises(TypeError):
        tlog.stored_hash_count(2.0)  # type: ignore[arg-type]
