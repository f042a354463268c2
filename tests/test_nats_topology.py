"""The NATS topology on real nats-server processes: permissions, isolation, store-and-forward.

Three countries in a triangle (THA, MYS, MMR). Leaf roles: the smaller code
listens, so MMR and MYS listen, THA dials both, and MYS dials MMR. Nothing is
mocked; every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from broker.natsd import (
    TEMPLATE_DIR,
    NatsServer,
    find_nats_server,
    load_plan,
    render_config,
    save_plan,
    start_federation,
    wait_links_up,
    write_config,
)
from broker.natsplan import MAX_SUBSCRIPTIONS, FederationPlan, bcrypt_hash
from protocols import subjects
from protocols.errors import ConfigError
from protocols.identifiers import Principal
from tests.nats_fixtures import (
    AGENCIES,
    Conn,
    Federation,
    eventually,
    federation,
    plan,
    stream_count,
    stream_info,
    tls_plan,
)
from transport.connect import NatsAuth, connect, tls_context
from transport.streams import (
    HUB_CONSUMER,
    INBOX_STREAM,
    INGRESS_STREAM,
    ensure_country_streams,
    ensure_link_streams,
    in_stream,
    out_stream,
    resume_link_source,
)

__all__ = ["federation", "plan"]  # fixtures, imported for pytest

DSI = Principal("THA", "DSI-ATHD")
IMM = Principal("THA", "IMMIGRATION")
DENIED = (nats.errors.TimeoutError, nats.errors.NoRespondersError)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def drain(sub: Subscription, quiet: float = 0.3) -> list[tuple[str, bytes]]:
    """Every message a subscription holds, until it has been quiet for ``quiet`` s."""
    seen: list[tuple[str, bytes]] = []
    while True:
        try:
            msg = await sub.next_msg(timeout=quiet)
        except nats.errors.TimeoutError:
            return seen
        seen.append((msg.subject, msg.data))


# --- plan, templates, process lifecycle ------------------------------------------


def test_plan_round_trips_and_keeps_secrets_private(plan: FederationPlan, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_plan(path)
    assert loaded == plan
    assert not loaded.seeds and not loaded.system_passwords  # seeds never reach the JSON
    saved = path.read_text()
    config = write_config(plan, "THA")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    rendered = config.read_text()
    secrets = [s.seed_str() for s in plan.seeds.values()] + list(plan.system_passwords.values())
    for text in (saved, rendered):
        assert not re.search(r"\bSU[A-Z2-7]{56}\b", text)  # no nkey seed at all
        assert not any(secret in text for secret in secrets)
    assert "password" not in re.sub(r'user: "sys", password: "\$2b\$[^"]+"', "", rendered)
    assert plan.hub_credentials("THA").nkey in rendered
    assert plan.hub_credentials("MYS").nkey not in rendered  # only THA's own users
    for template in TEMPLATE_DIR.glob("*.template"):
        assert not any(secret in template.read_text() for secret in secrets)
    hub = plan.hub_credentials("THA")
    assert hub.seed is not None and hub.seed.seed_str() not in repr(hub) + repr(plan)
    assert len({*plan.nkeys.values()}) == len(plan.nkeys)
    with pytest.raises(ConfigError, match="sealed in a key file"):
        loaded.hub_credentials("THA")
    with pytest.raises(ConfigError):
        plan.agency_credentials("THA", "RMP-ATIPSOM")
    with pytest.raises(ConfigError):
        load_plan(tmp_path / "missing.json")
    # the leaf seeds THA dials with, beside its config, readable by the server's user only
    for peer in ("MMR", "MYS"):
        seed_file = plan.node("THA").leaf_seed_path(peer)
        assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
        seed = plan.leaf_seed(peer, "THA")
        assert seed is not None and seed_file.read_text() == f'seed: "{seed.seed_str()}"\n'


def test_rendered_configs_pass_nats_server_check(plan: FederationPlan) -> None:
    binary = find_nats_server()
    for country in plan.countries:
        result = subprocess.run(
            [str(binary), "-t", "-c", str(write_config(plan, country))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    tha = render_config(plan, "THA")
    assert "sync_interval: always" in tha
    assert 'domain: "THA"' in tha
    assert tha.count("nats-leaf://") == 2  # THA dials both peers
    assert "nats-leaf://" not in render_config(plan, "MMR")  # MMR only listens


async def test_server_lifecycle_restart_keeps_ports_and_data(tmp_path: Path) -> None:
    solo = tls_plan(["THA"], {"THA": ["DSI-ATHD"]}, tmp_path)
    server = NatsServer(solo, "THA")
    async with server:
        first_pid = server.pid
        assert first_pid is not None
        assert alive(first_pid)
        nc = NatsClient()
        await nc.connect(
            solo.client_url("THA"),
            tls=tls_context(solo.client_ca_file("THA")),
            **solo.hub_credentials("THA").connect_options(),
            reconnect_time_wait=0.1,
            max_reconnect_attempts=-1,
        )
        try:
            js = nc.jetstream()
            await ensure_country_streams(js, "THA", ["DSI-ATHD"])
            await ensure_country_streams(js, "THA", ["DSI-ATHD"])  # idempotent
            await js.publish(subjects.inbox(DSI), b"kept", headers={"Nats-Msg-Id": "k1"})
            await server.kill()
            assert not alive(first_pid)
            await server.restart()
            assert server.pid != first_pid

            async def connected() -> bool:
                return nc.is_connected

            await eventually(connected, 10, "client reconnects")
            assert (await js.stream_info(INBOX_STREAM)).state.messages == 1
        finally:
            await nc.close()
        second_pid = server.pid
    assert second_pid is not None
    assert not alive(second_pid)
    assert not server.running
    await server.stop()  # idempotent


async def test_start_failure_names_the_cause(tmp_path: Path) -> None:
    solo = tls_plan(["MYS"], {}, tmp_path)
    node = solo.node("MYS")
    with socket.socket() as squatter:
        squatter.bind((node.host, node.client_port))
        squatter.listen()
        server = NatsServer(solo, "MYS", start_timeout=10)
        with pytest.raises(ConfigError, match="exited") as info:
            await server.start()
    assert str(node.client_port) in str(info.value)  # the log tail says which port
    assert not server.running


async def test_federation_never_leaves_processes(plan: FederationPlan) -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="test failure"):
        async with start_federation(plan) as servers:
            pids = [s.pid for s in servers.values() if s.pid is not None]
            assert len(pids) == 3
            assert all(alive(p) for p in pids)
            raise RuntimeError("test failure")
    assert not any(alive(p) for p in pids)


# --- agencies --------------------------------------------------------------------


async def test_agency_publishes_only_its_own_ingress(federation: Federation) -> None:
    agency = await federation.agency("THA", DSI.name)
    js = agency.nc.jetstream()
    ack = await js.publish(subjects.ingress(DSI), b"envelope", headers={"Nats-Msg-Id": "a1"})
    assert (ack.stream, ack.domain, ack.seq) == (INGRESS_STREAM, "THA", 1)

    forbidden = [
        subjects.ingress(IMM),
        subjects.inbox(DSI),
        subjects.inbox(IMM),
        f"{subjects.PREFIX}.THA.receipts.{DSI.name}",  # any other subject of the country
        subjects.cross_border("THA", "MYS"),
        subjects.cross_border("THA", "MMR"),
        f"$JS.API.STREAM.PURGE.{INBOX_STREAM}",
        f"$JS.API.STREAM.DELETE.{INGRESS_STREAM}",
        f"$JS.API.CONSUMER.DELETE.{INBOX_STREAM}.{DSI.name}",
        f"$JS.API.CONSUMER.CREATE.{INBOX_STREAM}",
    ]
    for subject in forbidden:
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(subject, b"forged", timeout=0.3)
        await agency.wait_error(f'permissions violation for publish to "{subject}"')

    hub = await federation.hub("THA")
    ingress = await stream_info(hub, INGRESS_STREAM)
    assert ingress.state.subjects == {subjects.ingress(DSI): 1}
    assert (await stream_info(hub, INBOX_STREAM)).state.messages == 0
    link = await federation.link("THA", "MYS")
    assert await stream_count(link, out_stream("MYS")) == 0


async def test_agency_reads_only_its_own_inbox(federation: Federation) -> None:
    hub = await federation.hub("THA")
    hub_js = hub.nc.jetstream()
    await hub_js.publish(subjects.inbox(DSI), b"for DSI", headers={"Nats-Msg-Id": "d1"})
    await hub_js.publish(subjects.inbox(IMM), b"for IMM", headers={"Nats-Msg-Id": "i1"})

    dsi = await federation.agency("THA", DSI.name)
    js = dsi.nc.jetstream()
    own = await js.pull_subscribe_bind(durable=DSI.name, stream=INBOX_STREAM)
    [msg] = await own.fetch(1, timeout=2)
    assert msg.data == b"for DSI"
    assert msg.reply.startswith(f"$JS.ACK.{INBOX_STREAM}.{DSI.name}.")
    await msg.ack_sync()
    assert (await own.consumer_info()).num_ack_pending == 0

    other = await js.pull_subscribe_bind(durable=IMM.name, stream=INBOX_STREAM)
    with pytest.raises(nats.errors.TimeoutError):
        await other.fetch(1, timeout=0.5)
    await dsi.wait_error(f'publish to "$js.api.consumer.msg.next.{INBOX_STREAM}.{IMM.name}"')
    with pytest.raises(nats.errors.TimeoutError):
        await js.consumer_info(INBOX_STREAM, IMM.name, timeout=0.3)

    spy_all = await dsi.nc.subscribe(">")
    spy_other = await dsi.nc.subscribe("_INBOX_IMMIGRATION.>")
    await dsi.wait_error('permissions violation for subscription to ">"')
    await dsi.wait_error('permissions violation for subscription to "_inbox_immigration.>"')
    await hub.nc.publish("_INBOX_IMMIGRATION.reply", b"private")
    await hub_js.publish(subjects.inbox(IMM), b"for IMM too", headers={"Nats-Msg-Id": "i2"})
    assert await drain(spy_all) == []
    assert await drain(spy_other) == []

    # IMMIGRATION's messages are untouched and readable by IMMIGRATION alone.
    imm = await federation.agency("THA", IMM.name)
    mine = await imm.nc.jetstream().pull_subscribe_bind(durable=IMM.name, stream=INBOX_STREAM)
    got = await mine.fetch(2, timeout=2)
    assert [m.data for m in got] == [b"for IMM", b"for IMM too"]


async def test_offline_agency_inbox_survives_a_server_crash(federation: Federation) -> None:
    hub = await federation.hub("THA")
    for i in range(3):
        ack = await hub.nc.jetstream().publish(
            subjects.inbox(IMM), f"alert {i}".encode(), headers={"Nats-Msg-Id": f"o{i}"}
        )
        assert ack.seq == i + 1
    await federation.servers["THA"].kill()  # acknowledged writes were fsynced
    await federation.servers["THA"].start()

    imm = await federation.agency("THA", IMM.name)
    sub = await imm.nc.jetstream().pull_subscribe_bind(durable=IMM.name, stream=INBOX_STREAM)
    msgs = await sub.fetch(10, timeout=2)
    assert [m.data for m in msgs] == [b"alert 0", b"alert 1", b"alert 2"]
    for m in msgs:
        await m.ack_sync()
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=0.5)
    info = await sub.consumer_info()
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


# --- between countries -----------------------------------------------------------


async def test_cross_border_delivery_is_isolated_per_link(federation: Federation) -> None:
    tha_mys = await federation.link("THA", "MYS")
    tha_mmr = await federation.link("THA", "MMR")
    mys_tha = await federation.link("MYS", "THA")
    mmr_tha = await federation.link("MMR", "THA")
    spy = await mys_tha.nc.subscribe(">")
    await mys_tha.nc.flush()

    await tha_mys.nc.jetstream().publish(
        subjects.cross_border("THA", "MYS"), b"to MYS", headers={"Nats-Msg-Id": "x1"}
    )
    await tha_mmr.nc.jetstream().publish(
        subjects.cross_border("THA", "MMR"), b"SECRET for MMR", headers={"Nats-Msg-Id": "y1"}
    )

    async def arrived(conn: Conn) -> bool:
        # as the hub's link keeper does: a source that started before its leaf was up
        # would otherwise wait out nats-server's 40 s retry (a busy CI machine hits it)
        return await _sourced(conn, "THA", 1)

    print(f"\nTHA->MYS arrived in {await eventually(lambda: arrived(mys_tha), 30, 'MYS'):.3f} s")
    await eventually(lambda: arrived(mmr_tha), 30, "THA->MMR arrives in MMR")

    hub_sub = await mys_tha.nc.jetstream().pull_subscribe_bind(
        durable=HUB_CONSUMER, stream=in_stream("THA")
    )
    [msg] = await hub_sub.fetch(1, timeout=2)
    assert msg.data == b"to MYS"
    assert msg.subject == subjects.cross_border("THA", "MYS")
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == "x1"  # kept across sourcing: de-dup works end to end
    await msg.ack_sync()

    seen = await drain(spy)
    assert seen, "the spy should see the THA<->MYS link traffic"
    assert not [s for s, data in seen if b"SECRET" in data or "MMR" in s]


async def test_peer_cannot_inject_or_administer(federation: Federation) -> None:
    """Both roles: MYS listens for THA, THA dials MYS."""
    tha = await federation.link("THA", "MYS")
    mys = await federation.link("MYS", "THA")
    await tha.nc.jetstream().publish(
        subjects.cross_border("THA", "MYS"), b"legit", headers={"Nats-Msg-Id": "l1"}
    )
    await eventually(lambda: _sourced(mys, "THA", 1), 30, "first message")

    # Injection into the other side's outgoing stream and IXB subjects.
    await mys.nc.publish(subjects.cross_border("THA", "MYS"), b"forged by MYS")
    await mys.nc.publish(subjects.ingress(DSI), b"forged by MYS")
    await tha.nc.publish(subjects.cross_border("MYS", "THA"), b"forged by THA")
    # Barriers: later legit traffic on the same leaf connections.
    await mys.nc.jetstream().publish(
        subjects.cross_border("MYS", "THA"), b"legit back", headers={"Nats-Msg-Id": "b1"}
    )
    await tha.nc.jetstream().publish(
        subjects.cross_border("THA", "MYS"), b"legit 2", headers={"Nats-Msg-Id": "l2"}
    )
    await eventually(lambda: _count_is(tha, in_stream("MYS"), 1), 10, "MYS->THA barrier")
    await eventually(lambda: _count_is(mys, in_stream("THA"), 2), 10, "THA->MYS barrier")
    assert (await stream_info(tha, out_stream("MYS"))).state.messages == 2
    assert (await stream_info(mys, out_stream("THA"))).state.messages == 1
    tha_hub = await federation.hub("THA")
    assert await stream_count(tha_hub, INGRESS_STREAM) == 0

    # Administration of the other side's streams and of its inbound consumer.
    for attacker, victim in ((mys, "THA"), (tha, "MYS")):
        me = "MYS" if victim == "THA" else "THA"
        api = f"$JS.{victim}.API"
        pull = json.dumps({"batch": 1, "expires": 200_000_000}).encode()
        for subject, body in (
            (f"{api}.STREAM.PURGE.{out_stream(me)}", b""),
            (f"{api}.STREAM.DELETE.{out_stream(me)}", b""),
            (f"{api}.STREAM.MSG.DELETE.{out_stream(me)}", b'{"seq":1}'),
            (f"{api}.STREAM.DELETE.{in_stream(me)}", b""),
            (f"{api}.STREAM.CREATE.EVIL", b'{"name":"EVIL","subjects":["evil"]}'),
            (f"{api}.CONSUMER.DELETE.{in_stream(me)}.{HUB_CONSUMER}", b""),
            (f"{api}.CONSUMER.MSG.NEXT.{in_stream(me)}.{HUB_CONSUMER}", pull),
            (f"{api}.CONSUMER.INFO.{in_stream(me)}.{HUB_CONSUMER}", b""),
        ):
            with pytest.raises(DENIED):
                await attacker.nc.request(subject, body, timeout=0.5)
        # The link itself works: read-only stream info of the stream it sources.
        reply = await attacker.nc.request(f"{api}.STREAM.INFO.{out_stream(me)}", b"", timeout=2)
        assert json.loads(reply.data)["config"]["name"] == out_stream(me)

    assert (await stream_info(tha, out_stream("MYS"))).state.messages == 2
    for conn, peer in ((tha, "MYS"), (mys, "THA")):
        consumer = await conn.nc.jetstream().consumer_info(in_stream(peer), HUB_CONSUMER)
        assert consumer.delivered.stream_seq == 0  # nobody pulled our messages


async def test_link_accounts_are_limited(federation: Federation) -> None:
    link = await federation.link("MYS", "THA")
    info = await link.nc.jetstream().account_info()
    limits = federation.plan.link_limits
    assert info.limits.max_streams == limits.max_streams
    assert info.limits.max_consumers == limits.max_consumers
    assert info.limits.max_storage == limits.max_file
    assert info.domain == "MYS"

    # The leaf user lives in the link account but cannot log in as a client.
    auth = federation.plan.leaf_credentials("MYS", "THA")
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = NatsClient()
    with pytest.raises(nats.errors.Error):
        await nc.connect(
            federation.plan.client_url("MYS"),
            tls=tls_context(federation.plan.client_ca_file("MYS")),
            **auth.connect_options(),
            allow_reconnect=False,
            error_cb=on_error,
        )
    await nc.close()
    assert any("authorization violation" in e.lower() for e in errors), errors


async def _count_is(conn: Conn, stream: str, n: int) -> bool:
    return await stream_count(conn, stream) == n


_last_resume: dict[int, float] = {}


async def _sourced(conn: Conn, peer: str, n: int) -> bool:
    """``IN_<peer>`` holds ``n`` messages; an idle source is restarted every few seconds at
    most, as the hub's link keeper does (restarting it on every poll would never let it run)."""
    if await _count_is(conn, in_stream(peer), n):
        return True
    now = time.monotonic()
    if now - _last_resume.get(id(conn), 0.0) >= 3.0:
        _last_resume[id(conn)] = now
        await resume_link_source(conn.nc, peer)
    return False


