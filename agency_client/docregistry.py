"""An issuing state's document registry and the automated answer to a document check.

The document authority of a country runs ``ixb agency respond`` with its
registry: every ``doc.verify.request`` for a document it issued is answered
in milliseconds, with no human in the loop, and without disclosing anything
the asking officer did not already hold (status and which fields differ).

Where the records come from is a :class:`DocumentSource`: the embedded
SQLite registry (:class:`SqliteRegistry`, filled from a country's CSV or
JSON export by ``ixb registry load``), a JSON file (:class:`DocumentRegistry`),
or a country's own system behind a few lines of Python
(``python:module:factory``, see :func:`open_source`).
"""

from __future__ import annotations

import csv
import enum
import importlib
import io
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

from protocols.errors import ConfigError, IoError, IxbError, UsageError
from protocols.fields import check_date
from protocols.messages import (
    AnsweredBy,
    DocField,
    DocStatus,
    DocVerifyRequest,
    DocVerifyResponse,
    validate_doc_request,
)
from protocols.mrz import MRZ_COUNTRY_CODES, Mrz
from transport.clock import wall_ms
from transport.files import read_bytes

MAX_REGISTRY_BYTES = 256 * 1024 * 1024
MAX_FIELD_CHARS = 256

RECORD_STATUSES: Final = frozenset(
    {
        DocStatus.VALID,
        DocStatus.NOT_ISSUED,
        DocStatus.REVOKED,
        DocStatus.REPORTED_LOST,
        DocStatus.REPORTED_STOLEN,
        DocStatus.UNKNOWN,
    }
)
"""What a registry row may record; ``expired`` and ``data_mismatch`` are decided per check."""

COLUMNS: Final = (
    "document_number",
    "issuing_state",
    "surname",
    "given_names",
    "birth_date",
    "expiry_date",
    "nationality",
    "sex",
    "status",
)
"""The header row of a CSV export (``status`` may be left out: every row is valid)."""


class DocumentRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    document_number: str
    issuing_state: str
    surname: str
    given_names: str
    birth_date: str
    expiry_date: str
    nationality: str
    sex: str
    status: DocStatus = DocStatus.VALID


@runtime_checkable
class DocumentSource(Protocol):
    """What a country's own document system provides: one record by number, or None.

    ``issuing_state`` is the MRZ's three-letter code, ``number`` the document
    number as the MRZ gives it (upper case, no filler). It may raise
    :class:`~protocols.errors.IxbError` (the check is retried later).
    """

    def lookup(self, issuing_state: str, number: str) -> DocumentRecord | None: ...


class SourceKind(enum.StrEnum):
    SQLITE = "sqlite"
    JSON = "json"
    PYTHON = "python"


# --- the answer -----------------------------------------------------------------------


def answer_check(
    source: DocumentSource, request: DocVerifyRequest, *, today: date, now_ms: int
) -> DocVerifyResponse:
    """The automated answer, decided at ``now_ms`` (``today`` is its UTC date).

    Order: an unreadable MRZ is ``unknown`` (the code in ``note``); no record:
    ``not_issued``; a record not valid: its status; MRZ fields that differ from
    the record: ``data_mismatch`` naming them; the registry's or the MRZ's
    expiry before today: ``expired``; else ``valid``.
    """
    try:
        mrz = validate_doc_request(request, today)
    except IxbError as exc:
        return _automated(DocStatus.UNKNOWN, now_ms, note=exc.code)
    try:
        record = source.lookup(mrz.issuing_state, mrz.document_number)
    except IxbError:
        raise
    except Exception as exc:  # noqa: BLE001 - a country's own code: typed, logged, retried
        raise IoError(f"document source failed ({type(exc).__name__})") from None
    if record is None:
        return _automated(DocStatus.NOT_ISSUED, now_ms)
    try:
        status = DocStatus(record.status)  # a country's own source may hand over the text
    except ValueError:
        status = DocStatus.DATA_MISMATCH  # not a status a record may hold: refused below
    if status not in RECORD_STATUSES:
        raise IoError("document source: a record's status is not one a registry holds")
    if status is not DocStatus.VALID:
        return _automated(status, now_ms)
    mismatched = mismatches(record, mrz)
    if mismatched:
        return _automated(DocStatus.DATA_MISMATCH, now_ms, mismatched=tuple(mismatched))
    if record.expiry_date < today.isoformat() or mrz.expiry_date < today:
        return _automated(DocStatus.EXPIRED, now_ms)
    return _automated(DocStatus.VALID, now_ms)


