"""``--json`` on every command: one object on stdout, every time ISO 8601 UTC.

The whole argparse tree is walked, so a new command without ``--json`` fails
here unless it is listed, with its reason, in ``transport.cliout.JSON_EXEMPT``.
The offline commands run as real processes on a fresh deployment (keys,
configs, registry, audit log; no NATS server needed); the connected ones are
checked where their tests already run a federation (test_cli_federation,
test_msgstore_cli, test_audit_federation).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.audit.log import AuditLog
from broker.auditing import to_record
from broker.cli import load_hub_parts
from broker.config import load_config
from ixb.cli import GROUPS, build_parser
from ixb.deployment import Deployment, create_deployment
from protocols.audit import AuditEvent, make_entry
from protocols.errors import IoError
from protocols.identifiers import hub_of
from protocols.roles import Role
from tests.test_cli import TD3, VECTORS, ixb
from transport.cliout import JSON_EXEMPT, emit, error_document

PASSPHRASE = "json test passphrase"
ISO_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
TIME_KEYS = {"at", "created", "expires", "time", "valid_until", "directory_expires"}
"""Keys that hold a time (also any key ending in ``_at`` or ``_until``)."""


def leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
    for action in subs:
        for name, child in action.choices.items():
            yield from leaf_commands(child, (*path, name))


def test_every_leaf_command_takes_json() -> None:
    leaves = dict(leaf_commands(build_parser()))
    assert len(leaves) > 40  # the walk found the tree
    missing = [
        name
        for name, parser in leaves.items()
        if name not in JSON_EXEMPT
        and not any("--json" in a.option_strings for a in parser._actions)
    ]
    assert missing == []
    assert set(JSON_EXEMPT) <= set(leaves)  # no stale exemption


def test_the_command_table_is_what_each_module_registers() -> None:
    """``ixb`` loads only its command's module: the table it chooses by must be true."""
    for module, commands in GROUPS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert tuple(sub.choices) == commands, module
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(top.choices) == [c for commands in GROUPS.values() for c in commands]


def test_a_command_line_loads_only_its_own_commands() -> None:
    probe = (
        "import sys; from ixb.cli import build_parser; build_parser(sys.argv[1:]); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('broker', 'aiohttp.web')))))"
    )

    def loaded(*argv: str) -> set[str]:
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True
        )
        return set(done.stdout.split())

    assert loaded("inbox") == set()  # an officer's command loads no hub and no web server
    assert {"broker.service", "aiohttp.web"} <= loaded("hub", "run")
    assert {"broker.service", "aiohttp.web"} <= loaded()  # help: everything


def times_in(doc: object, key: str = "") -> Iterator[tuple[str, object]]:
    """Every (key, value) in ``doc`` whose key names a time, at any depth."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from times_in(v, k)
    elif isinstance(doc, list):
        for item in doc:
            yield from times_in(item, key)
    elif key in TIME_KEYS or key.endswith(("_at", "_until")):
        yield key, doc


def one_object(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object a ``--json`` command printed, its times checked."""
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # one document, nothing else on stdout
    assert isinstance(doc, dict), doc
    assert_times_iso(doc)
    return doc


def assert_times_iso(doc: object) -> None:
    def keys(d: object) -> Iterator[str]:
        if isinstance(d, dict):
            for k, v in d.items():
                yield k
                yield from keys(v)
        elif isinstance(d, list):
            for item in d:
                yield from keys(item)

    assert not [k for k in keys(doc) if k.endswith("_ms")], doc  # no raw milliseconds
    for key, value in times_in(doc):
        if value is None:
            continue
        assert isinstance(value, str) and ISO_UTC.fullmatch(value), (key, value)
        assert datetime.fromisoformat(value).tzinfo == UTC


def test_times_in_finds_nested_times_and_the_check_refuses_other_forms() -> None:
    doc = {"a": [{"at": "2026-11-30T05:12:00.123Z"}], "b": {"revoked_at": None, "x": 1}}
    assert list(times_in(doc)) == [("at", "2026-11-30T05:12:00.123Z"), ("revoked_at", None)]
    assert_times_iso(doc)
    for bad in ({"at": 1764479520123}, {"at": "2026-11-30 05:12:00.123Z"}, {"created_ms": 1}):
        with pytest.raises(AssertionError):
            assert_times_iso(bad)


