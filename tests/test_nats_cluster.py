"""A country as a nats-server cluster: the plan, its configs, and real clusters.

The fault suite (``tests/faults/test_cluster_failover.py``) kills a node of a
clustered country that *dials* its peers (THA sorts last). Here MMR, which
sorts first and so *listens* for every peer's leaf connection, runs as the
cluster: peers list all of its nodes and hold their link to any one of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NoStreamResponseError

from agency_client.sdk import Incoming
from broker.nats_users import add_agency_user
from broker.natsd import (
    country_leaf_accounts,
    find_nats_server,
    free_ports,
    render_config,
    save_plan,
    start_federation,
    write_config,
    write_leaf_seeds,
)
from broker.natsplan import CLUSTER_FILE, SEEDS_DIR, FederationPlan
from broker.natstls import write_throwaway_tls
from ixb.deployment import Layout
from protocols import subjects
from protocols.errors import ConfigError, UsageError
from protocols.examples import example_bodies
from protocols.identifiers import Principal, format_message_id
from protocols.keys import NkeySeed
from protocols.messages import Alert
from protocols.roles import Role
from tests.federation import run_ixb, running_federation
from tests.nats_fixtures import eventually
from transport.clock import wall_ms
from transport.connect import NatsAuth, connect, server_list
from transport.streams import INGRESS_STREAM, ensure_country_streams, publish_within

AGENCIES = {"MMR": ("MOHA-ATTU",), "MYS": ("RMP-ATIPSOM",), "THA": ("DSI-ATHD",)}


def cluster_plan(base: Path, **kw: object) -> FederationPlan:
    plan = FederationPlan.create(
        list(AGENCIES), AGENCIES, base, ports=free_ports(), clusters={"MMR": 3}, **kw
    )  # type: ignore[arg-type]
    write_throwaway_tls(plan)
    return plan


async def mmr_hub(plan: FederationPlan) -> NatsClient:
    return await connect(
        plan.client_url("MMR"),
        auth=plan.hub_credentials("MMR"),
        name="test-hub",
        ca_file=plan.client_ca_file("MMR"),
    )


def test_a_clustered_country_has_three_named_nodes_with_their_own_ports_and_dirs(
    tmp_path: Path,
) -> None:
    plan = cluster_plan(tmp_path)
    nodes = plan.members("MMR")
    assert [n.name for n in nodes] == ["ixb-MMR-1", "ixb-MMR-2", "ixb-MMR-3"]
    assert plan.cluster_size("MMR") == 3 and plan.cluster_size("THA") == 1
    assert plan.node("THA").name == "ixb-THA"  # a single server keeps its name
    ports = [p for n in nodes for p in (n.client_port, n.monitor_port, n.leaf_port, n.cluster_port)]
    assert None not in ports and len(set(ports)) == len(ports)
    assert len({n.base_dir for n in nodes}) == 3
    urls = server_list(plan.client_url("MMR"))
    assert urls == [f"tls://127.0.0.1:{n.client_port}" for n in nodes]
    assert server_list(plan.client_url("THA")) == [
        f"tls://127.0.0.1:{plan.node('THA').client_port}"
    ]


@pytest.mark.parametrize("size", [2, 0])
def test_a_cluster_without_a_quorum_to_lose_a_node_is_refused(tmp_path: Path, size: int) -> None:
    with pytest.raises(ConfigError, match="1 node, or 3 or more"):
        FederationPlan.create(["MMR"], {}, tmp_path, ports=free_ports(), clusters={"MMR": size})


def test_clusters_for_a_country_outside_the_plan_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outside the plan"):
        FederationPlan.create(["MMR"], {}, tmp_path, ports=free_ports(), clusters={"THA": 3})


def test_a_cluster_plan_survives_json_and_an_older_plan_still_reads(tmp_path: Path) -> None:
    plan = cluster_plan(tmp_path)
    again = FederationPlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again.members("MMR") == plan.members("MMR")
    assert again.client_url("MMR") == plan.client_url("MMR")
    assert again.passwords["MMR/route"].startswith("$2")
    assert not again.route_passwords  # the plain route password is never saved
    single = FederationPlan.create(list(AGENCIES), AGENCIES, tmp_path / "v2", ports=free_ports())
    data = single.to_json()
    data["version"] = 2  # as written before clusters: no more_nodes, no names or route ports
    del data["more_nodes"]
    for node in data["nodes"].values():
        del node["server_name"], node["cluster_port"]
    old = FederationPlan.from_json(data)
    assert old.nodes == single.nodes and old.members("THA") == (single.node("THA"),)


def test_the_route_login_is_kept_beside_each_node_and_not_in_its_config(tmp_path: Path) -> None:
    plan = cluster_plan(tmp_path)
    password = plan.route_passwords["MMR"]
    for index, node in enumerate(plan.members("MMR"), start=1):
        config = write_config(plan, "MMR", index=index).read_text()
        login = node.base_dir / SEEDS_DIR / CLUSTER_FILE
        assert stat.S_IMODE(login.stat().st_mode) == 0o600
        text = login.read_text()
        assert password not in config and f'include "{SEEDS_DIR}/{CLUSTER_FILE}"' in config
        assert f'server_name: "{node.name}"' in config
        assert f'listen: "127.0.0.1:{node.cluster_port}"' in config
        # every node lists the same routes, and checks the same bcrypt hash
        routes = [f"@127.0.0.1:{n.cluster_port}" for n in plan.members("MMR")]
        assert all(route in text for route in routes)
        hashed = plan.passwords["MMR/route"]
        assert hashed in text and bcrypt.checkpw(password.encode(), hashed.encode())
        assert "verify: true" in config.split("cluster {", 1)[1]  # mutual TLS on routes
    # a single server has no cluster block and no login file
    assert "cluster {" not in write_config(plan, "THA").read_text()
    assert not (plan.node("THA").base_dir / SEEDS_DIR / CLUSTER_FILE).exists()


def test_nats_server_accepts_every_node_and_peers_dial_every_node(tmp_path: Path) -> None:
    plan = cluster_plan(tmp_path)
    binary = find_nats_server()
    configs = [write_config(plan, "MMR", index=i) for i in (1, 2, 3)]
    configs += [write_config(plan, c) for c in ("MYS", "THA")]
    for config in configs:
        check = subprocess.run(
            [str(binary), "-t", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, f"{config}: {check.stdout}{check.stderr}"
    mys = configs[3].read_text()
    for node in plan.members("MMR"):
        assert f'"nats-leaf://127.0.0.1:{node.leaf_port}"' in mys


async def test_an_agency_approved_in_a_clustered_country_can_log_in_at_every_node(
    tmp_path: Path,
) -> None:
    plan = cluster_plan(tmp_path)
    plan_path = tmp_path / "plan.json"
    save_plan(plan, plan_path)
    for index in (1, 2, 3):
        write_leaf_seeds(plan, "MMR", index=index)
    newcomer = NkeySeed.generate()
    async with start_federation(plan):
        with pytest.raises(UsageError, match="cluster of 3"):
            add_agency_user(plan_path, _mmr("NEW"), nkey=newcomer.public, pid=os.getpid())
        add_agency_user(plan_path, _mmr("NEW"), nkey=newcomer.public)
        for url in server_list(plan.client_url("MMR")):

            async def logs_in(url: str = url) -> bool:
                try:
                    nc = await connect(
                        url,
                        auth=NatsAuth(seed=newcomer),
                        name="newcomer",
                        ca_file=plan.client_ca_file("MMR"),
                        max_reconnect_attempts=1,
                        give_up_after=2,
                        quiet=True,
                    )
                except Exception:  # noqa: BLE001 - refused until the node reloaded
                    return False
                await nc.close()
                return True

            await eventually(logs_in, 10, f"the new agency logs in at {url}", step=0.2)


def _mmr(name: str) -> Principal:
    return Principal("MMR", name)


async def test_a_peer_keeps_its_link_when_the_cluster_node_holding_it_dies(tmp_path: Path) -> None:
    """MMR as three nodes, THA and MYS dialing it: alerts cross both ways; the node holding
    MYS's leaf connection is killed; MYS holds its link to another node within seconds and
    the next alerts cross both ways too."""
    unit = [Role.TRAFFICKING_UNIT]
    agencies = {"MMR/MOHA-ATTU": unit, "MYS/RMP-ATIPSOM": unit, "THA/DSI-ATHD": unit}
    async with running_federation(
        tmp_path, agencies, layout=Layout(nats_clusters={"MMR": 3})
    ) as fed:
        plan = fed.deployment.plan
        assert "replicas = 3" in fed.deployment.hub_config("MMR").read_text()
        mmr = await fed.client("MMR/MOHA-ATTU")
        mys = await fed.client("MYS/RMP-ATIPSOM")

        async def crosses(sender, recipient, to: str) -> None:
            sent = await sender.send(_alert(), [to])
            deadline = asyncio.get_running_loop().time() + 40
            while asyncio.get_running_loop().time() < deadline:
                for item in await recipient.fetch(timeout=0.5):
                    await item.ack()
                    if isinstance(item, Incoming) and item.header.id == sent:
                        return
            raise AssertionError(f"{format_message_id(sent)} never reached {to}")

        await crosses(mys, mmr, "MMR/MOHA-ATTU")
        await crosses(mmr, mys, "MYS/RMP-ATIPSOM")
        holder = None
        for server in fed.servers.nodes("MMR"):  # type: ignore[attr-defined]
            if "MYS_LINK" in await server.leaf_accounts():
                holder = server
        assert holder is not None
        await holder.kill()

        async def moved() -> bool:
            return "MYS_LINK" in await country_leaf_accounts(plan, "MMR")

        await eventually(moved, 15, "MYS's link held by another MMR node", step=0.2)
        await crosses(mys, mmr, "MMR/MOHA-ATTU")
        await crosses(mmr, mys, "MYS/RMP-ATIPSOM")


def _alert() -> Alert:
    body = example_bodies(wall_ms())["alert"]
    assert isinstance(body, Alert)
    return body


async def test_a_publish_waits_out_the_election_after_its_stream_leader_dies(
    tmp_path: Path,
) -> None:
    """An R3 stream of a clustered country loses its leader: the publish retried with the
    same Nats-Msg-Id (what the hub does for a queued lookup) is stored once, on a new leader."""
    plan = cluster_plan(tmp_path)
    async with start_federation(plan) as servers:
        nc = await mmr_hub(plan)
        try:
            js = nc.jetstream()
            await ensure_country_streams(js, "MMR", AGENCIES["MMR"], replicas=3)
            info = await js.stream_info(INGRESS_STREAM)
            assert info.config.num_replicas == 3 and info.cluster is not None
            leader = info.cluster.leader
            (victim,) = [s for s in servers.nodes("MMR") if s.node.name == leader]
            await victim.kill()
            subject = subjects.ingress(Principal("MMR", "MOHA-ATTU"))
            headers = {"Nats-Msg-Id": "one"}
            ack = await publish_within(js, subject, b"x", headers=headers, timeout=30)
            again = await publish_within(js, subject, b"x", headers=headers, timeout=30)
            assert again.duplicate and again.seq == ack.seq
            after = await js.stream_info(INGRESS_STREAM)
            assert after.state.messages == 1
            assert after.cluster is not None and after.cluster.leader not in (None, leader)
        finally:
            await nc.close()


async def test_a_publish_to_no_stream_gives_up_at_its_deadline(tmp_path: Path) -> None:
    plan = cluster_plan(tmp_path)
    async with start_federation(plan):
        nc = await mmr_hub(plan)
        try:
            started = time.monotonic()
            with pytest.raises((NoStreamResponseError, TimeoutError)):
                await publish_within(
                    nc.jetstream(), "ixb.MMR.nowhere", b"x", headers={}, timeout=1.5
                )
            assert 1.0 <= time.monotonic() - started < 5
        finally:
            await nc.close()


async def test_ixb_hub_nats_config_renders_each_node_from_the_plan(tmp_path: Path) -> None:
    plan = cluster_plan(tmp_path)
    plan_path = tmp_path / "plan.json"
    save_plan(plan, plan_path)
    for index in (1, 2, 3):
        done = await run_ixb(
            "hub",
            "nats-config",
            "--plan",
            str(plan_path),
            "--country",
            "MMR",
            "--node",
            str(index),
            "--json",
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["server_name"] == f"ixb-MMR-{index}"
        assert out["config"] == render_config(plan, "MMR", index=index)
    written = tmp_path / "out" / "THA.conf"
    done = await run_ixb(
        "hub", "nats-config", "--plan", str(plan_path), "--country", "THA", "--out", str(written)
    )
    assert done.returncode == 0 and written.read_text() == render_config(plan, "THA")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    beyond = await run_ixb(
        "hub", "nats-config", "--plan", str(plan_path), "--country", "THA", "--node", "2"
    )
    assert beyond.returncode == 2 and "error ixb.E_CONFIG" in beyond.stderr
    assert "Traceback" not in beyond.stderr and "no node 2" in beyond.stderr
