"""The operator's live changes to a hub: agencies and liaison users, in ``registry.sqlite``.

``ixb hub agency …`` and ``ixb hub user …`` write here, each change one
SQLite transaction (the new state of the row and a ``changes`` row naming the
operator), from another process than the hub's. The running hub polls the
highest change number every :data:`POLL_S` and applies what is new: a new
directory version signed and sent to every peer, the liaison users the pages
read, one ``policy_changed`` audit entry per change with its actor. Why a
shared file rather than a signal or a request over NATS: docs/design-decisions.md.

The hub's TOML ``[[agency]]`` and ``[[user]]`` blocks are the starting point;
a row here for the same agency or user supersedes its block (a removed user
is a row marked removed).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from broker.config import HubConfig
from protocols.directory import PreviousKey, RevocationInfo
from protocols.enckey import LastUpdate
from protocols.errors import ConfigError, IoError, IxbError
from protocols.identifiers import Principal, parse_agency
from protocols.keys import PublicIdentity, read_public
from protocols.roles import Role

UserRole = Literal["liaison", "auditor"]
USER_ROLES: tuple[UserRole, ...] = ("liaison", "auditor")
REGISTRY_FILE = "registry.sqlite"
POLL_S = 0.5
"""How often the hub looks for changes: a revocation is in force at home within this."""
BUSY_TIMEOUT_MS = 5_000
MAX_KEY_FILE = 64 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS agencies (
    id             TEXT PRIMARY KEY,
    roles          TEXT NOT NULL,
    signing        BLOB NOT NULL,
    encryption     BLOB NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT,
    previous       TEXT NOT NULL DEFAULT '[]',
    previous_enc   TEXT NOT NULL DEFAULT '[]',
    nats_user      TEXT,
    updated        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    removed       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS key_updates (
    id          TEXT PRIMARY KEY,
    created     INTEGER NOT NULL,
    accepted_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    at    INTEGER NOT NULL,
    actor TEXT NOT NULL,
    what  TEXT NOT NULL
);
"""


def operator() -> str:
    """Who made a change: the OS user running the command (as ``ixb audit`` names readers)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@dataclass(frozen=True, slots=True)
class AgencyRecord:
    """One agency as the hub lists it in its directory."""

    public: PublicIdentity
    roles: tuple[Role, ...]
    revoked: RevocationInfo | None = None
    config_revoked: str | None = None
    """``revoked = "reason"`` of the TOML block (its time: the first directory that said so)."""
    previous: tuple[PreviousKey, ...] = ()
    previous_encryption: tuple[tuple[bytes, int], ...] = ()
    """Encryption keys replaced by rotation, with the end of their grace (ms)."""
    nats_user: str | None = None


@dataclass(frozen=True, slots=True)
class UserRow:
    name: str
    role: UserRole
    password_hash: str
    removed: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    at: int
    actor: str
    what: str


class Registry:
    """``registry.sqlite``: written by the operator's commands, read by the running hub."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise IoError(f"cannot open {path}: {exc}") from None

    @classmethod
    def of(cls, config: HubConfig) -> Registry:
        return cls(config.path(config.hub.state_dir) / REGISTRY_FILE)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def change(self, actor: str, at: int, what: str) -> Iterator[sqlite3.Connection]:
        """One change: the caller's writes and its ``changes`` row commit together, or neither."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute(
                "INSERT INTO changes (at, actor, what) VALUES (?, ?, ?)", (at, actor, what[:256])
            )
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # --- one hub process taking over from another (broker/shared_state.py) ------------

    def snapshot(self) -> bytes:
        """The whole registry as one SQLite image, marked for a rollback journal (file
        format bytes 18 and 19 = 1): an image in memory cannot be opened in WAL mode."""
        image = bytearray(self._db.serialize())
        image[18:20] = b"\x01\x01"
        return bytes(image)

    def replace(self, image: bytes, aside: Path) -> None:
        """Become ``image`` (another process's registry); what this file held is copied to
        ``aside`` first, kept for the operator."""
        with contextlib.closing(sqlite3.connect(aside)) as kept:
            self._db.backup(kept)
        with contextlib.closing(sqlite3.connect(":memory:")) as source:
            source.deserialize(image)
            source.backup(self._db)

    # --- reads ------------------------------------------------------------------------

    def last_seq(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(row[0])

    def changes_since(self, seq: int) -> list[Change]:
        rows = self._db.execute(
            "SELECT seq, at, actor, what FROM changes WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
        return [Change(*r) for r in rows]

    def agencies(self) -> dict[Principal, AgencyRecord]:
        rows = self._db.execute(
            "SELECT id, roles, signing, encryption, revoked_at, revoked_reason, previous,"
            " previous_enc, nats_user FROM agencies"
        ).fetchall()
        out: dict[Principal, AgencyRecord] = {}
        for agency, roles, signing, encryption, at, reason, prev, prev_enc, nats_user in rows:
            principal = parse_agency(agency)
            out[principal] = AgencyRecord(
                public=PublicIdentity(principal, bytes(signing), bytes(encryption)),
                roles=tuple(Role(r) for r in json.loads(roles)),
                revoked=None if at is None else RevocationInfo(at=at, reason=reason or "revoked"),
                previous=tuple(
                    PreviousKey(key=bytes.fromhex(k), valid_until=u) for k, u in json.loads(prev)
                ),
                previous_encryption=tuple((bytes.fromhex(k), u) for k, u in json.loads(prev_enc)),
                nats_user=nats_user,
            )
        return out

    def last_key_update(self, agency: Principal) -> LastUpdate | None:
        """The agency's last self-service encryption-key update this hub accepted (SPEC §12.1)."""
        row = self._db.execute(
            "SELECT created, accepted_at FROM key_updates WHERE id = ?", (str(agency),)
        ).fetchone()
        return None if row is None else LastUpdate(created=row[0], accepted_at=row[1])

    def users(self) -> dict[str, UserRow]:
        rows = self._db.execute("SELECT name, role, password_hash, removed FROM users").fetchall()
        out: dict[str, UserRow] = {}
        for name, role, password_hash, removed in rows:
            for known in USER_ROLES:  # a row of another role is never a user
                if role == known:
                    out[name] = UserRow(name, known, password_hash, bool(removed))
        return out

    # --- writes (inside :meth:`change`) -----------------------------------------------

    @staticmethod
    def put_agency(db: sqlite3.Connection, record: AgencyRecord, now: int) -> None:
        revoked = record.revoked
        db.execute(
            "INSERT OR REPLACE INTO agencies (id, roles, signing, encryption, revoked_at,"
            " revoked_reason, previous, previous_enc, nats_user, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(record.public.principal),
                json.dumps([r.value for r in record.roles]),
                record.public.signing,
                record.public.encryption,
                None if revoked is None else revoked.at,
                None if revoked is None else revoked.reason,
                json.dumps([[p.key.hex(), p.valid_until] for p in record.previous]),
                json.dumps([[k.hex(), u] for k, u in record.previous_encryption]),
                record.nats_user,
                now,
            ),
        )

    @staticmethod
    def put_key_update(db: sqlite3.Connection, agency: Principal, last: LastUpdate) -> None:
        db.execute(
            "INSERT OR REPLACE INTO key_updates (id, created, accepted_at) VALUES (?, ?, ?)",
            (str(agency), last.created, last.accepted_at),
        )

    @staticmethod
    def put_user(db: sqlite3.Connection, user: UserRow) -> None:
        db.execute(
            "INSERT OR REPLACE INTO users (name, role, password_hash, removed) VALUES (?, ?, ?, ?)",
            (user.name, user.role, user.password_hash, int(user.removed)),
        )


