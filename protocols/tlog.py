"""Tree algorithms over stored hashes: Go's ``golang.org/x/mod/sumdb/tlog``, in Python.

:mod:`protocols.merkle` defines roots and proofs over the list of every leaf
hash (RFC 6962 §2.1, O(n) each). A log that keeps the hash of every
*complete* subtree answers the same questions from O(log n) of them; this
module is that arithmetic, with tlog's names, and nothing else:

- **Where hashes live.** Node ``(level, n)`` covers leaves
  ``[n·2^level, (n+1)·2^level)``; :func:`stored_hash_index` numbers the nodes
  in the order appends complete them (the post order of Crosby and Wallach,
  "Efficient Data Structures for Tamper-Evident Logging", §3.3), so storage
  is append-only and dense. Appending leaf ``n`` stores its leaf hash and one
  node per trailing one bit of ``n`` (:func:`stored_hashes`).
- **What is read.** :func:`tree_hash` (RFC 6962 §2.1 MTH), :func:`prove_record`
  (§2.1.1 PATH) and :func:`prove_tree` (§2.1.2 PROOF) first list every stored
  hash index they need, then call :meth:`HashReader.read_hashes` **once**, so
  a store answers a proof with one batched read (one SQL query, one round trip).

Every result is byte for byte :mod:`protocols.merkle`'s (``tests/test_tlog.py``
checks it); hashing is :func:`protocols.merkle.leaf_hash` and
:func:`~protocols.merkle.node_hash`. Verifying a proof is not repeated here:
Go's ``CheckRecord`` and ``CheckTree`` are :func:`protocols.merkle.verify_inclusion_hash`
and :func:`~protocols.merkle.verify_consistency`.

Pure: no I/O, no clock. Arguments are our own tree sizes and indexes, so a
bad one is a bug in the caller and raises :class:`ValueError`, as do a reader
that answers with the wrong number of hashes or a hash of the wrong length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from protocols import merkle

HASH_SIZE = 32


class HashReader(Protocol):
    """Where stored hashes are read from: a database table, tiles, a list in memory."""

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """The hashes at the given stored hash indexes, in the order asked.

        Returns exactly one 32-byte hash per index or raises. The functions
        here ask in increasing index order and never twice for one index in
        a call, which a store may exploit.
        """
        ...


# --- where each hash is stored --------------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """Where node ``(level, n)`` is stored: the number of hashes stored before it.

    Before leaf ``m`` is appended, ``2m - popcount(m)`` hashes are stored
    (:func:`stored_hash_count`); leaf ``m`` adds its own and then one parent
    per trailing one bit of ``m``. Node ``(level, n)`` is the ``level``-th of
    those for ``m = (n+1)·2^level - 1``, its rightmost leaf.
    """
    # No isinstance checks: this is the inner loop of every proof, and a
    # non-integer fails the comparison or the shift with a TypeError anyway.
    if level < 0 or n < 0:
        raise ValueError(f"tlog: node ({level}, {n}) has a negative coordinate")
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """``(level, n)`` of the node stored at ``index``: the inverse of :func:`stored_hash_index`."""
    _check_natural("stored hash index", index)
    # stored_hash_index(0, m) <= index < 2·m for the leaf m appended with it,
    # so m is in [index/2, index/2 + log2 index]: walk up from the low end.
    m = index // 2
    at = stored_hash_index(0, m)
    while True:
        following = at + 1 + _trailing_ones(m)  # where leaf m + 1 is stored
        if following > index:
            break
        m, at = m + 1, following
    level = index - at
    return level, m >> level


def stored_hash_count(n: int) -> int:
    """How many hashes a tree of ``n`` leaves stores: ``2n - popcount(n)``."""
    _check_natural("tree size", n)
    return 2 * n - n.bit_count()


def stored_hashes(n: int, data: bytes, reader: HashReader) -> list[bytes]:
    """The hashes to store when appending leaf ``n`` with entry ``data``.

    They go at ``stored_hash_index(0, n)`` onwards: the leaf hash (RFC 6962
    §2.1, ``SHA-256(0x00 || data)``), then node ``(k, n >> k)`` for each of the
    ``k`` trailing one bits of ``n``, each completed from its left sibling
    (read from ``reader``, one call, none if ``n`` is even).
    """
    return stored_hashes_for_record_hash(n, merkle.leaf_hash(data), reader)


def stored_hashes_for_record_hash(n: int, leaf_hash: bytes, reader: HashReader) -> list[bytes]:
    """:func:`stored_hashes` for a leaf whose hash is already known."""
    _check_natural("leaf index", n)
    _check_hash(leaf_hash, "leaf hash")
    levels = _trailing_ones(n)
    if not levels:
        return [leaf_hash]
    # The left siblings, lowest level first: node (k, (n >> k) - 1), n >> k being odd.
    indexes = [stored_hash_index(k, (n >> k) - 1) for k in range(levels)]
    siblings = _read(reader, indexes[::-1])[::-1]  # asked in increasing order
    out = [leaf_hash]
    h = leaf_hash
    for left in siblings:
        h = merkle.node_hash(left, h)
        out.append(h)
    return out


def right_edge_indexes(n: int) -> list[int]:
    """The stored indexes of the complete subtrees a tree of ``n`` leaves ends with,
    largest (leftmost) first: one per set bit of ``n``.

    Exactly what :func:`tree_hash` reads for size ``n``, and, with the leaf
    hash, all that :func:`stored_hashes` needs for leaf ``n``: a writer that
    keeps them in memory appends without reading storage.
    """
    _check_natural("tree size", n)
    return _subtree_indexes(0, n, [])


StoredNode = tuple[int, int, int, bytes]
"""``(stored hash index, level, n, hash)`` of node ``(level, n)``, as a writer stores it."""


class RightEdge:
    """The right edge of a tree held in memory: all a writer reads to append, and a
    :class:`HashReader` of the :func:`right_edge_indexes` for :func:`tree_hash`.

    :meth:`append` is :func:`stored_hashes_for_record_hash` for a batch of
    leaves, without a read per leaf: the siblings it combines are the
    edge's own, and the nodes it completes become the new edge.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, size: int, hashes: Sequence[bytes]) -> None:
        """``hashes`` are the ones at ``right_edge_indexes(size)``, in that order."""
        _check_natural("tree size", size)
        levels = [level for level in reversed(range(size.bit_length())) if size >> level & 1]
        if len(hashes) != len(levels):
            raise ValueError(f"tlog: a tree of size {size} has {len(levels)} edge hashes")
        for h in hashes:
            _check_hash(h, "edge hash")
        self._size = size
        self._levels = dict(zip(levels, hashes, strict=True))
        """Complete subtrees waiting for a right sibling, by level; only the set
        bits of ``size`` are current, the others are stale and never read."""

    @classmethod
    def read(cls, size: int, reader: HashReader) -> RightEdge:
        """The edge of the tree of ``size`` leaves, in one read (none if empty)."""
        indexes = right_edge_indexes(size)
        return cls(size, _read(reader, indexes) if indexes else [])

    @property
    def size(self) -> int:
        return self._size

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """Edge hashes by stored index; any other index is not held here (ValueError)."""
        size, held = self._size, {}
        for level, h in self._levels.items():
            if size >> level & 1:
                held[stored_hash_index(level, (size >> level) - 1)] = h
        try:
            return [held[i] for i in indexes]
        except KeyError as e:
            raise ValueError(f"tlog: hash {e.args[0]} is not on the edge of size {size}") from None

    def root(self) -> bytes:
        """MTH of the tree so far (:func:`tree_hash` of the edge)."""
        return tree_hash(self._size, self)

    def append(self, leaf_hashes: Iterable[bytes]) -> list[StoredNode]:
        """Append leaves by leaf hash; the nodes to store, in stored index order.

        For leaf ``i``: its leaf hash at ``stored_hash_index(0, i)``, then node
        ``(k, i >> k)`` for each of its ``k`` trailing one bits, as
        :func:`stored_hashes` gives them. Every hash is checked before the
        edge changes, so a refused batch leaves it as it was.
        """
        leaf_hashes = list(leaf_hashes)
        for h in leaf_hashes:
            _check_hash(h, "leaf hash")
        edge, node_hash = self._levels, merkle.node_hash
        out: list[StoredNode] = []
        i = self._size
        pos = stored_hash_index(0, i)
        for leaf_hash in leaf_hashes:
            out.append((pos, 0, i, leaf_hash))
            h, level, j = leaf_hash, 0, i
            while j & 1:
                h = node_hash(edge[level], h)
                level, j, pos = level + 1, j >> 1, pos + 1
                out.append((pos, level, j, h))
            edge[level] = h
            i, pos = i + 1, pos + 1
        self._size = i
        return out


