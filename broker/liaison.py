"""What the liaison pages may read of a running hub: a read-only view built from its parts.

The hub does not know the pages; :func:`liaison_view` adapts its audit log,
witness state, open requests and peers to what :mod:`broker.web` reads.
"""

from __future__ import annotations

import asyncio

from broker.hub import Hub
from broker.web.view import LiaisonContext, ReconcileReport, UserRecord, WitnessRow
from protocols.checkpoint import log_origin, witness_name


def liaison_view(hub: Hub) -> LiaisonContext:
    """This hub's log, witness state, deadlines and peers, for the pages."""

    async def reconcile(peer: str) -> ReconcileReport:
        r = await asyncio.to_thread(hub.audit.reconcile, peer)
        return ReconcileReport(
            peer=peer,
            since_ms=r.since_ms,
            only_here=[(i.msg_id, i.event, i.at_ms) for i in r.only_here],
            only_there=[(i.msg_id, i.event, i.at_ms) for i in r.only_there],
            different=[(m, f"{d} differs", "see their shared entry") for m, d in r.different],
            matched=r.matched,
        )

    config = hub.config
    return LiaisonContext(
        hub_id=str(config.hub_id),
        audit=hub.audit_log,
        users={
            u.name: UserRecord(name=u.name, role=u.role, password_hash=u.password_hash)
            for u in config.user
        },
        clock=hub.clock,
        record_read=hub.audit.record_read,
        witness_status=lambda: witness_rows(hub),
        deadlines=lambda _now: hub.store.open_requests(),
        reconcile=reconcile,
        peers=sorted(config.links),
        secure_cookies=config.http.secure_cookies,
    )


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
