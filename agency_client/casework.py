"""Follow-up and MLA cases of one agency: their state, kept in the profile's state file.

A case is one request (``followup.request`` or ``mla.request``) and what
became of it, seen from this agency's side of it: ``requester`` (we sent it)
or ``owner`` (we were asked). Its state moves only by a decision or status
this agency sent (recorded after the send) or one it received (folded in by
:meth:`Casework.sync` from the message store, in the order they arrived).

A received status the MLA state machine does not allow from where the case
stands (:func:`protocols.messages.check_mla_transition`), one sent by the
wrong side, or one whose ``previous`` is not our current state, is kept in
the history *flagged*, with why; the state does not move. The same for a
second follow-up decision. Nothing is applied silently.

Who may set which MLA status: the requested side (``owner``) every status but
``withdrawn``; the requester ``withdrawn`` only (:func:`check_mla_sender`).

Case metadata (ids, peer, times, states, who) is in the clear, as the hubs
saw it; the details (legal basis, purpose, reference, notes, reasons) are
sealed with libsodium's ``secretbox`` under a key derived from the agency's
signing key, as the message store seals content.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nacl.exceptions
import nacl.secret

from agency_client.msgstore import MessageStore, StoredMessage
from protocols.errors import IoError, TransitionError, UnauthorisedError
from protocols.handling import Priority, answer_deadline_ms
from protocols.keys import Identity
from protocols.messages import (
    MLA_TRANSITIONS,
    FollowupDecision,
    FollowupRequest,
    MlaRequest,
    MlaStatus,
    MlaStatusCode,
    check_mla_transition,
)

CASEWORK_KEY_CONTEXT: Final = b"ixb agency casework v1"
FOLLOWUP: Final = "followup"
MLA: Final = "mla"
REQUESTER: Final = "requester"
OWNER: Final = "owner"
PENDING: Final = "pending"
NEW: Final = "new"
"""State of an MLA request no status has been given for yet."""
DECIDING: Final = "deciding"
"""A follow-up whose decision is being sent (a second ``decide`` is refused meanwhile)."""
SYNC_SLACK_MS: Final = 60_000
"""Messages stored this long before the last sync are looked at again (each applies once)."""

CASE_TYPES: Final = frozenset(
    {FollowupRequest.TYPE, FollowupDecision.TYPE, MlaRequest.TYPE, MlaStatus.TYPE}
)
FINAL_MLA: Final = frozenset(s for s, after in MLA_TRANSITIONS.items() if s and not after)


def check_mla_sender(side: str, status: MlaStatusCode) -> None:
    """Refuse a status this side of the request may not set: the requester only withdraws,
    the requested side does everything else."""
    if side == REQUESTER and status is not MlaStatusCode.WITHDRAWN:
        raise UnauthorisedError(
            f"MLA status {status}: set by the requested authority; the requester may only withdraw"
        )
    if side == OWNER and status is MlaStatusCode.WITHDRAWN:
        raise UnauthorisedError("MLA status withdrawn: only the requesting authority withdraws")


def mla_is_open(state: str) -> bool:
    return state not in {s.value for s in FINAL_MLA}


def followup_is_open(state: str) -> bool:
    return state in {PENDING, DECIDING}


@dataclass(frozen=True, slots=True)
class Event:
    """One step in a case's history. ``flagged``: why it was kept but not applied."""

    at: int
    state: str
    by: str
    msg_id: str | None
    flagged: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Case:
    kind: str
    id: str
    side: str
    peer: str
    created: int
    due: int | None
    state: str
    updated: int
    case_ref: str | None
    priority: str
    details: dict[str, Any]
    """Opened details; ``{}`` when no key here opens them."""