# --- roots and proofs (RFC 6962 §2.1) -----------------------------------------------------


def tree_hash(n: int, reader: HashReader) -> bytes:
    """MTH(D[n]), the root of the first ``n`` leaves (RFC 6962 §2.1).

    Reads the ``popcount(n)`` complete subtrees of the tree's right edge in
    one call; the empty tree's root is SHA-256 of the empty string, read from
    nowhere.
    """
    _check_natural("tree size", n)
    if n == 0:
        return merkle.EMPTY_ROOT
    indexes = _subtree_indexes(0, n, [])
    hashes = iter(_read(reader, indexes))
    h = _subtree_hash(0, n, hashes)
    _check_consumed(hashes, "tree_hash")
    return h


def prove_record(t: int, n: int, reader: HashReader) -> list[bytes]:
    """PATH(n, D[t]): the inclusion proof of leaf ``n`` in the tree of size ``t``
    (RFC 6962 §2.1.1), siblings from the leaf up, as
    :func:`protocols.merkle.inclusion_proof_from_hashes` builds it.

    One :meth:`~HashReader.read_hashes` call of at most ``2·log2 t`` indexes;
    none for a tree of one leaf, whose proof is empty.
    """
    (proof,) = prove_records(t, [n], reader)
    return proof


def prove_records(t: int, ns: Sequence[int], reader: HashReader) -> list[list[bytes]]:
    """:func:`prove_record` for each leaf of ``ns`` in the tree of size ``t``, with one
    :meth:`~HashReader.read_hashes` call for all of them (their paths share most nodes)."""
    _check_natural("tree size", t)
    needs = []
    for n in ns:
        _check_natural("leaf index", n)
        if n >= t:
            raise ValueError(f"leaf index {n} is outside a tree of size {t}")
        needs.append(_record_proof_indexes(0, t, n, []))
    wanted = sorted({i for need in needs for i in need})
    held = dict(zip(wanted, _read(reader, wanted), strict=True)) if wanted else {}
    proofs = []
    for n, need in zip(ns, needs, strict=True):
        hashes = iter([held[i] for i in need])
        proofs.append(_record_proof(0, t, n, hashes))
        _check_consumed(hashes, "prove_records")
    return proofs


