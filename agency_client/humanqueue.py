"""The owner's human queue: requests received that no automated responder answered.

A document check or person query that reached this agency is kept in its
message store (:mod:`agency_client.msgstore`) like everything received. It
is *queued* until an answer to it is recorded here, in the ``answered``
table of the same state file: by ``ixb agency respond`` when it answered
automatically, by ``ixb queue answer`` when a person did. One row per
request, claimed before the answer is sent, so a second answer is refused.
Metadata only: who answered, when, and the answer's id.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agency_client.msgstore import MessageStore, StoredMessage
from protocols.errors import IoError, UsageError
from protocols.fields import duration_text, utc_iso
from protocols.handling import Priority, answer_deadline_ms
from protocols.messages import DocVerifyRequest, PersonQuery

QUEUED_TYPES: Final = (DocVerifyRequest.TYPE, PersonQuery.TYPE)
"""Requests a person may answer from the queue."""
AUTOMATED: Final = "automated"


@dataclass(frozen=True, slots=True)
class Answered:
    at_ms: int
    by: str
    answer_id: str | None
    """None while the answer is being sent (or if sending it failed in an unknown way)."""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    message: StoredMessage
    due_ms: int

    def due_text(self, now_ms: int) -> str:
        """``due in 7 h 58 min`` or ``overdue by 2 h``."""
        span = duration_text(self.due_ms - now_ms)
        return f"due in {span}" if self.due_ms >= now_ms else f"overdue by {span}"

    def to_json(self, now_ms: int) -> dict[str, object]:
        m = self.message
        return {
            "id": m.id,
            "from": m.sender,
            "type": m.type,
            "created": utc_iso(m.created),
            "received": utc_iso(m.received_at),
            "priority": m.priority,
            "due": utc_iso(self.due_ms),
            "due_in_ms": self.due_ms - now_ms,
            "overdue": self.due_ms < now_ms,
        }


class AnswerBook:
    """Which received requests have been answered, and by whom (the state file)."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, timeout=10)
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS answered (sender TEXT NOT NULL, id TEXT NOT NULL,"
                " at_ms INTEGER NOT NULL, by TEXT NOT NULL, answer_id TEXT,"
                " PRIMARY KEY (sender, id)) WITHOUT ROWID;"
            )
        except sqlite3.Error as exc:
            raise IoError(f"cannot open the answer record {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def get(self, sender: str, msg_id: str) -> Answered | None:
        row = self._db.execute(
            "SELECT at_ms, by, answer_id FROM answered WHERE sender = ? AND id = ?",
            (sender, msg_id),
        ).fetchone()
        return None if row is None else Answered(*row)

    def claim(self, sender: str, msg_id: str, by: str, now_ms: int) -> None:
        """Record that ``by`` is answering; :class:`UsageError` if it was answered already."""
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO answered VALUES (?, ?, ?, ?, NULL)", (sender, msg_id, now_ms, by)
                )
        except sqlite3.IntegrityError:
            before = self.get(sender, msg_id)
            assert before is not None  # noqa: S101 - the key exists
            raise UsageError(
                f"{msg_id} was answered already, {utc_iso(before.at_ms)} by {before.by}"
                + (f" (answer {before.answer_id})" if before.answer_id else "")
            ) from None
        except sqlite3.Error as exc:
            raise IoError(f"cannot record the answer to {msg_id}: {exc}") from None

    def sent(self, sender: str, msg_id: str, answer_id: str) -> None:
        with self._db:
            self._db.execute(
                "UPDATE answered SET answer_id = ? WHERE sender = ? AND id = ?",
                (answer_id, sender, msg_id),
            )

    def release(self, sender: str, msg_id: str) -> None:
        """The answer was certainly not sent: back in the queue."""
        with self._db:
            self._db.execute(
                "DELETE FROM answered WHERE sender = ? AND id = ? AND answer_id IS NULL",
                (sender, msg_id),
            )

    def record(self, sender: str, msg_id: str, by: str, answer_id: str, now_ms: int) -> None:
        """An answer sent (the automated responder's): kept if one was recorded before."""
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR IGNORE INTO answered VALUES (?, ?, ?, ?, ?)",
                    (sender, msg_id, now_ms, by, answer_id),
                )
        except sqlite3.Error as exc:
            raise IoError(f"cannot record the answer to {msg_id}: {exc}") from None

    def queued(self, store: MessageStore) -> list[QueueEntry]:
        """Requests received and not answered, oldest due first."""
        answered = {
            (s, i) for s, i in self._db.execute("SELECT sender, id FROM answered").fetchall()
        }
        out = [
            QueueEntry(m, answer_deadline_ms(m.created, Priority(m.priority)))
            for m in store.of_types(QUEUED_TYPES)
            if (m.sender, m.id) not in answered
        ]
        return sorted(out, key=lambda e: (e.due_ms, e.message.received_at))
