"""``ixb overdue`` for an agency: what it asked that is overdue, and what it was asked.

From the agency's own records only: the requests it sent and the answers it
gave (the state file, :class:`~agency_client.commands.LocalState`), the
requests and answers it received (the message store), and the ``overdue``
reminders its hub sent (receipts). A request is closed only by its addressed
owner's answer (:func:`~protocols.receipts.closes_request`), or by a hub's
refusal of it (a signed ``rejected`` receipt: nobody will answer it). Its due time is
the one its hub's reminder states (the agreement with the other country);
before a reminder, the default answer times (SPEC §6).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agency_client.commands import LocalState, _run, take_receipts
from agency_client.msgstore import MessageStore, open_store
from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient
from protocols.deadlines import due_ms as default_due_ms
from protocols.fields import duration_text, utc_iso
from protocols.handling import Priority
from protocols.identifiers import (
    Principal,
    format_message_id,
    parse_message_id,
    parse_principal,
)
from protocols.messages import REQUEST_TYPES
from protocols.receipts import closes_request
from transport.cliout import emit
from transport.clock import wall_ms


@dataclass(frozen=True, slots=True)
class OverdueRequest:
    msg_id: str
    type: str
    direction: str  # "asked" (we sent it) or "asked_of_me" (we were sent it)
    counterpart: tuple[str, ...]
    priority: str
    created_ms: int
    due_ms: int
    due_from: str  # "reminder" or "default"
    reminded_ms: int | None

    def as_json(self, now: int) -> dict[str, Any]:
        return {
            "id": self.msg_id,
            "type": self.type,
            "direction": self.direction,
            "counterpart": list(self.counterpart),
            "priority": self.priority,
            "created": utc_iso(self.created_ms),
            "due": utc_iso(self.due_ms),
            "due_from": self.due_from,
            "overdue_by": duration_text(now - self.due_ms),
            "overdue_ms": now - self.due_ms,
            "reminded": None if self.reminded_ms is None else utc_iso(self.reminded_ms),
        }

    def open_json(self, now: int) -> dict[str, Any]:
        """A request still open and not yet due (``--open``)."""
        data = self.as_json(now)
        del data["overdue_by"], data["overdue_ms"]
        return {**data, "due_in": duration_text(self.due_ms - now), "due_in_ms": self.due_ms - now}

    def line(self, now: int) -> str:
        towards = "to" if self.direction == "asked" else "from"
        reminded = "" if self.reminded_ms is None else f", reminded {utc_iso(self.reminded_ms)}"
        when = (
            f"overdue by {duration_text(now - self.due_ms)}"
            if self.due_ms <= now
            else f"due in {duration_text(self.due_ms - now)}"
        )
        return (
            f"  {self.msg_id}  {self.type} {towards} {', '.join(self.counterpart)}"
            f" [{self.priority}] due {utc_iso(self.due_ms)}: {when}{reminded}"
        )


def open_requests(
    me: Principal, state: LocalState, store: MessageStore
) -> tuple[list[OverdueRequest], list[tuple[str, str, int, int]]]:
    """Unanswered requests both ways (due or not), earliest due first, and the reminders
    about requests this agency has no record of."""
    reminders = state.reminders()
    found: list[OverdueRequest] = []
    known: set[str] = set()
    for msg_id, kind, recipients, created, priority in state.sent_requests():
        text = format_message_id(msg_id)
        known.add(text)
        owners = [parse_principal(r) for r in recipients]
        answered = any(
            closes_request(
                m.type,
                parse_principal(m.sender),
                [me],
                request_type=kind,
                request_sender=me,
                request_recipients=owners,
            )
            for m in store.replies_to(text)
        )
        item = _item(
            text,
            kind,
            direction="asked",
            counterpart=recipients,
            priority=priority,
            created=created,
            reminder=reminders.get(text),
        )
        # a hub refused it (ours, or the owner's): nobody will answer it, it is not open
        refused = any(r["status"] == "rejected" for r in state.receipts(text))
        if not answered and not refused:
            found.append(item)
    for m in store.of_types(REQUEST_TYPES):
        known.add(m.id)
        asker = parse_principal(m.sender)
        answered = any(
            closes_request(
                kind,
                me,
                [parse_principal(r) for r in to],
                request_type=m.type,
                request_sender=asker,
                request_recipients=[me],
            )
            for kind, to in state.answers_given(parse_message_id(m.id))
        )
        item = _item(
            m.id,
            m.type,
            direction="asked_of_me",
            counterpart=[m.sender],
            priority=m.priority,
            created=m.created,
            reminder=reminders.get(m.id),
        )
        if not answered:
            found.append(item)
    others = [(i, s, a, d) for i, (s, a, d) in sorted(reminders.items()) if i not in known]
    return sorted(found, key=lambda r: r.due_ms), others


def _item(
    msg_id: str,
    kind: str,
    *,
    direction: str,
    counterpart: Sequence[str],
    priority: str,
    created: int,
    reminder: tuple[str, int, int] | None,
) -> OverdueRequest:
    if reminder is not None:
        due, source, reminded = reminder[2], "reminder", reminder[1]
    else:
        due, source, reminded = default_due_ms(created, Priority(priority)), "default", None
    return OverdueRequest(
        msg_id, kind, direction, tuple(counterpart), priority, created, due, source, reminded
    )


def cmd_overdue(args: argparse.Namespace) -> int:
    """Take new reminders from the inbox (unless ``--offline``), then list from local records
    (with ``--open``, also the requests still open and not yet due)."""
    profile = load_profile(args.profile)

    if not args.offline:

        async def fetch(client: AgencyClient) -> int:
            state = LocalState(profile)
            state.load_sent(client)
            try:
                await take_receipts(client, state, args.wait)
            finally:
                state.close()
            return 0

        _run(args, fetch)
    now = wall_ms()
    state = LocalState(profile)
    store = open_store(profile, [], now)  # metadata only: no passphrase needed
    try:
        unanswered, others = open_requests(profile.principal, state, store)
    finally:
        state.close()
        store.close()
    found = [r for r in unanswered if r.due_ms <= now]
    not_due = [r for r in unanswered if r.due_ms > now] if args.open else []
    asked = [r for r in found if r.direction == "asked"]
    of_me = [r for r in found if r.direction == "asked_of_me"]
    lines = []
    if asked:
        lines += [f"asked, overdue ({len(asked)}):", *(r.line(now) for r in asked)]
    if of_me:
        lines += [f"asked of me, overdue ({len(of_me)}):", *(r.line(now) for r in of_me)]
    if not_due:
        lines += [f"open, not yet due ({len(not_due)}):", *(r.line(now) for r in not_due)]
    open_data = {"open": [r.open_json(now) for r in not_due]} if args.open else {}
    if others:
        lines += [f"reminders about other requests ({len(others)}):"]
        lines += [
            f"  {i}  due {utc_iso(d)}: overdue by {duration_text(now - d)}, reminded by {s}"
            for i, s, _a, d in others
        ]
    if args.open and not found and not others:
        lines.insert(0, "nothing overdue")
    emit(
        args,
        "\n".join(lines) or "nothing overdue",
        {
            "agency": str(profile.principal),
            "now": utc_iso(now),
            "asked": [r.as_json(now) for r in asked],
            "asked_of_me": [r.as_json(now) for r in of_me],
            "other_reminders": [
                {
                    "id": i,
                    "signer": s,
                    "reminded": utc_iso(a),
                    "due": utc_iso(d),
                    "overdue_by": duration_text(now - d),
                }
                for i, s, a, d in others
            ],
            **open_data,
        },
    )
    return 0