def _automated(
    status: DocStatus,
    now_ms: int,
    *,
    note: str | None = None,
    mismatched: tuple[DocField, ...] = (),
) -> DocVerifyResponse:
    return DocVerifyResponse(
        status=status,
        answered_by=AnsweredBy.AUTOMATED,
        checked_ms=now_ms,
        mismatched_fields=mismatched,
        note=note,
    )


def mismatches(record: DocumentRecord, mrz: Mrz) -> list[DocField]:
    """The MRZ fields that differ from the registry's record (names: as the MRZ can hold them)."""
    out: list[DocField] = []
    if record.surname.upper() != mrz.surname and not (
        mrz.name_may_be_truncated and record.surname.upper().startswith(mrz.surname)
    ):
        out.append(DocField.SURNAME)
    if not record.given_names.upper().startswith(mrz.given_names):
        out.append(DocField.GIVEN_NAMES)
    if mrz.birth_date is not None and record.birth_date != mrz.birth_date.isoformat():
        out.append(DocField.BIRTH_DATE)
    if record.expiry_date != mrz.expiry_date.isoformat():
        out.append(DocField.EXPIRY_DATE)
    if record.nationality != mrz.nationality:
        out.append(DocField.NATIONALITY)
    if record.sex != mrz.sex:
        out.append(DocField.SEX)
    return out


# --- reading exports ------------------------------------------------------------------


def check_record(raw: dict[str, Any], where: str) -> DocumentRecord:
    """One row of an export as a record, or :class:`UsageError` naming ``where`` and the field."""
    unknown = sorted(set(raw) - set(COLUMNS))
    if unknown:
        raise UsageError(f"{where}: unknown column {unknown[0]!r}")
    missing = [c for c in COLUMNS[:-1] if raw.get(c) in (None, "")]
    if missing:
        raise UsageError(f"{where}: {missing[0]} is missing")
    for name, value in raw.items():
        if not isinstance(value, str):
            raise UsageError(f"{where}: {name} is not text")
        if len(value) > MAX_FIELD_CHARS or any(ord(ch) < 0x20 for ch in value):
            raise UsageError(f"{where}: {name} is too long or holds control characters")
    status_text = raw.get("status") or DocStatus.VALID.value
    try:
        status = DocStatus(status_text.strip().lower())
    except ValueError:
        raise UsageError(f"{where}: status is not one of {_statuses()}") from None
    if status not in RECORD_STATUSES:
        raise UsageError(f"{where}: status {status} is decided per check; use one of {_statuses()}")
    number = raw["document_number"].strip().upper().replace(" ", "")
    if not number.isalnum() or not number.isascii():
        raise UsageError(f"{where}: document_number holds only A-Z and 0-9")
    fields = {c: raw[c].strip() for c in COLUMNS[:-1]}
    for name in ("issuing_state", "nationality"):
        if fields[name] not in MRZ_COUNTRY_CODES:
            raise UsageError(f"{where}: {name} is not an ICAO 9303 state code")
    try:
        check_date(fields["birth_date"], "birth_date")
        check_date(fields["expiry_date"], "expiry_date")
    except IxbError as exc:
        raise UsageError(f"{where}: {exc.detail}") from None
    if fields["sex"] not in ("M", "F", "X"):
        raise UsageError(f"{where}: sex is M, F or X")
    return DocumentRecord(
        document_number=number,
        issuing_state=fields["issuing_state"],
        surname=fields["surname"],
        given_names=fields["given_names"],
        birth_date=fields["birth_date"],
        expiry_date=fields["expiry_date"],
        nationality=fields["nationality"],
        sex=fields["sex"],
        status=status,
    )


def _statuses() -> str:
    return ", ".join(sorted(RECORD_STATUSES))


def read_export(data: bytes, fmt: str, name: str) -> list[DocumentRecord]:
    """Every record of an export, or :class:`UsageError` for the first bad row (its line number).

    CSV: a header row naming the columns (:data:`COLUMNS`, any order), one
    document a line; JSON: a list of objects with the same keys (the line is
    the one the object starts on). A number twice in one file is a bad row.
    """
    rows = _csv_rows(data, name) if fmt == "csv" else _json_rows(data, name)
    seen: dict[tuple[str, str], int] = {}
    out = []
    for line, raw in rows:
        record = check_record(raw, f"{name} line {line}")
        key = (record.issuing_state, record.document_number)
        if key in seen:
            raise UsageError(
                f"{name} line {line}: {record.issuing_state} {record.document_number} "
                f"is on line {seen[key]} too"
            )
        seen[key] = line
        out.append(record)
    return out


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"{name} line {line}: not UTF-8") from None


