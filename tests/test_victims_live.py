"""Victims' data (SPEC §6), on real nats-servers across countries.

A victim's identity appears in no log, no audit entry and no hub file: an alert naming a
victim crosses two countries (the officer's CLI as a process), then every log line, the
audit entries of the message and every file under each hub's state directory are searched
for the victim's name and description. And it reaches only its named recipients: it
travels under H2 or not at all, its onward forward is refused, and a receiver refuses
one a non-conforming sender sealed under H0.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nacl.utils
import pytest
import structlog

from agency_client.sdk import AgencyClient, Incoming, Refused
from broker.audit.search import AuditQuery
from protocols import subjects, wire
from protocols.envelope import Header, assemble, encrypt_body, seal_content_key
from protocols.errors import HandlingError
from protocols.examples import example_bodies, example_victim_alert
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import format_message_id, new_message_id
from protocols.messages import Alert, Receipt, ReceiptStatus, Subject, SubjectRole
from tests.federation import Federation, run_ixb, running_federation

NAME = "EXAMPLE-QZXVICTIM"
DESCRIPTION = "EXAMPLE-QZXDESC girl of about 16, scar on left hand"
OFFICER = "MYS/RMP-ATIPSOM"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


def _files_naming(root: Path, needles: list[bytes]) -> list[str]:
    return [
        f"{p}: {n!r}"
        for p in root.rglob("*")
        if p.is_file()
        for n in needles
        if n in p.read_bytes()
    ]


async def test_a_victims_identity_is_in_no_log_audit_entry_or_hub_file(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    base = example_bodies(0)["alert"]
    assert isinstance(base, Alert)
    victim = Subject(role=SubjectRole.VICTIM, given_names=NAME, description=DESCRIPTION)
    body = msgspec.structs.replace(base, subjects=(*base.subjects[:1], victim))
    needles = [NAME, NAME.lower(), DESCRIPTION[:20]]

    with structlog.testing.capture_logs() as events:
        sender = await fed.client("THA/DSI-ATHD")
        msg_id = format_message_id(
            await sender.send(body, [OFFICER], handling=HandlingCode.H2, priority=Priority.URGENT)
        )
        env = {"IXB_PROFILE": str(fed.deployment.profile(OFFICER)), "IXB_LOG_LEVEL": "debug"}
        shown: list[dict[str, object]] = []
        deadline = asyncio.get_running_loop().time() + 30
        while not shown:
            assert asyncio.get_running_loop().time() < deadline
            done = await run_ixb("inbox", "--json", "--wait", "2", **env)
            assert done.returncode == 0, done.stderr
            shown += json.loads(done.stdout)["messages"]
            assert not any(n in done.stderr for n in needles), done.stderr  # the agency's log
        await asyncio.sleep(1.0)  # receipts and checkpoints settle at both hubs
    # it did arrive, with the victim, to the named recipient
    assert shown[0]["id"] == msg_id and NAME in json.dumps(shown[0]["body"])

    logged = capsys.readouterr()
    text = logged.out + logged.err + json.dumps(events, default=str)
    assert msg_id in text, "the logs carry message ids: the search would prove nothing"
    for needle in needles:
        assert needle not in text, needle

    for country in ("THA", "MYS"):
        hub = fed.hubs[country].hub
        entries = hub.audit_log.search(AuditQuery(msg_id=msg_id))
        assert entries, f"{country} recorded nothing for {msg_id}"
        recorded = repr(entries)
        assert not any(n in recorded for n in needles), recorded
        state = fed.deployment.base / "state" / country  # hub.sqlite, audit.sqlite, WALs
        assert (state / "hub.sqlite").exists()
        found = _files_naming(state, [n.encode() for n in needles])
        assert not found, found
    # nor in the clear in the officer's store (it is sealed there)
    store = fed.deployment.profile(OFFICER).with_name("MYS-RMP-ATIPSOM.state")
    assert not _files_naming(store.parent, [n.encode() for n in needles])


async def test_a_victim_alert_reaches_its_named_recipient_and_goes_no_further(
    fed: Federation,
) -> None:
    sender = await fed.client("THA/DSI-ATHD")
    officer = await fed.client(OFFICER)
    third = await fed.client("MMR/MOHA-ATTU")
    body = example_victim_alert(0)

    # under H0 it never leaves the sender: refused before sealing, nothing published
    with pytest.raises(HandlingError, match="victim"):
        await sender.send(body, [OFFICER], handling=HandlingCode.H0)
    msg_id = await sender.send(body, [OFFICER], handling=HandlingCode.H2)
    (received,) = await _collect(officer, 1)
    assert received.header.id == msg_id and received.body == body

    # the recipient may not pass it on: its SDK refuses a looser code, its hub an outsider
    with pytest.raises(HandlingError):
        await officer.send(body, ["MMR/MOHA-ATTU"], handling=HandlingCode.H1, forward_of=msg_id)
    onward = await officer.send(
        body, ["MMR/MOHA-ATTU"], handling=HandlingCode.H2, forward_of=msg_id
    )
    rejected = await officer.wait_receipt(onward, ReceiptStatus.REJECTED, timeout=15)
    assert rejected.receipt.code == "ixb.E_HANDLING" and str(rejected.signer) == "MYS/HUB"
    assert await _collect(third, 1, timeout=2.0) == []


async def test_the_officers_cli_sends_a_victim_alert_under_h2_and_refuses_h0(
    fed: Federation,
) -> None:
    env = {"IXB_PROFILE": str(fed.deployment.profile("THA/DSI-ATHD"))}
    alert = ("send", "alert", "--to", OFFICER, "--title", "EXAMPLE girl at Pattani pier")
    alert += ("--text", "EXAMPLE", "--category", "victim_at_risk")
    alert += ("--source-grade", "B", "--info-grade", "2")
    sent = await run_ixb(*alert, "--json", **env)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["handling"] == "H2"  # the default for a victim at risk
    refused = await run_ixb(*alert, "--handling", "H0", **env)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error ixb.E_HANDLING: a body naming a victim travels only under H2")
    officer = await fed.client(OFFICER)
    (received,) = await _collect(officer, 1)
    assert received.header.handling is HandlingCode.H2
    assert await _collect(officer, 1, timeout=2.0) == []


async def test_a_receiver_refuses_a_victim_alert_sealed_under_h0(fed: Federation) -> None:
    """A sender that skips the rule (not through the SDK) is caught at the other end."""
    sender = await fed.client("THA/DSI-ATHD")
    officer = await fed.client(OFFICER)
    body = example_victim_alert(0)
    now = sender.clock()
    header = Header(
        id=new_message_id(now, nacl.utils.random(10)),
        type=Alert.TYPE,
        sender=str(sender.principal),
        sender_key=sender.identity.signing.key_id,
        recipients=[OFFICER],
        created=now,
        expires=now + 3_600_000,
        handling=HandlingCode.H0,
        priority=Priority.URGENT,
    )
    content_key = nacl.utils.random(32)
    ct = encrypt_body(body, content_key, nacl.utils.random(24), wire.encode(header))
    sealed = [
        seal_content_key(content_key, sender.keys.encryption_key(fed.principal(OFFICER), now))
    ]
    data = assemble(header, sealed, ct, sender.identity.signing)
    await sender.js.publish(
        subjects.ingress(sender.principal),
        data,
        headers={"Nats-Msg-Id": header.message_id},
        timeout=5,
    )
    refused: list[Refused] = []
    deadline = asyncio.get_running_loop().time() + 20
    while not refused:
        assert asyncio.get_running_loop().time() < deadline
        for item in await officer.fetch(timeout=0.5):
            if isinstance(item, Refused):
                refused.append(item)
            else:
                await item.ack()
                assert isinstance(item.body, Receipt), item.header.type
    assert [(r.message_id, r.error.code) for r in refused] == [
        (header.message_id, "ixb.E_HANDLING")
    ]


async def _collect(client: AgencyClient, want: int, timeout: float = 20.0) -> list[Incoming]:
    got: list[Incoming] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        for item in await client.fetch(timeout=0.5):
            assert not isinstance(item, Refused), item
            await item.ack()
            if not isinstance(item.body, Receipt):
                got.append(item)
    return got
