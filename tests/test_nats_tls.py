"""TLS on every NATS link, against real nats-server processes (no mocks of NATS or crypto).

Client listeners present a certificate from the federation's CA; leaf links are
mutual TLS (the listening server requires and verifies the dialer's
certificate, the dialer verifies the listener's). What must be refused is:
a plaintext client, a client that trusts another CA, a leaf dialer with a
certificate from another CA or with an expired one, and a plaintext dialer.
Hubs and agencies with the wrong CA stop with one line, not a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import socket
import stat
import time
from pathlib import Path

import pytest
import structlog

from broker.natsd import NatsServer, free_ports, render_config, start_federation, write_private
from broker.natsplan import FederationPlan
from broker.natstls import ThrowawayCA, server_names
from ixb.deployment import create_deployment
from protocols.errors import ConfigError
from protocols.keys import KdfProfile
from protocols.roles import Role
from tests.federation import PASSPHRASE, run_ixb
from tests.nats_fixtures import Federation, federation, plan, tls_plan
from transport.connect import UNBOUNDED, connect

__all__ = ["federation", "plan"]  # fixtures

LINK_REFUSED_FOR_S = 4.0
"""How long a refused leaf link is watched (nats-server redials every second)."""


def _past() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)


async def test_every_connection_of_the_federation_is_tls(federation: Federation) -> None:
    for country in federation.plan.countries:
        await federation.hub(country)  # one more client per server, beside setup's
    for country, server in federation.servers.items():
        varz = await server.monitor("varz")
        assert varz["tls_required"] is True and "tls_verify" not in varz  # nkeys inside
        leaf = varz["leaf"]
        if federation.plan.node(country).leaf_port is not None:
            assert leaf["tls_required"] is True and leaf["tls_verify"] is True  # mutual TLS
        for remote in leaf.get("remotes", ()):  # the links this server dials
            assert remote["tls_timeout"] > 0, remote
        conns = (await server.monitor("connz?limit=1024"))["connections"]
        assert conns
        for conn in conns:
            assert conn.get("tls_version", "").startswith("1.3"), conn
            assert conn.get("tls_cipher_suite"), conn
        assert len((await server.monitor("leafz"))["leafs"]) == 2  # both links up
    rendered = federation.plan.client_url("THA")
    assert rendered.startswith("tls://127.0.0.1:")


async def test_a_plaintext_client_is_refused(federation: Federation) -> None:
    node = federation.plan.node("THA")
    auth = federation.plan.hub_credentials("THA")

    def plain_session() -> tuple[dict[str, object], bytes]:
        with socket.create_connection((node.host, node.client_port), timeout=5) as sock:
            sock.settimeout(5)
            info = json.loads(sock.recv(65536).decode().split(" ", 1)[1])
            connect_op = json.dumps({"nkey": auth.nkey, "verbose": False})
            sock.sendall(f"CONNECT {connect_op}\r\nPING\r\n".encode())
            answer = b""
            with_timeout = time.monotonic() + 5
            while time.monotonic() < with_timeout:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            return info, answer

    info, answer = await asyncio.to_thread(plain_session)
    assert info["tls_required"] is True
    assert b"PONG" not in answer  # never served in clear
    assert b"TLS Required" in answer or b"Secure Connection" in answer or answer == b""


async def test_a_client_trusting_another_ca_refuses_the_server_at_once(
    federation: Federation, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    write_private(other, ThrowawayCA("someone else's CA").cert_pem.decode())
    auth = federation.plan.hub_credentials("THA")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        async with asyncio.timeout(10):  # a TimeoutError here: it kept retrying
            await connect(
                federation.plan.client_url("THA"),
                auth=auth,
                name="wrong-ca",
                ca_file=other,
                max_reconnect_attempts=UNBOUNDED,  # as the hub: even then, no retry
            )
    assert time.monotonic() - start < 5
    detail = info.value.detail
    assert "does not verify against the CA in" in detail and str(other) in detail
    assert "\n" not in detail
    assert auth.seed is not None and auth.seed.seed_str() not in detail


async def test_a_client_refuses_a_missing_ca_file(federation: Federation, tmp_path: Path) -> None:
    auth = federation.plan.hub_credentials("THA")
    with pytest.raises(ConfigError, match="cannot load the NATS CA file"):
        await connect(
            federation.plan.client_url("THA"),
            auth=auth,
            name="no-ca",
            ca_file=tmp_path / "absent.pem",
        )


async def test_an_expired_server_certificate_is_refused(tmp_path: Path) -> None:
    solo = FederationPlan.create(["THA"], {"THA": ["DSI-ATHD"]}, tmp_path, ports=free_ports())
    ca = ThrowawayCA()
    tls = solo.node("THA").tls
    assert tls is not None
    write_private(tls.ca_file, ca.cert_pem.decode())
    not_before, not_after = _past()
    ca.issue(server_names(solo, "THA"), not_before=not_before, not_after=not_after).write(
        tls.cert_file, tls.key_file
    )
    auth = solo.hub_credentials("THA")
    async with NatsServer(solo, "THA"):
        with pytest.raises(ConfigError, match="certificate has expired"):
            await connect(
                solo.client_url("THA"),
                auth=auth,
                name="expired",
                ca_file=tls.ca_file,
                give_up_after=10,
            )


def _pair(tmp_path: Path) -> tuple[FederationPlan, ThrowawayCA]:
    """MYS listens, THA dials, both with certificates from their CA; and another CA."""
    pair = tls_plan(["MYS", "THA"], {}, tmp_path)
    return pair, ThrowawayCA("someone else's CA")


async def _watch_refused(plan: FederationPlan, fragments: tuple[str, ...]) -> None:
    """Start both servers: the THA→MYS link stays down, and a log says why."""
    mys, tha = NatsServer(plan, "MYS"), NatsServer(plan, "THA")
    async with mys, tha:
        deadline = time.monotonic() + LINK_REFUSED_FOR_S
        while time.monotonic() < deadline:
            assert not (await mys.monitor("leafz"))["leafs"], "the leaf link came up"
            assert not (await tha.monitor("leafz"))["leafs"], "the leaf link came up"
            await asyncio.sleep(0.2)
        logs = mys.log_tail(400) + tha.log_tail(400)
    assert any(f.lower() in logs.lower() for f in fragments), logs


async def test_mutual_tls_link_comes_up_with_the_federations_certificates(
    tmp_path: Path,
) -> None:
    pair, _ = _pair(tmp_path)
    async with start_federation(pair) as servers:
        [leaf] = (await servers["MYS"].monitor("leafz"))["leafs"]
        assert leaf["account"] == "THA_LINK"


async def test_a_leaf_dialer_with_a_certificate_from_another_ca_is_refused(
    tmp_path: Path,
) -> None:
    pair, other = _pair(tmp_path)
    tls = pair.node("THA").tls
    assert tls is not None
    other.issue(server_names(pair, "THA"), common_name="ixb-THA").write(tls.cert_file, tls.key_file)
    await _watch_refused(pair, ("tls handshake error", "certificate"))


async def test_a_leaf_dialer_with_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    pair = tls_plan(["MYS", "THA"], {}, tmp_path)
    ca = ThrowawayCA()
    for country in pair.countries:  # the same CA for both, THA's certificate expired
        tls = pair.node(country).tls
        assert tls is not None
        write_private(tls.ca_file, ca.cert_pem.decode())
        window = _past() if country == "THA" else (None, None)
        ca.issue(server_names(pair, country), not_before=window[0], not_after=window[1]).write(
            tls.cert_file, tls.key_file
        )
    await _watch_refused(pair, ("expired", "tls handshake error", "certificate"))


async def test_a_plaintext_leaf_dialer_is_refused(tmp_path: Path) -> None:
    pair, _ = _pair(tmp_path)
    nodes = dict(pair.nodes)
    nodes["THA"] = dataclasses.replace(nodes["THA"], tls=None)  # THA dials in clear
    await _watch_refused(
        dataclasses.replace(pair, nodes=nodes), ("tls", "secure connection", "handshake")
    )


# --- hubs and agencies with the wrong CA: one line, no traceback ------------------


async def test_hub_and_agency_with_the_wrong_ca_stop_with_one_line(tmp_path: Path) -> None:
    deployment = create_deployment(
        tmp_path / "fed",
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
        kdf=KdfProfile.INTERACTIVE,
    )
    other = tmp_path / "other-ca.pem"
    write_private(other, ThrowawayCA("someone else's CA").cert_pem.decode())
    async with start_federation(deployment.plan):
        hub = await run_ixb(
            "hub",
            "run",
            "--config",
            str(deployment.hub_config("THA")),
            IXB_HUB__NATS__CA_FILE=str(other),
        )
        profile = deployment.profile("THA/DSI-ATHD")
        wrong = tmp_path / "wrong-profile.toml"
        text = profile.read_text(encoding="utf-8")
        assert str(deployment.ca_file) in text
        write_private(wrong, text.replace(str(deployment.ca_file), str(other)))
        agency = await run_ixb("inbox", "--profile", str(wrong), "--wait", "1")
    for result in (hub, agency):
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error ixb.E_CONFIG: the NATS server at tls://127.0.0.1:"), last
        assert f"does not verify against the CA in {other}" in last
    assert len(agency.stderr.strip().splitlines()) == 1


async def test_tls_refusals_are_logged_without_secrets(federation: Federation) -> None:
    """A refused first connect logs the kind of error, never the seed."""
    auth = federation.plan.hub_credentials("THA")
    with structlog.testing.capture_logs() as logs, pytest.raises(ConfigError):
        await connect(
            federation.plan.client_url("THA"),
            auth=auth,
            name="no-ca-given",  # the system's CAs do not know the throwaway CA
            give_up_after=10,
        )
    assert auth.seed is not None and auth.seed.seed_str() not in repr(logs)


def test_ca_and_certificates_keep_private_keys_out_of_repr(tmp_path: Path) -> None:
    ca = ThrowawayCA()
    issued = ca.issue(["127.0.0.1", "localhost"])
    assert b"PRIVATE KEY" in issued.key_pem
    assert "PRIVATE" not in repr(issued) and "PRIVATE" not in repr(ca)
    issued.write(tmp_path / "c.pem", tmp_path / "k.pem")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_configs_carry_tls_blocks_and_plain_mode_only_on_request(tmp_path: Path) -> None:
    tls = tls_plan(["MYS", "THA"], {}, tmp_path / "tls")
    mys, tha = render_config(tls, "MYS"), render_config(tls, "THA")
    node = tls.node("MYS").tls
    assert node is not None
    # client listener: server certificate, no client certificates (nkeys)
    assert mys.count(f'cert_file: "{node.cert_file}"') == 2  # client + leaf listener
    assert "verify: true" in mys  # MYS listens for THA: mutual TLS
    assert "verify: true" not in tha  # THA only dials; its remote verifies MYS
    assert tha.count('ca_file: "') == 1 and "nats-leaf://" in tha
    assert FederationPlan.from_json(tls.to_json()) == tls
    plain = FederationPlan.create(
        ["MYS", "THA"], {}, tmp_path / "plain", ports=free_ports(), tls=False
    )
    assert "tls {" not in render_config(plain, "MYS") + render_config(plain, "THA")
    assert plain.client_url("THA").startswith("nats://")
    assert plain.client_ca_file("THA") is None
    assert FederationPlan.from_json(plain.to_json()) == plain
