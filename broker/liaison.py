"""What the liaison pages may read of a running hub: a read-only view built from its parts.

The hub does not know the pages; :func:`liaison_view` adapts its audit log,
witness state, open requests and peers to what :mod:`broker.web` reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from broker.hub import Hub
from broker.web.view import (
    AuditReader,
    DeadlineRow,
    LiaisonView,
    PeerStep,
    ReconcileFn,
    ReconcileReport,
    ReminderRow,
    UserRecord,
    WitnessRow,
)
from protocols.audit import decode_entry
from protocols.checkpoint import log_origin, witness_name
from protocols.errors import IxbError


class HubView:
    """A running hub as the pages see it: reads only, and each read of the log is audited."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        config = hub.config
        self.hub_id = str(config.hub_id)
        self.peers: Sequence[str] = sorted(config.links)
        self.secure_cookies = config.http.secure_cookies
        self.trusted_proxies = frozenset(config.http.trusted_proxies)
        self.reconcile: ReconcileFn | None = self._reconcile

    @property
    def users(self) -> Mapping[str, UserRecord]:
        """The hub's live users (config and registry): a change applies at the next request."""
        return {
            u.name: UserRecord(name=u.name, role=u.role, password_hash=u.password_hash)
            for u in self._hub.users.values()
        }

    @property
    def audit(self) -> AuditReader:
        return self._hub.audit_log

    def now_ms(self) -> int:
        return self._hub.clock()

    def record_read(self, user: str, what: str, /) -> None:
        self._hub.audit.record_read(user, what)

    def witness_status(self) -> Sequence[WitnessRow]:
        return witness_rows(self._hub)

    def deadlines(self, now_ms: int, /) -> Sequence[DeadlineRow]:
        del now_ms  # the store orders open requests by deadline; the page compares
        return self._hub.store.open_requests()

    def reminders(self) -> Sequence[ReminderRow]:
        return self._hub.store.reminders()

    def peer_steps(self, msg_ids: Sequence[str], /) -> Sequence[PeerStep]:
        return [
            PeerStep(origin, e.index, e.msg_id, e.event, e.at_ms, _code(e.data))
            for origin, e in self._hub.store.peer_entries_for(msg_ids)
            if e.msg_id is not None
        ]

    async def _reconcile(self, peer: str, since_ms: int) -> ReconcileReport:
        r = await asyncio.to_thread(self._hub.audit.reconcile, peer, since_ms)
        return ReconcileReport(
            peer=peer,
            since_ms=r.since_ms,
            only_here=[(i.msg_id, i.event, i.at_ms) for i in r.only_here],
            only_there=[(i.msg_id, i.event, i.at_ms) for i in r.only_there],
            different=[(m, f"{d} differs", "see their shared entry") for m, d in r.different],
            matched=r.matched,
        )


def _code(data: bytes) -> str | None:
    try:
        return decode_entry(data).code
    except IxbError:
        return None


def liaison_view(hub: Hub) -> LiaisonView:
    """This hub's log, witness state, deadlines and peers, for the pages."""
    return HubView(hub)


def witness_rows(hub: Hub) -> list[WitnessRow]:
    """Both directions of witnessing with each peer, as this hub last saw them."""
    log = hub.audit_log
    rows: list[WitnessRow] = []
    alarms = {origin for origin, _at, _d in log.alarms()}
    latest = log.latest_checkpoint()
    cosigned = (
        {who: at for who, _size, _note, at in log.cosignatures(latest[0])}
        if latest is not None
        else {}
    )
    for peer in sorted(hub.config.links):
        at = cosigned.get(witness_name(peer))
        if latest is not None and at is not None:
            rows.append(
                WitnessRow(
                    peer,
                    "they witness us",
                    latest[0],
                    latest[1].hex(),
                    at,
                    "cosigned our latest checkpoint",
                )
            )
        else:
            rows.append(
                WitnessRow(
                    peer,
                    "they witness us",
                    None,
                    None,
                    None,
                    "not yet cosigned our latest checkpoint",
                )
            )
        seen = log.last_witnessed(log_origin(peer))
        alarm = log_origin(peer) in alarms
        status = "ALARM: log rewritten or forked" if alarm else "consistent"
        if seen is None:
            rows.append(
                WitnessRow(peer, "we witness them", None, None, None, "nothing seen yet", alarm)
            )
        else:
            rows.append(
                WitnessRow(peer, "we witness them", seen[0], seen[1].hex(), seen[3], status, alarm)
            )
    return rows
