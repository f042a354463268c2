"""The log pages: ``/audit`` (the exchange register), its CSV export, a message's trail.

In: the query string or path, and the :class:`~broker.web.view.LiaisonView`.
Out: a :class:`~broker.web.site.Page` (template, values, what was read), or
for the export a :class:`~broker.web.site.Download`; 400 with the search
form again for a malformed search, 404 for a malformed message id.
Guaranteed: by default one row per message (:mod:`broker.web.register`),
``?all=1`` every entry; pages are keyset-paged by leaf index (``before``
older, ``after`` newer), never a count of the log; ``q`` is a prefix of a
message id or case ref (a whole id is the indexed search); ``period`` is the
last 1, 7 or 30 days; audit reads run in a worker thread; a CSV cell never
starts a spreadsheet formula.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from aiohttp import web

from broker.audit.records import StoredEntry
from broker.audit.search import AuditQuery
from broker.web.auth import Session
from broker.web.format import utc_iso
from broker.web.register import Answer, Register, answers_to, read_register
from broker.web.site import Download, Page, Site
from broker.web.view import PeerStep
from protocols.audit import AuditEntry, AuditEvent, decode_entry
from protocols.errors import IxbError
from protocols.identifiers import format_message_id, parse_message_id
from protocols.messages import MESSAGE_TYPES

__all__ = ["LogRow", "exchange_log", "export_csv", "log_rows", "trail"]

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
    after: int | None
    prefix: str | None
    every_entry: bool
    raw: dict[str, str]  # the search as typed, without the page position

    def audit_query(self) -> AuditQuery:
        f = self.filters.get
        return AuditQuery(
            msg_id=f("msg_id"),
            case_ref=f("case_ref"),
            agency=f("agency"),
            country=f("country"),
            type=f("type"),
            event=f("event"),
            code=f("code"),
            since_ms=self.since_ms,
            until_ms=self.until_ms,
        )

    def keep(self, e: StoredEntry) -> bool:
        """The prefix search: a message id or a case ref starting with what was typed."""
        p = self.prefix
        if p is None:
            return True
        return (e.msg_id or "").startswith(p.lower()) or (e.case_ref or "").upper().startswith(
            p.upper()
        )


_PERIODS: Final = {
    "1d": ("last 24 hours", 1),
    "7d": ("last 7 days", 7),
    "30d": ("last 30 days", 30),
}


def _parse_query(request: web.Request, site: Site) -> _Query | str:
    q = request.query
    raw: dict[str, str] = {}
    for name in (*_SEARCH_FIELDS, "q", "period", "from", "to", "all"):
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
    prefix = raw.get("q")
    if prefix is not None:
        try:  # a whole id is an exact (indexed) search
            filters["msg_id"] = format_message_id(parse_message_id(prefix))
            prefix = None
        except IxbError:
            pass
    try:
        since = _day_ms(raw["from"]) if "from" in raw else None
        until = _day_ms(raw["to"]) + 86_400_000 if "to" in raw else None
    except ValueError:
        return "Dates are written YYYY-MM-DD."
    if "period" in raw:
        if raw["period"] not in _PERIODS:
            return "Choose a period from the list."
        start = site.view.now_ms() - _PERIODS[raw["period"]][1] * 86_400_000
        since = start if since is None else max(since, start)
    if raw.get("all", "1") != "1":
        return "The view is either the register or every entry."
    anchors: dict[str, int | None] = {"before": None, "after": None}
    for name in anchors:
        if name in q:
            text = q[name]
            if not text.isdigit() or len(text) > 20:
                return "The page position is not a number."
            anchors[name] = int(text)
    if anchors["before"] is not None and anchors["after"] is not None:
        return "A page is either newer or older, not both."
    return _Query(
        filters,
        since,
        until,
        anchors["before"],
        anchors["after"],
        prefix,
        raw.get("all") == "1",
        raw,
    )


def _day_ms(text: str) -> int:
    day = date.fromisoformat(text)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _every_entry(site: Site, parsed: _Query, limit: int) -> tuple[list[StoredEntry], bool]:
    """The every-entry view: matching entries newest first, keyset-paged by leaf index."""
    audit = site.view.audit
    query = dataclasses.replace(parsed.audit_query(), before_index=parsed.before)
    out: list[StoredEntry] = []
    read = 0
    while len(out) <= limit and read < site.limits.register_scan:
        found = audit.search(query, limit=limit + 1 if parsed.prefix is None else 500)
        read += len(found)
        out += [e for e in found if parsed.keep(e)]
        if len(found) < (limit + 1 if parsed.prefix is None else 500) or not found:
            break
        query = dataclasses.replace(query, before_index=found[-1].index)
    return out[:limit], len(out) > limit


def _link(parsed: _Query, **anchor: int) -> str:
    return urllib.parse.urlencode({**parsed.raw, **{k: str(v) for k, v in anchor.items()}})


async def exchange_log(request: web.Request, site: Site, s: Session) -> Page:
    parsed = _parse_query(request, site)
    context: dict[str, object] = {
        "form": {k: v for k, v in request.query.items() if k not in ("before", "after")},
        "message_types": _MESSAGE_TYPES,
        "events": _EVENTS,
        "periods": [(k, label) for k, (label, _) in _PERIODS.items()],
        "error": None,
        "every_entry": False,
    }
    title = "Exchange register"
    if isinstance(parsed, str):
        return Page("audit.html", title, "", {**context, "error": parsed}, 400)
    limit = site.limits.page_size
    context["every_entry"] = parsed.every_entry
    toggled = dict(parsed.raw)
    if parsed.every_entry:
        del toggled["all"]
    else:
        toggled["all"] = "1"
    context["toggle_query"] = urllib.parse.urlencode(toggled)
    context["export_query"] = urllib.parse.urlencode(parsed.raw)
    read = "audit " + _link(
        parsed,
        **{k: v for k, v in (("before", parsed.before), ("after", parsed.after)) if v is not None},
    )
    if parsed.every_entry:
        rows, more = await asyncio.to_thread(_every_entry, site, parsed, limit)
        size = await asyncio.to_thread(lambda: site.view.audit.size)
        context |= {
            "rows": log_rows(rows),
            "size": size,
            "newest_query": _link(parsed) if parsed.before is not None else None,
            "older_query": _link(parsed, before=rows[-1].index) if more else None,
            "newer_query": None,
        }
        return Page("audit.html", "Every log entry", read.strip(), context)

    def fetch() -> tuple[Register, int]:
        reg = read_register(
            site.view,
            parsed.audit_query(),
            parsed.keep,
            before=parsed.before,
            after=parsed.after,
            rows=limit,
            scan_cap=site.limits.register_scan,
            trail_cap=site.limits.page_size * 4,
        )
        return reg, site.view.audit.size

    reg, size = await asyncio.to_thread(fetch)
    context |= {
        "register": reg,
        "size": size,
        "newest_query": _link(parsed) if reg.newer is not None else None,
        "newer_query": _link(parsed, after=reg.newer) if reg.newer is not None else None,
        "older_query": _link(parsed, before=reg.older) if reg.older is not None else None,
    }
    return Page("audit.html", title, read.strip(), context)


# --- CSV export of a search -----------------------------------------------------------


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def export_csv(request: web.Request, site: Site, s: Session) -> Download:
    """The search as CSV: the register's rows (or every entry), newest first, up to a cap."""
    parsed = _parse_query(request, site)
    if isinstance(parsed, str):
        raise web.HTTPBadRequest(text=parsed)
    cap = site.limits.export_rows
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    if parsed.every_entry:
        entries, _ = await asyncio.to_thread(_every_entry, site, parsed, cap)
        w.writerow(
            [
                "index",
                "time_utc",
                "event",
                "msg_id",
                "type",
                "sender",
                "recipients",
                "case_ref",
                "code",
                "peer",
            ]
        )
        for e in entries:
            w.writerow(
                [
                    _cell(v)
                    for v in (
                        e.index,
                        utc_iso(e.at_ms),
                        e.event,
                        e.msg_id,
                        e.type,
                        e.sender,
                        " ".join(e.recipients),
                        e.case_ref,
                        e.code,
                        e.peer,
                    )
                ]
            )
        count = len(entries)
    else:
        reg = await asyncio.to_thread(
            read_register,
            site.view,
            parsed.audit_query(),
            parsed.keep,
            before=None,
            after=None,
            rows=cap,
            scan_cap=site.limits.register_scan * 10,
            trail_cap=site.limits.page_size * 4,
        )
        w.writerow(
            [
                "msg_id",
                "type",
                "sender",
                "recipients",
                "case_ref",
                "first_utc",
                "last_utc",
                "status",
                "steps",
            ]
        )
        for r in reg.rows:
            steps = "; ".join(
                f"{utc_iso(at)} {hub} {event}" + (f" {extra}" if extra else "")
                for at, hub, event, extra in r.steps()
            )
            w.writerow(
                [
                    _cell(v)
                    for v in (
                        r.msg_id,
                        r.type,
                        r.sender,
                        " ".join(r.recipients),
                        r.case_ref,
                        utc_iso(r.first_ms),
                        utc_iso(r.last_ms),
                        r.status,
                        steps,
                    )
                ]
            )
        count = len(reg.rows)
    stamp = utc_iso(site.view.now_ms()).replace(":", "").replace("-", "")
    name = f"ixb-{site.view.hub_id.split('/', 1)[0]}-register-{stamp}.csv"
    what = "export csv rows=" + str(count) + " " + _link(parsed)
    return Download(out.getvalue().encode("utf-8"), "text/csv", name, what.strip())


