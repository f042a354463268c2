"""The person index: normal forms, loading, the hit rule, and no term in clear on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agency_client.namematch import (
    name_keys,
    name_tokens,
    normal_birth_date,
    normal_document,
    normal_name,
    normal_query,
)
from agency_client.personindex import IndexRow, PersonIndex, parse_export
from protocols.errors import ConfigError, KeyFileError
from protocols.identifiers import parse_agency
from protocols.keys import Identity
from protocols.messages import PersonQuery

OWNER = parse_agency("MMR/MOHA-ATTU")

CSV = """reference,surname,given_names,birth_date,nationality,document_number
MMR-ATTU-2026-000112,Nguyễn,Văn An,1990-04-02,VNM,C 1234-567
MMR-ATTU-2026-000113,SAMPLE,NARONG,1981,THA,
MMR-ATTU-2026-000114,O'Brien,Mary-Jane,1975-11,IRL,
MMR-ATTU-2026-000115,Петров,Иван,1988-07-30,RUS,
MMR-ATTU-2026-000116,สมชาย,ใจดี,1979-01-05,THA,
MMR-ATTU-2026-000117,Wang,Xiao Ming,1995-02-28,CHN,E12345678
"""


def rows(text: str = CSV, fmt: str = "csv") -> list[IndexRow]:
    return parse_export(text.encode(), fmt, "export")


@pytest.fixture
def identity() -> Identity:
    return Identity.generate(OWNER)


@pytest.fixture
def index(tmp_path: Path, identity: Identity) -> PersonIndex:
    idx = PersonIndex(tmp_path / "MMR-MOHA-ATTU.index", [identity], create=True)
    idx.load(rows(), replace=False, now=1_000)
    return idx


def ask(index: PersonIndex, *terms: str | None) -> str | None:
    """The reference a query is answered with, or None for no hit."""
    surname, given_names, birth_date, nationality, document_number = (*terms, *[None] * 4)[:5]
    assert surname is not None
    query = PersonQuery(
        surname=surname,
        given_names=given_names,
        birth_date=birth_date,
        nationality=nationality,
        document_number=document_number,
        purpose="EXAMPLE: trafficking investigation",
        legal_basis="EXAMPLE: ASEAN MLAT art. 1",
    )
    result = index.answer(query, requester="THA/DSI-ATHD", message_id="01J0TEST", at=2_000)
    return result.reference if result.hit else None


# --- normal forms -----------------------------------------------------------------------

names_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "M", "N", "P", "Zs")), max_size=40
)


@given(names_text)
def test_normal_name_is_idempotent(text: str) -> None:
    once = normal_name(text)
    assert normal_name(once) == once
    assert once == once.strip() and "  " not in once
    assert all(c.isascii() and (c.isalnum() or c == " ") for c in once)


@given(
    st.lists(st.from_regex(r"[A-Z]{1,8}", fullmatch=True), min_size=1, max_size=3),
    st.lists(st.from_regex(r"[A-Z]{1,8}", fullmatch=True), min_size=0, max_size=3),
)
def test_name_order_does_not_matter(surname: list[str], given_names: list[str]) -> None:
    s, g = " ".join(surname), " ".join(given_names) or None
    keys = name_keys(s, g)
    if g is not None:
        assert keys & name_keys(g, s)  # surname and given names swapped
        assert keys & name_keys(f"{g} {s}", None)  # all in one field, given names first
        assert keys & name_keys(f"{s}{''.join(given_names)}", None)  # written joined
    assert keys & name_keys(f"{s} {g or ''}".lower(), None)  # case


def test_diacritics_and_punctuation() -> None:
    assert normal_name("Nguyễn Văn An") == "NGUYEN VAN AN"
    assert normal_name("NGUYEN  van-an") == "NGUYEN VAN AN"
    assert normal_name("O'Brien, Mary\u2013Jane") == "OBRIEN MARY JANE"
    assert normal_name("SAMPLE<<NARONG<<<") == "SAMPLE NARONG"  # MRZ fillers
    assert normal_name("Straße Ærø") == "STRASSE AERO"
    assert name_keys("NGUYEN", "Van An") & name_keys("Van An Nguyen", None)


def test_transliteration_of_other_scripts() -> None:
    assert name_tokens("Петров Иван") == ("PETROV", "IVAN")
    assert name_tokens("สมชาย ใจดี") == ("SMCHAY", "AICHDI")  # letter by letter, not RTGS
    assert name_tokens("王小明") == ("WANGXIAOMING",)
    assert name_keys("王小明", None) & name_keys("WANG", "XIAO MING")


def test_dates_and_documents() -> None:
    assert normal_birth_date("1981-00-00") == "1981"
    assert normal_birth_date("1981-03-00") == "1981-03"
    assert normal_birth_date("1981-03-14") == "1981-03-14"
    for bad in ("1981-02-30", "1981-13", "81-03-14", "1981-00-14", "0000", "yesterday"):
        assert normal_birth_date(bad) is None, bad
    assert normal_document("c 1234-567<<") == "C1234567"
    assert normal_query("A", None, None, None, "-").document is None


# --- loading ----------------------------------------------------------------------------


def test_csv_and_json_exports_load_the_same_rows() -> None:
    from_csv = rows()
    as_json = json.dumps(
        [
            {
                k: v
                for k, v in (
                    ("reference", r.reference),
                    ("surname", r.surname),
                    ("given_names", r.given_names),
                    ("birth_date", r.birth_date),
                    ("nationality", r.nationality),
                    ("document_number", r.document_number),
                )
                if v
            }
            for r in from_csv
        ],
        indent=1,
        ensure_ascii=False,
    )
    from_json = rows(as_json, "json")
    strip = [(r.reference, r.surname, r.given_names, r.birth_date) for r in from_csv]
    assert [(r.reference, r.surname, r.given_names, r.birth_date) for r in from_json] == strip
    assert [r.line for r in from_csv] == [2, 3, 4, 5, 6, 7]
    opening = [n for n, line in enumerate(as_json.splitlines(), 1) if line.strip() == "{"]
    assert [r.line for r in from_json] == opening and len(opening) == 6


BAD_EXPORTS = {
    "no surname, bad date": (
        "csv",
        "reference,surname,birth_date\nR-1,A,1990\nR-2,,1990\nR-3,B,1990-02-30\n",
        ["line 3: no surname", "line 4: birth_date '1990-02-30'"],
    ),
    "bad reference and nationality": (
        "csv",
        "reference,surname,nationality\nnot a ref,A,THA\nR-2,B,Thailand\n",
        ["line 2: reference must be", "line 3: nationality 'Thailand'"],
    ),
    "short row": ("csv", "reference,surname\nR-1\n", ["line 2: 1 cells, the header has 2"]),
    "unknown column": ("csv", "reference,surname,email\nR-1,A,a@b\n", ["line 1: columns"]),
    "json unknown field": (
        "json",
        '[\n {"reference": "R-1", "surname": "A"},\n {"reference": "R-2", "name": "B"}\n]',
        ["line 3: unknown field 'name'"],
    ),
    "json not objects": ("json", '[\n "R-1",\n 3\n]', ["line 2: not an object", "line 3"]),
    "json trailing text": ("json", '[{"reference": "R-1", "surname": "A"}] x', ["line 1"]),
    "json a number": ("json", '[\n {"reference": "R-1", "surname": 7}\n]', ["surname is not"]),
}


@pytest.mark.parametrize("case", BAD_EXPORTS, ids=str)
def test_bad_rows_are_refused_with_their_lines(case: str) -> None:
    fmt, text, expected = BAD_EXPORTS[case]
    with pytest.raises(ConfigError) as err:
        rows(text, fmt)
    detail = err.value.detail
    assert "\n" not in detail
    for part in expected:
        assert part in detail, detail


def test_many_bad_rows_are_summarised_on_one_line() -> None:
    text = "reference,surname\n" + "".join(f"R-{n},\n" for n in range(12))
    with pytest.raises(ConfigError) as err:
        rows(text)
    assert "12 bad rows, nothing loaded" in err.value.detail
    assert "line 2: no surname" in err.value.detail and "and 7 more" in err.value.detail


def test_loading_again_adds_nothing_and_replace_starts_over(
    index: PersonIndex, identity: Identity
) -> None:
    assert index.load(rows(), replace=False, now=3_000) == (0, 6)
    assert ask(index, "SAMPLE", "NARONG", "1981-03-14", "THA") == "MMR-ATTU-2026-000113"
    only = "reference,surname,given_names,birth_date\nMMR-ATTU-2026-000200,NEW,PERSON,2000\n"
    assert index.load(rows(only), replace=True, now=3_000) == (1, 0)
    assert ask(index, "SAMPLE", "NARONG", "1981-03-14", "THA") is None
    assert ask(index, "Person", "New", "2000-06-01") == "MMR-ATTU-2026-000200"


# --- the hit rule -----------------------------------------------------------------------

HITS = {
    "exact": (("Nguyễn", "Văn An", "1990-04-02", "VNM"), "MMR-ATTU-2026-000112"),
    "no diacritics, upper case": (("NGUYEN", "VAN AN", "1990-04-02"), "MMR-ATTU-2026-000112"),
    "order swapped, one field": (("Van An Nguyen", None, "1990-04-02"), "MMR-ATTU-2026-000112"),
    "document and nationality": (("Other", None, None, "VNM", "C1234567"), "MMR-ATTU-2026-000112"),
    "row has the year only": (("sample", "narong", "1981-12-31", "THA"), "MMR-ATTU-2026-000113"),
    "row has year and month": (("OBRIEN", "MARY JANE", "1975-11-09"), "MMR-ATTU-2026-000114"),
    "apostrophe and hyphen": (("O Brien", "Mary Jane", "1975-11-01"), "MMR-ATTU-2026-000114"),
    "cyrillic transliterated": (("PETROV", "IVAN", "1988-07-30", "RUS"), "MMR-ATTU-2026-000115"),
    "thai script": (("สมชาย", "ใจดี", "1979-01-05"), "MMR-ATTU-2026-000116"),
    "names joined": (("WangXiaoMing", None, "1995-02-28"), "MMR-ATTU-2026-000117"),
    "chinese script": (("王小明", None, "1995-02-28", "CHN"), "MMR-ATTU-2026-000117"),
}
NEAR_MISSES = {
    "one letter off": ("NGUYEN", "VAN AM", "1990-04-02"),
    "a day off": ("NGUYEN", "VAN AN", "1990-04-03"),
    "another nationality": ("NGUYEN", "VAN AN", "1990-04-02", "KHM"),
    "surname alone": ("NGUYEN", None, "1990-04-02"),
    "a given name missing": ("NGUYEN", "VAN", "1990-04-02"),
    "a name more": ("NGUYEN", "VAN AN THI", "1990-04-02"),
    "names without a date": ("NGUYEN", "VAN AN", None, "VNM", "X999"),
    "document without nationality": ("Other", None, None, None, "C1234567"),
    "document, other nationality": ("Other", None, None, "THA", "C1234567"),
    "year-only row, other year": ("SAMPLE", "NARONG", "1982-01-01", "THA"),
    "month row, other month": ("OBRIEN", "MARY JANE", "1975-10-31"),
    "thai romanised (RTGS)": ("SOMCHAI", "JAIDEE", "1979-01-05"),
    "the reference as a name": ("MMR-ATTU-2026-000112", None, "1990-04-02"),
}


@pytest.mark.parametrize("case", HITS, ids=str)
def test_hits(index: PersonIndex, case: str) -> None:
    terms, reference = HITS[case]
    assert ask(index, *terms) == reference


@pytest.mark.parametrize("case", NEAR_MISSES, ids=str)
def test_near_misses_are_no_hits(index: PersonIndex, case: str) -> None:
    assert ask(index, *NEAR_MISSES[case]) is None


# --- what the owner keeps ---------------------------------------------------------------


def test_the_owner_records_who_asked_and_why_never_the_terms(index: PersonIndex) -> None:
    ask(index, "Nguyễn", "Văn An", "1990-04-02")
    ask(index, "van an NGUYEN", None, "1990-04-02")  # the same person, asked another way
    ask(index, "NOBODY", None, "1990-04-02")
    records = index.queries()
    assert [r.references for r in records] == [("MMR-ATTU-2026-000112",)] * 2 + [()]
    assert {(r.requester, r.at, r.message_id) for r in records} == {
        ("THA/DSI-ATHD", 2_000, "01J0TEST")
    }
    assert records[0].purpose == "EXAMPLE: trafficking investigation"
    assert records[0].legal_basis == "EXAMPLE: ASEAN MLAT art. 1"
    assert records[0].terms == records[1].terms != records[2].terms
    assert [r.hit for r in index.queries(reference="MMR-ATTU-2026-000112")] == [True, True]
    assert index.queries(since=2_001) == []


def test_the_index_file_holds_no_term_in_clear(tmp_path: Path, identity: Identity) -> None:
    index = PersonIndex(tmp_path / "x.index", [identity], create=True)
    index.load(rows(), replace=False, now=1_000)
    assert ask(index, "Nguyễn", "Văn An", "1990-04-02") == "MMR-ATTU-2026-000112"
    index.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    terms = [
        "NGUYEN", "Nguy", "Văn", "VAN AN", "SAMPLE", "NARONG", "OBRIEN", "Brien", "PETROV",
        "Петров", "สมชาย", "WANG", "XIAO", "1990-04-02", "1990", "1975-11", "C1234567",
        "C 1234", "E12345678", "VNM", "trafficking investigation", "ASEAN MLAT",
    ]  # fmt: skip
    for term in terms:
        for form in {term, term.upper(), term.lower()}:
            assert form.encode() not in stored, form
    assert b"MMR-ATTU-2026-000112" in stored  # the opaque reference a hit answers with


def test_the_index_key_follows_a_key_rotation(tmp_path: Path, identity: Identity) -> None:
    path = tmp_path / "x.index"
    PersonIndex(path, [identity], create=True).load(rows(), replace=False, now=1)
    stranger = Identity.generate(OWNER)
    with pytest.raises(KeyFileError, match="does not hold"):
        PersonIndex(path, [stranger])
    rotated = Identity.generate(OWNER)
    PersonIndex(path, [rotated, identity]).close()  # sealed again under the new key
    index = PersonIndex(path, [rotated])  # the old key is gone: still opens
    assert ask(index, "NGUYEN", "VAN AN", "1990-04-02") == "MMR-ATTU-2026-000112"
    newer = Identity.generate(OWNER)
    index.follow(newer)  # rotated while answering
    index.close()
    PersonIndex(path, [newer]).close()


def test_an_absent_index_is_not_created_by_reading(tmp_path: Path, identity: Identity) -> None:
    with pytest.raises(ConfigError, match="ixb index load"):
        PersonIndex(tmp_path / "absent.index", [identity])
    assert not (tmp_path / "absent.index").exists()
