"""Key rotation under continuous traffic, on a running federation: nothing valid is refused,
nothing is lost, and no hub restarts.

THA/DSI-ATHD and MYS/RMP-ATIPSOM send to each other throughout. THA/DSI-ATHD runs
``ixb keys rotate`` (its client, restarted as after any key change, holds both key
sets), messages sealed to its old encryption key wait unread in its inbox, then THA's
operator runs ``ixb hub agency rotate``. Every message is delivered and opened.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from agency_client.enckeys import open_key_file
from agency_client.profile import load_profile
from agency_client.sdk import (
    AgencyClient,
    Incoming,
    load_identity_for,
    load_previous_for,
    previous_key_file,
)
from broker.audit.search import AuditQuery
from protocols.examples import example_bodies
from protocols.identifiers import format_message_id
from protocols.keys import KeyAlg, key_id, open_keyfile_history
from protocols.messages import ReceiptStatus
from tests.federation import PASSPHRASE, Federation, drain_into, run_ixb, running_federation
from tests.test_cli import assert_one_line_error
from transport.clock import wall_ms


async def _client(fed: Federation, agency: str) -> AgencyClient:
    profile = load_profile(fed.deployment.profile(agency))
    client = await AgencyClient.connect(
        profile,
        load_identity_for(profile, PASSPHRASE),
        previous=load_previous_for(profile, PASSPHRASE),
    )
    fed.clients.append(client)
    return client


async def test_rotation_under_traffic_refuses_and_loses_nothing(tmp_path: Path) -> None:
    async with running_federation(tmp_path) as fed:
        tha = await _client(fed, "THA/DSI-ATHD")
        mys = await _client(fed, "MYS/RMP-ATIPSOM")
        mys.directory_refresh_s = 2.0  # (30 s by default) sees THA's new keys during the test
        old_enc = tha.identity.public().encryption
        tasks = {c: r.task for c, r in fed.hubs.items()}
        sent_by_tha: list[bytes] = []
        sent_by_mys: list[bytes] = []
        got_at_tha: dict[str, Incoming] = {}
        got_at_mys: dict[str, Incoming] = {}
        stop = asyncio.Event()
        sender: dict[str, AgencyClient] = {"THA": tha}

        async def traffic() -> None:
            while not stop.is_set():
                sent_by_tha.append(
                    await sender["THA"].send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
                )
                sent_by_mys.append(await mys.send(example_bodies(0)["alert"], ["THA/DSI-ATHD"]))
                await asyncio.sleep(0.05)

        flow = asyncio.create_task(traffic())
        try:
            await _rotate(fed, tha, sender, got_at_tha)
        finally:
            stop.set()
            await flow
        tha2 = sender["THA"]
        await drain_into(tha2, got_at_tha, 3.0)
        await drain_into(mys, got_at_mys, 3.0)
        _check(fed, tha2, old_enc or b"", sent_by_tha, sent_by_mys, got_at_tha, got_at_mys)
        await _previous_keys_go(fed, old_enc or b"")
        assert all(fed.hubs[c].task is t and not t.done() for c, t in tasks.items())
        print(
            f"rotation under traffic: {len(sent_by_tha)} + {len(sent_by_mys)} messages, "
            "none refused, none lost"
        )


async def _rotate(
    fed: Federation,
    tha: AgencyClient,
    sender: dict[str, AgencyClient],
    got_at_tha: dict[str, Incoming],
) -> None:
    tha_profile = fed.deployment.profile("THA/DSI-ATHD")
    old_enc = tha.identity.public().encryption
    await asyncio.sleep(1.0)
    # 1. the agency makes new keys; its client restarts holding both
    done = await run_ixb("keys", "rotate", "--profile", str(tha_profile))
    assert done.returncode == 0, done.stderr
    tha2 = await _client(fed, "THA/DSI-ATHD")
    assert tha2.identity.public().encryption == old_enc  # hub lists the old keys still
    assert tha2.identity.nats == tha.identity.nats != ()  # the NATS nkey stays: the server knows it
    sender["THA"] = tha2
    await drain_into(tha, got_at_tha, 0.5)  # the old process reads what it had, then stops
    await asyncio.sleep(1.0)  # sealed to the old key, waiting unread in the inbox
    # 2. the operator moves the agency to its new keys while traffic flows
    profile = load_profile(tha_profile)
    request = profile.path(profile.agency.key_file).with_name("THA-DSI-ATHD.rotate")
    done = await run_ixb(
        "hub",
        "agency",
        "rotate",
        "THA/DSI-ATHD",
        "--request",
        str(request),
        "--config",
        str(fed.deployment.hub_config("THA")),
    )
    assert done.returncode == 0, done.stderr
    await asyncio.sleep(3.0)
    await drain_into(tha2, got_at_tha, 1.0)
    await asyncio.sleep(6.0)  # past ROTATION_CHECK_S: the sender notices the new keys


async def _previous_keys_go(fed: Federation, old_enc: bytes) -> None:
    """The replaced set: its encryption key kept as retired in the new key file (destroyed
    after drain and grace, tests/test_forward_secrecy.py), the ``.previous`` file removed
    by the first client holding the key file once the hub lists the new keys; until then a
    second rotation is refused."""
    profile = load_profile(fed.deployment.profile("THA/DSI-ATHD"))
    key_file = profile.path(profile.agency.key_file)
    assert previous_key_file(key_file).exists()
    again = await run_ixb(
        "keys", "rotate", "--profile", str(fed.deployment.profile("THA/DSI-ATHD"))
    )
    assert_one_line_error(again, "ixb.E_USAGE")
    assert "the last rotation is not finished" in again.stderr
    _, history, _ = open_keyfile_history(key_file.read_bytes(), PASSPHRASE)
    assert old_enc in {r.key.public for r in history.retired}
    held = open_key_file(profile, PASSPHRASE, wall_ms())
    client = await AgencyClient.connect(
        profile,
        held.state.identity,
        previous=load_previous_for(profile, PASSPHRASE),
        key_file=held,
    )
    fed.clients.append(client)
    assert not previous_key_file(key_file).exists()
    assert len(client.held_keys) == 1


def _check(  # noqa: PLR0917
    fed: Federation,
    tha2: AgencyClient,
    old_enc: bytes,
    sent_by_tha: list[bytes],
    sent_by_mys: list[bytes],
    got_at_tha: dict[str, Incoming],
    got_at_mys: dict[str, Incoming],
) -> None:
    new_enc = tha2.keys.entry(tha2.principal).encryption_key
    assert new_enc != old_enc
    assert tha2.identity.public().encryption == new_enc  # signs with the new keys now
    # nothing lost: every message arrived and opened; nothing refused
    assert {format_message_id(i) for i in sent_by_mys} <= set(got_at_tha)
    assert {format_message_id(i) for i in sent_by_tha} <= set(got_at_mys)
    for msg_id in sent_by_tha:
        with contextlib.suppress(KeyError):
            assert not [
                r
                for r in tha2.receipts[format_message_id(msg_id)]
                if r.receipt.status is ReceiptStatus.REJECTED
            ]
    # both key sets were in use: messages sealed to the old and to the new encryption key
    sealed_to = {
        next(s.key_id for s in item.envelope.sealed_keys if s.recipient == "THA/DSI-ATHD")
        for item in got_at_tha.values()
    }
    assert sealed_to == {key_id(KeyAlg.X25519, old_enc), key_id(KeyAlg.X25519, new_enc)}
    signers = {item.header.sender_key for item in got_at_mys.values()}
    assert len(signers) == 2  # the old signing key, then the new one
    for r in fed.hubs.values():
        assert not r.hub.audit_log.search(AuditQuery(event="rejected"), limit=5)
