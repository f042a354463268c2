"""Message bodies: round trips, canonical bytes, every rule refused, the MLA state machine."""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Callable
from datetime import date
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import mrz
from protocols.errors import IxbError, MrzError, SchemaError, TransitionError
from protocols.examples import SPECIMEN_TD3_MRZ, example_bodies
from protocols.fields import check_date
from protocols.limits import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_LIST,
    MAX_SHORT_TEXT,
    MAX_TEXT,
)
from protocols.messages import (
    MESSAGE_TYPES,
    MLA_TRANSITIONS,
    REPLY_TO,
    REQUEST_TYPES,
    STATELESS_CODES,
    Alert,
    AlertCategory,
    Attachment,
    Body,
    DocPurpose,
    DocVerifyRequest,
    MlaStatus,
    MlaStatusCode,
    PersonResult,
    Receipt,
    ReceiptStatus,
    Subject,
    SubjectRole,
    Vessel,
    apply_mla_status,
    check_imo,
    check_mla_transition,
    decode_body,
    encode_body,
    validate_doc_request,
)
from tests.strategies import bodies, body_of

NOW_MS = 1_795_000_000_000
EXAMPLES = example_bodies(NOW_MS)
TYPES = sorted(MESSAGE_TYPES)
quick = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_enc = msgspec.msgpack.encode


# --- round trips -----------------------------------------------------------------


@quick
@given(bodies())
def test_every_body_round_trips_canonically(body: Body) -> None:
    data = encode_body(body)
    back = decode_body(body.TYPE, data)
    assert back == body
    assert type(back) is type(body)
    assert encode_body(back) == data


