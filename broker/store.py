"""The hub's durable state in one SQLite file: replay records, message metadata, decisions.

Everything here is metadata: ids, types, principals, handling codes, digests,
times. Never content (the hub cannot read it) and never personal data.

- ``messages``: one row per message id the hub accepted, with the envelope
  digest. A redelivered or re-sent copy (same id, same digest) is recognised
  as such, so processing is idempotent; a different envelope under a known id
  is a replay. The row also keeps what forwards are checked against (H2).
- ``peer_entries``: entries peer hubs shared with their checkpoints, for
  reconciliation (the decisions themselves are in the audit log).
- ``sealed_receipts``: the bytes of each receipt the hub sealed, by its
  de-duplication id, kept before it is published: a batch planned again
  after a crash sends (and audits) the very receipt JetStream stored.
- ``reminders``: the overdue reminders this hub sent, one row per request and
  local party reminded; ``deadlines_done``: requests past due that need no
  more work (answered in time, or every local party reminded), so a restarted
  hub never reminds twice.

WAL with ``synchronous=FULL``: a decision is on disk before the hub acks the
message it describes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from broker.pipeline import KnownMessage
from protocols.deadlines import DEFAULT_TIERS, Tiers, agreed_tiers, due_ms
from protocols.envelope import Header
from protocols.handling import HandlingCode
from protocols.identifiers import format_message_id, parse_principal
from protocols.messages import REQUEST_TYPES
from protocols.receipts import closes_request

SCHEMA_VERSION = 2
"""2: messages keyed by (sender, id): one sender cannot use up another's ids."""

