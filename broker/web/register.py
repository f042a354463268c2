"""The exchange register: one row per message, with its status at this hub and its peers.

In: an :class:`~broker.audit.search.AuditQuery`, a row filter (prefix
search), a page anchor (``before``/``after`` leaf index) and the
:class:`~broker.web.view.LiaisonView`. Out: :class:`Register` (rows newest
first, and the anchors of the older and newer pages). Guaranteed: a message
is placed on the page holding its newest matching entry (its *head*), so
paging either way shows each message once; audit reads, exports, entries
without a message and receipts are left out (the "every entry" view shows
them), but a message's read receipts and replies, linked to it by their
entries' ``in_reply_to`` (SPEC §13.1), show in its status and steps; at most
``scan_cap`` entries are read per page, and the page says so when it stopped
there. Runs in a worker thread (SQLite reads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from broker.audit.records import StoredEntry
from broker.audit.search import AuditQuery
from broker.web.format import utc
from broker.web.view import AuditReader, LiaisonView, PeerStep
from protocols.audit import decode_entry
from protocols.errors import IxbError
from protocols.identifiers import parse_principal

__all__ = [
    "HIDDEN_EVENTS",
    "HIDDEN_TYPES",
    "Answer",
    "Register",
    "RegisterRow",
    "answers_to",
    "read_register",
    "shown",
]

HIDDEN_EVENTS: Final = frozenset({"audit_read", "audit_export"})
HIDDEN_TYPES: Final = frozenset({"receipt"})
_CHUNK: Final = 500

Keep = Callable[[StoredEntry], bool]


def shown(e: StoredEntry) -> bool:
    """Whether the register (not the every-entry view) shows this entry."""
    return e.msg_id is not None and e.event not in HIDDEN_EVENTS and e.type not in HIDDEN_TYPES


@dataclass(frozen=True)
class Answer:
    """A read receipt or reply to a message, where a hub first recorded it.

    ``read`` is an agency's receipt: an agency may state nothing but ``read``
    (SPEC §5, ``receipt``), so its type and signer say it without its body.
    """

    msg_id: str  # the answer's own id
    type: str
    sender: str
    hub: str  # "here", or the peer country that shared its entry
    at_ms: int

    @property
    def read(self) -> bool:
        return self.type == "receipt"

    @property
    def what(self) -> str:
        return "read" if self.read else "answered"

    @property
    def extra(self) -> str:
        return f"by {self.sender}" + ("" if self.read else f" ({self.type})")


def _answer(e: StoredEntry) -> Answer | None:
    """The answer an entry records: one an agency sent and no hub refused, else None."""
    if e.msg_id is None or e.sender is None or e.type is None or e.code is not None:
        return None  # a refused answer says nothing about the message
    try:
        if parse_principal(e.sender).is_hub:
            return None
    except IxbError:
        return None
    return Answer(e.msg_id, e.type, e.sender, "here", e.at_ms)


def answers_to(
    view: LiaisonView, recipients: Mapping[str, Collection[str]], cap: int
) -> dict[str, list[Answer]]:
    """The read receipts and replies to each message, oldest first: one per answer and hub.

    ``recipients`` maps each message id to its recipients: only their answers
    count (a hub that no longer knows a message cannot refuse a stranger's
    receipt for it). Found through this hub's entries of each answer (their
    ``in_reply_to``); the peers' shared entries of those answers add where a
    peer recorded them.
    """
    audit = view.audit
    out: dict[str, list[Answer]] = {}
    known: dict[str, tuple[str, str, str]] = {}  # answer id → (original, type, sender)
    for m, allowed in recipients.items():
        first: dict[str, Answer] = {}
        for e in audit.search(AuditQuery(in_reply_to=m), limit=cap):  # newest first
            a = _answer(e)
            if a is not None and a.sender in allowed:
                first[a.msg_id] = a  # the oldest entry is the last one written here
                known[a.msg_id] = (m, a.type, a.sender)
        out[m] = list(first.values())
    if known:
        theirs: dict[tuple[str, str], PeerStep] = {}
        for p in view.peer_steps(sorted(known)):  # oldest first: keep each hub's first
            if p.code is None:
                theirs.setdefault((p.msg_id, p.hub), p)
        for (answer, hub), p in theirs.items():
            original, type_, sender = known[answer]
            out[original].append(Answer(answer, type_, sender, hub, p.at_ms))
    for found in out.values():
        found.sort(key=lambda a: (a.at_ms, a.hub != "here", a.hub))
    return out


@dataclass(frozen=True)
class RegisterRow:
    """One message: what it is, and every step at this hub and at its peers, oldest first."""

    msg_id: str
    type: str | None
    sender: str | None
    recipients: tuple[str, ...]
    case_ref: str | None
    head: int  # leaf index of its newest matching entry here
    here: Sequence[StoredEntry]
    there: Sequence[PeerStep]
    answers: Sequence[Answer] = ()

    @property
    def first_ms(self) -> int:
        return min([e.at_ms for e in self.here] + [p.at_ms for p in self.there])

    @property
    def last_ms(self) -> int:
        return max([e.at_ms for e in self.here] + [p.at_ms for p in self.there])

    @property
    def refused(self) -> bool:
        return any(e.code for e in self.here) or any(p.code for p in self.there)

    @property
    def status(self) -> str:
        """One line: the furthest any hub got, and who refused it."""
        for e in self.here:
            if e.event == "rejected":
                return f"rejected here ({e.code})"
        for p in self.there:
            if p.event == "rejected":
                return f"rejected by {p.hub} ({p.code})"
        read = _first_by_sender(a for a in self.answers if a.read)
        answered = _first_by_sender(a for a in self.answers if not a.read)
        if read or answered:
            said = [f"read by {a.sender} at {utc(a.at_ms)} UTC" for a in read]
            said += [f"answered by {a.sender} ({a.type}) at {utc(a.at_ms)} UTC" for a in answered]
            return "; ".join(said)
        delivered = [p.hub for p in self.there if p.event == "delivered"]
        if any(e.event == "delivered" for e in self.here):
            delivered.insert(0, "here")
        if delivered:
            return "delivered " + ", ".join(f"at {d}" if d != "here" else d for d in delivered)
        relayed = sorted({e.peer for e in self.here if e.event == "relayed" and e.peer})
        if relayed:
            accepted = sorted({p.hub for p in self.there if p.event == "accepted"})
            if accepted:
                return "accepted by " + ", ".join(accepted)
            return "relayed to " + ", ".join(relayed)
        if any(e.event == "accepted" for e in self.here):
            return "accepted here"
        if any(e.event == "duplicate" for e in self.here):
            return "duplicate dropped"
        return self.here[-1].event if self.here else ""

    def steps(self) -> list[tuple[int, str, str, str | None]]:
        """Every step of both hubs, oldest first: (at_ms, hub, event, code and why, or peer)."""
        out = [(e.at_ms, "here", e.event, _extra(e)) for e in self.here]
        out += [(p.at_ms, p.hub, p.event, p.code) for p in self.there]
        out += [(a.at_ms, a.hub, a.what, a.extra) for a in self.answers]
        return sorted(out, key=lambda s: s[0])


def _first_by_sender(answers: Iterable[Answer]) -> list[Answer]:
    """Each sender's earliest answer, in time order (several hubs record the same one)."""
    first: dict[str, Answer] = {}
    for a in sorted(answers, key=lambda a: a.at_ms):
        first.setdefault(a.sender, a)
    return list(first.values())


