"""What the audit log stores per leaf, and the one SQLite schema of its file.

An :class:`AuditRecord` is appended; a :class:`StoredEntry` is read back,
with its leaf index. Only ``data`` is covered by the Merkle tree: the other
fields are metadata copied from the record for search, and an auditor
re-derives them from the bytes rather than trusting the columns.

:data:`SCHEMA` is the whole file, every table of every module of this
package (``entries`` and ``nodes``: :mod:`.storage`; ``postings``, ``tags``,
``cases``, ``meta``: :mod:`.search`; ``checkpoints``, ``cosignatures``,
``witnessed``, ``alarms``: :mod:`.witness`). It is kept in one piece; its
tables are byte for byte those of schema 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

SCHEMA_VERSION = 3
"""3: the tables of schema 2, but every leaf (``entries.data``) is an audit
entry in the canonical encoding of SPEC §1.1, whose map header is the
shortest form; schema 2 wrote a ``map16`` header for every entry, so no
conforming reader reproduces its leaf hashes, and this release's decoder refuses
its leaves as non-canonical. Leaves are hashed into checkpoints peers have
cosigned, so they cannot be rewritten: a schema 2 file is refused by
:class:`~.log.AuditLog`, never migrated (:data:`OLDER_SCHEMAS` says what to do).

2: ``postings``, ``tags`` and ``cases`` replaced the ``parties`` and
``countries`` tables and the column indexes other than ``msg_id``, and ``nodes``
is keyed by post order: appends write a fifth of the bytes they did."""

OLDER_SCHEMAS = {
    1: "a schema 1 log needs the ixb release that wrote it",
    2: (
        "its audit entries are in the old leaf encoding (a map16 header where SPEC §1.1 "
        "requires the shortest), which this release refuses to read back and which no "
        "conforming reader can hash; keep the file as the archive it is (the ixb release "
        "that wrote it still reads and verifies it), start the hub with a new audit log "
        "path, and tell the peer hubs' operators, whose witnesses remember this log's "
        "last checkpoint"
    ),
}
"""Why a file of an older schema is refused, and what to do: the end of the error."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx        INTEGER PRIMARY KEY,
    data       BLOB NOT NULL,
    at         INTEGER NOT NULL,
    event      TEXT NOT NULL,
    msg_id     TEXT,
    type       TEXT,
    sender     TEXT,
    recipients TEXT NOT NULL,
    case_ref   TEXT,
    code       TEXT,
    peer       TEXT
);
CREATE INDEX IF NOT EXISTS entries_msg_id ON entries(msg_id) WHERE msg_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS postings (
    block  INTEGER NOT NULL,
    tag    TEXT NOT NULL,
    leaves BLOB NOT NULL,
    PRIMARY KEY (block, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    tag   TEXT PRIMARY KEY,
    first INTEGER NOT NULL,
    last  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cases (
    span     INTEGER NOT NULL,
    case_ref TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    PRIMARY KEY (span, case_ref, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    pos   INTEGER PRIMARY KEY,
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cosignatures (
    size    INTEGER NOT NULL,
    witness TEXT NOT NULL,
    note    BLOB NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
);
CREATE TABLE IF NOT EXISTS witnessed (
    origin TEXT NOT NULL,
    size   INTEGER NOT NULL,
    root   BLOB NOT NULL,
    note   BLOB NOT NULL,
    at     INTEGER NOT NULL,
    PRIMARY KEY (origin, size)
);
CREATE TABLE IF NOT EXISTS alarms (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    origin   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    detail   TEXT NOT NULL,
    evidence BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS alarm_repeats (
    origin  TEXT NOT NULL,
    against INTEGER NOT NULL,
    repeats INTEGER NOT NULL DEFAULT 0,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (origin, against)
);
"""

ENTRY_COLUMNS = "e.idx, e.data, e.at, e.event, e.msg_id, e.type, e.sender, e.recipients," + (
    " e.case_ref, e.code, e.peer"
)
"""The ``entries`` columns of a :class:`StoredEntry`, in order, for ``entries e``."""

_JSON = msgspec.json.Encoder()
_RECIPIENTS = msgspec.json.Decoder(tuple[str, ...])


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the hub appends: the exact leaf bytes and the metadata to find them by."""

    data: bytes
    at_ms: int
    event: str
    msg_id: str | None = None
    type: str | None = None
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    case_ref: str | None = None
    code: str | None = None
    peer: str | None = None
    in_reply_to: str | None = None  # indexed (``reply=`` postings), not a column

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise TypeError("audit record data must be bytes")
        if isinstance(self.at_ms, bool) or not isinstance(self.at_ms, int) or self.at_ms < 0:
            raise ValueError("audit record at_ms must be a non-negative integer")
        if not isinstance(self.event, str) or not self.event:
            raise ValueError("audit record event must be a non-empty string")
        for name in ("msg_id", "type", "sender", "case_ref", "code", "peer", "in_reply_to"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"audit record {name} must be a string or None")
        if not isinstance(self.recipients, tuple) or not all(
            isinstance(r, str) for r in self.recipients
        ):
            raise TypeError("audit record recipients must be a tuple of strings")


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A record as stored, with its leaf index."""

    index: int
    data: bytes
    at_ms: int
    event: str
    msg_id: str | None
    type: str | None
    sender: str | None
    recipients: tuple[str, ...]
    case_ref: str | None
    code: str | None
    peer: str | None


def entry_row(index: int, r: AuditRecord) -> tuple[object, ...]:
    """The ``entries`` row of record ``r`` at leaf ``index``."""
    return (
        index,
        r.data,
        r.at_ms,
        r.event,
        r.msg_id,
        r.type,
        r.sender,
        _JSON.encode(r.recipients).decode(),
        r.case_ref,
        r.code,
        r.peer,
    )


def stored_entry(row: tuple[Any, ...]) -> StoredEntry:
    """The entry of a row of :data:`ENTRY_COLUMNS`."""
    idx, data, at, event, msg_id, type_, sender, recipients, case_ref, code, peer = row
    return StoredEntry(
        idx,
        bytes(data),
        at,
        event,
        msg_id,
        type_,
        sender,
        _RECIPIENTS.decode(recipients),
        case_ref,
        code,
        peer,
    )


def json_array(values: Iterable[int | str]) -> str:
    """A JSON array for ``json_each``: how a list of leaves, hashes or tags goes into
    one statement."""
    return _JSON.encode(list(values)).decode()


def check_range(name: str, value: int, lo: int, hi: int) -> None:
    """``value`` is an integer in ``[lo, hi]``: TypeError, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value} is outside {lo}..{hi}")
