"""End to end across borders, on real nats-servers with real hubs and agencies."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest

from agency_client.sdk import AgencyClient, Incoming, Refused
from broker.audit.search import AuditQuery
from broker.plan import ReceiptStatement, receipt_publish, seal_receipts
from protocols import subjects
from protocols.envelope import decode_envelope, seal_envelope
from protocols.examples import example_bodies
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import format_message_id, new_message_id, parse_agency
from protocols.messages import (
    AnsweredBy,
    DocStatus,
    DocVerifyResponse,
    PersonResult,
    Receipt,
    ReceiptStatus,
)
from tests.federation import Federation, running_federation
from transport.connect import tls_context


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


async def collect(client: AgencyClient, want: int, timeout: float = 20.0) -> list[Incoming]:
    """Fetch until ``want`` non-receipt messages arrived (receipts are recorded on the way)."""
    got: list[Incoming] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        for item in await client.fetch(timeout=0.5):
            assert not isinstance(item, Refused), item
            await item.ack()
            if not isinstance(item.body, Receipt):
                got.append(item)
    return got


async def test_alert_reaches_two_countries_and_nobody_else_sees_plaintext(fed: Federation) -> None:
    body = example_bodies(0)["alert"]
    # a NATS subscriber on every subject of every server, as each country's hub user
    spies: list[nats.aio.client.Client] = []
    seen: list[bytes] = []

    async def spy(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg.data)

    for country in fed.deployment.countries:
        creds = fed.deployment.plan.hub_credentials(country)
        tls = tls_context(fed.deployment.plan.client_ca_file(country))
        nc = await nats.connect(
            fed.deployment.plan.client_url(country),
            **creds.connect_options(),
            tls=tls,
        )
        await nc.subscribe(">", cb=spy)
        spies.append(nc)
        for peer in fed.deployment.plan.peers(country):
            lc = fed.deployment.plan.link_credentials(country, peer)
            link = await nats.connect(
                fed.deployment.plan.client_url(country),
                **lc.connect_options(),
                tls=tls,
            )
            await link.subscribe(">", cb=spy)
            spies.append(link)
    try:
        sender = await fed.client("THA/DSI-ATHD")
        mys = await fed.client("MYS/RMP-ATIPSOM")
        mmr = await fed.client("MMR/MOHA-ATTU")
        msg_id = await sender.send(
            body,
            ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"],
            handling=HandlingCode.H2,
            priority=Priority.URGENT,
        )
        got_mys = await collect(mys, 1)
        got_mmr = await collect(mmr, 1)
        assert [m.body for m in got_mys] == [body]
        assert [m.body for m in got_mmr] == [body]
        assert got_mys[0].header.id == msg_id
        assert [str(h) for h in got_mys[0].hubs] == ["THA/HUB", "MYS/HUB"]
        await sender.wait_receipt(msg_id, ReceiptStatus.ACCEPTED)
        await sender.wait_receipt(msg_id, ReceiptStatus.RELAYED)
        delivered = await sender.wait_receipt(msg_id, ReceiptStatus.DELIVERED)
        assert str(delivered.signer) in ("MYS/HUB", "MMR/HUB")
        assert delivered.receipt.by == str(delivered.signer)
        await asyncio.sleep(0.3)
        assert seen, "the spies saw no traffic at all: the test would prove nothing"
        for needle in (body.title, body.text[:24]):
            assert not any(needle.encode() in data for data in seen), needle
    finally:
        for nc in spies:
            await nc.close()
    # both hubs logged the exchange
    for country in ("THA", "MYS", "MMR"):
        entries = fed.hubs[country].hub.audit_log.search(
            AuditQuery(msg_id=format_message_id(msg_id))
        )
        assert any(e.event == "accepted" for e in entries), country


async def test_document_check_answered_by_automated_responder(fed: Federation) -> None:
    officer = await fed.client("THA/IMMIGRATION")
    authority = await fed.client("MYS/IMMIGRATION")
    stop = asyncio.Event()

    async def answer(client: AgencyClient, item: Incoming) -> None:
        await client.reply(
            item,
            DocVerifyResponse(
                status=DocStatus.REPORTED_STOLEN,
                answered_by=AnsweredBy.AUTOMATED,
                checked_ms=client.clock(),
            ),
        )

    responder = asyncio.create_task(authority.serve({"doc.verify.request": answer}, stop))
    try:
        request = example_bodies(0)["doc.verify.request"]
        answer_msg = await officer.request(
            request, ["MYS/IMMIGRATION"], timeout=20, priority=Priority.URGENT
        )
        assert isinstance(answer_msg.body, DocVerifyResponse)
        assert answer_msg.body.status is DocStatus.REPORTED_STOLEN
        assert answer_msg.sender == fed.principal("MYS/IMMIGRATION")
    finally:
        stop.set()
        await responder


async def rejection_for(client: AgencyClient, msg_id: bytes, timeout: float = 15.0) -> Receipt:
    return (await client.wait_receipt(msg_id, ReceiptStatus.REJECTED, timeout=timeout)).receipt


async def assert_nothing_arrives(client: AgencyClient, seconds: float = 1.5) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        for item in await client.fetch(timeout=0.3):
            assert isinstance(item, Incoming)
            await item.ack()
            assert isinstance(item.body, Receipt), f"delivered: {item.header.type}"


async def test_bad_envelopes_get_signed_rejection_receipts(fed: Federation) -> None:
    sender = await fed.client("THA/DSI-ATHD")
    target = await fed.client("MYS/RMP-ATIPSOM")
    bodies = example_bodies(0)
    publics = [sender.keys.encryption_key(fed.principal("MYS/RMP-ATIPSOM"), sender.clock())]

    def seal(**kw: object) -> bytes:
        args: dict[str, object] = {
            "sender": sender.identity,
            "recipients": publics,
            "body": bodies["alert"],
            "now_ms": sender.clock(),
            "ttl_ms": 3_600_000,
        }
        args.update(kw)
        return seal_envelope(**args)  # type: ignore[arg-type]

    async def publish(data: bytes) -> bytes:
        header = decode_envelope(data).header
        await sender.js.publish(
            subjects.ingress(sender.principal),
            data,
            headers={"Nats-Msg-Id": header.message_id},
            timeout=5,
        )
        return header.id

    # forged: one bit of the signature flipped
    good = seal()
    forged = bytearray(good)
    forged[decode_envelope(good).size - 1 - 20] ^= 1  # inside sig or hops, never metadata
    forged_id = await publish(bytes(forged))
    receipt = await rejection_for(sender, forged_id)
    assert receipt.code in ("ixb.E_SIGNATURE", "ixb.E_SCHEMA", "ixb.E_MALFORMED")
    assert receipt.by == "THA/HUB"

    # expired
    expired_id = await publish(seal(now_ms=sender.clock() - 7_200_000))
    assert (await rejection_for(sender, expired_id)).code == "ixb.E_EXPIRED"

    # replay: the same bytes as a new stream message (a new Nats-Msg-Id)
    original = seal()
    original_id = await publish(original)
    await sender.wait_receipt(original_id, ReceiptStatus.ACCEPTED)
    await sender.js.publish(
        subjects.ingress(sender.principal), original, headers={"Nats-Msg-Id": "replay-attempt"}
    )
    assert (await rejection_for(sender, original_id)).code == "ixb.E_REPLAY"

    # unauthorised: an immigration officer may not send a person query
    officer = await fed.client("THA/IMMIGRATION")
    query_id = await officer.send(bodies["person.query"], ["MYS/RMP-ATIPSOM"])
    assert (await rejection_for(officer, query_id)).code == "ixb.E_UNAUTHORISED"

    # an agency publishing an envelope signed as another agency
    as_other = seal_envelope(
        sender=officer.identity,
        recipients=publics,
        body=bodies["alert"],
        now_ms=sender.clock(),
        ttl_ms=3_600_000,
    )
    other_id = await publish(as_other)
    assert (await rejection_for(sender, other_id)).code == "ixb.E_UNAUTHORISED"

    # only the one genuine alert was delivered
    got = await collect(target, 1)
    assert [m.header.id for m in got] == [original_id]
    await assert_nothing_arrives(target)
    codes = {
        e.code
        for e in fed.hubs["THA"].hub.audit_log.search(AuditQuery(event="rejected"), limit=100)
    }
    assert {"ixb.E_EXPIRED", "ixb.E_REPLAY", "ixb.E_UNAUTHORISED"} <= codes


async def test_h2_forward_outside_the_original_parties_is_refused(fed: Federation) -> None:
    sender = await fed.client("THA/DSI-ATHD")
    mys = await fed.client("MYS/RMP-ATIPSOM")
    alert = example_bodies(0)["alert"]
    alert_id = await sender.send(alert, ["MYS/RMP-ATIPSOM"], handling=HandlingCode.H2)
    (received,) = await collect(mys, 1)
    # back to the originator: allowed
    ok_id = await mys.send(alert, ["THA/DSI-ATHD"], handling=HandlingCode.H2, forward_of=alert_id)
    await mys.wait_receipt(ok_id, ReceiptStatus.ACCEPTED)
    # onward to a third agency: refused by MYS's hub, nothing delivered
    bad_id = await mys.send(
        alert, ["MMR/MOHA-ATTU"], handling=HandlingCode.H2, forward_of=received.header.id
    )
    assert (await rejection_for(mys, bad_id)).code == "ixb.E_HANDLING"
    loosened = await mys.send(
        alert, ["THA/DSI-ATHD"], handling=HandlingCode.H0, forward_of=alert_id
    )
    assert (await rejection_for(mys, loosened)).code == "ixb.E_HANDLING"
    mmr = await fed.client("MMR/MOHA-ATTU")
    await assert_nothing_arrives(mmr)


async def test_offline_agency_gets_its_backlog(fed: Federation) -> None:
    sender = await fed.client("THA/DSI-ATHD")
    sent = []
    for i in range(5):
        body = msgspec.structs.replace(example_bodies(0)["alert"], title=f"EXAMPLE alert {i}")
        sent.append(await sender.send(body, ["MMR/MOHA-ATTU"]))
    for msg_id in sent:
        await sender.wait_receipt(msg_id, ReceiptStatus.DELIVERED, timeout=20)
    late = await fed.client("MMR/MOHA-ATTU")  # connects only now
    got = await collect(late, 5)
    assert sorted(m.header.id for m in got) == sorted(sent)


async def test_message_sent_while_the_link_is_down_arrives_once_it_is_back(
    fed: Federation,
) -> None:
    sender = await fed.client("THA/DSI-ATHD")
    body = example_bodies(0)["alert"]
    await fed.servers["MYS"].stop()  # MYS's server, and with it the THA-MYS link, is down
    msg_id = await sender.send(body, ["MYS/RMP-ATIPSOM"], priority=Priority.URGENT)
    await sender.wait_receipt(msg_id, ReceiptStatus.RELAYED)  # waiting in THA's OUT_MYS
    await fed.servers["MYS"].start()
    started = asyncio.get_running_loop().time()
    receiver = await fed.client("MYS/RMP-ATIPSOM")
    got = await collect(receiver, 1, timeout=60)
    assert [m.header.id for m in got] == [msg_id]
    elapsed = asyncio.get_running_loop().time() - started
    await sender.wait_receipt(msg_id, ReceiptStatus.DELIVERED, timeout=30)
    await assert_nothing_arrives(receiver, 2.0)  # exactly once
    mys = fed.hubs["MYS"].hub.audit_log.search(AuditQuery(msg_id=format_message_id(msg_id)))
    assert [e.event for e in mys].count("delivered") == 1
    print(f"backlog arrived {elapsed:.1f} s after MYS came back")


async def test_revoked_sender_is_refused(fed: Federation) -> None:
    await fed.stop_hub("THA")
    config = fed.deployment.hub_config("THA")
    text = config.read_text()
    marker = 'id = "THA/DSI-ATHD"\n'
    config.write_text(text.replace(marker, marker + 'revoked = "key compromised"\n'))
    await fed.start_hub("THA")
    sender = await fed.client("THA/DSI-ATHD")
    receiver = await fed.client("MYS/RMP-ATIPSOM")
    msg_id = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    assert (await rejection_for(sender, msg_id)).code == "ixb.E_REVOKED"
    await assert_nothing_arrives(receiver)
    # the revocation reached MYS as a newer signed directory
    deadline = asyncio.get_running_loop().time() + 20
    while fed.hubs["MYS"].hub.keys.version("THA") != fed.hubs["THA"].hub.keys.version("THA"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    entry = fed.hubs["MYS"].hub.keys.entry(fed.principal("THA/DSI-ATHD"))
    assert entry.revoked is not None and entry.revoked.reason == "key compromised"
    # the config change is in THA's audit log
    tha_log = fed.hubs["THA"].hub.audit_log
    assert tha_log.search(AuditQuery(event="policy_changed"), limit=5)
    assert len(tha_log.search(AuditQuery(event="hub_started"), limit=5)) == 2
    assert tha_log.search(AuditQuery(event="hub_stopped"), limit=5)


async def test_health_and_metrics_endpoints(fed: Federation) -> None:
    import aiohttp

    sender = await fed.client("THA/DSI-ATHD")
    msg_id = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    await sender.wait_receipt(msg_id, ReceiptStatus.DELIVERED)
    officer = await fed.client("THA/IMMIGRATION")
    bad = await officer.send(example_bodies(0)["person.query"], ["MYS/RMP-ATIPSOM"])
    await rejection_for(officer, bad)
    url = f"http://127.0.0.1:{fed.hubs['THA'].service.http_port}"
    wanted = (
        'ixb_rejected_total{code="ixb.E_UNAUTHORISED"} 1',
        'ixb_backlog_out{destination="MYS"} 0',
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200
            health = await resp.json()
        # counters move once a batch is durable and acked, a moment after its receipts went
        # out; the backlog gauges every 2 s
        for _ in range(50):
            async with http.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                metrics = await resp.text()
            if all(w in metrics for w in wanted):
                break
            await asyncio.sleep(0.2)
    assert health["ready"] is True and health["links"] == {"MMR": True, "MYS": True}
    assert all(v is not None for v in health["directories"].values())
    assert 'ixb_messages_total{decision="accepted"}' in metrics
    assert 'ixb_rejected_total{code="ixb.E_UNAUTHORISED"} 1' in metrics
    assert "ixb_hub_latency_seconds_count" in metrics
    assert 'ixb_backlog_out{destination="MYS"} 0' in metrics  # the peer sourced everything
    assert 'ixb_link_up{peer="MYS"} 1' in metrics


async def test_a_message_left_unacked_comes_back_intact(fed: Federation) -> None:
    """Redelivery of the same stream message is not a replay: nothing is lost on a retry."""
    sender = await fed.client("THA/DSI-ATHD")
    receiver = await fed.client("MYS/RMP-ATIPSOM")
    msg_id = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    first: Incoming | None = None
    deadline = asyncio.get_running_loop().time() + 20
    while first is None:
        assert asyncio.get_running_loop().time() < deadline
        for item in await receiver.fetch(timeout=0.5):
            assert isinstance(item, Incoming)
            if item.header.id == msg_id:
                first = item
            else:
                await item.ack()
    await first.leave(delay=0.1)  # e.g. the handler failed
    (again,) = await collect(receiver, 1)
    assert again.header.id == msg_id and again.body == first.body


async def test_a_backlog_is_acknowledged_with_few_receipts(fed: Federation) -> None:
    """Alerts that wait while their hub is down are settled as one batch: one signed receipt
    per statement names them all (Receipt.also), and each alert still gets every status."""
    sender = await fed.client("THA/DSI-ATHD")  # fetches the directories from the hub
    await fed.stop_hub("THA")
    sent = []
    for i in range(12):
        body = msgspec.structs.replace(example_bodies(0)["alert"], title=f"EXAMPLE alert {i}")
        sent.append(await sender.send(body, ["MYS/RMP-ATIPSOM"]))  # stored in THA's ingress
    await fed.start_hub("THA")
    for msg_id in sent:
        for status in (ReceiptStatus.ACCEPTED, ReceiptStatus.RELAYED, ReceiptStatus.DELIVERED):
            await sender.wait_receipt(msg_id, status, timeout=30)
    accepted = {
        id(r): r
        for msg_id in sent
        for r in sender.receipts[format_message_id(msg_id)]
        if r.status is ReceiptStatus.ACCEPTED
    }
    assert len(accepted) < len(sent)  # receipts were shared, not one per alert
    covered = {i for r in accepted.values() for i in r.ids}
    assert covered >= set(sent)
    assert all(str(r.signer) == "THA/HUB" for r in accepted.values())


async def refusal_logged(fed: Federation, country: str, msg_id: bytes) -> set[str | None]:
    """The codes ``country``'s hub logged refusing ``msg_id`` (waits for the entry)."""
    query = AuditQuery(msg_id=format_message_id(msg_id), event="rejected")
    deadline = asyncio.get_running_loop().time() + 15
    while not (entries := fed.hubs[country].hub.audit_log.search(query)):
        assert asyncio.get_running_loop().time() < deadline, f"{country} logged no refusal"
        await asyncio.sleep(0.2)
    return {e.code for e in entries}


