"""Overdue requests across two countries over real NATS: both sides reminded, once.

THA/DSI-ATHD asks MYS/RMP-ATIPSOM three urgent person queries under an
agreement whose urgent tier is a few seconds: one left unanswered, one answered
by the owner in time, one "answered" by a third party (MMR/MOHA-ATTU). Each
hub reminds its own party of the two unanswered ones with a signed ``overdue``
receipt, audits it, and lists it; ``ixb overdue`` shows it on both sides; a
restarted hub does not remind again.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agency_client.commands import LocalState, SentLog
from agency_client.msgstore import open_store
from agency_client.overdue import open_requests
from agency_client.profile import load_profile
from broker.audit.search import AuditQuery
from broker.reminders import reminder_dedup
from protocols.audit import decode_entry
from protocols.envelope import decode_envelope
from protocols.examples import example_bodies
from protocols.handling import Priority
from protocols.identifiers import format_message_id, parse_agency
from protocols.messages import PersonResult
from tests.federation import Federation, run_ixb, running_federation

URGENT_S = 6
ASKER, OWNER, THIRD = "THA/DSI-ATHD", "MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"


async def _agree_on_seconds(federation: Federation) -> None:
    """Both hubs of the pair: the urgent tier of their agreement is ``URGENT_S`` seconds."""
    for country, peer in (("THA", "MYS"), ("MYS", "THA")):
        await federation.stop_hub(country)
        path = federation.deployment.hub_config(country)
        with path.open("a", encoding="utf-8") as f:
            f.write(f"\n[deadlines.{peer}]\nurgent_seconds = {URGENT_S}\n")
        await federation.start_hub(country)
    await federation.wait_directories()


async def _reminded(federation: Federation, count: int, timeout: float = 40.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        sent = {c: len(federation.hubs[c].hub.store.reminders()) for c in ("THA", "MYS")}
        if all(n >= count for n in sent.values()):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"reminders sent: {sent}")
        await asyncio.sleep(0.2)


async def _ixb_json(*args: str) -> dict[str, object]:
    done = await run_ixb(*args, "--json")
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


async def _check_hub(federation: Federation, country: str, party: str, reminded: set[str]) -> None:
    """``country``'s hub reminded ``party`` of exactly ``reminded``, audited, counted, listed."""
    hub = federation.hubs[country].hub
    sent = hub.store.reminders()
    assert {r.msg_id for r in sent} == reminded
    assert {r.party for r in sent} == {party}
    for r in sent:  # each reminder is an audit entry naming the request
        request = next(o for o in hub.store.open_requests() if o.msg_id == r.msg_id)
        sealed = hub.store.sealed_receipt(reminder_dedup(request, parse_agency(party)))
        assert sealed is not None
        reminder = decode_envelope(sealed).header
        (entry,) = hub.audit_log.search(AuditQuery(msg_id=reminder.message_id, event="delivered"))
        assert (entry.sender, entry.recipients) == (f"{country}/HUB", (party,))
        assert entry.type == "receipt"
        assert decode_entry(entry.data).reply_to_id == r.msg_id
        assert "overdue reminder" in (decode_entry(entry.data).detail or "")
    assert 'ixb_receipts_total{status="overdue"} 2.0' in hub.metrics.render()
    config = str(federation.deployment.hub_config(country))
    hub_view = await _ixb_json("overdue", "--config", config)
    assert {o["id"] for o in hub_view["overdue"]} == reminded  # type: ignore[union-attr]


