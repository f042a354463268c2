"""docker-compose.yml and ``ixb compose prepare``, checked without docker.

The generator runs once into a temporary directory standing in for
``deploy/compose/``; every path the compose file mounts or names must then
exist there, the NATS configs must pass ``nats-server -t``, and hub configs
and agency profiles must load and point at the compose services.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from agency_client.profile import load_profile
from broker.config import load_config
from broker.natsd import find_nats_server, free_ports, load_plan, render_config, save_plan
from broker.natsplan import CONTAINER_PORTS, FederationPlan
from ixb.compose import CONTAINER_BIND, HUB_HTTP_PORTS, MOUNT, NATS_TLS_DIR, nats_service
from ixb.demo import AGENCIES, PASSPHRASE
from protocols.errors import ConfigError
from protocols.identifiers import hub_of
from protocols.keys import KdfProfile, open_keyfile

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COUNTRIES = ("MMR", "MYS", "THA")
PREPARED = "./deploy/compose"


COMPOSE_PASSPHRASE = "compose test passphrase"


def ixb(
    *args: str, passphrase: str | None = COMPOSE_PASSPHRASE
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IXB_PASSPHRASE"}
    if passphrase is not None:
        env["IXB_PASSPHRASE"] = passphrase
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
        assert f"source: {PREPARED}/nats/{country}/seeds\n        target: /etc/nats/seeds\n" in nats
        assert f"source: {PREPARED}/tls\n        target: {NATS_TLS_DIR}\n" in nats
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
    # templates on local ports. `-t` loads the certificates, so the check
    # runs on a copy that names them where they are on this machine.
    binary = find_nats_server()
    for country in COUNTRIES:
        conf = (out / "nats" / f"{country}.conf").read_text(encoding="utf-8")
        assert f'cert_file: "{NATS_TLS_DIR}/{country}.pem"' in conf
        # beside seeds/, which it includes, as /etc/nats/seeds is beside /etc/nats/nats.conf
        local = out / "nats" / country / "nats-local.conf"
        local.write_text(conf.replace(str(NATS_TLS_DIR), str(out / "tls")), encoding="utf-8")
        result = subprocess.run(
            [str(binary), "-t", "-c", str(local)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        local.unlink()
        assert result.returncode == 0, result.stderr


def test_certificates_name_the_service_and_keys_are_private(out: Path) -> None:
    ca = x509.load_pem_x509_certificate((out / "tls" / "ca.pem").read_bytes())
    for country in COUNTRIES:
        cert = x509.load_pem_x509_certificate((out / "tls" / f"{country}.pem").read_bytes())
        assert cert.issuer == ca.subject
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert nats_service(country) in names.get_values_for_type(x509.DNSName)
        key = out / "tls" / f"{country}-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not list((out / "tls").glob("ca-key*"))  # the CA's key never touches the disk


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
        remotes = re.findall(r'"nats-leaf://([\w.-]+):(\d+)"', conf)  # no userinfo
        assert all(port == str(leaf) for _, port in remotes)
        dialled[country] = {host for host, _ in remotes}
        # each remote signs with the seed of the file it includes, mounted from seeds/
        for host, _ in remotes:
            peer = host.removeprefix("nats-").upper()
            assert f'include "seeds/leaf-{peer}.conf"' in conf
            seed_file = out / "nats" / country / "seeds" / f"leaf-{peer}.conf"
            assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
            assert re.fullmatch(r'seed: "SU[A-Z2-7]{56}"\n', seed_file.read_text())
        assert not re.search(r"SU[A-Z2-7]{56}", conf) and "password" not in conf.replace(
            'user: "sys", password: "$2b$', ""
        )
    # The smaller code listens: THA dials MMR and MYS, MYS dials MMR.
    assert dialled == {"MMR": set(), "MYS": {"nats-mmr"}, "THA": {"nats-mmr", "nats-mys"}}


def test_hub_configs_load_and_point_at_compose_services(out: Path) -> None:
    for country in COUNTRIES:
        cfg = load_config(out / "hubs" / f"{country}.toml", env={})
        assert cfg.nats.url == f"tls://{nats_service(country)}:{CONTAINER_PORTS.client}"
        assert cfg.nats.ca_file == f"{MOUNT}/tls/ca.pem"
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
        assert profile.nats.url == f"tls://{nats_service(country)}:{CONTAINER_PORTS.client}"
        assert profile.nats.ca_file == f"{MOUNT}/tls/ca.pem"
        for path in (profile.agency.key_file, profile.agency.federation_file):
            assert on_host(out, path).exists(), path


def test_compose_has_no_default_passphrase_and_prepare_uses_the_one_set(
    out: Path, tmp_path: Path
) -> None:
    assert PASSPHRASE not in COMPOSE
    assert re.search(r'IXB_PASSPHRASE: "\$\{IXB_PASSPHRASE:\?[^}]+\}"', COMPOSE)  # required
    key = out / "keys" / "THA-HUB.key"
    assert open_keyfile(key.read_bytes(), COMPOSE_PASSPHRASE).principal == hub_of("THA")
    kdf = json.loads(key.read_text())["kdf"]
    ops, mem = KdfProfile.MODERATE.params
    assert kdf["opslimit"] >= ops and kdf["memlimit"] >= mem
    for missing in (None, ""):
        result = ixb("compose", "prepare", "--out", str(tmp_path / "x"), passphrase=missing)
        assert result.returncode == 2
        assert result.stderr.startswith("error ixb.E_USAGE: set $IXB_PASSPHRASE"), result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert not (tmp_path / "x").exists()


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
