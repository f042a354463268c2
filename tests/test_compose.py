"""docker-compose.yml and ``ixb compose prepare``, checked without docker.

The generator runs once into a temporary directory standing in for
``deploy/compose/``; every path the compose file mounts or names must then
exist there, the NATS configs must pass ``nats-server -t``, and hub configs
and agency profiles must load and point at the compose services.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agency_client.profile import load_profile
from broker.config import load_config
from broker.natsd import find_nats_server, free_ports, load_plan, render_config, save_plan
from broker.natsplan import CONTAINER_PORTS, FederationPlan
from ixb.compose import CONTAINER_BIND, HUB_HTTP_PORTS, MOUNT, nats_service
from ixb.demo import AGENCIES, PASSPHRASE
from protocols.errors import ConfigError
from protocols.identifiers import hub_of
from protocols.keys import open_keyfile

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COUNTRIES = ("MMR", "MYS", "THA")
PREPARED = "./deploy/compose"


def ixb(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IXB_PASSPHRASE"}
    return subprocess.run(
        [sys.executable, "-m", "ixb", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``make compose-prepare`` writes, run through the real CLI."""
    target = tmp_path_factory.mktemp("compose") / "deploy-compose"
    result = ixb("compose", "prepare", "--out", str(target))
    assert result.returncode == 0, result.stderr
    return target


def services() -> dict[str, str]:
    """Service name → its block of docker-compose.yml (a tiny YAML subset, no PyYAML)."""
    body = COMPOSE.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    blocks = re.split(r"^  ([a-z][a-z0-9-]*):\n", body, flags=re.MULTILINE)
    return dict(zip(blocks[1::2], blocks[2::2], strict=True))


def on_host(out: Path, reference: str) -> Path:
    """A path the compose file names (``./deploy/compose/…`` or ``/ixb/…``) in ``out``."""
    for prefix in (PREPARED, str(MOUNT)):
        if reference == prefix or reference.startswith(prefix + "/"):
            return out / reference[len(prefix) :].lstrip("/")
    raise AssertionError(f"{reference} is neither under {PREPARED} nor {MOUNT}")


