"""The hub's side of the ``AUDIT`` stream: copying its leaves there, and following it.

:mod:`broker.audit.shipping` says what a batch is. Here:

- **checked at start** (:meth:`AuditCopy.check_at_start`): the stream's last
  batch must end within the local log and hold its leaves, else the hub
  refuses to start (``ixb audit rebuild``);
- **copied before acknowledging** (:meth:`AuditCopy.ship`): the settle path
  acks a message only once the leaves recorded so far are in the stream, so
  whatever the hub acknowledged survives its disk and is in the log of the
  hub process that takes over (:mod:`broker.lease`). Concurrent callers
  share one copy (one lock; each ships everything appended so far);
- **fenced**: every batch is published with ``Nats-Expected-Last-Sequence``,
  the stream sequence this process last wrote or read. A second writer (a
  deposed active hub that does not know it yet, a second hub started on the
  same country by mistake) has its batch refused; a refusal whose stored
  batch is this log's own (an earlier try whose answer was lost: the same
  leaves, or fewer when more were appended since) is taken as the progress
  it is, and copying goes on after it. Anything else deposes this process:
  :attr:`AuditCopy.deposed` is set, nothing more is acked or appended, and
  the hub stops;
- **followed** (:meth:`AuditCopy.follow`): a standby hub appends the stream's
  batches to its own log as they come, so when it takes over its log is the
  country's, and it verifies every leaf it already held against the stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.js.client import JetStreamContext

from broker.audit import shipping
from broker.audit.log import AuditLog
from broker.audit.shipping import Batch
from broker.auditing import to_record
from broker.metrics import Metrics
from broker.storage_health import STORAGE_ERRORS
from protocols import subjects
from protocols.audit import decode_entry
from protocols.errors import AuditStreamError
from transport.connect import StateLog
from transport.streams import AUDIT_STREAM, TRANSPORT_ERRORS

log = structlog.get_logger("ixb.hub")

SHIP_TIMEOUT_S = 5.0
SHIP_READ_LEAVES = 4096
"""Leaves read from the audit log per step of shipping (several batches)."""
APPEND_CHUNK = 1000
READ_TIMEOUT_S = 5.0
FOLLOW_BATCHES = 256
"""Stream messages a standby appends in one transaction (one fsync)."""
COPY_ERRORS: tuple[type[BaseException], ...] = (*TRANSPORT_ERRORS, *STORAGE_ERRORS)
"""What copying or following may meet: NATS away or refusing, the disk refusing."""
COPY_OR_FENCE_ERRORS: tuple[type[BaseException], ...] = (*COPY_ERRORS, AuditStreamError)
WRONG_LAST_SEQUENCE = 10071


def append_leaves(log: AuditLog, leaves: Sequence[bytes]) -> None:
    """Append leaves read from the stream: the exact bytes the tree hashed, with the
    metadata that indexes them."""
    for start in range(0, len(leaves), APPEND_CHUNK):
        chunk = leaves[start : start + APPEND_CHUNK]
        log.append([dataclasses.replace(to_record(decode_entry(b)), data=b) for b in chunk])


def check_held(log: AuditLog, first: int, leaves: Sequence[bytes]) -> None:
    """Raise unless the log's leaves ``first``… (as far as it holds them) are ``leaves``."""
    end = min(log.size, first + len(leaves))
    for start in range(first, end, APPEND_CHUNK):
        for entry in log.entries(start, min(end, start + APPEND_CHUNK)):
            if entry.data != leaves[entry.index - first]:
                raise AuditStreamError(
                    f"leaf {entry.index} of the audit log differs from the {AUDIT_STREAM} "
                    "stream's: the log or the stream is not this country's history"
                )