# --- store-and-forward -------------------------------------------------------------

N = 25


async def _publish_backlog(link: Conn) -> None:
    js = link.nc.jetstream()
    for i in range(N):
        ack = await js.publish(
            subjects.cross_border("THA", "MYS"), f"m{i}".encode(), headers={"Nats-Msg-Id": f"m{i}"}
        )
        assert not ack.duplicate
    again = await js.publish(
        subjects.cross_border("THA", "MYS"), b"m0 retried", headers={"Nats-Msg-Id": "m0"}
    )
    assert again.duplicate  # same Nats-Msg-Id: stored once
    assert await stream_count(link, out_stream("MYS")) == N


async def _assert_exactly_once(mys: Conn) -> None:
    assert await stream_count(mys, in_stream("THA")) == N
    sub = await mys.nc.jetstream().pull_subscribe_bind(
        durable=HUB_CONSUMER, stream=in_stream("THA")
    )
    got: list[bytes] = []
    while len(got) < N:
        got.extend(m.data for m in await sub.fetch(N, timeout=2))
    assert sorted(got) == sorted(f"m{i}".encode() for i in range(N))


@pytest.mark.parametrize("resume", [True, False], ids=["hub-resumes-source", "server-alone"])
async def test_backlog_reaches_a_restarted_destination(
    federation: Federation, *, resume: bool
) -> None:
    tha = await federation.link("THA", "MYS")
    mys_server = federation.servers["MYS"]
    await mys_server.kill()
    await _publish_backlog(tha)

    await mys_server.start()
    started = time.monotonic()
    mys = await federation.link("MYS", "THA")
    await wait_links_up(federation.servers)
    links_up = time.monotonic() - started

    async def all_arrived() -> bool:
        if resume:
            await resume_link_source(mys.nc, "THA")
        return await stream_count(mys, in_stream("THA")) >= N

    await eventually(all_arrived, 60, "backlog in MYS IN_THA", step=0.2)
    took = time.monotonic() - started
    print(
        f"\ndestination restart ({'hub resumes source' if resume else 'server alone'}): "
        f"links up {links_up:.1f} s, {N} msgs in IN_THA {took:.1f} s after restart"
    )
    await _assert_exactly_once(mys)


