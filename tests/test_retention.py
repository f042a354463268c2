"""Retention per message type: the policy table, an agency's store (real SQLite, WAL
included) and the configs that set it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agency_client.msgstore import MessageStore
from agency_client.profile import load_profile
from broker.config import load_config
from ixb.deployment import create_deployment
from protocols.envelope import Header
from protocols.errors import ConfigError
from protocols.identifiers import Principal
from protocols.keys import Identity, KdfProfile
from protocols.limits import MS_PER_DAY
from protocols.messages import MESSAGE_TYPES
from protocols.retention import DEFAULT_DAYS, Retention, make_retention
from tests.test_msgstore import ME, NOW, header, keep


def test_built_in_days_name_every_type_and_overrides_apply() -> None:
    assert set(DEFAULT_DAYS) == set(MESSAGE_TYPES)
    policy = make_retention({"alert": 5}, None, "[store] days")
    assert policy.days_for("alert") == 5 and policy.days_for("mla.request") == 730
    flat = make_retention({"alert": 5}, 14, "[store] days")  # a default replaces the table
    assert flat.days_for("alert") == 5 and flat.days_for("mla.request") == 14
    assert make_retention({}, 0, "x").cutoff("alert", NOW) is None  # 0: for ever
    assert make_retention({}, 0, "x").shortest_days == 0


@pytest.mark.parametrize(
    ("overrides", "other", "fragment"),
    [
        ({"alerts": 5}, None, "unknown message type 'alerts'"),
        ({"alert": -1}, None, "[store] days.alert: days must be"),
        ({"alert": 40_000}, None, "days must be 0..36500"),
        ({}, -3, "default days must be"),
    ],
)
def test_bad_settings_are_named(
    overrides: dict[str, int], other: int | None, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_retention(overrides, other, "[store] days")
    assert fragment in caught.value.detail


@given(st.sampled_from(sorted(DEFAULT_DAYS)), st.integers(0, 3650), st.integers(0, 10**13))
def test_expired_exactly_after_its_days(type_name: str, days: int, stored: int) -> None:
    policy = Retention({type_name: days}, 1)
    now = stored + days * MS_PER_DAY
    assert not policy.expired(type_name, stored, now)  # at the boundary: kept
    assert policy.expired(type_name, stored, now + 1) == (days > 0)


def _typed(created: int, type_name: str) -> Header:
    return msgspec.structs.replace(header(created), type=type_name)


@pytest.mark.parametrize("wal", [False, True])
def test_store_drops_per_type_and_leaves_no_bytes(tmp_path: Path, wal: bool) -> None:
    me = Identity.generate(ME)
    path = tmp_path / "MYS-RMP-ATIPSOM.state"
    if wal:  # a store another tool switched to WAL: the log is emptied too
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")
    policy = Retention({"alert": 30, "mla.request": 730}, 90)
    store = MessageStore(path, [me], retention=policy, now=NOW)
    old = NOW - 40 * MS_PER_DAY
    texts = {"alert": "EXAMPLE-ALERT-9d1c", "mla.request": "EXAMPLE-MLA-41bb"}
    for type_name, text in texts.items():
        keep(store, _typed(old, type_name), old, text)
    keep(store, header(NOW), NOW, "EXAMPLE-RECENT-77aa")
    sealed = {
        row[0]: bytes(row[1])[40:80]
        for row in store._db.execute(
            "SELECT type, content FROM messages WHERE received_at = ?", (old,)
        )
    }
    store.close()
    assert any(sealed["alert"] in p.read_bytes() for p in tmp_path.iterdir())

    again = MessageStore(path, [me], retention=policy, now=NOW)
    assert again.last_prune.removed == {"alert": 1}  # the MLA request is kept 730 days
    assert again.last_prune.oldest_kept == old
    assert sorted((m.type, m.content) for m in again.since(0)) == [
        ("alert", "expired"),
        ("alert", "ok"),
        ("mla.request", "ok"),
    ]
    again.close()
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert not any(sealed["alert"] in p.read_bytes() for p in files)
    assert any(sealed["mla.request"] in p.read_bytes() for p in files)
    assert not any(texts["alert"].encode() in p.read_bytes() for p in files)


def test_profile_and_hub_config_take_days_per_type(tmp_path: Path) -> None:
    dep = create_deployment(
        tmp_path,
        {"THA/DSI-ATHD": [], "MYS/IMMIGRATION": []},
        passphrase="x" * 12,
        kdf=KdfProfile.INTERACTIVE,
    )
    hub_toml = dep.hub_config("THA")
    text = hub_toml.read_text(encoding="utf-8")
    hub_toml.write_text(text + "\n[retention]\nperiod_minutes = 5\n[retention.days]\nalert = 3\n")
    config = load_config(hub_toml)
    assert config.retention.policy().days_for("alert") == 3
    assert config.retention.period_minutes == 5
    hub_toml.write_text(text + "\n[retention.days]\nalertz = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(hub_toml)
    assert "[retention] days: unknown message type 'alertz'" in caught.value.detail

    profile = dep.profile(Principal("THA", "DSI-ATHD"))
    base = profile.read_text(encoding="utf-8")
    profile.write_text(base + "\n[store]\ncontent_days = 60\n[store.days]\nalert = 10\n")
    policy = load_profile(profile).store.retention()
    assert (policy.days_for("alert"), policy.days_for("person.query")) == (10, 60)
    profile.write_text(base + "\n[store.days]\nmla = 10\n")
    with pytest.raises(ConfigError) as bad:
        load_profile(profile)
    assert "unknown message type 'mla'" in bad.value.detail


def test_cli_failures_are_one_line(tmp_path: Path) -> None:
    dep = create_deployment(
        tmp_path,
        {"THA/DSI-ATHD": [], "MYS/IMMIGRATION": []},
        passphrase="x" * 12,
        kdf=KdfProfile.INTERACTIVE,
    )
    hub = str(dep.hub_config("THA"))
    profile = str(dep.profile(Principal("THA", "DSI-ATHD")))
    env = {**os.environ, "IXB_PASSPHRASE": "x" * 12}

    def ixb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ixb", "retention", "run", *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip

    for args, start in [
        (("--config", hub, "--as-of", "tomorrow"), "error ixb.E_USAGE: --as-of"),
        (("--config", hub, "--as-of", "2030-01-01T00:00:00+07:00"), "error ixb.E_USAGE"),
        (("--config", hub, "--profile", profile), "error ixb.E_USAGE"),
        (("--config", hub), "error ixb.E_IO: cannot reach"),  # no server running
    ]:
        done = ixb(*args)
        lines = [x for x in done.stderr.splitlines() if "nats_error" not in x]
        assert (done.returncode, len(lines)) == (2, 1), done.stderr
        assert lines[0].startswith(start), lines
    # an agency's store needs no server and no passphrase: nothing stored, nothing removed
    fresh = ixb("--profile", profile, "--json")
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout)["removed"] == {}
