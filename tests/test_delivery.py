"""Nothing let in twice, nothing lost: delivery under faults, on real nats-servers and hubs.

- a send the hub never confirmed is reported as of unknown outcome, and its
  retry (same bytes, same ``Nats-Msg-Id``) is stored and delivered once;
- a message the application handled is not handed over again when its ack
  was lost, even after the agency's process restarted;
- a message stranded in a dead connection (an agency's, a hub worker's) comes
  back within seconds, not after a 30 s ack wait; slow work keeps it;
- an outage logs one line per change of state, not one per retry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from agency_client import sdk
from agency_client.commands import _keep_for_retry
from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, Incoming, load_identity_for
from broker.natsd import NatsServer
from protocols import subjects
from protocols.envelope import decode_envelope, seal_envelope
from protocols.errors import UnknownOutcomeError
from protocols.examples import example_bodies
from protocols.identifiers import Principal, format_message_id, parse_agency
from protocols.roles import Role
from tests.federation import PASSPHRASE, Federation, run_ixb, running_federation
from tests.nats_fixtures import eventually, tls_plan
from transport import streams
from transport.connect import connect

SENDER = "THA/DSI-ATHD"
RECEIVER = "MYS/RMP-ATIPSOM"
STRANDED_BACK_WITHIN_S = 10.0
"""Twice the new ack wait: before, a stranded message waited the full 30 s."""


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


async def client_with(fed: Federation, agency: str, handled_path: Path) -> AgencyClient:
    profile = load_profile(fed.deployment.profile(agency))
    client = await AgencyClient.connect(
        profile, load_identity_for(profile, PASSPHRASE), handled_path=handled_path
    )
    fed.clients.append(client)
    return client


async def receive(client: AgencyClient, msg_id: bytes, timeout: float) -> Incoming:
    """Fetch until the message ``msg_id`` arrives (acking anything else), unacked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in await client.fetch(timeout=0.5):
            assert isinstance(item, Incoming), item
            if item.header.id == msg_id:
                return item
            await item.ack()
    raise AssertionError(f"message not received within {timeout:g} s")


async def copies(client: AgencyClient, msg_id: bytes, seconds: float) -> int:
    """How many times ``msg_id`` is handed over within ``seconds`` (each acked)."""
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for item in await client.fetch(timeout=0.5):
            assert isinstance(item, Incoming), item
            count += item.header.id == msg_id
            await item.ack()
    return count


