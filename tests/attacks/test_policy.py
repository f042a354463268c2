"""Authentic senders overstepping: forged receipts (SPEC §5 "who may state what"), message
ids squatted by another sender (§4.7 step 10), an H2 forward outside the original parties
(§6), and a refusal flood (§9.1: bounded audit growth, the hub keeps serving others)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from agency_client.sdk import Incoming, Refused
from broker.audit.search import AuditQuery
from broker.refusals import RefusalWindows
from protocols.audit import decode_entry
from protocols.envelope import decode_envelope
from protocols.handling import HandlingCode
from protocols.identifiers import format_message_id, new_message_id
from protocols.messages import Receipt, ReceiptStatus
from protocols.subjects import ingress_msg_id
from tests.attacks.kit import (
    ALERT,
    ATTU,
    DSI,
    FLOOD,
    MYS_IMM,
    RMP,
    ROGUE,
    Bench,
    bench,
    drain_until,
    genuine,
    no_rejection,
    publish_raw,
    refused_at,
    rejection,
    still_serving,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def b(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bench]:
    async with bench(tmp_path_factory.mktemp("attacks-policy")) as running:
        yield running


async def _delivered_to_rmp(b: Bench) -> tuple[bytes, list[str]]:
    """DSI sends RMP an alert; what RMP got up to and including it."""
    msg_id = await b[DSI].send(ALERT, [RMP])
    return msg_id, await drain_until(b[RMP], msg_id)


# --- forged receipts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forger", "status", "refusing_hub"),
    [
        (ATTU, ReceiptStatus.DELIVERED, "THA"),  # an agency may state only `read`
        (MYS_IMM, ReceiptStatus.READ, "MYS"),  # `read` of a message it never received
        (ATTU, ReceiptStatus.READ, "THA"),  # the same from another country
    ],
    ids=["agency-states-delivered", "non-recipient-states-read", "foreign-states-read"],
)
async def test_forged_receipt_is_refused_by_the_hub_that_knows_the_original(
    b: Bench, forger: str, status: ReceiptStatus, refusing_hub: str
) -> None:
    msg_id, got = await _delivered_to_rmp(b)
    assert got == [format_message_id(msg_id)]
    f = b[forger]
    claim = Receipt(for_id=msg_id, status=status, by=forger, at_ms=f.clock())
    forged = await f.send(claim, [DSI], in_reply_to=msg_id)
    # the forger's own hub does not know the original and routes it (§5): the hub that
    # knows it refuses it, and nobody delivers it
    routed_by = {forger[:3]} - {refusing_hub}
    await refused_at(b, refusing_hub, forged, "ixb.E_UNAUTHORISED", routed_by=routed_by)
    # §9.1: an agency's refused receipt is answered, by the hub that refused it
    got = await rejection(f, forged, by=f"{refusing_hub}/HUB")
    assert got.receipt.code == "ixb.E_UNAUTHORISED"
    await b[DSI].wait_receipt(msg_id, ReceiptStatus.DELIVERED, timeout=15)
    signers = {str(r.signer) for r in b[DSI].receipts[format_message_id(msg_id)]}
    assert signers <= {"THA/HUB", "MYS/HUB"}, signers
    await still_serving(b)


async def test_receipt_whose_by_names_another_principal_is_refused_by_the_sender(
    b: Bench,
) -> None:
    """RMP really received it, but its read receipt says ``by: MYS/HUB`` (rule 1). Hubs do
    not see the body, so DSI's client refuses it and never records it."""
    msg_id, _ = await _delivered_to_rmp(b)
    claim = Receipt(for_id=msg_id, status=ReceiptStatus.READ, by="MYS/HUB", at_ms=0)
    forged = await b[RMP].send(claim, [DSI], in_reply_to=msg_id)
    refused: list[Refused] = []
    deadline = asyncio.get_running_loop().time() + 15
    while not refused:
        assert asyncio.get_running_loop().time() < deadline, "the forged receipt never came"
        for item in await b[DSI].fetch(timeout=0.5):
            if isinstance(item, Refused):
                refused.append(item)
            else:
                await item.ack()
    assert [(r.message_id, r.error.code) for r in refused] == [
        (format_message_id(forged), "ixb.E_UNAUTHORISED")
    ]
    assert not any(
        r.status is ReceiptStatus.READ for r in b[DSI].receipts[format_message_id(msg_id)]
    )
    await no_rejection(b[RMP], forged, seconds=1.0)
    await still_serving(b)


# --- message-id squatting ---------------------------------------------------------------

SQUATTING = [
    pytest.param(ATTU, True, id="foreign-squatter-first"),
    pytest.param(ATTU, False, id="foreign-squatter-second"),
    pytest.param(ROGUE, True, id="local-squatter-first"),
    pytest.param(ROGUE, False, id="local-squatter-second"),
]