@pytest.mark.parametrize("type_name", TYPES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_strategy_of_each_type_yields_that_type(type_name: str, data: st.DataObject) -> None:
    body = data.draw(body_of(type_name))
    assert type(body) is MESSAGE_TYPES[type_name]
    assert decode_body(type_name, encode_body(body)) == body


@quick
@given(st.sampled_from(TYPES), st.binary(max_size=300))
def test_random_bytes_raise_only_typed_errors(type_name: str, data: bytes) -> None:
    with contextlib.suppress(IxbError):
        decode_body(type_name, data)


@quick
@given(bodies(), st.data())
def test_corrupted_bodies_raise_only_typed_errors(body: Body, data: st.DataObject) -> None:
    raw = bytearray(encode_body(body))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(IxbError):
            decode_body(body.TYPE, candidate)


# --- registry and examples -----------------------------------------------------------


def test_registry_is_consistent() -> None:
    assert set(EXAMPLES) == set(MESSAGE_TYPES)
    assert all(name == cls.TYPE for name, cls in MESSAGE_TYPES.items())
    for answer, request in REPLY_TO.items():
        assert answer in MESSAGE_TYPES
        assert request in MESSAGE_TYPES
    expected_requests = {
        "doc.verify.request",
        "person.query",
        "followup.request",
        "mla.request",
    }
    assert expected_requests == REQUEST_TYPES
    assert "receipt" not in REPLY_TO
    assert "alert" not in REQUEST_TYPES


@pytest.mark.parametrize("type_name", TYPES)
def test_examples_round_trip(type_name: str) -> None:
    body = EXAMPLES[type_name]
    assert type(body) is MESSAGE_TYPES[type_name]
    assert decode_body(type_name, encode_body(body)) == body


def test_examples_work_at_the_epoch() -> None:
    assert set(example_bodies(0)) == set(MESSAGE_TYPES)


def test_example_doc_request_is_the_icao_specimen() -> None:
    request = EXAMPLES["doc.verify.request"]
    assert isinstance(request, DocVerifyRequest)
    parsed = validate_doc_request(request, date(2026, 11, 18))
    assert parsed.surname == "ERIKSSON"
    assert parsed.document_number == "L898902C3"
    assert parsed.birth_date == date(1974, 8, 12)


def test_validate_doc_request_propagates_check_digit_errors() -> None:
    line2 = SPECIMEN_TD3_MRZ[1].replace("L898902C36", "L898902C37")
    request = DocVerifyRequest(mrz=(SPECIMEN_TD3_MRZ[0], line2), purpose=DocPurpose.BORDER_CHECK)
    with pytest.raises(MrzError) as info:
        validate_doc_request(request, date(2026, 11, 18))
    assert info.value.code == "ixb.E_MRZ_CHECK"


def test_stateless_codes_are_icao_codes() -> None:
    assert STATELESS_CODES.issubset(mrz.ICAO_EXTRA_CODES)


def test_decode_unknown_type_is_a_schema_error() -> None:
    with pytest.raises(SchemaError) as info:
        decode_body("alert.v2", encode_body(EXAMPLES["alert"]))
    assert info.value.code == "ixb.E_SCHEMA"


def test_body_decoded_as_another_type_is_refused() -> None:
    with pytest.raises(SchemaError):
        decode_body("person.result", encode_body(EXAMPLES["person.query"]))


# --- table of refusals ---------------------------------------------------------------


def fields_of(type_name: str) -> dict[str, Any]:
    """The example body of ``type_name`` as a plain map, in wire (declaration) order."""
    out = msgspec.to_builtins(EXAMPLES[type_name], builtin_types=(bytes,))
    assert isinstance(out, dict)
    return out


def edit(type_name: str, change: Callable[[dict[str, Any]], object]) -> bytes:
    fields = fields_of(type_name)
    change(fields)
    return _enc(fields)


def put(type_name: str, **values: Any) -> bytes:
    return edit(type_name, lambda f: f.update(values))


def drop(type_name: str, *names: str) -> bytes:
    return edit(type_name, lambda f: [f.pop(n) for n in names])


def put_in(type_name: str, path: tuple[str | int, ...], value: Any) -> bytes:
    """Set one nested value, e.g. ``("subjects", 0, "birth_date")``."""

    def change(fields: dict[str, Any]) -> None:
        target: Any = fields
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return edit(type_name, change)


def raw_map(*pairs: tuple[str, bytes]) -> bytes:
    """A map (fixmap header) from already-encoded values, to write non-canonical forms."""
    return bytes([0x80 | len(pairs)]) + b"".join(_enc(k) + v for k, v in pairs)


MID = bytes(range(16))
_RECEIPT_HEAD = (("for_id", _enc(MID)), ("status", _enc("delivered")), ("by", _enc("MYS/HUB")))

SCHEMA = "ixb.E_SCHEMA"
IDENT = "ixb.E_IDENTIFIER"
MALFORMED = "ixb.E_MALFORMED"
NONCANON = "ixb.E_NONCANONICAL"
MRZ_FORMAT = "ixb.E_MRZ_FORMAT"
TRANSITION = "ixb.E_TRANSITION"

A, R, Q, P = "alert", "doc.verify.request", "person.query", "person.result"
S, FR, FD = "doc.verify.response", "followup.request", "followup.decision"
MQ, MS, RC = "mla.request", "mla.status", "receipt"
TD3 = list(SPECIMEN_TD3_MRZ)

REFUSED: dict[str, tuple[str, bytes, str]] = {
    # framing and canonical form
    "not msgpack": (A, b"\xc1", MALFORMED),
    "empty input": (A, b"", MALFORMED),
    "truncated": (A, encode_body(EXAMPLES[A])[:-3], MALFORMED),
    "trailing byte": (A, encode_body(EXAMPLES[A]) + b"\x00", MALFORMED),
    "array not map": (A, _enc([1, 2, 3]), SCHEMA),
    "keys reordered": (P, _enc({"reference": "MYS-1", "hit": True}), NONCANON),
    "int in long form": (
        RC,
        raw_map(*_RECEIPT_HEAD, ("at_ms", b"\xce" + struct.pack(">I", 200))),
        NONCANON,
    ),
    "invalid utf-8 in key": (P, b"\x81\xa3h\x80t\xc2", MALFORMED),
    "invalid utf-8 in value": (
        P,
        raw_map(("hit", _enc(True)), ("reference", b"\xa2A\x80")),
        MALFORMED,
    ),
    "small int as uint64": (
        RC,
        raw_map(*_RECEIPT_HEAD, ("at_ms", b"\xcf" + struct.pack(">Q", 5))),
        NONCANON,
    ),
    "str8 for short string": (
        P,
        raw_map(("hit", _enc(True)), ("reference", b"\xd9\x05MYS-1")),
        NONCANON,
    ),
    "map16 header": (
        P,
        b"\xde\x00\x02" + _enc("hit") + _enc(True) + _enc("reference") + _enc("MYS-1"),
        NONCANON,
    ),
    "explicit nil for omitted field": (A, put(A, valid_until_ms=None), NONCANON),
    "explicit empty list": (A, put(A, vessels=[]), NONCANON),
    "duplicate key": (
        P,
        raw_map(("hit", _enc(True)), ("reference", _enc("MYS-1")), ("reference", _enc("MYS-2"))),
        NONCANON,
    ),
    # shape and types
    "unknown field": (A, put(A, urgency="high"), SCHEMA),
    "missing required field": (Q, drop(Q, "legal_basis"), SCHEMA),
    "wrong type int for enum": (A, put(A, info_grade=1), SCHEMA),
    "wrong type float for int": (RC, put(RC, at_ms=1.5), SCHEMA),
    "wrong type bin for str": (A, put(A, title=b"title"), SCHEMA),
    "wrong type str for bool": (P, put(P, hit="true"), SCHEMA),
    "unknown enum value": (A, put(A, category="piracy"), SCHEMA),
    "source grade D": (A, put(A, source_grade="D"), SCHEMA),
    "negative time": (A, put(A, valid_until_ms=-1), SCHEMA),
    "time beyond 48 bits": (A, put(A, valid_until_ms=1 << 48), SCHEMA),
    # text rules and bounds
    "title empty": (A, put(A, title=""), SCHEMA),
    "title blank": (A, put(A, title="   "), SCHEMA),
    "title too long": (A, put(A, title="x" * (MAX_SHORT_TEXT + 1)), SCHEMA),
    "title with newline": (A, put(A, title="a\nb"), SCHEMA),
    "title with trailing newline": (A, put(A, title="abc\n"), SCHEMA),
    "text too long": (A, put(A, text="x" * (MAX_TEXT + 1)), SCHEMA),
    "text with escape sequence": (A, put(A, text="red \x1b[31m"), SCHEMA),
    "text with C1 control": (A, put(A, text="a\x85b"), SCHEMA),
    "text with NUL": (A, put(A, text="a\x00b"), SCHEMA),
    "too many subjects": (
        A,
        put(A, subjects=[fields_of(A)["subjects"][0]] * (MAX_LIST + 1)),
        SCHEMA,
    ),
    "checkpoint with tab": (R, put(R, checkpoint="lane\t4"), SCHEMA),
    "note too long": (S, put(S, note="n" * (MAX_SHORT_TEXT + 1)), SCHEMA),
    "case summary empty": (MQ, put(MQ, case_summary=""), SCHEMA),
    # alert
    "alert with nothing to say": (A, drop(A, "text", "subjects", "vessels", "route"), SCHEMA),
    "attachment hash wrong": (
        A,
        put_in(A, ("attachments", 0, "sha256"), bytes(32)),
        SCHEMA,
    ),
    "attachment hash short": (A, put_in(A, ("attachments", 0, "sha256"), bytes(31)), SCHEMA),
    "attachment empty": (A, put_in(A, ("attachments", 0, "data"), b""), SCHEMA),
    "attachment name with newline": (
        A,
        put_in(A, ("attachments", 0, "name"), "a\nb"),
        SCHEMA,
    ),
    "subject birth date not a day": (
        A,
        put_in(A, ("subjects", 0, "birth_date"), "1981-02-30"),
        SCHEMA,
    ),
    "subject birth date format": (
        A,
        put_in(A, ("subjects", 0, "birth_date"), "14/03/1981"),
        SCHEMA,
    ),
    "subject nationality unknown": (A, put_in(A, ("subjects", 0, "nationality"), "ZZZ"), IDENT),
    "subject nationality icao only": (A, put_in(A, ("subjects", 0, "nationality"), "UTO"), IDENT),
    "subject with nothing": (A, put(A, subjects=[{"role": "victim"}]), SCHEMA),
    "subject bad sex": (A, put_in(A, ("subjects", 0, "sex"), "male"), SCHEMA),
    "document number with space": (
        A,
        put_in(A, ("subjects", 0, "documents", 0, "number"), "AA 0000001"),
        SCHEMA,
    ),
    "document issuing state unknown": (
        A,
        put_in(A, ("subjects", 0, "documents", 0, "issuing_state"), "ABC"),
        IDENT,
    ),
    "imo check digit wrong": (A, put_in(A, ("vessels", 0, "imo"), "1234568"), SCHEMA),
    "imo too short": (A, put_in(A, ("vessels", 0, "imo"), "123456"), SCHEMA),
    "mmsi eight digits": (A, put_in(A, ("vessels", 0, "mmsi"), "56700000"), SCHEMA),
    "flag state unknown": (A, put_in(A, ("vessels", 0, "flag_state"), "QQQ"), IDENT),
    "call sign lower case": (A, put_in(A, ("vessels", 0, "call_sign"), "hsxx7"), SCHEMA),
    "departure before arrival": (
        A,
        edit(A, lambda f: f["route"][1].update(departure_ms=f["route"][1]["arrival_ms"] - 1)),
        SCHEMA,
    ),
    "waypoint bad mode": (A, put_in(A, ("route", 0, "mode"), "teleport"), SCHEMA),
    # doc.verify.request
    "mrz one line": (R, put(R, mrz=TD3[:1]), SCHEMA),
    "mrz four lines": (R, put(R, mrz=["<" * 30] * 4), SCHEMA),
    "mrz line of 45": (R, put(R, mrz=[TD3[0] + "<", TD3[1] + "<"]), SCHEMA),
    "mrz lower case": (R, put(R, mrz=[TD3[0].lower(), TD3[1]]), MRZ_FORMAT),
    "mrz with spaces": (R, put(R, mrz=[TD3[0].replace("<", " "), TD3[1]]), MRZ_FORMAT),
    "mrz unequal lines": (R, put(R, mrz=[TD3[0], TD3[1][:36]]), MRZ_FORMAT),
    "mrz two lines of 30": (R, put(R, mrz=["<" * 30] * 2), MRZ_FORMAT),
    "mrz three lines of 44": (R, put(R, mrz=[TD3[0], TD3[1], TD3[1]]), MRZ_FORMAT),
    "mrz bad purpose": (R, put(R, purpose="curiosity"), SCHEMA),
    # doc.verify.response
    "data mismatch without fields": (S, put(S, status="data_mismatch"), SCHEMA),
    "fields without data mismatch": (S, put(S, mismatched_fields=["surname"]), SCHEMA),
    "mismatched field twice": (
        S,
        put(S, status="data_mismatch", mismatched_fields=["sex", "sex"]),
        SCHEMA,
    ),
    "human answer without officer": (S, put(S, answered_by="human"), SCHEMA),
    "automated answer with officer": (S, put(S, officer="Sgt. EXAMPLE"), SCHEMA),
    # person.query / person.result
    "query without birth date or document": (Q, drop(Q, "birth_date"), SCHEMA),
    "query without surname": (Q, drop(Q, "surname"), SCHEMA),
    "query blank legal basis": (Q, put(Q, legal_basis=" "), SCHEMA),
    "result reference with personal data": (
        P,
        put(P, reference="ERIKSSON ANNA 1974-08-12"),
        SCHEMA,
    ),
    "result reference lower case": (P, put(P, reference="mys-1"), SCHEMA),
    "result reference too long": (P, put(P, reference="A" * 65), SCHEMA),
    "hit without reference": (P, drop(P, "reference"), SCHEMA),
    "no hit with reference": (P, put(P, hit=False), SCHEMA),
    "result with a name field": (P, put(P, surname="ERIKSSON"), SCHEMA),
    # followup
    "followup reference with slash first": (FR, put(FR, reference="/MYS"), SCHEMA),
    "followup without legal basis": (FR, drop(FR, "legal_basis"), SCHEMA),
    "refused without reason": (
        FD,
        edit(FD, lambda f: (f.pop("released"), f.pop("reason"), f.update(decision="refused"))),
        SCHEMA,
    ),
    "partially approved without reason": (FD, drop(FD, "reason"), SCHEMA),
    "refusal releasing data": (FD, put(FD, decision="refused"), SCHEMA),
    "refusal releasing subjects": (
        FD,
        edit(
            FD,
            lambda f: (
                f.pop("released"),
                f.update(decision="refused", subjects=[{"role": "unknown", "surname": "X"}]),
            ),
        ),
        SCHEMA,
    ),
    "decision without officer": (FD, drop(FD, "decided_by"), SCHEMA),
    # mla
    "mla without measures": (MQ, put(MQ, measures=[]), SCHEMA),
    "mla measure twice": (MQ, put(MQ, measures=["bank_records", "bank_records"]), SCHEMA),
    "mla unknown measure": (MQ, put(MQ, measures=["rendition"]), SCHEMA),
    "mla without legal basis": (MQ, drop(MQ, "legal_basis"), SCHEMA),
    "mla executed to in execution": (
        MS,
        put(MS, status="in_execution", previous="executed"),
        TRANSITION,
    ),
    "mla received after received": (
        MS,
        put(MS, status="received", previous="received"),
        TRANSITION,
    ),
    "mla skips acknowledged": (MS, put(MS, status="in_execution", previous="received"), TRANSITION),
    "mla refused without reason": (MS, put(MS, status="refused", previous="received"), SCHEMA),
    "mla unknown status": (MS, put(MS, status="lost"), SCHEMA),
    # receipt
    "rejected without code": (RC, put(RC, status="rejected"), SCHEMA),
    "code on a delivery": (RC, put(RC, code="ixb.E_SCHEMA"), SCHEMA),
    "code without prefix": (RC, put(RC, status="rejected", code="E_SCHEMA"), SCHEMA),
    "code lower case": (RC, put(RC, status="rejected", code="ixb.e_schema"), SCHEMA),
    "message id of 15 bytes": (RC, put(RC, for_id=bytes(15)), SCHEMA),
    "message id as text": (RC, put(RC, for_id="0" * 16), SCHEMA),
    "issuer lower case": (RC, put(RC, by="mys/hub"), SCHEMA),
    "issuer unknown country": (RC, put(RC, by="ZZZ/HUB"), IDENT),
    "detail with newline": (RC, put(RC, detail="a\nb"), SCHEMA),
    "also repeats for_id": (RC, put(RC, also=[MID, bytes(16)], for_id=MID), SCHEMA),
    "also repeats an id": (RC, put(RC, also=[bytes(16), bytes(16)]), SCHEMA),
    "also with 256 ids": (
        RC,
        put(RC, also=[i.to_bytes(16, "big") for i in range(1, 257)]),
        SCHEMA,
    ),
    "also id of 15 bytes": (RC, put(RC, also=[bytes(15)]), SCHEMA),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(case: str) -> None:
    type_name, data, code = REFUSED[case]
    with pytest.raises(IxbError) as info:
        decode_body(type_name, data)
    assert info.value.code == code, info.value.detail


def test_errors_name_fields_not_values() -> None:
    """Errors go into receipts and audit entries, which must hold no personal data."""
    for case in ("result reference with personal data", "subject birth date not a day"):
        type_name, data, _ = REFUSED[case]
        with pytest.raises(IxbError) as info:
            decode_body(type_name, data)
        assert "ERIKSSON" not in str(info.value)
        assert "1981-02-30" not in str(info.value)


def test_text_may_break_lines_only_in_long_fields() -> None:
    body = msgspec.structs.replace(EXAMPLES[A], text="line 1\n\tline 2")
    assert decode_body(A, encode_body(body)) == body


# --- construction checks what decoding checks ------------------------------------------


def alert(**changes: Any) -> Alert:
    body = EXAMPLES[A]
    assert isinstance(body, Alert)
    return msgspec.structs.replace(body, **changes)


CONSTRUCTION: dict[str, Callable[[], object]] = {
    "title too long": lambda: alert(title="x" * (MAX_SHORT_TEXT + 1)),
    "title with control": lambda: alert(title="a\x07"),
    "title not a string": lambda: alert(title=7),
    "category as plain string": lambda: alert(category="trafficking"),
    "time negative": lambda: alert(valid_until_ms=-5),
    "time as bool": lambda: alert(valid_until_ms=True),
    "subjects as list": lambda: alert(subjects=[]),
    "subjects of wrong type": lambda: alert(subjects=("x",)),
    "too many vessels": lambda: alert(vessels=(Vessel(name="V"),) * (MAX_LIST + 1)),
    "attachment over its limit": lambda: Attachment.of("big", bytes(MAX_ATTACHMENT_BYTES + 1)),
    "attachments over the total": lambda: alert(
        attachments=(Attachment.of("a", bytes(MAX_ATTACHMENT_BYTES)),) * 3
    ),
    "too many attachments": lambda: alert(
        attachments=(Attachment.of("a", b"x"),) * (MAX_ATTACHMENTS + 1)
    ),
    "attachment hash of other data": lambda: Attachment(
        name="a", data=b"x", sha256=Attachment.of("a", b"y").sha256
    ),
    "subject without identity": lambda: Subject(role=SubjectRole.VICTIM),
    "imo check digit": lambda: Vessel(name="V", imo="1234560"),
    "reference with space": lambda: PersonResult(hit=True, reference="A B"),
    "mrz shape": lambda: DocVerifyRequest(mrz=("<" * 30, "<" * 30), purpose=DocPurpose.OTHER),
    "mla transition": lambda: MlaStatus(
        status=MlaStatusCode.RECEIVED, previous=MlaStatusCode.WITHDRAWN
    ),
}


@pytest.mark.parametrize("case", sorted(CONSTRUCTION))
def test_construction_refuses_what_decoding_refuses(case: str) -> None:
    with pytest.raises(IxbError):
        CONSTRUCTION[case]()


def test_construction_accepts_every_category() -> None:
    for category in AlertCategory:
        assert alert(category=category).category is category


# --- MLA state machine ---------------------------------------------------------------

# Written out independently of MLA_TRANSITIONS so the test does not restate the code.
ALLOWED_MLA: set[tuple[str | None, str]] = {
    (None, "received"),
    ("received", "acknowledged"),
    ("received", "refused"),
    ("received", "withdrawn"),
    ("acknowledged", "in_execution"),
    ("acknowledged", "refused"),
    ("acknowledged", "withdrawn"),
    ("in_execution", "executed"),
    ("in_execution", "partially_executed"),
    ("in_execution", "refused"),
    ("in_execution", "withdrawn"),
}
MLA_PAIRS = list(itertools.product([None, *MlaStatusCode], MlaStatusCode))


def test_mla_transition_table_covers_every_status() -> None:
    assert set(MLA_TRANSITIONS) == {None, *MlaStatusCode}
    assert {(old, new) for old, nexts in MLA_TRANSITIONS.items() for new in nexts} == ALLOWED_MLA


@pytest.mark.parametrize(("old", "new"), MLA_PAIRS)
def test_mla_transition(old: MlaStatusCode | None, new: MlaStatusCode) -> None:
    reason = "EXAMPLE reason" if new is MlaStatusCode.REFUSED else None
    if (old, new) in ALLOWED_MLA:
        check_mla_transition(old, new)
        if old is not None:
            MlaStatus(status=new, previous=old, reason=reason)
    else:
        with pytest.raises(TransitionError) as info:
            check_mla_transition(old, new)
        assert new in info.value.detail
        if old is not None:
            with pytest.raises(TransitionError):
                MlaStatus(status=new, previous=old, reason=reason)


def test_apply_mla_status_tracks_history() -> None:
    history: tuple[MlaStatusCode, ...] = ()
    for step in ("received", "acknowledged", "in_execution", "partially_executed"):
        history = apply_mla_status(history, MlaStatusCode(step))
    assert history[-1] is MlaStatusCode.PARTIALLY_EXECUTED
    with pytest.raises(TransitionError, match="final"):
        apply_mla_status(history, MlaStatusCode.EXECUTED)
    with pytest.raises(TransitionError, match="first status"):
        apply_mla_status((), MlaStatusCode.ACKNOWLEDGED)
    assert len(history) == 4


# --- helpers and vectors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("imo", "ok"),
    [
        ("9074729", True),
        ("1234567", True),
        ("9074728", False),
        ("0000000", True),
        ("907472", False),
    ],
)
def test_imo_check_digit(imo: str, ok: bool) -> None:
    if ok:
        check_imo(imo, "imo")
    else:
        with pytest.raises(SchemaError):
            check_imo(imo, "imo")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2024-02-29", True),
        ("2023-02-29", False),
        ("20240229", False),  # accepted by date.fromisoformat, not by the spec
        ("2024-W09-4", False),
        ("2024-2-29", False),
    ],
)
def test_check_date(text: str, ok: bool) -> None:
    if ok:
        assert check_date(text, "date") == date.fromisoformat(text)
    else:
        with pytest.raises(SchemaError):
            check_date(text, "date")


