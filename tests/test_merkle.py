"""protocols.merkle against published vectors, a naive reference, and garbage.

Three independent sources of truth, so that builder and verifier cannot be
wrong in the same way and still agree with each other:

- protocols/vectors/merkle.json, transcribed from the Certificate
  Transparency / trillian / transparency-dev test suites;
- ``ref_mth`` below, RFC 6962 §2.1 written out naively, sharing no code;
- exhaustive generate-then-verify over every tree up to 64 leaves, with
  every proof corrupted in every way we can name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import merkle
from protocols.errors import MerkleProofError

VECTORS: dict[str, Any] = json.loads(
    (Path(merkle.__file__).parent / "vectors" / "merkle.json").read_text()
)
CT_LEAVES = [bytes.fromhex(x) for x in VECTORS["tree"]["leaves"]]
CT_ROOTS = [bytes.fromhex(x) for x in VECTORS["tree"]["roots_by_size"]]
CT_NODES = [[bytes.fromhex(h) for h in level] for level in VECTORS["tree"]["node_hashes_by_level"]]

MAX_SIZE = 64
# Distinct entries of varied lengths; the empty entry is legal and hashes like any other.
ENTRIES = [b""] + [f"entry {i}".encode() * (i % 3 + 1) for i in range(1, MAX_SIZE)]
HASHES = [merkle.leaf_hash(e) for e in ENTRIES]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

FAST = settings(max_examples=100, deadline=None, database=None)


# --- naive reference: RFC 6962 §2.1, no code shared with protocols.merkle ----


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return ref_node(ref_mth(entries[:k]), ref_mth(entries[k:]))


def ref_path_length(m: int, n: int) -> int:
    """len(PATH(m, D[n])), following the recursion without hashing anything."""
    if n == 1:
        return 0
    k = 1 << ((n - 1).bit_length() - 1)
    return 1 + (ref_path_length(m, k) if m < k else ref_path_length(m - k, n - k))


def ref_proof_length(m: int, n: int, complete: bool = True) -> int:
    """len(SUBPROOF(m, D[n], complete)), likewise; 0 for the trivial cases."""
    if m in (0, n):
        return 0 if complete or m == 0 else 1
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return 1 + ref_proof_length(m, k, complete)
    return 1 + ref_proof_length(m - k, n - k, complete=False)


REF_ROOTS = [ref_mth(ENTRIES[:n]) for n in range(MAX_SIZE + 1)]


def flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


def hexes(xs: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in xs]


# --- published vectors --------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    assert merkle.EMPTY_ROOT == hashlib.sha256(b"").digest() == CT_ROOTS[0]
    assert merkle.root([]) == merkle.root_from_hashes([]) == merkle.EMPTY_ROOT


def test_published_node_hashes() -> None:
    assert [merkle.leaf_hash(x) for x in CT_LEAVES] == CT_NODES[0]
    for level in range(1, len(CT_NODES)):
        below = CT_NODES[level - 1]
        assert [
            merkle.node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(below) // 2)
        ] == CT_NODES[level]
        for i, want in enumerate(CT_NODES[level]):
            assert merkle.root(CT_LEAVES[i << level : (i + 1) << level]) == want


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_published_roots(size: int) -> None:
    leaves = CT_LEAVES[:size]
    assert merkle.root(leaves) == CT_ROOTS[size]
    assert merkle.root_from_hashes([merkle.leaf_hash(x) for x in leaves]) == CT_ROOTS[size]
    assert ref_mth(leaves) == CT_ROOTS[size]  # the reference is checked too


@pytest.mark.parametrize(
    "case", VECTORS["inclusion"]["cases"], ids=lambda c: f"{c['index']}-of-{c['size']}"
)
def test_published_inclusion_proofs(case: dict[str, Any]) -> None:
    index, size, proof = case["index"], case["size"], hexes(case["proof"])
    leaves = CT_LEAVES[:size]
    assert merkle.inclusion_proof(leaves, index) == proof
    merkle.verify_inclusion(CT_LEAVES[index], index, size, proof, CT_ROOTS[size])
    merkle.verify_inclusion_hash(
        merkle.leaf_hash(CT_LEAVES[index]), index, size, proof, CT_ROOTS[size]
    )
    leaf = merkle.leaf_hash(CT_LEAVES[index])
    assert_rejected(
        merkle.verify_inclusion_hash,
        inclusion_corruptions(leaf, index, size, proof, CT_ROOTS[size]),
    )


@pytest.mark.parametrize(
    "case",
    VECTORS["consistency"]["cases"],
    ids=lambda c: f"{c['old_size']}-to-{c['new_size']}",
)
def test_published_consistency_proofs(case: dict[str, Any]) -> None:
    m, n, proof = case["old_size"], case["new_size"], hexes(case["proof"])
    assert merkle.consistency_proof(CT_LEAVES[:n], m) == proof
    merkle.verify_consistency(m, n, CT_ROOTS[m], CT_ROOTS[n], proof)
    if m < n:
        assert_rejected(
            merkle.verify_consistency,
            consistency_corruptions(m, n, CT_ROOTS[m], CT_ROOTS[n], proof),
        )


# Shapes name the nodes a proof is made of; trees past the 8 published leaves
# take their node hashes from the reference.
SHAPE_ENTRIES = [bytes([i]) for i in range(128)]


def node_source(size: int) -> tuple[list[bytes], Callable[[int, int], bytes]]:
    if size <= len(CT_LEAVES):
        return CT_LEAVES, lambda level, i: CT_NODES[level][i]
    return SHAPE_ENTRIES, lambda level, i: ref_mth(SHAPE_ENTRIES[i << level : (i + 1) << level])


def shape_proof(case: dict[str, Any], node: Callable[[int, int], bytes]) -> list[bytes]:
    hashes = [node(level, i) for level, i in case["nodes"]]
    if "rehash" in case:
        begin, end = case["rehash"]
        h = hashes[begin]
        for x in hashes[begin + 1 : end]:
            h = ref_node(x, h)
        hashes[begin:end] = [h]
    return hashes


@pytest.mark.parametrize(
    "case", VECTORS["inclusion_shapes"]["cases"], ids=lambda c: f"{c['index']}-of-{c['size']}"
)
def test_inclusion_shapes(case: dict[str, Any]) -> None:
    index, size = case["index"], case["size"]
    leaves, node = node_source(size)
    want = shape_proof(case, node)
    assert merkle.inclusion_proof(leaves[:size], index) == want
    merkle.verify_inclusion(leaves[index], index, size, want, ref_mth(leaves[:size]))


@pytest.mark.parametrize(
    "case",
    VECTORS["consistency_shapes"]["cases"],
    ids=lambda c: f"{c['old_size']}-to-{c['new_size']}",
)
def test_consistency_shapes(case: dict[str, Any]) -> None:
    m, n = case["old_size"], case["new_size"]
    leaves, node = node_source(n)
    want = shape_proof(case, node)
    assert merkle.consistency_proof(leaves[:n], m) == want
    merkle.verify_consistency(m, n, ref_mth(leaves[:m]), ref_mth(leaves[:n]), want)


@pytest.mark.parametrize("case", VECTORS["inclusion_shapes"]["invalid"])
def test_inclusion_invalid_arguments(case: dict[str, Any]) -> None:
    index, size = case["index"], case["size"]
    with pytest.raises(ValueError, match="outside"):
        merkle.inclusion_proof(SHAPE_ENTRIES[:size], index)
    with pytest.raises(MerkleProofError, match="not below tree size"):
        merkle.verify_inclusion_hash(SOME_HASH, index, size, [], SOME_HASH)


@pytest.mark.parametrize("case", VECTORS["consistency_shapes"]["invalid"])
def test_consistency_invalid_arguments(case: dict[str, Any]) -> None:
    m, n = case["old_size"], case["new_size"]
    with pytest.raises(ValueError, match="outside"):
        merkle.consistency_proof(SHAPE_ENTRIES[:n], m)
    with pytest.raises(MerkleProofError, match="above new size"):
        merkle.verify_consistency(m, n, SOME_HASH, SOME_HASH, [])


# --- exhaustive: every tree up to 64 leaves -----------------------------------


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_root_matches_reference(size: int) -> None:
    assert merkle.root(ENTRIES[:size]) == REF_ROOTS[size]
    assert merkle.root_from_hashes(HASHES[:size]) == REF_ROOTS[size]


def tampered(proof: list[bytes], extra: list[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """Every proof one edit away: each hash changed, dropped, or one added anywhere."""
    for i in range(len(proof)):
        for bit in (0, 7):
            yield f"proof[{i}] bit {bit}", [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
        yield f"proof[{i}] dropped", proof[:i] + proof[i + 1 :]
        yield f"proof[{i}] short", [*proof[:i], proof[i][:-1], *proof[i + 1 :]]
    for i in range(len(proof) + 1):
        for j, h in enumerate(extra):
            yield f"extra[{j}] at {i}", [*proof[:i], h, *proof[i:]]
    if len(proof) > 1:
        yield "reversed", proof[::-1]


Corruption = tuple[str, tuple[Any, ...]]


def assert_rejected(verify: Callable[..., None], corruptions: Iterator[Corruption]) -> None:
    for desc, args in corruptions:
        try:
            verify(*args)
        except MerkleProofError:
            continue
        pytest.fail(f"accepted a proof with {desc}")


def inclusion_corruptions(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> Iterator[Corruption]:
    """As transparency-dev/merkle's corruptInclusionProof, plus every one-edit proof."""
    yield "index - 1", (leaf, index - 1, size, proof, root)
    yield "index + 1", (leaf, index + 1, size, proof, root)
    yield "index ^ 2", (leaf, index ^ 2, size, proof, root)
    yield "size * 2", (leaf, index, size * 2, proof, root)
    yield "size // 2", (leaf, index, size // 2, proof, root)
    yield "size = index", (leaf, index, index, proof, root)
    yield "wrong leaf", (flip(leaf), index, size, proof, root)
    yield "short leaf", (leaf[:31], index, size, proof, root)
    yield "empty root", (leaf, index, size, proof, merkle.EMPTY_ROOT)
    yield "some root", (leaf, index, size, proof, SOME_HASH)
    yield "short root", (leaf, index, size, proof, root[:31])
    for desc, p in tampered(proof, [SOME_HASH, leaf, root, b"", merkle.EMPTY_ROOT]):
        yield desc, (leaf, index, size, p, root)


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_every_inclusion_proof_verifies_and_every_corruption_fails(size: int) -> None:
    root = REF_ROOTS[size]
    for index in range(size):
        proof = merkle.inclusion_proof_from_hashes(HASHES[:size], index)
        assert proof == merkle.inclusion_proof(ENTRIES[:size], index)
        assert len(proof) == ref_path_length(index, size)
        merkle.verify_inclusion(ENTRIES[index], index, size, proof, root)
        merkle.verify_inclusion_hash(HASHES[index], index, size, proof, root)
        merkle.verify_inclusion_hash(HASHES[index], index, size, tuple(proof), root)
        assert_rejected(
            merkle.verify_inclusion_hash,
            inclusion_corruptions(HASHES[index], index, size, proof, root),
        )


def consistency_corruptions(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> Iterator[Corruption]:
    """As transparency-dev/merkle's corruptConsistencyProof, plus every one-edit proof.

    Not n + 1: the same hashes also verify against the size-n root claimed at
    size n + 1 (the last hash may stand for a leaf or a subtree). Binding a
    size to its root is the signed tree head's job, not the proof's.
    """
    yield "old size - 1", (m - 1, n, old_root, new_root, proof)
    yield "old size + 1", (m + 1, n, old_root, new_root, proof)
    yield "old size ^ 2", (m ^ 2, n, old_root, new_root, proof)
    yield "new size * 2", (m, n * 2, old_root, new_root, proof)
    yield "new size // 2", (m, n // 2, old_root, new_root, proof)
    yield "wrong old root", (m, n, flip(old_root), new_root, proof)
    yield "wrong new root", (m, n, old_root, flip(new_root), proof)
    yield "swapped roots", (m, n, new_root, old_root, proof)
    yield "short old root", (m, n, old_root[:31], new_root, proof)
    yield "long new root", (m, n, old_root, new_root + b"\x00", proof)
    yield "empty proof", (m, n, old_root, new_root, [])
    for desc, p in tampered(proof, [SOME_HASH, old_root, new_root, b"", *proof[:1]]):
        yield desc, (m, n, old_root, new_root, p)


@pytest.mark.parametrize("new_size", range(MAX_SIZE + 1))
def test_every_consistency_proof_verifies_and_every_corruption_fails(new_size: int) -> None:
    n = new_size
    new_root = REF_ROOTS[n]
    for m in range(n + 1):
        old_root = REF_ROOTS[m]
        proof = merkle.consistency_proof_from_hashes(HASHES[:n], m)
        assert proof == merkle.consistency_proof(ENTRIES[:n], m)
        assert len(proof) == ref_proof_length(m, n)
        merkle.verify_consistency(m, n, old_root, new_root, proof)
        if m in (0, n):
            assert proof == []
            continue
        assert_rejected(
            merkle.verify_consistency, consistency_corruptions(m, n, old_root, new_root, proof)
        )


# --- the edges the RFC leaves to us ---------------------------------------------


def test_consistency_from_empty_tree() -> None:
    empty = merkle.EMPTY_ROOT
    merkle.verify_consistency(0, 0, empty, empty, [])
    merkle.verify_consistency(0, 5, empty, REF_ROOTS[5], [])
    merkle.verify_consistency(0, 5, empty, SOME_HASH, [])  # anything extends nothing
    with pytest.raises(MerkleProofError, match="empty tree"):
        merkle.verify_consistency(0, 5, SOME_HASH, REF_ROOTS[5], [])
    with pytest.raises(MerkleProofError, match="has 1 hashes"):
        merkle.verify_consistency(0, 5, empty, REF_ROOTS[5], [empty])
    with pytest.raises(MerkleProofError, match="different roots"):
        merkle.verify_consistency(0, 0, empty, SOME_HASH, [])


def test_consistency_between_equal_sizes() -> None:
    merkle.verify_consistency(5, 5, REF_ROOTS[5], REF_ROOTS[5], [])
    with pytest.raises(MerkleProofError, match="different roots for the same size 5"):
        merkle.verify_consistency(5, 5, REF_ROOTS[5], REF_ROOTS[4], [])
    with pytest.raises(MerkleProofError, match="has 1 hashes; the proof for sizes 5 and 5 has 0"):
        merkle.verify_consistency(5, 5, REF_ROOTS[5], REF_ROOTS[5], [SOME_HASH])


def test_single_leaf_tree_root_is_the_leaf_hash() -> None:
    merkle.verify_inclusion(b"data", 0, 1, [], merkle.leaf_hash(b"data"))
    with pytest.raises(MerkleProofError, match="does not lead to the root"):
        merkle.verify_inclusion(b"date", 0, 1, [], merkle.leaf_hash(b"data"))


@pytest.mark.parametrize(
    ("call", "detail"),
    [
        (lambda: merkle.verify_inclusion_hash(HASHES[2], 2, 2, [], REF_ROOTS[2]), "not below"),
        (lambda: merkle.verify_inclusion_hash(HASHES[0], -1, 2, [], REF_ROOTS[2]), "negative"),
        (lambda: merkle.verify_inclusion_hash(HASHES[0], 0, -2, [], REF_ROOTS[2]), "negative"),
        (lambda: merkle.verify_inclusion_hash(HASHES[0], 0, 2**64, [], SOME_HASH), r"2\^64"),
        (lambda: merkle.verify_inclusion_hash(HASHES[0][:31], 0, 2, [], SOME_HASH), "31 bytes"),
        (lambda: merkle.verify_inclusion_hash(HASHES[0], 0, 2, [], SOME_HASH), "has 0 hashes"),
        (
            lambda: merkle.verify_inclusion_hash(HASHES[0], 0, 2, [b"x" * 33], SOME_HASH),
            r"proof\[0\] is 33 bytes",
        ),
        (lambda: merkle.verify_consistency(3, 2, SOME_HASH, SOME_HASH, []), "above new size"),
        (lambda: merkle.verify_consistency(-1, 2, SOME_HASH, SOME_HASH, []), "negative"),
        (lambda: merkle.verify_consistency(1, 2, SOME_HASH, b"", [SOME_HASH]), "new root is 0"),
        (lambda: merkle.verify_consistency(1, 2, REF_ROOTS[1], SOME_HASH, []), "has 0 hashes"),
        (
            lambda: merkle.verify_consistency(1, 2, REF_ROOTS[1], SOME_HASH, [HASHES[1]]),
            "new root of size 2",
        ),
        (
            lambda: merkle.verify_consistency(
                3, 4, SOME_HASH, REF_ROOTS[4], merkle.consistency_proof(ENTRIES[:4], 3)
            ),
            "old root of size 3",
        ),
    ],
)
def test_errors_say_what_is_wrong(call: Callable[[], None], detail: str) -> None:
    with pytest.raises(MerkleProofError, match=detail) as info:
        call()
    assert info.value.code == "ixb.E_PROOF"


WRONG_TYPES: list[Any] = [None, "00" * 32, 3, 1.5, bytearray(32), [SOME_HASH], {0: 1}]


@pytest.mark.parametrize("bad", WRONG_TYPES, ids=repr)
@pytest.mark.parametrize("position", range(5))
def test_wrong_types_are_proof_errors(bad: Any, position: int) -> None:
    good: list[Any] = [ENTRIES[1], 1, 2, [HASHES[0]], REF_ROOTS[2]]
    merkle.verify_inclusion(*good)
    args = [*good[:position], bad, *good[position + 1 :]]
    with pytest.raises(MerkleProofError):
        merkle.verify_inclusion(*args)
    good = [1, 2, REF_ROOTS[1], REF_ROOTS[2], [HASHES[1]]]
    merkle.verify_consistency(*good)
    args = [*good[:position], bad, *good[position + 1 :]]
    with pytest.raises(MerkleProofError):
        merkle.verify_consistency(*args)


def test_builders_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="leaf hash 1 is 31 bytes"):
        merkle.root_from_hashes([SOME_HASH, SOME_HASH[:31]])
    with pytest.raises(ValueError, match="outside"):
        merkle.inclusion_proof(ENTRIES[:4], -1)
    with pytest.raises(ValueError, match="outside"):
        merkle.consistency_proof(ENTRIES[:4], -1)
    with pytest.raises(ValueError, match="outside"):
        merkle.consistency_proof(ENTRIES[:4], 5)


# --- property tests -------------------------------------------------------------

entry_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=80)


@FAST
@given(entries=entry_lists, data=st.data())
def test_random_trees_proofs_verify(entries: list[bytes], data: st.DataObject) -> None:
    n = len(entries)
    new_root = merkle.root(entries)
    assert new_root == ref_mth(entries)
    index = data.draw(st.integers(0, n - 1), label="index")
    merkle.verify_inclusion(
        entries[index], index, n, merkle.inclusion_proof(entries, index), new_root
    )
    m = data.draw(st.integers(0, n), label="old_size")
    proof = merkle.consistency_proof(entries, m)
    merkle.verify_consistency(m, n, ref_mth(entries[:m]), new_root, proof)


@FAST
@given(entries=entry_lists, data=st.data())
def test_random_bit_flips_are_rejected(entries: list[bytes], data: st.DataObject) -> None:
    n = len(entries)
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = merkle.inclusion_proof(entries, index)
    m = data.draw(st.integers(1, n), label="old_size")
    cproof = merkle.consistency_proof(entries, m)
    target = data.draw(st.sampled_from(["root", "proof", "cproof"]), label="target")
    bit = data.draw(st.integers(0, 32 * 8 - 1), label="bit")

    def flipped(h: bytes) -> bytes:
        b = bytearray(h)
        b[bit // 8] ^= 1 << (bit % 8)
        return bytes(b)

    root, old_root = merkle.root(entries), merkle.root(entries[:m])
    if target == "root":
        with pytest.raises(MerkleProofError):
            merkle.verify_inclusion(entries[index], index, n, proof, flipped(root))
        with pytest.raises(MerkleProofError):
            merkle.verify_consistency(m, n, flipped(old_root), root, cproof)
    elif target == "proof" and proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="i")
        proof[i] = flipped(proof[i])
        with pytest.raises(MerkleProofError):
            merkle.verify_inclusion(entries[index], index, n, proof, root)
    elif target == "cproof" and cproof:
        i = data.draw(st.integers(0, len(cproof) - 1), label="i")
        cproof[i] = flipped(cproof[i])
        with pytest.raises(MerkleProofError):
            merkle.verify_consistency(m, n, old_root, root, cproof)


sizes = st.one_of(st.integers(-3, 70), st.integers(-(2**70), 2**70), st.just(2**64 - 1))
hashes = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40))
anything = st.one_of(
    st.none(), st.text(max_size=4), st.floats(), st.lists(st.integers(), max_size=3)
)
proofs = st.one_of(st.lists(hashes, max_size=10), st.tuples(hashes, hashes), st.binary(max_size=64))


