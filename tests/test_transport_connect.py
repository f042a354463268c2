"""transport.connect on a real nats-server: options, one log line per error, first connect."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import structlog

from agency_client import sdk
from agency_client.profile import load_profile
from agency_client.sdk import load_identity_for
from broker.natsd import NatsServer, free_ports
from broker.natsplan import FederationPlan
from ixb.deployment import create_deployment
from protocols import subjects
from protocols.directory import Role
from protocols.errors import IoError
from protocols.identifiers import Principal
from protocols.keys import KdfProfile, NkeySeed
from tests.federation import PASSPHRASE
from tests.nats_fixtures import eventually, tls_plan
from transport.connect import CONNECT_TIMEOUT_S, RECONNECT_WAIT_S, UNBOUNDED, NatsAuth, connect

AGENCY = Principal("THA", "DSI-ATHD")


async def test_connect_names_the_connection_and_logs_errors_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = tls_plan(["THA"], {"THA": [AGENCY.name]}, tmp_path)
    auth = plan.agency_credentials("THA", AGENCY.name)
    async with NatsServer(plan, "THA"):
        nc = await connect(
            plan.client_url("THA"),
            auth=auth,
            ca_file=plan.client_ca_file("THA"),
            name="ixb-test-agency",
            inbox_prefix=subjects.reply_prefix(AGENCY.name),
        )
        try:
            assert nc.options["name"] == "ixb-test-agency"
            assert nc.options["allow_reconnect"] is True
            assert nc.options["max_reconnect_attempts"] == UNBOUNDED
            assert nc.options["reconnect_time_wait"] == RECONNECT_WAIT_S
            assert nc.options["connect_timeout"] == CONNECT_TIMEOUT_S
            with structlog.testing.capture_logs() as logs, caplog.at_level(logging.DEBUG):
                # Another agency's inbox: the server answers with a permissions violation.
                await nc.publish(subjects.inbox(Principal("THA", "IMMIGRATION")), b"x")
                await nc.flush(timeout=5)

                async def logged() -> bool:
                    return bool(logs)

                await eventually(logged, 5, "the violation is logged")
            assert nc.is_connected  # a violation does not end the connection
        finally:
            await nc.close()
    [entry] = logs
    assert entry["event"] == "nats_error"
    assert entry["log_level"] == "warning"
    assert entry["connection"] == "ixb-test-agency"
    assert "permissions violation" in entry["detail"].lower()
    assert not [r for r in caplog.records if r.name.startswith("nats")]  # no traceback dump


async def test_a_first_connect_gives_up_when_told_to(tmp_path: Path) -> None:
    plan = FederationPlan.create(
        ["THA"], {}, tmp_path, ports=free_ports()
    )  # planned, never started
    auth = plan.hub_credentials("THA")
    start = time.monotonic()
    with structlog.testing.capture_logs() as logs, pytest.raises(TimeoutError) as info:
        await connect(plan.client_url("THA"), auth=auth, name="nobody", give_up_after=1)
    assert 1 <= time.monotonic() - start < 5
    assert plan.client_url("THA") in str(info.value)
    assert "ConnectionRefusedError" in str(info.value)  # the last attempt's error
    assert logs and all(e["connection"] == "nobody" for e in logs)  # one line per kind of error


async def test_unbounded_first_connect_keeps_trying_until_cancelled(tmp_path: Path) -> None:
    plan = FederationPlan.create(["THA"], {}, tmp_path, ports=free_ports())
    auth = plan.hub_credentials("THA")
    task = asyncio.create_task(connect(plan.client_url("THA"), auth=auth, name="patient"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), timeout=1.5)
    assert not task.done()  # the hub waits for its server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_sdk_reports_an_unreachable_server(tmp_path: Path) -> None:
    """``AgencyClient.connect`` gives up on its first connect instead of retrying for ever."""
    deployment = create_deployment(
        tmp_path,
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
        kdf=KdfProfile.INTERACTIVE,
    )  # no nats-server started: every attempt is refused
    profile = load_profile(deployment.profile("THA/DSI-ATHD"))
    identity = load_identity_for(profile, PASSPHRASE)
    start = time.monotonic()
    with pytest.raises(IoError, match=r"^cannot reach tls://\S+: connection refused$"):
        async with asyncio.timeout(10):  # a TimeoutError here: it kept retrying
            await sdk.AgencyClient.connect(profile, identity, connect_timeout=1.0)
    assert time.monotonic() - start < 5


async def test_a_wrong_nkey_is_refused_at_once_even_with_unbounded_reconnects(
    tmp_path: Path,
) -> None:
    """Another seed than the one whose public key the config holds: one IoError, no retry
    loop (the hub's setting retries a refused first connect for ever otherwise)."""
    plan = tls_plan(["THA"], {"THA": [AGENCY.name]}, tmp_path)
    async with NatsServer(plan, "THA"):
        right = await connect(
            plan.client_url("THA"),
            auth=plan.hub_credentials("THA"),
            name="right",
            ca_file=plan.client_ca_file("THA"),
        )
        await right.close()
        impostor = NatsAuth(seed=NkeySeed.generate())
        # several times: over TLS the refusal often first shows as a broken pipe (logged
        # by nobody: the one line a command prints is the answer)
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                start = time.monotonic()
                with pytest.raises(IoError) as info:
                    await connect(
                        plan.client_url("THA"),
                        auth=impostor,
                        name="impostor",
                        ca_file=plan.client_ca_file("THA"),
                        max_reconnect_attempts=UNBOUNDED,
                    )
                assert time.monotonic() - start < CONNECT_TIMEOUT_S
        assert not logs, logs
        detail = info.value.detail
        assert detail.endswith("authorization violation") and "\n" not in detail
        assert impostor.nkey is not None and impostor.nkey in detail
        assert impostor.seed is not None and impostor.seed.seed_str() not in detail
