"""Lookups on the synchronous path (SPEC §14) across real nats-servers and hubs."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from agency_client.docregistry import DocumentRegistry
from agency_client.sdk import AgencyClient, Incoming, Queued
from broker.config import LookupSection
from ixb.demo import REGISTRY, STOLEN_PASSPORT, VALID_PASSPORT
from protocols import subjects
from protocols.envelope import add_hop
from protocols.errors import BusyError, ReplayError, SignatureError, UnauthorisedError
from protocols.examples import example_bodies
from protocols.handling import Priority
from protocols.identifiers import format_message_id, parse_agency
from protocols.messages import (
    DocPurpose,
    DocVerifyRequest,
    DocVerifyResponse,
    PersonQuery,
    PersonResult,
    Receipt,
    ReceiptStatus,
)
from tests.federation import Federation, run_ixb, running_federation


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


def _request(lines: tuple[str, str]) -> DocVerifyRequest:
    return DocVerifyRequest(mrz=lines, purpose=DocPurpose.BORDER_CHECK, checkpoint="EXAMPLE-BKK")


def _entries(fed: Federation, country: str) -> list[tuple[str, str, str]]:
    """(event, msg_id, sender) of every entry committed to ``country``'s audit log, read
    through a connection of its own (what a crash right now would leave)."""
    hub = fed.hubs[country].hub
    path = hub.config.path(hub.config.hub.state_dir) / "audit.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in db.execute("SELECT event, msg_id, sender FROM entries")]
    finally:
        db.close()


async def _authority(
    fed: Federation, stop: asyncio.Event, *, agency: str = "MYS/IMMIGRATION"
) -> asyncio.Task[None]:
    registry = DocumentRegistry({(r.issuing_state, r.document_number): r for r in REGISTRY})
    client = await fed.client(agency)

    async def answer(c: AgencyClient, item: Incoming) -> None:
        assert isinstance(item.body, DocVerifyRequest)
        await c.reply(item, registry.answer(item.body, date.today()), priority=Priority.URGENT)

    return asyncio.create_task(client.serve({"doc.verify.request": answer}, stop, concurrency=8))


async def _wait_serving(fed: Federation, agency: str = "MYS/IMMIGRATION") -> None:
    """Until the responder's queue subscription reached its hub's server."""
    hub = fed.hubs[agency[:3]].hub
    assert hub.nc is not None
    subject = f"ixb.{agency[:3]}.serve.{agency[4:]}"
    for _ in range(100):
        try:
            await hub.nc.request(subject, b"", timeout=0.2)
        except Exception as exc:  # noqa: BLE001 - no responders yet, or timed out: both fine
            if "no responders" not in str(exc).lower():
                return
        else:
            return
        await asyncio.sleep(0.05)


async def test_a_document_check_is_answered_over_the_sync_path_and_audited_at_both_hubs(
    fed: Federation,
) -> None:
    stop = asyncio.Event()
    task = await _authority(fed, stop)
    try:
        await _wait_serving(fed)
        desk = await fed.client("THA/IMMIGRATION")
        answer = await desk.lookup(
            _request(VALID_PASSPORT), "MYS/IMMIGRATION", priority=Priority.URGENT
        )
        # the moment the requester holds the answer, both hubs hold every entry durably
        tha, mys = _entries(fed, "THA"), _entries(fed, "MYS")
        assert isinstance(answer, Incoming)
        assert isinstance(answer.body, DocVerifyResponse)
        assert answer.body.status == "valid"
        assert [str(h) for h in answer.hubs] == ["MYS/HUB", "THA/HUB"]
        request_id = format_message_id(answer.header.in_reply_to or b"")
        answer_id = answer.message_id
        assert ("accepted", request_id, "THA/IMMIGRATION") in tha
        assert ("relayed", request_id, "THA/IMMIGRATION") in tha
        assert ("accepted", answer_id, "MYS/IMMIGRATION") in tha
        assert ("delivered", answer_id, "MYS/IMMIGRATION") in tha
        assert ("accepted", request_id, "THA/IMMIGRATION") in mys
        assert ("delivered", request_id, "THA/IMMIGRATION") in mys
        assert ("accepted", answer_id, "MYS/IMMIGRATION") in mys
        assert ("relayed", answer_id, "MYS/IMMIGRATION") in mys
        stolen = await desk.lookup(_request(STOLEN_PASSPORT), "MYS/IMMIGRATION")
        assert isinstance(stolen, Incoming) and isinstance(stolen.body, DocVerifyResponse)
        assert stolen.body.status == "reported_stolen"
        # nothing of it went through the durable inbox
        assert await desk.fetch(timeout=0.3) == []
        # a liaison officer at either hub reconciles both exchanges: each side's relayed
        # entries (question, answer) match the other's accepted ones, once shared
        for here, there in (("THA", "MYS"), ("MYS", "THA")):
            audit = fed.hubs[here].hub.audit
            for _ in range(200):
                seen = audit.reconcile(there, grace_ms=0)
                if seen.matched >= 4:
                    break
                await asyncio.sleep(0.1)
            assert seen.matched == 4 and seen.clean, seen
    finally:
        stop.set()
        await task


async def test_a_lookup_nobody_answers_is_queued_with_its_due_time_and_answered_later(
    fed: Federation,
) -> None:
    desk = await fed.client("THA/IMMIGRATION")
    queued = await desk.lookup(
        _request(VALID_PASSPORT), "MYS/IMMIGRATION", priority=Priority.URGENT
    )
    assert isinstance(queued, Queued)
    assert str(queued.owner) == "MYS/IMMIGRATION" and str(queued.by) == "MYS/HUB"
    created = desk.clock()
    assert created - 60_000 < queued.due_ms - 8 * 3600_000 <= created  # urgent: 8 h
    assert queued.describe(queued.due_ms - (7 * 60 + 58) * 60_000) == (
        "queued at MYS/IMMIGRATION, due in 7 h 58 min"
    )
    request_id = format_message_id(queued.message_id)
    assert ("delivered", request_id, "THA/IMMIGRATION") in _entries(fed, "MYS")
    # a person (here: the responder started later) answers from the inbox, over the durable path
    stop = asyncio.Event()
    task = await _authority(fed, stop)
    try:
        for _ in range(100):
            items = await desk.fetch(timeout=0.3)
            answers = [
                i for i in items if isinstance(i, Incoming) and not isinstance(i.body, Receipt)
            ]
            for i in items:
                if isinstance(i, Incoming):
                    await i.ack()
            if answers:
                break
        else:
            raise AssertionError("no answer in the inbox")
        [answer] = answers
        assert answer.header.in_reply_to == queued.message_id
        assert isinstance(answer.body, DocVerifyResponse) and answer.body.status == "valid"
    finally:
        stop.set()
        await task


async def test_a_lookup_the_owners_hub_does_not_answer_goes_on_durably_and_is_answered(
    fed: Federation,
) -> None:
    """MYS's hub is down: THA's hub queues the check on the link's stream and says so; when
    MYS is back, the check reaches its inbox and the answer comes to THA's over the durable
    path."""
    await fed.stop_hub("MYS")
    desk = await fed.client("THA/IMMIGRATION")
    queued = await desk.lookup(
        _request(VALID_PASSPORT), "MYS/IMMIGRATION", priority=Priority.URGENT, timeout=15
    )
    assert isinstance(queued, Queued)
    assert str(queued.by) == "THA/HUB" and str(queued.owner) == "MYS/IMMIGRATION"
    created = desk.clock()
    assert created - 60_000 < queued.due_ms - 8 * 3600_000 <= created  # urgent: 8 h
    assert queued.describe(created).startswith(
        "queued for MYS/IMMIGRATION by THA/HUB (the hub of MYS does not answer; "
    ), queued.describe(created)
    request_id = format_message_id(queued.message_id)
    assert ("relayed", request_id, "THA/IMMIGRATION") in _entries(fed, "THA")
    await fed.start_hub("MYS")
    stop = asyncio.Event()
    task = await _authority(fed, stop)
    try:
        answers: list[Incoming] = []
        for _ in range(200):
            for i in await desk.fetch(timeout=0.3):
                if isinstance(i, Incoming):
                    await i.ack()
                    if not isinstance(i.body, Receipt):
                        answers.append(i)
            if answers:
                break
        [answer] = answers
        assert answer.header.in_reply_to == queued.message_id
        assert isinstance(answer.body, DocVerifyResponse) and answer.body.status == "valid"
        assert ("delivered", request_id, "THA/IMMIGRATION") in _entries(fed, "MYS")
    finally:
        stop.set()
        await task


async def _forged(desk: AgencyClient) -> bytes:
    data, _env = await desk._seal(_request(VALID_PASSPORT), ["MYS/IMMIGRATION"])
    out = bytearray(data)
    out[-10] ^= 0x01  # inside the signature, at the end of the envelope
    return bytes(out)


async def _refusal(desk: AgencyClient, data: bytes) -> Receipt:
    reply = await desk.nc.request(subjects.lookup(desk.principal), data, timeout=5)
    item = await desk._verify_reply(reply.data, desk.replay)
    assert isinstance(item.body, Receipt)
    assert str(item.sender) == "THA/HUB"
    return item.body


async def test_refusals_come_back_at_once_as_signed_receipts(fed: Federation) -> None:
    desk = await fed.client("THA/IMMIGRATION")
    forged = await _refusal(desk, await _forged(desk))
    assert forged.status is ReceiptStatus.REJECTED and forged.code == SignatureError.code

    # a role that may not ask: the trafficking unit has no document checks
    unit = await fed.client("THA/DSI-ATHD")
    with pytest.raises(UnauthorisedError, match="THA/HUB rejected"):
        await unit.lookup(_request(VALID_PASSPORT), "MYS/IMMIGRATION")

    # anything but a lookup type takes the durable path
    alert, _ = await unit._seal(example_bodies(unit.clock())["alert"], ["MYS/RMP-ATIPSOM"])
    not_lookup = await _refusal(unit, alert)
    assert not_lookup.code == UnauthorisedError.code and "durable path" in (not_lookup.detail or "")

    # the same envelope twice: the second is a replay, refused with its own receipt
    stop = asyncio.Event()
    task = await _authority(fed, stop)
    try:
        await _wait_serving(fed)
        data, _env = await desk._seal(_request(VALID_PASSPORT), ["MYS/IMMIGRATION"])
        first = await desk.nc.request(subjects.lookup(desk.principal), data, timeout=5)
        answer = await desk._verify_reply(first.data, desk.replay)
        assert isinstance(answer.body, DocVerifyResponse)
        replayed = await _refusal(desk, data)
        assert replayed.code == ReplayError.code
    finally:
        stop.set()
        await task
    # each refusal is in THA's audit log
    codes = {e[0] for e in _entries(fed, "THA")}
    assert "rejected" in codes


async def test_beyond_capacity_every_lookup_is_answered_or_refused_busy_at_once(
    fed: Federation,
) -> None:
    tha = fed.hubs["THA"].hub
    tha.lookups.config = LookupSection(max_in_flight=3)
    registry = DocumentRegistry({(r.issuing_state, r.document_number): r for r in REGISTRY})
    authority = await fed.client("MYS/IMMIGRATION")

    async def slow(c: AgencyClient, item: Incoming) -> None:
        assert isinstance(item.body, DocVerifyRequest)
        await asyncio.sleep(0.3)
        await c.reply(item, registry.answer(item.body, date.today()))

    stop = asyncio.Event()
    task = asyncio.create_task(authority.serve({"doc.verify.request": slow}, stop, concurrency=16))
    try:
        await _wait_serving(fed)
        desk = await fed.client("THA/IMMIGRATION")
        started = asyncio.get_running_loop().time()
        results = await asyncio.wait_for(
            asyncio.gather(
                *(desk.lookup(_request(VALID_PASSPORT), "MYS/IMMIGRATION") for _ in range(24)),
                return_exceptions=True,
            ),
            timeout=30,
        )
        answered = [r for r in results if isinstance(r, Incoming)]
        busy = [r for r in results if isinstance(r, BusyError)]
        assert len(answered) + len(busy) == 24, [r for r in results if r not in answered + busy]
        assert answered and busy
        assert all("THA/HUB rejected" in b.detail for b in busy)
        assert asyncio.get_running_loop().time() - started < 10
        assert tha.lookups.in_flight == 0
        # the owner's hub sheds load the same way: its signed refusal comes back through ours
        tha.lookups.config = LookupSection()
        mys = fed.hubs["MYS"].hub
        mys.lookups.config = LookupSection(max_in_flight=2)
        results = await asyncio.wait_for(
            asyncio.gather(
                *(desk.lookup(_request(VALID_PASSPORT), "MYS/IMMIGRATION") for _ in range(12)),
                return_exceptions=True,
            ),
            timeout=30,
        )
        busy = [r for r in results if isinstance(r, BusyError)]
        assert busy and all("MYS/HUB rejected" in b.detail for b in busy)
        assert all(isinstance(r, (Incoming, BusyError)) for r in results), results
        assert mys.lookups.in_flight == 0
    finally:
        stop.set()
        await task


async def test_a_person_query_goes_to_two_countries_at_once(fed: Federation) -> None:
    stop = asyncio.Event()
    tasks = []
    for agency, hit in (("MYS/RMP-ATIPSOM", True), ("MMR/MOHA-ATTU", False)):
        client = await fed.client(agency)

        async def answer(c: AgencyClient, item: Incoming, hit: bool = hit) -> None:
            assert isinstance(item.body, PersonQuery)
            ref = f"{c.principal.country}-EXAMPLE-0001" if hit else None
            await c.reply(item, PersonResult(hit=hit, reference=ref))

        tasks.append(asyncio.create_task(client.serve({"person.query": answer}, stop)))
    try:
        await _wait_serving(fed, "MYS/RMP-ATIPSOM")
        await _wait_serving(fed, "MMR/MOHA-ATTU")
        unit = await fed.client("THA/DSI-ATHD")
        query = PersonQuery(
            surname="EXAMPLE",
            birth_date="1990-01-01",
            purpose="EXAMPLE investigation",
            legal_basis="EXAMPLE basis",
        )
        results = await unit.lookup_each(query, ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"])
        mys = results[parse_agency("MYS/RMP-ATIPSOM")]
        mmr = results[parse_agency("MMR/MOHA-ATTU")]
        assert isinstance(mys, Incoming) and isinstance(mys.body, PersonResult)
        assert mys.body.hit and mys.body.reference == "MYS-EXAMPLE-0001"
        assert isinstance(mmr, Incoming) and isinstance(mmr.body, PersonResult)
        assert not mmr.body.hit
    finally:
        stop.set()
        for t in tasks:
            await t


async def test_the_officer_sees_where_a_queued_check_waits_and_until_when(
    fed: Federation,
) -> None:
    profile = str(fed.deployment.profile("THA/IMMIGRATION"))
    out = await run_ixb("verify-doc", "--mrz", *VALID_PASSPORT, IXB_PROFILE=profile)
    assert out.returncode == 0, out.stderr
    _echo, state = out.stdout.strip().splitlines()
    assert re.fullmatch(r"MYS/IMMIGRATION: queued at MYS/IMMIGRATION, due in 7 h 5\d min", state)
    as_json = await run_ixb("verify-doc", "--json", "--mrz", *VALID_PASSPORT, IXB_PROFILE=profile)
    assert as_json.returncode == 0, as_json.stderr
    queued = json.loads(as_json.stdout)
    assert queued["state"] == "queued" and queued["owner"] == "MYS/IMMIGRATION"
    assert queued["by"] == "MYS/HUB" and queued["due"].endswith("Z")


async def test_a_peer_cannot_route_a_lookup_through_us_to_a_third_country(
    fed: Federation,
) -> None:
    """MYS's hub answers lookups for MYS's agencies only, as it delivers only to them."""
    tha = fed.hubs["THA"].hub
    unit = await fed.client("THA/DSI-ATHD")
    query = PersonQuery(
        surname="EXAMPLE", birth_date="1990-01-01", purpose="EXAMPLE", legal_basis="EXAMPLE"
    )
    _data, env = await unit._seal(query, ["MMR/MOHA-ATTU"])
    through_mys = add_hop(env, tha.identity, tha.clock()).to_bytes()
    reply = await tha.links["MYS"].nc.request(
        subjects.link_lookup("THA", "MYS"), through_mys, timeout=5
    )
    # refused, recorded, and answered with no statement: MYS's hub may state nothing about
    # a message for neither its country nor from it (SPEC §5); THA's hub would refuse it then
    assert reply.data == b""
    refused = ("rejected", env.header.message_id, "THA/DSI-ATHD")
    for _ in range(50):  # recorded beside the reply, not before it
        if refused in _entries(fed, "MYS"):
            break
        await asyncio.sleep(0.1)
    assert refused in _entries(fed, "MYS")