async def test_source_resumes_after_origin_restart(federation: Federation) -> None:
    """THA (origin) crashes; MYS notices the link is down; THA comes back.

    Left alone, MYS's source retries about 40 s after the outage began (its
    consumer request waits 30 s, then backs off 10 s; measured, see
    docs/nats-topology.md). The hub's resume_link_source restarts it at once.
    """
    tha_server = federation.servers["THA"]
    mys = await federation.link("MYS", "THA")
    await tha_server.kill()

    async def link_down() -> bool:
        return "THA_LINK" not in await federation.servers["MYS"].leaf_accounts()

    await eventually(link_down, 10, "MYS sees the THA link down")
    await tha_server.start()
    started = time.monotonic()
    tha = await federation.link("THA", "MYS")
    await _publish_backlog(tha)

    async def all_arrived() -> bool:
        await resume_link_source(mys.nc, "THA")
        return await stream_count(mys, in_stream("THA")) >= N

    await eventually(all_arrived, 40, "backlog in MYS IN_THA", step=0.2)
    took = time.monotonic() - started
    print(f"\norigin restart (hub resumes source): {N} msgs in IN_THA {took:.1f} s after restart")
    await _assert_exactly_once(mys)


async def test_stream_setup_is_idempotent_and_updates(federation: Federation) -> None:
    hub = await federation.hub("MYS")
    js = hub.nc.jetstream()
    await ensure_country_streams(js, "MYS", [*AGENCIES["MYS"], "IMMIGRATION"])
    names = {c.name for c in await js.consumers_info(INBOX_STREAM)}
    assert names == {"RMP-ATIPSOM", "IMMIGRATION"}
    link = await federation.link("MYS", "MMR")
    await ensure_link_streams(link.nc.jetstream(), "MYS", "MMR")
    info = await link.nc.jetstream().stream_info(in_stream("MMR"))
    assert info.config.sources is not None
    assert [s.name for s in info.config.sources] == [out_stream("MYS")]