class _Sealer:
    """secretbox keys derived from the agency's signing keys: current first, then replaced."""

    def __init__(self, identities: Sequence[Identity]) -> None:
        self._boxes = [
            nacl.secret.SecretBox(i.signing.derive_secret(CASEWORK_KEY_CONTEXT)) for i in identities
        ]

    def __repr__(self) -> str:
        return f"_Sealer({len(self._boxes)} keys)"

    def seal(self, data: dict[str, Any]) -> bytes:
        if not self._boxes:
            raise IoError("casework needs the key file to record details")
        return bytes(self._boxes[0].encrypt(json.dumps(data, separators=(",", ":")).encode()))

    def open(self, sealed: bytes | None) -> dict[str, Any]:
        if sealed is None:
            return {}
        for box in self._boxes:
            try:
                opened: dict[str, Any] = json.loads(box.decrypt(bytes(sealed)))
            except nacl.exceptions.CryptoError:
                continue
            return opened
        return {}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (kind TEXT NOT NULL, id TEXT NOT NULL, side TEXT NOT NULL,
 peer TEXT NOT NULL, created INTEGER NOT NULL, due INTEGER, state TEXT NOT NULL,
 updated INTEGER NOT NULL, case_ref TEXT, priority TEXT NOT NULL, details BLOB,
 PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS case_events (kind TEXT NOT NULL, id TEXT NOT NULL,
 at INTEGER NOT NULL, state TEXT NOT NULL, by TEXT NOT NULL, msg_key TEXT UNIQUE,
 flagged TEXT, details BLOB);
CREATE INDEX IF NOT EXISTS case_events_case ON case_events (kind, id);
CREATE TABLE IF NOT EXISTS case_sync (one INTEGER PRIMARY KEY CHECK (one = 1),
 received_at INTEGER NOT NULL);
"""
_CASE_COLUMNS = "kind, id, side, peer, created, due, state, updated, case_ref, priority, details"


class Casework:
    """The follow-up and MLA cases in one state file (``path``), opened with ``identities``
    (current signing key first; none: metadata only)."""

    def __init__(self, path: Path, identities: Sequence[Identity]) -> None:
        self._sealer = _Sealer(identities)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(path, timeout=10)
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise IoError(f"cannot open the casework state {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    # --- reading ----------------------------------------------------------------------

    def case(self, kind: str, case_id: str) -> Case | None:
        row = self._db.execute(
            f"SELECT {_CASE_COLUMNS} FROM cases WHERE kind = ? AND id = ?",  # noqa: S608
            (kind, case_id),
        ).fetchone()
        return None if row is None else self._case(row)

    def cases(self, kind: str, side: str | None = None) -> list[Case]:
        """Cases of ``kind`` (of one side, or both), oldest first."""
        rows = self._db.execute(
            f"SELECT {_CASE_COLUMNS} FROM cases WHERE kind = ?"  # noqa: S608
            " AND (? IS NULL OR side = ?) ORDER BY created, id",
            (kind, side, side),
        ).fetchall()
        return [self._case(r) for r in rows]

    def history(self, kind: str, case_id: str) -> list[Event]:
        """The case's steps in the order they were recorded here (applied or flagged)."""
        rows = self._db.execute(
            "SELECT at, state, by, msg_key, flagged, details FROM case_events"
            " WHERE kind = ? AND id = ? ORDER BY rowid",
            (kind, case_id),
        ).fetchall()
        return [
            Event(
                at=at,
                state=state,
                by=by,
                msg_id=None if key is None else key.split(" ", 1)[1],
                flagged=flagged,
                details=self._sealer.open(details),
            )
            for at, state, by, key, flagged, details in rows
        ]

    def _case(self, row: Sequence[Any]) -> Case:
        kind, case_id, side, peer, created, due, state, updated, case_ref, priority, sealed = row
        return Case(
            kind=kind,
            id=case_id,
            side=side,
            peer=peer,
            created=created,
            due=due,
            state=state,
            updated=updated,
            case_ref=case_ref,
            priority=priority,
            details=self._sealer.open(sealed),
        )

    # --- what this agency sent ------------------------------------------------------------

    def open_case(
        self,
        *,
        kind: str,
        case_id: str,
        side: str,
        peer: str,
        created: int,
        due: int | None,
        state: str,
        by: str,
        case_ref: str | None,
        priority: str,
        details: dict[str, Any],
        msg_key: str | None = None,
    ) -> None:
        """A new case (a request sent, or one received), with its first history entry."""
        with self._db:
            self._db.execute(
                f"INSERT OR IGNORE INTO cases ({_CASE_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    case_id,
                    side,
                    peer,
                    created,
                    due,
                    state,
                    created,
                    case_ref,
                    priority,
                    self._sealer.seal(details),
                ),
            )
            self._event(
                kind,
                case_id,
                at=created,
                state=state,
                by=by,
                msg_key=msg_key,
                flagged=None,
                details={},
            )

    def claim_decision(self, case_id: str) -> Case:
        """Take a pending follow-up for deciding: refused unless it is pending, here, ours."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            case = self.case(FOLLOWUP, case_id)
            if case is None or case.side != OWNER:
                raise TransitionError(
                    f"no follow-up request {case_id} to decide here (ixb inbox fetches what "
                    "arrived; ixb followup list shows the pending ones)"
                )
            if case.state != PENDING:
                last = self.history(FOLLOWUP, case_id)[-1]
                said = f"{case.state} by {last.by}" if case.state != DECIDING else "being decided"
                raise TransitionError(f"follow-up {case_id} is decided already ({said})")
            self._db.execute(
                "UPDATE cases SET state = ? WHERE kind = ? AND id = ?",
                (DECIDING, FOLLOWUP, case_id),
            )
        return case

    def unclaim(self, case_id: str) -> None:
        """The decision was not sent: the request is pending again."""
        with self._db:
            self._db.execute(
                "UPDATE cases SET state = ? WHERE kind = ? AND id = ? AND state = ?",
                (PENDING, FOLLOWUP, case_id, DECIDING),
            )

    def record(
        self,
        kind: str,
        case_id: str,
        *,
        at: int,
        state: str,
        by: str,
        msg_id: str,
        sender: str,
        expected: str,
        details: dict[str, Any],
    ) -> None:
        """A decision or status this agency sent: the case moves from ``expected`` to ``state``;
        if another process moved it meanwhile, the entry is kept flagged."""
        with self._db:
            cur = self._db.execute(
                "UPDATE cases SET state = ?, updated = ? WHERE kind = ? AND id = ? AND state = ?",
                (state, at, kind, case_id, expected),
            )
            flagged = None if cur.rowcount else f"the case left {expected} while this was sent"
            self._event(
                kind,
                case_id,
                at=at,
                state=state,
                by=by,
                msg_key=f"{sender} {msg_id}",
                flagged=flagged,
                details=details,
            )

    def _event(
        self,
        kind: str,
        case_id: str,
        *,
        at: int,
        state: str,
        by: str,
        msg_key: str | None,
        flagged: str | None,
        details: dict[str, Any],
    ) -> None:
        self._db.execute(
            "INSERT INTO case_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, case_id, at, state, by, msg_key, flagged, self._sealer.seal(details)),
        )

    # --- what this agency received ------------------------------------------------------------

    def sync(self, store: MessageStore) -> int:
        """Fold follow-up and MLA messages the store received since the last sync into their
        cases, in arrival order; each message applies once. Returns how many applied."""
        try:
            row = self._db.execute("SELECT received_at FROM case_sync").fetchone()
            since = 0 if row is None else max(0, row[0] - SYNC_SLACK_MS)
            messages = store.since(since)
            applied = self.apply_all(messages)
            if messages:
                with self._db:
                    self._db.execute(
                        "INSERT OR REPLACE INTO case_sync VALUES (1, ?)",
                        (max(m.received_at for m in messages),),
                    )
        except sqlite3.Error as exc:
            raise IoError(f"cannot update the casework state: {exc}") from None
        return applied

    def apply_all(self, messages: Iterable[StoredMessage]) -> int:
        """Apply each message not applied before; one that another process applied
        meanwhile (its key is unique) is skipped, its transaction rolled back."""
        applied = 0
        for m in messages:
            if m.type not in CASE_TYPES:
                continue
            key = f"{m.sender} {m.id}"
            if self._db.execute("SELECT 1 FROM case_events WHERE msg_key = ?", (key,)).fetchone():
                continue
            try:
                applied += self._apply(m, key)
            except sqlite3.IntegrityError:
                continue  # applied by a concurrent sync
        return applied

    def _apply(self, m: StoredMessage, key: str) -> int:
        body = m.body or {}
        if m.type in (FollowupRequest.TYPE, MlaRequest.TYPE):
            kind = FOLLOWUP if m.type == FollowupRequest.TYPE else MLA
            due = answer_deadline_ms(m.created, Priority(m.priority))
            if kind == MLA and body.get("deadline_ms") is not None:
                due = int(body["deadline_ms"])
            self.open_case(
                kind=kind,
                case_id=m.id,
                side=OWNER,
                peer=m.sender,
                created=m.created,
                due=due,
                state=PENDING if kind == FOLLOWUP else NEW,
                by=m.sender,
                case_ref=m.case_ref,
                priority=m.priority,
                details=_request_details(m.type, body),
                msg_key=key,
            )
            return 1
        kind = FOLLOWUP if m.type == FollowupDecision.TYPE else MLA
        case = None if m.in_reply_to is None else self.case(kind, m.in_reply_to)
        if case is None:
            return 0  # about a request this agency holds no case for: stays a plain message
        if m.type == FollowupDecision.TYPE:
            state, by, flagged = self._decision(case, m, body)
        else:
            state, by, flagged = self._status(case, m, body)
        details = {k: body[k] for k in ("reason", "note") if body.get(k) is not None}
        with self._db:
            if flagged is None:
                self._db.execute(
                    "UPDATE cases SET state = ?, updated = ? WHERE kind = ? AND id = ?",
                    (state, m.created, kind, case.id),
                )
            self._event(
                kind,
                case.id,
                at=m.created,
                state=state,
                by=by,
                msg_key=key,
                flagged=flagged,
                details=details,
            )
        return 1

    @staticmethod
    def _decision(
        case: Case, m: StoredMessage, body: dict[str, Any]
    ) -> tuple[str, str, str | None]:
        state = str(body.get("decision", "unreadable"))
        by = str(body.get("decided_by", m.sender))
        if m.sender != case.peer or case.side != REQUESTER:
            return state, by, f"from {m.sender}, not the addressed owner {case.peer}"
        if not m.body:
            return state, by, f"its content is {m.content}: the decision cannot be read"
        if case.state != PENDING:
            return state, by, f"a second decision: the request was {case.state} already"
        return state, by, None

    @staticmethod
    def _status(case: Case, m: StoredMessage, body: dict[str, Any]) -> tuple[str, str, str | None]:
        state = str(body.get("status", "unreadable"))
        if m.sender != case.peer:
            return state, m.sender, f"from {m.sender}, not a party to the request"
        if not m.body:
            return state, m.sender, f"its content is {m.content}: the status cannot be read"
        new = MlaStatusCode(state)
        sender_side = OWNER if case.side == REQUESTER else REQUESTER
        current = None if case.state == NEW else MlaStatusCode(case.state)
        try:
            check_mla_sender(sender_side, new)
            check_mla_transition(current, new)
        except (UnauthorisedError, TransitionError) as exc:
            return state, m.sender, f"{exc.code}: {exc.detail}"
        previous = body.get("previous")
        if previous is not None and previous != current:
            return state, m.sender, f"out of order: sent after {previous}, here it is {case.state}"
        return state, m.sender, None


def _request_details(type_name: str, body: dict[str, Any]) -> dict[str, Any]:
    """What a case keeps of its request (sealed): no free text beyond the short fields."""
    if type_name == FollowupRequest.TYPE:
        names: tuple[str, ...] = ("reference", "legal_basis", "purpose")
    else:
        names = ("legal_basis", "requesting_authority", "measures", "contact", "deadline_ms")
    return {n: body[n] for n in names if body.get(n) is not None}