async def test_receipts_are_statements_by_their_signer(fed: Federation) -> None:
    """Forged receipts are refused by the hub that knows the message, else by the sender's
    client; genuine ones reach the sender with who signed them (SPEC §5 receipt)."""
    sender = await fed.client("THA/DSI-ATHD")
    owner = await fed.client("MYS/RMP-ATIPSOM")
    forger = await fed.client("MMR/MOHA-ATTU")
    bystander = await fed.client("MYS/IMMIGRATION")
    msg_id = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    (item,) = await collect(owner, 1)

    def claim(for_id: bytes, status: ReceiptStatus, by: str) -> Receipt:
        return Receipt(for_id=for_id, status=status, by=by, at_ms=forger.clock())

    # the finding: MMR/MOHA-ATTU signs MYS's hub's delivery; THA's hub knows better
    forged = await forger.send(
        claim(msg_id, ReceiptStatus.DELIVERED, "MYS/HUB"), ["THA/DSI-ATHD"], in_reply_to=msg_id
    )
    assert await refusal_logged(fed, "THA", forged) == {"ixb.E_UNAUTHORISED"}
    # a MYS agency that never received it claims to have read it; MYS's hub knows better
    nosy = await bystander.send(
        claim(msg_id, ReceiptStatus.READ, "MYS/IMMIGRATION"), ["THA/DSI-ATHD"], in_reply_to=msg_id
    )
    assert await refusal_logged(fed, "MYS", nosy) == {"ixb.E_UNAUTHORISED"}

    # a message the hubs no longer know (pruned): only the sender's client can tell
    old = new_message_id(sender.clock() - 60_000, os.urandom(10))
    sender.remember_sent(old, [fed.principal("MYS/RMP-ATIPSOM")])
    fakes = {
        await forger.send(claim(old, status, by), ["THA/DSI-ATHD"], in_reply_to=old)
        for status, by in (
            (ReceiptStatus.DELIVERED, "MYS/HUB"),  # by is not the signer
            (ReceiptStatus.READ, "MMR/MOHA-ATTU"),  # not a recipient
        )
    }

    await owner.send_read_receipt(item)
    read = await sender.wait_receipt(msg_id, ReceiptStatus.READ, timeout=20)
    delivered = await sender.wait_receipt(msg_id, ReceiptStatus.DELIVERED)
    accepted = await sender.wait_receipt(msg_id, ReceiptStatus.ACCEPTED)
    assert read.signer == fed.principal("MYS/RMP-ATIPSOM") and read.hops[0].country == "MYS"
    assert str(delivered.signer) == "MYS/HUB" and str(accepted.signer) == "THA/HUB"

    refused: dict[str | None, str] = {}
    deadline = asyncio.get_running_loop().time() + 20
    while len(refused) < len(fakes):
        assert asyncio.get_running_loop().time() < deadline, refused
        for got in await sender.fetch(timeout=0.5):
            if isinstance(got, Refused):
                refused[got.message_id] = got.error.code
            else:
                await got.ack()
    assert refused == {format_message_id(f): "ixb.E_UNAUTHORISED" for f in fakes}
    assert format_message_id(old) not in sender.receipts  # refused: never recorded
    signers = {str(r.signer) for r in sender.receipts[format_message_id(msg_id)]}
    assert signers == {"THA/HUB", "MYS/HUB", "MYS/RMP-ATIPSOM"}


