"""The audit log's leaves and Merkle tree in SQLite: appends, roots, proofs, verification.

- ``entries``: one row per leaf, ``idx`` the leaf index, ``data`` the exact
  leaf input (the rest is search metadata, see :mod:`.records`).
- ``nodes(pos, level, idx, hash)``: the hash of every complete subtree, node
  ``(level, idx)`` at ``pos = tlog.stored_hash_index(level, idx)``, the order
  in which appends complete them; level 0 holds the leaf hashes.

Roots and proofs are :mod:`protocols.tlog` over :class:`SqliteHashReader`, so
each reads every hash it needs in one query, and equals
:mod:`protocols.merkle`'s byte for byte. Appends need no read at all: the
right edge of the tree is kept in memory (:class:`protocols.tlog.RightEdge`).

:class:`TreeStorage` is not thread-safe and opens no transaction: its caller,
:class:`~broker.audit.log.AuditLog`, holds the lock, wraps appends in one
durable transaction and calls :meth:`TreeStorage.forget` whenever another
connection wrote or a transaction failed.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Sequence
from typing import Any

from broker.audit.records import (
    ENTRY_COLUMNS,
    AuditRecord,
    StoredEntry,
    check_range,
    entry_row,
    json_array,
    stored_entry,
)
from protocols import merkle, tlog
from protocols.errors import LocalError, MerkleProofError

_READ_NODES = (
    "SELECT pos, level, idx, hash FROM nodes WHERE pos IN (SELECT value FROM json_each(?))"
)
_INSERT_ENTRIES = (
    "INSERT INTO entries (idx, data, at, event, msg_id, type, sender, recipients,"
    " case_ref, code, peer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_NODES = "INSERT INTO nodes (pos, level, idx, hash) VALUES (?, ?, ?, ?)"
_VERIFY_CHUNK = 4096
"""Leaves :meth:`TreeStorage.verify` hashes at a time."""


class SqliteHashReader:
    """:class:`protocols.tlog.HashReader` over ``nodes``: one query for any list of indexes.

    A row is only taken for the node tlog asks for if its ``(level, idx)`` is
    the one stored at its ``pos``; a missing or misplaced node raises
    :class:`LocalError` (``verify_storage`` then names what is wrong).
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        if not indexes:
            return []
        rows = self._db.execute(_READ_NODES, (json_array(indexes),)).fetchall()
        found = {pos: bytes(h) for pos, level, idx, h in rows if _placed(pos, level, idx)}
        for pos in indexes:
            if pos not in found:
                level, i = tlog.split_stored_hash_index(pos)
                raise LocalError(
                    f"audit log storage has no node ({level}, {i}); run verify_storage"
                )
        return [found[pos] for pos in indexes]


