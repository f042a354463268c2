"""The hub's audit log: one SQLite file, one :class:`AuditLog` for the rest of the hub.

An RFC 9162 Merkle tree over every entry the hub appends, built and proven
by :mod:`.storage` with :mod:`protocols.tlog` (O(log n) reads per root or
proof, O(1) amortised work per append, roots and proofs byte for byte
:mod:`protocols.merkle`'s), indexed by :mod:`.index` and searched through :mod:`.search`, with the
checkpoints and witnessing of :mod:`.witness` beside it.

The contract:

- Durable appends: a batch is on disk, leaves, nodes and search indexes
  together, when :meth:`AuditLog.append` returns (WAL, ``synchronous=FULL``,
  one ``BEGIN IMMEDIATE … COMMIT``), or not at all.
- One process owns the log; its threads share one :class:`AuditLog` (one
  lock). What an append needs of the end of the log is cached between
  appends and read again whenever ``PRAGMA data_version`` says another
  connection wrote, or a transaction failed.
- The file format is schema 3 (:data:`~.records.SCHEMA`, canonical leaves);
  a file of another schema is refused by name with what to do
  (:data:`~.records.OLDER_SCHEMAS`), never migrated: its leaves are signed history.

Why the tables look as they do is in docs/design-decisions.md (Audit log storage).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from broker.audit.index import SearchIndex
from broker.audit.records import (
    OLDER_SCHEMAS,
    SCHEMA,
    SCHEMA_VERSION,
    AuditRecord,
    StoredEntry,
    check_range,
)
from broker.audit.search import MAX_SEARCH_LIMIT, AuditQuery, AuditSearch
from broker.audit.storage import TreeStorage
from broker.audit.witness import WitnessTables
from protocols.errors import IoError, LocalError

_EVERYTHING = AuditQuery()


class AuditLog:
    """Synchronous and owned by one hub process; safe to share between its threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.path = path
        self._open()

    def _open(self) -> None:
        path = self.path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        # The pages appends touch (the end of each table, the ``msg_id`` index) and
        # the top of every tree stay in memory for many millions of entries.
        self._db.execute("PRAGMA cache_size=-65536")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            self._db.close()
            why = f" ({OLDER_SCHEMAS[version]})" if version in OLDER_SCHEMAS else ""
            raise LocalError(f"{path}: audit log schema {version}, not {SCHEMA_VERSION}{why}")
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._tree = TreeStorage(self._db)
        self._index = SearchIndex(self._db)
        self._search = AuditSearch(self._db, self._index)
        self._witness = WitnessTables(self._db)
        self._seen_version = -1

    def set_aside(self, suffix: str) -> Path:
        """Move the file to ``<name>.<suffix>`` and go on with an empty log at its place
        (kept, never deleted: a standby whose log holds leaves no one else has, see
        :mod:`broker.audit_copy`). Returns where the old file went."""
        with self._lock:
            self._db.close()
            aside = self.path.with_name(f"{self.path.name}.{suffix}")
            for ext in ("", "-wal", "-shm"):
                source = self.path.with_name(self.path.name + ext)
                if source.exists():
                    source.rename(aside.with_name(aside.name + ext))
            self._open()
            return aside

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- appending ---------------------------------------------------------------

    def append(
        self,
        records: Sequence[AuditRecord],
        *,
        once: Callable[[AuditRecord], bool] = lambda _r: False,
    ) -> list[int]:
        """Append in one durable transaction; the leaf indexes are final when this returns.

        A record for which ``once`` is true is left out if the log already holds an
        entry of its event about its message by its sender (checked under the
        write lock, so two writers recording the same fact record it once).
        """
        for r in records:
            if not isinstance(r, AuditRecord):
                raise TypeError(f"expected AuditRecord, got {type(r).__name__}")
        with self._lock:
            records = [
                r
                for r in records
                if not (
                    r.msg_id is not None
                    and r.sender is not None
                    and once(r)
                    and self.holds(r.event, r.msg_id, r.sender)
                )
            ]
            if not records:
                return []
            try:
                with self._write():
                    self._fresh()
                    start = self._tree.size
                    self._tree.append(records)
                    self._index.add(start, records)
            except BaseException:
                self._forget()  # half updated, or a failed COMMIT: read it again
                raise
        return list(range(start, start + len(records)))

    def holds(self, event: str, msg_id: str, sender: str) -> bool:
        """Whether an entry of ``event`` about message ``msg_id`` of ``sender`` is in the log.

        One probe of the ``msg_id`` index; how the hub tells a decision it recorded
        from one it still has to record (:meth:`broker.auditing.HubAudit.recorded`).
        """
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM entries WHERE msg_id = ? AND event = ? AND sender = ? LIMIT 1",
                (msg_id, event, sender),
            ).fetchone()
        return row is not None

    # --- the tree ------------------------------------------------------------------

    @property
    def size(self) -> int:
        with self._lock:
            self._fresh()
            return self._tree.size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        with self._lock:
            self._fresh()
            return self._tree.root(size)

    def leaf(self, index: int) -> bytes:
        with self._lock:
            self._fresh()
            return self._tree.leaf(index)

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Leaves ``start <= index < end`` in order, with their metadata."""
        with self._lock:
            self._fresh()
            return self._tree.entries(start, end)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 PATH(index, D[size]), equal to :func:`protocols.merkle.inclusion_proof`."""
        with self._lock:
            self._fresh()
            return self._tree.inclusion_proof(index, size)

    def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        """:meth:`inclusion_proof` of each of ``indexes`` in one read of the tree."""
        with self._lock:
            self._fresh()
            return self._tree.inclusion_proofs(indexes, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 PROOF(old_size, D[new_size]), equal to the reference's."""
        with self._lock:
            self._fresh()
            return self._tree.consistency_proof(old_size, new_size)

    def verify_storage(self) -> None:
        """Recompute every stored node and checkpoint root from the leaf bytes.

        O(n) time, O(log n) memory. For auditors, and for a hub to run at
        start after a restore. Raises :class:`~protocols.errors.MerkleProofError`
        naming the first leaf or node that does not match, is missing, or
        should not be there.
        """
        with self._lock, self._read():
            self._tree.verify()

    # --- search ----------------------------------------------------------------------

    def search(self, query: AuditQuery = _EVERYTHING, *, limit: int = 100) -> list[StoredEntry]:
        """Entries matching ``query``, newest (highest index) first, at most ``limit``
        (1 to :data:`MAX_SEARCH_LIMIT`). For the next page, pass the last index
        returned as the query's ``before_index``.
        """
        _check_query(query)
        check_range("limit", limit, 1, MAX_SEARCH_LIMIT)
        with self._lock, self._read():
            self._fresh()
            return self._search.search(query, self._tree.size, limit)

    def count(self, query: AuditQuery = _EVERYTHING) -> int:
        """Exact number of entries matching ``query``, in time proportional to them."""
        _check_query(query)
        with self._lock, self._read():
            self._fresh()
            return self._search.count(query, self._tree.size)

    # --- checkpoints, cosignatures and witnessing -------------------------------------------

    def save_checkpoint(self, size: int, root: bytes, note: bytes, at_ms: int) -> None:
        """Keep a signed tree head of our log; its root must be ours at that size."""
        with self._lock:
            if root != self.root(size):
                raise ValueError(f"checkpoint root is not the log's root at size {size}")
            self._witness.save_checkpoint(size, root, note, at_ms)

    def latest_checkpoint(self) -> tuple[int, bytes, bytes] | None:
        """(size, root, note) of the largest checkpoint."""
        with self._lock:
            return self._witness.latest_checkpoint()

    def checkpoint_for(self, size: int) -> bytes | None:
        with self._lock:
            return self._witness.checkpoint_for(size)

    def save_cosigned(self, size: int, witness: str, note: bytes, at_ms: int) -> None:
        """A peer's cosignature of our checkpoint at ``size``; the latest per witness is kept."""
        with self._lock:
            self._witness.save_cosigned(size, witness, note, at_ms)

    def cosignatures(self, size: int | None = None) -> list[tuple[str, int, bytes, int]]:
        """(witness, size, note, at_ms), by size then witness."""
        with self._lock:
            return self._witness.cosignatures(size)

    def save_witnessed(self, origin: str, size: int, root: bytes, note: bytes, at_ms: int) -> None:
        """Record a peer checkpoint we verified; a second root for one size is refused
        (the caller must have raised an alarm instead: reaching this is a bug)."""
        with self._lock, self._write():
            self._witness.save_witnessed(origin, size, root, note, at_ms)

    def last_witnessed(self, origin: str) -> tuple[int, bytes, bytes, int] | None:
        """(size, root, note, at_ms) of the largest checkpoint of ``origin`` we verified."""
        with self._lock:
            return self._witness.last_witnessed(origin)

    def witnessed_root(self, origin: str, size: int) -> bytes | None:
        """The root of ``origin``'s checkpoint of ``size`` we verified, if we did."""
        with self._lock:
            return self._witness.witnessed_root(origin, size)

    def save_alarm(
        self, origin: str, at_ms: int, detail: str, evidence: bytes, against: int | None = None
    ) -> None:
        """Keep an alarm and its evidence; ``against`` is the witnessed size it stands
        against, so the same fork shown again is counted (:meth:`repeat_alarm`), not re-raised."""
        with self._lock, self._write():
            self._witness.save_alarm(origin, at_ms, detail, evidence, against)

    def alarm_repeats(self, origin: str, against: int) -> int | None:
        """Repeats of the alarm against ``origin``'s witnessed size ``against``; None: no alarm."""
        with self._lock:
            return self._witness.alarm_repeats(origin, against)

    def repeat_alarm(self, origin: str, against: int, at_ms: int) -> None:
        with self._lock, self._write():
            self._witness.repeat_alarm(origin, against, at_ms)

    def alarms(self) -> list[tuple[str, int, str]]:
        """(origin, at_ms, detail) in the order raised."""
        with self._lock:
            return self._witness.alarms()

    # --- cached state and transactions ----------------------------------------------------

    def _fresh(self) -> None:
        """Forget the cached end of the log if another connection has written since."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._seen_version:
            self._forget()
            self._seen_version = version

    def _forget(self) -> None:
        self._tree.forget()
        self._index.forget()
        self._seen_version = -1

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT: durable on return (WAL + synchronous=FULL), or nothing.

        A write the disk refuses raises :class:`~protocols.errors.IoError`, and
        leaves the file as it was: the caller may try again.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise IoError(f"audit log: cannot start a write: {e}") from e
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise IoError(f"audit log write failed: {e}") from e
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        """One snapshot for reads that span several statements."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")


def _check_query(query: AuditQuery) -> None:
    if not isinstance(query, AuditQuery):
        raise TypeError(f"expected AuditQuery, got {type(query).__name__}")
