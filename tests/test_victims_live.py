"""A victim's identity appears in no log, no audit entry and no hub file: an alert naming a
victim crosses two countries (real nats-servers, the officer's CLI as a process), then
every log line, the audit entries of the message and every file under each hub's state
directory are searched for the victim's name and description."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import structlog

from broker.audit.search import AuditQuery
from protocols.examples import example_bodies
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import format_message_id
from protocols.messages import Alert, Subject, SubjectRole
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