class TreeStorage:
    """``entries`` and ``nodes``: the leaves, the tree over them, and its proofs."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._reader = SqliteHashReader(db)
        self._size: int | None = None
        self._edge: tlog.RightEdge | None = None
        """The tree's right edge, loaded on the first append and moved by each."""

    def forget(self) -> None:
        """Drop what is cached of the end of the log: it is read again when needed."""
        self._size = None
        self._edge = None

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = self._count()
        return self._size

    def _count(self) -> int:
        row = self._db.execute("SELECT max(idx) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    # --- appending -----------------------------------------------------------------

    def append(self, records: Sequence[AuditRecord]) -> None:
        """The ``entries`` and ``nodes`` rows of a batch, in the caller's transaction.

        Moves the cached end of the log in place: if the transaction fails,
        the caller must :meth:`forget` it.
        """
        start = self.size
        if self._edge is None:
            self._edge = tlog.RightEdge.read(start, self._reader)
        nodes = self._edge.append([merkle.leaf_hash(r.data) for r in records])
        self._db.executemany(
            _INSERT_ENTRIES, [entry_row(i, r) for i, r in enumerate(records, start=start)]
        )
        self._db.executemany(_INSERT_NODES, nodes)
        self._size = start + len(records)

    # --- reading -------------------------------------------------------------------

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        current = self.size
        size = current if size is None else size
        check_range("tree size", size, 0, current)
        return tlog.tree_hash(size, self._reader)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 PATH(index, D[size]), equal to :func:`protocols.merkle.inclusion_proof`."""
        check_range("tree size", size, 1, self.size)
        check_range("leaf index", index, 0, size - 1)
        return tlog.prove_record(size, index, self._reader)

    def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        """:meth:`inclusion_proof` of each of ``indexes``, reading the tree once."""
        check_range("tree size", size, 1, self.size)
        for index in indexes:
            check_range("leaf index", index, 0, size - 1)
        return tlog.prove_records(size, indexes, self._reader)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 PROOF(old_size, D[new_size]), equal to the reference's."""
        check_range("new size", new_size, 0, self.size)
        check_range("old size", old_size, 0, new_size)
        return tlog.prove_tree(new_size, old_size, self._reader)

    def leaf(self, index: int) -> bytes:
        row = self._db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise ValueError(f"leaf index {index} is outside a tree of size {self.size}")
        return bytes(row[0])

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Leaves ``start <= index < end`` in order, with their metadata."""
        check_range("end", end, 0, self.size)
        check_range("start", start, 0, end)
        rows = self._db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries e"  # noqa: S608 - fixed column list
            " WHERE e.idx >= ? AND e.idx < ? ORDER BY e.idx",
            (start, end),
        ).fetchall()
        return [stored_entry(r) for r in rows]

    # --- verification ----------------------------------------------------------------

    def verify(self) -> None:
        """Recompute every stored node and checkpoint root from the leaf bytes.

        One pass in leaf order, reading the nodes in the order appends wrote
        them: O(n) time, O(log n) memory (a :class:`~protocols.tlog.RightEdge`).
        Raises :class:`MerkleProofError` naming the first leaf or node that
        does not match, is missing, or should not be there. Run it inside one
        read transaction.
        """
        size = self._count()
        nodes = self._db.execute("SELECT pos, level, idx, hash FROM nodes ORDER BY pos")
        checkpoints = self._db.execute("SELECT size, root FROM checkpoints ORDER BY size")
        cp = checkpoints.fetchone()
        if cp is not None and cp[0] == 0:
            _check_checkpoint(0, merkle.EMPTY_ROOT, cp[1])
            cp = checkpoints.fetchone()
        edge = tlog.RightEdge(0, [])
        rows = self._db.execute("SELECT idx, data FROM entries ORDER BY idx")
        while chunk := rows.fetchmany(_VERIFY_CHUNK):
            done = 0
            while done < len(chunk):
                # Leaves up to the next checkpoint or gap in one go, still in leaf order.
                n = edge.size
                end = len(chunk) if cp is None else min(len(chunk), done + cp[0] - n)
                run = chunk[done:end]
                gap = next((k for k, (i, _) in enumerate(run) if i != n + k), None)
                leaves = run if gap is None else run[:gap]
                for pos, level, j, h in edge.append(
                    [merkle.leaf_hash(bytes(d)) for _, d in leaves]
                ):
                    _check_node(nodes.fetchone(), pos, level, j, h)
                if gap is not None:
                    i, expected = run[gap][0], n + gap
                    what = f"leaf {expected} is missing" if i > expected else f"stray leaf row {i}"
                    raise MerkleProofError(f"audit log storage: {what}")
                done = end
                while cp is not None and cp[0] == edge.size:
                    _check_checkpoint(edge.size, edge.root(), cp[1])
                    cp = checkpoints.fetchone()
        row = nodes.fetchone()
        if row is not None:
            raise MerkleProofError(
                f"audit log storage: node ({row[1]}, {row[2]}) lies beyond size {size}"
            )
        if cp is not None:
            raise MerkleProofError(
                f"audit log storage: checkpoint of size {cp[0]} is beyond the log ({size})"
            )


def _placed(pos: int, level: object, idx: object) -> bool:
    """Whether a ``nodes`` row's ``(level, idx)`` is the node tlog stores at ``pos``."""
    return (
        type(level) is int
        and type(idx) is int
        and level >= 0
        and idx >= 0
        and tlog.stored_hash_index(level, idx) == pos
    )


def _check_node(row: tuple[Any, ...] | None, pos: int, level: int, i: int, want: bytes) -> None:
    """``row`` (pos, level, idx, hash) is the stored node expected at ``pos``."""
    if level == 0:
        what = f"leaf {i}"
    else:
        what = f"node ({level}, {i}) over leaves {i << level}..{((i + 1) << level) - 1}"
    if row is None or row[0] > pos:
        raise MerkleProofError(f"audit log storage: hash of {what} is missing")
    if row[0] < pos:
        raise MerkleProofError(f"audit log storage: stray node row at position {row[0]}")
    if (row[1], row[2]) != (level, i):
        raise MerkleProofError(
            f"audit log storage: the place of {what} holds node ({row[1]}, {row[2]})"
        )
    if not hmac.compare_digest(bytes(row[3]), want):
        raise MerkleProofError(f"audit log storage: {what} does not match its stored hash")


def _check_checkpoint(size: int, want: bytes, stored: bytes) -> None:
    if not hmac.compare_digest(bytes(stored), want):
        raise MerkleProofError(f"audit log storage: checkpoint root at size {size} does not match")
