"""The pages about peers and time: ``/audit/witness``, ``/audit/reconcile``, ``/audit/deadlines``.

In: the :class:`~broker.web.view.LiaisonView` (checkpoints, witness rows,
reconciliation, open requests) and, for reconcile, ``?peer=`` and
``?window=`` (a key of :data:`RECONCILE_WINDOWS`, default the last 7 days). Out: a
:class:`~broker.web.site.Page`. Reconcile answers 400 for a country that is
not a peer and 502 when the comparison fails (the peer's entries could not be
had); nothing else here fails on input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from broker.web.auth import Session
from broker.web.format import duration, note_time
from broker.web.site import Page, Site
from broker.web.view import DeadlineRow
from protocols.checkpoint import log_origin, witness_name
from protocols.errors import IxbError

__all__ = [
    "DEFAULT_WINDOW",
    "RECONCILE_WINDOWS",
    "STATUS_ONLY",
    "deadlines",
    "reconcile",
    "request_state",
    "witness",
]

_DAY_MS: Final = 86_400_000
RECONCILE_WINDOWS: Final[Mapping[str, tuple[str, int | None]]] = {
    "1d": ("the last 24 hours", _DAY_MS),
    "7d": ("the last 7 days", 7 * _DAY_MS),
    "30d": ("the last 30 days", 30 * _DAY_MS),
    "90d": ("the last 90 days", 90 * _DAY_MS),
    "all": ("all time", None),
}
"""The periods the reconcile page offers: key → (label, span in ms; None: everything)."""
DEFAULT_WINDOW: Final = "7d"


@dataclass(frozen=True)
class _Checkpoint:
    size: int
    root: bytes
    signed_ms: int | None


async def witness(request: web.Request, site: Site, s: Session) -> Page:
    view = site.view

    def fetch() -> tuple[
        tuple[int, bytes, bytes] | None,
        list[tuple[str, int, bytes, int]],
        list[tuple[str, tuple[int, bytes, bytes, int] | None]],
        int,
    ]:
        audit = view.audit
        cp = audit.latest_checkpoint()
        cosigs = audit.cosignatures(cp[0]) if cp is not None else []
        theirs = [(p, audit.last_witnessed(log_origin(p))) for p in view.peers]
        return cp, cosigs, theirs, audit.size

    cp, cosigs, theirs, size = await asyncio.to_thread(fetch)
    rows = view.witness_status()
    by_witness = {w: at for w, _, _, at in cosigs}
    # Every peer, cosigned or not; then any other witness that cosigned.
    cosigners = [(p, by_witness.pop(witness_name(p), None)) for p in view.peers]
    cosigners += list(by_witness.items())
    context = {
        "checkpoint": _Checkpoint(cp[0], cp[1], note_time(cp[2])) if cp is not None else None,
        "cosigners": cosigners,
        "size": size,
        "rows": rows,
        "theirs": theirs,
    }
    return Page("witness.html", "Checkpoints and witnesses", "witness", context, alarm_rows=rows)


async def reconcile(request: web.Request, site: Site, s: Session) -> Page:
    view = site.view
    compare = view.reconcile
    if compare is None:  # the route exists only when the view can reconcile
        raise web.HTTPNotFound
    peer = request.query.get("peer", "").strip().upper()
    window = request.query.get("window", DEFAULT_WINDOW)
    context: dict[str, object] = {
        "peers": view.peers,
        "peer": peer,
        "windows": [(k, label) for k, (label, _) in RECONCILE_WINDOWS.items()],
        "window": window,
        "report": None,
        "error": None,
        "cap": site.limits.reconcile_rows,
    }
    title, template = "Reconcile with a peer", "reconcile.html"
    if not peer:
        return Page(template, title, "reconcile", context)
    if peer not in view.peers:
        return Page(template, title, "", {**context, "error": "Not a peer of this hub."}, 400)
    if window not in RECONCILE_WINDOWS:
        return Page(
            template, title, "", {**context, "error": "Choose a period from the list."}, 400
        )
    span = RECONCILE_WINDOWS[window][1]
    since = 0 if span is None else max(0, view.now_ms() - span)
    try:
        report = await compare(peer, since)
    except (IxbError, OSError, TimeoutError) as exc:
        detail = exc.detail if isinstance(exc, IxbError) else (str(exc) or type(exc).__name__)
        error = f"Reconciliation with {peer} failed: {detail}"
        return Page(template, title, "", {**context, "error": error}, 502)
    context["report"] = report
    read = f"reconcile peer={peer} window={window}"
    return Page(template, f"Reconcile with {report.peer}", read, context)


STATUS_ONLY: Final = frozenset({"mla.request"})
"""Requests whose reply reports a status, not an answer: the hub sees only that an
``mla.status`` came back, never what it says (received, acknowledged … executed),
so such a request stays open until its deadline, marked "status reported"."""


def request_state(r: DeadlineRow) -> str:
    """``open``, ``status reported`` (an MLA request with a status reply), ``answered`` or
    ``refused there`` (the recipient's country's hub refused it)."""
    if r.refused and not r.answered:
        return "refused there"
    if not r.answered:
        return "open"
    return "status reported" if r.type in STATUS_ONLY else "answered"


async def deadlines(request: web.Request, site: Site, s: Session) -> Page:
    now = site.view.now_ms()
    rows = site.view.deadlines(now)

    def closed(r: DeadlineRow) -> bool:
        return request_state(r) in {"answered", "refused there"}

    def listed(
        keep: Callable[[DeadlineRow], bool],
        order: Callable[[DeadlineRow], int],
        when: Callable[[DeadlineRow], str],
    ) -> Sequence[tuple[DeadlineRow, str, str]]:
        return [(r, when(r), request_state(r)) for r in sorted(filter(keep, rows), key=order)]

    context = {
        "overdue": listed(
            lambda r: not closed(r) and r.due_ms < now,
            lambda r: r.due_ms,
            lambda r: "overdue by " + duration(now - r.due_ms),
        ),
        "open": listed(
            lambda r: not closed(r) and r.due_ms >= now,
            lambda r: r.due_ms,
            lambda r: "due in " + duration(r.due_ms - now),
        ),
        "answered": listed(closed, lambda r: -r.due_ms, request_state),
        "reminders": site.view.reminders(),
    }
    return Page("deadlines.html", "Deadlines", "deadlines", context)
