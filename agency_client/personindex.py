"""An agency's person index: hit/no-hit answers to ``person.query``, and who asked.

One SQLite file, owned by the agency (default ``<CC>-<NAME>.index`` beside
its profile). It holds no name, date or document number in clear: each row
is kept as keyed BLAKE2b hashes (libsodium) of its normal forms
(:mod:`agency_client.namematch`), beside the opaque reference a hit answers
with. The hash key is random, made when the index is created, and sealed
(secretbox) under a key derived from the agency's signing key; a key
rotation seals it again under the new key, so the index outlives rotations.
Each query answered is recorded for the owner: who asked, when, the message
id, the references hit, a keyed hash of the terms, and the purpose and legal
basis sealed under the index key. The hit rule is in
docs/operations/person-index.md.
"""

from __future__ import annotations

import csv
import io
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
import nacl.utils
import structlog

from agency_client.namematch import (
    NormalQuery,
    birth_date_forms,
    name_keys,
    normal_birth_date,
    normal_document,
    normal_nationality,
    normal_query,
)
from agency_client.profile import Profile
from agency_client.sdk import AgencyClient, Incoming
from protocols.errors import ConfigError, IoError, KeyFileError
from protocols.keys import Identity, blake2b_256
from protocols.limits import MAX_SHORT_TEXT
from protocols.messages import PersonQuery, PersonResult, ReferenceStr
from transport.files import read_bytes

KEY_SEAL_CONTEXT = b"ixb person index key seal v1"
"""What the key sealing the index key is derived for (from the agency's signing key)."""
MAX_INDEX_FILE_BYTES = 256 * 1024 * 1024
MAX_ERRORS_SHOWN = 5
COLUMNS = ("reference", "surname", "given_names", "birth_date", "nationality", "document_number")
REQUIRED = ("reference", "surname")

log = structlog.get_logger("ixb.personindex")


def index_path(profile: Profile) -> Path:
    """Where an agency's person index lives unless ``--index`` says otherwise."""
    return Path(profile.base_dir) / f"{profile.principal.country}-{profile.principal.name}.index"


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One row of an export, validated; it lives only while being loaded."""

    line: int
    reference: str
    surname: str
    given_names: str | None
    birth_date: str | None
    nationality: str | None
    document_number: str | None


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One query the index answered, as its owner sees it (no term of the query)."""

    at: int
    requester: str
    message_id: str
    references: tuple[str, ...]
    terms: str
    """Keyed hash of the normalised terms: equal for the same person asked the same way."""
    purpose: str | None
    legal_basis: str | None
    """None: sealed under an index key this agency no longer holds."""

    @property
    def hit(self) -> bool:
        return bool(self.references)


# --- reading an export ------------------------------------------------------------------


