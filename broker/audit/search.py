"""Finding audit entries: :class:`AuditQuery`, and search and count over the indexes.

Every search is newest first and keyset-paged by leaf index
(``before_index``), so a page costs about the rows it returns, at any size.
What drives a search, most selective first:

- ``msg_id``: the ``entries_msg_id`` index, other filters checked on its rows;
- ``case_ref``: the ``cases`` of the case, span by span, newest first;
- ``agency``, ``country``, ``type``, ``event``, ``code``, ``in_reply_to``:
  their ``postings`` bitmaps and-ed block by block, so no entry is read that
  is not returned;
- else the leaf range.

Time: while clocks never stepped back, a window is a leaf index range found
by binary search; after a step back, a row filter (correct, slower). The
indexes are written by :mod:`.index`; why they are shaped so is in
docs/design-decisions.md (Audit log storage).

:class:`AuditSearch` is not thread-safe: its caller,
:class:`~broker.audit.log.AuditLog`, holds the lock and runs each search in
one read transaction.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from broker.audit.index import BLOCK_BITS, SPAN_BITS, SearchIndex, entry_tags
from broker.audit.records import ENTRY_COLUMNS, StoredEntry, check_range, json_array, stored_entry
from protocols.errors import LocalError

MAX_SEARCH_LIMIT = 100_000
"""Largest page :meth:`AuditLog.search` returns (a reconciliation reads a day of
exchanges with one peer at once); interactive callers page with ``before_index``."""

_TAGS_READ = "SELECT first, last FROM tags WHERE tag IN (SELECT value FROM json_each(?))"
_POSTINGS_PROBE = (
    "SELECT block, tag, leaves FROM postings WHERE block IN (SELECT value FROM json_each(?))"
    " AND tag IN (SELECT value FROM json_each(?)) ORDER BY block DESC"
)
_PROBE_BLOCKS = (2, 128)
"""A tag search probes this many blocks at first, doubling up to the second number."""
_CASE_PROBE = (
    "SELECT idx FROM cases WHERE span IN (SELECT value FROM json_each(?)) AND case_ref = ?"
    " AND idx >= ? AND idx < ? ORDER BY span DESC, idx DESC LIMIT ?"
)
_ROWS_BY_INDEX = (
    f"SELECT {ENTRY_COLUMNS} FROM entries e"  # noqa: S608 - fixed column list
    " WHERE e.idx IN (SELECT value FROM json_each(?))"
)

# Filters found through ``postings`` (intersected block by block); msg_id has an
# index on ``entries`` and case_ref the ``cases`` table.
_TAGGED = ("agency", "country", "type", "event", "code", "in_reply_to")
_TAG_NAMES = {"in_reply_to": "reply"}  # the postings tag of a query field, where it differs
_TEXT = ("msg_id", "case_ref", *_TAGGED)
_CHUNK = 256
"""Rows a search reads at a time when some of them may be filtered out."""

_Row = tuple[Any, ...]
_RowFilter = Callable[[_Row], bool]


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """What :meth:`AuditLog.search` and :meth:`AuditLog.count` look for: entries
    matching every field given (None: any).

    ``agency`` matches the sender or any recipient; ``country`` the country
    of the sender, of any recipient, or of the peer hub. Time is the
    half-open window ``since_ms <= at < until_ms``. ``in_reply_to`` finds the
    entries of the replies and receipts answering that message (version 2
    entries, SPEC §13.1). ``before_index`` keeps
    leaves below it: for the next page, the last index of this one
    (``dataclasses.replace(query, before_index=page[-1].index)``);
    ``after_index`` keeps leaves above it (a page towards the newest).
    """

    msg_id: str | None = None
    case_ref: str | None = None
    agency: str | None = None
    country: str | None = None
    type: str | None = None
    event: str | None = None
    code: str | None = None
    in_reply_to: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    before_index: int | None = None
    after_index: int | None = None

    def __post_init__(self) -> None:
        for name in _TEXT:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"audit query {name} must be a string or None")
        for name in ("since_ms", "until_ms", "before_index", "after_index"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"audit query {name} must be an integer or None")
        if self.before_index is not None and self.before_index < 0:
            raise ValueError(f"audit query before_index {self.before_index} is negative")
        if self.after_index is not None and self.after_index < 0:
            raise ValueError(f"audit query after_index {self.after_index} is negative")

    def tags(self, names: Sequence[str] = _TAGGED) -> list[str]:
        """The postings tags asked for among ``names``, in that order."""
        return [
            f"{_TAG_NAMES.get(name, name)}={getattr(self, name)}"
            for name in names
            if getattr(self, name) is not None
        ]


class AuditSearch:
    """Search and count over ``entries`` and the indexes of :class:`~.index.SearchIndex`."""

    def __init__(self, db: sqlite3.Connection, index: SearchIndex) -> None:
        self._db = db
        self._index = index

    def search(self, query: AuditQuery, size: int, limit: int) -> list[StoredEntry]:
        """Entries of the first ``size`` leaves matching ``query``, newest first."""
        check_range("limit", limit, 1, MAX_SEARCH_LIMIT)
        rows = itertools.islice(self._matches(query, *self._scope(query, size), limit), limit)
        return [stored_entry(r) for r in rows]

    def count(self, query: AuditQuery, size: int) -> int:
        """Exact number of matches, in time proportional to the matches.

        Tags alone (agency, country, type, event, code, in_reply_to), with or without a time
        window, are counted from their postings without reading an entry; a
        pure time window is one range; a message or a case reads its entries.
        """
        lo, hi, timed = self._scope(query, size)
        tags = query.tags()
        if query.msg_id is None and query.case_ref is None and not timed and tags:
            return sum(bits.bit_count() for _, bits in self._tagged(tags, lo, hi))
        if query.msg_id is None and query.case_ref is None and not tags:
            sql, args = self._column_query(query, "count(*)", timed)
            return int(self._db.execute(sql, (*args, lo, hi)).fetchone()[0])
        return sum(1 for _ in self._matches(query, lo, hi, timed, _CHUNK))

    def _scope(self, q: AuditQuery, size: int) -> tuple[int, int, bool]:
        """Leaves ``[lo, hi)`` a search covers, and whether time is left to check per row."""
        lo, hi = 0, size
        if q.before_index is not None:
            hi = min(hi, q.before_index)
        if q.after_index is not None:
            lo = min(hi, q.after_index + 1)
        timed = q.since_ms is not None or q.until_ms is not None
        if timed and not self._index.unordered:
            if q.since_ms is not None:
                lo = self._first_at_or_after(q.since_ms, lo, hi)
            if q.until_ms is not None:
                hi = self._first_at_or_after(q.until_ms, lo, hi)
            timed = False
        return lo, hi, timed

    def _matches(self, q: AuditQuery, lo: int, hi: int, timed: bool, want: int) -> Iterator[_Row]:
        """Rows matching ``q`` in ``[lo, hi)``, newest first; ``want`` is how many the
        caller expects to take, which sizes the reads.

        What drives, most selective first: the ``msg_id`` index; the ``cases``
        of a case; the postings of the tags asked for; else the leaf range. The
        other filters are checked on the rows found.
        """
        tags = q.tags()
        replies = q.in_reply_to is not None  # its postings are more selective than anything
        if not replies and (q.msg_id is not None or (q.case_ref is None and not tags)):
            sql, args = self._column_query(q, ENTRY_COLUMNS, timed)
            keep = _carries(q.tags(("agency", "country")))
            return self._walk(sql + " ORDER BY e.idx DESC", args, lo, hi, keep=keep, want=want)
        columns: tuple[str, ...] = ()
        if q.case_ref is not None and not replies:
            leaves = self._case_leaves(q.case_ref, lo, hi, want)
            columns, keep = ("type", "event", "code"), _carries(q.tags(("agency", "country")))
        else:
            leaves, keep = (_leaves(b, bits) for b, bits in self._tagged(tags, lo, hi)), None
            columns = ("msg_id", "case_ref")
        sql, args = _ROWS_BY_INDEX, []
        for name in columns:
            if getattr(q, name) is not None:
                sql, args = sql + f" AND +e.{name} = ?", [*args, getattr(q, name)]
        if timed:
            clauses, values = _time_filter(q)
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

    def _column_query(self, q: AuditQuery, select: str, timed: bool) -> tuple[str, list[object]]:
        """SQL over ``entries``, driven by the msg_id index if a msg_id is given.

        It ends in the leaf range ``e.idx >= ? AND e.idx < ?``, whose two
        arguments the caller appends.
        """
        where = ""
        args: list[object] = []
        for name in ("msg_id", "case_ref", "type", "event", "code"):
            value = getattr(q, name)
            if value is not None:
                # ``+`` keeps SQLite from walking anything but the msg_id index.
                where += "e.msg_id = ? AND " if name == "msg_id" else f"+e.{name} = ? AND "
                args.append(value)
        if timed:
            clauses, values = _time_filter(q)
            where += "".join(f"{c} AND " for c in clauses)
            args += values
        sql = f"SELECT {select} FROM entries e WHERE {where}e.idx >= ? AND e.idx < ?"  # noqa: S608
        return sql, args

    def _walk(
        self, sql: str, args: list[object], lo: int, hi: int, *, keep: _RowFilter | None, want: int
    ) -> Iterator[_Row]:
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
    ) -> Iterator[_Row]:
        """The rows of candidate leaves (lists, newest first) that ``sql`` and ``keep`` accept.

        Candidates are read :data:`_CHUNK` at a time, or ``exact`` at a time
        when every candidate is known to match (a page then costs its rows).
        """
        pending: list[int] = []
        for found in leaves:
            pending += found
            if len(pending) >= (exact or _CHUNK):
                rows = self._db.execute(sql, (json_array(pending), *args)).fetchall()
                yield from rows if keep is None else filter(keep, rows)
                pending = []
        if pending:
            rows = self._db.execute(sql, (json_array(pending), *args)).fetchall()
            yield from rows if keep is None else filter(keep, rows)

    def _case_leaves(self, case_ref: str, lo: int, hi: int, want: int) -> Iterator[list[int]]:
        """The leaves of a case in ``[lo, hi)``, newest first, ``want`` at a time.

        One statement looks the case up in every span of the range (a key
        lookup each) and stops after ``want`` leaves; the next starts below
        the last leaf found.
        """
        chunk = max(want, _CHUNK)
        while lo < hi:
            spans = json_array(range((hi - 1) >> SPAN_BITS, (lo >> SPAN_BITS) - 1, -1))
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
        wanted = json_array(tags)
        spans = self._db.execute(_TAGS_READ, (wanted,)).fetchall()
        if len(spans) < len(tags):
            return  # a tag that never occurred
        lo = max(lo, max(first for first, _ in spans) << BLOCK_BITS)
        hi = min(hi, (min(last for _, last in spans) + 1) << BLOCK_BITS)
        if lo >= hi:
            return
        first, last = lo >> BLOCK_BITS, (hi - 1) >> BLOCK_BITS
        block, span = last, _PROBE_BLOCKS[0]
        while block >= first:
            low = max(first, block - span + 1)
            probe = json_array(range(block, low - 1, -1))
            rows = self._db.execute(_POSTINGS_PROBE, (probe, wanted)).fetchall()
            for b, group in itertools.groupby(rows, key=operator.itemgetter(0)):
                found = [leaves for _, _, leaves in group]
                if len(found) < len(tags):
                    continue
                bits = int.from_bytes(found[0], "little")
                for leaves in found[1:]:
                    bits &= int.from_bytes(leaves, "little")
                base = b << BLOCK_BITS
                if b == first:
                    bits &= -1 << (lo - base)
                if b == last:
                    bits &= (1 << (hi - base)) - 1
                if bits:
                    yield base, bits
            block, span = low - 1, min(2 * span, _PROBE_BLOCKS[1])


def _carries(tags: list[str]) -> _RowFilter | None:
    """A check of agency and country on rows that another index found, or None."""
    if not tags:
        return None
    wanted = set(tags)

    def keep(row: _Row) -> bool:
        return wanted <= entry_tags(stored_entry(row))

    return keep


def _time_filter(q: AuditQuery) -> tuple[list[str], list[object]]:
    """Time as row conditions, for logs whose clock once stepped back."""
    given = [
        (c, v) for c, v in (("+e.at >= ?", q.since_ms), ("+e.at < ?", q.until_ms)) if v is not None
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