@pytest.mark.parametrize(("squatter", "first"), SQUATTING)
async def test_message_id_squatted_by_another_sender(b: Bench, squatter: str, first: bool) -> None:
    """Ids are unique per sender (§4.7 step 10): another sender's envelope under DSI's id
    neither blocks DSI's message nor is mistaken for it, in either order."""
    dsi, other = b[DSI], b[squatter]
    msg_id = new_message_id(dsi.clock(), os.urandom(10))
    mine = genuine(dsi, [RMP], id=msg_id)
    theirs = genuine(other, [RMP], id=msg_id, case_ref="squat")
    stored: dict[str, bool] = {}
    # DSI publishes as SPEC §8.1 says (id and digest); the squatter, without DSI's
    # envelope, can only use the bare id (or its own digest)
    genuine_nats_id = ingress_msg_id(format_message_id(msg_id), decode_envelope(mine).digest)
    for name in (squatter, DSI) if first else (DSI, squatter):
        data, nats_id = (mine, genuine_nats_id) if name == DSI else (theirs, msg_id)
        stored[name] = await publish_raw(b[name], data, nats_id)
        await asyncio.sleep(0.3)  # decided in this order
    # RMP gets every stored one (the squatter's is a message like any other), each under
    # the one id and from its own sender
    got = await _arrivals(b, {name for name, ok in stored.items() if ok})
    assert stored[DSI], "JetStream dropped DSI's genuine publish as a duplicate"
    assert got == {name: msg_id for name, ok in stored.items() if ok}
    delivered = await dsi.wait_receipt(msg_id, ReceiptStatus.DELIVERED, timeout=20)
    assert str(delivered.signer) == "MYS/HUB"
    await still_serving(b)


async def _arrivals(b: Bench, senders: set[str]) -> dict[str, bytes]:
    """sender → message id of what RMP gets (receipts aside) until each of ``senders`` came."""
    got: dict[str, bytes] = {}
    deadline = asyncio.get_running_loop().time() + 20
    while set(got) != senders:
        assert asyncio.get_running_loop().time() < deadline, (senders, got)
        for item in await b[RMP].fetch(timeout=0.5):
            assert isinstance(item, Incoming), item
            await item.ack()
            if not isinstance(item.body, Receipt):
                assert str(item.sender) not in got and item.body == ALERT
                got[str(item.sender)] = item.header.id
    return got


# --- H2 forward -------------------------------------------------------------------------


async def test_h2_forward_outside_the_original_parties(b: Bench) -> None:
    alert_id = await b[DSI].send(ALERT, [RMP], handling=HandlingCode.H2)
    assert await drain_until(b[RMP], alert_id) == [format_message_id(alert_id)]
    bad = await b[RMP].send(ALERT, [ATTU], handling=HandlingCode.H2, forward_of=alert_id)
    got = await rejection(b[RMP], bad, by="MYS/HUB")
    assert got.receipt.code == "ixb.E_HANDLING"
    await refused_at(b, "MYS", bad, "ixb.E_HANDLING")
    await still_serving(b)  # ATTU got nothing before the next genuine alert


# --- a refusal flood --------------------------------------------------------------------


async def test_refusal_flood_from_one_agency(b: Bench) -> None:
    hub = b.fed.hubs["THA"].hub
    before = hub.settler.refusals
    hub.settler.refusals = RefusalWindows(window_ms=2_000, logged_per_window=5)
    flood = 200
    rejected = "ixb_messages_total"
    base = hub.metrics.counter_value(rejected, decision="rejected")
    first = str(uuid.uuid4())
    try:
        flooding = asyncio.create_task(_flood(b, flood, first))
        await still_serving(b)  # others are served while the flood is decided
        await flooding
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while hub.metrics.counter_value(rejected, decision="rejected") < base + flood:
            assert loop.time() < deadline, "the hub did not decide the whole flood"
            await asyncio.sleep(0.1)
        got = await rejection(b[FLOOD], uuid.UUID(first).bytes, by="THA/HUB")
        assert got.receipt.code == "ixb.E_MALFORMED"
        deadline = loop.time() + 15
        while True:  # the windows close and their counts are logged
            rows = [
                decode_entry(r.data)
                for r in hub.audit_log.search(AuditQuery(event="rejected"), limit=10_000)
            ]
            mine = [e for e in rows if e.detail and "FLOOD-UNIT" in e.detail]
            summed = [e for e in mine if e.msg_id is None]
            one_by_one = len(mine) - len(summed)
            counted = sum(int((e.detail or "0").split(" ", 1)[0]) for e in summed)
            if one_by_one + counted == flood:
                break
            assert loop.time() < deadline, (one_by_one, counted)
            await asyncio.sleep(0.2)
        assert len(mine) <= 6 * (len(summed) + 1) and len(mine) <= 40, len(mine)
        assert {e.code for e in mine} <= {"ixb.E_MALFORMED", "ixb.E_RATE_LIMITED"}
    finally:
        hub.settler.refusals = before
    await still_serving(b)


async def _flood(b: Bench, n: int, first: str) -> None:
    for i in range(n):
        await publish_raw(b[FLOOD], b"\xc1", first if i == 0 else str(uuid.uuid4()))