async def test_a_subscription_flood_is_refused_by_the_server(federation: Federation) -> None:
    """An agency that opens more subscriptions than the per-connection limit is cut off."""
    auth = federation.plan.agency_credentials("THA", DSI.name)
    nc = NatsClient()
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    await nc.connect(
        federation.plan.client_url("THA"),
        tls=tls_context(federation.plan.client_ca_file("THA")),
        **auth.connect_options(),
        inbox_prefix=subjects.reply_prefix(DSI.name),
        allow_reconnect=False,
        connect_timeout=2,
        closed_cb=on_closed,
    )
    try:
        own = f"{subjects.reply_prefix(DSI.name)}.flood"
        for _ in range(MAX_SUBSCRIPTIONS + 5):
            await nc.subscribe(own)
        with contextlib.suppress(nats.errors.Error):
            await nc.flush(timeout=2)
        # the server answers "maximum subscriptions exceeded" and closes the connection
        await asyncio.wait_for(closed.wait(), timeout=5)
        assert nc.is_closed
    finally:
        if not nc.is_closed:
            await nc.close()
    # a well-behaved agency on the same server is unaffected
    imm = await federation.agency("THA", IMM.name)
    await imm.nc.flush(timeout=2)


async def test_a_version_1_plan_still_serves_its_password_users(tmp_path: Path) -> None:
    """Deployments made before nkeys: plan.json v1 (passwords, an enrolled agency's bcrypt
    hash) renders as it did, and the hub and agency log in with their passwords."""
    data = tls_plan(["THA"], {"THA": ["DSI-ATHD"]}, tmp_path).to_json()
    data["version"] = 1
    del data["nkeys"]
    data["passwords"] = {
        "THA/sys": "sys-password",
        "THA/hub": "hub-password",
        "THA/agency/DSI-ATHD": bcrypt_hash("agency-password"),
    }
    old = FederationPlan.from_json(data)
    rendered = render_config(old, "THA")
    assert 'user: "hub", password: "hub-password"' in rendered and "nkey:" not in rendered
    hub = NatsAuth(user="hub", password="hub-password")
    assert old.hub_credentials("THA") == hub
    async with NatsServer(old, "THA"):
        agency = NatsAuth(user="agency-DSI-ATHD", password="agency-password")
        for auth, prefix in ((hub, "_INBOX"), (agency, subjects.reply_prefix("DSI-ATHD"))):
            nc = await connect(
                old.client_url("THA"),
                auth=auth,
                name="old",
                ca_file=old.client_ca_file("THA"),
                inbox_prefix=prefix,
                max_reconnect_attempts=0,
            )
            assert nc.is_connected
            await nc.close()