def prove_tree(t: int, n: int, reader: HashReader) -> list[bytes]:
    """PROOF(n, D[t]): the consistency proof from the tree of size ``n`` to the one
    of size ``t`` (RFC 6962 §2.1.2), as
    :func:`protocols.merkle.consistency_proof_from_hashes` builds it.

    One :meth:`~HashReader.read_hashes` call; none when ``n`` is 0 or ``t``,
    whose proofs are empty (every tree extends the empty one and itself; Go's
    ``ProveTree`` refuses ``n = 0``, :mod:`protocols.merkle` does not).
    """
    _check_natural("tree size", t)
    _check_natural("old tree size", n)
    if n > t:
        raise ValueError(f"old tree size {n} is above tree size {t}")
    if n in (0, t):
        return []
    indexes = _tree_proof_indexes(0, t, n, [])
    hashes = iter(_read(reader, indexes))
    proof = _tree_proof(0, t, n, hashes)
    _check_consumed(hashes, "prove_tree")
    return proof


# --- the recursions: each *_indexes lists what its twin then consumes, in order -------------


def _split(n: int) -> int:
    """RFC 6962's k: the largest power of two smaller than ``n`` (``n`` > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_indexes(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append the nodes whose fold is MTH(D[lo:hi]): the set bits of ``hi - lo``,
    largest first (ranges of the RFC recursion start at a multiple of each)."""
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo & ((1 << level) - 1):
            raise ValueError(f"tlog: [{lo}, {hi}) is not a range of the tree")
        need.append(stored_hash_index(level, lo >> level))
        lo += 1 << level
    return need


