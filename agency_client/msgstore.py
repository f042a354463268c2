"""What this agency received, kept beside its profile: reading no longer destroys.

One SQLite table in the profile's state file (``<CC>-<NAME>.state``, where the
receipts are kept too), one row per received message, keyed by (sender, id)
so a redelivery of a stored message is recognised. The CLI stores a message
before it acknowledges it: a process that dies in between loses nothing.

Metadata (sender, type, times, case ref, reply link, handling, priority, the
hubs it came through) is kept in the clear, as every hub on its path saw it.
The content (the decrypted body) is sealed with libsodium's ``secretbox``
under a key derived from the agency's signing key
(:meth:`protocols.keys.SigningKeyPair.derive_secret`): the store without the
key file and its passphrase shows metadata only. Content is dropped after its
type's retention (profile ``[store]``, :mod:`protocols.retention`; 0 keeps it)
with SQLite's ``secure_delete`` (the freed bytes are overwritten) and the
write-ahead log truncated; metadata stays.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nacl.exceptions
import nacl.secret

from agency_client.profile import Profile
from protocols.envelope import Header
from protocols.errors import IoError
from protocols.identifiers import format_message_id
from protocols.keys import Identity
from protocols.retention import Retention

STORE_KEY_CONTEXT = b"ixb agency message store v1"
"""What the content key is derived for (a change makes stored content unreadable)."""

_COLUMNS = (
    "sender",
    "id",
    "type",
    "created",
    "received_at",
    "case_ref",
    "in_reply_to",
    "handling",
    "restriction",
    "priority",
    "via",
    "seen",
)
_PLACES = ", ".join("?" * (len(_COLUMNS) + 2))  # the columns, content, content_kid


def store_path(profile: Profile) -> Path:
    """The profile's state file: receipts, sends of unknown outcome, received messages."""
    return Path(profile.base_dir) / f"{profile.principal.country}-{profile.principal.name}.state"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One received message. ``body`` is None when ``content`` is not ``"ok"``:
    ``"expired"`` (retention dropped it) or ``"locked"`` (no key that opens it)."""

    sender: str
    id: str
    type: str
    created: int
    received_at: int
    case_ref: str | None
    in_reply_to: str | None
    handling: str
    restriction: str | None
    priority: str
    via: tuple[str, ...]
    seen: bool
    content: str
    body: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a retention pass dropped: message count per type, and the oldest kept (ms)."""

    removed: dict[str, int]
    oldest_kept: int | None


class _ContentKey:
    """A secretbox key and the id of the signing key it was derived from (public)."""

    def __init__(self, identity: Identity) -> None:
        self.kid = identity.signing.key_id
        self.box = nacl.secret.SecretBox(identity.signing.derive_secret(STORE_KEY_CONTEXT))

    def __repr__(self) -> str:
        return f"_ContentKey({self.kid.hex()})"


