"""Identifiers: strict grammars, since they also become NATS subject tokens."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import subjects
from protocols.errors import IdentifierError
from protocols.identifiers import (
    format_message_id,
    hub_of,
    new_message_id,
    parse_agency,
    parse_hub,
    parse_message_id,
    parse_principal,
)


@pytest.mark.parametrize(
    "text", ["THA/DSI-ATHD", "MYS/IMMIGRATION", "MMR/MOHA-ATTU", "AUS/AFP", "IDN/A", "THA/X1-2-3"]
)
def test_valid_agencies(text: str) -> None:
    assert str(parse_agency(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "tha/DSI",
        "THA/dsi",
        "THA/-DSI",
        "THA/DSI-",
        "THA/",
        "/DSI",
        "THA/DSI/X",
        "THA/D.S",
        "THA/D*",
        "THA/D>",
        "THA/D SI",
        "XXA/UNIT",
        "UTO/UNIT",
        "ZZZ/UNIT",
        "TH/UNIT",
        "THA/" + "A" * 33,
        "THA/HUB",
        "THAI/UNIT",
        "",
    ],
)
def test_invalid_agencies(text: str) -> None:
    with pytest.raises(IdentifierError):
        parse_agency(text)


def test_hub_ids() -> None:
    assert parse_hub("THA/HUB") == hub_of("THA")
    assert parse_hub("THA/HUB").is_hub
    with pytest.raises(IdentifierError):
        parse_hub("THA/DSI")


@given(st.text(max_size=60))
def test_parse_principal_never_raises_anything_else(text: str) -> None:
    try:
        p = parse_principal(text)
    except IdentifierError:
        return
    assert str(p) == text
    for token in (p.country, p.name):
        assert not set(token) & set(".*> \t\r\n")


@given(st.integers(min_value=0, max_value=(1 << 48) - 1), st.binary(min_size=10, max_size=10))
def test_uuidv7_layout_and_text_round_trip(ms: int, rand: bytes) -> None:
    mid = new_message_id(ms, rand)
    assert len(mid) == 16
    assert int.from_bytes(mid[:6], "big") == ms
    assert mid[6] >> 4 == 7 and mid[8] >> 6 == 0b10
    assert parse_message_id(format_message_id(mid)) == mid


@given(st.binary(min_size=16, max_size=16))
def test_message_id_text_is_the_canonical_uuid(mid: bytes) -> None:
    assert format_message_id(mid) == str(uuid.UUID(bytes=mid))


def test_message_id_errors() -> None:
    with pytest.raises(IdentifierError):
        parse_message_id("not-a-uuid")
    with pytest.raises(IdentifierError):
        new_message_id(-1, b"\x00" * 10)
    with pytest.raises(IdentifierError):
        format_message_id(b"short")


def test_subjects() -> None:
    a = parse_agency("THA/DSI-ATHD")
    assert subjects.ingress(a) == "ixb.THA.ingress.DSI-ATHD"
    assert subjects.inbox(a) == "ixb.THA.inbox.DSI-ATHD"
    assert subjects.ingress_all("THA") == "ixb.THA.ingress.*"
    assert subjects.cross_border("THA", "MYS") == "ixb.THA.xb.MYS"
    assert subjects.deliver("THA", "MYS") == "ixb.deliver.THA.MYS"
    assert subjects.directory_request("MYS") == "ixb.MYS.directory.get"
    with pytest.raises(IdentifierError):
        subjects.cross_border("THA", "*")


def test_inbox_and_reply_subjects() -> None:
    assert subjects.inbox_all("THA") == "ixb.THA.inbox.>"
    assert subjects.reply_prefix("DSI-ATHD") == "_INBOX_DSI-ATHD"
