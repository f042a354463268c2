"""Group commit: the audit entries of many concurrent lookups in one transaction and fsync.

Each lookup hands its entries (and the ids to mark routed) to
:meth:`GroupCommitter.submit` and gets a future; one writer task takes
everything submitted since its last commit and, on two commit threads of its
own, records it with one :meth:`~broker.auditing.HubAudit.record` (one
SQLite transaction, one fsync) while the store writes the replay rows these
lookups' decisions left in memory (:mod:`broker.seen`) and syncs its
write-ahead log; then it resolves every future of the group. The routed
marks of a group are written with the next group's rows, or when the
lookups pause (not waiting for them costs nothing: a mark a crash loses is
found again in the audit log, which holds the acceptance). While a commit
runs the next group gathers, so under load one fsync serves as many lookups
as arrive during the previous one; unloaded, a lookup waits for one commit.

The writer is the only one of the lookup path; the durable path's
:class:`~broker.settle.Settler` appends beside it, and the audit log's own
lock makes each append one whole transaction at the end of the tree: two
groups never interleave inside a transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    _marks: list[tuple[str, bytes]] = field(default_factory=list)
    """Routed marks of committed groups, written with the next group (or when idle)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="ixb-commit")
    )
    """The audit commit and the store's, side by side, on threads of their own (warm, and
    not queued behind the hub's other blocking work)."""

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
                    await self.flush_marks()
                    return
                await self.flush_marks()
                if self._queue:
                    continue
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
        # every row the group's lookups remembered was remembered before they submitted;
        # the routed marks of earlier groups go with them (their rows are written by now)
        rows = self.rows.unwritten() if self.rows is not None else []
        marks, self._marks = self._marks, []
        loop = asyncio.get_running_loop()
        recorded, synced = await asyncio.gather(
            loop.run_in_executor(self._threads, self.record, entries),
            loop.run_in_executor(self._threads, self._write_and_sync, rows, marks),
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
            self._marks[:0] = marks  # tried again with the next group
            for w in group:
                if not w.done.done():
                    w.done.set_exception(failure)
            return
        refused_marks = synced if isinstance(synced, list) else []
        for exc in refused_marks:
            # a mark lost is found again in the audit log, which holds the acceptance
            self.storage.failed("lookup", exc)
        if self.rows is not None:
            self.rows.written(rows)
        self._marks.extend(m for w in group for m in w.marks)
        self.metrics.inc("ixb_lookup_commits_total")
        self.metrics.inc("ixb_lookup_committed_entries_total", len(entries))
        for w in group:
            if not w.done.done():
                w.done.set_result(None)
        if not refused_marks:
            self.storage.ok("lookup")

    async def flush_marks(self) -> None:
        """Write the routed marks no group took yet (when the lookups pause, and at the end)."""
        marks, self._marks = self._marks, []
        if not marks:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._threads, self.mark, marks)
        except STORAGE_ERRORS as exc:
            self.storage.failed("lookup", exc)
            self._marks[:0] = marks

    def _write_and_sync(
        self, rows: list[Row], marks: list[tuple[str, bytes]]
    ) -> list[BaseException]:
        """The store's part of a group (a commit thread): earlier groups' marks, this group's
        replay rows, one fsync. A refused mark is returned, not raised: it fails no group."""
        refused: list[BaseException] = []
        if marks:
            try:
                self.mark(marks)
            except STORAGE_ERRORS as exc:
                refused.append(exc)
        if rows and self.rows is not None:
            self.rows.write(rows)
        self.sync()
        return refused
