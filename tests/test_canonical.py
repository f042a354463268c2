"""SPEC §1.1, checked on the bytes: every header of every wire structure is the shortest form.

A reader written from the spec re-encodes with the shortest map, array, string,
binary and integer headers; the reference encoder must write exactly that, or
no independent implementation reproduces a signature input, leaf hash or root.
:func:`shortest_form_violations` parses MessagePack on its own (not with
msgspec, whose encoder is what is under test) and lists every header that a
shorter one could have held.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import wire
from protocols.audit import (
    AuditEntry,
    AuditEvent,
    CheckpointPublication,
    SharedEntry,
    decode_entry,
    encode_entry,
    encode_publication,
)
from protocols.directory import (
    Directory,
    DirectoryEntry,
    PreviousKey,
    RevocationInfo,
    SignedDirectory,
)
from protocols.envelope import Header, Hop, SealedKey, _Outer
from protocols.errors import IxbError
from protocols.handling import HandlingCode, Priority
from protocols.messages import MESSAGE_TYPES, REPLY_TO, encode_body
from protocols.roles import Role
from tests.strategies import bodies, principals
from tests.test_audit_entry import entries

FAST = settings(max_examples=150, deadline=None, database=None)

# (first byte range, name, payload length of the header, minimum count/value for the form)
_INT_FORMS = {0xCC: (1, 1 << 7), 0xCD: (2, 1 << 8), 0xCE: (4, 1 << 16), 0xCF: (8, 1 << 32)}
_NEG_FORMS = {0xD0: (1, -32), 0xD1: (2, -(1 << 7)), 0xD2: (4, -(1 << 15)), 0xD3: (8, -(1 << 31))}
_LEN_FORMS = {  # first byte: (kind, size of the length, smallest length this form is for)
    0xC4: ("bin", 1, 0),
    0xC5: ("bin", 2, 1 << 8),
    0xC6: ("bin", 4, 1 << 16),
    0xD9: ("str", 1, 32),
    0xDA: ("str", 2, 1 << 8),
    0xDB: ("str", 4, 1 << 16),
    0xDC: ("array", 2, 16),
    0xDD: ("array", 4, 1 << 16),
    0xDE: ("map", 2, 16),
    0xDF: ("map", 4, 1 << 16),
}


def shortest_form_violations(data: bytes) -> list[str]:
    """Every header in ``data`` (one MessagePack value) that is not the shortest form."""
    bad: list[str] = []

    def value(i: int) -> int:
        b = data[i]
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            return i + 1
        if 0x80 <= b <= 0x9F:  # fixmap, fixarray
            n, i = b & 0x0F, i + 1
            for _ in range(n * 2 if b < 0x90 else n):
                i = value(i)
            return i
        if 0xA0 <= b <= 0xBF:
            return i + 1 + (b & 0x1F)
        if b in _INT_FORMS or b in _NEG_FORMS:
            size, limit = (_INT_FORMS | _NEG_FORMS)[b]
            v = int.from_bytes(data[i + 1 : i + 1 + size], "big", signed=b in _NEG_FORMS)
            if (b in _INT_FORMS and v < limit) or (b in _NEG_FORMS and v >= limit):
                bad.append(f"integer {v} at {i} in form 0x{b:02x}")
            return i + 1 + size
        if b in _LEN_FORMS:
            kind, size, smallest = _LEN_FORMS[b]
            n = int.from_bytes(data[i + 1 : i + 1 + size], "big")
            if n < smallest:
                bad.append(f"{kind} of {n} at {i} with header 0x{b:02x}")
            i += 1 + size
            if kind in ("bin", "str"):
                return i + n
            for _ in range(n * 2 if kind == "map" else n):
                i = value(i)
            return i
        raise AssertionError(f"byte 0x{b:02x} at {i}: not a type a wire structure uses")

    end = value(0)
    assert end == len(data), "trailing bytes"
    return bad


def test_the_checker_finds_long_forms() -> None:
    """The checker itself: each long form it must catch, and the short forms it must pass."""
    assert shortest_form_violations(msgspec.msgpack.encode({"a": [1, -5, "x", b"y"]})) == []
    assert shortest_form_violations(b"\xde\x00\x01\xa1a\x01") == ["map of 1 at 0 with header 0xde"]
    assert shortest_form_violations(b"\xdc\x00\x00") == ["array of 0 at 0 with header 0xdc"]
    assert shortest_form_violations(b"\xcc\x05") == ["integer 5 at 0 in form 0xcc"]
    assert shortest_form_violations(b"\xd0\xff") == ["integer -1 at 0 in form 0xd0"]
    assert shortest_form_violations(b"\xd9\x01a") == ["str of 1 at 0 with header 0xd9"]
    assert shortest_form_violations(b"\xc5\x00\x01a") == ["bin of 1 at 0 with header 0xc5"]
    assert shortest_form_violations(struct.pack(">BH", 0xDC, 16) + b"\x00" * 16) == []


def _check(data: bytes) -> None:
    assert shortest_form_violations(data) == []


# --- every wire structure ------------------------------------------------------------


@FAST
@given(entries())
def test_audit_entries(entry_: AuditEntry) -> None:
    """The leaf: 4 to 17 fields present, so a fixmap up to 15 and map16 from 16."""
    leaf = encode_entry(entry_)
    _check(leaf)
    present = len(msgspec.msgpack.decode(leaf))
    assert leaf[0] == (0x80 | present if present < 16 else 0xDE)
    assert decode_entry(leaf) == entry_


def test_the_smallest_and_the_fullest_audit_entry() -> None:
    small = AuditEntry(v=1, hub="THA/HUB", at=1, event=AuditEvent.HUB_STARTED)
    assert encode_entry(small)[0] == 0x84  # fixmap of 4: the finding of the independent client
    with pytest.raises(IxbError) as info:
        decode_entry(b"\xde\x00\x04" + encode_entry(small)[1:])
    assert info.value.code == "ixb.E_NONCANONICAL"


@FAST
@given(bodies())
def test_message_bodies(body: Any) -> None:
    _check(encode_body(body))


@st.composite
def headers(draw: st.DrawFn) -> Header:
    type_name = draw(st.sampled_from(sorted(MESSAGE_TYPES)))
    handling = draw(st.sampled_from(list(HandlingCode)))
    answers = type_name in REPLY_TO or type_name == "receipt"
    return Header(
        id=draw(st.binary(min_size=16, max_size=16)),
        type=type_name,
        sender=draw(principals),
        sender_key=draw(st.binary(min_size=8, max_size=8)),
        recipients=draw(st.lists(principals, min_size=1, max_size=40, unique=True)),
        created=0,
        expires=draw(st.integers(1, (1 << 53) - 1)),
        handling=handling,
        priority=draw(st.sampled_from(list(Priority))),
        restriction="only for this case" if handling is HandlingCode.H3 else None,
        case_ref=draw(st.none() | st.text("ABC-0123456789", min_size=1, max_size=300)),
        in_reply_to=bytes(16) if answers else draw(st.none() | st.just(bytes(16))),
    )


@FAST
@given(headers())
def test_envelope_headers(header: Header) -> None:
    _check(wire.encode(header))


hops = st.builds(
    Hop,
    hub=principals,
    key_id=st.binary(min_size=8, max_size=8),
    at=st.integers(0, (1 << 53) - 1),
    sig=st.binary(min_size=64, max_size=64),
)


@FAST
@given(
    keys=st.lists(
        st.builds(
            SealedKey,
            recipient=principals,
            key_id=st.binary(min_size=8, max_size=8),
            sealed=st.binary(min_size=80, max_size=80),
        ),
        min_size=1,
        max_size=40,
    ),
    hop_list=st.lists(hops, max_size=16),
    ct=st.binary(min_size=72, max_size=70_000),
)
def test_envelope_keys_and_outer_struct(
    keys: list[SealedKey], hop_list: list[Hop], ct: bytes
) -> None:
    _check(wire.encode(keys))
    _check(wire.encode(_Outer(v=1, hdr=b"h", keys=b"k", ct=ct, sig=bytes(64), hops=hop_list)))


@FAST
@given(n=st.integers(0, 40), version=st.integers(1, (1 << 53) - 1), revoked=st.booleans())
def test_directories(n: int, version: int, revoked: bool) -> None:
    listed = [
        DirectoryEntry(
            agency=f"THA/A{i:03d}",
            roles=(Role.INVESTIGATOR,),
            signing_key=bytes([1, i]) * 16,
            encryption_key=bytes([2, i]) * 16,
            valid_from=0,
            valid_until=10,
            revoked=RevocationInfo(at=5, reason="gone") if revoked else None,
            previous_signing_keys=tuple(
                PreviousKey(key=bytes([3, i, k]) + bytes(29), valid_until=9) for k in range(i % 9)
            ),
        )
        for i in range(n)
    ]
    d = Directory(hub="THA/HUB", version=version, issued=0, expires=10, entries=tuple(listed))
    _check(wire.encode(d))
    _check(wire.encode(SignedDirectory(body=wire.encode(d), key_id=bytes(8), sig=bytes(64))))


@FAST
@given(
    shared=st.lists(
        st.builds(
            SharedEntry,
            index=st.integers(0, (1 << 53) - 1),
            entry=entries().map(encode_entry),
            proof=st.lists(st.binary(min_size=32, max_size=32), max_size=20).map(tuple),
        ),
        max_size=20,
    ),
    consistency=st.lists(st.binary(min_size=32, max_size=32), max_size=20).map(tuple),
)
def test_checkpoint_publications(shared: list[SharedEntry], consistency: tuple[bytes, ...]) -> None:
    publication = CheckpointPublication(
        note=b"note", old_size=3, consistency=consistency, shared=tuple(shared)
    )
    _check(encode_publication(publication))


class _Wrapper(wire.WireStruct, frozen=True):
    """Not on the wire: a struct of 16+ fields nested in another, the encoder's other path."""

    entries: tuple[AuditEntry, ...]


@FAST
@given(st.lists(entries(), max_size=3))
def test_wide_structs_nested_in_others(listed: list[AuditEntry]) -> None:
    data = wire.encode(_Wrapper(entries=tuple(listed)))
    _check(data)
    assert wire.decode(data, _Wrapper, "wrapper") == _Wrapper(entries=tuple(listed))
    _check(wire.encode(listed))
