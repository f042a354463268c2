"""The hub's audit log on disk: an RFC 9162 Merkle tree that scales to millions of entries.

:mod:`protocols.merkle` is the spec and works on a list of every leaf hash, so
each root or proof costs O(n). This module stores the tree itself, so that a
hub with years of entries answers an auditor in O(log n) reads and appends in
O(1) amortised work, while producing byte-for-byte the roots and proofs of the
reference (the tests check every size and index up to 70 against it).

Storage, one SQLite file (WAL, ``synchronous=FULL``, like :mod:`broker.store`):

- ``entries``: one row per leaf, ``idx`` = leaf index; ``data`` is the exact
  leaf input, the other columns are metadata copied from the
  :class:`AuditRecord` for search. Only ``data`` is covered by the tree: an
  auditor re-derives metadata from the bytes, never trusts the columns.
- ``nodes(level, idx, hash)``: the hash of every *complete* subtree, node
  ``(level, i)`` covering leaves ``[i·2^level, (i+1)·2^level)``; level 0 holds
  the leaf hashes. A leaf with index ``i`` completes one node per trailing one
  bit of ``i`` (two per leaf on average), computed from the left siblings on
  the right edge of the tree, of which there are at most log n.
- Any root or proof hash is ``MTH`` of a range ``D[lo:hi]``; by RFC 9162's
  definition that is the fold of the complete subtrees given by the binary
  decomposition of ``hi - lo``. Every range a proof needs is either complete
  (one read) or the single ragged one on the right edge (at most log n reads).

Appends are one ``BEGIN IMMEDIATE … COMMIT`` per batch: a batch is on disk,
leaves and nodes together, when :meth:`AuditLog.append` returns, or not at all.

Search keeps every query on an index walked newest first, keyset-paged by leaf
index (``before_index``), so a page costs the rows it returns plus the rows a
secondary filter skips, not the size of the log:

- one column index per searchable field (``msg_id``, ``case_ref``, ``type``,
  ``code``, ``event``, ``at``); SQLite appends the rowid (our leaf index) to
  every index, so ``field = ? AND idx < ? ORDER BY idx DESC`` is a range walk;
- ``parties(agency, idx)``: every agency an entry names, as sender or
  recipient, once, so "entries about agency X" is one index walk instead of an
  OR over a column and a side table (which SQLite cannot merge in order);
- ``countries(country, idx)``: the three-letter country prefix of the sender,
  every recipient and the peer, once per entry; same reason;
- time: while timestamps never go backwards (the normal case, recorded in
  ``meta``), a window ``since_ms <= at < until_ms`` is turned into a leaf
  index range with two lookups on the ``at`` index; if a clock ever stepped
  back, the window becomes a row filter (correct, slower).

With several filters the most selective kind drives (fixed order, since the
planner has no statistics) and the rest are checked per row; ``+column``
keeps SQLite from switching to a less selective index.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from protocols import merkle
from protocols.errors import LocalError, MerkleProofError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx        INTEGER PRIMARY KEY,
    data       BLOB NOT NULL,
    at         INTEGER NOT NULL,
    event      TEXT NOT NULL,
    msg_id     TEXT,
    type       TEXT,
    sender     TEXT,
    recipients TEXT NOT NULL,
    case_ref   TEXT,
    code       TEXT,
    peer       TEXT
);
CREATE INDEX IF NOT EXISTS entries_msg_id ON entries(msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_case_ref ON entries(case_ref) WHERE case_ref IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_type ON entries(type) WHERE type IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_code ON entries(code) WHERE code IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_event ON entries(event);
CREATE INDEX IF NOT EXISTS entries_at ON entries(at);
CREATE TABLE IF NOT EXISTS parties (
    agency TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    PRIMARY KEY (agency, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS countries (
    country TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    PRIMARY KEY (country, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cosignatures (
    size    INTEGER NOT NULL,
    witness TEXT NOT NULL,
    note    BLOB NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
);
CREATE TABLE IF NOT EXISTS witnessed (
    origin TEXT NOT NULL,
    size   INTEGER NOT NULL,
    root   BLOB NOT NULL,
    note   BLOB NOT NULL,
    at     INTEGER NOT NULL,
    PRIMARY KEY (origin, size)
);
CREATE TABLE IF NOT EXISTS alarms (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    origin   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    detail   TEXT NOT NULL,
    evidence BLOB NOT NULL
);
"""

