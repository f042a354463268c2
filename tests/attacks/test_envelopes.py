"""Attacks on the envelope (SPEC §4.7) published on an agency's own ingress, and over a link.

Every ingress case is refused with the code §4.7 gives, answered with a rejection
receipt signed by THA's hub to the publisher (§9.1: NATS authenticated it), logged at
THA's hub, and delivered to nobody; the hubs keep serving.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from agency_client.sdk import Incoming
from broker.audit.search import AuditQuery
from protocols import subjects
from protocols.envelope import Hop, add_hop, decode_envelope
from protocols.identifiers import format_message_id, new_message_id
from protocols.messages import ReceiptStatus
from tests.attacks.kit import (
    ALERT,
    ATTU,
    DSI,
    HOUR,
    IMM,
    RMP,
    ROGUE,
    Bench,
    bench,
    drain_until,
    flip,
    forge,
    genuine,
    header_fields,
    id_of,
    nats_conn,
    no_rejection,
    publish_raw,
    refused_at,
    rejection,
    restart_hub,
    still_serving,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

DAY = 24 * HOUR


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def b(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bench]:
    async with bench(tmp_path_factory.mktemp("attacks-envelopes")) as running:
        yield running


# --- the cases: (what the attacker publishes on DSI's ingress, the code) -------------------


@dataclass(frozen=True)
class Attack:
    name: str
    build: Callable[[Bench], bytes]
    code: str


def _regions(b: Bench) -> dict[str, int]:
    """An offset inside each region of a genuine envelope's bytes (SPEC §4.1)."""
    data = genuine(b[DSI], [RMP])
    env = decode_envelope(data)
    return {"hdr": data.find(env.hdr), "keys": data.find(env.sealed_keys[0].sealed)}


def _flip_region(region: str) -> Callable[[Bench], bytes]:
    def build(b: Bench) -> bytes:
        data = genuine(b[DSI], [RMP])
        env = decode_envelope(data)
        if region == "hops":  # a hop THA's hub really signed, then one bit of it flipped
            data = add_hop(env, b.fed.hubs["THA"].hub.identity, b[DSI].clock()).to_bytes()
            return flip(data, data.find(decode_envelope(data).hops[0].sig) + 7)
        offset = {
            "outer": 0,  # the outer map's header: 0x85 -> 0x84, a trailing value
            # the last byte of the message id: the header still parses, the signature breaks
            "hdr": data.find(env.hdr) + 1 + 3 + 2 + 15,
            "keys": data.find(env.sealed_keys[0].sealed) + 40,
            "ct": data.find(env.ct) + len(env.ct) // 2,
            "sig": data.find(env.sig) + 31,
        }[region]
        return flip(data, offset)

    return build


def _redirected(b: Bench) -> bytes:
    """A genuine envelope to RMP whose recipient is changed to ATTU, header and keys alike."""
    env = decode_envelope(genuine(b[DSI], [RMP]))
    hdr = msgspec.msgpack.decode(env.hdr)
    hdr["recipients"] = [ATTU]
    keys = msgspec.msgpack.decode(env.keys)
    keys[0][0] = ATTU
    return msgspec.msgpack.encode(
        {
            "v": 1,
            "hdr": msgspec.msgpack.encode(hdr),
            "keys": msgspec.msgpack.encode(keys),
            "ct": env.ct,
            "sig": env.sig,
        }
    )


def _reordered_header(b: Bench) -> bytes:
    """Correctly signed, but the header's keys are not in the order of §4.2."""
    h = header_fields(b[DSI].identity, [RMP], b[DSI].clock())
    h = {"priority": h.pop("priority"), **h}
    return forge(b[DSI], h)


def _v_as_uint8(b: Bench) -> bytes:
    data = genuine(b[DSI], [RMP])
    assert data.startswith(b"\x85\xa1v\x01")
    return b"\x85\xa1v\xcc\x01" + data[4:]


def _fields(**over: Any) -> Callable[[Bench], bytes]:
    def build(b: Bench) -> bytes:
        c = b[DSI]
        return forge(c, header_fields(c.identity, [RMP], c.clock(), **over), to=[RMP])

    return build