def test_services_and_images() -> None:
    found = services()
    nats = {nats_service(c) for c in COUNTRIES}
    hubs = {f"hub-{c.lower()}" for c in COUNTRIES}
    assert set(found) == nats | hubs | {"responder-mys"}
    version = subprocess.run(
        [str(find_nats_server()), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    major_minor = re.search(r"v(\d+\.\d+)\.", version)
    assert major_minor is not None, version
    for name in nats:  # the official image, the version the test suite runs
        assert f"image: nats:{major_minor[1]}\n" in found[name]
        assert 'command: ["-c", "/etc/nats/nats.conf"]' in found[name]
        assert "      - nats-" in found[name] and ":/data\n" in found[name]  # named volume
    for name in hubs | {"responder-mys"}:
        assert "<<: *ixb" in found[name]
    assert "FROM python:3.11-slim" in (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_everything_mounted_or_named_exists(out: Path) -> None:
    references = set(re.findall(r"\./deploy/compose[^\s\"':,}]*", COMPOSE))
    references |= set(re.findall(rf"{MOUNT}/[\w./-]+", COMPOSE))
    assert len(references) > 10
    for reference in sorted(references):
        assert on_host(out, reference).exists(), reference
    found = services()
    for country in COUNTRIES:
        nats = found[nats_service(country)]
        assert f"source: {PREPARED}/nats/{country}.conf\n" in nats
        hub = found[f"hub-{country.lower()}"]
        assert f'"--config", "{MOUNT}/hubs/{country}.toml"' in hub
        assert f"depends_on: [{nats_service(country)}]" in hub
        port = HUB_HTTP_PORTS[country]
        assert f'ports: ["127.0.0.1:{port}:{port}"]' in hub  # never on other interfaces
        assert f"source: {PREPARED}/state/{country}\n" in hub
    responder = found["responder-mys"]
    assert f"{MOUNT}/agencies/MYS-IMMIGRATION.toml" in responder
    assert f"{MOUNT}/MYS-documents.json" in responder


def test_prepared_files_are_private_and_ignored(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "/deploy/compose/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    # The build context is an allow list: no key or password can reach an image.
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in dockerignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert not any("deploy" in rule for rule in rules)


def test_nats_configs_pass_nats_server_check(out: Path) -> None:
    # The rendered docker configs as they are: `nats-server -t` parses and
    # checks them (unknown fields, accounts, users, permissions) but neither
    # creates the store dir (/data) nor resolves leaf remote hosts
    # (nats-mys …), checked on 2.15.1, so no copy with local paths is needed.
    # Running them is what tests/test_nats_topology.py does with the same
    # templates on local ports.
    binary = find_nats_server()
    for country in COUNTRIES:
        result = subprocess.run(
            [str(binary), "-t", "-c", str(out / "nats" / f"{country}.conf")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_nats_configs_listen_in_container_and_dial_service_names(out: Path) -> None:
    plan = load_plan(out / "plan.json")
    client, monitor, leaf = CONTAINER_PORTS
    dialled: dict[str, set[str]] = {}
    for country in COUNTRIES:
        conf = (out / "nats" / f"{country}.conf").read_text(encoding="utf-8")
        assert conf == render_config(plan, country)  # the launcher's own rendering
        assert f'listen: "0.0.0.0:{client}"' in conf
        assert f'http: "0.0.0.0:{monitor}"' in conf
        assert 'store_dir: "/data"' in conf
        assert (f'listen: "0.0.0.0:{leaf}"' in conf) == (country != "THA")  # THA only dials
        remotes = re.findall(r'url: "nats-leaf://leaf-(\w+):[^@"]+@([\w.-]+):(\d+)"', conf)
        assert all(user == country and port == str(leaf) for user, _, port in remotes)
        dialled[country] = {host for _, host, _ in remotes}
    # The smaller code listens: THA dials MMR and MYS, MYS dials MMR.
    assert dialled == {"MMR": set(), "MYS": {"nats-mmr"}, "THA": {"nats-mmr", "nats-mys"}}


def test_hub_configs_load_and_point_at_compose_services(out: Path) -> None:
    for country in COUNTRIES:
        cfg = load_config(out / "hubs" / f"{country}.toml", env={})
        assert cfg.nats.url == f"nats://{nats_service(country)}:{CONTAINER_PORTS.client}"
        assert (cfg.http.host, cfg.http.port) == (CONTAINER_BIND, HUB_HTTP_PORTS[country])
        assert set(cfg.links) == set(COUNTRIES) - {country}
        paths = [cfg.hub.key_file, cfg.hub.federation_file, cfg.hub.state_dir]
        paths += [agency.key for agency in cfg.agency]
        assert len(cfg.agency) == sum(a.startswith(f"{country}/") for a in AGENCIES)
        for path in paths:
            assert path.startswith(f"{MOUNT}/"), path
            assert on_host(out, path).exists(), path


def test_agency_profiles_point_at_their_countrys_server(out: Path) -> None:
    for agency in AGENCIES:
        country, name = agency.split("/")
        profile = load_profile(out / "agencies" / f"{country}-{name}.toml")
        assert profile.nats.url == f"nats://{nats_service(country)}:{CONTAINER_PORTS.client}"
        for path in (profile.agency.key_file, profile.agency.federation_file):
            assert on_host(out, path).exists(), path


def test_compose_passphrase_default_opens_the_keys(out: Path) -> None:
    match = re.search(r'IXB_PASSPHRASE: "\$\{IXB_PASSPHRASE:-([^}]*)\}"', COMPOSE)
    assert match is not None
    assert match[1] == PASSPHRASE
    key = out / "keys" / "THA-HUB.key"
    assert open_keyfile(key.read_bytes(), match[1]).principal == hub_of("THA")


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