def _csv_rows(data: bytes, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(_text(data, name), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise UsageError(f"{name} line 1: no header row")
        columns = [h.strip().lower() for h in header]
        for bad in columns:
            if bad not in COLUMNS:
                raise UsageError(
                    f"{name} line 1: unknown column {bad!r} (columns: {', '.join(COLUMNS)})"
                )
        if len(set(columns)) != len(columns):
            raise UsageError(f"{name} line 1: a column is named twice")
        start = reader.line_num + 1
        for row in reader:
            if not any(cell.strip() for cell in row):
                start = reader.line_num + 1
                continue  # blank lines are not rows
            if len(row) != len(columns):
                raise UsageError(
                    f"{name} line {start}: {len(row)} fields, the header has {len(columns)}"
                )
            yield start, dict(zip(columns, row, strict=True))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UsageError(f"{name} line {reader.line_num}: {exc}") from None


def _json_rows(data: bytes, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    text = _text(data, name)
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if pos >= len(text) or text[pos] != "[":
        raise UsageError(f"{name} line {_line(text, pos)}: a JSON export is a list of objects")
    pos = _skip_space(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        line = _line(text, pos)
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{name} line {exc.lineno}: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{name} line {line}: a row is a JSON object")
        yield line, obj
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_space(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]" and not text[pos + 1 :].strip():
            return
        raise UsageError(f"{name} line {_line(text, pos)}: expected ',' or the list's end")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def write_csv(records: Iterable[DocumentRecord]) -> str:
    """An export in the CSV form :func:`read_export` reads (tests, examples)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in records:
        writer.writerow([getattr(r, c) for c in COLUMNS])
    return buf.getvalue()


# --- sources ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentRegistry:
    """A registry held in memory, from a JSON list of records (``--documents FILE``)."""

    records: dict[tuple[str, str], DocumentRecord]

    @classmethod
    def load(cls, path: Path) -> DocumentRegistry:
        data = read_bytes(path, MAX_REGISTRY_BYTES)
        try:
            rows = read_export(data, "json", str(path))
        except UsageError as exc:
            raise ConfigError(f"document registry {exc.detail}") from None
        return cls({(r.issuing_state, r.document_number): r for r in rows})

    @staticmethod
    def dump(records: list[DocumentRecord]) -> str:
        return json.dumps(msgspec.to_builtins(records), indent=1) + "\n"

    def lookup(self, issuing_state: str, number: str) -> DocumentRecord | None:
        return self.records.get((issuing_state, number))

    def answer(
        self, request: DocVerifyRequest, today: date, now_ms: int | None = None
    ) -> DocVerifyResponse:
        """:func:`answer_check` from this registry, decided now unless ``now_ms`` is given."""
        when = wall_ms() if now_ms is None else now_ms
        return answer_check(self, request, today=today, now_ms=when)


@dataclass(frozen=True)
class LoadResult:
    loaded: int
    total: int


class SqliteRegistry:
    """The embedded registry: one SQLite file, one row per document, keyed by (state, number)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if not create and not path.exists():
            raise UsageError(f"no document registry at {path} (ixb registry load FILE makes one)")
        try:
            if create:  # personal data: readable by its owner only
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(path)
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS documents (issuing_state TEXT NOT NULL,"
                " document_number TEXT NOT NULL, surname TEXT NOT NULL,"
                " given_names TEXT NOT NULL, birth_date TEXT NOT NULL,"
                " expiry_date TEXT NOT NULL, nationality TEXT NOT NULL, sex TEXT NOT NULL,"
                " status TEXT NOT NULL, PRIMARY KEY (issuing_state, document_number))"
                " WITHOUT ROWID;"
                "CREATE TABLE IF NOT EXISTS loads (at_ms INTEGER NOT NULL, file TEXT NOT NULL,"
                " rows INTEGER NOT NULL, replaced INTEGER NOT NULL);"
            )
        except (OSError, sqlite3.Error) as exc:
            raise IoError(f"cannot open the document registry {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def load(
        self, records: list[DocumentRecord], *, replace: bool, file: str, now_ms: int
    ) -> LoadResult:
        """Add or update ``records`` in one transaction (``replace``: instead of every row)."""
        rows = [tuple(getattr(r, c) for c in COLUMNS) for r in records]
        try:
            with self._db:
                if replace:
                    self._db.execute("DELETE FROM documents")
                self._db.executemany(
                    "INSERT OR REPLACE INTO documents (document_number, issuing_state, surname,"
                    " given_names, birth_date, expiry_date, nationality, sex, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute(
                    "INSERT INTO loads VALUES (?, ?, ?, ?)", (now_ms, file, len(rows), replace)
                )
        except sqlite3.Error as exc:
            raise IoError(f"cannot write the document registry {self.path}: {exc}") from None
        return LoadResult(len(rows), self.count())

    def count(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM documents").fetchone()
        return int(n)

    def lookup(self, issuing_state: str, number: str) -> DocumentRecord | None:
        try:
            row = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM documents"  # noqa: S608 - fixed names
                " WHERE issuing_state = ? AND document_number = ?",
                (issuing_state, number),
            ).fetchone()
        except sqlite3.Error as exc:
            raise IoError(f"cannot read the document registry {self.path}: {exc}") from None
        if row is None:
            return None
        return _row(row)

    def find(self, number: str) -> list[DocumentRecord]:
        """Records with this number, whichever state issued them (``ixb registry show``)."""
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM documents"  # noqa: S608 - fixed names
            " WHERE document_number = ? ORDER BY issuing_state",
            (number,),
        ).fetchall()
        return [_row(r) for r in rows]

    def stats(self, today: date) -> dict[str, Any]:
        """Counts by status (expired ones apart) and the last load: never a record."""
        by_status = dict(
            self._db.execute(
                "SELECT status, count(*) FROM documents GROUP BY status ORDER BY status"
            ).fetchall()
        )
        (expired,) = self._db.execute(
            "SELECT count(*) FROM documents WHERE status = 'valid' AND expiry_date < ?",
            (today.isoformat(),),
        ).fetchone()
        states = [s for (s,) in self._db.execute("SELECT DISTINCT issuing_state FROM documents")]
        last = self._db.execute(
            "SELECT at_ms, file, rows, replaced FROM loads ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        return {
            "documents": self.count(),
            "by_status": by_status,
            "valid_but_expired": int(expired),
            "issuing_states": sorted(states),
            "last_load": None
            if last is None
            else {"at_ms": last[0], "file": last[1], "rows": last[2], "replaced": bool(last[3])},
        }


def _row(row: tuple[Any, ...]) -> DocumentRecord:
    return msgspec.convert(dict(zip(COLUMNS, row, strict=True)), DocumentRecord)


def default_registry_path(base_dir: Path, country: str, name: str) -> Path:
    """``<profile dir>/<CC>-<NAME>.documents.sqlite``."""
    return base_dir / f"{country}-{name}.documents.sqlite"


def open_source(spec: str, base_dir: Path) -> DocumentSource:
    """A source from its spec: ``sqlite:PATH``, ``json:PATH`` or ``python:module:factory``.

    A relative PATH is taken from ``base_dir`` (the profile's directory). The
    Python factory is called with no arguments and returns a
    :class:`DocumentSource`; the module must be importable (``PYTHONPATH``).
    """
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise UsageError(f"registry {spec!r}: give sqlite:PATH, json:PATH or python:MODULE:FACTORY")
    if kind == SourceKind.SQLITE:
        return SqliteRegistry(_under(base_dir, rest))
    if kind == SourceKind.JSON:
        return DocumentRegistry.load(_under(base_dir, rest))
    if kind == SourceKind.PYTHON:
        module_name, sep, factory_name = rest.rpartition(":")
        if not sep or not module_name or not factory_name:
            raise UsageError(f"registry {spec!r}: python:MODULE:FACTORY, e.g. python:mysys:source")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"registry {spec!r}: cannot import {module_name}: {exc}") from None
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise ConfigError(f"registry {spec!r}: {module_name} has no callable {factory_name}")
        source = factory()
        if not isinstance(source, DocumentSource):
            raise ConfigError(f"registry {spec!r}: {factory_name}() has no lookup(state, number)")
        return source
    raise UsageError(f"registry {spec!r}: {kind!r} is not sqlite, json or python")


def _under(base_dir: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p
