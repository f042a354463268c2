"""Hub config: one typed file, env overrides, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import load_config
from protocols.errors import ConfigError

GOOD = """
[hub]
country = "THA"
key_file = "THA-HUB.key"
state_dir = "state"
federation_file = "federation.toml"

[nats]
url = "nats://127.0.0.1:4222"
user = "hub"
password = "secret"

[links.MYS]
user = "hub-link-MYS"
password = "p"

[http]
port = 8701

[policy.exchange]
MYS = ["alert", "receipt"]

[[agency]]
id = "THA/DSI-ATHD"
roles = ["trafficking_unit"]
key = "THA-DSI-ATHD.key"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_good_config_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), env={})
    assert cfg.country == "THA" and str(cfg.hub_id) == "THA/HUB"
    assert cfg.path(cfg.hub.key_file) == tmp_path / "THA-HUB.key"
    assert cfg.exchanged_types("MYS") == {"alert", "receipt"}
    assert cfg.exchanged_types("MMR") == frozenset()
    assert cfg.http.port == 8701


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "IXB_HUB__NATS__URL": "nats://10.0.0.1:4222",
        "IXB_HUB__HTTP__PORT": "9000",
        "IXB_HUB__LINKS__MYS__PASSWORD": "from-env",
    }
    cfg = load_config(write(tmp_path, GOOD), env=env)
    assert cfg.nats.url == "nats://10.0.0.1:4222"
    assert cfg.http.port == 9000
    assert cfg.links["MYS"].password == "from-env"


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (('country = "THA"', 'country = "XXA"'), "hub.country"),
        (("port = 8701", 'port = "eighty"'), "http.port"),
        (("port = 8701", "port = 70000"), "http.port"),
        (
            ("port = 8701", 'port = 8701\ntrusted_proxies = ["proxy.example"]'),
            "http.trusted_proxies[0]",
        ),
        (("[nats]", "[nats]\nspeed = 1"), "speed"),
        (('MYS = ["alert", "receipt"]', 'MYS = ["alert", "gossip"]'), "policy.exchange.MYS"),
        (('id = "THA/DSI-ATHD"', 'id = "MYS/DSI-ATHD"'), "agency[0].id"),
        (('roles = ["trafficking_unit"]', 'roles = ["spy"]'), "agency[0].roles"),
        (("[links.MYS]", "[links.THA]"), "links"),
        (('url = "nats://127.0.0.1:4222"\n', ""), "url"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: tuple[str, str], names: str) -> None:
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert names in info.value.detail, info.value.detail


def test_trusted_proxies_are_ip_addresses(tmp_path: Path) -> None:
    text = GOOD.replace("port = 8701", 'port = 8701\ntrusted_proxies = ["10.0.0.5", "::1"]', 1)
    assert load_config(write(tmp_path, text), env={}).http.trusted_proxies == ("10.0.0.5", "::1")


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[hub"), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env={})


def test_agency_rate_limit_overrides_the_policy(tmp_path: Path) -> None:
    text = GOOD + (
        '\n[[agency]]\nid = "THA/IMMIGRATION"\nroles = ["immigration"]\nkey = "k"\n'
        "max_per_minute = 60000\n"
    )
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.rate_limits() == {"THA/IMMIGRATION": (60_000, cfg.policy.burst)}
    with pytest.raises(ConfigError, match="max_per_minute"):
        load_config(write(tmp_path, text.replace("60000", "0")), env={})


def test_nats_ca_file_is_resolved_like_the_other_paths(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD), env={}).nats_ca_file() is None
    text = GOOD.replace('password = "secret"\n', 'password = "secret"\nca_file = "tls/ca.pem"\n')
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.nats_ca_file() == tmp_path / "tls" / "ca.pem"
    env = {"IXB_HUB__NATS__CA_FILE": "/etc/ixb/ca.pem"}
    assert load_config(write(tmp_path, GOOD), env=env).nats_ca_file() == Path("/etc/ixb/ca.pem")


def test_a_config_without_passwords_loads(tmp_path: Path) -> None:
    """Hubs log in with the nkeys sealed in their key file; passwords are the old way."""
    text = GOOD.replace('user = "hub"\npassword = "secret"\n', "").replace(
        'user = "hub-link-MYS"\npassword = "p"\n', ""
    )
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.nats.password is None and cfg.links["MYS"].password is None