class MessageStore:
    """Received messages of one agency. ``identities``: the current keys first, then
    the ones replaced by ``ixb keys rotate`` (content they sealed is sealed again
    under the current key on open); none: metadata only."""

    def __init__(
        self,
        path: Path,
        identities: Sequence[Identity],
        *,
        now: int,
        content_days: int | None = None,
        retention: Retention | None = None,
    ) -> None:
        """Content past its retention is dropped here, at every open: ``retention``,
        or ``content_days`` for every type (0 keeps it), or the built-in days per type."""
        self._keys = [_ContentKey(i) for i in identities]
        try:
            # readable by its owner only: metadata is in the clear (as the hubs saw it)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            path.chmod(0o600)
        except OSError as exc:
            raise IoError(f"cannot open the message store {path}: {exc.strerror or exc}") from None
        try:
            self._db = sqlite3.connect(path)
            self._db.executescript(
                "PRAGMA secure_delete = ON;"  # dropped content is overwritten in the file
                "CREATE TABLE IF NOT EXISTS messages (sender TEXT NOT NULL, id TEXT NOT NULL,"
                " type TEXT NOT NULL, created INTEGER NOT NULL, received_at INTEGER NOT NULL,"
                " case_ref TEXT, in_reply_to TEXT, handling TEXT NOT NULL, restriction TEXT,"
                " priority TEXT NOT NULL, via TEXT NOT NULL, seen INTEGER NOT NULL DEFAULT 0,"
                " content BLOB, content_kid BLOB, PRIMARY KEY (sender, id));"
                "CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);"
                "CREATE INDEX IF NOT EXISTS messages_case ON messages (case_ref);"
                "CREATE INDEX IF NOT EXISTS messages_reply ON messages (in_reply_to);"
            )
            if retention is None:
                retention = Retention() if content_days is None else Retention({}, content_days)
            self.retention = retention
            self.last_prune = self.prune(now)
            self._reseal_previous()
        except sqlite3.Error as exc:
            raise IoError(f"cannot open the message store {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def prune(self, now: int) -> Pruned:
        """Drop the content of messages past their type's retention at ``now`` (ms).

        Metadata stays. The freed bytes are overwritten (``secure_delete``) and the
        write-ahead log, if any, is emptied, so the content is in no file of the store.
        """
        removed: dict[str, int] = {}
        types = [r[0] for r in self._db.execute("SELECT DISTINCT type FROM messages")]
        with self._db:
            for type_name in types:
                cutoff = self.retention.cutoff(type_name, now)
                if cutoff is None:
                    continue
                cur = self._db.execute(
                    "UPDATE messages SET content = NULL, content_kid = NULL"
                    " WHERE type = ? AND received_at < ? AND content IS NOT NULL",
                    (type_name, cutoff),
                )
                if cur.rowcount:
                    removed[type_name] = cur.rowcount
        if removed:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        oldest = self._db.execute(
            "SELECT MIN(received_at) FROM messages WHERE content IS NOT NULL"
        ).fetchone()[0]
        return Pruned(removed, oldest)

    def _reseal_previous(self) -> None:
        if not self._keys:
            return
        current, *replaced = self._keys
        for old in replaced:
            rows = self._db.execute(
                "SELECT sender, id, content FROM messages WHERE content_kid = ?", (old.kid,)
            ).fetchall()
            with self._db:
                for sender, msg_id, sealed in rows:
                    try:
                        plain = old.box.decrypt(bytes(sealed))
                    except nacl.exceptions.CryptoError:
                        continue
                    self._db.execute(
                        "UPDATE messages SET content = ?, content_kid = ?"
                        " WHERE sender = ? AND id = ?",
                        (current.box.encrypt(plain), current.kid, sender, msg_id),
                    )

    def keep(
        self,
        *,
        header: Header,
        body: msgspec.Struct,
        via: Iterable[object],
        received_at: int,
    ) -> bool:
        """Store a received message durably (before its ack); False: stored already."""
        if not self._keys:
            raise IoError("the message store needs the key file to store content")
        key = self._keys[0]
        msg_id = header.message_id
        plain = json.dumps(
            {"sender": header.sender, "id": msg_id, "body": msgspec.to_builtins(body)},
            separators=(",", ":"),
        ).encode()
        row = (
            header.sender,
            msg_id,
            header.type,
            header.created,
            received_at,
            header.case_ref,
            None if header.in_reply_to is None else format_message_id(header.in_reply_to),
            header.handling.value,
            header.restriction,
            header.priority.value,
            json.dumps([str(h) for h in via]),
            0,
            key.box.encrypt(plain),
            key.kid,
        )
        try:
            with self._db:
                cur = self._db.execute(
                    f"INSERT OR IGNORE INTO messages VALUES ({_PLACES})",  # noqa: S608 - "?"s
                    row,
                )
        except sqlite3.Error as exc:
            raise IoError(f"cannot store message {msg_id}: {exc}") from None
        return cur.rowcount == 1

    def _select(self, where: str, params: Sequence[object], limit: int = -1) -> list[StoredMessage]:
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)}, content FROM messages WHERE {where}"  # noqa: S608
            " ORDER BY received_at, rowid LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [self._message(r) for r in rows]

    def _message(self, row: Sequence[Any]) -> StoredMessage:
        meta = dict(zip(_COLUMNS, row[:-1], strict=True))
        body, content = self._open(meta["sender"], meta["id"], row[-1])
        meta["via"] = tuple(json.loads(meta["via"]))
        meta["seen"] = bool(meta["seen"])
        return StoredMessage(**meta, content=content, body=body)

    def _open(self, sender: str, msg_id: str, sealed: bytes | None) -> tuple[Any, str]:
        if sealed is None:
            return None, "expired"
        for key in self._keys:
            try:
                plain = json.loads(key.box.decrypt(bytes(sealed)))
            except nacl.exceptions.CryptoError:
                continue
            if plain.get("sender") == sender and plain.get("id") == msg_id:
                return plain["body"], "ok"  # the content of this row, not another's
        return None, "locked"

    def unseen(self, limit: int) -> list[StoredMessage]:
        return self._select("seen = 0", (), limit)

    def mark_seen(self, messages: Iterable[StoredMessage]) -> None:
        with self._db:
            self._db.executemany(
                "UPDATE messages SET seen = 1 WHERE sender = ? AND id = ?",
                [(m.sender, m.id) for m in messages],
            )

    def since(self, since: int, limit: int = -1) -> list[StoredMessage]:
        """Messages received at or after ``since`` (ms), oldest first."""
        return self._select("received_at >= ?", (since,), limit)

    def of_types(self, types: Iterable[str]) -> list[StoredMessage]:
        """Messages of these types (e.g. the requests this agency was sent), oldest first."""
        return self._select(
            "type IN (SELECT value FROM json_each(?))", (json.dumps(sorted(types)),)
        )

    def replies_to(self, msg_id: str) -> list[StoredMessage]:
        """Messages naming ``msg_id`` in ``in_reply_to`` (answers this agency received)."""
        return self._select("in_reply_to = ?", (msg_id,))

    def get(self, msg_id: str) -> list[StoredMessage]:
        """The messages with this id (ids are unique per sender: almost always one)."""
        return self._select("id = ?", (msg_id,))

    def thread(self, message: StoredMessage) -> list[StoredMessage]:
        """Other stored messages with its case ref, it answers, or that answer it."""
        return self._select(
            "NOT (sender = ? AND id = ?) AND ((case_ref IS NOT NULL AND case_ref = ?)"
            " OR id = ? OR in_reply_to = ?)",
            (message.sender, message.id, message.case_ref, message.in_reply_to, message.id),
        )


def open_store(profile: Profile, identities: Sequence[Identity], now: int) -> MessageStore:
    """The profile's message store, content past its ``[store]`` retention dropped."""
    return MessageStore(
        store_path(profile), identities, retention=profile.store.retention(), now=now
    )