def _extra(e: StoredEntry) -> str | None:
    if not e.code:
        return f"to {e.peer}" if e.event == "relayed" and e.peer else e.peer
    try:
        detail = decode_entry(e.data).detail
    except IxbError:
        detail = None
    return f"{e.code}: {detail}" if detail else e.code


@dataclass(frozen=True)
class Register:
    rows: Sequence[RegisterRow]
    older: int | None  # ``before`` of the next older page, if any
    newer: int | None  # ``after`` of the next newer page, if any
    scanned_to: int | None  # the scan stopped here (scan_cap) before the page was full


def read_register(
    view: LiaisonView,
    query: AuditQuery,
    keep: Keep,
    *,
    before: int | None,
    after: int | None,
    rows: int,
    scan_cap: int,
    trail_cap: int,
) -> Register:
    """One page of the register (see the module's docstring)."""
    audit = view.audit
    match: Keep = lambda e: shown(e) and keep(e)  # noqa: E731

    def later_match(msg_id: str, above: int) -> bool:
        """Whether ``msg_id`` has a matching entry above leaf ``above``."""
        q = dataclasses.replace(query, msg_id=msg_id, after_index=above, before_index=None)
        return any(match(e) for e in audit.search(q, limit=trail_cap))

    if after is None:
        page, older, newer, scanned_to = _older(
            audit, match, later_match, query, before=before, rows=rows, scan_cap=scan_cap
        )
    else:
        page, older, newer, scanned_to = _newer(
            audit, match, later_match, query, after=after, rows=rows, scan_cap=scan_cap
        )
    return Register(_rows(view, page, trail_cap), older, newer, scanned_to)