# --- one message's trail --------------------------------------------------------------


async def trail(request: web.Request, site: Site, s: Session) -> Page:
    raw = request.match_info["msg_id"]
    try:
        msg_id = format_message_id(parse_message_id(raw[:100]))
    except IxbError:
        raise web.HTTPNotFound(text="Not a message id.") from None
    limits = site.limits

    def fetch() -> tuple[list[StoredEntry], list[StoredEntry], Sequence[PeerStep], list[Answer]]:
        audit = site.view.audit
        found = audit.search(AuditQuery(msg_id=msg_id), limit=limits.trail_entries)
        case_ref = found[-1].case_ref if found else None
        # Receipts and replies are messages of their own; the case ref ties them together.
        related = (
            audit.search(AuditQuery(case_ref=case_ref), limit=limits.page_size + len(found))
            if case_ref
            else []
        )
        theirs = site.view.peer_steps([msg_id])
        addressed = {r for e in found for r in e.recipients}
        answers = answers_to(site.view, {msg_id: addressed}, limits.trail_entries)[msg_id]
        others = [e for e in related if e.msg_id != msg_id][: limits.page_size]
        return found, others, theirs, answers

    found, related, theirs, answers = await asyncio.to_thread(fetch)
    steps = log_rows(found[::-1])  # oldest first: the order things happened
    context = {
        "msg_id": msg_id,
        "steps": steps,
        "decoded": next((x for x in map(decoded, found[::-1]) if x is not None), None),
        "related": log_rows(related),
        "theirs": sorted(theirs, key=lambda p: (p.at_ms, p.hub, p.index)),
        "answers": answers,
        "trail_cap": limits.trail_entries,
    }
    return Page("trail.html", "Message trail", f"trail {msg_id}", context)