MAX_SEARCH_LIMIT = 100_000
"""Largest page :meth:`AuditLog.search` returns (a reconciliation reads a day of
exchanges with one peer at once); interactive callers page with ``before_index``."""

_UNORDERED = "unordered_from"
"""``meta`` key: first leaf whose time is earlier than an earlier leaf's."""

_JSON = msgspec.json.Encoder()

_ENTRY_COLUMNS = "e.idx, e.data, e.at, e.event, e.msg_id, e.type, e.sender, e.recipients," + (
    " e.case_ref, e.code, e.peer"
)

# Which filter drives a search, most selective kind first (SQLite has no statistics
# to choose with): a message or case has a handful of entries; codes only mark
# rejections; an agency is one of many, a country one of few, types and events few.
_DRIVERS = ("msg_id", "case_ref", "code", "agency", "country", "type", "event")
_COLUMN_FILTERS = frozenset({"msg_id", "case_ref", "code", "type", "event"})
_SIDE_TABLES = {"agency": ("parties", "agency"), "country": ("countries", "country")}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the hub appends: the exact leaf bytes and the metadata to find them by."""

    data: bytes
    at_ms: int
    event: str
    msg_id: str | None = None
    type: str | None = None
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    case_ref: str | None = None
    code: str | None = None
    peer: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise TypeError("audit record data must be bytes")
        if isinstance(self.at_ms, bool) or not isinstance(self.at_ms, int) or self.at_ms < 0:
            raise ValueError("audit record at_ms must be a non-negative integer")
        if not isinstance(self.event, str) or not self.event:
            raise ValueError("audit record event must be a non-empty string")
        for name in ("msg_id", "type", "sender", "case_ref", "code", "peer"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"audit record {name} must be a string or None")
        if not isinstance(self.recipients, tuple) or not all(
            isinstance(r, str) for r in self.recipients
        ):
            raise TypeError("audit record recipients must be a tuple of strings")


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A record as stored, with its leaf index."""

    index: int
    data: bytes
    at_ms: int
    event: str
    msg_id: str | None
    type: str | None
    sender: str | None
    recipients: tuple[str, ...]
    case_ref: str | None
    code: str | None
    peer: str | None


@dataclass(frozen=True, slots=True)
class _Filters:
    msg_id: str | None = None
    case_ref: str | None = None
    agency: str | None = None
    country: str | None = None
    type: str | None = None
    event: str | None = None
    code: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    before_index: int | None = None