async def test_an_unconfirmed_send_is_unknown_and_its_retry_is_stored_and_delivered_once(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = await fed.client(SENDER)
    receiver = await fed.client(RECEIVER)
    monkeypatch.setattr(sdk, "PUBLISH_TIMEOUT_S", 0.5)
    monkeypatch.setattr(sdk, "PUBLISH_ATTEMPTS", 2)
    await fed.servers["THA"].stop()

    async def disconnected() -> bool:
        return not sender.nc.is_connected

    await eventually(disconnected, 10, "the sender noticed the outage")
    with pytest.raises(UnknownOutcomeError) as info:
        await sender.send(example_bodies(0)["alert"], [RECEIVER])
    error = info.value
    assert error.code == "ixb.E_UNKNOWN_OUTCOME"
    assert decode_envelope(error.sealed).header.id == error.message_id

    # nats-py sends the attempts it buffered once it reconnects: the first got through
    await fed.servers["THA"].start()

    async def connected() -> bool:
        return sender.nc.is_connected

    await eventually(connected, 20, "the sender reconnected")
    assert await sender.resend(error.sealed) is True  # JetStream had it: not stored twice
    first = await receive(receiver, error.message_id, timeout=60)
    await first.ack()
    assert await copies(receiver, error.message_id, 3.0) == 0


async def test_a_message_handled_before_a_restart_is_not_handed_over_again(
    fed: Federation, tmp_path: Path
) -> None:
    handled = tmp_path / "receiver.handled"
    sender = await fed.client(SENDER)
    receiver = await client_with(fed, RECEIVER, handled)
    msg_id = await sender.send(example_bodies(0)["alert"], [RECEIVER])
    item = await receive(receiver, msg_id, timeout=30)

    # the receiver's server goes down; the application handles and acks the message,
    # the ack waits in nats-py's buffer, and the agency's process ends: the ack is lost
    await fed.servers["MYS"].stop()
    await item.ack()
    # nats-py writes to the dead socket as it closes; over TLS, CPython 3.11's
    # transport raises AttributeError for that instead of OSError
    with contextlib.suppress(OSError, AttributeError):
        await receiver.nc.close()
    receiver.handled.close()
    await fed.servers["MYS"].start()
    await fed.wait_ready("MYS")

    with structlog.testing.capture_logs() as logs:
        restarted = await client_with(fed, RECEIVER, handled)

        async def skipped() -> bool:
            assert await copies(restarted, msg_id, 0.5) == 0
            return any(e["event"] == "inbox_redelivery_skipped" for e in logs)

        await eventually(skipped, 30, "the redelivery came and was skipped", step=0)
    [entry] = [e for e in logs if e["event"] == "inbox_redelivery_skipped"]
    assert entry["msg_id"] == format_message_id(msg_id)
    assert "body" not in entry and "text" not in entry  # the id, never content
    info = await fed.hubs["MYS"].hub._js.consumer_info(streams.INBOX_STREAM, "RMP-ATIPSOM")
    assert info.num_ack_pending == 0  # the skipped redelivery was acked


async def test_a_message_stranded_in_a_dead_agency_connection_is_back_within_seconds(
    fed: Federation,
) -> None:
    sender = await fed.client(SENDER)
    receiver = await fed.client(RECEIVER)
    msg_id = await sender.send(example_bodies(0)["alert"], [RECEIVER])
    await receive(receiver, msg_id, timeout=30)
    await receiver.nc.close()  # the agency's process dies mid-work, without a nak
    stranded = time.monotonic()
    again = await fed.client(RECEIVER)
    item = await receive(again, msg_id, timeout=45)
    took = time.monotonic() - stranded
    await item.ack()
    print(f"stranded message came back after {took:.1f} s")
    assert took < STRANDED_BACK_WITHIN_S, f"stranded message came back after {took:.1f} s"


async def test_a_batch_stranded_in_a_dead_hub_worker_is_back_within_seconds(
    fed: Federation,
) -> None:
    sender = await fed.client(SENDER)
    receiver = await fed.client(RECEIVER)
    await fed.stop_hub("THA")
    msg_id = await sender.send(example_bodies(0)["alert"], [RECEIVER])  # waits in INGRESS
    # a hub worker fetches it and dies before settling it
    plan = fed.deployment.plan
    auth = plan.hub_credentials("THA")
    worker = await connect(
        plan.client_url("THA"),
        auth=auth,
        name="doomed",
        ca_file=plan.client_ca_file("THA"),
    )
    psub = await worker.jetstream().pull_subscribe_bind(
        streams.HUB_CONSUMER, streams.INGRESS_STREAM
    )
    [fetched] = await psub.fetch(1, timeout=5)
    assert fetched.metadata.num_delivered == 1
    await worker.close()
    stranded = time.monotonic()
    await fed.start_hub("THA")
    item = await receive(receiver, msg_id, timeout=60)
    took = time.monotonic() - stranded
    await item.ack()
    print(f"stranded message came back after {took:.1f} s")
    assert took < STRANDED_BACK_WITHIN_S, f"stranded message came back after {took:.1f} s"


async def test_a_message_held_longer_than_the_ack_wait_is_not_redelivered(
    fed: Federation,
) -> None:
    """The short ack wait does not take slow work away: the client keeps what it holds."""
    sender = await fed.client(SENDER)
    holder = await fed.client(RECEIVER)
    other = await fed.client(RECEIVER)  # a second reader of the same inbox
    msg_id = await sender.send(example_bodies(0)["alert"], [RECEIVER])
    item = await receive(holder, msg_id, timeout=30)
    assert await copies(other, msg_id, streams.INBOX_ACK_WAIT_S + 3) == 0
    await item.ack()
    info = await fed.hubs["MYS"].hub._js.consumer_info(streams.INBOX_STREAM, "RMP-ATIPSOM")
    assert info.num_redelivered == 0


async def test_an_outage_logs_each_change_of_state_once(tmp_path: Path) -> None:
    agency = Principal("THA", "DSI-ATHD")
    plan = tls_plan(["THA"], {"THA": [agency.name]}, tmp_path)
    auth = plan.agency_credentials("THA", agency.name)
    async with NatsServer(plan, "THA") as server:
        nc = await connect(
            plan.client_url("THA"),
            auth=auth,
            ca_file=plan.client_ca_file("THA"),
            name="flaky",
            inbox_prefix=subjects.reply_prefix(agency.name),
        )
        try:
            with structlog.testing.capture_logs() as logs:
                await server.stop()
                await asyncio.sleep(4)  # a reconnect attempt is refused every 0.5 s
                await server.start()

                async def reconnected() -> bool:  # logged by a callback after the flag
                    return nc.is_connected and any(e["event"] == "nats_reconnected" for e in logs)

                await eventually(reconnected, 20, "reconnected")
        finally:
            await nc.close()
    events = [e["event"] for e in logs]
    assert events.count("nats_disconnected") == 1 and events[-1] == "nats_reconnected", logs
    kinds = [e["error"] for e in logs if e["event"] == "nats_error"]
    assert len(kinds) == len(set(kinds)) <= 2, logs  # the EOF, then the refused attempts
    assert len(logs) <= 4
    assert logs[-1]["errors_not_logged"] >= 3  # the burst happened, and was not logged
    assert all(e["connection"] == "flaky" for e in logs)


async def test_a_hub_outage_logs_each_change_of_state_once(tmp_path: Path) -> None:
    """A hub and an agency through a server outage: no line repeats per source."""
    agencies = {SENDER: [Role.TRAFFICKING_UNIT], "THA/IMMIGRATION": [Role.IMMIGRATION]}
    async with running_federation(tmp_path, agencies) as federation:
        await federation.client(SENDER)
        with structlog.testing.capture_logs() as logs:
            await federation.servers["THA"].stop()
            await asyncio.sleep(4)
            await federation.servers["THA"].start()
            await asyncio.sleep(3)  # the hub reconnects and rebinds its pull loops
        assert federation.hubs["THA"].hub.health()["nats"] is True
    lines = Counter(
        (e["event"], e.get("connection"), e.get("worker"), e.get("error"))
        for e in logs
        if e["log_level"] in ("warning", "error")
    )
    assert lines, "the outage was noticed"
    assert ("nats_disconnected", "ixb-hub-THA", None, None) in lines
    assert max(lines.values()) == 1, lines  # each source, each kind of error: once


async def test_the_cli_names_an_unknown_outcome_and_its_retry_sends_it_once(
    fed: Federation,
) -> None:
    sender = await fed.client(SENDER)
    receiver = await fed.client(RECEIVER)
    profile_path = fed.deployment.profile(SENDER)
    # the sealed envelope of a send whose publish the hub never confirmed
    publics = [sender.keys.encryption_key(parse_agency(RECEIVER), sender.clock())]
    sealed = seal_envelope(
        sender=sender.identity,
        recipients=publics,
        body=example_bodies(0)["alert"],
        now_ms=sender.clock(),
        ttl_ms=3_600_000,
    )
    msg_id = decode_envelope(sealed).header.id
    text = format_message_id(msg_id)
    error = _keep_for_retry(
        argparse.Namespace(profile=profile_path),
        load_profile(profile_path),
        UnknownOutcomeError("never confirmed", message_id=msg_id, sealed=sealed),
    )
    line = error.one_line()
    assert line.startswith("error ixb.E_UNKNOWN_OUTCOME: ") and "\n" not in line
    assert line.endswith(f": ixb send retry --profile {profile_path} {text}")

    first = await run_ixb("send", "retry", "--profile", str(profile_path), text)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{text} sent: the hub has it once\n"
    item = await receive(receiver, msg_id, timeout=30)
    await item.ack()
    second = await run_ixb("send", "retry", "--profile", str(profile_path), text)
    assert second.returncode == 2  # confirmed: nothing left to retry
    assert second.stderr.startswith("error ixb.E_USAGE: no unconfirmed send")
    assert await copies(receiver, msg_id, 3.0) == 0
