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
- ``nodes(pos, level, idx, hash)``: the hash of every *complete* subtree, node
  ``(level, i)`` covering leaves ``[i·2^level, (i+1)·2^level)``; level 0 holds
  the leaf hashes. A leaf with index ``i`` completes one node per trailing one
  bit of ``i`` (two per leaf on average), computed from the left siblings on
  the right edge of the tree, of which there are at most log n. Rows are
  keyed by ``pos``, the post order in which appends complete them, a formula
  of ``(level, idx)`` (:func:`_position`).
- Any root or proof hash is ``MTH`` of a range ``D[lo:hi]``; by RFC 9162's
  definition that is the fold of the complete subtrees given by the binary
  decomposition of ``hi - lo``. Every range a proof needs is either complete
  (one read) or the single ragged one on the right edge (at most log n reads).

Appends are one ``BEGIN IMMEDIATE … COMMIT`` per batch: a batch is on disk,
leaves and nodes together, when :meth:`AuditLog.append` returns, or not at all.
What an append needs of the end of the log (size, right edge, last time, the
open block's postings) is kept in memory between appends and re-read whenever
``PRAGMA data_version`` says another connection wrote; a failed transaction
leaves it untouched.

A durable commit writes every page it changed to the WAL, and a checkpoint
writes it again, so the tables are laid out for appends to change few pages:
everything but the ``msg_id`` index (whose UUIDv7 ids grow with time anyway)
is ordered by leaf index first, and a batch writes where the previous one did.
A column index per searchable field did the opposite (a page per value and
batch, random pages for ``case_ref``) and cost five times the bytes per entry.

Search keeps every query newest first and keyset-paged by leaf index
(``before_index``), so a page costs about the rows it returns:

- ``msg_id`` names a handful of entries: an index on ``entries`` (SQLite
  appends the rowid, our leaf index, so ``msg_id = ? AND idx < ? ORDER BY idx
  DESC`` is a range walk); the other filters are checked on those rows.
- ``case_ref`` names a few to thousands spread over the log: ``cases(span,
  case_ref, idx)``, grouped by spans of 2^14 leaves. A search looks the case
  up in each span newest first (61 key lookups in one statement at 1M
  entries).
- The fields with few values (``agency``: the sender and every recipient;
  ``country``: the three-letter prefix of the sender, every recipient and the
  peer; ``type``, ``event``, ``code``) are tags in ``postings(block, tag,
  leaves)``: per block of 1,024 leaves and tag, a 128-byte bitmap of the
  leaves that carry it; ``tags(tag, first, last)`` has the first and last
  block of each. A search probes the blocks between those newest first, a
  key lookup per tag and block, and ands the bitmaps, so any combination
  (country and type, agency and code …) reads no entry it does not return,
  and a tag that never occurred costs one lookup.
- time: while timestamps never go backwards (the normal case, recorded in
  ``meta``), a window ``since_ms <= at < until_ms`` is turned into a leaf
  index range by two binary searches over ``idx``; if a clock ever stepped
  back, the window becomes a row filter (correct, slower).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import itertools
import operator
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from protocols import merkle
from protocols.errors import LocalError, MerkleProofError

SCHEMA_VERSION = 2
"""2: ``postings``, ``tags`` and ``cases`` replaced the ``parties`` and
``countries`` tables and the column indexes other than ``msg_id``, and ``nodes``
is keyed by post order: appends write a fifth of the bytes they did."""

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
CREATE TABLE IF NOT EXISTS postings (
    block  INTEGER NOT NULL,
    tag    TEXT NOT NULL,
    leaves BLOB NOT NULL,
    PRIMARY KEY (block, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    tag   TEXT PRIMARY KEY,
    first INTEGER NOT NULL,
    last  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cases (
    span     INTEGER NOT NULL,
    case_ref TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    PRIMARY KEY (span, case_ref, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    pos   INTEGER PRIMARY KEY,
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL
);
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
_RECIPIENTS = msgspec.json.Decoder(tuple[str, ...])

_ENTRY_COLUMNS = "e.idx, e.data, e.at, e.event, e.msg_id, e.type, e.sender, e.recipients," + (
    " e.case_ref, e.code, e.peer"
)

_BLOCK_BITS = 10
"""``postings`` blocks hold 2^10 leaves: a row's ``leaves`` is a 128-byte bitmap."""
_BLOCK_BYTES = (1 << _BLOCK_BITS) // 8
_BLOCK_MASK = (1 << _BLOCK_BITS) - 1
_TAGS_WRITE = (
    "INSERT INTO tags (tag, first, last) VALUES (?, ?, ?)"
    " ON CONFLICT (tag) DO UPDATE SET last = excluded.last"
)
_POSTINGS_WRITE = (
    "INSERT INTO postings (block, tag, leaves) VALUES (?, ?, ?)"
    " ON CONFLICT (block, tag) DO UPDATE SET leaves = excluded.leaves"
)
_TAGS_READ = "SELECT first, last FROM tags WHERE tag IN (SELECT value FROM json_each(?))"
_POSTINGS_PROBE = (
    "SELECT block, tag, leaves FROM postings WHERE block IN (SELECT value FROM json_each(?))"
    " AND tag IN (SELECT value FROM json_each(?)) ORDER BY block DESC"
)
_PROBE_BLOCKS = (2, 128)
"""A tag search probes this many blocks at first, doubling up to the second number."""
_SPAN_BITS = 14
"""``cases`` rows are grouped in spans of 2^14 leaves, so a batch writes where the last did."""
_CASE_PROBE = (
    "SELECT idx FROM cases WHERE span IN (SELECT value FROM json_each(?)) AND case_ref = ?"
    " AND idx >= ? AND idx < ? ORDER BY span DESC, idx DESC LIMIT ?"
)
_ROWS_BY_INDEX = (
    f"SELECT {_ENTRY_COLUMNS} FROM entries e"  # noqa: S608 - fixed column list
    " WHERE e.idx IN (SELECT value FROM json_each(?))"
)

# Filters found through ``postings`` (intersected block by block); msg_id has an
# index on ``entries`` and case_ref the ``cases`` table.
_TAGGED = ("agency", "country", "type", "event", "code")
_CHUNK = 256
"""Rows a search reads at a time when some of them may be filtered out."""


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


@dataclass(slots=True)
class _Tip:
    """The end of the log as the next append needs it, cached between appends."""

    size: int
    last_at: int | None
    unordered: bool
    edge: dict[int, bytes] | None = None
    """Complete subtrees waiting for a right sibling, by level; loaded on first append."""
    open_block: dict[str, int] | None = None
    """The postings of the block the next leaf goes in, by tag; loaded on first append."""
    last_blocks: dict[str, int] | None = None
    """The last block of every tag (``tags.last``); loaded on first append."""


class AuditLog:
    """Synchronous and owned by one hub process; safe to share between its threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        # The pages appends touch (the end of each table, the ``msg_id`` index) and
        # the top of every tree stay in memory for many millions of entries.
        self._db.execute("PRAGMA cache_size=-65536")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            self._db.close()
            older = " (a schema 1 log needs the ixb release that wrote it)" if version == 1 else ""
            raise LocalError(f"{path}: audit log schema {version}, not {SCHEMA_VERSION}{older}")
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._cached: _Tip | None = None
        self._seen_version = -1

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
        with self._lock:
            try:
                with self._write():
                    tip = self._tip()
                    start = tip.size
                    self._insert(tip, records)
            except BaseException:
                self._cached = None  # half updated, or a failed COMMIT: re-read it
                raise
        return list(range(start, start + len(records)))

    def _insert(self, tip: _Tip, records: Sequence[AuditRecord]) -> None:
        """The rows of one batch, inside the caller's transaction.

        Moves ``tip`` to the new end of the log in place, which is why
        :meth:`append` drops the cached tip when the transaction fails.
        """
        if tip.edge is None:
            tip.edge = self._right_edge(tip.size)
        edge = tip.edge
        leaf_hash, node_hash, encode = merkle.leaf_hash, merkle.node_hash, _JSON.encode
        entry_rows: list[tuple[object, ...]] = []
        node_rows: list[tuple[int, int, int, bytes]] = []
        case_rows: list[tuple[int, str, int]] = []
        pos = _position(0, tip.size)
        block = tip.size >> _BLOCK_BITS
        tagged: dict[str, int] = {}
        postings = {block: tagged}  # this batch's leaves, by block and tag
        last_at = tip.last_at
        for i, r in enumerate(records, start=tip.size):
            h = leaf_hash(r.data)
            node_rows.append((pos, 0, i, h))
            level, j = 0, i
            while j & 1:
                h = node_hash(edge[level], h)
                level, j, pos = level + 1, j >> 1, pos + 1
                node_rows.append((pos, level, j, h))
            edge[level] = h
            pos += 1
            entry_rows.append(
                (
                    i,
                    r.data,
                    r.at_ms,
                    r.event,
                    r.msg_id,
                    r.type,
                    r.sender,
                    encode(r.recipients).decode(),
                    r.case_ref,
                    r.code,
                    r.peer,
                )
            )
            if r.case_ref is not None:
                case_rows.append((i >> _SPAN_BITS, r.case_ref, i))
            if i >> _BLOCK_BITS != block:
                block = i >> _BLOCK_BITS
                tagged = postings[block] = {}
            bit = 1 << (i & _BLOCK_MASK)
            for tag in _tags(r):
                tagged[tag] = tagged.get(tag, 0) | bit
            if last_at is not None and r.at_ms < last_at and not tip.unordered:
                self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_UNORDERED, i))
                tip.unordered = True
            if last_at is None or r.at_ms > last_at:
                last_at = r.at_ms
        self._db.executemany(
            "INSERT INTO entries (idx, data, at, event, msg_id, type, sender, recipients,"
            " case_ref, code, peer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            entry_rows,
        )
        self._db.executemany(
            "INSERT INTO nodes (pos, level, idx, hash) VALUES (?, ?, ?, ?)", node_rows
        )
        self._db.executemany("INSERT INTO cases (span, case_ref, idx) VALUES (?, ?, ?)", case_rows)
        self._write_postings(tip, postings, tip.size + len(records))
        tip.size += len(records)
        tip.last_at = last_at

    def _write_postings(self, tip: _Tip, postings: dict[int, dict[str, int]], end: int) -> None:
        """Or a batch's bitmaps into the open block's, write them, and move ``tags.last``;
        ``end`` is the size of the log after the batch."""
        first = tip.size >> _BLOCK_BITS
        if tip.open_block is None:
            tip.open_block = self._open_block(first)
        if tip.last_blocks is None:
            tip.last_blocks = self._last_blocks()
        for tag, bits in postings[first].items():
            postings[first][tag] = bits | tip.open_block.get(tag, 0)
        self._db.executemany(
            _POSTINGS_WRITE,
            [
                (b, tag, bits.to_bytes(_BLOCK_BYTES, "little"))
                for b, tags in postings.items()
                for tag, bits in tags.items()
            ],
        )
        firsts: dict[str, int] = {}
        lasts: dict[str, int] = {}
        for b, tags in postings.items():  # blocks in order
            for tag in tags:
                firsts.setdefault(tag, b)
                lasts[tag] = b
        last_blocks = tip.last_blocks
        self._db.executemany(
            _TAGS_WRITE,
            [(tag, firsts[tag], b) for tag, b in lasts.items() if last_blocks.get(tag) != b],
        )
        last_blocks.update(lasts)
        following = end >> _BLOCK_BITS  # where the next append starts
        if following == first:
            tip.open_block.update(postings[first])
        else:
            tip.open_block = postings.get(following, {})

    def _last_blocks(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT tag, last FROM tags").fetchall())

    def _open_block(self, block: int) -> dict[str, int]:
        rows = self._db.execute("SELECT tag, leaves FROM postings WHERE block = ?", (block,))
        return {tag: int.from_bytes(leaves, "little") for tag, leaves in rows}

    def _tip(self) -> _Tip:
        """The cached end of the log, re-read if another connection has written since."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if self._cached is None or version != self._seen_version:
            size = self._size()
            last_at = None
            if size:
                row = self._db.execute("SELECT at FROM entries WHERE idx = ?", (size - 1,))
                last_at = row.fetchone()[0]
            self._cached = _Tip(size, last_at, self._unordered_from() is not None)
            self._seen_version = version
        return self._cached

    def _right_edge(self, size: int) -> dict[int, bytes]:
        """The complete subtrees still waiting for a right sibling: one per set bit of size."""
        return {
            level: self._node(level, (size >> level) - 1)
            for level in range(size.bit_length())
            if size >> level & 1
        }

    def _unordered_from(self) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_UNORDERED,)).fetchone()
        return None if row is None else int(row[0])

    # --- the tree ------------------------------------------------------------------

    @property
    def size(self) -> int:
        with self._lock:
            return self._tip().size

    def _size(self) -> int:
        row = self._db.execute("SELECT max(idx) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        with self._lock:
            current = self._tip().size
            size = current if size is None else size
            _check_range("tree size", size, 0, current)
            if size == 0:
                return merkle.EMPTY_ROOT
            return self._mth(0, size)

    def leaf(self, index: int) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
            if row is None:
                raise ValueError(f"leaf index {index} is outside a tree of size {self._tip().size}")
            return bytes(row[0])

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Leaves ``start <= index < end`` in order, with their metadata."""
        with self._lock:
            _check_range("end", end, 0, self._tip().size)
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
            _check_range("tree size", size, 1, self._tip().size)
            _check_range("leaf index", index, 0, size - 1)
            return [self._mth(lo, hi) for lo, hi in _path_ranges(index, size)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 PROOF(old_size, D[new_size]), equal to the reference's."""
        with self._lock:
            _check_range("new size", new_size, 0, self._tip().size)
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
            "SELECT hash FROM nodes WHERE pos = ? AND level = ? AND idx = ?",
            (_position(level, i), level, i),
        ).fetchone()
        if row is None:
            raise LocalError(f"audit log storage has no node ({level}, {i}); run verify_storage")
        return bytes(row[0])

    def verify_storage(self) -> None:
        """Recompute every stored node and checkpoint root from the leaf bytes.

        One pass in leaf order, reading the nodes in the order appends wrote
        them: O(n) time, O(log n) memory (one pending hash per level). For
        auditors, and for a hub to run at start after a restore. Raises
        :class:`MerkleProofError` naming the first leaf or node that does not
        match, is missing, or should not be there.
        """
        with self._lock, self._read():
            size = self._size()
            nodes = self._db.execute("SELECT pos, level, idx, hash FROM nodes ORDER BY pos")
            checkpoints = self._db.execute("SELECT size, root FROM checkpoints ORDER BY size")
            cp = checkpoints.fetchone()
            if cp is not None and cp[0] == 0:
                _check_checkpoint(0, merkle.EMPTY_ROOT, cp[1])
                cp = checkpoints.fetchone()
            pending: list[bytes] = [b""] * size.bit_length()
            pos = 0
            rows = self._db.execute("SELECT idx, data FROM entries ORDER BY idx")
            for expected, (i, data) in enumerate(rows):
                if i != expected:
                    what = f"leaf {expected} is missing" if i > expected else f"stray leaf row {i}"
                    raise MerkleProofError(f"audit log storage: {what}")
                h = merkle.leaf_hash(bytes(data))
                _check_node(nodes.fetchone(), pos, 0, i, h)
                level, j = 0, i
                while j & 1:
                    h = merkle.node_hash(pending[level], h)
                    level, j, pos = level + 1, j >> 1, pos + 1
                    _check_node(nodes.fetchone(), pos, level, j, h)
                pending[level] = h
                pos += 1
                while cp is not None and cp[0] == i + 1:
                    _check_checkpoint(i + 1, _fold_right_edge(pending, i + 1), cp[1])
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
            rows = list(itertools.islice(self._matches(f, *self._scope(f), limit), limit))
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
        """Exact number of matches, in time proportional to the matches.

        Tags alone (agency, country, type, event, code), with or without a time
        window, are counted from their postings without reading an entry; a
        pure time window is one range; a message or a case reads its entries.
        """
        f = _Filters(
            msg_id, case_ref, agency, country, type, event, code, since_ms, until_ms, before_index
        )
        with self._lock, self._read():
            lo, hi, timed = self._scope(f)
            tags = _wanted(f, _TAGGED)
            if f.msg_id is None and f.case_ref is None and not timed and tags:
                return sum(bits.bit_count() for _, bits in self._tagged(tags, lo, hi))
            if f.msg_id is None and f.case_ref is None and not tags:
                sql, args = self._column_query(f, "count(*)", timed)
                return int(self._db.execute(sql, (*args, lo, hi)).fetchone()[0])
            return sum(1 for _ in self._matches(f, lo, hi, timed, _CHUNK))

    def _scope(self, f: _Filters) -> tuple[int, int, bool]:
        """Leaves ``[lo, hi)`` a search covers, and whether time is left to check per row."""
        tip = self._tip()
        lo, hi = 0, tip.size
        if f.before_index is not None:
            hi = min(hi, max(f.before_index, 0))
        timed = f.since_ms is not None or f.until_ms is not None
        if timed and not tip.unordered:
            if f.since_ms is not None:
                lo = self._first_at_or_after(f.since_ms, lo, hi)
            if f.until_ms is not None:
                hi = self._first_at_or_after(f.until_ms, lo, hi)
            timed = False
        return lo, hi, timed

    def _matches(
        self, f: _Filters, lo: int, hi: int, timed: bool, want: int
    ) -> Iterator[tuple[Any, ...]]:
        """Rows matching ``f`` in ``[lo, hi)``, newest first; ``want`` is how many the
        caller expects to take, which sizes the reads.

        What drives, most selective first: the ``msg_id`` index; the ``cases``
        of a case; the postings of the tags asked for; else the leaf range. The
        other filters are checked on the rows found.
        """
        tags = _wanted(f, _TAGGED)
        if f.msg_id is not None or (f.case_ref is None and not tags):
            sql, args = self._column_query(f, _ENTRY_COLUMNS, timed)
            keep = _carries(_wanted(f, ("agency", "country")))
            return self._walk(sql + " ORDER BY e.idx DESC", args, lo, hi, keep=keep, want=want)
        columns: tuple[str, ...] = ()
        if f.case_ref is not None:
            leaves = self._case_leaves(f.case_ref, lo, hi, want)
            columns, keep = ("type", "event", "code"), _carries(_wanted(f, ("agency", "country")))
        else:
            leaves, keep = (_leaves(b, bits) for b, bits in self._tagged(tags, lo, hi)), None
        sql, args = _ROWS_BY_INDEX, []
        for name in columns:
            if getattr(f, name) is not None:
                sql, args = sql + f" AND +e.{name} = ?", [*args, getattr(f, name)]
        if timed:
            clauses, values = _time_filter(f)
            sql, args = sql + "".join(f" AND {c}" for c in clauses), args + values
        exact = not args and keep is None
        return self._rows_at(leaves, sql + " ORDER BY e.idx DESC", args, keep, want if exact else 0)

    def _first_at_or_after(self, at_ms: int, lo: int, hi: int) -> int:
        """Smallest index in ``[lo, hi)`` with time >= at_ms, else ``hi``: a binary
        search, valid while times never decrease."""
        while lo < hi:
            mid = (lo + hi) // 2
            row = self._db.execute("SELECT at FROM entries WHERE idx = ?", (mid,)).fetchone()
            if row is None:
                raise LocalError(f"audit log storage has no leaf {mid}; run verify_storage")
            if row[0] < at_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _column_query(self, f: _Filters, select: str, timed: bool) -> tuple[str, list[object]]:
        """SQL over ``entries``, driven by the msg_id index if a msg_id is given.

        It ends in the leaf range ``e.idx >= ? AND e.idx < ?``, whose two
        arguments the caller appends.
        """
        where = ""
        args: list[object] = []
        for name in ("msg_id", "case_ref", "type", "event", "code"):
            value = getattr(f, name)
            if value is not None:
                # ``+`` keeps SQLite from walking anything but the msg_id index.
                where += "e.msg_id = ? AND " if name == "msg_id" else f"+e.{name} = ? AND "
                args.append(value)
        if timed:
            clauses, values = _time_filter(f)
            where += "".join(f"{c} AND " for c in clauses)
            args += values
        sql = f"SELECT {select} FROM entries e WHERE {where}e.idx >= ? AND e.idx < ?"  # noqa: S608
        return sql, args

    def _walk(
        self, sql: str, args: list[object], lo: int, hi: int, *, keep: _RowFilter | None, want: int
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of ``sql`` over ``[lo, hi)`` newest first that ``keep`` accepts, read in
        keyset pages of ``want`` rows (at least :data:`_CHUNK` if some may fail ``keep``)."""
        chunk = want if keep is None else max(want, _CHUNK)
        while hi > lo:
            rows = self._db.execute(sql + " LIMIT ?", (*args, lo, hi, chunk)).fetchall()
            yield from rows if keep is None else filter(keep, rows)
            if len(rows) < chunk:
                return
            hi = rows[-1][0]

    def _rows_at(
        self,
        leaves: Iterator[list[int]],
        sql: str,
        args: list[object],
        keep: _RowFilter | None,
        exact: int,
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of candidate leaves (lists, newest first) that ``sql`` and ``keep`` accept.

        Candidates are read :data:`_CHUNK` at a time, or ``exact`` at a time
        when every candidate is known to match (a page then costs its rows).
        """
        pending: list[int] = []
        for found in leaves:
            pending += found
            if len(pending) >= (exact or _CHUNK):
                rows = self._db.execute(sql, (_json(pending), *args)).fetchall()
                yield from rows if keep is None else filter(keep, rows)
                pending = []
        if pending:
            rows = self._db.execute(sql, (_json(pending), *args)).fetchall()
            yield from rows if keep is None else filter(keep, rows)

    def _case_leaves(self, case_ref: str, lo: int, hi: int, want: int) -> Iterator[list[int]]:
        """The leaves of a case in ``[lo, hi)``, newest first, ``want`` at a time.

        One statement looks the case up in every span of the range (a key
        lookup each) and stops after ``want`` leaves; the next starts below
        the last leaf found.
        """
        chunk = max(want, _CHUNK)
        while lo < hi:
            spans = _json(range((hi - 1) >> _SPAN_BITS, (lo >> _SPAN_BITS) - 1, -1))
            rows = self._db.execute(_CASE_PROBE, (spans, case_ref, lo, hi, chunk)).fetchall()
            if rows:
                yield [i for (i,) in rows]
            if len(rows) < chunk:
                return
            hi = rows[-1][0]

    def _tagged(self, tags: list[str], lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """Per block, newest first: its first leaf and the bitmap of its leaves in
        ``[lo, hi)`` that carry every tag (blocks with none are skipped).

        Blocks are probed newest first for the postings of all the tags at
        once, a few blocks at first and more as the search goes on; the tags'
        bitmaps are and-ed. A page of a common tag reads a few rows, and a
        combination that never occurs reads no entry: only its tags' postings
        (a key lookup per tag and block).
        """
        wanted = _json(tags)
        spans = self._db.execute(_TAGS_READ, (wanted,)).fetchall()
        if len(spans) < len(tags):
            return  # a tag that never occurred
        lo = max(lo, max(first for first, _ in spans) << _BLOCK_BITS)
        hi = min(hi, (min(last for _, last in spans) + 1) << _BLOCK_BITS)
        if lo >= hi:
            return
        first, last = lo >> _BLOCK_BITS, (hi - 1) >> _BLOCK_BITS
        block, span = last, _PROBE_BLOCKS[0]
        while block >= first:
            low = max(first, block - span + 1)
            probe = _json(range(block, low - 1, -1))
            rows = self._db.execute(_POSTINGS_PROBE, (probe, wanted)).fetchall()
            for b, group in itertools.groupby(rows, key=operator.itemgetter(0)):
                found = [leaves for _, _, leaves in group]
                if len(found) < len(tags):
                    continue
                bits = int.from_bytes(found[0], "little")
                for leaves in found[1:]:
                    bits &= int.from_bytes(leaves, "little")
                base = b << _BLOCK_BITS
                if b == first:
                    bits &= -1 << (lo - base)
                if b == last:
                    bits &= (1 << (hi - base)) - 1
                if bits:
                    yield base, bits
            block, span = low - 1, min(2 * span, _PROBE_BLOCKS[1])

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


def _position(level: int, i: int) -> int:
    """Where node ``(level, i)`` is in ``nodes``: the post order in which appends complete them.

    Before leaf ``m`` is appended the tree has ``2m - popcount(m)`` nodes; leaf
    ``m`` adds itself and then one parent per trailing one bit of ``m``. Node
    ``(level, i)`` is the ``level``-th of those for ``m = (i+1)·2^level - 1``.
    """
    m = ((i + 1) << level) - 1
    return 2 * m - m.bit_count() + level


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


_RowFilter = Callable[[tuple[Any, ...]], bool]


def _tags(r: AuditRecord | StoredEntry) -> set[str]:
    """The postings an entry is listed under; a search filter asks for the same strings."""
    tags = {"event=" + r.event}
    if r.type is not None:
        tags.add("type=" + r.type)
    if r.code is not None:
        tags.add("code=" + r.code)
    if r.sender:
        tags.update(_principal_tags(r.sender))
    for recipient in r.recipients:
        if recipient:
            tags.update(_principal_tags(recipient))
    country = _country(r.peer)
    if country is not None:
        tags.add("country=" + country)
    return tags


@functools.lru_cache(maxsize=4096)
def _principal_tags(principal: str) -> tuple[str, ...]:
    """An agency's tag and its country's, if it names one."""
    country = _country(principal)
    return ("agency=" + principal,) + (() if country is None else ("country=" + country,))


def _wanted(f: _Filters, names: Sequence[str]) -> list[str]:
    """The tags a search asks for, in the order of ``names``."""
    return [f"{name}={getattr(f, name)}" for name in names if getattr(f, name) is not None]


def _carries(tags: list[str]) -> _RowFilter | None:
    """A check of agency and country on rows that another index found, or None."""
    if not tags:
        return None
    wanted = set(tags)

    def keep(row: tuple[Any, ...]) -> bool:
        return wanted <= _tags(_entry(row))

    return keep


def _time_filter(f: _Filters) -> tuple[list[str], list[object]]:
    """Time as row conditions, for logs whose clock once stepped back."""
    given = [
        (c, v) for c, v in (("+e.at >= ?", f.since_ms), ("+e.at < ?", f.until_ms)) if v is not None
    ]
    return [c for c, _ in given], [v for _, v in given]


def _leaves(base: int, bits: int) -> list[int]:
    """The leaves of a block's bitmap, newest first."""
    out = []
    while bits:
        top = bits.bit_length() - 1
        out.append(base + top)
        bits ^= 1 << top
    return out


def _json(values: Iterable[int | str]) -> str:
    """A JSON array for ``json_each``: how a list of leaves or tags goes into one statement."""
    return _JSON.encode(list(values)).decode()


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
        _RECIPIENTS.decode(recipients),
        case_ref,
        code,
        peer,
    )
