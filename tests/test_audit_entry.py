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
    make_entry,
)
from protocols.envelope import Header
from protocols.errors import IxbError
from protocols.fields import MAX_TIME_MS
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import format_message_id
from protocols.limits import MAX_RECIPIENTS, MAX_SHORT_TEXT
from tests.gen_checkpoint import entry_from_json
from tests.strategies import countries, error_codes, principals, short_text, times

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "vectors"
_IXB: dict[str, Any] = json.loads((VECTORS / "checkpoint.json").read_text())["ixb"]
CASES: list[dict[str, Any]] = _IXB["audit_entries"] + _IXB["reply_entries"]
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


def test_vectors_cover_both_versions() -> None:
    """The log's entries are version 1; the reply entries version 2, with in_reply_to."""
    assert {c["fields"]["v"] for c in _IXB["audit_entries"]} == {1}
    assert all(
        c["fields"]["v"] == 2 and "in_reply_to" in c["fields"] for c in _IXB["reply_entries"]
    )
    assert {c["fields"]["type"] for c in _IXB["reply_entries"]} >= {"receipt"}


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
        "in_reply_to",
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
        v=2,
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
        in_reply_to=bytes(16),
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

    msg_id = maybe(st.binary(min_size=16, max_size=16), needs_id)
    reply_to = maybe(st.binary(min_size=16, max_size=16).filter(lambda b: b != msg_id))
    return AuditEntry(
        v=1 if reply_to is None else 2,
        hub=draw(countries) + "/HUB",
        at=draw(times),
        event=event,
        msg_id=msg_id,
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
        in_reply_to=reply_to,
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
REPLY: dict[str, Any] = {**MSG, "v": 2, "type": "receipt", "in_reply_to": HASH[:16]}


def _raw(fields: dict[str, Any]) -> bytes:
    return msgspec.msgpack.encode(fields)


REFUSALS: dict[str, tuple[bytes, str]] = {
    "version 3": (_raw({**BASE, "v": 3}), "ixb.E_VERSION"),
    "version 3 with in_reply_to": (_raw({**REPLY, "v": 3}), "ixb.E_VERSION"),
    "version 2 without in_reply_to": (_raw({**BASE, "v": 2}), "ixb.E_SCHEMA"),
    "version 1 with in_reply_to": (_raw({**REPLY, "v": 1}), "ixb.E_SCHEMA"),
    "in_reply_to of 15 bytes": (_raw({**REPLY, "in_reply_to": MSG_ID[:15]}), "ixb.E_SCHEMA"),
    "in_reply_to as text": (_raw({**REPLY, "in_reply_to": MSG_ID.hex()}), "ixb.E_SCHEMA"),
    "in_reply_to is the message itself": (
        _raw({**REPLY, "in_reply_to": MSG_ID}),
        "ixb.E_SCHEMA",
    ),
    "in_reply_to before actor": (
        _raw({**BASE, "v": 2, "event": "audit_read", "in_reply_to": MSG_ID, "actor": "a"}),
        "ixb.E_NONCANONICAL",
    ),
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
        ({"v": 3}, "ixb.E_VERSION"),
        ({"v": 2}, "ixb.E_SCHEMA"),  # version 2 carries in_reply_to
        ({"in_reply_to": MSG_ID}, "ixb.E_SCHEMA"),  # and version 1 does not
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


# --- version 2: the message a reply or receipt answers -----------------------------------


def _header(in_reply_to: bytes | None, type_: str = "receipt") -> Header:
    return Header(
        id=MSG_ID,
        type=type_,
        sender="MYS/IMMIGRATION",
        sender_key=bytes(8),
        recipients=["THA/DSI-ATHD"],
        created=1,
        expires=2,
        handling=HandlingCode.H1,
        priority=Priority.NORMAL,
        in_reply_to=in_reply_to,
    )


def test_make_entry_links_a_receipt_to_the_message_it_answers() -> None:
    original = bytes(range(16, 32))
    e = make_entry("THA/HUB", 5, AuditEvent.ACCEPTED, header=_header(original), peer="MYS")
    assert (e.v, e.in_reply_to, e.reply_to_id) == (2, original, format_message_id(original))
    assert decode_entry(encode_entry(e)) == e
    assert encode_entry(e).endswith(b"\xabin_reply_to\xc4\x10" + original)  # the last key


def test_make_entry_without_in_reply_to_writes_version_1() -> None:
    e = make_entry("THA/HUB", 5, AuditEvent.ACCEPTED, header=_header(None, "alert"))
    assert (e.v, e.in_reply_to) == (1, None)
    assert b"in_reply_to" not in encode_entry(e)


def test_version_1_leaves_are_unchanged() -> None:
    """Old logs keep verifying: every version 1 vector (the log of checkpoint.json, written
    before version 2 existed) decodes and re-encodes to the same bytes and leaf hash."""
    for case in _IXB["audit_entries"]:
        leaf = bytes.fromhex(case["encoding"])
        entry = decode_entry(leaf)
        assert entry.v == 1
        assert encode_entry(entry) == leaf
        assert merkle.leaf_hash(encode_entry(entry)).hex() == case["leaf_hash"]


@FAST
@given(entries())
def test_version_follows_in_reply_to(entry: AuditEntry) -> None:
    assert (entry.v == 2) == (entry.in_reply_to is not None)
    assert (b"in_reply_to" in encode_entry(entry)) == (entry.v == 2)
