"""Which messages this agency's application has handled, kept across restarts.

JetStream delivers at least once: an acknowledgement lost in a server crash,
or never sent because the agency's process died between handling a message
and acking it, brings the message back. :class:`HandledMessages` remembers
each handled message by (sender, id) until it expires (after that
:func:`protocols.envelope.verify_envelope` refuses it as expired anyway), so
the SDK can ack a redelivery without handing it to the application again.

SQLite, one row per message (sender, id, expires): no content. ``None`` as
the path keeps the set in memory, which still covers redeliveries within one
run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from protocols.errors import IoError
from protocols.limits import MS_PER_DAY

KEEP_AFTER_EXPIRY_MS = MS_PER_DAY
"""Rows outlive their message's expiry by this much (clock skew between machines)."""


class HandledMessages:
    def __init__(self, path: Path | None = None) -> None:
        try:
            self._db = sqlite3.connect(":memory:" if path is None else path)
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS handled (sender TEXT NOT NULL, id BLOB NOT NULL,"
                " expires INTEGER NOT NULL, PRIMARY KEY (sender, id)) WITHOUT ROWID;"
                "CREATE INDEX IF NOT EXISTS handled_expires ON handled (expires);"
            )
        except sqlite3.Error as exc:
            raise IoError(f"cannot open the handled-messages file {path}: {exc}") from None

    def __contains__(self, key: tuple[str, bytes]) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM handled WHERE sender = ? AND id = ?", (key[0], key[1])
        ).fetchone()
        return row is not None

    def add(self, sender: str, msg_id: bytes, expires: int) -> None:
        """Remember a handled message (durably, before it is acked)."""
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR IGNORE INTO handled VALUES (?, ?, ?)", (sender, msg_id, expires)
                )
        except sqlite3.Error as exc:
            raise IoError(f"cannot record a handled message: {exc}") from None

    def prune(self, now: int) -> int:
        """Forget messages expired for longer than :data:`KEEP_AFTER_EXPIRY_MS`; how many."""
        with self._db:
            cur = self._db.execute(
                "DELETE FROM handled WHERE expires < ?", (now - KEEP_AFTER_EXPIRY_MS,)
            )
        return cur.rowcount

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM handled").fetchone()
        return int(count)

    def close(self) -> None:
        self._db.close()