async def test_agency_asks_only_its_own_lookups_and_serves_only_its_own(
    federation: Federation,
) -> None:
    """SPEC §14: an agency cannot ask as another nor take another's lookups."""
    hub = await federation.hub("THA")

    async def answer(msg: object) -> None:
        await msg.respond(b"hub: " + msg.subject.encode())  # type: ignore[attr-defined]

    await hub.nc.subscribe(subjects.lookup_all("THA"), queue=subjects.LOOKUP_QUEUE, cb=answer)
    await hub.nc.flush()
    dsi = await federation.agency("THA", DSI.name)
    reply = await dsi.nc.request(subjects.lookup(DSI), b"lookup", timeout=2)
    assert reply.data == b"hub: " + subjects.lookup(DSI).encode()
    with pytest.raises(DENIED):
        await dsi.nc.request(subjects.lookup(IMM), b"as IMMIGRATION", timeout=0.5)
    await dsi.wait_error(f'permissions violation for publish to "{subjects.lookup(IMM).lower()}"')

    # another agency's serve subject: refused, and nothing arrives
    spy = await dsi.nc.subscribe(subjects.serve(IMM))
    await dsi.wait_error(
        f'permissions violation for subscription to "{subjects.serve(IMM).lower()}"'
    )
    with pytest.raises(DENIED):
        await hub.nc.request(subjects.serve(IMM), b"for IMMIGRATION only", timeout=0.5)
    assert await drain(spy) == []

    # its own: it receives the hub's lookup and may answer it once, on its reply subject
    async def serve(msg: object) -> None:
        await msg.respond(b"answer")  # type: ignore[attr-defined]

    await dsi.nc.subscribe(subjects.serve(DSI), queue=subjects.SERVE_QUEUE, cb=serve)
    await dsi.nc.flush()
    got = await hub.nc.request(subjects.serve(DSI), b"lookup for DSI", timeout=2)
    assert got.data == b"answer"
    # but no other reply subject of the hub's
    stray = await hub.nc.subscribe("_INBOX.stray")
    await dsi.nc.publish("_INBOX.stray", b"unasked")
    await dsi.wait_error('permissions violation for publish to "_inbox.stray"')
    assert await drain(stray) == []


