"""The hub's durable state in one SQLite file: replay records, message metadata, decisions.

Everything here is metadata: ids, types, principals, handling codes, digests,
times. Never content (the hub cannot read it) and never personal data.

- ``messages``: one row per message id the hub accepted, with the envelope
  digest. A redelivered or re-sent copy (same id, same digest) is recognised
  as such, so processing is idempotent; a different envelope under a known id
  is a replay. The row also keeps what forwards are checked against (H2).
- ``decisions``: the interim decision log (accepted, rejected with code,
  relayed, delivered, duplicate). The tamper-evident audit log replaces it.

WAL with ``synchronous=FULL``: a decision is on disk before the hub acks the
message it describes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocols.envelope import Header
from protocols.handling import HandlingCode, answer_deadline_ms
from protocols.identifiers import format_message_id
from protocols.messages import REQUEST_TYPES

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          BLOB PRIMARY KEY,
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
    due         INTEGER
);
CREATE INDEX IF NOT EXISTS messages_expires ON messages(expires);
CREATE INDEX IF NOT EXISTS messages_reply ON messages(in_reply_to);
CREATE INDEX IF NOT EXISTS messages_due ON messages(due) WHERE due IS NOT NULL;
CREATE TABLE IF NOT EXISTS decisions (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    msg_id    TEXT,
    type      TEXT,
    sender    TEXT,
    recipients TEXT,
    decision  TEXT NOT NULL,
    code      TEXT,
    detail    TEXT,
    via       TEXT
);
CREATE INDEX IF NOT EXISTS decisions_msg ON decisions(msg_id);
CREATE TABLE IF NOT EXISTS directories (
    country TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    signed  BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class KnownMessage:
    digest: bytes
    sender: str
    recipients: tuple[str, ...]
    handling: HandlingCode
    restriction: str | None
    routed: bool


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


@dataclass(frozen=True, slots=True)
class Decision:
    seq: int
    at: int
    msg_id: str | None
    type: str | None
    sender: str | None
    recipients: tuple[str, ...]
    decision: str
    code: str | None
    detail: str | None
    via: str | None


class HubStore:
    """Synchronous, small, and owned by one hub process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- messages ---------------------------------------------------------------

    def known(self, message_id: bytes) -> KnownMessage | None:
        row = self._db.execute(
            "SELECT digest, sender, recipients, handling, restriction, routed"
            " FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        return KnownMessage(
            digest=row[0],
            sender=row[1],
            recipients=tuple(json.loads(row[2])),
            handling=HandlingCode(row[3]),
            restriction=row[4],
            routed=bool(row[5]),
        )

    def remember(self, header: Header, digest: bytes) -> None:
        due = (
            answer_deadline_ms(header.created, header.priority)
            if header.type in REQUEST_TYPES
            else None
        )
        self._db.execute(
            "INSERT OR IGNORE INTO messages"
            " (id, digest, type, sender, recipients, handling, restriction, created, expires,"
            " priority, in_reply_to, due)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
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
            ),
        )

    def open_requests(self, limit: int = 500) -> list[OpenRequest]:
        """Requests this hub carried, earliest deadline first, and whether an answer passed by.

        An answer is a message of the request's reply type naming it in
        ``in_reply_to`` (receipts do not count: a delivery is not an answer).
        """
        rows = self._db.execute(
            "SELECT m.id, m.type, m.sender, m.recipients, m.priority, m.created, m.due,"
            " EXISTS (SELECT 1 FROM messages a WHERE a.in_reply_to = m.id AND a.type != 'receipt')"
            " FROM messages m WHERE m.due IS NOT NULL ORDER BY m.due LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            OpenRequest(
                msg_id=format_message_id(r[0]),
                type=r[1],
                sender=r[2],
                recipients=tuple(json.loads(r[3])),
                priority=r[4],
                created_ms=r[5],
                due_ms=r[6],
                answered=bool(r[7]),
            )
            for r in rows
        ]

    def mark_routed(self, message_id: bytes) -> None:
        self._db.execute("UPDATE messages SET routed = 1 WHERE id = ?", (message_id,))

    def prune(self, now_ms: int, keep_ms: int) -> int:
        """Forget messages expired for longer than ``keep_ms`` (forwards of them are refused)."""
        cur = self._db.execute("DELETE FROM messages WHERE expires < ?", (now_ms - keep_ms,))
        return cur.rowcount

    # --- decisions --------------------------------------------------------------

    def decide(
        self,
        *,
        at: int,
        decision: str,
        header: Header | None = None,
        msg_id: str | None = None,
        code: str | None = None,
        detail: str | None = None,
        via: str | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO decisions (at, msg_id, type, sender, recipients, decision, code,"
            " detail, via) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                at,
                header.message_id if header is not None else msg_id,
                header.type if header is not None else None,
                header.sender if header is not None else None,
                json.dumps(list(header.recipients)) if header is not None else "[]",
                decision,
                code,
                detail,
                via,
            ),
        )

    def decisions(self, msg_id: str | None = None, limit: int = 1000) -> list[Decision]:
        sql = "SELECT seq, at, msg_id, type, sender, recipients, decision, code, detail, via"
        sql += " FROM decisions"
        args: Sequence[object] = ()
        if msg_id is not None:
            sql += " WHERE msg_id = ?"
            args = (msg_id,)
        sql += " ORDER BY seq LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [
            Decision(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7], r[8], r[9])
            for r in rows
        ]

    # --- directories --------------------------------------------------------------

    def save_directory(self, country: str, version: int, signed: bytes) -> None:
        self._db.execute(
            "INSERT INTO directories (country, version, signed) VALUES (?, ?, ?)"
            " ON CONFLICT(country) DO UPDATE SET version = excluded.version,"
            " signed = excluded.signed WHERE excluded.version > directories.version",
            (country, version, signed),
        )

    def directory_version(self, country: str) -> int | None:
        row = self._db.execute(
            "SELECT version FROM directories WHERE country = ?", (country,)
        ).fetchone()
        return None if row is None else int(row[0])

    def directories(self) -> dict[str, bytes]:
        return dict(self._db.execute("SELECT country, signed FROM directories").fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``with store.transaction(): …`` groups writes into one durable commit."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
