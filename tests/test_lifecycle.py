"""Agencies and liaison users changed on running hubs, by the operator's commands, no restart.

Real nats-servers, three real hubs (tests/federation.py); the commands run as
separate ``ixb`` processes, as an operator would run them.
"""

from __future__ import annotations

import asyncio
import gc
import getpass
import re
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agency_client.profile import load_profile
from agency_client.sdk import load_identity_for
from broker.audit.search import AuditQuery
from broker.liaison import liaison_view
from broker.plan import Publish
from broker.web.app import setup_liaison
from protocols import subjects
from protocols.audit import decode_entry
from protocols.envelope import add_hop, decode_envelope, seal_envelope
from protocols.errors import RevokedError
from protocols.examples import example_bodies
from protocols.messages import ReceiptStatus
from protocols.roles import Role
from tests.federation import PASSPHRASE, Federation, run_ixb, running_federation
from tests.test_federation import (
    assert_nothing_arrives,
    collect,
    refusal_logged,
    rejection_for,
)
from transport.clock import wall_ms

REVOCATION_LIMIT_MS = 5_000


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


async def _ixb_hub(fed: Federation, country: str, *args: str, **env: str) -> str:
    config = str(fed.deployment.hub_config(country))
    done = await run_ixb("hub", *args, "--config", config, **env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


async def test_revocation_reaches_every_hub_in_seconds_without_restart(fed: Federation) -> None:
    agency = fed.principal("THA/DSI-ATHD")
    sender = await fed.client("THA/DSI-ATHD")
    receiver = await fed.client("MYS/RMP-ATIPSOM")
    before = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    await sender.wait_receipt(before, ReceiptStatus.DELIVERED)
    tasks = {c: r.task for c, r in fed.hubs.items()}

    refused_at: dict[str, int] = {}

    async def watch() -> None:
        while len(refused_at) < len(fed.hubs):
            now = wall_ms()
            for country, running in fed.hubs.items():
                if country in refused_at:
                    continue
                try:
                    running.hub.keys.roles(agency, now)
                except RevokedError:
                    refused_at[country] = now
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    out = await _ixb_hub(
        fed, "THA", "agency", "revoke", "THA/DSI-ATHD", "--reason", "laptop stolen"
    )
    assert "revoked" in out and "applied by the running hub" in out
    await asyncio.wait_for(watcher, timeout=REVOCATION_LIMIT_MS / 1000)

    revoked = fed.hubs["THA"].hub.keys.entry(agency).revoked
    assert revoked is not None and revoked.reason == "laptop stolen"
    took = {c: at - revoked.at for c, at in refused_at.items()}
    slowest = max(took.values())
    line = f"revocation in force at every hub after {slowest} ms ({took})"
    print(line)
    assert slowest < REVOCATION_LIMIT_MS
    for running in fed.hubs.values():  # the same directory everywhere
        entry = running.hub.keys.entry(agency)
        assert entry.revoked == revoked

    # an envelope signed now: refused, with a signed receipt and an audit entry
    assert len(await collect(receiver, 1)) == 1  # the alert sent before
    msg_id = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    refusal = await sender.wait_receipt(msg_id, ReceiptStatus.REJECTED, timeout=15)
    assert refusal.receipt.code == "ixb.E_REVOKED"
    assert str(refusal.signer) == "THA/HUB"  # verified against THA's hub key
    await assert_nothing_arrives(receiver)
    tha = fed.hubs["THA"].hub.audit_log
    rejected = tha.search(AuditQuery(event="rejected", agency="THA/DSI-ATHD"))
    assert [e.code for e in rejected] == ["ixb.E_REVOKED"]
    changed = tha.search(AuditQuery(event="policy_changed"))
    assert len(changed) == 1
    # the operator's change, named, and the new directory everywhere
    for country, running in fed.hubs.items():
        log = running.hub.audit_log
        event = "directory_published" if country == "THA" else "directory_installed"
        assert log.search(AuditQuery(event=event), limit=100)
        assert running.task is tasks[country] and not running.task.done()
        assert len(log.search(AuditQuery(event="hub_started"), limit=5)) == 1
    assert _actor() in (await _show_policy_changes(fed))


async def _show_policy_changes(fed: Federation) -> str:
    entries = fed.hubs["THA"].hub.audit_log.search(AuditQuery(event="policy_changed"))
    decoded = [decode_entry(e.data) for e in entries]
    return " | ".join(f"{e.actor} {e.detail}" for e in decoded)


async def test_roles_change_live(fed: Federation) -> None:
    agency = fed.principal("THA/IMMIGRATION")
    officer = await fed.client("THA/IMMIGRATION")
    query = example_bodies(0)["person.query"]
    refused = await officer.send(query, ["MYS/RMP-ATIPSOM"])
    assert (await rejection_for(officer, refused)).code == "ixb.E_UNAUTHORISED"

    await _ixb_hub(
        fed,
        "THA",
        "agency",
        "roles",
        "THA/IMMIGRATION",
        "--role",
        "immigration",
        "--role",
        "investigator",
    )
    deadline = asyncio.get_running_loop().time() + 5
    while any(
        Role.INVESTIGATOR not in r.hub.keys.roles(agency, wall_ms()) for r in fed.hubs.values()
    ):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    allowed = await officer.send(query, ["MYS/RMP-ATIPSOM"])
    await officer.wait_receipt(allowed, ReceiptStatus.DELIVERED)
    assert "roles: immigration,investigator" in await _show_policy_changes(fed)
    listing = await _ixb_hub(fed, "THA", "agency", "list")
    assert re.search(r"THA/IMMIGRATION\s+active\s+immigration,investigator", listing)


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _login(client: TestClient[web.Request, web.Application], name: str, pw: str) -> int:
    page = await client.get("/login")
    m = _CSRF.search(await page.text())
    assert m is not None
    resp = await client.post(
        "/login",
        data={"csrf": m.group(1), "name": name, "password": pw, "next": ""},
        allow_redirects=False,
    )
    return resp.status


async def test_liaison_users_change_live(fed: Federation) -> None:
    hub = fed.hubs["THA"].hub
    app = web.Application()
    setup_liaison(app, liaison_view(hub))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        first, second = "first password 1", "second password 2"
        assert await _login(client, "dara", first) != 303
        await _ixb_hub(
            fed, "THA", "user", "add", "dara", "--role", "liaison", IXB_NEW_PASSWORD=first
        )
        assert await _login(client, "dara", first) == 303
        assert (await client.get("/audit")).status == 200

        await _ixb_hub(fed, "THA", "user", "passwd", "dara", IXB_NEW_PASSWORD=second)
        page = await client.get("/audit", allow_redirects=False)
        assert page.status != 200  # the old password's session ended
        assert await _login(client, "dara", first) != 303
        assert await _login(client, "dara", second) == 303

        await _ixb_hub(fed, "THA", "user", "remove", "dara")
        assert (await client.get("/audit", allow_redirects=False)).status != 200
        assert await _login(client, "dara", second) != 303
    finally:
        await client.close()
    changes = await _show_policy_changes(fed)
    for what in ("user dara added (liaison)", "user dara password changed", "user dara removed"):
        assert f"{_actor()} {what}" in changes


async def test_operator_mistakes_are_one_line(fed: Federation) -> None:
    config = str(fed.deployment.hub_config("THA"))
    cases = [
        (("agency", "revoke", "THA/NOBODY", "--reason", "x"), "not an agency of THA/HUB"),
        (("agency", "revoke", "MYS/IMMIGRATION", "--reason", "x"), "not an agency of THA"),
        (("agency", "roles", "THA/IMMIGRATION", "--role", "wizard"), "unknown role 'wizard'"),
        (("user", "remove", "nobody"), "no user nobody"),
        (("agency", "show", "not-an-id"), "ixb.E_"),
    ]
    for args, text in cases:
        done = await run_ixb("hub", *args, "--config", config)
        assert done.returncode == 2, (args, done.stdout)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error ixb.E_"), done.stderr
        assert text in lines[0], (args, lines)


async def test_peer_hubs_refuse_the_revoked_agency_too(fed: Federation) -> None:
    """An envelope of the revoked agency that its own hub relayed anyway (as a hub that had
    not applied the revocation yet would) is refused at MYS and MMR: E_REVOKED and an audit
    entry there. Their rejection receipt is not sent: nothing is sealed to a revoked
    agency's keys (SPEC §12 rule 2.4); its own hub's E_REVOKED receipt is the one it gets."""
    identity = load_identity_for(load_profile(fed.deployment.profile("THA/DSI-ATHD")), PASSPHRASE)
    await _ixb_hub(fed, "THA", "agency", "revoke", "THA/DSI-ATHD", "--reason", "seized")
    agency = fed.principal("THA/DSI-ATHD")
    deadline = asyncio.get_running_loop().time() + 5
    while any(r.hub.keys.entry(agency).revoked is None for r in fed.hubs.values()):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    tha = fed.hubs["THA"].hub
    for peer, recipient in (("MYS", "MYS/RMP-ATIPSOM"), ("MMR", "MMR/MOHA-ATTU")):
        now = wall_ms()
        recipient_key = fed.hubs[peer].hub.keys.encryption_key(fed.principal(recipient), now)
        sealed = seal_envelope(
            sender=identity,
            recipients=[recipient_key],
            body=example_bodies(now)["alert"],
            now_ms=now,
            ttl_ms=3_600_000,
        )
        relayed = add_hop(decode_envelope(sealed), tha.identity, now).to_bytes()
        msg_id = decode_envelope(sealed).header.id
        await tha._publish(
            Publish(
                subjects.cross_border("THA", peer), relayed, f"test:{peer}", frozenset(), peer=peer
            )
        )
        assert await refusal_logged(fed, peer, msg_id) == {"ixb.E_REVOKED"}
        receiver = await fed.client(recipient)
        await assert_nothing_arrives(receiver)
    # a restart keeps the revocation, at the same time, and applies no change twice
    revoked = tha.keys.entry(agency).revoked
    await fed.stop_hub("THA")
    restarted = await fed.start_hub("THA")
    assert restarted.keys.entry(agency).revoked == revoked
    changes = restarted.audit_log.search(AuditQuery(event="policy_changed"))
    assert len(changes) == 1


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # nats-py's, see below
async def test_revocation_can_close_the_agencys_nats_connections(fed: Federation) -> None:
    revoked = await fed.client("THA/DSI-ATHD")
    other = await fed.client("THA/IMMIGRATION")
    assert revoked.nc.is_connected
    out = await _ixb_hub(
        fed,
        "THA",
        "agency",
        "revoke",
        "THA/DSI-ATHD",
        "--reason",
        "seized",
        "--nats-plan",
        str(fed.deployment.base / "plan.json"),
        # no --nats-pid: found in the pid_file the server's config names
    )
    assert "NATS user removed" in out and "its connections are closed" in out
    nkey = fed.deployment.plan.nkeys["THA/agency/DSI-ATHD"]
    assert nkey not in fed.deployment.plan.node("THA").config_path.read_text()
    deadline = asyncio.get_running_loop().time() + 5
    while revoked.nc.is_connected:
        assert asyncio.get_running_loop().time() < deadline, "still connected"
        await asyncio.sleep(0.05)
    # nats-py leaves the socket the server closed (authorization violation) to the
    # garbage collector: collect it here, its ResourceWarning is not ours
    fed.clients.remove(revoked)
    await revoked.nc.close()  # stops its reconnecting at once (a drain would wait for it)
    await revoked.close()
    del revoked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    # the others keep their connections and their service
    msg_id = await other.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    await other.wait_receipt(msg_id, ReceiptStatus.DELIVERED)
    assert other.nc.is_connected


async def test_a_change_made_while_the_hub_is_down_applies_when_it_starts(
    fed: Federation,
) -> None:
    agency = fed.principal("THA/IMMIGRATION")
    await fed.stop_hub("THA")
    out = await _ixb_hub(
        fed,
        "THA",
        "agency",
        "roles",
        "THA/IMMIGRATION",
        "--role",
        "immigration",
        "--role",
        "investigator",
    )
    assert "the hub applies it when it runs" in out
    hub = await fed.start_hub("THA")
    assert Role.INVESTIGATOR in hub.keys.roles(agency, wall_ms())
    deadline = asyncio.get_running_loop().time() + 5
    while Role.INVESTIGATOR not in fed.hubs["MYS"].hub.keys.roles(agency, wall_ms()):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert f"{_actor()} agency THA/IMMIGRATION roles" in await _show_policy_changes(fed)