P = ParamSpec("P")
R = TypeVar("R")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          BLOB NOT NULL,
    digest      BLOB NOT NULL,
    type        TEXT NOT NULL,
    sender      TEXT NOT NULL,
    recipients  TEXT NOT NULL,
    handling    TEXT NOT NULL,
    restriction TEXT,
    created     INTEGER NOT NULL,
    expires     INTEGER NOT NULL,
    routed      INTEGER NOT NULL DEFAULT 0,
    priority    TEXT NOT NULL DEFAULT 'normal',
    in_reply_to BLOB,
    due         INTEGER,
    PRIMARY KEY (sender, id)
);
CREATE INDEX IF NOT EXISTS messages_id ON messages(id);
CREATE INDEX IF NOT EXISTS messages_expires ON messages(expires);
CREATE INDEX IF NOT EXISTS messages_reply ON messages(in_reply_to);
CREATE INDEX IF NOT EXISTS messages_due ON messages(due) WHERE due IS NOT NULL;
CREATE TABLE IF NOT EXISTS peer_entries (
    origin  TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    msg_id  TEXT,
    event   TEXT NOT NULL,
    at      INTEGER NOT NULL,
    peer    TEXT,
    data    BLOB NOT NULL,
    PRIMARY KEY (origin, idx)
);
CREATE INDEX IF NOT EXISTS peer_entries_at ON peer_entries(origin, at);
CREATE INDEX IF NOT EXISTS peer_entries_msg ON peer_entries(msg_id) WHERE msg_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sealed_receipts (
    dedup TEXT PRIMARY KEY,
    data  BLOB NOT NULL,
    at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reminders (
    sender  TEXT NOT NULL,
    id      BLOB NOT NULL,
    party   TEXT NOT NULL,
    at      INTEGER NOT NULL,
    due     INTEGER NOT NULL,
    PRIMARY KEY (sender, id, party)
);
CREATE INDEX IF NOT EXISTS reminders_at ON reminders(at);
CREATE TABLE IF NOT EXISTS deadlines_done (
    sender  TEXT NOT NULL,
    id      BLOB NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (sender, id)
);
CREATE TABLE IF NOT EXISTS directories (
    country TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    signed  BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PeerEntry:
    index: int
    msg_id: str | None
    event: str
    at_ms: int
    peer: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class OpenRequest:
    msg_id: str
    type: str
    sender: str
    recipients: tuple[str, ...]
    priority: str
    created_ms: int
    due_ms: int
    answered: bool
    refused: bool = False
    """A recipient's country's hub refused it (its shared ``rejected`` entry, SPEC §13):
    nobody there will answer, so no deadline runs."""

    @property
    def closed(self) -> bool:
        return self.answered or self.refused


@dataclass(frozen=True, slots=True)
class Reminder:
    """An overdue reminder this hub sent: about request ``msg_id`` of ``sender``, to ``party``."""

    msg_id: str
    sender: str
    party: str
    at_ms: int
    due_ms: int


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a version-1 file (messages keyed by id alone) to version 2, in one transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
    ).fetchone()
    if version >= SCHEMA_VERSION or exists is None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for index in ("messages_expires", "messages_reply", "messages_due"):
            db.execute(f"DROP INDEX IF EXISTS {index}")
        db.execute("ALTER TABLE messages RENAME TO messages_v1")
        db.execute(SCHEMA.split(";", maxsplit=1)[0])
        db.execute(
            "INSERT INTO messages (id, digest, type, sender, recipients, handling, restriction,"
            " created, expires, routed, priority, in_reply_to, due)"
            " SELECT id, digest, type, sender, recipients, handling, restriction,"
            " created, expires, routed, priority, in_reply_to, due FROM messages_v1"
        )
        db.execute("DROP TABLE messages_v1")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


_REMEMBER = (
    "INSERT OR IGNORE INTO messages"
    " (id, digest, type, sender, recipients, handling, restriction, created, expires,"
    " priority, in_reply_to, due)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _locked(method: Callable[Concatenate[HubStore, P], R]) -> Callable[Concatenate[HubStore, P], R]:
    def locked(self: HubStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    locked.__doc__ = method.__doc__
    return locked


class HubStore:
    """Synchronous, small, and owned by one hub process."""

    def __init__(
        self,
        path: Path,
        *,
        country: str | None = None,
        agreements: Mapping[str, Tiers] | None = None,
    ) -> None:
        """``country`` and ``agreements``: the answer times a request's due time is
        computed with (:func:`~protocols.deadlines.agreed_tiers`); without a country,
        the defaults."""
        self._country = country
        self._agreements = dict(agreements or {})
        path.parent.mkdir(parents=True, exist_ok=True)
        self._wal = f"{path}-wal"
        self._lock = threading.RLock()
        """One connection, used from the event loop and from the hub's commit thread."""
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        _migrate(self._db)
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @_locked
    def close(self) -> None:
        self._db.close()

    # --- messages ---------------------------------------------------------------

    @_locked
    def known(self, sender: str, message_id: bytes) -> KnownMessage | None:
        row = self._db.execute(
            "SELECT digest, sender, recipients, handling, restriction, routed"
            " FROM messages WHERE sender = ? AND id = ?",
            (sender, message_id),
        ).fetchone()
        return None if row is None else _known(row)

    @_locked
    def original(self, message_id: bytes, party: str) -> KnownMessage | None:
        """The message ``message_id`` that ``party`` sent or received (what a forward names).

        Ids are unique per sender only: of several messages under one id, the
        one ``party`` took part in; else any (the caller refuses the forward).
        """
        rows = self._db.execute(
            "SELECT digest, sender, recipients, handling, restriction, routed"
            " FROM messages WHERE id = ? ORDER BY created",
            (message_id,),
        ).fetchall()
        found = [_known(row) for row in rows]
        mine = [k for k in found if party == k.sender or party in k.recipients]
        if mine:
            return mine[0]
        return found[0] if found else None

    @_locked
    def remember(self, header: Header, digest: bytes) -> None:
        """Record an accepted message, not yet routed; part of the caller's transaction."""
        self._db.execute(_REMEMBER, self._row(header, digest))

    def remember_many(self, rows: Sequence[tuple[Header, bytes]]) -> None:
        """Record these accepted messages in one commit, durable at the next :meth:`sync`."""
        if not rows:
            return
        with self.transaction(durable=False):
            self._db.executemany(_REMEMBER, [self._row(h, d) for h, d in rows])

    def _row(self, header: Header, digest: bytes) -> tuple[object, ...]:
        due = (
            due_ms(header.created, header.priority, self.tiers_for(header))
            if header.type in REQUEST_TYPES
            else None
        )
        return (
            header.id,
            digest,
            header.type,
            header.sender,
            json.dumps(list(header.recipients)),
            header.handling.value,
            header.restriction,
            header.created,
            header.expires,
            header.priority.value,
            header.in_reply_to,
            due,
        )

    def tiers_for(self, header: Header) -> Tiers:
        """The answer times that apply to a request with this header, at this hub."""
        if self._country is None:
            return DEFAULT_TIERS
        return agreed_tiers(
            self._country,
            header.sender_principal.country,
            [r.country for r in header.recipient_principals],
            self._agreements,
        )

    @_locked
    def open_requests(self, limit: int = 500) -> list[OpenRequest]:
        """Requests this hub carried, earliest deadline first, and whether they were answered.

        Only the addressed owner's answer closes a request
        (:func:`~protocols.receipts.closes_request`): a message naming it in
        ``in_reply_to`` from one of its recipients, of the type that answers
        its type. A third party's message or a receipt does not.
        """
        rows = self._db.execute(
            "SELECT id, type, sender, recipients, priority, created, due"
            " FROM messages WHERE due IS NOT NULL ORDER BY due LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._open_request(r) for r in rows]

    @_locked
    def past_due(self, now_ms: int, since_ms: int = 0, limit: int = 500) -> list[OpenRequest]:
        """Requests due in ``[since_ms, now_ms]`` that still need deadline work (not in
        ``deadlines_done``), earliest first, with whether the addressed owner answered them."""
        rows = self._db.execute(
            "SELECT m.id, m.type, m.sender, m.recipients, m.priority, m.created, m.due"
            " FROM messages m WHERE m.due IS NOT NULL AND m.due BETWEEN ? AND ?"
            " AND NOT EXISTS (SELECT 1 FROM deadlines_done d"
            "  WHERE d.sender = m.sender AND d.id = m.id)"
            " ORDER BY m.due LIMIT ?",
            (since_ms, now_ms, limit),
        ).fetchall()
        return [self._open_request(r) for r in rows]

    def _open_request(self, r: tuple[Any, ...]) -> OpenRequest:
        """A ``messages`` row (id, type, sender, recipients, priority, created, due)."""
        recipients = json.loads(r[3])
        msg_id = format_message_id(r[0])
        return OpenRequest(
            msg_id=msg_id,
            type=r[1],
            sender=r[2],
            recipients=tuple(recipients),
            priority=r[4],
            created_ms=r[5],
            due_ms=r[6],
            answered=self._answered(r[0], r[1], r[2], recipients),
            refused=self._refused_there(msg_id, recipients),
        )

    def _refused_there(self, msg_id: str, recipients: list[str]) -> bool:
        """Whether the hub of a recipient's country shared its refusal of ``msg_id`` (what a
        witness verified in that hub's log; the receipt it sent says so only sealed)."""
        countries = {parse_principal(r).country for r in recipients}
        refusing = self._db.execute(
            "SELECT origin FROM peer_entries WHERE msg_id = ? AND event = 'rejected'", (msg_id,)
        ).fetchall()
        return any(origin in countries for (origin,) in refusing)

    @_locked
    def reminded_parties(self, sender: str, msg_id: bytes) -> frozenset[str]:
        rows = self._db.execute(
            "SELECT party FROM reminders WHERE sender = ? AND id = ?", (sender, msg_id)
        ).fetchall()
        return frozenset(str(r[0]) for r in rows)

    @_locked
    def record_reminder(self, sender: str, msg_id: bytes, party: str, at_ms: int, due: int) -> None:
        """``party`` was reminded of request (``sender``, ``msg_id``): durable on return."""
        with self._transaction(durable=True):
            self._db.execute(
                "INSERT OR IGNORE INTO reminders (sender, id, party, at, due)"
                " VALUES (?, ?, ?, ?, ?)",
                (sender, msg_id, party, at_ms, due),
            )

    @_locked
    def deadline_done(self, sender: str, msg_id: bytes, outcome: str) -> None:
        """Request (``sender``, ``msg_id``) needs no more deadline work: ``answered``,
        ``refused`` (by the hub of its addressee's country) or ``reminded``."""
        self._db.execute(
            "INSERT OR IGNORE INTO deadlines_done (sender, id, outcome) VALUES (?, ?, ?)",
            (sender, msg_id, outcome),
        )

    @_locked
    def reminders(self, limit: int = 500) -> list[Reminder]:
        """Reminders sent, newest first."""
        rows = self._db.execute(
            "SELECT id, sender, party, at, due FROM reminders ORDER BY at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [Reminder(format_message_id(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def _answered(
        self, request_id: bytes, request_type: str, sender: str, recipients: list[str]
    ) -> bool:
        owners = frozenset(parse_principal(r) for r in recipients)
        asker = parse_principal(sender)
        answers = self._db.execute(
            "SELECT type, sender, recipients FROM messages"
            " WHERE in_reply_to = ? AND type != 'receipt'",
            (request_id,),
        )
        return any(
            closes_request(
                kind,
                parse_principal(by),
                [parse_principal(r) for r in json.loads(to)],
                request_type=request_type,
                request_sender=asker,
                request_recipients=owners,
            )
            for kind, by, to in answers
        )

    def mark_routed(self, *messages: tuple[str, bytes], durable: bool = True) -> None:
        """Routing of these (sender, id) is finished; durable, with every earlier commit, on return.

        The commit itself does not wait for the disk (the lock is held only
        for the write); :meth:`sync` then makes it durable without the lock,
        so the hub's next decisions never queue behind an fsync.
        ``durable=False``: the next :meth:`sync` makes it durable (lookups: a
        mark lost in a crash is found again in the audit log, which holds the
        acceptance; see :class:`broker.pipeline.RecordedDecisions`).
        """
        if not messages:
            return  # a batch of refusals and duplicates wrote nothing to make durable
        with self.transaction(durable=False):
            self._db.executemany(
                "UPDATE messages SET routed = 1 WHERE sender = ? AND id = ?", messages
            )
        if durable:
            self.sync()

    def sync(self) -> None:
        """Make every commit so far durable: fsync the write-ahead log.

        What ``synchronous=FULL`` does at each commit, done once for many. A
        commit is durable when its WAL frames are on disk; frames that a
        checkpoint already moved into the database were synced by SQLite
        itself before the WAL was reused (WAL with ``synchronous=NORMAL``).
        """
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # no log: everything is in the database file, synced by its checkpoint
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @_locked
    def prune(self, now_ms: int, keep_ms: int) -> int:
        """Forget messages expired for longer than ``keep_ms`` (forwards of them are refused),
        and receipts sealed longer ago than that."""
        cur = self._db.execute("DELETE FROM messages WHERE expires < ?", (now_ms - keep_ms,))
        self._db.execute("DELETE FROM sealed_receipts WHERE at < ?", (now_ms - keep_ms,))
        self._db.execute("DELETE FROM reminders WHERE at < ?", (now_ms - keep_ms,))
        self._db.execute(
            "DELETE FROM deadlines_done WHERE NOT EXISTS (SELECT 1 FROM messages m"
            " WHERE m.sender = deadlines_done.sender AND m.id = deadlines_done.id)"
        )
        return cur.rowcount

    # --- sealed receipts ------------------------------------------------------------

    @_locked
    def sealed_receipt(self, dedup: str) -> bytes | None:
        """The receipt sealed before under ``dedup``, if any."""
        row = self._db.execute(
            "SELECT data FROM sealed_receipts WHERE dedup = ?", (dedup,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    @_locked
    def sealed_receipts_between(
        self, after_ms: int, until_ms: int, limit: int = 500
    ) -> list[tuple[str, bytes, int]]:
        """(de-dup id, bytes, when sealed) of receipts sealed in ``(after_ms, until_ms]``,
        oldest first."""
        rows = self._db.execute(
            "SELECT dedup, data, at FROM sealed_receipts WHERE at > ? AND at <= ?"
            " ORDER BY at, dedup LIMIT ?",
            (after_ms, until_ms, limit),
        ).fetchall()
        return [(str(d), bytes(data), int(at)) for d, data, at in rows]

    def keep_sealed_receipts(self, sealed: Sequence[tuple[str, bytes]], now_ms: int) -> bool:
        """Keep receipts before they are published; False if one was sealed meanwhile.

        One commit that survives the process (the write-ahead log; the batch's
        :meth:`sync` beside its audit commit puts it on disk with the rest). An id kept already
        (another batch planned the same statement at the same time) keeps its
        first bytes: the caller plans again and sends those.
        """
        if not sealed:
            return True
        with self.transaction(durable=False):
            cur = self._db.executemany(
                "INSERT OR IGNORE INTO sealed_receipts (dedup, data, at) VALUES (?, ?, ?)",
                [(dedup, data, now_ms) for dedup, data in sealed],
            )
            return cur.rowcount == len(sealed)

    # --- directories --------------------------------------------------------------

    @_locked
    def save_directory(self, country: str, version: int, signed: bytes) -> None:
        self._db.execute(
            "INSERT INTO directories (country, version, signed) VALUES (?, ?, ?)"
            " ON CONFLICT(country) DO UPDATE SET version = excluded.version,"
            " signed = excluded.signed WHERE excluded.version > directories.version",
            (country, version, signed),
        )

    @_locked
    def save_peer_entries(self, origin: str, entries: Sequence[PeerEntry]) -> None:
        """Entries a peer hub shared with us (verified against its checkpoint), one commit."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO peer_entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(origin, e.index, e.msg_id, e.event, e.at_ms, e.peer, e.data) for e in entries],
            )

    @_locked
    def peer_entries(self, origin: str, since_ms: int = 0) -> list[PeerEntry]:
        rows = self._db.execute(
            "SELECT idx, msg_id, event, at, peer, data FROM peer_entries"
            " WHERE origin = ? AND at >= ? ORDER BY idx",
            (origin, since_ms),
        ).fetchall()
        return [PeerEntry(*r) for r in rows]

    @_locked
    def peer_entries_for(self, msg_ids: Sequence[str]) -> list[tuple[str, PeerEntry]]:
        """What peers shared about these messages: (origin, entry), oldest first."""
        rows = self._db.execute(
            "SELECT origin, idx, msg_id, event, at, peer, data FROM peer_entries"
            " WHERE msg_id IN (SELECT value FROM json_each(?)) ORDER BY at, idx",
            (json.dumps(list(msg_ids)),),
        ).fetchall()
        return [(r[0], PeerEntry(*r[1:])) for r in rows]

    @_locked
    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_locked
    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @_locked
    def directory_version(self, country: str) -> int | None:
        row = self._db.execute(
            "SELECT version FROM directories WHERE country = ?", (country,)
        ).fetchone()
        return None if row is None else int(row[0])

    @_locked
    def directory_index(self) -> dict[str, int]:
        """Country → version of every signed directory kept."""
        return dict(self._db.execute("SELECT country, version FROM directories").fetchall())

    @_locked
    def directory(self, country: str) -> bytes | None:
        row = self._db.execute(
            "SELECT signed FROM directories WHERE country = ?", (country,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    @_locked
    def directories(self) -> dict[str, bytes]:
        return dict(self._db.execute("SELECT country, signed FROM directories").fetchall())

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[None]:
        """``with store.transaction(): …`` groups writes into one commit.

        ``durable=False`` commits without waiting for the disk: the hub decides
        a fetched batch that way (replay rows visible to the next decision at
        once), and after routing it syncs the write-ahead log (:meth:`sync`,
        beside the audit commit), those rows included, before any message is
        acked. A crash in between loses only rows of unacked messages, which
        JetStream redelivers and the hub decides again.

        A commit the disk refuses raises (``sqlite3.Error``) and leaves nothing
        of the transaction behind: the caller may try again.
        """
        with self._lock, self._transaction(durable=durable):
            yield

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool) -> Iterator[None]:
        if not durable:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                # a COMMIT the disk refused may or may not have rolled back by itself
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        finally:
            if not durable:
                self._db.execute("PRAGMA synchronous=FULL")


def _known(row: Sequence[object]) -> KnownMessage:
    digest, sender, recipients, handling, restriction, routed = row
    return KnownMessage(
        digest=bytes(digest),  # type: ignore[call-overload]
        sender=str(sender),
        recipients=tuple(json.loads(str(recipients))),
        handling=HandlingCode(str(handling)),
        restriction=None if restriction is None else str(restriction),
        routed=bool(routed),
    )
