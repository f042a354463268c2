"""Audit entries: the leaf bytes of the audit log, checked both ways and refused strictly."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import merkle
from protocols.audit import (
    MAX_AUDIT_ENTRY_BYTES,
    AuditEntry,
    AuditEvent,
    audit_text,
    decode_entry,
    encode_entry,
)
from protocols.errors import IxbError
from protocols.fields import MAX_TIME_MS
from protocols.handling import HandlingCode
from protocols.limits import MAX_RECIPIENTS, MAX_SHORT_TEXT
from tests.gen_checkpoint import entry_from_json
from tests.strategies import countries, error_codes, principals, short_text, times

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "vectors"
CASES: list[dict[str, Any]] = json.loads((VECTORS / "checkpoint.json").read_text())["ixb"][
    "audit_entries"
]
FAST = settings(max_examples=200, deadline=None, database=None)
MSG_ID = bytes(range(16))
HASH = bytes(range(32))


# --- vectors ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_entry_vectors_both_directions(case: dict[str, Any]) -> None:
    entry = entry_from_json(case["fields"])
    leaf = bytes.fromhex(case["encoding"])
    assert encode_entry(entry) == leaf
    assert decode_entry(leaf) == entry
    assert merkle.leaf_hash(leaf).hex() == case["leaf_hash"]


def test_vectors_cover_refusals_reads_and_message_events() -> None:
    events = {c["fields"]["event"] for c in CASES}
    assert {"accepted", "relayed", "rejected", "audit_read"} <= events


# --- the schema is the spec ------------------------------------------------------------


def test_fields_in_wire_order() -> None:
    assert AuditEntry.__struct_fields__ == (
        "v",
        "hub",
        "at",
        "event",
        "msg_id",
        "type",
        "sender",
        "recipients",
        "handling",
        "case_ref",
        "payload_hash",
        "size",
        "code",
        "detail",
        "peer",
        "actor",
    )


def test_events() -> None:
    assert [e.value for e in AuditEvent] == [
        "accepted",
        "rejected",
        "relayed",
        "delivered",
        "duplicate",
        "directory_published",
        "directory_installed",
        "directory_rejected",
        "checkpoint_cosigned",
        "witness_alarm",
        "audit_read",
        "audit_export",
        "policy_changed",
        "hub_started",
        "hub_stopped",
    ]


def test_message_id_as_text() -> None:
    e = AuditEntry(v=1, hub="THA/HUB", at=0, event=AuditEvent.DELIVERED, msg_id=MSG_ID)
    assert e.message_id == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert AuditEntry(v=1, hub="THA/HUB", at=0, event=AuditEvent.HUB_STARTED).message_id is None


def test_the_largest_entry_fits_the_limit() -> None:
    wide = "\U0001f600" * MAX_SHORT_TEXT  # 4 UTF-8 bytes a character
    e = AuditEntry(
        v=1,
        hub="THA/HUB",
        at=MAX_TIME_MS,
        event=AuditEvent.REJECTED,
        msg_id=MSG_ID,
        type="x" * 32,
        sender="THA/" + "A" * 32,
        recipients=tuple(f"MYS/R{i:031d}" for i in range(MAX_RECIPIENTS)),
        handling=HandlingCode.H3,
        case_ref=wide,
        payload_hash=HASH,
        size=(1 << 53) - 1,
        code="ixb.E_" + "X" * 40,
        detail=wide,
        peer="MYS",
        actor=wide,
    )
    size = len(encode_entry(e))
    assert size <= MAX_AUDIT_ENTRY_BYTES
    assert decode_entry(encode_entry(e)) == e


# --- round trips ------------------------------------------------------------------------


@st.composite
def entries(draw: st.DrawFn) -> AuditEntry:
    event = draw(st.sampled_from(list(AuditEvent)))
    needs_id = event in {
        AuditEvent.ACCEPTED,
        AuditEvent.RELAYED,
        AuditEvent.DELIVERED,
        AuditEvent.DUPLICATE,
    }
    needs_code = event in {
        AuditEvent.REJECTED,
        AuditEvent.DIRECTORY_REJECTED,
        AuditEvent.WITNESS_ALARM,
    }
    no_code = event in {AuditEvent.ACCEPTED, AuditEvent.RELAYED, AuditEvent.DELIVERED}
    needs_actor = event in {AuditEvent.AUDIT_READ, AuditEvent.AUDIT_EXPORT}

    def maybe(strategy: st.SearchStrategy[Any], required: bool = False) -> Any:
        return draw(strategy if required else st.none() | strategy)

    return AuditEntry(
        v=1,
        hub=draw(countries) + "/HUB",
        at=draw(times),
        event=event,
        msg_id=maybe(st.binary(min_size=16, max_size=16), needs_id),
        type=maybe(st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,10}){0,2}", fullmatch=True)),
        sender=maybe(principals),
        recipients=tuple(draw(st.lists(principals, max_size=4, unique=True))),
        handling=maybe(st.sampled_from(list(HandlingCode))),
        case_ref=maybe(short_text),
        payload_hash=maybe(st.binary(min_size=32, max_size=32)),
        size=maybe(st.integers(0, (1 << 53) - 1)),
        code=None if no_code else maybe(error_codes, needs_code),
        detail=maybe(short_text),
        peer=maybe(countries),
        actor=maybe(short_text, needs_actor),
    )


@FAST
@given(entries())
def test_round_trip(entry: AuditEntry) -> None:
    data = encode_entry(entry)
    assert decode_entry(data) == entry
    assert encode_entry(decode_entry(data)) == data


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_give_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(IxbError):
        decode_entry(data)


@FAST
@given(entries(), st.data())
def test_bit_flips_give_only_typed_errors_or_another_valid_entry(
    entry: AuditEntry, data: st.DataObject
) -> None:
    raw = bytearray(encode_entry(entry))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        other = decode_entry(bytes(raw))
    except IxbError:
        return
    assert encode_entry(other) == bytes(raw)  # canonical: a changed leaf is a changed entry
    assert other != entry


# --- refusals -------------------------------------------------------------------------------

BASE: dict[str, Any] = {"v": 1, "hub": "THA/HUB", "at": 1, "event": "hub_started"}
MSG: dict[str, Any] = {**BASE, "event": "accepted", "msg_id": MSG_ID}


def _raw(fields: dict[str, Any]) -> bytes:
    return msgspec.msgpack.encode(fields)


REFUSALS: dict[str, tuple[bytes, str]] = {
    "version 2": (_raw({**BASE, "v": 2}), "ixb.E_VERSION"),
    "version 0": (_raw({**BASE, "v": 0}), "ixb.E_VERSION"),
    "no version": (_raw({k: v for k, v in BASE.items() if k != "v"}), "ixb.E_SCHEMA"),
    "unknown field": (_raw({**BASE, "body": "x"}), "ixb.E_SCHEMA"),
    "unknown event": (_raw({**BASE, "event": "deleted"}), "ixb.E_SCHEMA"),
    "hub is an agency": (_raw({**BASE, "hub": "THA/DSI-ATHD"}), "ixb.E_IDENTIFIER"),
    "hub of no country": (_raw({**BASE, "hub": "XXX/HUB"}), "ixb.E_IDENTIFIER"),
    "sender of no country": (_raw({**BASE, "sender": "QQQ/A"}), "ixb.E_IDENTIFIER"),
    "time negative": (_raw({**BASE, "at": -1}), "ixb.E_SCHEMA"),
    "time above 2^48": (_raw({**BASE, "at": MAX_TIME_MS + 1}), "ixb.E_SCHEMA"),
    "msg_id of 15 bytes": (_raw({**MSG, "msg_id": MSG_ID[:15]}), "ixb.E_SCHEMA"),
    "msg_id as text": (_raw({**MSG, "msg_id": MSG_ID.hex()}), "ixb.E_SCHEMA"),
    "type in capitals": (_raw({**BASE, "type": "Alert"}), "ixb.E_SCHEMA"),
    "payload hash of 31 bytes": (_raw({**BASE, "payload_hash": HASH[:31]}), "ixb.E_SCHEMA"),
    "size negative": (_raw({**BASE, "size": -1}), "ixb.E_SCHEMA"),
    "unknown handling code": (_raw({**BASE, "handling": "H9"}), "ixb.E_SCHEMA"),
    "code not ixb.E_": (_raw({**BASE, "code": "E_FOO"}), "ixb.E_SCHEMA"),
    "detail of 257 characters": (_raw({**BASE, "detail": "x" * 257}), "ixb.E_SCHEMA"),
    "detail with an escape": (_raw({**BASE, "detail": "red \x1b[31m"}), "ixb.E_SCHEMA"),
    "detail with a newline": (_raw({**BASE, "detail": "a\nb"}), "ixb.E_SCHEMA"),
    "blank detail": (_raw({**BASE, "detail": "  "}), "ixb.E_SCHEMA"),
    "case_ref with a C1 control": (_raw({**BASE, "case_ref": "x\x85"}), "ixb.E_SCHEMA"),
    "peer of no country": (_raw({**BASE, "peer": "ZZZ"}), "ixb.E_IDENTIFIER"),
    "peer in lower case": (_raw({**BASE, "peer": "tha"}), "ixb.E_SCHEMA"),
    "recipients repeat": (_raw({**BASE, "recipients": ["MYS/A", "MYS/A"]}), "ixb.E_SCHEMA"),
    "257 recipients": (
        _raw({**BASE, "recipients": [f"MYS/A{i}" for i in range(257)]}),
        "ixb.E_SCHEMA",
    ),
    "accepted without msg_id": (_raw({**BASE, "event": "accepted"}), "ixb.E_SCHEMA"),
    "accepted with a code": (_raw({**MSG, "code": "ixb.E_REPLAY"}), "ixb.E_SCHEMA"),
    "rejected without a code": (_raw({**BASE, "event": "rejected"}), "ixb.E_SCHEMA"),
    "witness alarm without a code": (_raw({**BASE, "event": "witness_alarm"}), "ixb.E_SCHEMA"),
    "audit read without an actor": (_raw({**BASE, "event": "audit_read"}), "ixb.E_SCHEMA"),
    "fields out of order": (
        _raw({"hub": "THA/HUB", "v": 1, "at": 1, "event": "hub_started"}),
        "ixb.E_NONCANONICAL",
    ),
    "absent field as nil": (_raw({**BASE, "msg_id": None}), "ixb.E_NONCANONICAL"),
    "empty recipients written out": (_raw({**BASE, "recipients": []}), "ixb.E_NONCANONICAL"),
    "version as uint8": (
        _raw(BASE).replace(b"\xa1v\x01", b"\xa1v\xcc\x01"),
        "ixb.E_NONCANONICAL",
    ),
    "trailing byte": (_raw(BASE) + b"\x00", "ixb.E_MALFORMED"),
    "truncated": (_raw(BASE)[:-1], "ixb.E_MALFORMED"),
    "an array, not a map": (
        msgspec.msgpack.encode([1, "THA/HUB", 1, "hub_started"]),
        "ixb.E_SCHEMA",
    ),
    "empty": (b"", "ixb.E_MALFORMED"),
    "too large": (
        _raw({**BASE, "detail": "x"}) + b"\x00" * MAX_AUDIT_ENTRY_BYTES,
        "ixb.E_TOO_LARGE",
    ),
}


@pytest.mark.parametrize(("data", "code"), REFUSALS.values(), ids=list(REFUSALS))
def test_refusals(data: bytes, code: str) -> None:
    with pytest.raises(IxbError) as info:
        decode_entry(data)
    assert info.value.code == code, info.value.detail


def test_decoding_something_else_than_bytes_is_malformed() -> None:
    with pytest.raises(IxbError) as info:
        decode_entry("not bytes")  # type: ignore[arg-type]
    assert info.value.code == "ixb.E_MALFORMED"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"detail": "x" * 257}, "ixb.E_SCHEMA"),
        ({"detail": "a\tb"}, "ixb.E_SCHEMA"),
        ({"hub": "THA/IMMIGRATION"}, "ixb.E_IDENTIFIER"),
        ({"v": 2}, "ixb.E_VERSION"),
        ({"recipients": ["MYS/A"]}, "ixb.E_SCHEMA"),  # a list, not a tuple
        ({"size": True}, "ixb.E_SCHEMA"),
        ({"event": "accepted"}, "ixb.E_SCHEMA"),  # a str, not an AuditEvent
    ],
)
def test_local_construction_is_checked_like_decoding(fields: dict[str, Any], code: str) -> None:
    kw: dict[str, Any] = {"v": 1, "hub": "THA/HUB", "at": 1, "event": AuditEvent.HUB_STARTED}
    with pytest.raises(IxbError) as info:
        AuditEntry(**{**kw, **fields})
    assert info.value.code == code


# --- fitting peer text into entries ------------------------------------------------------


@pytest.mark.parametrize(
    ("given_text", "fitted"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("\x00\x01", "\ufffd\ufffd"),
        ("TIP-2026-0042", "TIP-2026-0042"),
        ("red \x1b[31m", "red \ufffd[31m"),
        ("a\nb\tc\x85", "a\ufffdb\ufffdc\ufffd"),
        ("x" * 300, "x" * MAX_SHORT_TEXT),
    ],
)
def test_audit_text(given_text: str | None, fitted: str | None) -> None:
    assert audit_text(given_text) == fitted


@FAST
@given(st.text(max_size=400))
def test_audit_text_always_fits(text: str) -> None:
    fitted = audit_text(text)
    e = AuditEntry(v=1, hub="THA/HUB", at=0, event=AuditEvent.HUB_STOPPED, detail=fitted)
    assert decode_entry(encode_entry(e)) == e