def agency_public_keys(config: HubConfig) -> dict[Principal, PublicIdentity]:
    """The public keys of the config's ``[[agency]]`` blocks (no passphrase needed)."""
    agencies: dict[Principal, PublicIdentity] = {}
    for i, agency in enumerate(config.agency):
        path = config.path(agency.key)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise ConfigError(
                f"agency[{i}].key: cannot read {path}: {exc.strerror or exc}"
            ) from None
        if len(data) > MAX_KEY_FILE:
            raise ConfigError(f"agency[{i}].key: {path} is larger than {MAX_KEY_FILE} bytes")
        try:
            public = read_public(data)
        except IxbError as exc:
            raise ConfigError(f"agency[{i}].key: {exc.detail}") from None
        if str(public.principal) != agency.id:
            raise ConfigError(
                f"agency[{i}].key: key file is for {public.principal}, not {agency.id}"
            )
        agencies[public.principal] = public
    return agencies


def config_agencies(
    config: HubConfig, keys: Mapping[Principal, PublicIdentity]
) -> dict[Principal, AgencyRecord]:
    """The TOML ``[[agency]]`` blocks as records."""
    roles = config.agency_roles()
    revoked = config.revoked()
    return {
        p: AgencyRecord(public=pub, roles=roles[p], config_revoked=revoked.get(p))
        for p, pub in keys.items()
    }


def merged_agencies(
    config: Mapping[Principal, AgencyRecord], registry: Mapping[Principal, AgencyRecord]
) -> dict[Principal, AgencyRecord]:
    """The config's agencies, each superseded by its registry row, and the registry's new ones."""
    return dict(sorted({**config, **registry}.items()))


def merged_users(config: HubConfig, registry: Mapping[str, UserRow]) -> dict[str, UserRow]:
    """Liaison users: the config's, superseded by registry rows; removed ones left out."""
    users = {u.name: UserRow(u.name, u.role, u.password_hash) for u in config.user}
    users.update(registry)
    return {n: u for n, u in sorted(users.items()) if not u.removed}
