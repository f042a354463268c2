"""The liaison pages of a running hub in a real federation (real NATS, two hubs).

The register shows what the peer shared about a message next to this hub's
own entries, and a proof downloaded from the page verifies with ``ixb audit
verify`` and the federation file alone. A message its recipient read shows
"read by" in the register, the trail and ``ixb audit show``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agency_client.sdk import Incoming
from broker.audit.records import StoredEntry
from broker.audit.search import AuditQuery
from broker.liaison import liaison_view
from broker.web.app import setup_liaison
from broker.web.format import utc
from protocols.audit import decode_entry
from protocols.checkpoint import witness_name
from protocols.examples import example_bodies
from protocols.identifiers import format_message_id
from protocols.messages import ReceiptStatus
from tests.federation import Federation, run_ixb, running_federation

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path / "fed") as federation:
        yield federation


async def _until(check: object, timeout: float = 30.0) -> None:
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_the_register_and_a_proof_of_a_running_hub(fed: Federation, tmp_path: Path) -> None:
    sender = await fed.client("THA/DSI-ATHD")
    msg_id_bytes = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    await sender.wait_receipt(msg_id_bytes, ReceiptStatus.DELIVERED)
    msg_id = format_message_id(msg_id_bytes)
    tha = fed.hubs["THA"].hub
    # MYS shares its entries about the message with its checkpoints; MYS cosigns THA's.
    await _until(lambda: any(e.msg_id == msg_id for e in tha.store.peer_entries("MYS")))
    accepted = tha.audit_log.search(AuditQuery(msg_id=msg_id, event="accepted"), limit=1)[0]
    await _until(
        lambda: any(
            w == witness_name("MYS") and size > accepted.index
            for w, size, _, _ in tha.audit_log.cosignatures()
        )
    )
    password = "liaison password 1"
    config = str(fed.deployment.hub_config("THA"))
    added = await run_ixb(
        "hub", "user", "add", "dara", "--role", "liaison", "--config", config,
        IXB_NEW_PASSWORD=password,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    app = web.Application()
    setup_liaison(app, liaison_view(tha))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await _until(lambda: "dara" in liaison_view(tha).users)
        form = await (await client.get("/login")).text()
        m = _CSRF.search(form)
        assert m is not None
        resp = await client.post(
            "/login",
            data={"csrf": m.group(1), "name": "dara", "password": password, "next": ""},
            allow_redirects=False,
        )
        assert resp.status == 303
        body = await (await client.get(f"/audit?q={msg_id[:30]}")).text()
        assert body.count("data-head=") == 1
        row = body[body.index("data-head=") :]
        row = row[: row.index("</tr>")]
        assert re.search(r'<span class="hub">THA</span> <span class="ev ev-accepted">', row)
        assert re.search(r'<span class="hub">MYS</span> <span class="ev ev-delivered">', row)
        assert "delivered at MYS" in row

        page = await (await client.get(f"/audit/proof/{accepted.index}")).text()
        assert re.search(r"cosigned by [A-Z, ]*MYS", page)
        assert re.search(r"<td>MYS</td><td>✔ cosigned</td>", page)
        name = f"ixb-THA-leaf-{accepted.index}"
        resp = await client.get(f"/audit/proof/{accepted.index}/export.zip")
        assert resp.status == 200
        with zipfile.ZipFile(io.BytesIO(await resp.read())) as z:
            z.extractall(tmp_path)
        federation = str(fed.deployment.base / "federation.toml")
        ok = await run_ixb("audit", "verify", str(tmp_path / name), "--federation", federation)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("valid: 1 entries of THA/HUB's log"), ok.stdout
        assert "cosigned by" in ok.stdout and "MYS" in ok.stdout
        reads = tha.audit_log.search(AuditQuery(event="audit_read"), limit=20)
        assert len(reads) >= 2  # the register and the proof page were recorded
        assert tha.audit_log.search(AuditQuery(event="audit_read"), limit=20)
    finally:
        await client.close()


async def _logged_in(
    fed: Federation, app: web.Application
) -> TestClient[web.Request, web.Application]:
    """A client of ``app`` logged in as a liaison officer added with ``ixb hub user add``."""
    password = "liaison password 2"
    config = str(fed.deployment.hub_config("THA"))
    added = await run_ixb(
        "hub", "user", "add", "noi", "--role", "liaison", "--config", config,
        IXB_NEW_PASSWORD=password,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    client = TestClient(TestServer(app))
    await client.start_server()
    await _until(lambda: "noi" in liaison_view(fed.hubs["THA"].hub).users)
    m = _CSRF.search(await (await client.get("/login")).text())
    assert m is not None
    resp = await client.post(
        "/login",
        data={"csrf": m.group(1), "name": "noi", "password": password, "next": ""},
        allow_redirects=False,
    )
    assert resp.status == 303
    return client


async def test_a_message_read_by_its_recipient_shows_read_by_in_the_register(
    fed: Federation,
) -> None:
    sender = await fed.client("THA/DSI-ATHD")
    reader = await fed.client("MYS/RMP-ATIPSOM")
    sent = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    msg_id = format_message_id(sent)
    got: list[Incoming] = []

    async def arrived() -> None:
        while not got:
            got.extend(i for i in await reader.fetch(timeout=0.5) if isinstance(i, Incoming))

    await asyncio.wait_for(arrived(), 20)
    (item,) = got
    await item.ack()
    await reader.send_read_receipt(item)
    await sender.wait_receipt(sent, ReceiptStatus.READ, timeout=20)
    tha = fed.hubs["THA"].hub

    # THA's entries of the receipt are version 2 and name the message it answers
    def linked() -> list[StoredEntry]:
        return tha.audit_log.search(AuditQuery(in_reply_to=msg_id), limit=10)

    # the hub's log is written in batches: the receipt may reach its sender first
    await _until(lambda: "MYS/RMP-ATIPSOM" in {e.sender for e in linked()})
    assert {e.type for e in linked()} == {"receipt"}  # the read, and the hubs' receipts
    assert {decode_entry(e.data).v for e in linked()} == {2}
    read = [e for e in linked() if e.sender == "MYS/RMP-ATIPSOM"]
    (receipt_id,) = {e.msg_id or "" for e in read}
    first_seen = min(e.at_ms for e in read)
    # MYS shares its own entries of the receipt with its next checkpoint
    await _until(lambda: any(e.msg_id == receipt_id for e in tha.store.peer_entries("MYS")))

    app = web.Application()
    setup_liaison(app, liaison_view(tha))
    client = await _logged_in(fed, app)
    try:
        body = await (await client.get(f"/audit?q={msg_id[:30]}")).text()
        assert body.count("data-head=") == 1
        row = body[body.index("data-head=") :]
        row = row[: row.index("</tr>")]
        assert f"<strong>read by MYS/RMP-ATIPSOM at {utc(first_seen)} UTC</strong>" in row
        for hub in ("THA", "MYS"):
            assert re.search(
                rf'<span class="hub">{hub}</span> <span class="ev ev-read">read</span> '
                r'<span class="extra">by MYS/RMP-ATIPSOM</span>',
                row,
            ), hub
        trail = await (await client.get(f"/audit/message/{msg_id}")).text()
        answers = trail.split("Read and answered")[1].split("What the peer hubs shared")[0]
        assert receipt_id in answers and "MYS/RMP-ATIPSOM" in answers
    finally:
        await client.close()

    config = str(fed.deployment.hub_config("THA"))
    shown = await run_ixb("audit", "show", msg_id, "--config", config)
    assert shown.returncode == 0, shown.stderr
    reads = [line for line in shown.stdout.splitlines() if " read " in line]
    assert any("THA/HUB" in line for line in reads), shown.stdout
    assert any("MYS/HUB (shared)" in line for line in reads), shown.stdout
    assert all(f"by MYS/RMP-ATIPSOM (receipt {receipt_id})" in line for line in reads)
    as_json = await run_ixb("audit", "show", msg_id, "--config", config, "--json")
    rows = json.loads(as_json.stdout)["trail"]
    assert {r["by"] for r in rows if r["event"] == "read"} == {"MYS/RMP-ATIPSOM"}