def test_emit_prints_one_object_or_the_text() -> None:
    for as_json, expected in ((True, '{\n "a": "\\u00e9"\n}\n'), (False, "text\n")):
        out = io.StringIO()
        with redirect_stdout(out):
            emit(argparse.Namespace(json=as_json), "text\n", {"a": "é"})
        assert out.getvalue() == expected
    with redirect_stdout(io.StringIO()), pytest.raises(TypeError):  # a bug, not "str(x)"
        emit(argparse.Namespace(json=True), "", {"raw": b"\x00"})
    assert error_document(IoError("disk full")) == {
        "error": {"code": "ixb.E_IO", "detail": "disk full"}
    }


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return create_deployment(
        tmp_path_factory.mktemp("json") / "dep",
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT], "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
    )


def test_keys_mrz_and_envelope_commands(tmp_path: Path) -> None:
    env = {"IXB_PASSPHRASE": PASSPHRASE}
    key = tmp_path / "a.key"
    made = one_object(
        ixb(
            "keys",
            "new",
            "--agency",
            "THA/DSI-ATHD",
            "--out",
            str(key),
            "--kdf",
            "interactive",
            "--json",
            env=env,
        )
    )
    assert made["file"] == str(key) and made["principal"] == "THA/DSI-ATHD"
    shown = one_object(ixb("keys", "show", str(key), "--json"))
    assert shown["fingerprints"] == made["fingerprints"]
    checked = one_object(ixb("mrz", "check", "--json", *TD3))
    assert checked["document_number"] == "L898902C3"
    keys = [f"--key={VECTORS / n}" for n in ("THA-DSI-ATHD.key", "THA-HUB.key", "MYS-HUB.key")]
    inspected = ixb("envelope", "inspect", str(VECTORS / "alert.ixb"), *keys, "--json")
    doc = one_object(inspected)
    assert doc["created"] and doc["hops"] and "valid" in doc["signature"]


def test_a_failure_under_json_keeps_its_line_and_prints_an_error_object(
    dep: Deployment,
) -> None:
    # the hub never ran: no audit log to export
    failed = ixb(
        "audit",
        "export",
        "--config",
        str(dep.hub_config("THA")),
        "--out",
        str(dep.base / "x"),
        "--json",
    )
    assert failed.returncode == 2
    (line,) = failed.stderr.splitlines()
    assert line.startswith("error ixb.E_IO: ")
    assert json.loads(failed.stdout) == {
        "error": {"code": "ixb.E_IO", "detail": line.removeprefix("error ixb.E_IO: ")}
    }
    without = ixb("audit", "export", "--config", str(dep.hub_config("THA")), "--out", "x")
    assert without.returncode == 2 and without.stdout == ""  # text mode: stderr only