class AuditLog:
    """Synchronous and owned by one hub process; safe to share between its threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        # Index pages for a few million entries stay in memory: appends touch the
        # right edge of every index, searches the top of a few.
        self._db.execute("PRAGMA cache_size=-65536")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            self._db.close()
            raise LocalError(f"{path}: audit log schema {version}, not {SCHEMA_VERSION}")
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- appending ---------------------------------------------------------------

    def append(self, records: Sequence[AuditRecord]) -> list[int]:
        """Append in one durable transaction; the leaf indexes are final when this returns."""
        for r in records:
            if not isinstance(r, AuditRecord):
                raise TypeError(f"expected AuditRecord, got {type(r).__name__}")
        if not records:
            return []
        with self._lock, self._write():
            size = self._size()
            left = self._right_edge(size)
            last_at = self._last_at(size)
            unordered = self._unordered_from() is not None
            entry_rows: list[tuple[object, ...]] = []
            node_rows: list[tuple[int, int, bytes]] = []
            party_rows: list[tuple[str, int]] = []
            country_rows: list[tuple[str, int]] = []
            for i, r in enumerate(records, start=size):
                h = merkle.leaf_hash(r.data)
                node_rows.append((0, i, h))
                level, j = 0, i
                while j & 1:
                    h = merkle.node_hash(left[level], h)
                    level, j = level + 1, j >> 1
                    node_rows.append((level, j, h))
                left[level] = h
                entry_rows.append(
                    (
                        i,
                        r.data,
                        r.at_ms,
                        r.event,
                        r.msg_id,
                        r.type,
                        r.sender,
                        _JSON.encode(r.recipients).decode(),
                        r.case_ref,
                        r.code,
                        r.peer,
                    )
                )
                agencies = {r.sender, *r.recipients} - {None}
                party_rows.extend((a, i) for a in agencies if a)
                ctry = {_country(a) for a in (r.sender, r.peer, *r.recipients)} - {None}
                country_rows.extend((c, i) for c in ctry if c)
                if not unordered and last_at is not None and r.at_ms < last_at:
                    self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_UNORDERED, i))
                    unordered = True
                last_at = r.at_ms if last_at is None else max(last_at, r.at_ms)
            self._db.executemany(
                "INSERT INTO entries (idx, data, at, event, msg_id, type, sender, recipients,"
                " case_ref, code, peer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                entry_rows,
            )
            self._db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", node_rows)
            self._db.executemany("INSERT INTO parties (agency, idx) VALUES (?, ?)", party_rows)
            self._db.executemany("INSERT INTO countries (country, idx) VALUES (?, ?)", country_rows)
        return list(range(size, size + len(records)))

    def _right_edge(self, size: int) -> dict[int, bytes]:
        """The complete subtrees still waiting for a right sibling: one per set bit of size."""
        return {
            level: self._node(level, (size >> level) - 1)
            for level in range(size.bit_length())
            if size >> level & 1
        }

    def _last_at(self, size: int) -> int | None:
        if size == 0:
            return None
        row = self._db.execute("SELECT at FROM entries WHERE idx = ?", (size - 1,)).fetchone()
        return None if row is None else int(row[0])

    def _unordered_from(self) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_UNORDERED,)).fetchone()
        return None if row is None else int(row[0])

    # --- the tree ------------------------------------------------------------------

    @property
    def size(self) -> int:
        with self._lock:
            return self._size()

    def _size(self) -> int:
        row = self._db.execute("SELECT max(idx) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        with self._lock:
            current = self._size()
            size = current if size is None else size
            _check_range("tree size", size, 0, current)
            if size == 0:
                return merkle.EMPTY_ROOT
            return self._mth(0, size)

    def leaf(self, index: int) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
            if row is None:
                raise ValueError(f"leaf index {index} is outside a tree of size {self._size()}")
            return bytes(row[0])

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Leaves ``start <= index < end`` in order, with their metadata."""
        with self._lock:
            _check_range("end", end, 0, self._size())
            _check_range("start", start, 0, end)
            rows = self._db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries e"  # noqa: S608 - fixed column list
                " WHERE e.idx >= ? AND e.idx < ? ORDER BY e.idx",
                (start, end),
            ).fetchall()
        return [_entry(r) for r in rows]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 PATH(index, D[size]), equal to :func:`protocols.merkle.inclusion_proof`."""
        with self._lock:
            _check_range("tree size", size, 1, self._size())
            _check_range("leaf index", index, 0, size - 1)
            return [self._mth(lo, hi) for lo, hi in _path_ranges(index, size)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 PROOF(old_size, D[new_size]), equal to the reference's."""
        with self._lock:
            _check_range("new size", new_size, 0, self._size())
            _check_range("old size", old_size, 0, new_size)
            if old_size in (0, new_size):
                return []
            return [self._mth(lo, hi) for lo, hi in _subproof_ranges(old_size, new_size)]

    def _mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range of the RFC recursion, from stored complete subtrees."""
        hashes = [self._node(level, i) for level, i in _complete_subtrees(lo, hi)]
        h = hashes[-1]
        for left in reversed(hashes[:-1]):
            h = merkle.node_hash(left, h)
        return h

    def _node(self, level: int, i: int) -> bytes:
        row = self._db.execute(
            "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, i)
        ).fetchone()
        if row is None:
            raise LocalError(f"audit log storage has no node ({level}, {i}); run verify_storage")
        return bytes(row[0])

    def verify_storage(self) -> None:
        """Recompute every stored node and checkpoint root from the leaf bytes.

        One pass in leaf order: O(n) time, O(log n) memory (one cursor and one
        pending hash per level). For auditors, and for a hub to run at start
        after a restore. Raises :class:`MerkleProofError` naming the first leaf
        or node that does not match, is missing, or should not be there.
        """
        with self._lock, self._read():
            size = self._size()
            height = size.bit_length()
            levels = [
                self._db.execute("SELECT idx, hash FROM nodes WHERE level = ? ORDER BY idx", (lv,))
                for lv in range(height)
            ]
            checkpoints = self._db.execute("SELECT size, root FROM checkpoints ORDER BY size")
            cp = checkpoints.fetchone()
            if cp is not None and cp[0] == 0:
                _check_checkpoint(0, merkle.EMPTY_ROOT, cp[1])
                cp = checkpoints.fetchone()
            pending: list[bytes] = [b""] * height
            rows = self._db.execute("SELECT idx, data FROM entries ORDER BY idx")
            for expected, (i, data) in enumerate(rows):
                if i != expected:
                    what = f"leaf {expected} is missing" if i > expected else f"stray leaf row {i}"
                    raise MerkleProofError(f"audit log storage: {what}")
                h = merkle.leaf_hash(bytes(data))
                _check_node(levels[0], 0, i, h)
                level, j = 0, i
                while j & 1:
                    h = merkle.node_hash(pending[level], h)
                    level, j = level + 1, j >> 1
                    _check_node(levels[level], level, j, h)
                pending[level] = h
                while cp is not None and cp[0] == i + 1:
                    _check_checkpoint(i + 1, _fold_right_edge(pending, i + 1), cp[1])
                    cp = checkpoints.fetchone()
            for level, cursor in enumerate(levels):
                row = cursor.fetchone()
                if row is not None:
                    raise MerkleProofError(
                        f"audit log storage: node ({level}, {row[0]}) lies beyond size {size}"
                    )
            row = self._db.execute(
                "SELECT level, idx FROM nodes WHERE level >= ? OR level < 0 LIMIT 1", (height,)
            ).fetchone()
            if row is not None:
                raise MerkleProofError(
                    f"audit log storage: node ({row[0]}, {row[1]}) lies beyond size {size}"
                )
            if cp is not None:
                raise MerkleProofError(
                    f"audit log storage: checkpoint of size {cp[0]} is beyond the log ({size})"
                )

    # --- search ----------------------------------------------------------------------

    def search(
        self,
        *,
        msg_id: str | None = None,
        case_ref: str | None = None,
        agency: str | None = None,
        country: str | None = None,
        type: str | None = None,
        event: str | None = None,
        code: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        before_index: int | None = None,
        limit: int = 100,
    ) -> list[StoredEntry]:
        """Entries matching every filter given, newest (highest index) first.

        ``agency`` matches the sender or any recipient; ``country`` the
        country of the sender, of any recipient, or of the peer hub. Time is
        the half-open window ``since_ms <= at < until_ms``. For the next page
        pass the last index returned as ``before_index``.
        """
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError("limit must be an integer")
        _check_range("limit", limit, 1, MAX_SEARCH_LIMIT)
        f = _Filters(
            msg_id, case_ref, agency, country, type, event, code, since_ms, until_ms, before_index
        )
        with self._lock, self._read():
            planned = self._plan(f, _ENTRY_COLUMNS)
            if planned is None:
                return []
            sql, args = planned
            rows = self._db.execute(sql + " LIMIT ?", (*args, limit)).fetchall()
        return [_entry(r) for r in rows]

    def count(
        self,
        *,
        msg_id: str | None = None,
        case_ref: str | None = None,
        agency: str | None = None,
        country: str | None = None,
        type: str | None = None,
        event: str | None = None,
        code: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        before_index: int | None = None,
    ) -> int:
        """Exact number of matches, in time proportional to the driving index range.

        Cheap for selective filters and for pure time windows (two lookups);
        counting a whole common event walks all its entries.
        """
        f = _Filters(
            msg_id, case_ref, agency, country, type, event, code, since_ms, until_ms, before_index
        )
        with self._lock, self._read():
            planned = self._plan(f, "count(*)")
            if planned is None:
                return 0
            sql, args = planned
            return int(self._db.execute(sql, args).fetchone()[0])

    def _plan(self, f: _Filters, select: str) -> tuple[str, list[object]] | None:
        """SQL walking the most selective filter's index newest first, or None if empty."""
        lo, hi = 0, self._size()
        if f.before_index is not None:
            hi = min(hi, max(f.before_index, 0))
        time_as_range = self._unordered_from() is None
        if time_as_range:
            if f.since_ms is not None:
                lo = max(lo, self._first_at_or_after(f.since_ms, hi))
            if f.until_ms is not None:
                hi = min(hi, self._first_at_or_after(f.until_ms, hi))
        if lo >= hi:
            return None

        driver = next((name for name in _DRIVERS if getattr(f, name) is not None), None)
        where: list[str] = []
        args: list[object] = []
        if driver in _SIDE_TABLES:
            table, column = _SIDE_TABLES[driver]
            source = f"{table} d CROSS JOIN entries e"
            key = "d.idx"
            where += [f"d.{column} = ?", "d.idx >= ?", "d.idx < ?", "e.idx = d.idx"]
            args += [getattr(f, driver), lo, hi]
        else:
            source, key = "entries e", "e.idx"
            if driver is not None:
                where.append(f"e.{driver} = ?")
                args.append(getattr(f, driver))
            where += ["e.idx >= ?", "e.idx < ?"]
            args += [lo, hi]
        for name in _DRIVERS:
            value = getattr(f, name)
            if value is None or name == driver:
                continue
            if name in _COLUMN_FILTERS:
                where.append(f"+e.{name} = ?")
            else:
                table, column = _SIDE_TABLES[name]
                where.append(f"EXISTS (SELECT 1 FROM {table} WHERE {column} = ? AND idx = e.idx)")  # noqa: S608
            args.append(value)
        if not time_as_range:
            if f.since_ms is not None:
                where.append("+e.at >= ?")
                args.append(f.since_ms)
            if f.until_ms is not None:
                where.append("+e.at < ?")
                args.append(f.until_ms)
        sql = f"SELECT {select} FROM {source} WHERE {' AND '.join(where)}"  # noqa: S608 - fixed names
        if select != "count(*)":
            sql += f" ORDER BY {key} DESC"
        return sql, args

    def _first_at_or_after(self, at_ms: int, default: int) -> int:
        """Smallest index whose time is >= at_ms; valid while times never decrease."""
        row = self._db.execute(
            "SELECT idx FROM entries WHERE at >= ? ORDER BY at, idx LIMIT 1", (at_ms,)
        ).fetchone()
        return default if row is None else int(row[0])

    # --- checkpoints and cosignatures (opaque signed notes) ----------------------------

    def save_checkpoint(self, size: int, root: bytes, note: bytes, at_ms: int) -> None:
        """Keep a signed tree head of our log; its root must be ours at that size."""
        with self._lock:
            if root != self.root(size):
                raise ValueError(f"checkpoint root is not the log's root at size {size}")
            self._db.execute(
                "INSERT INTO checkpoints (size, root, note, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(size) DO UPDATE SET note = excluded.note, at = excluded.at",
                (size, root, note, at_ms),
            )

    def latest_checkpoint(self) -> tuple[int, bytes, bytes] | None:
        """(size, root, note) of the largest checkpoint."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def checkpoint_for(self, size: int) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT note FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def save_cosigned(self, size: int, witness: str, note: bytes, at_ms: int) -> None:
        """A peer's cosignature of our checkpoint at ``size``; the latest per witness is kept."""
        with self._lock:
            self._db.execute(
                "INSERT INTO cosignatures (size, witness, note, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(size, witness) DO UPDATE SET note = excluded.note, at = excluded.at",
                (size, witness, note, at_ms),
            )

    def cosignatures(self, size: int | None = None) -> list[tuple[str, int, bytes, int]]:
        """(witness, size, note, at_ms), by size then witness."""
        sql = "SELECT witness, size, note, at FROM cosignatures"
        args: tuple[object, ...] = ()
        if size is not None:
            sql += " WHERE size = ?"
            args = (size,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY size, witness", args).fetchall()
        return [(str(w), int(s), bytes(n), int(a)) for w, s, n, a in rows]

    # --- witness side: what we saw of each peer's log ------------------------------------

    def save_witnessed(self, origin: str, size: int, root: bytes, note: bytes, at_ms: int) -> None:
        """Record a peer checkpoint we verified; a second root for one size is refused.

        Two roots for one size is a split view: the caller must have raised an
        alarm instead of saving it, so reaching this is a bug on our side.
        """
        with self._lock, self._write():
            row = self._db.execute(
                "SELECT root FROM witnessed WHERE origin = ? AND size = ?", (origin, size)
            ).fetchone()
            if row is not None and not hmac.compare_digest(bytes(row[0]), root):
                raise ValueError(f"{origin} size {size}: a different root was witnessed before")
            self._db.execute(
                "INSERT INTO witnessed (origin, size, root, note, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(origin, size) DO UPDATE SET note = excluded.note, at = excluded.at",
                (origin, size, root, note, at_ms),
            )

    def last_witnessed(self, origin: str) -> tuple[int, bytes, bytes, int] | None:
        """(size, root, note, at_ms) of the largest checkpoint of ``origin`` we verified."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, root, note, at FROM witnessed WHERE origin = ?"
                " ORDER BY size DESC LIMIT 1",
                (origin,),
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]), int(row[3]))

    def save_alarm(self, origin: str, at_ms: int, detail: str, evidence: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO alarms (origin, at, detail, evidence) VALUES (?, ?, ?, ?)",
                (origin, at_ms, detail, evidence),
            )

    def alarms(self) -> list[tuple[str, int, str]]:
        """(origin, at_ms, detail) in the order raised."""
        with self._lock:
            rows = self._db.execute("SELECT origin, at, detail FROM alarms ORDER BY seq").fetchall()
        return [(str(o), int(a), str(d)) for o, a, d in rows]

    # --- transactions ------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT: durable on return (WAL + synchronous=FULL), or nothing."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise LocalError(f"audit log: cannot start a write: {e}") from e
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise LocalError(f"audit log write failed: {e}") from e
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        """One snapshot for reads that span several statements."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")


