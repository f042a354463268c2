"""Overdue reminders: a hub reminds its own agencies of requests past due (SPEC §6).

Each hub knows every request it carried (:class:`~broker.store.HubStore`, with
the due time of the agreement with the other country). When one is past due
and its addressed owner has not answered (only the owner's answer closes it:
:func:`~protocols.receipts.closes_request`), the hub sends a hub-signed
``overdue`` receipt, once, to each party of its own country: the requester's
hub to the requester, the owner's hub to the owner. Nothing crosses a border.

A reminder is sealed and kept (``sealed_receipts``) before it is published, so
one planned again after a crash is the same bytes (stored once by JetStream),
recorded once in the audit log (the ``delivered`` entry of the receipt, whose
``in_reply_to`` names the request and whose detail says "overdue reminder"), and
marked in ``reminders``: a restarted hub does not remind twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import structlog

from broker.auditing import HubAudit
from broker.metrics import Metrics
from broker.plan import RECEIPT_TTL_MS, Publish, receipt_publish
from broker.pull import sleep_or_stop
from broker.storage_health import STORAGE_ERRORS, StorageHealth
from broker.store import HubStore, OpenRequest
from protocols.envelope import seal_envelope
from protocols.errors import IxbError
from protocols.fields import utc_iso
from protocols.identifiers import Principal, parse_message_id, parse_principal
from protocols.keys import Identity, PublicIdentity
from protocols.messages import Receipt, ReceiptStatus
from transport.connect import StateLog
from transport.streams import TRANSPORT_ERRORS

log = structlog.get_logger("ixb.hub.reminders")

REMINDERS_SINCE = "reminders_since"
"""Store meta key: when this hub began reminding (requests due earlier are not reminded)."""
MAX_PERIOD_S = 30.0
MIN_PERIOD_S = 0.25


def check_period_s(shortest_tier_ms: int) -> float:
    """How often to look for requests past due: a quarter of the shortest answer time,
    between :data:`MIN_PERIOD_S` and :data:`MAX_PERIOD_S`."""
    return min(MAX_PERIOD_S, max(MIN_PERIOD_S, shortest_tier_ms / 4000))


def local_parties(request: OpenRequest, country: str) -> list[Principal]:
    """Whom ``country``'s hub reminds: the requester if it is ours, and our addressees."""
    sender = parse_principal(request.sender)
    parties = [sender] if sender.country == country and not sender.is_hub else []
    for text in request.recipients:
        r = parse_principal(text)
        if r.country == country and r not in parties:
            parties.append(r)
    return parties


def reminder_dedup(request: OpenRequest, party: Principal) -> str:
    """The reminder's de-dup id (and its key in ``sealed_receipts``): one per request and party."""
    key = "\0".join(["overdue", request.sender, request.msg_id, str(party)])
    return "rcpt:" + hashlib.sha256(key.encode()).hexdigest()[:40]


def seal_reminder(identity: Identity, request: OpenRequest, to: PublicIdentity, now: int) -> bytes:
    """The hub-signed ``overdue`` receipt about ``request``, encrypted to ``to``."""
    body = Receipt(
        for_id=parse_message_id(request.msg_id),
        status=ReceiptStatus.OVERDUE,
        by=str(identity.principal),
        at_ms=now,
        due_ms=request.due_ms,
        detail=f"{request.type} ({request.priority}) was due {utc_iso(request.due_ms)}",
    )
    return seal_envelope(
        sender=identity,
        recipients=[to],
        body=body,
        now_ms=now,
        ttl_ms=RECEIPT_TTL_MS,
        in_reply_to=body.for_id,
    )


@dataclass
class Reminders:
    """The hub's reminder loop; the hub lends it its store, audit, keys and publisher."""

    identity: Identity
    store: HubStore
    audit: HubAudit
    storage: StorageHealth
    metrics: Metrics
    encryption_key: Callable[[Principal, int], PublicIdentity]
    publish: Callable[[Publish], Awaitable[object]]
    clock: Callable[[], int]
    period_s: float = MAX_PERIOD_S

    async def loop(self, stop: asyncio.Event) -> None:
        """Every ``period_s``, :meth:`remind`; failures logged once a spell, tried again."""
        failures = StateLog("reminder_failed", logger=log)
        while not stop.is_set():
            try:
                await self.remind()
            except TRANSPORT_ERRORS as exc:
                failures.failed(exc)
            except STORAGE_ERRORS as exc:
                self.storage.failed("reminders", exc)
            else:
                failures.ok()
                self.storage.ok("reminders")
            await sleep_or_stop(stop, self.period_s)

    async def remind(self) -> int:
        """Remind our parties of every request past due and unanswered; how many were sent."""
        now = self.clock()
        country = self.identity.principal.country
        since = await asyncio.to_thread(self._since, now)
        sent = 0
        for request in await asyncio.to_thread(self.store.past_due, now, since):
            msg_id = parse_message_id(request.msg_id)
            if request.closed:
                outcome = "answered" if request.answered else "refused"
                await asyncio.to_thread(self.store.deadline_done, request.sender, msg_id, outcome)
                continue
            done = await asyncio.to_thread(self.store.reminded_parties, request.sender, msg_id)
            missing = False
            for party in local_parties(request, country):
                if str(party) in done:
                    continue
                if await self._remind(request, party, now):
                    sent += 1
                else:
                    missing = True
            if not missing:
                await asyncio.to_thread(
                    self.store.deadline_done, request.sender, msg_id, "reminded"
                )
        return sent

    def _since(self, now: int) -> int:
        """Requests due before the hub first reminded are left alone: a hub upgraded with a
        month of requests in its store does not remind of all of them at once."""
        since = self.store.meta(REMINDERS_SINCE)
        if since is None:
            self.store.set_meta(REMINDERS_SINCE, str(now))
            return now
        return int(since)

    async def _remind(self, request: OpenRequest, party: Principal, now: int) -> bool:
        """One reminder, sealed (or the one sealed before), published, recorded; False if
        ``party`` has no current key (tried again next time)."""
        dedup = reminder_dedup(request, party)
        data = await asyncio.to_thread(self.store.sealed_receipt, dedup)
        if data is None:
            try:
                key = self.encryption_key(party, now)
            except IxbError as exc:
                log.warning(
                    "reminder_unroutable", msg_id=request.msg_id, to=str(party), code=exc.code
                )
                return False
            fresh = seal_reminder(self.identity, request, key, now)
            kept = await asyncio.to_thread(self.store.keep_sealed_receipts, [(dedup, fresh)], now)
            data = fresh if kept else await asyncio.to_thread(self.store.sealed_receipt, dedup)
            if data is None:
                return False
        p = receipt_publish(self.identity.principal, dedup, data, now)
        await self.publish(p)
        if p.entry is not None:
            detail = f"overdue reminder: {request.type} due {utc_iso(request.due_ms)}"
            entry = msgspec.structs.replace(p.entry, detail=detail)
            await asyncio.to_thread(self.audit.record, [entry])
        await asyncio.to_thread(
            self.store.record_reminder,
            request.sender,
            parse_message_id(request.msg_id),
            str(party),
            now,
            request.due_ms,
        )
        self.metrics.inc("ixb_receipts_total", status=ReceiptStatus.OVERDUE.value)
        log.info("overdue_reminded", msg_id=request.msg_id, to=str(party), type=request.type)
        return True