def _times(created_delta: int, ttl_ms: int) -> Callable[[Bench], bytes]:
    def build(b: Bench) -> bytes:
        c = b[DSI]
        return forge(c, header_fields(c.identity, [RMP], c.clock() + created_delta, ttl_ms))

    return build


def _signed_by(signer: str, *, as_signer: bool) -> Callable[[Bench], bytes]:
    """Signed with ``signer``'s key, the header naming ``signer`` or (else) DSI."""

    def build(b: Bench) -> bytes:
        c = b[DSI]
        key = b[signer].identity
        h = header_fields(key if as_signer else c.identity, [RMP], c.clock())
        return forge(c, h, signer=key)

    return build


def _many_hops(b: Bench) -> bytes:
    c = b[DSI]
    junk = Hop(hub="THA/HUB", key_id=bytes(8), at=c.clock(), sig=bytes(64))
    return forge(c, header_fields(c.identity, [RMP], c.clock()), hops=[junk] * 9)


def _bomb(suffix: bytes) -> Callable[[Bench], bytes]:
    return lambda _b: b"\x85\xa1v\x01" + suffix


ATTACKS = [
    # one bit flipped in each region of the envelope (§4.1)
    Attack("flip-outer-map", _flip_region("outer"), "ixb.E_MALFORMED"),
    Attack("flip-header", _flip_region("hdr"), "ixb.E_SIGNATURE"),
    Attack("flip-sealed-keys", _flip_region("keys"), "ixb.E_SIGNATURE"),
    Attack("flip-ciphertext", _flip_region("ct"), "ixb.E_SIGNATURE"),
    Attack("flip-signature", _flip_region("sig"), "ixb.E_SIGNATURE"),
    Attack("flip-hop", _flip_region("hops"), "ixb.E_SIGNATURE"),
    # structure (§4.7 steps 1-4)
    Attack("truncated", lambda b: genuine(b[DSI], [RMP])[:-100], "ixb.E_MALFORMED"),
    Attack("truncated-to-one-byte", lambda b: genuine(b[DSI], [RMP])[:1], "ixb.E_MALFORMED"),
    Attack(
        "over-1-MiB",
        lambda b: forge(
            b[DSI], header_fields(b[DSI].identity, [RMP], b[DSI].clock()), ct=os.urandom(1_100_000)
        ),
        "ixb.E_TOO_LARGE",
    ),
    Attack("case-ref-65-chars", _fields(case_ref="X" * 65), "ixb.E_SCHEMA"),
    Attack("message-id-15-bytes", _fields(id=os.urandom(15)), "ixb.E_SCHEMA"),
    Attack(
        "65-recipients",
        lambda b: forge(
            b[DSI],
            header_fields(b[DSI].identity, [f"THA/U{i}" for i in range(65)], b[DSI].clock()),
            to=[RMP],
        ),
        "ixb.E_TOO_LARGE",
    ),
    Attack("9-hops", _many_hops, "ixb.E_TOO_LARGE"),
    Attack(
        "bomb-bin32-header", _bomb(b"\xa3hdr\xc6\xff\xff\xff\xf0" + b"x" * 16), "ixb.E_MALFORMED"
    ),
    Attack("bomb-map32", lambda _b: b"\xdf\xff\xff\xff\xff\xa1v\x01", "ixb.E_MALFORMED"),
    Attack("bomb-array32-hops", _bomb(b"\xa4hops\xdd\xff\xff\xff\xff\x90"), "ixb.E_MALFORMED"),
    Attack("bomb-nesting", _bomb(b"\xa3hdr" + b"\x91" * 100_000 + b"\x00"), "ixb.E_MALFORMED"),
    Attack("noncanonical-v-uint8", _v_as_uint8, "ixb.E_NONCANONICAL"),
    Attack("noncanonical-header-order", _reordered_header, "ixb.E_NONCANONICAL"),
    Attack(
        "version-2",
        lambda b: forge(b[DSI], header_fields(b[DSI].identity, [RMP], b[DSI].clock()), v=2),
        "ixb.E_VERSION",
    ),
    Attack("unknown-type", _fields(type="alert.bogus"), "ixb.E_SCHEMA"),
    Attack("recipient-not-a-country", _fields(recipients=["ZZZ/UNIT"]), "ixb.E_IDENTIFIER"),
    # who signed it (§4.7 steps 5-6)
    Attack("signed-as-another-agency", _signed_by(IMM, as_signer=True), "ixb.E_UNAUTHORISED"),
    Attack("another-agencys-key", _signed_by(IMM, as_signer=False), "ixb.E_SIGNATURE"),
    Attack("unknown-key-id", _fields(sender_key=os.urandom(8)), "ixb.E_UNKNOWN_SENDER"),
    Attack("recipients-altered", _redirected, "ixb.E_SIGNATURE"),
    # time (§4.7 steps 7-9)
    Attack("expired", _times(-2 * HOUR, HOUR), "ixb.E_EXPIRED"),
    Attack("far-future", _times(10 * 60_000, HOUR), "ixb.E_CLOCK_SKEW"),
    Attack("lifetime-32-days", _times(0, 32 * DAY), "ixb.E_TTL"),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_bad_envelope_on_own_ingress(b: Bench, attack: Attack) -> None:
    data = attack.build(b)
    nats_id = new_message_id(b[DSI].clock(), os.urandom(10))
    expect_id = id_of(data, nats_id)
    assert await publish_raw(b[DSI], data, nats_id)
    got = await rejection(b[DSI], expect_id, by="THA/HUB")
    assert got.receipt.code == attack.code, got.receipt.detail
    assert got.receipt.for_id == expect_id or expect_id in got.receipt.ids
    await refused_at(b, "THA", expect_id, attack.code)
    await still_serving(b)


async def test_sender_key_id_of_another_agency(b: Bench) -> None:
    """Claims to be DSI but names IMM's key: no current key of DSI's (§4.7 step 5)."""
    c = b[DSI]
    h = header_fields(c.identity, [RMP], c.clock(), sender_key=b[IMM].identity.signing.key_id)
    data = forge(c, h, signer=b[IMM].identity)
    msg_id = id_of(data, b"")
    assert await publish_raw(c, data, msg_id)
    assert (await rejection(c, msg_id, by="THA/HUB")).receipt.code == "ixb.E_UNKNOWN_SENDER"
    await refused_at(b, "THA", msg_id, "ixb.E_UNKNOWN_SENDER")
    await still_serving(b)


# --- replay ------------------------------------------------------------------------------


async def _replay(b: Bench, data: bytes, msg_id: bytes, times: int) -> None:
    """Publish ``data`` again as a new stream message; wait until it was refused ``times``
    times in all (each logged), every time as a replay."""
    assert await publish_raw(b[DSI], data, f"replay-{os.urandom(4).hex()}")
    query = AuditQuery(msg_id=format_message_id(msg_id), event="rejected")
    deadline = asyncio.get_running_loop().time() + 15
    while len(rows := b.hub_log("THA").search(query)) < times:
        assert asyncio.get_running_loop().time() < deadline, "replay not logged"
        await asyncio.sleep(0.1)
    assert [r.code for r in rows] == ["ixb.E_REPLAY"] * times


async def test_replay_then_replay_after_a_hub_restart(b: Bench) -> None:
    data = genuine(b[DSI], [RMP])
    msg_id = id_of(data, b"")
    assert await publish_raw(b[DSI], data, msg_id)
    await b[DSI].wait_receipt(msg_id, ReceiptStatus.DELIVERED, timeout=20)
    await _replay(b, data, msg_id, 1)
    assert (await rejection(b[DSI], msg_id, by="THA/HUB")).receipt.code == "ixb.E_REPLAY"
    await restart_hub(b, "THA")  # the seen-set is durable
    await _replay(b, data, msg_id, 2)
    # §9.1 grouping and repeats: the same statement again inside the receipt stream's
    # duplicate window is stored once, so the sender holds exactly the one rejection
    await no_rejection_beyond(b, msg_id)
    b.genuine.add(msg_id)
    got = await still_serving_expecting(b, msg_id)
    assert got.count(format_message_id(msg_id)) == 1, got


async def no_rejection_beyond(b: Bench, msg_id: bytes) -> None:
    await asyncio.sleep(1.0)
    for item in await b[DSI].fetch(timeout=0.5):
        if isinstance(item, Incoming):
            await item.ack()
    got = [
        r for r in b[DSI].receipts[format_message_id(msg_id)] if r.status is ReceiptStatus.REJECTED
    ]
    assert len(got) == 1, got


async def still_serving_expecting(b: Bench, first: bytes) -> list[str]:
    """As still_serving, but RMP's inbox starts with ``first`` (delivered once)."""
    msg_id = await b[DSI].send(ALERT, [RMP])
    got = await drain_until(b[RMP], msg_id)
    assert got == [format_message_id(first), format_message_id(msg_id)], got
    return got


# --- revocation (§4.7 step 5) -----------------------------------------------------------------


async def test_revoked_sender(b: Bench) -> None:
    marker = f'id = "{ROGUE}"\n'

    def revoke(text: str) -> str:
        assert marker in text
        return text.replace(marker, marker + 'revoked = "key compromised"\n')

    await restart_hub(b, "THA", revoke)
    rogue = b[ROGUE]
    data = genuine(rogue, [RMP])
    msg_id = id_of(data, b"")
    assert await publish_raw(rogue, data, msg_id)
    assert (await rejection(rogue, msg_id, by="THA/HUB")).receipt.code == "ixb.E_REVOKED"
    await refused_at(b, "THA", msg_id, "ixb.E_REVOKED")
    await still_serving(b)


# --- over a link (§9.1 rows 3 and 4) --------------------------------------------------------


async def _link_publish(b: Bench, data: bytes, nats_id: str) -> None:
    """What a compromised MYS hub could do: publish into MYS's stream to THA."""
    creds = b.fed.deployment.plan.link_credentials("MYS", "THA")
    conn = await nats_conn(b.fed, "MYS", creds)
    try:
        ack = await conn.nc.jetstream().publish(
            subjects.cross_border("MYS", "THA"), data, headers={"Nats-Msg-Id": nats_id}
        )
        assert not ack.duplicate
    finally:
        await conn.nc.close()


async def test_link_garbage_and_forgeries_are_answered_to_nobody(b: Bench) -> None:
    """The sender field of an unverified envelope could name anybody: no receipt to it."""
    rmp = b[RMP]
    cases = []
    garbage_id = new_message_id(rmp.clock(), os.urandom(10))
    cases.append((b"\xc1garbage", garbage_id, "ixb.E_MALFORMED"))
    forged = flip(genuine(rmp, [DSI]), -10)  # inside the signature: no hops on it
    cases.append((forged, id_of(forged, b""), "ixb.E_SIGNATURE"))
    for data, msg_id, _code in cases:
        await _link_publish(b, data, f"{format_message_id(msg_id)}:{RMP}")
    for _data, msg_id, code in cases:
        await refused_at(b, "THA", msg_id, code)
        entry = b.hub_log("THA").search(AuditQuery(msg_id=format_message_id(msg_id)))[0]
        assert entry.peer == "MYS"
    for _data, msg_id, _code in cases:
        await no_rejection(rmp, msg_id, seconds=1.0)
    await still_serving(b)


async def test_link_envelope_with_a_broken_hop_is_answered_to_its_verified_sender(
    b: Bench,
) -> None:
    """RMP's signature verifies, MYS's hop does not: RMP hears why, via its own hub."""
    rmp = b[RMP]
    env = decode_envelope(genuine(rmp, [DSI]))
    hopped = add_hop(env, b.fed.hubs["MYS"].hub.identity, rmp.clock()).to_bytes()
    data = flip(hopped, hopped.find(decode_envelope(hopped).hops[0].sig) + 3)
    msg_id = env.header.id
    await _link_publish(b, data, f"{format_message_id(msg_id)}:{RMP}")
    got = await rejection(rmp, msg_id, by="THA/HUB", timeout=20)
    assert got.receipt.code == "ixb.E_SIGNATURE"
    assert [str(h) for h in got.hops] == ["MYS/HUB"]  # carried home by its own hub
    await refused_at(b, "THA", msg_id, "ixb.E_SIGNATURE")
    await still_serving(b, to=(RMP,))
    # nothing reached DSI either: RMP's next genuine message is the first it gets
    probe = await rmp.send(ALERT, [DSI])
    assert await drain_until(b[DSI], probe) == [format_message_id(probe)]
