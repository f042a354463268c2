"""The systemd units in deploy/systemd run real commands, as non-root users, confined."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from ixb.cli import build_parser

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
INSTANCE = {
    "ixb-nats@.service": "THA",
    "ixb-hub@.service": "THA",
    "ixb-respond@.service": "MYS-IMMIGRATION",
}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "UMask": "0077",
    "Restart": "on-failure",
}


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((UNITS / name).read_text(encoding="utf-8"))
    return parser


def _argv(name: str) -> list[str]:
    start = _unit(name)["Service"]["ExecStart"].replace("%i", INSTANCE[name])
    return shlex.split(start)


def test_every_unit_is_tested_here() -> None:
    assert {p.name for p in UNITS.glob("*.service")} == set(INSTANCE)


@pytest.mark.parametrize("name", sorted(INSTANCE))
def test_each_service_runs_confined_as_its_own_user(name: str) -> None:
    service = _unit(name)["Service"]
    assert service["User"] not in {"", "root", "0"}
    assert service["Group"] not in {"", "root", "0"}
    for key, value in HARDENING.items():
        assert service[key] == value, f"{name}: {key}"
    writable = service["ReadWritePaths"].split()
    assert writable and all(p.startswith(("/var/lib/ixb/", "/run/")) for p in writable)
    assert _unit(name)["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize(
    ("name", "command", "option"),
    [
        ("ixb-hub@.service", ("hub", "run"), ("config", "/etc/ixb/hubs/THA.toml")),
        (
            "ixb-respond@.service",
            ("agency", "respond"),
            ("profile", "/var/lib/ixb/agencies/MYS-IMMIGRATION/profile.toml"),
        ),
    ],
)
def test_the_ixb_units_start_commands_ixb_has(
    name: str, command: tuple[str, str], option: tuple[str, str]
) -> None:
    argv = _argv(name)
    assert argv[0] == "/opt/ixb/venv/bin/ixb"
    assert tuple(argv[1:3]) == command
    args = build_parser(argv[1:]).parse_args(argv[1:])
    assert callable(args.func)
    assert str(getattr(args, option[0])) == option[1]
    assert "%i" in _unit(name)["Service"]["EnvironmentFile"]  # the passphrase, per instance


def test_the_hub_starts_after_its_countrys_server_and_writes_only_its_state() -> None:
    unit = _unit("ixb-hub@.service")
    assert "ixb-nats@%i.service" in unit["Unit"]["After"].split()
    assert unit["Service"]["ReadWritePaths"] == "/var/lib/ixb/hub/%i"


def test_the_server_unit_runs_nats_server_with_its_country_config_and_reloads_by_sighup() -> None:
    argv = _argv("ixb-nats@.service")
    assert argv == ["/opt/ixb/venv/bin/nats-server", "-c", "/etc/ixb/nats/THA/nats.conf"]
    assert _unit("ixb-nats@.service")["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
