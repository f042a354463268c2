"""The document registry: exports read row by row, the SQLite store, every status answered."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agency_client.docregistry import (
    COLUMNS,
    RECORD_STATUSES,
    DocumentRecord,
    DocumentRegistry,
    DocumentSource,
    SqliteRegistry,
    answer_check,
    open_source,
    read_export,
    write_csv,
)
from protocols.errors import ConfigError, IoError, UsageError
from protocols.messages import (
    AnsweredBy,
    DocField,
    DocPurpose,
    DocStatus,
    DocVerifyRequest,
    DocVerifyResponse,
    decode_body,
    encode_body,
)
from protocols.mrz import build_td3

TODAY = date(2026, 11, 30)
NOW_MS = 1_796_000_000_000


def record(number: str = "A12345678", **kw: object) -> DocumentRecord:
    fields: dict[str, object] = {
        "document_number": number,
        "issuing_state": "MYS",
        "surname": "SAMPLE",
        "given_names": "SITI AMINAH",
        "birth_date": "1990-01-01",
        "expiry_date": "2031-01-01",
        "nationality": "MYS",
        "sex": "F",
    }
    return DocumentRecord(**(fields | kw))  # type: ignore[arg-type]


def request_for(number: str = "A12345678", **kw: str) -> DocVerifyRequest:
    fields = {
        "issuing_state": "MYS",
        "surname": "SAMPLE",
        "given_names": "SITI AMINAH",
        "document_number": number,
        "nationality": "MYS",
        "birth_date": "900101",
        "sex": "F",
        "expiry_date": "310101",
    }
    return DocVerifyRequest(mrz=build_td3(**(fields | kw)), purpose=DocPurpose.BORDER_CHECK)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SqliteRegistry]:
    db = SqliteRegistry(tmp_path / "r.sqlite", create=True)
    db.load(
        [
            record(),
            record("R1", status=DocStatus.REVOKED),
            record("L1", status=DocStatus.REPORTED_LOST),
            record("S1", status=DocStatus.REPORTED_STOLEN),
            record("N1", status=DocStatus.NOT_ISSUED),
            record("U1", status=DocStatus.UNKNOWN),
            record("E1", expiry_date="2026-11-29"),
        ],
        replace=False,
        file="test.csv",
        now_ms=NOW_MS,
    )
    yield db
    db.close()


CASES: dict[str, tuple[DocVerifyRequest, DocStatus, tuple[DocField, ...]]] = {
    "valid": (request_for(), DocStatus.VALID, ()),
    "not in the registry": (request_for("Z9"), DocStatus.NOT_ISSUED, ()),
    "revoked": (request_for("R1"), DocStatus.REVOKED, ()),
    "reported lost": (request_for("L1"), DocStatus.REPORTED_LOST, ()),
    "reported stolen": (request_for("S1"), DocStatus.REPORTED_STOLEN, ()),
    "recorded not issued": (request_for("N1"), DocStatus.NOT_ISSUED, ()),
    "recorded unknown": (request_for("U1"), DocStatus.UNKNOWN, ()),
    "expired in the registry and the MRZ": (
        request_for("E1", expiry_date="261129"),
        DocStatus.EXPIRED,
        (),
    ),
    "birth date and sex differ": (
        request_for(birth_date="900102", sex="M"),
        DocStatus.DATA_MISMATCH,
        (DocField.BIRTH_DATE, DocField.SEX),
    ),
    "surname differs": (
        request_for(surname="SAMPEL"),
        DocStatus.DATA_MISMATCH,
        (DocField.SURNAME,),
    ),
    "expiry differs (MRZ says later)": (
        request_for("E1", expiry_date="301129"),
        DocStatus.DATA_MISMATCH,
        (DocField.EXPIRY_DATE,),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_status_is_answered(registry: SqliteRegistry, case: str) -> None:
    request, status, fields = CASES[case]
    answer = answer_check(registry, request, today=TODAY, now_ms=NOW_MS)
    assert (answer.status, answer.mismatched_fields) == (status, fields)
    assert answer.answered_by is AnsweredBy.AUTOMATED and answer.officer is None
    assert answer.checked_ms == NOW_MS
    again = decode_body(DocVerifyResponse.TYPE, encode_body(answer))
    assert again == answer  # a valid body on the wire


def test_every_status_a_registry_can_hold_is_answered(registry: SqliteRegistry) -> None:
    answered = {
        answer_check(registry, r, today=TODAY, now_ms=NOW_MS).status for r, _, _ in CASES.values()
    }
    assert answered == set(DocStatus)


def test_an_unreadable_mrz_is_unknown_with_its_code(registry: SqliteRegistry) -> None:
    line1, line2 = request_for().mrz
    bad = DocVerifyRequest(mrz=(line1, line2[:9] + "0" + line2[10:]), purpose=DocPurpose.OTHER)
    answer = answer_check(registry, bad, today=TODAY, now_ms=NOW_MS)
    assert answer.status is DocStatus.UNKNOWN
    assert answer.note is not None and answer.note.startswith("ixb.E_MRZ")


def test_the_mrz_expiry_alone_makes_it_expired(tmp_path: Path) -> None:
    # the registry was never told (its expiry is the MRZ's too): today decides
    source = DocumentRegistry({("MYS", "A12345678"): record(expiry_date="2025-01-01")})
    answer = answer_check(source, request_for(expiry_date="250101"), today=TODAY, now_ms=NOW_MS)
    assert answer.status is DocStatus.EXPIRED


class Failing:
    def lookup(self, issuing_state: str, number: str) -> DocumentRecord | None:
        raise RuntimeError("the country's database is down")


def test_a_failing_source_is_a_typed_error() -> None:
    with pytest.raises(IoError, match="document source failed"):
        answer_check(Failing(), request_for(), today=TODAY, now_ms=NOW_MS)


# --- exports ----------------------------------------------------------------------------

names = st.text(
    st.characters(
        categories=["L", "Zs", "Pd"], include_characters=",'\"", exclude_characters="\x85\xa0"
    ),
    min_size=1,
    max_size=40,
).filter(lambda s: s == s.strip() and s.strip() != "")
records = st.builds(
    DocumentRecord,
    document_number=st.from_regex(r"[A-Z0-9]{1,20}", fullmatch=True),
    issuing_state=st.sampled_from(["MYS", "THA", "MMR", "UTO", "D"]).filter(lambda c: len(c) == 3),
    surname=names,
    given_names=names,
    birth_date=st.dates().map(date.isoformat),
    expiry_date=st.dates().map(date.isoformat),
    nationality=st.sampled_from(["MYS", "THA", "XXA", "UTO"]),
    sex=st.sampled_from(["M", "F", "X"]),
    status=st.sampled_from(sorted(RECORD_STATUSES)),
)
unique_records = st.lists(
    records, max_size=12, unique_by=lambda r: (r.issuing_state, r.document_number)
)


@given(unique_records)
def test_csv_export_round_trip(rows: list[DocumentRecord]) -> None:
    text = write_csv(rows)
    assert read_export(text.encode(), "csv", "x.csv") == rows


@given(unique_records)
def test_json_export_round_trip(rows: list[DocumentRecord]) -> None:
    text = DocumentRegistry.dump(rows)
    assert read_export(text.encode(), "json", "x.json") == rows
    compact = json.dumps(msgspec.to_builtins(rows))
    assert read_export(compact.encode(), "json", "x.json") == rows


GOOD = ",".join(COLUMNS[:-1]) + "\nA1,MYS,SAMPLE,SITI,1990-01-01,2031-01-01,MYS,F\n"
BAD_CSV: dict[str, tuple[str, int, str]] = {
    "impossible date": (GOOD + "A2,MYS,X,Y,1990-02-30,2031-01-01,MYS,F\n", 3, "birth_date"),
    "unknown country": (GOOD + "A2,ZZZ,X,Y,1990-02-01,2031-01-01,MYS,F\n", 3, "issuing_state"),
    "missing surname": (GOOD + "A2,MYS,,Y,1990-02-01,2031-01-01,MYS,F\n", 3, "surname"),
    "too few fields": (GOOD + "\nA2,MYS,X\n", 4, "fields"),
    "sex": (GOOD + "A2,MYS,X,Y,1990-02-01,2031-01-01,MYS,Q\n", 3, "sex"),
    "number twice": (GOOD + "A1,MYS,X,Y,1990-02-01,2031-01-01,MYS,F\n", 3, "line 2"),
    "a status decided per check": (
        GOOD.replace(",sex\n", ",sex,status\n").replace(",F\n", ",F,expired\n"),
        2,
        "status",
    ),
    "unknown column": ("number,surname\nA1,X\n", 1, "column"),
    "number with punctuation": (GOOD + "A-2,MYS,X,Y,1990-02-01,2031-01-01,MYS,F\n", 3, "number"),
    "quoted field runs on": (GOOD + 'A2,MYS,"X\n', 3, ""),
}


@pytest.mark.parametrize("case", BAD_CSV)
def test_a_bad_csv_row_names_its_line(case: str) -> None:
    text, line, word = BAD_CSV[case]
    with pytest.raises(UsageError, match=f"x.csv line {line}: .*{word}"):
        read_export(text.encode(), "csv", "x.csv")


def test_a_bad_json_row_names_the_line_it_starts_on() -> None:
    good = msgspec.to_builtins(record())
    text = (
        "[\n "
        + json.dumps(good)
        + ",\n "
        + json.dumps(good | {"document_number": "B1", "sex": "?"})
        + "\n]\n"
    )
    with pytest.raises(UsageError, match=r"x\.json line 3: sex"):
        read_export(text.encode(), "json", "x.json")
    with pytest.raises(UsageError, match=r"x\.json line 2: "):
        read_export(b'[\n{"document_number": }]', "json", "x.json")
    with pytest.raises(UsageError, match="line 1: a JSON export is a list"):
        read_export(b'{"a": 1}', "json", "x.json")


def test_loading_adds_replaces_and_counts(registry: SqliteRegistry) -> None:
    assert registry.count() == 7
    result = registry.load(
        [record(surname="CHANGED"), record("B2")], replace=False, file="b", now_ms=NOW_MS
    )
    assert (result.loaded, result.total) == (2, 8)
    found = registry.lookup("MYS", "A12345678")
    assert found is not None and found.surname == "CHANGED"
    result = registry.load([record("B3")], replace=True, file="c", now_ms=NOW_MS)
    assert (result.loaded, result.total) == (1, 1)
    stats = registry.stats(TODAY)
    assert stats["by_status"] == {"valid": 1} and stats["last_load"]["replaced"] is True


def test_sources_by_spec(
    tmp_path: Path, registry: SqliteRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_source(f"sqlite:{registry.path}", tmp_path), SqliteRegistry)
    (tmp_path / "r.json").write_text(DocumentRegistry.dump([record()]))
    assert open_source("json:r.json", tmp_path).lookup("MYS", "A12345678") == record()
    (tmp_path / "mysys.py").write_text(
        "from agency_client.docregistry import DocumentRecord\n"
        "class Source:\n"
        "    def lookup(self, issuing_state, number):\n"
        "        return None\n"
        "def source():\n"
        "    return Source()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    source = open_source("python:mysys:source", tmp_path)
    assert isinstance(source, DocumentSource)
    assert (
        answer_check(source, request_for(), today=TODAY, now_ms=NOW_MS).status
        is DocStatus.NOT_ISSUED
    )
    for bad, error in [
        ("python:mysys:nothing", ConfigError),
        ("python:no_such_module_here:f", ConfigError),
        ("mysql:db", UsageError),
        ("sqlite:", UsageError),
        ("sqlite:missing.sqlite", UsageError),
    ]:
        with pytest.raises(error):
            open_source(bad, tmp_path)
    sys.modules.pop("mysys", None)
