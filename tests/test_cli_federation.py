"""The agency CLI against a running federation, as an officer types it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agency_client.docregistry import DocumentRegistry
from agency_client.sdk import AgencyClient, Incoming
from ixb.demo import REGISTRY, STOLEN_PASSPORT, VALID_PASSPORT
from protocols.messages import DocVerifyRequest
from tests.federation import Federation, run_ixb, running_federation
from tests.test_cli_json import assert_times_iso


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


async def ixb(fed: Federation, agency: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await run_ixb(*args, IXB_PROFILE=str(fed.deployment.profile(agency)))


async def test_officer_checks_documents_from_the_command_line(fed: Federation) -> None:
    registry = DocumentRegistry({(r.issuing_state, r.document_number): r for r in REGISTRY})
    authority = await fed.client("MYS/IMMIGRATION")
    stop = asyncio.Event()

    async def answer(client: AgencyClient, item: Incoming) -> None:
        assert isinstance(item.body, DocVerifyRequest)
        await client.reply(item, registry.answer(item.body, __import__("datetime").date.today()))

    task = asyncio.create_task(authority.serve({"doc.verify.request": answer}, stop))
    try:
        ok = await ixb(fed, "THA/IMMIGRATION", "verify-doc", "--mrz", *VALID_PASSPORT)
        assert ok.returncode == 0, ok.stderr
        echo, answer = ok.stdout.strip().splitlines()
        assert echo.startswith("passport A12345678 (MYS) SAMPLE, SITI AMINAH, expires 2031-01-01")
        assert answer == "MYS/IMMIGRATION: valid"
        # pasted from a reader: both lines in one argument
        pasted = await ixb(
            fed, "THA/IMMIGRATION", "verify-doc", "--json", "--mrz", "\n".join(STOLEN_PASSPORT)
        )
        assert pasted.returncode == 0, pasted.stderr
        stolen = json.loads(pasted.stdout)
        assert stolen["status"] == "reported_stolen"
        assert stolen["document_number"] == "A87654321" and stolen["expired"] is False
        assert stolen["name"] == "EXAMPLE, AHMAD" and stolen["expiry_date"] == "2030-06-15"
        typo = list(VALID_PASSPORT)
        typo[1] = typo[1][:9] + "0" + typo[1][10:]  # wrong document number check digit
        bad = await ixb(fed, "THA/IMMIGRATION", "verify-doc", "--mrz", *typo)
        assert bad.returncode == 2
        assert bad.stderr.startswith("error ixb.E_MRZ_CHECK: ")
        assert "Traceback" not in bad.stderr
    finally:
        stop.set()
        await task


async def test_send_inbox_and_receipts_from_the_command_line(fed: Federation) -> None:
    sent = await ixb(
        fed,
        "THA/DSI-ATHD",
        "send",
        "alert",
        "--json",
        "--to",
        "MYS/RMP-ATIPSOM",
        "--title",
        "EXAMPLE boat sighted",
        "--text",
        "EXAMPLE text",
        "--category",
        "vessel",
        "--source-grade",
        "A",
        "--info-grade",
        "3",
        "--handling",
        "H2",
        "--priority",
        "urgent",
        "--case",
        "THA-1",
    )
    assert sent.returncode == 0, sent.stderr
    chosen = json.loads(sent.stdout)
    msg_id = chosen["id"]
    assert (chosen["category"], chosen["source_grade"], chosen["info_grade"]) == (
        "vessel",
        "A",
        "3",
    )
    inbox = await ixb(fed, "MYS/RMP-ATIPSOM", "inbox", "--json", "--wait", "3")
    assert inbox.returncode == 0, inbox.stderr
    (item,) = json.loads(inbox.stdout)["messages"]
    assert item["id"] == msg_id and item["handling"] == "H2"
    assert item["body"]["title"] == "EXAMPLE boat sighted"
    assert item["via"] == ["THA/HUB", "MYS/HUB"]
    empty = await ixb(fed, "MYS/RMP-ATIPSOM", "inbox", "--wait", "1")
    assert empty.stdout.strip() == "inbox empty"  # acknowledged: not shown twice
    deadline = asyncio.get_running_loop().time() + 20
    statuses: set[str] = set()
    while not {"accepted", "relayed", "delivered", "read"} <= statuses:
        assert asyncio.get_running_loop().time() < deadline, statuses
        receipts = await ixb(fed, "THA/DSI-ATHD", "receipts", "--json", msg_id)
        assert receipts.returncode == 0, receipts.stderr
        receipts_doc = json.loads(receipts.stdout)
        assert receipts_doc["id"] == msg_id
        assert_times_iso(receipts_doc)
        rows = receipts_doc["receipts"]
        statuses = {r["status"] for r in rows}
    # each receipt with its verified signer
    assert {(r["status"], r["signer"]) for r in rows} == {
        ("accepted", "THA/HUB"),
        ("relayed", "THA/HUB"),
        ("delivered", "MYS/HUB"),
        ("read", "MYS/RMP-ATIPSOM"),
    }
    human = await ixb(fed, "THA/DSI-ATHD", "receipts", msg_id, "--wait", "0.5")
    assert "read      signed by MYS/RMP-ATIPSOM" in human.stdout, human.stdout
    grading = ("--category", "other", "--source-grade", "X", "--info-grade", "4")
    human_sent = await ixb(
        fed, "THA/DSI-ATHD", "send", "alert", "--to", "MYS/RMP-ATIPSOM", "--title", "t",
        "--text", "t", *grading,
    )  # fmt: skip
    assert human_sent.returncode == 0, human_sent.stderr
    assert human_sent.stdout.startswith("sent alert ")
    assert human_sent.stdout.rstrip().endswith(
        "to MYS/RMP-ATIPSOM [other, graded X4, H0, normal]"
    ), human_sent.stdout
    unchosen = await ixb(
        fed, "THA/DSI-ATHD", "send", "alert", "--to", "MYS/RMP-ATIPSOM", "--title", "t",
        "--text", "t",
    )  # fmt: skip
    assert unchosen.returncode == 2 and "Traceback" not in unchosen.stderr
    assert unchosen.stderr.startswith("error ixb.E_USAGE: ") and "--category" in unchosen.stderr
    assert len(unchosen.stderr.strip().splitlines()) == 1
    directory = await ixb(fed, "THA/DSI-ATHD", "directory", "ls", "--json")
    assert directory.returncode == 0, directory.stderr
    listing = json.loads(directory.stdout)
    assert_times_iso(listing)  # directory_expires, valid_until
    countries = {row["country"]: row for row in listing["countries"]}
    mys = {a["agency"]: a for a in countries["MYS"]["agencies"]}
    assert mys["MYS/RMP-ATIPSOM"]["addressable"] is True
    assert "trafficking_unit" in mys["MYS/RMP-ATIPSOM"]["roles"]
    assert set(mys["MYS/RMP-ATIPSOM"]["fingerprints"]) == {"signing", "encryption"}
    assert countries["MYS"]["directory_expires"].endswith("Z")
    unauthorised = await ixb(
        fed, "THA/DSI-ATHD", "send", "alert", "--to", "XXA/NOBODY", "--title", "t", "--text", "t",
        *grading,
    )  # fmt: skip
    assert unauthorised.returncode == 2
    assert unauthorised.stderr.startswith("error ixb.E_IDENTIFIER")
