"""The log pages: ``/audit`` (search), ``/audit/message/{id}`` (trail), ``/audit/proof/{n}``.

In: the query string or path, and the :class:`~broker.web.view.LiaisonView`.
Out: a :class:`~broker.web.site.Page` (template, values, what was read); 400
with the search form again for a malformed search, 404 for a malformed
message id or a leaf the log does not hold. Guaranteed: one keyset page of
the log per request (``before`` is a leaf index), never a count of the log;
audit reads run in a worker thread.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from aiohttp import web

from broker.audit.records import StoredEntry
from broker.audit.search import AuditQuery
from broker.web.auth import Session
from broker.web.format import note_time
from broker.web.site import Page, Site
from protocols import merkle
from protocols.audit import AuditEntry, AuditEvent, decode_entry
from protocols.checkpoint import merge_notes
from protocols.errors import IxbError
from protocols.identifiers import format_message_id, parse_message_id
from protocols.messages import MESSAGE_TYPES

__all__ = ["LogRow", "exchange_log", "log_rows", "proof", "trail"]

_SEARCH_FIELDS: Final = ("msg_id", "case_ref", "agency", "country", "type", "event", "code")
_MESSAGE_TYPES: Final = tuple(sorted(MESSAGE_TYPES))
_EVENTS: Final = tuple(e.value for e in AuditEvent)


@dataclass(frozen=True)
class LogRow:
    """An entry as a table row shows it: the stored columns and what its leaf says."""

    entry: StoredEntry
    handling: str
    detail: str | None
    actor: str | None


def decoded(e: StoredEntry) -> AuditEntry | None:
    try:
        return decode_entry(e.data)
    except IxbError:
        return None


def log_rows(entries: Sequence[StoredEntry]) -> list[LogRow]:
    rows = []
    for e in entries:
        d = decoded(e)
        handling = d.handling.value if d is not None and d.handling is not None else ""
        detail, actor = (d.detail, d.actor) if d is not None else (None, None)
        rows.append(LogRow(e, handling, detail, actor))
    return rows


# --- exchange log ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Query:
    filters: dict[str, str]
    since_ms: int | None
    until_ms: int | None
    before: int | None
    raw: dict[str, str]


def _parse_query(request: web.Request, site: Site) -> _Query | str:
    q = request.query
    raw: dict[str, str] = {}
    for name in (*_SEARCH_FIELDS, "from", "to"):
        value = q.get(name, "").strip()
        if len(value) > site.limits.max_field_chars:
            return f"The {name} field is too long."
        if value:
            raw[name] = value
    filters = {k: v for k, v in raw.items() if k in _SEARCH_FIELDS}
    if "country" in filters:
        filters["country"] = filters["country"].upper()
    if "agency" in filters:
        filters["agency"] = filters["agency"].upper()
    if "msg_id" in filters:
        try:
            filters["msg_id"] = format_message_id(parse_message_id(filters["msg_id"]))
        except IxbError:
            return "The message id is not a UUID."
    try:
        since = _day_ms(raw["from"]) if "from" in raw else None
        until = _day_ms(raw["to"]) + 86_400_000 if "to" in raw else None
    except ValueError:
        return "Dates are written YYYY-MM-DD."
    before = None
    if "before" in q:
        text = q["before"]
        if not text.isdigit() or len(text) > 20:
            return "The page position is not a number."
        before = int(text)
    return _Query(filters, since, until, before, raw)


def _day_ms(text: str) -> int:
    day = date.fromisoformat(text)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


async def exchange_log(request: web.Request, site: Site, s: Session) -> Page:
    parsed = _parse_query(request, site)
    context: dict[str, object] = {
        "form": {k: v for k, v in request.query.items() if k != "before"},
        "message_types": _MESSAGE_TYPES,
        "events": _EVENTS,
        "error": None,
    }
    if isinstance(parsed, str):
        return Page("audit.html", "Exchange log", "", {**context, "error": parsed}, 400)
    limit = site.limits.page_size

    def fetch() -> tuple[list[StoredEntry], int]:
        audit = site.view.audit
        f = parsed.filters.get
        query = AuditQuery(
            msg_id=f("msg_id"),
            case_ref=f("case_ref"),
            agency=f("agency"),
            country=f("country"),
            type=f("type"),
            event=f("event"),
            code=f("code"),
            since_ms=parsed.since_ms,
            until_ms=parsed.until_ms,
            before_index=parsed.before,
        )
        found = audit.search(query, limit=limit + 1)
        return found, audit.size

    found, size = await asyncio.to_thread(fetch)
    rows, more = found[:limit], len(found) > limit
    context |= {
        "rows": log_rows(rows),
        "size": size,
        "newest_query": (urllib.parse.urlencode(parsed.raw) if parsed.before is not None else None),
        "older_query": (
            urllib.parse.urlencode({**parsed.raw, "before": str(rows[-1].index)}) if more else None
        ),
    }
    read = "audit " + urllib.parse.urlencode(
        {**parsed.raw, **({"before": str(parsed.before)} if parsed.before is not None else {})}
    )
    return Page("audit.html", "Exchange log", read.strip(), context)


# --- one message's trail --------------------------------------------------------------


async def trail(request: web.Request, site: Site, s: Session) -> Page:
    raw = request.match_info["msg_id"]
    try:
        msg_id = format_message_id(parse_message_id(raw[:100]))
    except IxbError:
        raise web.HTTPNotFound(text="Not a message id.") from None
    limits = site.limits

    def fetch() -> tuple[list[StoredEntry], list[StoredEntry]]:
        audit = site.view.audit
        found = audit.search(AuditQuery(msg_id=msg_id), limit=limits.trail_entries)
        case_ref = found[-1].case_ref if found else None
        # Receipts and replies are messages of their own; the case ref ties them together.
        related = (
            audit.search(AuditQuery(case_ref=case_ref), limit=limits.page_size + len(found))
            if case_ref
            else []
        )
        return found, [e for e in related if e.msg_id != msg_id][: limits.page_size]

    found, related = await asyncio.to_thread(fetch)
    steps = log_rows(found[::-1])  # oldest first: the order things happened
    context = {
        "msg_id": msg_id,
        "steps": steps,
        "decoded": next((x for x in map(decoded, found[::-1]) if x is not None), None),
        "related": log_rows(related),
        "trail_cap": limits.trail_entries,
    }
    return Page("trail.html", "Message trail", f"trail {msg_id}", context)


# --- inclusion proof ------------------------------------------------------------------


async def proof(request: web.Request, site: Site, s: Session) -> Page:
    text = request.match_info["index"]
    if not text.isdigit() or len(text) > 20:
        raise web.HTTPNotFound(text="No such leaf.")
    index = int(text)

    def fetch() -> tuple[StoredEntry, int, bytes, bytes | None, list[bytes]] | None:
        audit = site.view.audit
        size = audit.size
        if index >= size:
            return None
        entry = audit.entries(index, index + 1)[0]
        cp = audit.latest_checkpoint()
        if cp is not None and index < cp[0]:
            note = _with_cosignatures(cp[2], [n for _, _, n, _ in audit.cosignatures(cp[0])])
            return entry, cp[0], cp[1], note, audit.inclusion_proof(index, cp[0])
        return entry, size, audit.root(size), None, audit.inclusion_proof(index, size)

    got = await asyncio.to_thread(fetch)
    if got is None:
        raise web.HTTPNotFound(text="No such leaf.")
    entry, size, root, note, path = got
    try:
        merkle.verify_inclusion(entry.data, index, size, path, root)
        failure = None
    except IxbError as exc:
        failure = exc.detail
    context = {
        "index": index,
        "entry": entry,
        "size": size,
        "root": root,
        "leaf_hash": merkle.leaf_hash(entry.data),
        "proof": path,
        "failure": failure,
        "note": note,
        "note_time": note_time(note) if note is not None else None,
    }
    return Page("proof.html", "Inclusion proof", f"proof {index}", context)


def _with_cosignatures(note: bytes, cosigned: Sequence[bytes]) -> bytes:
    """Our checkpoint note with every witness's cosignature line, as an auditor checks it."""
    try:
        return merge_notes(note, *cosigned)
    except IxbError:
        return note