async def test_an_overdue_request_reminds_both_sides_once(tmp_path: Path) -> None:
    async with running_federation(tmp_path) as federation:
        await _agree_on_seconds(federation)
        deployment = federation.deployment
        asker = await federation.client(ASKER)
        owner = await federation.client(OWNER)
        third = await federation.client(THIRD)
        # what the CLI does for every send: keep requests sent and answers given
        asker_log = SentLog(load_profile(deployment.profile(ASKER)))
        owner_log = SentLog(load_profile(deployment.profile(OWNER)))
        asker.on_sent, owner.on_sent = asker_log.add, owner_log.add
        query = example_bodies(asker.clock())["person.query"]
        ids = {
            name: await asker.send(query, [OWNER], priority=Priority.URGENT)
            for name in ("unanswered", "answered", "third_party")
        }
        answer = PersonResult(hit=False)
        await owner.send(answer, [ASKER], in_reply_to=ids["answered"], priority=Priority.URGENT)
        await third.send(answer, [ASKER], in_reply_to=ids["third_party"])
        asker_log.flush()
        owner_log.flush()
        # the owner takes its requests into its store; the asker its answers
        for agency in (OWNER, ASKER):
            done = await run_ixb("inbox", "--profile", str(deployment.profile(agency)), "--json")
            assert done.returncode == 0, done.stderr

        await _reminded(federation, 2)
        reminded = {format_message_id(ids[n]) for n in ("unanswered", "third_party")}
        for country, party in (("THA", ASKER), ("MYS", OWNER)):
            await _check_hub(federation, country, party, reminded)

        # both agencies hold the signed reminders, and list the requests both ways
        asked = await _ixb_json("overdue", "--profile", str(deployment.profile(ASKER)))
        assert {a["id"] for a in asked["asked"]} == reminded  # type: ignore[union-attr]
        assert all(a["due_from"] == "reminder" for a in asked["asked"])  # type: ignore[union-attr]
        assert asked["asked_of_me"] == []
        receipts = await _ixb_json(
            "receipts",
            "--profile",
            str(deployment.profile(ASKER)),
            format_message_id(ids["unanswered"]),
        )
        overdue = [r for r in receipts["receipts"] if r["status"] == "overdue"]  # type: ignore[union-attr]
        assert [r["signer"] for r in overdue] == ["THA/HUB"]
        of_me = await _ixb_json("overdue", "--profile", str(deployment.profile(OWNER)))
        assert {a["id"] for a in of_me["asked_of_me"]} == reminded  # type: ignore[union-attr]
        assert all(a["reminded"] for a in of_me["asked_of_me"])  # type: ignore[union-attr]
        human = await run_ixb("overdue", "--profile", str(deployment.profile(OWNER)), "--offline")
        assert "overdue by" in human.stdout, human.stderr

        # a restarted hub remembers what it reminded: nothing is sent twice
        await federation.stop_hub("THA")
        hub = await federation.start_hub("THA")
        assert await hub.reminders.remind() == 0
        assert len(hub.store.reminders()) == 2


async def test_a_request_the_owners_hub_refused_is_not_reminded(tmp_path: Path) -> None:
    """MYS's hub no longer takes person queries from THA: it refuses one THA's hub accepted.
    Its refusal reaches THA's witness with MYS's checkpoint, so THA closes the request as
    refused there and reminds nobody when its due time passes."""
    async with running_federation(tmp_path) as federation:
        await _agree_on_seconds(federation)
        await federation.stop_hub("MYS")
        path = federation.deployment.hub_config("MYS")
        text = path.read_text(encoding="utf-8")
        line = next(x for x in text.splitlines() if x.startswith("THA = ["))
        allowed = [t for t in json.loads(line.split("=", 1)[1]) if t != "person.query"]
        path.write_text(text.replace(line, f"THA = {json.dumps(allowed)}"), encoding="utf-8")
        await federation.start_hub("MYS")
        await federation.wait_directories()
        asker = await federation.client(ASKER)
        asker_log = SentLog(load_profile(federation.deployment.profile(ASKER)))
        asker.on_sent = asker_log.add  # as the CLI keeps what it sent, for ixb overdue
        query = example_bodies(asker.clock())["person.query"]
        msg_id = await asker.send(query, [OWNER], priority=Priority.URGENT)
        asker_log.flush()
        tha = federation.hubs["THA"].hub
        text_id = format_message_id(msg_id)
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # MYS's next checkpoint carries its rejected entry to THA's witness
            if any(r.refused for r in tha.store.open_requests() if r.msg_id == text_id):
                break
            assert asyncio.get_running_loop().time() < deadline, "no refusal shared"
            await asyncio.sleep(0.2)
        await asyncio.sleep(URGENT_S + 2)  # past due, and past a reminder round
        assert await tha.reminders.remind() == 0
        assert tha.store.reminders() == []
        hub_view = await _ixb_json(
            "overdue", "--config", str(federation.deployment.hub_config("THA"))
        )
        assert hub_view["overdue"] == []
        # and the asker's own ixb overdue, which takes MYS's signed refusal from its inbox
        profile = str(federation.deployment.profile(ASKER))
        receipts = await _ixb_json("receipts", "--profile", profile, text_id)
        refusals = [r for r in receipts["receipts"] if r["status"] == "rejected"]  # type: ignore[union-attr]
        assert [(r["signer"], r["code"]) for r in refusals] == [("MYS/HUB", "ixb.E_UNAUTHORISED")]
        mine = await _ixb_json("overdue", "--profile", profile)
        assert mine["asked"] == []
        # its own records say it asked, yet it is not open (and so never overdue, even past
        # the default 8 h its side knows without a reminder): it was refused
        agency = load_profile(federation.deployment.profile(ASKER))
        state, store = LocalState(agency), open_store(agency, [], asker.clock())
        try:
            assert msg_id in [r[0] for r in state.sent_requests()]
            found, _others = open_requests(agency.principal, state, store)
            assert found == []
        finally:
            state.close()
            store.close()