def apply_batches(log: AuditLog, found: Sequence[Batch]) -> int:
    """Check what the log holds of each batch (in stream order), append the rest in one go;
    how many leaves were appended."""
    size = log.size
    fresh: list[bytes] = []
    for batch in found:
        end = size + len(fresh)
        if batch.first > end:
            raise AuditStreamError(
                f"the {AUDIT_STREAM} stream's batch starts at leaf {batch.first}, "
                f"after the end of this hub's log ({end})"
            )
        if batch.first < size:
            check_held(log, batch.first, batch.leaves)
        for offset, leaf in enumerate(batch.leaves):
            index = batch.first + offset
            if size <= index < end and fresh[index - size] != leaf:
                raise AuditStreamError(
                    f"the {AUDIT_STREAM} stream holds two different leaves at index {index}"
                )
        fresh += batch.leaves[max(0, end - batch.first) :]
    append_leaves(log, fresh)
    return len(fresh)


@dataclass(eq=False)
class AuditCopy:
    log: AuditLog
    country: str
    metrics: Metrics
    may_write: Callable[[], bool] = lambda: True
    """Whether this process may still append to the stream (its lease is valid)."""
    js: JetStreamContext | None = None
    shipped: int | None = None
    """Leaves the stream holds, from its last batch (None: not read yet)."""
    seq: int = 0
    """The stream sequence of the last batch this process wrote or read."""
    deposed: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _failures: StateLog = field(
        default_factory=lambda: StateLog("audit_ship_failed", logger=log), init=False
    )

    @property
    def subject(self) -> str:
        return subjects.audit_log(self.country)

    def _js(self) -> JetStreamContext:
        if self.js is None:
            raise RuntimeError("the audit copy has no JetStream connection yet")
        return self.js

    async def _last(self) -> tuple[int, Batch] | None:
        try:
            msg = await self._js().get_last_msg(AUDIT_STREAM, self.subject)
        except nats.js.errors.NotFoundError:
            return None
        return msg.seq or 0, shipping.decode_batch(msg.data or b"")

    # --- at start --------------------------------------------------------------------

    async def check_at_start(self) -> None:
        """Refuse to start on a log the ``AUDIT`` stream has outgrown (an older backup
        restored, or a lost disk, without ``ixb audit rebuild``) or that differs from it:
        appending would fork what the witnesses cosigned, and put two leaves at one index
        into the stream."""
        last = await self._last()
        if last is None:  # nothing copied yet (or purged: sequences go on from the last)
            info = await self._js().stream_info(AUDIT_STREAM)
            self.shipped, self.seq = 0, info.state.last_seq
            return
        seq, batch = last
        local = await asyncio.to_thread(lambda: self.log.size)
        if batch.end > local:
            raise AuditStreamError(
                f"the {AUDIT_STREAM} stream holds {batch.end} audit leaves, this hub's "
                f"log {local}: it was restored from an older backup or lost. With the hub "
                "stopped, run `ixb audit rebuild --config <this hub's config>`, then start it"
            )
        held = await asyncio.to_thread(self.log.entries, batch.first, batch.end)
        if tuple(e.data for e in held) != batch.leaves:
            raise AuditStreamError(
                f"this hub's audit log differs from its {AUDIT_STREAM} stream at "
                f"leaves {batch.first}..{batch.end - 1}: not the same history"
            )
        self.shipped, self.seq = batch.end, seq  # batches go one after another

    # --- copying -----------------------------------------------------------------------

    async def ship(self) -> int:
        """Copy the leaves appended so far into the stream; how many it holds now.

        Failures are logged once a spell and tried again by the next call (the
        checkpointer's, every second). Concurrent callers wait for one copy.
        """
        async with self._lock:
            try:
                await self._ship_locked()
            except COPY_OR_FENCE_ERRORS as exc:  # fenced off: the hub stops
                self._failures.failed(exc)
            else:
                self._failures.ok()
            shipped = self.shipped or 0
            self.metrics.set("ixb_audit_shipped_size", shipped)
            return shipped

    async def through(self, size: int) -> bool:
        """Whether the stream holds the first ``size`` leaves (copying them if not)."""
        if (self.shipped or 0) >= size:
            return True
        return await self.ship() >= size

    async def _ship_locked(self) -> None:
        shipped = self.shipped or 0
        size = await asyncio.to_thread(lambda: self.log.size)
        while shipped < size:
            end = min(size, shipped + SHIP_READ_LEAVES)
            entries = await asyncio.to_thread(self.log.entries, shipped, end)
            # one after another, and the next try resumes after the last one stored:
            # the stream's last batch is always the highest (what the check at start reads)
            for batch in shipping.batches(entries):
                if self.deposed.is_set() or not self.may_write():
                    raise AuditStreamError("this hub no longer holds the lease to write")
                self.seq, stored = await self._publish(batch)
                shipped = self.shipped = stored
                if stored != batch.end:
                    break  # an earlier try stored another cut: cut again from its end

    async def _publish(self, batch: Batch) -> tuple[int, int]:
        """``batch`` behind the fence: (its stream sequence, the leaves the stream holds)."""
        try:
            ack = await self._js().publish(
                self.subject,
                batch.encode(),
                headers={
                    "Nats-Msg-Id": batch.msg_id(self.country),
                    "Nats-Expected-Last-Sequence": str(self.seq),
                },
                timeout=SHIP_TIMEOUT_S,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
        else:
            return ack.seq, batch.end
        # someone wrote since our last batch: our own earlier try (its answer lost; it
        # held fewer leaves when more were appended before this one), or another process
        last = await self._last()
        if last is not None:
            seq, stored = last
            if stored.first <= batch.first < stored.end and await self._own(stored):
                return seq, stored.end
        self.deposed.set()
        log.error(
            "audit_stream_taken",
            detail=f"another hub process appended to {AUDIT_STREAM} after sequence {self.seq}",
        )
        raise AuditStreamError(
            f"another hub process of {self.country} appended to the {AUDIT_STREAM} stream: "
            "this one stops"
        )

    async def _own(self, stored: Batch) -> bool:
        """Whether ``stored`` holds leaves of this log, as this log holds them."""
        try:
            await asyncio.to_thread(check_held, self.log, stored.first, stored.leaves)
        except AuditStreamError:
            return False
        return stored.end <= await asyncio.to_thread(lambda: self.log.size)

    # --- following (a standby) --------------------------------------------------------

    def forget(self) -> None:
        """The local log was replaced: follow the stream from its start again."""
        self.shipped, self.seq = None, 0

    async def _seek(self, first_seq: int, last_seq: int, size: int) -> int:
        """The first stream sequence whose batch ends beyond ``size`` leaves (batches are in
        leaf order: a binary search); ``last_seq + 1`` when none does."""
        js = self._js()
        lo, hi = first_seq, last_seq + 1
        while lo < hi:
            mid = (lo + hi) // 2
            async with asyncio.timeout(READ_TIMEOUT_S):
                msg = await js.get_msg(AUDIT_STREAM, mid)
            if shipping.decode_batch(msg.data or b"").end > size:
                hi = mid
            else:
                lo = mid + 1
        return lo

    async def follow(self) -> int:
        """Append what the stream holds beyond the local log; how many leaves were appended.

        Raises :class:`AuditStreamError` when a leaf the log holds differs from the
        stream's (this log was not copied before another process wrote there).
        """
        js = self._js()
        async with asyncio.timeout(READ_TIMEOUT_S):
            info = await js.stream_info(AUDIT_STREAM)
        state = info.state
        if not state.messages or state.last_seq <= self.seq:
            return 0
        size = await asyncio.to_thread(lambda: self.log.size)
        start = self.seq + 1
        if not self.seq:  # first time: where the log ends (held batches are checked below)
            start = await self._seek(state.first_seq, state.last_seq, max(0, size - 1))
        appended = 0
        found: list[Batch] = []
        for seq in range(max(start, state.first_seq), state.last_seq + 1):
            async with asyncio.timeout(READ_TIMEOUT_S):
                msg = await js.get_msg(AUDIT_STREAM, seq)
            found.append(shipping.decode_batch(msg.data or b""))
            if len(found) == FOLLOW_BATCHES or seq == state.last_seq:
                appended += await asyncio.to_thread(apply_batches, self.log, found)
                self.seq, self.shipped = seq, found[-1].end
                found = []
        self.metrics.set("ixb_audit_shipped_size", self.shipped or 0)
        return appended
