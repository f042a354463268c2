"""Lookups on the synchronous path (SPEC §14) across real nats-servers and hubs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agency_client.docregistry import DocumentRegistry
from agency_client.sdk import AgencyClient, Incoming
from ixb.demo import REGISTRY, STOLEN_PASSPORT, VALID_PASSPORT
from protocols.handling import Priority
from protocols.identifiers import format_message_id
from protocols.messages import (
    DocPurpose,
    DocVerifyRequest,
    DocVerifyResponse,
)
from tests.federation import Federation, running_federation

TODAY = datetime.now(UTC).date()


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
    finally:
        stop.set()
        await task