def _older(
    audit: AuditReader,
    match: Keep,
    later_match: Callable[[str, int], bool],
    query: AuditQuery,
    *,
    before: int | None,
    rows: int,
    scan_cap: int,
) -> tuple[list[tuple[str, int]], int | None, int | None, int | None]:
    """The page of heads below ``before`` (or the newest page), scanning down."""
    size = audit.size
    heads: dict[str, int] = {}
    scanned_to = None
    cursor = min(size, before) if before is not None else size
    seen: set[str] = set()
    read = 0
    while len(heads) <= rows and cursor > 0:
        if read >= scan_cap:
            scanned_to = cursor
            break
        chunk = min(_CHUNK, scan_cap)
        found = audit.search(dataclasses.replace(query, before_index=cursor), limit=chunk)
        read += len(found)
        for e in found:
            cursor = e.index
            if not match(e) or e.msg_id is None or e.msg_id in seen:
                continue
            seen.add(e.msg_id)
            if before is not None and later_match(e.msg_id, before - 1):
                continue  # its head is on a newer page
            heads[e.msg_id] = e.index
            if len(heads) > rows:
                break
        if len(found) < chunk:
            break
    ordered = sorted(heads.items(), key=lambda kv: -kv[1])
    more_older = len(ordered) > rows
    page = ordered[:rows]
    older = page[-1][1] if more_older and page else scanned_to  # the scan goes on from there
    newer = page[0][1] if before is not None and page else None
    if before is not None and not page:
        newer = before - 1 if before > 0 else None
    return page, older, newer, scanned_to


def _newer(
    audit: AuditReader,
    match: Keep,
    later_match: Callable[[str, int], bool],
    query: AuditQuery,
    *,
    after: int,
    rows: int,
    scan_cap: int,
) -> tuple[list[tuple[str, int]], int | None, int | None, int | None]:
    """The page of the oldest heads above ``after``, in growing windows."""
    size = audit.size
    scanned_to = None
    window = max(rows * 4, _CHUNK)
    while True:
        hi = min(size, after + 1 + window)
        q = dataclasses.replace(query, after_index=after, before_index=hi)
        found = [e for e in audit.search(q, limit=min(window, 100_000)) if match(e)]
        last: dict[str, int] = {}
        for e in found:  # newest first: the first seen is the message's newest here
            if e.msg_id is not None and e.msg_id not in last:
                last[e.msg_id] = e.index
        if hi < size:
            last = {m: i for m, i in last.items() if not later_match(m, hi - 1)}
        ascending = sorted(last.items(), key=lambda kv: kv[1])
        if len(ascending) >= rows or hi >= size or window >= scan_cap:
            if window >= scan_cap and len(ascending) < rows and hi < size:
                scanned_to = hi
            break
        window *= 2
    page = sorted(ascending[:rows], key=lambda kv: -kv[1])
    top_is_newest = len(ascending) <= rows and hi >= size
    newer = page[0][1] if page and not top_is_newest else None
    if scanned_to is not None:
        newer = scanned_to - 1  # nothing more below it: the next newer page starts there
    older = page[-1][1] if page else (after + 1 if after + 1 < size else None)
    return page, older, newer, scanned_to


def _rows(view: LiaisonView, page: Sequence[tuple[str, int]], trail_cap: int) -> list[RegisterRow]:
    if not page:
        return []
    audit = view.audit
    there: dict[str, list[PeerStep]] = {}
    for step in view.peer_steps([m for m, _ in page]):
        there.setdefault(step.msg_id, []).append(step)
    trails = {}
    for msg_id, _ in page:
        trail = audit.search(AuditQuery(msg_id=msg_id), limit=trail_cap)[::-1]
        trails[msg_id] = [e for e in trail if shown(e)]
    answers = answers_to(
        view, {m: {r for e in here for r in e.recipients} for m, here in trails.items()}, trail_cap
    )
    out = []
    for msg_id, head in page:
        here = trails[msg_id]
        first = next((e for e in here if e.type), here[0] if here else None)
        out.append(
            RegisterRow(
                msg_id=msg_id,
                type=first.type if first else None,
                sender=first.sender if first else None,
                recipients=first.recipients if first else (),
                case_ref=next((e.case_ref for e in here if e.case_ref), None),
                head=head,
                here=here,
                there=there.get(msg_id, []),
                answers=answers.get(msg_id, []),
            )
        )
    return out
