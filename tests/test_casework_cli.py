"""Follow-up decisions and MLA tracking as people act: ``ixb followup`` and ``ixb mla`` as
separate processes, across two countries over real nats-servers and hubs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agency_client.commands import start_serving
from agency_client.sdk import AgencyClient, Incoming
from protocols.identifiers import parse_message_id
from protocols.messages import MlaStatus, MlaStatusCode, PersonQuery, PersonResult
from protocols.roles import Role
from tests.federation import PASSPHRASE, Federation, running_federation
from tests.test_cli_json import one_object

REQUESTER = "THA/DSI-ATHD"
OWNER = "MYS/RMP-ATIPSOM"
THA_CA = "THA/OAG"
MYS_CA = "MYS/AGC"
AGENCIES = {
    REQUESTER: [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
    OWNER: [Role.TRAFFICKING_UNIT],
    THA_CA: [Role.CENTRAL_AUTHORITY],
    MYS_CA: [Role.CENTRAL_AUTHORITY],
}


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path, AGENCIES) as federation:
        yield federation


async def ixb(fed: Federation, agency: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IXB_PASSPHRASE": PASSPHRASE,
        "IXB_PROFILE": str(fed.deployment.profile(agency)),
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ixb", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def obj(fed: Federation, agency: str, *args: str) -> dict[str, Any]:
    return one_object(await ixb(fed, agency, *args, "--json"))


async def refused(fed: Federation, agency: str, *args: str) -> str:
    """The one error line of a command that must fail (exit 2), without a traceback."""
    result = await ixb(fed, agency, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def inbox_until(
    fed: Federation, agency: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """``ixb inbox`` until what arrived so far (every stored message) satisfies ``done``."""
    for _ in range(15):
        # bodies as stored (an mla.request's deadline_ms too): not one_object's time check
        await ixb(fed, agency, "inbox", "--wait", "1")
        listed = await ixb(fed, agency, "inbox", "--all", "--wait", "0", "--json")
        assert listed.returncode == 0, listed.stderr
        everything: list[dict[str, Any]] = json.loads(listed.stdout)["messages"]
        if done(everything):
            return everything
    raise AssertionError(f"{agency}: never arrived")


def replies(messages: list[dict[str, Any]], type_name: str, to: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == type_name and m["in_reply_to"] == to]


@contextlib.asynccontextmanager
async def answering_with_hit(fed: Federation, reference: str) -> AsyncIterator[None]:
    """The owner's automated side, as ``ixb agency respond`` runs it: person queries are
    answered with a hit (no personal data), over the synchronous path (SPEC §14)."""
    client = await fed.client(OWNER)

    async def hit(c: AgencyClient, item: Incoming) -> None:
        await c.reply(item, PersonResult(hit=True, reference=reference))

    stop = asyncio.Event()
    serving = await start_serving(client, {PersonQuery.TYPE: hit}, stop, 1)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(serving, timeout=30)


async def test_followup_approved_refused_and_decided_once(fed: Federation, tmp_path: Path) -> None:
    # a hit first: the requester's query is answered by the owner's automated side
    async with answering_with_hit(fed, "MYS-RMP-REF-0042"):
        asked = await obj(
            fed, REQUESTER, "query", "person", "--to", OWNER, "--surname", "DOE",
            "--birth-date", "1990-01-01", "--purpose", "trafficking investigation",
            "--legal-basis", "ASEAN MLAT art. 1",
        )  # fmt: skip
    hit = asked["results"][0]
    assert hit["hit"] and hit["reference"] == "MYS-RMP-REF-0042"

    approved = await obj(
        fed, REQUESTER, "followup", "request", "--hit", hit["answer_id"],
        "--legal-basis", "ASEAN MLAT art. 1", "--purpose", "trafficking investigation",
        "--text", "identity and travel history of the subject", "--case", "THA-DSI-2026-0412",
    )  # fmt: skip
    assert approved["to"] == OWNER and approved["reference"] == "MYS-RMP-REF-0042"
    to_refuse = await obj(
        fed, REQUESTER, "followup", "request", "--to", OWNER, "--reference", "MYS-RMP-REF-0042",
        "--legal-basis", "none given", "--purpose", "curiosity", "--text", "everything",
    )  # fmt: skip

    # the owner lists what waits: who, when, purpose, legal basis, due
    await inbox_until(fed, OWNER, lambda ms: sum(m["type"] == "followup.request" for m in ms) == 2)
    waiting = (await obj(fed, OWNER, "followup", "list"))["requests"]
    assert {r["id"] for r in waiting} == {approved["id"], to_refuse["id"]}
    first = next(r for r in waiting if r["id"] == approved["id"])
    assert first["peer"] == REQUESTER and first["state"] == "pending"
    assert first["purpose"] == "trafficking investigation"
    assert first["legal_basis"] == "ASEAN MLAT art. 1"
    assert first["due"] and first["case_ref"] == "THA-DSI-2026-0412"

    # incomplete decisions are refused before anything is sent
    line = await refused(fed, OWNER, "followup", "decide", approved["id"], "approve",
                         "--officer", "Insp. Aziz")  # fmt: skip
    assert line.startswith("error ixb.E_USAGE:") and "--release-text" in line
    line = await refused(
        fed, OWNER, "followup", "decide", to_refuse["id"], "refuse", "--officer", "Insp. Aziz",
        "--reason", "no", "--release-text", "x",
    )  # fmt: skip
    assert "releases nothing" in line

    release = tmp_path / "release.txt"
    release.write_text("DOE, JOHN; entered MYS 2026-10-02 via Bukit Kayu Hitam\n", "utf-8")
    decided = await obj(
        fed, OWNER, "followup", "decide", approved["id"], "approve", "--officer", "Insp. Aziz",
        "--release-file", str(release), "--handling", "H2",
    )  # fmt: skip
    assert decided["decision"] == "approved" and decided["handling"] == "H2"
    await obj(
        fed, OWNER, "followup", "decide", to_refuse["id"], "refuse", "--officer", "Insp. Aziz",
        "--reason", "no legal basis for this purpose",
    )  # fmt: skip

    # deciding twice: one line, nothing sent
    line = await refused(fed, OWNER, "followup", "decide", approved["id"], "refuse",
                         "--officer", "Insp. Other", "--reason", "changed my mind")  # fmt: skip
    assert line.startswith("error ixb.E_TRANSITION:") and "decided already" in line
    assert "approved by Insp. Aziz" in line
    assert (await obj(fed, OWNER, "followup", "list"))["requests"] == []
    assert len((await obj(fed, OWNER, "followup", "list", "--all"))["requests"]) == 2

    # the requester sees each decision: the release under H2, the refusal with nothing
    got = await inbox_until(
        fed, REQUESTER,
        lambda ms: bool(replies(ms, "followup.decision", approved["id"])
                        and replies(ms, "followup.decision", to_refuse["id"])),
    )  # fmt: skip
    released = replies(got, "followup.decision", approved["id"])
    assert len(released) == 1 and released[0]["handling"] == "H2"
    assert released[0]["body"]["decision"] == "approved"
    assert released[0]["body"]["decided_by"] == "Insp. Aziz"
    assert "Bukit Kayu Hitam" in released[0]["body"]["released"]
    refusal = replies(got, "followup.decision", to_refuse["id"])
    assert len(refusal) == 1
    assert refusal[0]["body"]["decision"] == "refused"
    assert refusal[0]["body"]["reason"] == "no legal basis for this purpose"
    assert refusal[0]["body"].get("released") is None
    shown = await obj(fed, REQUESTER, "show", released[0]["id"])
    assert shown["in_reply_to"] == approved["id"]

    sent = {r["id"]: r for r in (await obj(fed, REQUESTER, "followup", "list", "--sent"))["sent"]}
    assert sent[approved["id"]]["state"] == "approved"
    assert sent[to_refuse["id"]]["state"] == "refused"
    assert not sent[approved["id"]]["open"]
    human = (await ixb(fed, REQUESTER, "followup", "list", "--sent")).stdout
    assert "[approved by Insp. Aziz]" in human and "[refused by Insp. Aziz]" in human


async def test_mla_tracked_at_both_sides_and_illegal_transitions_refused(
    fed: Federation,
) -> None:
    sent = await obj(
        fed, THA_CA, "mla", "request", "--to", MYS_CA, "--legal-basis", "ASEAN MLAT art. 1",
        "--measure", "bank_records", "--measure", "witness_testimony",
        "--summary", "Proceeds of trafficking moved through accounts in Penang.",
        "--contact", "OAG international desk", "--urgency", "high", "--case", "THA-OAG-MLA-31",
    )  # fmt: skip
    mla_id = sent["id"]
    assert sent["priority"] == "high" and sent["state"] == "new"

    # the requested authority holds it once fetched; the requester may not move it
    await inbox_until(fed, MYS_CA, lambda ms: any(m["id"] == mla_id for m in ms))
    line = await refused(fed, THA_CA, "mla", "status", mla_id, "acknowledged")
    assert line.startswith("error ixb.E_UNAUTHORISED:") and "only withdraw" in line

    await obj(fed, MYS_CA, "mla", "status", mla_id, "received")
    line = await refused(fed, MYS_CA, "mla", "status", mla_id, "executed")
    assert line == (
        "error ixb.E_TRANSITION: MLA status: received cannot become executed "
        "(allowed: acknowledged, refused, withdrawn)"
    )
    await obj(fed, MYS_CA, "mla", "status", mla_id, "acknowledged", "--note", "to prosecutor Lim")
    await obj(fed, MYS_CA, "mla", "status", mla_id, "in_execution")
    done = await obj(fed, MYS_CA, "mla", "status", mla_id, "executed", "--note", "records sent")
    assert done["previous"] == "in_execution" and done["status"] == "executed"
    line = await refused(fed, MYS_CA, "mla", "status", mla_id, "in_execution")
    assert line.startswith("error ixb.E_TRANSITION: MLA status: executed is final")
    line = await refused(fed, MYS_CA, "mla", "status", mla_id, "refused")
    assert line.startswith("error ixb.E_USAGE:") and "--reason" in line

    steps = ["new", "received", "acknowledged", "in_execution", "executed"]
    owner_view = await obj(fed, MYS_CA, "mla", "show", mla_id)
    assert [h["state"] for h in owner_view["history"]] == steps
    assert owner_view["direction"] == "received" and owner_view["peer"] == THA_CA

    await inbox_until(fed, THA_CA, lambda ms: len(replies(ms, "mla.status", mla_id)) >= 4)
    view = await obj(fed, THA_CA, "mla", "show", mla_id)
    assert [h["state"] for h in view["history"]] == steps  # the refused ones were never sent
    assert view["state"] == "executed" and view["flagged"] == 0 and not view["open"]
    assert [h["by"] for h in view["history"][1:]] == [MYS_CA] * 4
    assert view["history"][2]["note"] == "to prosecutor Lim"
    assert view["measures"] == ["bank_records", "witness_testimony"]
    assert (await obj(fed, THA_CA, "mla", "list", "--open"))["requests"] == []
    human = (await ixb(fed, THA_CA, "mla", "show", mla_id)).stdout
    assert "executed" in human and "by MYS/AGC" in human

    await out_of_order_kept_flagged_then_withdrawn(fed)


async def out_of_order_kept_flagged_then_withdrawn(fed: Federation) -> None:
    # a status out of order from the other side is kept, flagged, not applied
    sent = await obj(
        fed, THA_CA, "mla", "request", "--to", MYS_CA, "--legal-basis", "bilateral treaty",
        "--measure", "identify_persons", "--summary", "who rents the boat", "--contact", "OAG desk",
    )  # fmt: skip
    second = sent["id"]
    agc = await fed.client(MYS_CA)
    await agc.send(
        MlaStatus(status=MlaStatusCode.EXECUTED), [THA_CA], in_reply_to=parse_message_id(second)
    )
    await inbox_until(fed, THA_CA, lambda ms: bool(replies(ms, "mla.status", second)))
    view = await obj(fed, THA_CA, "mla", "show", second)
    assert view["state"] == "new" and view["flagged"] == 1
    flagged = view["history"][-1]
    assert flagged["state"] == "executed" and "ixb.E_TRANSITION" in flagged["flagged"]
    listed = (await obj(fed, THA_CA, "mla", "list", "--open"))["requests"]
    assert [(r["id"], r["state"], r["flagged"]) for r in listed] == [(second, "new", 1)]
    assert "FLAGGED" in (await ixb(fed, THA_CA, "mla", "show", second)).stdout

    # the requester withdraws (once received: the state machine starts there); seen there
    line = await refused(fed, THA_CA, "mla", "status", second, "withdrawn")
    assert line.endswith("the first status must be received, not withdrawn")
    await inbox_until(fed, MYS_CA, lambda ms: any(m["id"] == second for m in ms))
    await obj(fed, MYS_CA, "mla", "status", second, "received")
    await inbox_until(fed, THA_CA, lambda ms: len(replies(ms, "mla.status", second)) == 2)
    assert (await obj(fed, THA_CA, "mla", "show", second))["state"] == "received"
    await obj(fed, THA_CA, "mla", "status", second, "withdrawn", "--reason", "suspect arrested")
    await inbox_until(fed, MYS_CA, lambda ms: bool(replies(ms, "mla.status", second)))
    theirs = await obj(fed, MYS_CA, "mla", "show", second)
    assert theirs["state"] == "withdrawn" and theirs["history"][-1]["by"] == THA_CA
    assert json.dumps(theirs)  # plain JSON