# --- tree shapes (pure) -----------------------------------------------------------------


def _split(n: int) -> int:
    """RFC 9162's k: the largest power of two smaller than ``n`` (``n`` > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _complete_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """Nodes (level, i) whose fold is MTH(D[lo:hi]), left to right.

    For ranges of the RFC recursion ``lo`` is a multiple of a power of two at
    least ``hi - lo``, so these are the set bits of ``hi - lo``, largest first.
    """
    out = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def _path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Ranges whose MTHs make PATH(index, D[size]), lowest first (RFC 9162 §2.1.3.1)."""
    siblings = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
    return siblings[::-1]


def _subproof_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Ranges whose MTHs make SUBPROOF(old, D[new], true), lowest first (§2.1.4.1)."""
    siblings = []
    m, lo, hi, complete = old_size, 0, new_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            m, lo, complete = m - k, lo + k, False
    if not complete:
        siblings.append((lo, hi))
    return siblings[::-1]


def _fold_right_edge(pending: list[bytes], size: int) -> bytes:
    """The root of the first ``size`` leaves from the complete subtrees on its right edge."""
    h: bytes | None = None
    for level in range(size.bit_length()):
        if size >> level & 1:
            h = pending[level] if h is None else merkle.node_hash(pending[level], h)
    assert h is not None  # noqa: S101 - size > 0
    return h


def _check_node(cursor: sqlite3.Cursor, level: int, i: int, want: bytes) -> None:
    row = cursor.fetchone()
    if level == 0:
        what = f"leaf {i}"
    else:
        what = f"node ({level}, {i}) over leaves {i << level}..{((i + 1) << level) - 1}"
    if row is None or row[0] != i:
        raise MerkleProofError(f"audit log storage: hash of {what} is missing")
    if not hmac.compare_digest(bytes(row[1]), want):
        raise MerkleProofError(f"audit log storage: {what} does not match its stored hash")


def _check_checkpoint(size: int, want: bytes, stored: bytes) -> None:
    if not hmac.compare_digest(bytes(stored), want):
        raise MerkleProofError(f"audit log storage: checkpoint root at size {size} does not match")


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value} is outside {lo}..{hi}")


@functools.lru_cache(maxsize=4096)
def _country(principal: str | None) -> str | None:
    """``THA`` from ``THA/DSI-ATHD``, ``THA/HUB`` or ``THA``; None for anything else."""
    if principal is None:
        return None
    cc = principal[:3]
    well_formed = len(cc) == 3 and cc.isascii() and cc.isalpha() and cc.isupper()
    return cc if well_formed and principal[3:4] in ("", "/") else None


def _entry(row: tuple[Any, ...]) -> StoredEntry:
    idx, data, at, event, msg_id, type_, sender, recipients, case_ref, code, peer = row
    return StoredEntry(
        idx,
        bytes(data),
        at,
        event,
        msg_id,
        type_,
        sender,
        tuple(json.loads(recipients)),
        case_ref,
        code,
        peer,
    )