def test_profile_commands(dep: Deployment, tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    profile = dep.profile("THA/DSI-ATHD")
    added = one_object(ixb("profile", "add", "dsi", str(profile), "--json", env=env))
    assert added == {"name": "dsi", "file": str(profile.resolve())}
    used = one_object(ixb("profile", "use", "dsi", "--json", env=env))
    assert used["current"] == "dsi"
    listed = one_object(ixb("profile", "ls", "--json", env=env))
    assert listed["current"] == "dsi" and [p["name"] for p in listed["profiles"]] == ["dsi"]
    shown = one_object(ixb("profile", "show", "--json", env=env))
    assert shown["agency"] == "THA/DSI-ATHD"


def test_federation_commands(
    dep: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"IXB_PASSPHRASE": PASSPHRASE}
    monkeypatch.setenv("IXB_PASSPHRASE", PASSPHRASE)
    load_hub_parts(load_config(dep.hub_config("THA")))  # a hub's first start: version 1 held
    fed = dep.base / "federation.toml"
    shown = one_object(ixb("federation", "show", str(fed), "--json"))
    assert shown["version"] == 1 and set(shown["hubs"]) == {"THA", "MYS"}
    root = one_object(ixb("federation", "verify", str(fed), "--json"))
    assert root["verdict"] == "trust root" and root["digest"] == shown["digest"]
    v2 = tmp_path / "v2.toml"
    proposed = one_object(
        ixb(
            "federation",
            "propose",
            "--current",
            str(fed),
            "--out",
            str(v2),
            "--threshold",
            "1",
            "--json",
        )
    )
    assert proposed["version"] == 2 and proposed["changes"]
    for country in ("THA", "MYS"):
        signed = one_object(
            ixb(
                "federation",
                "sign",
                str(v2),
                "--key",
                str(dep.key_file(hub_of(country))),
                "--json",
                env=env,
            )
        )
        assert signed["signed_as"] == f"{country}/HUB"
    assert signed["signatures"] == ["THA", "MYS"]
    verified = one_object(ixb("federation", "verify", str(v2), "--previous", str(fed), "--json"))
    assert verified["verdict"] == "successor" and sorted(verified["signers"]) == ["MYS", "THA"]
    installed = one_object(
        ixb("federation", "install", str(v2), "--config", str(dep.hub_config("THA")), "--json")
    )
    assert installed["installed"] is True and installed["version"] == 2


def test_hub_registry_and_audit_commands(dep: Deployment) -> None:
    config = str(dep.hub_config("THA"))
    env = {"IXB_NEW_PASSWORD": "a long enough password"}
    listed = one_object(ixb("hub", "agency", "list", "--config", config, "--json"))
    assert [a["agency"] for a in listed["agencies"]] == ["THA/DSI-ATHD"]
    shown = one_object(ixb("hub", "agency", "show", "THA/DSI-ATHD", "--config", config, "--json"))
    assert shown["state"] == "active" and shown["roles"] == ["trafficking_unit"]
    added = one_object(
        ixb("hub", "user", "add", "ana", "--role", "liaison", "--config", config, "--json", env=env)
    )
    # no hub runs: recorded, applied when it starts
    assert added["user"] == "ana" and added["applied"] is False and added["change"] >= 1
    users = one_object(ixb("hub", "user", "list", "--config", config, "--json"))
    assert {"name": "ana", "role": "liaison"} in users["users"]
    hashed = one_object(
        ixb("hub", "passwd", "--name", "ana", "--role", "auditor", "--json", env=env)
    )
    assert hashed["role"] == "auditor" and hashed["password_hash"]

    hub_config = load_config(dep.hub_config("THA"))
    log = AuditLog(hub_config.path(hub_config.hub.state_dir) / "audit.sqlite")
    try:
        log.append(
            [
                to_record(
                    make_entry(
                        "THA/HUB", 1_764_479_520_123, AuditEvent.AUDIT_READ, actor="cli:test"
                    )
                )
            ]
        )
    finally:
        log.close()
    found = one_object(ixb("audit", "search", "--config", config, "--json"))
    assert [e["at"] for e in found["entries"]] == ["2025-11-30T05:12:00.123Z"]


def test_enrol_approve_and_rotate_offline(dep: Deployment, tmp_path: Path) -> None:
    env = {"IXB_PASSPHRASE": PASSPHRASE}
    config = str(dep.hub_config("THA"))
    out = tmp_path / "unit"
    enrolled = one_object(
        ixb(
            "agency",
            "enroll",
            "--agency",
            "THA/NEW-UNIT",
            "--server",
            dep.plan.client_url("THA"),
            "--out",
            str(out),
            "--federation",
            str(dep.base / "federation.toml"),
            "--json",
            env=env,
        )
    )
    assert enrolled["agency"] == "THA/NEW-UNIT" and enrolled["nats_nkey"].startswith("U")
    approved = one_object(
        ixb(
            "hub",
            "agency",
            "approve",
            enrolled["request"],
            "--role",
            "trafficking_unit",
            "--config",
            config,
            "--json",
        )
    )
    assert approved["fingerprints"] == enrolled["fingerprints"] and approved["applied"] is False
    rotated = one_object(ixb("keys", "rotate", "--profile", enrolled["profile"], "--json", env=env))
    assert rotated["fingerprints"]["signing"] != enrolled["fingerprints"]["signing"]
    moved = one_object(
        ixb(
            "hub",
            "agency",
            "rotate",
            "THA/NEW-UNIT",
            "--request",
            rotated["request"],
            "--config",
            config,
            "--json",
        )
    )
    assert moved["fingerprints"] == rotated["fingerprints"] and moved["previous_valid_until"]
    roles = one_object(
        ixb(
            "hub",
            "agency",
            "roles",
            "THA/NEW-UNIT",
            "--role",
            "investigator",
            "--role",
            "trafficking_unit",
            "--config",
            config,
            "--json",
        )
    )
    assert roles["roles"] == ["investigator", "trafficking_unit"]
    shown = one_object(ixb("hub", "agency", "show", "THA/NEW-UNIT", "--config", config, "--json"))
    assert [p["fingerprint"] for p in shown["previous"]] == [enrolled["fingerprints"]["signing"]]