def _subtree_hash(lo: int, hi: int, hashes: Iterator[bytes]) -> bytes:
    """MTH(D[lo:hi]) from the hashes :func:`_subtree_indexes` listed for it."""
    parts = [next(hashes) for _ in range((hi - lo).bit_count())]
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = merkle.node_hash(left, h)
    return h


def _record_proof_indexes(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if hi - lo == 1:
        return need
    k = _split(hi - lo)
    if n < lo + k:
        _record_proof_indexes(lo, lo + k, n, need)
        return _subtree_indexes(lo + k, hi, need)
    _subtree_indexes(lo, lo + k, need)
    return _record_proof_indexes(lo + k, hi, n, need)


def _record_proof(lo: int, hi: int, n: int, hashes: Iterator[bytes]) -> list[bytes]:
    """PATH(n - lo, D[lo:hi]): the sibling of each subtree on the way down to leaf ``n``."""
    if hi - lo == 1:
        return []  # the verifier holds the leaf hash
    k = _split(hi - lo)
    if n < lo + k:
        proof = _record_proof(lo, lo + k, n, hashes)
        return [*proof, _subtree_hash(lo + k, hi, hashes)]
    sibling = _subtree_hash(lo, lo + k, hashes)
    return [*_record_proof(lo + k, hi, n, hashes), sibling]


def _tree_proof_indexes(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if n == hi:
        return need if lo == 0 else _subtree_indexes(lo, hi, need)
    k = _split(hi - lo)
    if n <= lo + k:
        _tree_proof_indexes(lo, lo + k, n, need)
        return _subtree_indexes(lo + k, hi, need)
    _subtree_indexes(lo, lo + k, need)
    return _tree_proof_indexes(lo + k, hi, n, need)


def _tree_proof(lo: int, hi: int, n: int, hashes: Iterator[bytes]) -> list[bytes]:
    """SUBPROOF(n - lo, D[lo:hi], lo == 0): RFC 6962 §2.1.2's b is true while the
    old tree D[0:n] is the left edge of the subtree, whose root the verifier holds."""
    if n == hi:
        return [] if lo == 0 else [_subtree_hash(lo, hi, hashes)]
    k = _split(hi - lo)
    if n <= lo + k:
        proof = _tree_proof(lo, lo + k, n, hashes)
        return [*proof, _subtree_hash(lo + k, hi, hashes)]
    sibling = _subtree_hash(lo, lo + k, hashes)
    return [*_tree_proof(lo + k, hi, n, hashes), sibling]


# --- checks ---------------------------------------------------------------------------------


def _read(reader: HashReader, indexes: list[int]) -> list[bytes]:
    hashes = reader.read_hashes(indexes)
    if len(hashes) != len(indexes):
        raise ValueError(f"tlog: read_hashes of {len(indexes)} indexes gave {len(hashes)} hashes")
    for h in hashes:
        _check_hash(h, "stored hash")
    return hashes


def _check_consumed(hashes: Iterator[bytes], what: str) -> None:
    if next(hashes, None) is not None:
        raise AssertionError(f"tlog: {what} read hashes it did not use")  # a bug here


def _check_hash(h: object, what: str) -> None:
    # A hash of the wrong length would silently give a root nobody else gets.
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ValueError(f"tlog: {what} is not {HASH_SIZE} bytes")


def _check_natural(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer")
    if value < 0:
        raise ValueError(f"{name} {value} is negative")


def _trailing_ones(n: int) -> int:
    """Nodes that appending leaf ``n`` completes above its own: ``n``'s trailing one bits."""
    return ((n + 1) & -(n + 1)).bit_length() - 1