@FAST
@given(
    leaf=st.one_of(st.binary(max_size=40), anything),
    index=st.one_of(sizes, anything),
    size=st.one_of(sizes, anything),
    proof=st.one_of(proofs, anything),
    root=st.one_of(hashes, anything),
)
def test_garbage_inclusion_only_ever_raises_proof_error(
    leaf: Any, index: Any, size: Any, proof: Any, root: Any
) -> None:
    with contextlib.suppress(MerkleProofError):
        merkle.verify_inclusion(leaf, index, size, proof, root)
    with contextlib.suppress(MerkleProofError):
        merkle.verify_inclusion_hash(leaf, index, size, proof, root)


@FAST
@given(
    old_size=st.one_of(sizes, anything),
    new_size=st.one_of(sizes, anything),
    old_root=st.one_of(hashes, anything),
    new_root=st.one_of(hashes, anything),
    proof=st.one_of(proofs, anything),
)
def test_garbage_consistency_only_ever_raises_proof_error(
    old_size: Any, new_size: Any, old_root: Any, new_root: Any, proof: Any
) -> None:
    with contextlib.suppress(MerkleProofError):
        merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)


@settings(FAST, max_examples=50)
@given(size=st.integers(1, 2**64 - 1), data=st.data())
def test_well_formed_garbage_in_huge_trees_is_rejected(size: int, data: st.DataObject) -> None:
    """Right lengths for the claimed sizes, random hashes: must fail on the hashes."""
    random_hash = st.binary(min_size=32, max_size=32)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = data.draw(
        st.lists(random_hash, min_size=(k := ref_path_length(index, size)), max_size=k)
    )
    with pytest.raises(MerkleProofError, match="does not lead to the root"):
        merkle.verify_inclusion(b"entry", index, size, proof, SOME_HASH)
    old = data.draw(st.integers(1, size - 1), label="old") if size > 1 else 1
    k = ref_proof_length(old, size)
    proof = data.draw(st.lists(random_hash, min_size=k, max_size=k))
    with pytest.raises(MerkleProofError, match=r"does not lead to the|different roots"):
        merkle.verify_consistency(old, size, SOME_HASH, merkle.EMPTY_ROOT, proof)
