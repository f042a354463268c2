"""Whether the hub's own disk writes succeed: one state for ``/healthz``, one log line per change.

The hub writes two SQLite files (``hub.sqlite``: :mod:`broker.store`;
``audit.sqlite``: :mod:`broker.audit`). A full disk, an I/O error or a file
size limit makes those writes fail; the hub must neither crash nor spin, and
must not lose or repeat what it records. Every writer catches
:data:`STORAGE_ERRORS` where it writes, leaves its work for a retry (a
message is naked with a delay, a periodic task tries again soon) and reports
here:

- :meth:`StorageHealth.failed` (``writer``, the error): the first failure of
  a spell logs ``storage_failed`` once, with the writer and the error; the
  rest are counted (``ixb_storage_failures_total{writer}``);
- :meth:`StorageHealth.ok` (``writer``) after a write of that writer
  succeeded: when no writer is failing any more, ``storage_recovered`` is
  logged once.

While any writer is failing, :meth:`StorageHealth.status` is
``"failing: <error>"`` and the hub is not ready (``/healthz`` answers 503,
``ixb_storage_failing`` is 1). Nothing needs a restart: the writers retry,
and the state clears by itself with their first success.

Writers, by name: ``settle`` (message batches), ``control`` (a peer's
directories, checkpoints and cosignatures), ``checkpoint`` (our checkpoints
and refusal summaries), ``prune``, ``directory`` (our own directory), ``start``.
"""

from __future__ import annotations

import sqlite3

import structlog

from broker.metrics import Metrics
from protocols.errors import IoError
from transport.connect import StateLog

log = structlog.get_logger("ixb.hub")

STORAGE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, IoError)
"""What a write of the hub's state files raises when the disk refuses it: SQLite's errors
(``database or disk is full``, ``disk I/O error`` …), the OS's (``EFBIG``, ``EIO`` from an
fsync), and the audit log's :class:`~protocols.errors.IoError` wrapping SQLite's."""

RETRY_S = 2.0
"""How soon a writer that waits for its write (start, our directory, the pruner) tries again."""


def describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


class StorageHealth:
    """The state of the hub's writes, per writer; used from the event loop only."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._failing: dict[str, str] = {}
        """Writer → the error of its last write, for every writer whose last write failed."""
        self._last_error: str | None = None
        self._log = StateLog(
            "storage_failed", logger=log, recovered="storage_recovered", by_kind=False
        )
        metrics.set("ixb_storage_failing", 0)

    @property
    def failing(self) -> bool:
        return bool(self._failing)

    def status(self) -> str:
        """``"ok"``, or ``"failing: <the latest error>"``."""
        if not self._failing:
            return "ok"
        return f"failing: {self._last_error}"

    def failed(self, writer: str, exc: BaseException) -> None:
        """A write of ``writer`` failed; it will retry."""
        self._failing[writer] = self._last_error = describe(exc)
        self._log.failed(exc, writer=writer)
        self.metrics.inc("ixb_storage_failures_total", writer=writer)
        self.metrics.set("ixb_storage_failing", 1)

    def ok(self, writer: str) -> None:
        """A write of ``writer`` succeeded (call it only after something was written)."""
        if self._failing.pop(writer, None) is None or self._failing:
            return
        self._last_error = None
        self._log.ok()
        self.metrics.set("ixb_storage_failing", 0)
