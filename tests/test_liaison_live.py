"""The liaison pages of a running hub in a real federation (real NATS, two hubs).

The register shows what the peer shared about a message next to this hub's
own entries, and a proof downloaded from the page verifies with ``ixb audit
verify`` and the federation file alone.
"""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.audit.search import AuditQuery
from broker.liaison import liaison_view
from broker.web.app import setup_liaison
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
