"""Signed notes the audit log keeps beside its tree: checkpoints, cosignatures, witnessing.

- ``checkpoints``: our own signed tree heads (C2SP tlog-checkpoint notes) by size;
- ``cosignatures``: peers' cosignatures of them, the latest per size and witness;
- ``witnessed``: the peer checkpoints we verified, by origin and size;
- ``alarms``: what we raised about a peer's log (a split view, a failed proof);
- ``alarm_repeats``: per origin and witnessed size an alarm stands against, how
  often the same fork was shown again (one alarm, counted, never re-raised).

Notes are stored as opaque bytes: signing and verifying them is
:mod:`protocols.checkpoint`'s, and whether a checkpoint root is our root at
its size is checked by the caller, :class:`~broker.audit.log.AuditLog`, which
also holds the lock and the transaction these run in.
"""

from __future__ import annotations

import hmac
import sqlite3


class WitnessTables:
    """``checkpoints``, ``cosignatures``, ``witnessed`` and ``alarms``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    # --- our checkpoints and their cosignatures --------------------------------------------

    def save_checkpoint(self, size: int, root: bytes, note: bytes, at_ms: int) -> None:
        """Keep a signed tree head of our log (its root already checked); a newer note
        for the same size replaces the older."""
        self._db.execute(
            "INSERT INTO checkpoints (size, root, note, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(size) DO UPDATE SET note = excluded.note, at = excluded.at",
            (size, root, note, at_ms),
        )

    def latest_checkpoint(self) -> tuple[int, bytes, bytes] | None:
        """(size, root, note) of the largest checkpoint."""
        row = self._db.execute(
            "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def checkpoint_for(self, size: int) -> bytes | None:
        row = self._db.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return None if row is None else bytes(row[0])

    def save_cosigned(self, size: int, witness: str, note: bytes, at_ms: int) -> None:
        """A peer's cosignature of our checkpoint at ``size``; the latest per witness is kept."""
        self._db.execute(
            "INSERT INTO cosignatures (size, witness, note, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(size, witness) DO UPDATE SET note = excluded.note, at = excluded.at",
            (size, witness, note, at_ms),
        )

    def cosignatures(self, size: int | None = None) -> list[tuple[str, int, bytes, int]]:
        """(witness, size, note, at_ms), by size then witness."""
        sql = "SELECT witness, size, note, at FROM cosignatures"
        args: tuple[object, ...] = ()
        if size is not None:
            sql += " WHERE size = ?"
            args = (size,)
        rows = self._db.execute(sql + " ORDER BY size, witness", args).fetchall()
        return [(str(w), int(s), bytes(n), int(a)) for w, s, n, a in rows]

    # --- witness side: what we saw of each peer's log ------------------------------------

    def save_witnessed(self, origin: str, size: int, root: bytes, note: bytes, at_ms: int) -> None:
        """Record a peer checkpoint we verified; a second root for one size is refused.

        Two roots for one size is a split view: the caller must have raised an
        alarm instead of saving it, so reaching this is a bug on our side. Run
        it in a write transaction, so the check and the insert are one.
        """
        row = self._db.execute(
            "SELECT root FROM witnessed WHERE origin = ? AND size = ?", (origin, size)
        ).fetchone()
        if row is not None and not hmac.compare_digest(bytes(row[0]), root):
            raise ValueError(f"{origin} size {size}: a different root was witnessed before")
        self._db.execute(
            "INSERT INTO witnessed (origin, size, root, note, at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(origin, size) DO UPDATE SET note = excluded.note, at = excluded.at",
            (origin, size, root, note, at_ms),
        )

    def last_witnessed(self, origin: str) -> tuple[int, bytes, bytes, int] | None:
        """(size, root, note, at_ms) of the largest checkpoint of ``origin`` we verified."""
        row = self._db.execute(
            "SELECT size, root, note, at FROM witnessed WHERE origin = ?"
            " ORDER BY size DESC LIMIT 1",
            (origin,),
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]), int(row[3]))

    def witnessed_root(self, origin: str, size: int) -> bytes | None:
        """The root of ``origin``'s checkpoint of ``size`` we verified, if we did."""
        row = self._db.execute(
            "SELECT root FROM witnessed WHERE origin = ? AND size = ?", (origin, size)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def save_alarm(
        self, origin: str, at_ms: int, detail: str, evidence: bytes, against: int | None = None
    ) -> None:
        """Keep an alarm and its evidence; ``against``: the witnessed size it stands against."""
        self._db.execute(
            "INSERT INTO alarms (origin, at, detail, evidence) VALUES (?, ?, ?, ?)",
            (origin, at_ms, detail, evidence),
        )
        if against is not None:
            self._db.execute(
                "INSERT OR IGNORE INTO alarm_repeats (origin, against, last_at) VALUES (?, ?, ?)",
                (origin, against, at_ms),
            )

    def alarm_repeats(self, origin: str, against: int) -> int | None:
        """Repeats of the alarm against ``origin``'s witnessed size ``against``; None: none."""
        row = self._db.execute(
            "SELECT repeats FROM alarm_repeats WHERE origin = ? AND against = ?", (origin, against)
        ).fetchone()
        return None if row is None else int(row[0])

    def repeat_alarm(self, origin: str, against: int, at_ms: int) -> None:
        self._db.execute(
            "UPDATE alarm_repeats SET repeats = repeats + 1, last_at = ?"
            " WHERE origin = ? AND against = ?",
            (at_ms, origin, against),
        )

    def alarms(self) -> list[tuple[str, int, str]]:
        """(origin, at_ms, detail) in the order raised."""
        rows = self._db.execute("SELECT origin, at, detail FROM alarms ORDER BY seq").fetchall()
        return [(str(o), int(a), str(d)) for o, a, d in rows]
