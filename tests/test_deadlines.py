"""Answer times per agreement, due times, the overdue reminder's rules, and the hub's register."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.config import load_config
from broker.reminders import check_period_s, local_parties, reminder_dedup
from broker.store import HubStore
from protocols.deadlines import DEFAULT_TIERS, Tiers, agreed_tiers, due_ms
from protocols.envelope import Header
from protocols.errors import ConfigError, SchemaError, UnauthorisedError
from protocols.examples import example_bodies
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import new_message_id, parse_principal
from protocols.limits import MS_PER_DAY, MS_PER_HOUR
from protocols.messages import Receipt, ReceiptStatus, decode_body, encode_body
from protocols.receipts import (
    check_receipt_signer,
    check_receipt_statement,
    check_reminder,
    closes_request,
)

NOW = 1_795_000_000_000
THA_ASKER = "THA/DSI-ATHD"
MYS_OWNER = "MYS/RMP-ATIPSOM"


def test_default_tiers_are_the_directive_s() -> None:
    assert DEFAULT_TIERS.within_ms(Priority.URGENT) == 8 * MS_PER_HOUR
    assert DEFAULT_TIERS.within_ms(Priority.HIGH) == 3 * MS_PER_DAY
    assert DEFAULT_TIERS.within_ms(Priority.NORMAL) == 7 * MS_PER_DAY
    assert due_ms(NOW, Priority.URGENT) == NOW + 8 * MS_PER_HOUR


@pytest.mark.parametrize("bad", [0, 999, -5, True])
def test_a_tier_below_one_second_is_refused(bad: int) -> None:
    with pytest.raises(ConfigError, match="urgent_ms"):
        Tiers(urgent_ms=bad)


def test_both_hubs_of_a_pair_take_the_same_agreement() -> None:
    quick = Tiers(urgent_ms=4 * MS_PER_HOUR)
    tha = {"MYS": quick}
    mys = {"THA": quick}
    # at the requester's hub: the recipients' country; at the owner's: the sender's
    assert agreed_tiers("THA", "THA", ["MYS"], tha) == quick
    assert agreed_tiers("MYS", "THA", ["MYS"], mys) == quick
    # a peer without an agreement, and a request within the country: the defaults
    assert agreed_tiers("THA", "THA", ["MMR"], tha) == DEFAULT_TIERS
    assert agreed_tiers("THA", "THA", ["THA"], tha) == DEFAULT_TIERS
    # to several countries: the shortest answer time per tier
    slow_high = Tiers(high_ms=5 * MS_PER_DAY, normal_ms=2 * MS_PER_DAY)
    both = agreed_tiers("THA", "THA", ["MYS", "MMR"], {"MYS": quick, "MMR": slow_high})
    assert both == Tiers(
        urgent_ms=4 * MS_PER_HOUR, high_ms=3 * MS_PER_DAY, normal_ms=2 * MS_PER_DAY
    )


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(
        '[hub]\ncountry = "THA"\nkey_file = "k"\nstate_dir = "s"\nfederation_file = "f"\n'
        '[nats]\nurl = "nats://127.0.0.1:4222"\n' + extra,
        encoding="utf-8",
    )
    return path


def test_config_sets_tiers_per_peer(tmp_path: Path) -> None:
    cfg = load_config(
        _config(
            tmp_path,
            "[deadlines.MYS]\nurgent_hours = 4\nhigh_days = 2\n"
            "[deadlines.MMR]\nurgent_seconds = 2\n",
        ),
        env={},
    )
    tiers = cfg.deadline_tiers()
    assert tiers["MYS"] == Tiers(urgent_ms=4 * MS_PER_HOUR, high_ms=2 * MS_PER_DAY)
    assert tiers["MMR"] == Tiers(urgent_ms=2000)
    assert load_config(_config(tmp_path, ""), env={}).deadline_tiers() == {}


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("[deadlines.MYS]\nurgent_hours = 4\nurgent_seconds = 9\n", "deadlines.MYS: urgent_hours"),
        ("[deadlines.MYS]\nurgent_seconds = 0\n", "urgent_seconds"),
        ("[deadlines.MYS]\nhigh_days = 0\n", "high_days"),
        ("[deadlines.MYS]\nweekly = 1\n", "weekly"),
        ("[deadlines.ZZZ]\nurgent_hours = 1\n", "deadlines.ZZZ"),
        ("[deadlines.THA]\nurgent_hours = 1\n", "deadlines.THA"),
    ],
)
def test_config_names_a_bad_deadline_key(tmp_path: Path, extra: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_config(tmp_path, extra), env={})


# --- the reminder on the wire -------------------------------------------------------------

OVERDUE_VECTOR = (
    "85a6666f725f6964c41001a1ee565a1870008000000000000000a6737461747573a76f766572647565"
    "a26279a74d59532f485542a561745f6d73cf000001a1ee565e00a66475655f6d73cf000001a1ee1f6f80"
)
"""SPEC §5 Vectors: the example receipt as an ``overdue`` reminder due an hour earlier."""


def test_overdue_vector_both_ways() -> None:
    example = example_bodies(NOW)["receipt"]
    assert isinstance(example, Receipt)
    reminder = msgspec.structs.replace(
        example, status=ReceiptStatus.OVERDUE, due_ms=NOW - MS_PER_HOUR
    )
    assert encode_body(reminder).hex() == OVERDUE_VECTOR
    assert decode_body("receipt", bytes.fromhex(OVERDUE_VECTOR)) == reminder


def test_due_ms_travels_with_overdue_only() -> None:
    rid = bytes(16)
    with pytest.raises(SchemaError, match="due_ms"):
        Receipt(for_id=rid, status=ReceiptStatus.OVERDUE, by="THA/HUB", at_ms=NOW)
    with pytest.raises(SchemaError, match="due_ms"):
        Receipt(for_id=rid, status=ReceiptStatus.DELIVERED, by="THA/HUB", at_ms=NOW, due_ms=NOW)


def _reminder(by: str, also: tuple[bytes, ...] = ()) -> Receipt:
    return Receipt(
        for_id=bytes(16), status=ReceiptStatus.OVERDUE, by=by, at_ms=NOW, due_ms=NOW, also=also
    )


def test_only_the_addressee_s_own_hub_reminds() -> None:
    asker, owner = parse_principal(THA_ASKER), parse_principal(MYS_OWNER)
    tha_hub, mys_hub = parse_principal("THA/HUB"), parse_principal("MYS/HUB")
    check_reminder(_reminder("THA/HUB"), tha_hub, asker)
    check_reminder(_reminder("MYS/HUB"), mys_hub, owner)
    with pytest.raises(UnauthorisedError, match="addressee's country"):
        check_reminder(_reminder("MYS/HUB"), mys_hub, asker)  # across the border
    with pytest.raises(UnauthorisedError, match="addressee's country"):
        check_reminder(_reminder("THA/HUB"), tha_hub, owner)
    # the requester's full check: its own hub, about a request it sent to MYS
    check_receipt_signer(_reminder("THA/HUB"), tha_hub, in_reply_to=bytes(16))
    check_receipt_statement(_reminder("THA/HUB"), tha_hub, asker, [owner])
    # an agency never reminds; a reminder names one request
    with pytest.raises(UnauthorisedError, match="agency may not"):
        check_receipt_signer(_reminder(MYS_OWNER), owner, in_reply_to=bytes(16))
    with pytest.raises(UnauthorisedError, match="one request"):
        check_receipt_signer(_reminder("THA/HUB", (b"\x01" * 16,)), tha_hub, in_reply_to=bytes(16))


# --- the hub's register ---------------------------------------------------------------------


def _header(
    kind: str,
    sender: str,
    to: list[str],
    *,
    created: int = NOW,
    priority: Priority = Priority.URGENT,
    in_reply_to: bytes | None = None,
) -> Header:
    return Header(
        id=new_message_id(created, bytes(range(10)) if in_reply_to is None else bytes(10)),
        type=kind,
        sender=sender,
        sender_key=bytes(8),
        recipients=to,
        created=created,
        expires=created + MS_PER_DAY,
        handling=HandlingCode.H0,
        priority=priority,
        in_reply_to=in_reply_to,
    )


def test_both_hubs_register_the_same_due_time(tmp_path: Path) -> None:
    quick = Tiers(urgent_ms=2000)
    tha = HubStore(tmp_path / "tha.sqlite", country="THA", agreements={"MYS": quick})
    mys = HubStore(tmp_path / "mys.sqlite", country="MYS", agreements={"THA": quick})
    plain = HubStore(tmp_path / "plain.sqlite")
    request = _header("person.query", THA_ASKER, [MYS_OWNER])
    for store in (tha, mys, plain):
        store.remember(request, b"d" * 32)
    assert [s.open_requests()[0].due_ms for s in (tha, mys)] == [NOW + 2000, NOW + 2000]
    assert plain.open_requests()[0].due_ms == NOW + 8 * MS_PER_HOUR
    for store in (tha, mys, plain):
        store.close()


def test_a_third_party_reply_does_not_close_a_request(tmp_path: Path) -> None:
    store = HubStore(
        tmp_path / "hub.sqlite", country="THA", agreements={"MYS": Tiers(urgent_ms=1000)}
    )
    request = _header("person.query", THA_ASKER, [MYS_OWNER])
    store.remember(request, b"d" * 32)
    third = _header(
        "person.result", "MMR/MOHA-ATTU", [THA_ASKER], created=NOW + 10, in_reply_to=request.id
    )
    store.remember(third, b"e" * 32)
    (due,) = store.past_due(NOW + 1000)
    assert not due.answered
    assert not closes_request(
        third.type,
        third.sender_principal,
        third.recipient_principals,
        request_type=request.type,
        request_sender=request.sender_principal,
        request_recipients=request.recipient_principals,
    )
    owner = _header(
        "person.result", MYS_OWNER, [THA_ASKER], created=NOW + 20, in_reply_to=request.id
    )
    store.remember(
        msgspec.structs.replace(owner, id=new_message_id(NOW + 20, b"\x07" * 10)), b"f" * 32
    )
    (due,) = store.past_due(NOW + 1000)
    assert due.answered
    store.close()


def test_reminders_are_remembered_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    store = HubStore(path, country="THA", agreements={"MYS": Tiers(urgent_ms=1000)})
    request = _header("person.query", THA_ASKER, [MYS_OWNER])
    store.remember(request, b"d" * 32)
    assert store.past_due(NOW + 999) == []
    assert store.past_due(NOW + 5000, since_ms=NOW + 1001) == []  # due before reminding began
    (due,) = store.past_due(NOW + 1000)
    store.record_reminder(request.sender, request.id, THA_ASKER, NOW + 1000, due.due_ms)
    store.deadline_done(request.sender, request.id, "reminded")
    store.close()
    again = HubStore(path, country="THA")
    assert again.past_due(NOW + 5000) == []  # nothing left to do: not reminded twice
    assert again.reminded_parties(request.sender, request.id) == {THA_ASKER}
    (sent,) = again.reminders()
    assert (sent.msg_id, sent.party, sent.due_ms) == (due.msg_id, THA_ASKER, NOW + 1000)
    again.close()


def test_each_hub_reminds_its_own_parties(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub.sqlite")
    store.remember(_header("person.query", THA_ASKER, [MYS_OWNER, "THA/IMMIGRATION"]), b"d" * 32)
    (request,) = store.open_requests()
    store.close()
    assert [str(p) for p in local_parties(request, "THA")] == [THA_ASKER, "THA/IMMIGRATION"]
    assert [str(p) for p in local_parties(request, "MYS")] == [MYS_OWNER]
    assert local_parties(request, "MMR") == []
    dedups = {reminder_dedup(request, p) for p in local_parties(request, "THA")}
    assert len(dedups) == 2


@given(st.integers(min_value=1000, max_value=365 * MS_PER_DAY))
def test_the_check_period_follows_the_shortest_tier(shortest: int) -> None:
    period = check_period_s(shortest)
    assert 0.25 <= period <= 30
    assert period <= max(shortest / 1000 / 4, 0.25)
