"""``ixb overdue --config HUB.toml``: the requests this hub carried that are past due.

Read from the hub's store (it may be running: SQLite readers do not block it),
with the reminders it sent. A request is closed only by its addressed owner's
answer (:func:`~protocols.receipts.closes_request`, applied by
:meth:`~broker.store.HubStore.open_requests`).
"""

from __future__ import annotations

import argparse
from typing import Any

from broker.config import load_config
from broker.store import HubStore, OpenRequest, Reminder
from protocols.fields import duration_text, utc_iso
from transport.cliout import emit
from transport.clock import wall_ms

MAX_ROWS = 10_000


def hub_overdue(store: HubStore, now: int) -> tuple[list[OpenRequest], list[Reminder]]:
    """Unanswered requests past due, earliest first, and the reminders sent, newest first."""
    rows = [r for r in store.open_requests(MAX_ROWS) if not r.closed and r.due_ms <= now]
    return rows, store.reminders(MAX_ROWS)


def cmd_hub_overdue(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = HubStore(config.path(config.hub.state_dir) / "hub.sqlite")
    now = wall_ms()
    try:
        rows, reminders = hub_overdue(store, now)
    finally:
        store.close()
    by_request: dict[tuple[str, str], list[Reminder]] = {}
    for r in reminders:
        by_request.setdefault((r.sender, r.msg_id), []).append(r)

    def item(r: OpenRequest) -> dict[str, Any]:
        sent = by_request.get((r.sender, r.msg_id), [])
        return {
            "id": r.msg_id,
            "type": r.type,
            "sender": r.sender,
            "recipients": list(r.recipients),
            "priority": r.priority,
            "created": utc_iso(r.created_ms),
            "due": utc_iso(r.due_ms),
            "overdue_by": duration_text(now - r.due_ms),
            "overdue_ms": now - r.due_ms,
            "reminded": [{"party": x.party, "at": utc_iso(x.at_ms)} for x in sent],
        }

    items = [item(r) for r in rows]
    lines = [
        f"  {i['id']}  {i['type']} {i['sender']} → {', '.join(i['recipients'])} [{i['priority']}]"
        f" due {i['due']}: overdue by {i['overdue_by']}"
        + (f", reminded {', '.join(x['party'] for x in i['reminded'])}" if i["reminded"] else "")
        for i in items
    ]
    human = (
        f"{config.hub_id}: {len(items)} overdue\n" + "\n".join(lines)
        if items
        else f"{config.hub_id}: nothing overdue"
    )
    emit(
        args,
        human,
        {
            "hub": str(config.hub_id),
            "now": utc_iso(now),
            "overdue": items,
            "reminders": [
                {
                    "id": x.msg_id,
                    "sender": x.sender,
                    "party": x.party,
                    "at": utc_iso(x.at_ms),
                    "due": utc_iso(x.due_ms),
                }
                for x in reminders
            ],
        },
    )
    return 0
