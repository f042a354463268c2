"""Retention proven on real stores: after ``ixb retention run``, a delivered alert's content
is in no file of the stores it lived in (the officer's SQLite store, each country's
JetStream block files), while its metadata and audit entries remain and still verify."""

from __future__ import annotations

import asyncio
import datetime
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.envelope import decode_envelope
from tests.federation import Federation, run_ixb, running_federation
from transport import streams
from transport.retention import sourced_upto

SENDER = "THA/DSI-ATHD"
OFFICER = "MYS/RMP-ATIPSOM"
MARKER = "EXAMPLE-RETENTION-7f3a narrative: 12 persons seen at the jetty"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


async def ixb(profile: Path | None, *args: str) -> str:
    env = {"IXB_PROFILE": str(profile)} if profile else {}
    done = await run_ixb(*args, **env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def until(check: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


async def ciphertext_slice(fed: Federation, msg_id: str) -> bytes:
    """48 bytes from the middle of the envelope's ciphertext, as MYS's INBOX holds it."""
    mys = fed.hubs["MYS"].hub
    inbox = await mys._js.stream_info(streams.INBOX_STREAM)
    envelopes = [
        decode_envelope(m.data or b"")
        for m in [
            await mys._js.get_msg(streams.INBOX_STREAM, s)
            for s in range(inbox.state.first_seq, inbox.state.last_seq + 1)
        ]
    ]
    ct = next(e.ct for e in envelopes if e.header.message_id == msg_id)
    return ct[len(ct) // 2 : len(ct) // 2 + 48]


async def test_retention_run_leaves_no_content_in_any_store(
    fed: Federation, tmp_path: Path
) -> None:
    sender, officer = fed.deployment.profile(SENDER), fed.deployment.profile(OFFICER)
    text = tmp_path / "narrative.txt"
    text.write_text(MARKER, encoding="utf-8")
    done = await run_ixb(
        "send", "alert", "--json", "--to", OFFICER, "--title", "EXAMPLE jetty",
        "--text-file", str(text), "--category", "trafficking", "--source-grade", "B",
        "--info-grade", "2", IXB_PROFILE=str(sender),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    msg_id = json.loads(done.stdout)["id"]

    received: list[dict[str, object]] = []
    deadline = asyncio.get_running_loop().time() + 30
    while not received:
        assert asyncio.get_running_loop().time() < deadline
        received += json.loads(await ixb(officer, "inbox", "--json", "--wait", "2"))["messages"]
    assert received[0]["id"] == msg_id and MARKER in json.dumps(received[0]["body"])

    needle = await ciphertext_slice(fed, msg_id)
    servers = {c: fed.deployment.plan.node(c).store_dir for c in ("THA", "MYS")}
    for country, store in servers.items():
        assert files_holding(store, needle), f"{country}: the ciphertext is not where expected"

    # the officer's store holds it sealed: a slice of the sealed bytes to look for
    state = officer.with_name("MYS-RMP-ATIPSOM.state")
    with sqlite3.connect(state) as db:
        sealed = db.execute("SELECT content FROM messages WHERE id = ?", (msg_id,)).fetchone()[0]
    sealed_needle = bytes(sealed)[40:88]
    assert files_holding(state.parent, sealed_needle)

    # everything acknowledged along the way: THA's link has been sourced, MYS's hub acked it
    mys, tha = fed.hubs["MYS"].hub, fed.hubs["THA"].hub

    async def settled() -> bool:
        out = await sourced_upto(tha.links["MYS"].nc, "THA", "MYS")
        inn = await mys.links["THA"].js.consumer_info(streams.in_stream("THA"), "HUB")
        box = await mys._js.consumer_info(streams.INBOX_STREAM, "RMP-ATIPSOM")
        return (
            out > 0
            and inn.num_ack_pending == 0
            and inn.num_pending == 0
            and box.num_ack_pending == 0
        )

    await until(settled)

    # within its retention nothing goes
    kept = json.loads(await ixb(None, "retention", "run", "--config",
                                str(fed.deployment.hub_config("MYS")), "--json"))  # fmt: skip
    assert all(s["removed"] == {} for s in kept["streams"]), kept

    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=31)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    removed: dict[str, dict[str, int]] = {}
    unacked: dict[str, int] = {}
    for country in ("THA", "MYS"):
        out = json.loads(await ixb(
            None, "retention", "run", "--config", str(fed.deployment.hub_config(country)),
            "--as-of", later, "--json",
        ))  # fmt: skip
        for s in out["streams"]:
            removed[f"{country}:{s['stream']}"] = s["removed"]
            unacked[f"{country}:{s['stream']}"] = s["unacked"]
    assert removed["MYS:INBOX"].get("alert") == 1, removed
    assert removed["MYS:IN_THA"].get("alert") == 1, removed
    assert removed["THA:OUT_MYS"].get("alert") == 1, removed
    # the sender never fetched its receipts: past retention, but kept until it acks them
    assert unacked["THA:INBOX"] > 0 and "receipt" not in removed["THA:INBOX"], unacked
    human = await ixb(officer, "retention", "run", "--as-of", later)
    assert "removed 1 alert" in human, human

    for country, store in servers.items():
        assert not files_holding(store, needle), f"{country}: ciphertext still on disk"
    assert not files_holding(state.parent, sealed_needle)
    assert not files_holding(state.parent, MARKER.encode())

    # the metadata stays: show names it, its content gone
    shown = json.loads(await ixb(officer, "show", msg_id, "--json"))
    assert (shown["from"], shown["content"], shown["body"]) == (SENDER, "expired", None)
    # and the audit entries of both hubs still verify
    federation = str(fed.deployment.base / "federation.toml")
    for country in ("THA", "MYS"):
        export = tmp_path / f"export-{country}"
        await ixb(None, "audit", "export", "--config", str(fed.deployment.hub_config(country)),
                  "--msg", msg_id, "--out", str(export))  # fmt: skip
        verified = json.loads(
            await ixb(None, "audit", "verify", str(export), "--federation", federation, "--json")
        )
        assert verified["valid"] is True, verified
