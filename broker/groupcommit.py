"""Group commit: the audit entries of many concurrent lookups in one transaction and fsync.

Each lookup hands its entries (and the ids to mark routed) to
:meth:`GroupCommitter.submit` and gets a future; one writer task takes
everything submitted since its last commit, records it with one
:meth:`~broker.auditing.HubAudit.record` (one SQLite transaction, one fsync)
while the store's write-ahead log is synced beside it (the replay rows the
pipeline wrote for these lookups), resolves every future of the group, and
then marks the ids routed in the store (without waiting for the disk: the
next group's sync makes the marks durable, and a mark a crash loses is found
again in the audit log, which holds the acceptance). While a commit runs the next group
gathers, so under load one fsync serves as many lookups as arrive during the
previous one; unloaded, a lookup waits for one commit.

The writer is the only one of the lookup path; the durable path's
:class:`~broker.settle.Settler` appends beside it, and the audit log's own
lock makes each append one whole transaction at the end of the tree: two
groups never interleave inside a transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from broker.metrics import Metrics
from broker.seen import Row, SeenRows
from broker.storage_health import STORAGE_ERRORS, StorageHealth
from protocols.audit import AuditEntry

log = structlog.get_logger("ixb.hub")

Commit = Callable[[Sequence[AuditEntry]], object]
Mark = Callable[[Sequence[tuple[str, bytes]]], object]
MAX_GROUP = 4096
"""Entries of one commit at most (a flood is committed in several groups)."""


@dataclass
class _Waiting:
    entries: Sequence[AuditEntry]
    marks: Sequence[tuple[str, bytes]]
    done: asyncio.Future[None]


@dataclass(kw_only=True, eq=False)
class GroupCommitter:
    """One writer task (:meth:`run`); any number of :meth:`submit` callers."""

    record: Commit
    """Append entries durably, all or none (the hub's ``HubAudit.record``)."""
    sync: Callable[[], object]
    """Make the store's commits so far durable (the hub store's ``sync``)."""
    mark: Mark
    """Mark (sender, id) routed (the hub store's ``mark_routed``, not waiting for the disk)."""
    storage: StorageHealth
    metrics: Metrics
    rows: SeenRows | None = None
    """The replay rows the lookup path decided: each group writes those remembered before it
    (in its thread, synced with the store), so none is on the event loop (:mod:`broker.seen`)."""
    _queue: list[_Waiting] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _running: bool = False

    def submit(
        self, entries: Sequence[AuditEntry], marks: Sequence[tuple[str, bytes]] = ()
    ) -> asyncio.Future[None]:
        """Queue ``entries`` for the next group; the future resolves once they are durable.

        It fails with the storage error when the disk refused the group (nothing
        of it was recorded). A mark that failed after its entries were recorded
        does not fail it: the audit log is the record (a replay finds the
        acceptance there, :meth:`broker.auditing.HubAudit.recorded`).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not entries and not marks:
            done.set_result(None)
            return done
        self._queue.append(_Waiting(entries, marks, done))
        self._wake.set()
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Commit groups until ``stop``; then the last one, so no waiter is left hanging."""
        while True:
            if not self._queue:
                if stop.is_set():
                    if self.rows is not None and self.rows.unwritten():
                        await self.commit_once()  # rows of lookups refused unrecorded, once
                    return
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                continue
            await self.commit_once()

    async def commit_once(self) -> None:
        """Commit what is queued now (up to :data:`MAX_GROUP` entries)."""
        group: list[_Waiting] = []
        size = 0
        while self._queue and (not group or size + len(self._queue[0].entries) <= MAX_GROUP):
            item = self._queue.pop(0)
            group.append(item)
            size += len(item.entries)
        entries = [e for w in group for e in w.entries]
        marks = [m for w in group for m in w.marks]
        # every row the group's lookups remembered was remembered before they submitted
        rows = self.rows.unwritten() if self.rows is not None else []
        recorded, synced = await asyncio.gather(
            asyncio.to_thread(self.record, entries),
            asyncio.to_thread(self._write_and_sync, rows),
            return_exceptions=True,
        )
        for result in (recorded, synced):
            if isinstance(result, BaseException) and not isinstance(result, STORAGE_ERRORS):
                raise result
        failure = next((r for r in (recorded, synced) if isinstance(r, BaseException)), None)
        if failure is not None:
            # entries recorded without their replay rows would let a replay through
            # after a crash: the group fails as a whole (its answers are withheld)
            self.storage.failed("lookup", failure)
            for w in group:
                if not w.done.done():
                    w.done.set_exception(failure)
            return
        if self.rows is not None:
            self.rows.written(rows)
        self.metrics.inc("ixb_lookup_commits_total")
        self.metrics.inc("ixb_lookup_committed_entries_total", len(entries))
        for w in group:
            if not w.done.done():
                w.done.set_result(None)
        if marks:
            try:
                await asyncio.to_thread(self.mark, marks)
            except STORAGE_ERRORS as exc:
                self.storage.failed("lookup", exc)
                return
        self.storage.ok("lookup")

    def _write_and_sync(self, rows: list[Row]) -> None:
        if rows and self.rows is not None:
            self.rows.write(rows)
        self.sync()
