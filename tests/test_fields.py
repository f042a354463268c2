"""The field engine: a built struct is refused exactly when its bytes would be refused."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import wire
from protocols.errors import IxbError, SchemaError
from protocols.fields import (
    MAX_TIME_MS,
    CheckedStruct,
    CountryStr,
    DateStr,
    LongText,
    ShortText,
    TimeMs,
    check_country_field,
    check_fields,
    check_text,
    check_unique,
    iso_times,
)
from protocols.messages import AlertCategory


class Sample(CheckedStruct, frozen=True):
    """Every kind of field the engine checks, all required (so every field is encoded)."""

    name: ShortText
    note: LongText | None
    at: TimeMs
    day: DateStr
    country: CountryStr | None
    tag: Annotated[bytes, msgspec.Meta(min_length=2, max_length=4)]
    times: Annotated[tuple[TimeMs, ...], msgspec.Meta(min_length=1, max_length=3)]
    flag: bool


texts = st.one_of(
    st.text(max_size=8),
    st.text(alphabet="THAMYS-0123456789\n\t\x00 ", max_size=12),
    st.sampled_from(["THA", "XYZ", "2026-01-31", "2026-1-31", " ", "ab", "x" * 256, "x" * 257]),
)
ints = st.one_of(st.integers(-2, 3), st.sampled_from([MAX_TIME_MS, MAX_TIME_MS + 1, 2**63]))
anything = st.one_of(st.none(), texts, ints, st.booleans(), st.binary(max_size=5))
GOOD: dict[str, Any] = {
    "name": "a name",
    "note": "line\n\tindented",
    "at": MAX_TIME_MS,
    "day": "2026-01-31",
    "country": "THA",
    "tag": b"ab",
    "times": (0,),
    "flag": False,
}
NEAR: dict[str, st.SearchStrategy[Any]] = {
    "name": texts,
    "note": texts,
    "at": ints,
    "day": texts,
    "country": texts,
    "tag": st.binary(max_size=6),
    "times": st.lists(ints, max_size=4).map(tuple),
    "flag": st.booleans(),
}


@st.composite
def samples(draw: st.DrawFn) -> dict[str, Any]:
    """A good sample with up to two fields changed: to a value of their kind, or to anything."""
    fields = dict(GOOD)
    for name in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=2, unique=True)):
        fields[name] = draw(st.one_of(NEAR[name], anything))
    return fields


def _built(fields: dict[str, Any]) -> Sample | None:
    try:
        return Sample(**fields)
    except SchemaError:
        return None


def _decoded(fields: dict[str, Any]) -> Sample | None:
    try:
        return wire.decode(msgspec.msgpack.encode(fields), Sample, "sample")
    except IxbError:
        return None


@settings(max_examples=500, deadline=None)
@given(fields=samples())
def test_construction_refuses_exactly_what_decoding_refuses(fields: dict[str, Any]) -> None:
    built, decoded = _built(fields), _decoded(fields)
    assert (built is None) == (decoded is None), (built, decoded)
    if built is not None:
        assert built == decoded


def test_a_good_sample_passes_both_ways() -> None:
    assert _built(GOOD) == _decoded(GOOD) == Sample(**GOOD)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "two\nlines", "Sample.name: contains a control character"),
        ("name", "   ", "Sample.name: must not be empty or blank"),
        ("name", "x" * 257, "Sample.name: longer than 256 characters"),
        ("note", "bell\x07", "Sample.note: contains a control character (only LF and TAB"),
        ("at", True, "Sample.at: expected an integer"),
        ("at", MAX_TIME_MS + 1, "Sample.at: out of range"),
        ("day", "31.01.2026", "Sample.day: does not match"),
        ("tag", b"a", "Sample.tag: wrong length"),
        ("times", (), "Sample.times: needs 1..3 items"),
        ("times", (-1,), "Sample.times item: out of range"),
        ("flag", 1, "Sample.flag: expected bool"),
    ],
)
def test_refusals_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        Sample(**{**GOOD, field: value})
    assert message in info.value.detail


def test_refusals_never_show_the_value() -> None:
    secret = "SECRET-NAME\x00"
    with pytest.raises(SchemaError) as info:
        Sample(**{**GOOD, "name": secret})
    assert "SECRET" not in str(info.value)


def test_an_undeclarable_field_type_is_a_schema_bug() -> None:
    class Floaty(CheckedStruct, frozen=True):
        ratio: float

    with pytest.raises(TypeError, match="no check for wire type FloatType"):
        Floaty(ratio=0.5)
    with pytest.raises(TypeError, match="not a Struct"):
        check_fields(object())  # type: ignore[arg-type]


def test_value_checks() -> None:
    check_text("tab\tand\nnewline", "t", multiline=True)
    with pytest.raises(SchemaError, match=r"t: contains a control character$"):
        check_text("tab\t", "t")
    check_country_field("THA", "where")
    with pytest.raises(SchemaError, match=r"^where: "):
        check_country_field("XYZ", "where")
    check_unique([AlertCategory.OTHER, AlertCategory.VESSEL], "u")
    with pytest.raises(SchemaError, match="u: lists an item twice"):
        check_unique([AlertCategory.OTHER, AlertCategory.OTHER], "u")


# --- times for people and for JSON ---------------------------------------------------


def test_utc_iso_is_iso_8601_utc_with_milliseconds() -> None:
    from protocols.fields import utc_iso, utc_text

    ms = 1_796_003_532_023  # 2026-11-30 01:52:12.023 UTC
    assert utc_iso(ms) == "2026-11-30T01:52:12.023Z"
    assert utc_text(ms) == "2026-11-30 01:52:12.023Z"
    assert utc_iso(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 ms"),
        (450, "450 ms"),
        (3_000, "3 s"),
        (-3_000, "3 s"),
        (90_000, "1 min 30 s"),
        (15 * 60_000 + 5_000, "15 min"),
        ((7 * 60 + 58) * 60_000, "7 h 58 min"),
        (2 * 3_600_000, "2 h"),
        (10 * 86_400_000, "10 d"),
        (86_400_000 + 3 * 3_600_000, "1 d 3 h"),
    ],
)
def test_duration_text_reads_like_a_person_writes(ms: int, text: str) -> None:
    from protocols.fields import duration_text

    assert duration_text(ms) == text


def test_iso_times_renames_every_millisecond_time_at_any_depth() -> None:
    body = {
        "deadline_ms": 0,
        "route": [{"port": "Satun", "arrival_ms": 1_764_467_532_023}],
        "count_ms_like": 5,
        "flag_ms": True,  # not a time: bool is not int here
        "text": "EXAMPLE",
    }
    assert iso_times(body) == {
        "deadline": "1970-01-01T00:00:00.000Z",
        "route": [{"port": "Satun", "arrival": "2025-11-30T01:52:12.023Z"}],
        "count_ms_like": 5,
        "flag_ms": True,
        "text": "EXAMPLE",
    }
    assert iso_times(["x", 3]) == ["x", 3]
