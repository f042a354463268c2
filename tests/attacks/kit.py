"""What the attack modules share: a federation per module, forging helpers, the checks.

A module starts one federation (:func:`bench`) and runs its cases against it in turn;
each case ends with :func:`still_serving`, which proves the hubs are healthy and that a
genuine message still goes through *and* is the only thing the recipients got.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient

from agency_client.sdk import AgencyClient, Incoming, Refused, SignedReceipt
from broker.audit.search import AuditQuery
from broker.refusals import RefusalWindows
from protocols import subjects, wire
from protocols.envelope import (
    CONTENT_KEY_BYTES,
    DS_SIGNATURE,
    NONCE_BYTES,
    Hop,
    decode_envelope,
    encrypt_body,
    envelope_digest,
    seal_content_key,
)
from protocols.errors import IxbError
from protocols.examples import example_bodies
from protocols.identifiers import format_message_id, new_message_id, parse_agency
from protocols.keys import Identity
from protocols.messages import Body, Receipt, ReceiptStatus
from protocols.roles import Role
from tests.federation import AGENCIES, Federation, running_federation
from tests.nats_fixtures import Conn
from transport.connect import NatsAuth, tls_context

DSI = "THA/DSI-ATHD"
IMM = "THA/IMMIGRATION"
RMP = "MYS/RMP-ATIPSOM"
MYS_IMM = "MYS/IMMIGRATION"
ATTU = "MMR/MOHA-ATTU"
ROGUE = "THA/ROGUE-UNIT"
"""An agency revoked during a run (its own, so the others stay current)."""
FLOOD = "THA/FLOOD-UNIT"
"""An agency that floods its hub with refusals."""

ATTACK_AGENCIES: dict[str, Sequence[Role]] = {
    **AGENCIES,
    ROGUE: [Role.TRAFFICKING_UNIT],
    FLOOD: [Role.TRAFFICKING_UNIT],
}
LIAISON_PASSWORD = "liaison test password"
ALERT = example_bodies(0)["alert"]
HOUR = 3_600_000
NIL_ID = bytes(16)


@dataclass
class Bench:
    """A running federation and a connected client for each agency the cases use."""

    fed: Federation
    clients: dict[str, AgencyClient] = field(default_factory=dict)
    genuine: set[bytes] = field(default_factory=set)
    """Every genuine message sent by :func:`still_serving`: the only ones ever delivered."""

    def __getitem__(self, agency: str) -> AgencyClient:
        return self.clients[agency]

    def hub_log(self, country: str) -> Any:
        return self.fed.hubs[country].hub.audit_log


def log_every_refusal(fed: Federation) -> None:
    """One audit entry per refusal (the corpus asserts them by message id); the flood
    case installs a small allowance of its own to check the bounded summary."""
    for running in fed.hubs.values():
        running.hub.settler.refusals = RefusalWindows(logged_per_window=1_000_000)


@contextlib.asynccontextmanager
async def bench(base: Path, **kw: object) -> AsyncIterator[Bench]:
    async with running_federation(base, ATTACK_AGENCIES, **kw) as fed:
        log_every_refusal(fed)
        b = Bench(fed)
        for agency in (DSI, IMM, RMP, MYS_IMM, ATTU, ROGUE, FLOOD):
            b.clients[agency] = await fed.client(agency)
        yield b


async def restart_hub(b: Bench, country: str, edit: Callable[[str], str] | None = None) -> None:
    """Stop a hub, optionally edit its config, start it again."""
    await b.fed.stop_hub(country)
    if edit is not None:
        path = b.fed.deployment.hub_config(country)
        path.write_text(edit(path.read_text()))
    await b.fed.start_hub(country)
    log_every_refusal(b.fed)


# --- forging -------------------------------------------------------------------------


def header_fields(
    signer: Identity, to: Sequence[str], now: int, ttl_ms: int = HOUR, **over: object
) -> dict[str, object]:
    """A header as an ordered map (the order of SPEC §4.2): edit it freely, then :func:`forge`."""
    fields: dict[str, object] = {
        "id": new_message_id(now, os.urandom(10)),
        "type": "alert",
        "sender": str(signer.principal),
        "sender_key": signer.signing.key_id,
        "recipients": list(to),
        "created": now,
        "expires": now + ttl_ms,
        "handling": "H0",
        "priority": "normal",
    }
    fields.update(over)
    return {k: v for k, v in fields.items() if v is not None}


def forge(
    client: AgencyClient,
    hdr: Mapping[str, object] | bytes,
    *,
    signer: Identity | None = None,
    body: Body = ALERT,
    to: Sequence[str] | None = None,
    hops: Sequence[Hop] = (),
    v: object = 1,
    ct: bytes | None = None,
) -> bytes:
    """A signed envelope around any header (a map, or exact bytes): encrypted to ``to`` (the
    header's recipients by default, those known to the directories), signed by ``signer``."""
    signer = signer or client.identity
    hdr_bytes = hdr if isinstance(hdr, bytes) else msgspec.msgpack.encode(dict(hdr))
    if to is None:
        assert not isinstance(hdr, bytes)
        to = [str(r) for r in hdr["recipients"]]  # type: ignore[attr-defined]
    content_key = os.urandom(CONTENT_KEY_BYTES)
    if ct is None:
        ct = encrypt_body(body, content_key, os.urandom(NONCE_BYTES), hdr_bytes)
    now = client.clock()
    sealed = [
        seal_content_key(content_key, client.keys.encryption_key(parse_agency(r), now)) for r in to
    ]
    keys = wire.encode(sealed)
    sig = signer.signing.sign(DS_SIGNATURE + envelope_digest(hdr_bytes, keys, ct))
    outer: dict[str, object] = {"v": v, "hdr": hdr_bytes, "keys": keys, "ct": ct, "sig": sig}
    if hops:
        outer["hops"] = [[h.hub, h.key_id, h.at, h.sig] for h in hops]
    return msgspec.msgpack.encode(outer)


def genuine(client: AgencyClient, to: Sequence[str], **over: Any) -> bytes:
    return forge(client, header_fields(client.identity, to, client.clock(), **over))


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def id_of(data: bytes, fallback: bytes) -> bytes:
    """The id a refusal names: the header's when the envelope decodes, else ``fallback``
    (the Nats-Msg-Id it was published under, SPEC §8.1 use 2)."""
    try:
        return decode_envelope(data).header.id
    except IxbError:
        return fallback


# --- sending and observing -------------------------------------------------------------


async def publish_raw(client: AgencyClient, data: bytes, nats_id: bytes | str) -> bool:
    """Publish on the client's own ingress, as an agency may (not through the SDK's checks);
    whether JetStream stored it (False: a duplicate ``Nats-Msg-Id`` in the window, §8.1)."""
    text = nats_id if isinstance(nats_id, str) else format_message_id(nats_id)
    ack = await client.js.publish(
        subjects.ingress(client.principal), data, headers={"Nats-Msg-Id": text}, timeout=5
    )
    return not ack.duplicate


async def rejection(
    client: AgencyClient, msg_id: bytes, *, by: str, timeout: float = 15.0
) -> SignedReceipt:
    """The signed rejection receipt ``client`` got for ``msg_id``, signed by ``by``."""
    got = await client.wait_receipt(msg_id, ReceiptStatus.REJECTED, timeout=timeout)
    assert str(got.signer) == by and got.receipt.by == by, got
    assert got.receipt.code is not None and got.receipt.code.startswith("ixb.E_")
    return got


async def no_rejection(client: AgencyClient, msg_id: bytes, seconds: float = 2.0) -> None:
    """``client`` gets no rejection receipt for ``msg_id`` (receipts are fetched meanwhile)."""
    with contextlib.suppress(IxbError):
        got = await client.wait_receipt(msg_id, ReceiptStatus.REJECTED, timeout=seconds)
        raise AssertionError(f"unexpected rejection receipt: {got}")


async def refused_at(
    b: Bench, country: str, msg_id: bytes, code: str, *, routed_by: Iterable[str] = ()
) -> None:
    """``country``'s hub logged refusing ``msg_id`` with ``code``; no hub but those of
    ``routed_by`` accepted it, and none delivered it."""
    text = format_message_id(msg_id)
    query = AuditQuery(msg_id=text, event="rejected")
    deadline = asyncio.get_running_loop().time() + 15
    while not (entries := b.hub_log(country).search(query)):
        assert asyncio.get_running_loop().time() < deadline, f"{country} logged no refusal"
        await asyncio.sleep(0.1)
    assert {e.code for e in entries} == {code}, [e.code for e in entries]
    for c in b.fed.hubs:
        events = {e.event for e in b.hub_log(c).search(AuditQuery(msg_id=text))}
        allowed = {"accepted", "relayed"} if c in routed_by else set()
        assert events <= {"rejected", *allowed}, (c, events)


async def drain_until(client: AgencyClient, want: bytes, timeout: float = 20.0) -> list[str]:
    """Everything ``client`` received (receipts aside) until ``want`` arrived, as ids."""
    got: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while format_message_id(want) not in got:
        assert asyncio.get_running_loop().time() < deadline, f"{want.hex()} never arrived: {got}"
        for item in await client.fetch(timeout=0.5):
            if isinstance(item, Refused):
                got.append(f"refused {item.message_id} {item.error.code}")
                continue
            assert isinstance(item, Incoming)
            await item.ack()
            if not isinstance(item.body, Receipt):
                got.append(item.header.message_id)
    return got


async def still_serving(b: Bench, to: Sequence[str] = (RMP, ATTU)) -> None:
    """Every hub ready; a genuine alert still goes through, and the recipients got nothing
    but it (any attack delivered earlier would have arrived before it)."""
    for country, running in b.fed.hubs.items():
        health = running.hub.health()
        assert health["ready"] and health["nats"], (country, health)
    msg_id = await b[DSI].send(ALERT, list(to))
    b.genuine.add(msg_id)
    for r in to:
        assert await drain_until(b[r], msg_id) == [format_message_id(msg_id)], r


# --- raw NATS connections --------------------------------------------------------------


async def nats_conn(
    fed: Federation, country: str, auth: NatsAuth, inbox_prefix: str = "_INBOX"
) -> Conn:
    """A connection that records the errors nats-py reports asynchronously (permissions)."""
    conn = Conn(nc=NatsClient())

    async def on_error(exc: Exception) -> None:
        conn.errors.append(str(exc))

    await conn.nc.connect(
        fed.deployment.plan.client_url(country),
        **auth.connect_options(),
        tls=tls_context(fed.deployment.plan.client_ca_file(country)),
        error_cb=on_error,
        connect_timeout=2,
        allow_reconnect=False,
        inbox_prefix=inbox_prefix,
    )
    return conn