async def test_only_the_addressed_owners_answer_is_the_answer(fed: Federation) -> None:
    """A third party that learns a request's id cannot answer it in the owner's place."""
    asker = await fed.client("THA/DSI-ATHD")
    owner = await fed.client("MYS/RMP-ATIPSOM")
    meddler = await fed.client("MMR/MOHA-ATTU")
    bodies = example_bodies(0)
    asking = asyncio.create_task(
        asker.request(bodies["person.query"], ["MYS/RMP-ATIPSOM"], timeout=30)
    )
    (query,) = await collect(owner, 1)
    fake = await meddler.send(
        bodies["person.result"], ["THA/DSI-ATHD"], in_reply_to=query.header.id
    )
    await meddler.wait_receipt(fake, ReceiptStatus.RELAYED)
    await asyncio.sleep(1.0)  # the meddler's answer reaches the asker first
    genuine = await owner.reply(query, PersonResult(hit=False))
    answer = await asyncio.wait_for(asking, 30)
    assert answer.header.id == genuine and answer.sender == fed.principal("MYS/RMP-ATIPSOM")
    (queued,) = await collect(asker, 1)  # the meddler's stays in the inbox like any message
    assert queued.header.id == fake


async def test_the_same_statement_in_another_receipt_is_kept_once(fed: Federation) -> None:
    """A hub that crashed mid-batch may state "accepted" again for a message, grouped with
    others into another receipt envelope: the sender's client keeps the statement once."""
    sender = await fed.client("THA/DSI-ATHD")
    msg_id = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    first = await sender.wait_receipt(msg_id, ReceiptStatus.ACCEPTED, timeout=20)
    hub = fed.hubs["THA"].hub
    other = new_message_id(sender.clock(), os.urandom(10))  # another of the batch
    sender.remember_sent(other, [sender.principal])
    again = seal_envelope(
        sender=hub.identity,
        recipients=[sender.keys.encryption_key(sender.principal, first.receipt.at_ms)],
        body=Receipt(
            for_id=other,
            also=(msg_id,),
            status=ReceiptStatus.ACCEPTED,
            by="THA/HUB",
            at_ms=first.receipt.at_ms + 5_000,
        ),
        now_ms=first.receipt.at_ms + 5_000,
        ttl_ms=3_600_000,
        in_reply_to=other,
    )
    assert hub.nc is not None
    await hub.nc.jetstream().publish(subjects.inbox(sender.principal), again)
    await sender.wait_receipt(other, ReceiptStatus.ACCEPTED, timeout=20)
    kept = [
        r for r in sender.receipts[format_message_id(msg_id)] if r.status is ReceiptStatus.ACCEPTED
    ]
    assert kept == [first]
    assert [r.receipt.for_id for r in sender.receipts[format_message_id(other)]] == [other]


