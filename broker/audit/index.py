"""The indexes appends keep for search: ``postings``, ``tags``, ``cases``, clock order.

- ``postings(block, tag, leaves)``: per block of 2^:data:`BLOCK_BITS` leaves
  and tag, a bitmap (bit ``i`` = leaf ``block·1024 + i``) of the leaves that
  carry the tag; ``tags(tag, first, last)``: the first and last block of each.
  An entry's tags are :func:`entry_tags`: its event, type and code, the
  sender and every recipient as ``agency=``, and the country of each and of
  the peer hub as ``country=``; an entry answering a message (a version 2
  entry's ``in_reply_to``) also ``reply=<message id>``, so a message's
  replies and read receipts are found without reading other entries.
- ``cases(span, case_ref, idx)``: the leaves of each case reference, grouped
  by spans of 2^:data:`SPAN_BITS` leaves.
- ``meta``: :data:`UNORDERED`, the first leaf whose time is earlier than an
  earlier leaf's, if a clock ever stepped back.

Each table is ordered by leaf index first, so a batch writes where the
previous one did. :mod:`.search` reads them.

:class:`SearchIndex` is not thread-safe and opens no transaction: its caller,
:class:`~broker.audit.log.AuditLog`, holds the lock, runs :meth:`~SearchIndex.add`
in the append's transaction (after the ``entries`` rows), and calls
:meth:`~SearchIndex.forget` whenever another connection wrote or a
transaction failed.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence

from broker.audit.records import AuditRecord, StoredEntry

UNORDERED = "unordered_from"
"""``meta`` key: first leaf whose time is earlier than an earlier leaf's."""

BLOCK_BITS = 10
"""``postings`` blocks hold 2^10 leaves: a row's ``leaves`` is a 128-byte bitmap."""
_BLOCK_BYTES = (1 << BLOCK_BITS) // 8
_BLOCK_MASK = (1 << BLOCK_BITS) - 1
SPAN_BITS = 14
"""``cases`` rows are grouped in spans of 2^14 leaves, so a batch writes where the last did."""

_TAGS_WRITE = (
    "INSERT INTO tags (tag, first, last) VALUES (?, ?, ?)"
    " ON CONFLICT (tag) DO UPDATE SET last = excluded.last"
)
_POSTINGS_WRITE = (
    "INSERT INTO postings (block, tag, leaves) VALUES (?, ?, ?)"
    " ON CONFLICT (block, tag) DO UPDATE SET leaves = excluded.leaves"
)


class SearchIndex:
    """``postings``, ``tags``, ``cases`` and the clock order in ``meta``, as appends write them."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._latest: tuple[int, int | None] | None = None
        """(size, latest time of those leaves), the time the next append compares with."""
        self._unordered: bool | None = None
        self._open_block: dict[str, int] | None = None
        """The postings of the block the next leaf goes in, by tag."""
        self._last_blocks: dict[str, int] | None = None
        """The last block of every tag (``tags.last``)."""

    def forget(self) -> None:
        """Drop what is cached of the end of the log: it is read again when needed."""
        self._latest = self._unordered = self._open_block = self._last_blocks = None

    @property
    def unordered(self) -> bool:
        """Whether a leaf's time was ever earlier than an earlier leaf's."""
        if self._unordered is None:
            self._unordered = self._unordered_from() is not None
        return self._unordered

    def _unordered_from(self) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (UNORDERED,)).fetchone()
        return None if row is None else int(row[0])

    # --- appending -------------------------------------------------------------------

    def add(self, start: int, records: Sequence[AuditRecord]) -> None:
        """Index leaves ``start…`` in the caller's transaction (after their ``entries``
        rows). Moves the cached state in place: if the transaction fails, the
        caller must :meth:`forget` it."""
        last_at = self._last_at(start)
        unordered = self.unordered
        case_rows: list[tuple[int, str, int]] = []
        block = start >> BLOCK_BITS
        tagged: dict[str, int] = {}
        postings = {block: tagged}  # this batch's leaves, by block and tag
        for i, r in enumerate(records, start=start):
            if r.case_ref is not None:
                case_rows.append((i >> SPAN_BITS, r.case_ref, i))
            if i >> BLOCK_BITS != block:
                block = i >> BLOCK_BITS
                tagged = postings[block] = {}
            bit = 1 << (i & _BLOCK_MASK)
            for tag in entry_tags(r):
                tagged[tag] = tagged.get(tag, 0) | bit
            if last_at is not None and r.at_ms < last_at and not unordered:
                self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (UNORDERED, i))
                unordered = True
            if last_at is None or r.at_ms > last_at:
                last_at = r.at_ms
        self._db.executemany("INSERT INTO cases (span, case_ref, idx) VALUES (?, ?, ?)", case_rows)
        self._write_postings(start, postings, start + len(records))
        self._unordered = unordered
        self._latest = (start + len(records), last_at)

    def _last_at(self, size: int) -> int | None:
        """The latest time of the first ``size`` leaves (the last one's while ordered)."""
        if self._latest is None or self._latest[0] != size:
            last_at = None
            if size:
                row = self._db.execute("SELECT at FROM entries WHERE idx = ?", (size - 1,))
                last_at = row.fetchone()[0]
            self._latest = (size, last_at)
        return self._latest[1]

    def _write_postings(self, start: int, postings: dict[int, dict[str, int]], end: int) -> None:
        """Or a batch's bitmaps into the open block's, write them, and move ``tags.last``;
        ``end`` is the size of the log after the batch."""
        first = start >> BLOCK_BITS
        if self._open_block is None:
            self._open_block = self._read_open_block(first)
        if self._last_blocks is None:
            self._last_blocks = dict(self._db.execute("SELECT tag, last FROM tags").fetchall())
        for tag, bits in postings[first].items():
            postings[first][tag] = bits | self._open_block.get(tag, 0)
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
        last_blocks = self._last_blocks
        self._db.executemany(
            _TAGS_WRITE,
            [(tag, firsts[tag], b) for tag, b in lasts.items() if last_blocks.get(tag) != b],
        )
        last_blocks.update(lasts)
        following = end >> BLOCK_BITS  # where the next append starts
        if following == first:
            self._open_block.update(postings[first])
        else:
            self._open_block = postings.get(following, {})

    def _read_open_block(self, block: int) -> dict[str, int]:
        rows = self._db.execute("SELECT tag, leaves FROM postings WHERE block = ?", (block,))
        return {tag: int.from_bytes(leaves, "little") for tag, leaves in rows}


# --- tags -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _country(principal: str | None) -> str | None:
    """``THA`` from ``THA/DSI-ATHD``, ``THA/HUB`` or ``THA``; None for anything else."""
    if principal is None:
        return None
    cc = principal[:3]
    well_formed = len(cc) == 3 and cc.isascii() and cc.isalpha() and cc.isupper()
    return cc if well_formed and principal[3:4] in ("", "/") else None


def entry_tags(r: AuditRecord | StoredEntry) -> set[str]:
    """The postings an entry is listed under; a query asks for the same strings."""
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
    if isinstance(r, AuditRecord) and r.in_reply_to is not None:
        tags.add("reply=" + r.in_reply_to)
    return tags


@functools.lru_cache(maxsize=4096)
def _principal_tags(principal: str) -> tuple[str, ...]:
    """An agency's tag and its country's, if it names one."""
    country = _country(principal)
    return ("agency=" + principal,) + (() if country is None else ("country=" + country,))