async def test_a_peer_hands_over_only_its_own_lookups_to_us(federation: Federation) -> None:
    """Both link roles carry the pair's lookup subject; the listener refuses another's."""
    tha = await federation.link("THA", "MYS")
    mys = await federation.link("MYS", "THA")
    for asker, answerer, origin, destination in (
        (tha, mys, "THA", "MYS"),
        (mys, tha, "MYS", "THA"),
    ):

        async def answer(msg: object) -> None:
            await msg.respond(b"ok")  # type: ignore[attr-defined]

        await answerer.nc.subscribe(
            subjects.link_lookup(origin, destination), queue=subjects.LOOKUP_QUEUE, cb=answer
        )
        await answerer.nc.flush()

        async def answered(a: Conn = asker, o: str = origin, d: str = destination) -> bool:
            try:
                return (
                    await a.nc.request(subjects.link_lookup(o, d), b"?", timeout=0.5)
                ).data == b"ok"
            except DENIED:
                return False

        await eventually(answered, 10, f"{origin}->{destination} lookup")
    # THA (dialing) may not hand MYS lookups in MMR's name
    spy = await mys.nc.subscribe(subjects.link_lookup("MMR", "MYS"))
    await mys.nc.flush()
    await tha.nc.publish(subjects.link_lookup("MMR", "MYS"), b"as MMR")
    await tha.nc.flush()
    assert await drain(spy) == []
