"""Which of a country's hub processes is the active one: a lease in JetStream KV.

A country may run several hub processes (``[hub] instance``, one name per
process, each with its own ``state_dir``). One of them, the *active* hub,
decides, records, checkpoints and answers; the others stand by, copying the
audit log from the ``AUDIT`` stream, and one takes over when the active one
is gone. Who is active is the key ``active`` of the KV bucket
:data:`BUCKET` in the country's JetStream (replicated like its streams):

- **taking it**: ``create`` succeeds only when the key holds nothing (never
  written, or expired); a process finding its own instance name there (it
  was restarted before the key expired) takes it back with a compare-and-set
  on the revision it read. The host's state-directory lock (``ixb hub run``)
  makes the name unique on a host; names must differ between hosts;
- **holding it**: every fifth of the TTL a compare-and-set ``update`` on the
  last revision; JetStream drops the key :data:`LEASE_TTL_S` after the last
  write it stored (the bucket's ``max_age``), so a holder that died, hung or
  lost its servers is gone after at most that long;
- **knowing it is still held**: the holder counts its lease valid until
  :data:`LEASE_TTL_S` - :data:`SAFETY_S` after it *sent* its last successful
  write. The server stored that write later than it was sent, so the key
  outlives the holder's belief by at least :data:`SAFETY_S` (clock rates,
  not clocks, must agree); the hub acknowledges nothing and appends nothing
  to the ``AUDIT`` stream once :meth:`HubLease.valid` is false, and stops.
  The stream's fence (``Nats-Expected-Last-Sequence``, see
  :mod:`broker.hub`) refuses whatever a paused holder still sends;
- **giving it up**: a hub stopped cleanly deletes the key (compare-and-set),
  so a standby takes over within a second instead of the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from transport.streams import TRANSPORT_ERRORS, key_value_bucket

log = structlog.get_logger("ixb.hub")

BUCKET = "ixb_hub"
KEY = "active"
LEASE_TTL_S = 10.0
"""How long the key outlives its last renewal: a dead active hub is replaced after this."""
RENEW_SHARE = 5
"""Renewals per TTL (every 2 s for 10 s)."""
SAFETY_S = 3.0
"""How long before the key can expire the holder stops counting on it."""
CALL_TIMEOUT_S = 2.0


@dataclass(eq=False)
class HubLease:
    """One process's view of the country's ``active`` key."""

    js: JetStreamContext
    instance: str
    replicas: int = 1
    ttl_s: float = LEASE_TTL_S
    safety_s: float = SAFETY_S
    clock: Callable[[], float] = time.monotonic
    _kv: KeyValue | None = field(default=None, init=False)
    _revision: int = field(default=0, init=False)
    _valid_until: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.safety_s < self.ttl_s:
            raise ValueError("the lease's safety margin must be shorter than its TTL")
        if not self.instance or not self.instance.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"hub instance name {self.instance!r}: letters, digits, - and _")

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await key_value_bucket(
                self.js,
                BUCKET,
                replicas=self.replicas,
                ttl=self.ttl_s,
                description="which hub process of this country is active",
            )
        return self._kv

    def valid(self) -> bool:
        """Whether this process may still act as the active hub."""
        return self._revision > 0 and self.clock() < self._valid_until

    def remaining(self) -> float:
        return max(0.0, self._valid_until - self.clock()) if self._revision else 0.0

    async def holder(self) -> str | None:
        """The instance holding the key now (None: nobody, or unreadable)."""
        try:
            kv = await self._bucket()
            async with asyncio.timeout(CALL_TIMEOUT_S):
                entry = await kv.get(KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        except TRANSPORT_ERRORS:
            return None
        return (entry.value or b"").decode("utf-8", "replace") or None

    async def try_acquire(self) -> bool:
        """Take the key if nobody holds it, or if it names this instance (a restart)."""
        kv = await self._bucket()
        sent = self.clock()
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                revision = await kv.create(KEY, self.instance.encode())
        except nats.js.errors.KeyNotFoundError:
            # held when tried, expired by the time nats-py read it back: the next try
            return False
        except nats.js.errors.KeyWrongLastSequenceError:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                try:
                    entry = await kv.get(KEY)
                except nats.js.errors.KeyNotFoundError:
                    return False  # expired in between: the next try creates it
            if entry.value != self.instance.encode() or entry.revision is None:
                return False
            sent = self.clock()
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    revision = await kv.update(KEY, self.instance.encode(), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
        self._held(revision, sent)
        return True

    async def renew(self) -> bool:
        """Extend the lease; False when another process holds the key now (lost for good).

        A renewal that fails for any other reason (a timeout, no leader) raises and
        leaves the lease valid until it runs out: the caller tries again.
        """
        if not self._revision:
            return False
        kv = await self._bucket()
        sent = self.clock()
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                revision = await kv.update(KEY, self.instance.encode(), last=self._revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            self._revision = 0
            return False
        self._held(revision, sent)
        return True

    async def release(self) -> None:
        """Give the key up at once (a clean stop): a standby takes over in a second."""
        revision, self._revision = self._revision, 0
        if not revision or self._kv is None:
            return
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await self._kv.delete(KEY, last=revision)
        except TRANSPORT_ERRORS as exc:
            log.warning("lease_release_failed", error=repr(exc))

    async def hold(self, stop: asyncio.Event) -> None:
        """Renew until ``stop``; return when the lease is lost (taken, or run out)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.ttl_s / RENEW_SHARE)
            if stop.is_set():
                return
            try:
                if not await self.renew():
                    log.error("lease_lost", instance=self.instance, why="taken by another hub")
                    return
            except TRANSPORT_ERRORS as exc:
                why = f"not renewed: {exc!r}"
                if not self.valid():
                    log.error("lease_lost", instance=self.instance, why=why)  # noqa: TRY400
                    return
                log.warning("lease_renew_failed", instance=self.instance, error=repr(exc))

    def _held(self, revision: int, sent: float) -> None:
        self._revision = revision
        self._valid_until = sent + self.ttl_s - self.safety_s