def parse_export(data: bytes, fmt: str, name: str) -> list[IndexRow]:
    """Every row of a CSV (with a header line) or JSON (a list of objects) export.

    All or nothing: any bad row fails the whole file with :class:`ConfigError`
    naming the lines (the first few, and how many more).
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not UTF-8 text") from None
    raw = _csv_rows(text, name) if fmt == "csv" else _json_rows(text, name)
    rows: list[IndexRow] = []
    errors: list[str] = []
    for line, fields in raw:
        try:
            rows.append(_row(line, fields))
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = len(errors) - MAX_ERRORS_SHOWN
        raise ConfigError(
            f"{name}: {len(errors)} bad row{'s' if len(errors) > 1 else ''}, nothing loaded: "
            f"{shown}{f'; and {more} more' if more > 0 else ''}"
        )
    return rows


def _csv_rows(text: str, name: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError(f"{name}: empty; the first line names the columns") from None
    except csv.Error as exc:
        raise ConfigError(f"{name}: line 1: {exc}") from None
    columns = [c.strip().lower() for c in header]
    unknown = sorted(set(columns) - set(COLUMNS))
    missing = [c for c in REQUIRED if c not in columns]
    if unknown or missing or len(set(columns)) != len(columns):
        raise ConfigError(
            f"{name}: line 1: columns must be among {', '.join(COLUMNS)} (each once; "
            f"reference and surname required); unknown {unknown}, missing {missing}"
        )
    out: list[tuple[int, dict[str, Any]]] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # a blank line
            line = reader.line_num
            if len(cells) != len(columns):
                out.append((line, {"__cells__": len(cells), "__want__": len(columns)}))
                continue
            out.append((line, dict(zip(columns, cells, strict=True))))
    except csv.Error as exc:
        raise ConfigError(f"{name}: line {reader.line_num}: {exc}") from None
    return out


def _json_rows(text: str, name: str) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        raise ConfigError(f"{name}: not a JSON array of objects")
    pos = _skip_ws(text, pos + 1)
    out: list[tuple[int, dict[str, Any]]] = []
    if text.startswith("]", pos):
        return out
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: line {exc.lineno}: not JSON: {exc.msg}") from None
        out.append((line, value if isinstance(value, dict) else {"__not_object__": True}))
        pos = _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
            continue
        if text.startswith("]", pos) and not text[_skip_ws(text, pos + 1) :]:
            return out
        line = text.count("\n", 0, pos) + 1
        raise ConfigError(f"{name}: line {line}: expected ',' or the closing ']'")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _row(line: int, fields: dict[str, Any]) -> IndexRow:
    if "__not_object__" in fields:
        raise ValueError("not an object")
    if "__cells__" in fields:
        raise ValueError(f"{fields['__cells__']} cells, the header has {fields['__want__']}")
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    values: dict[str, str | None] = {}
    for column in COLUMNS:
        value = fields.get(column)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{column} is not text")
        value = value.strip() if value else None
        if value and len(value) > MAX_SHORT_TEXT:
            raise ValueError(f"{column} longer than {MAX_SHORT_TEXT} characters")
        values[column] = value or None
    reference = values["reference"]
    if reference is None:
        raise ValueError("no reference")
    try:
        msgspec.convert(reference, ReferenceStr)
    except msgspec.ValidationError:
        raise ValueError(
            "reference must be A-Z, 0-9, '/' and '-' (at most 64), e.g. MMR-ATTU-2026-000112"
        ) from None
    surname = values["surname"]
    if surname is None or not name_keys(surname, None):
        raise ValueError("no surname")
    birth = values["birth_date"]
    if birth is not None and normal_birth_date(birth) is None:
        raise ValueError(f"birth_date {birth!r} is not YYYY, YYYY-MM or YYYY-MM-DD")
    nationality = values["nationality"]
    if nationality is not None and normal_nationality(nationality) is None:
        raise ValueError(f"nationality {nationality!r} is not a three-letter code")
    document = values["document_number"]
    if document is not None and not normal_document(document):
        raise ValueError("document_number has no letter or digit")
    return IndexRow(
        line=line,
        reference=reference,
        surname=surname,
        given_names=values["given_names"],
        birth_date=birth,
        nationality=nationality,
        document_number=document,
    )


def read_export(path: Path, fmt: str | None) -> list[IndexRow]:
    """:func:`parse_export` of a file; the format from ``fmt`` or the file's suffix."""
    if fmt is None:
        fmt = {".csv": "csv", ".json": "json"}.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{path}: say --format csv or json (no .csv or .json suffix)")
    return parse_export(read_bytes(path, MAX_INDEX_FILE_BYTES), fmt, str(path))


# --- the index -------------------------------------------------------------------------


class _Keys:
    """The index's hash key and its seal key, both derived from one random master key."""

    def __init__(self, master: bytes) -> None:
        self.master = master
        self.hash_key = blake2b_256(b"ixb person index: term hashes", key=master)
        self.box = nacl.secret.SecretBox(blake2b_256(b"ixb person index: query log", key=master))

    def __repr__(self) -> str:
        return "_Keys(…)"


def _seal_box(identity: Identity) -> nacl.secret.SecretBox:
    return nacl.secret.SecretBox(identity.signing.derive_secret(KEY_SEAL_CONTEXT))


_SCHEMA = """
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, reference TEXT NOT NULL,
  digest BLOB NOT NULL UNIQUE, birth BLOB, birth_len INTEGER, nationality BLOB, document BLOB,
  loaded_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS records_document ON records (document);
CREATE INDEX IF NOT EXISTS records_reference ON records (reference);
CREATE TABLE IF NOT EXISTS names (hash BLOB NOT NULL, record INTEGER NOT NULL,
  PRIMARY KEY (hash, record)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queries (id INTEGER PRIMARY KEY, at INTEGER NOT NULL,
  requester TEXT NOT NULL, message_id TEXT NOT NULL, refs TEXT NOT NULL, terms BLOB NOT NULL,
  sealed BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS queries_at ON queries (at);
"""


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    if not create and not path.exists():
        raise ConfigError(f"no person index at {path} (ixb index load FILE makes one)")
    try:
        # readable by its owner only, like the key file it depends on
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        path.chmod(0o600)
        db = sqlite3.connect(path, timeout=10)
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise IoError(f"cannot open the person index {path}: {exc}") from None
    return db


@dataclass(frozen=True, slots=True)
class IndexStats:
    records: int
    references: int
    queries: int
    hits: int
    last_loaded: int | None
    last_query: int | None