async def test_a_receipt_sent_but_never_recorded_is_sent_again_and_recorded_once(
    fed: Federation,
) -> None:
    """A batch whose receipt publish timed out (the ack was lost: the receipt may well be
    stored and delivered) is planned again, maybe grouped otherwise, so that receipt is
    never recorded. The hub's sweep publishes it again (same bytes, stored once) and
    records it, once, however often it runs."""
    sender = await fed.client("THA/DSI-ATHD")
    msg_id = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    await sender.wait_receipt(msg_id, ReceiptStatus.RELAYED, timeout=20)
    hub = fed.hubs["THA"].hub
    assert await hub.sweep_receipts() == 0  # everything sent was recorded
    # a receipt kept as sealed 20 s ago for a batch of two, lost before it was recorded
    other = new_message_id(sender.clock(), os.urandom(10))
    sender.remember_sent(other, [parse_agency("MYS/RMP-ATIPSOM")])
    sealed = seal_receipts(
        [
            ReceiptStatement(
                sender.principal, ReceiptStatus.ACCEPTED, None, None, (msg_id, other), frozenset()
            )
        ],
        identity=hub.identity,
        encryption_key=hub._encryption_key,
        links=frozenset(hub.links),
        now=hub.clock() - 20_000,
    )
    ((dedup, data),) = sealed.fresh
    assert hub.store.keep_sealed_receipts(sealed.fresh, hub.clock() - 20_000)
    receipt_id = format_message_id(decode_envelope(data).header.id)
    query = AuditQuery(msg_id=receipt_id)
    assert hub.audit_log.search(query) == []
    assert await hub.sweep_receipts() == 1
    assert [e.event for e in hub.audit_log.search(query)] == ["delivered"]
    assert await hub.sweep_receipts() == 0
    got = []
    deadline = asyncio.get_running_loop().time() + 20
    while receipt_id not in got:
        assert asyncio.get_running_loop().time() < deadline, "the receipt never arrived"
        got += [i.message_id for i in await sender.fetch(timeout=0.5) if isinstance(i, Incoming)]
    # published once more by a batch planned again: stored once, recorded once
    await hub._publish(receipt_publish(hub.identity.principal, dedup, data, hub.clock()))
    hub.audit.record([receipt_publish(hub.identity.principal, dedup, data, hub.clock()).entry])
    assert [e.event for e in hub.audit_log.search(query)] == ["delivered"]