# The same hex strings appear in docs/spec-messages.md §Vectors.
SPEC_VECTORS = {
    "person.result": "82a3686974c3a97265666572656e6365b34d59532d524d502d323032342d303030343137",
    "receipt": (
        "84a6666f725f6964c41001a1ee565a1870008000000000000000a6737461747573a964656c697665"
        "726564a26279a74d59532f485542a561745f6d73cf000001a1ee565e00"
    ),
}


@pytest.mark.parametrize("type_name", sorted(SPEC_VECTORS))
def test_spec_vectors(type_name: str) -> None:
    data = bytes.fromhex(SPEC_VECTORS[type_name])
    assert encode_body(EXAMPLES[type_name]) == data
    assert decode_body(type_name, data) == EXAMPLES[type_name]


def test_receipt_also_names_more_messages() -> None:
    first, second, third = (bytes([i]) * 16 for i in (1, 2, 3))
    receipt = Receipt(
        for_id=first,
        status=ReceiptStatus.RELAYED,
        by="THA/HUB",
        at_ms=1,
        detail="MYS",
        also=(second, third),
    )
    data = encode_body(receipt)
    decoded = decode_body("receipt", data)
    assert decoded == receipt
    assert isinstance(decoded, Receipt)
    assert decoded.ids == (first, second, third)
    single = Receipt(for_id=first, status=ReceiptStatus.READ, by="MYS/RMP", at_ms=1)
    assert single.ids == (first,)
    assert b"also" not in encode_body(single)  # omitted when empty: the vector is unchanged