def index_stats(path: Path) -> IndexStats:
    """Counts only: no key needed (the file holds nothing else in clear)."""
    db = _connect(path, create=False)
    try:
        records, references, last_loaded = db.execute(
            "SELECT count(*), count(DISTINCT reference), max(loaded_at) FROM records"
        ).fetchone()
        queries, hits, last_query = db.execute(
            "SELECT count(*), coalesce(sum(refs != '[]'), 0), max(at) FROM queries"
        ).fetchone()
    except sqlite3.Error as exc:
        raise IoError(f"cannot read the person index {path}: {exc}") from None
    finally:
        db.close()
    return IndexStats(records, references, queries, hits, last_loaded, last_query)


class PersonIndex:
    """An open person index. ``identities``: the agency's current keys first, then the
    ones ``ixb keys rotate`` replaced (an index key sealed under those is sealed again
    under the current key)."""

    def __init__(self, path: Path, identities: Sequence[Identity], *, create: bool = False):
        if not identities:
            raise KeyFileError("the person index opens with the agency's key file only")
        self.path = path
        self._db = _connect(path, create=create)
        try:
            self._keys = self._open_key(identities, create=create)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def _meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _open_key(self, identities: Sequence[Identity], *, create: bool) -> _Keys:
        sealed, kid = self._meta("sealed_key"), self._meta("sealed_kid")
        if sealed is None or kid is None:
            if not create:
                raise ConfigError(f"{self.path} holds no index (ixb index load FILE makes one)")
            keys = _Keys(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE))
            self._seal_under(keys, identities[0])
            return keys
        for identity in identities:
            if identity.signing.key_id != kid:
                continue
            try:
                keys = _Keys(_seal_box(identity).decrypt(sealed))
            except nacl.exceptions.CryptoError:
                raise KeyFileError(f"{self.path}: its sealed index key is damaged") from None
            if identity is not identities[0]:
                self._seal_under(keys, identities[0])  # after a key rotation
            return keys
        raise KeyFileError(
            f"{self.path} is sealed under signing key {kid.hex()[:16]}…, which this key file "
            "does not hold; reload the index from its export into a new file"
        )

    def _seal_under(self, keys: _Keys, identity: Identity) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [
                    ("sealed_key", _seal_box(identity).encrypt(keys.master)),
                    ("sealed_kid", identity.signing.key_id),
                ],
            )

    def follow(self, identity: Identity) -> None:
        """Seal the index key under ``identity`` if it is not already (a responder whose
        key was rotated while it ran): the index stays openable once the old key is gone."""
        if identity.signing.key_id != self._meta("sealed_kid"):
            self._seal_under(self._keys, identity)

    def _h(self, tag: str, value: str) -> bytes:
        return blake2b_256(tag.encode() + b"\x00" + value.encode(), key=self._keys.hash_key)

    # --- loading ---

    def load(self, rows: Iterable[IndexRow], *, replace: bool, now: int) -> tuple[int, int]:
        """Add ``rows`` in one transaction (``replace``: instead of every row held).
        Returns (added, already held)."""
        added = already = 0
        try:
            with self._db:
                if replace:
                    self._db.execute("DELETE FROM names")
                    self._db.execute("DELETE FROM records")
                for row in rows:
                    if self._insert(row, now):
                        added += 1
                    else:
                        already += 1
        except sqlite3.Error as exc:
            raise IoError(f"cannot write the person index {self.path}: {exc}") from None
        return added, already

    def _insert(self, row: IndexRow, now: int) -> bool:
        names = sorted(name_keys(row.surname, row.given_names))
        birth = normal_birth_date(row.birth_date) if row.birth_date else None
        nationality = normal_nationality(row.nationality) if row.nationality else None
        document = normal_document(row.document_number) if row.document_number else None
        canonical = json.dumps([row.reference, names, birth, nationality, document])
        cur = self._db.execute(
            "INSERT OR IGNORE INTO records (reference, digest, birth, birth_len, nationality,"
            " document, loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.reference,
                self._h("row", canonical),
                None if birth is None else self._h("birth", birth),
                None if birth is None else len(birth),
                None if nationality is None else self._h("nationality", nationality),
                None if document is None else self._h("document", document),
                now,
            ),
        )
        if cur.rowcount != 1:
            return False
        self._db.executemany(
            "INSERT OR IGNORE INTO names VALUES (?, ?)",
            [(self._h("name", key), cur.lastrowid) for key in names],
        )
        return True

    # --- answering ---

    def match(self, query: NormalQuery) -> list[str]:
        """The references of every row that is a hit for ``query`` (sorted, no repeats).

        A row is a hit when (a) a name key matches, its birth date equals the query's
        at the row's precision, and no nationality on either side differs; or (b) its
        document number and nationality both equal the query's.
        """
        refs: set[str] = set()
        if query.names and query.birth_date is not None:
            forms = birth_date_forms(query.birth_date)
            hashes = [self._h("name", k) for k in sorted(query.names)]
            nationality = (
                None if query.nationality is None else self._h("nationality", query.nationality)
            )
            places = ", ".join("?" * len(hashes))
            sql = (  # the placeholders are "?"s
                "SELECT DISTINCT r.reference, r.birth, r.birth_len, r.nationality"  # noqa: S608
                f" FROM records r JOIN names n ON n.record = r.id WHERE n.hash IN ({places})"
                " AND r.birth IS NOT NULL"
            )
            rows = self._db.execute(sql, hashes).fetchall()
            for reference, birth, birth_len, row_nationality in rows:
                if birth_len not in forms or bytes(birth) != self._h("birth", forms[birth_len]):
                    continue
                if (
                    nationality is not None
                    and row_nationality is not None
                    and bytes(row_nationality) != nationality
                ):
                    continue
                refs.add(reference)
        if query.document is not None and query.nationality is not None:
            refs.update(
                r
                for (r,) in self._db.execute(
                    "SELECT reference FROM records WHERE document = ? AND nationality = ?",
                    (
                        self._h("document", query.document),
                        self._h("nationality", query.nationality),
                    ),
                )
            )
        return sorted(refs)

    def answer(
        self, query: PersonQuery, *, requester: str, message_id: str, at: int
    ) -> PersonResult:
        """Hit (with the first matching reference) or no hit; the query is recorded first."""
        normal = normal_query(
            query.surname,
            query.given_names,
            query.birth_date,
            query.nationality,
            query.document_number,
        )
        refs = self.match(normal)
        sealed = self._keys.box.encrypt(
            json.dumps({"purpose": query.purpose, "legal_basis": query.legal_basis}).encode()
        )
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO queries (at, requester, message_id, refs, terms, sealed)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        at,
                        requester,
                        message_id,
                        json.dumps(refs),
                        self._h("query", normal.fingerprint_text()),
                        sealed,
                    ),
                )
        except sqlite3.Error as exc:
            raise IoError(f"cannot record the query in {self.path}: {exc}") from None
        if not refs:
            return PersonResult(hit=False)
        return PersonResult(hit=True, reference=refs[0])

    def queries(self, *, since: int = 0, reference: str | None = None) -> list[QueryRecord]:
        """The queries answered since ``since`` (ms), oldest first; only those that hit
        ``reference`` if given."""
        out = []
        for at, requester, message_id, refs_text, terms, sealed in self._db.execute(
            "SELECT at, requester, message_id, refs, terms, sealed FROM queries"
            " WHERE at >= ? ORDER BY at, id",
            (since,),
        ):
            refs = tuple(json.loads(refs_text))
            if reference is not None and reference not in refs:
                continue
            try:
                opened = json.loads(self._keys.box.decrypt(bytes(sealed)))
            except nacl.exceptions.CryptoError:
                opened = {}
            out.append(
                QueryRecord(
                    at=at,
                    requester=requester,
                    message_id=message_id,
                    references=refs,
                    terms=bytes(terms).hex()[:16],
                    purpose=opened.get("purpose"),
                    legal_basis=opened.get("legal_basis"),
                )
            )
        return out


def open_index(path: Path, identities: Sequence[Identity], *, create: bool = False) -> PersonIndex:
    return PersonIndex(path, identities, create=create)


class PersonResponder:
    """``ixb agency respond --index``: answers each ``person.query`` from the index.

    The query's terms are kept nowhere: not in the log (message ids only), not
    in the agency's message store (this responder takes ``person.query`` out of
    what the client keeps), only as keyed hashes in the index's query record.
    """

    def __init__(self, client: AgencyClient, path: Path) -> None:
        self.index = PersonIndex(path, client.held_keys)
        keep = client.keep

        def keep_all_but_queries(item: Incoming) -> None:
            if keep is not None and item.header.type != PersonQuery.TYPE:
                keep(item)

        client.keep = keep_all_but_queries

    async def __call__(self, client: AgencyClient, item: Incoming) -> None:
        if not isinstance(item.body, PersonQuery):
            return
        self.index.follow(client.identity)
        result = self.index.answer(
            item.body, requester=str(item.sender), message_id=item.message_id, at=client.clock()
        )
        log.info("person_query_answered", msg_id=item.message_id, hit=result.hit)
        await client.reply(item, result)

    def close(self) -> None:
        self.index.close()
