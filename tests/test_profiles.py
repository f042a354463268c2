"""Named profiles (``ixb profile add|ls|use|show``), as a user types them: real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agency_client.named_profiles import NamedProfiles, check_name, resolve
from agency_client.profile import load_profile, render_profile
from protocols.errors import ConfigError, UsageError


def write_profile(path: Path, agency: str) -> Path:
    path.write_text(
        render_profile(
            agency=agency,
            key_file="k.key",
            federation_file="federation.toml",
            url="nats://127.0.0.1:4222",
        )
    )
    return path


def ixb(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("IXB_")}
    full.update(XDG_CONFIG_HOME=str(config), **env)
    return subprocess.run(
        [sys.executable, "-m", "ixb", *args],
        capture_output=True,
        text=True,
        env=full,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def test_add_use_ls_show(tmp_path: Path) -> None:
    config = tmp_path / "config"
    dsi = write_profile(tmp_path / "dsi.toml", "THA/DSI-ATHD")
    imm = write_profile(tmp_path / "imm.toml", "THA/IMMIGRATION")
    empty = ixb(config, "profile", "ls")
    assert empty.stdout.startswith("no named profiles")
    none = ixb(config, "profile", "show")
    assert none.returncode == 2 and none.stderr.startswith("error ixb.E_CONFIG: no profile")
    assert ixb(config, "profile", "add", "dsi", str(dsi)).returncode == 0
    assert ixb(config, "profile", "add", "imm", str(imm)).returncode == 0
    used = ixb(config, "profile", "use", "imm")
    assert used.returncode == 0 and used.stdout == "using profile imm\n"
    listed = ixb(config, "profile", "ls")
    assert listed.stdout.splitlines() == [
        f"  dsi                  {dsi.resolve()}",
        f"* imm                  {imm.resolve()}",
    ]
    listing = json.loads(ixb(config, "profile", "ls", "--json").stdout)
    rows, current = listing["profiles"], listing["current"]
    assert current == "imm"
    assert [(r["name"], r["current"]) for r in rows] == [("dsi", False), ("imm", True)]
    shown = json.loads(ixb(config, "profile", "show", "--json").stdout)
    assert (shown["agency"], shown["why"]) == ("THA/IMMIGRATION", "selected: imm")
    # IXB_PROFILE still wins over the selection
    env_wins = json.loads(ixb(config, "profile", "show", "--json", IXB_PROFILE=str(dsi)).stdout)
    assert env_wins["agency"] == "THA/DSI-ATHD" and env_wins["why"] == "$IXB_PROFILE"
    assert (config / "ixb" / "profiles.toml").is_file()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("profile", "use", "nobody"), "ixb.E_CONFIG"),
        (("profile", "add", "../bad", "x.toml"), "ixb.E_USAGE"),
        (("profile", "add", "ok", "missing.toml"), "ixb.E_IO"),
        (("profile", "show", "nobody"), "ixb.E_CONFIG"),
    ],
    ids=["use-unknown", "bad-name", "missing-file", "show-unknown"],
)
def test_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...], code: str) -> None:
    result = ixb(tmp_path / "config", *args)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"error {code}: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_which_profile_a_command_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("IXB_PROFILE", raising=False)
    dsi = write_profile(tmp_path / "dsi.toml", "THA/DSI-ATHD")
    imm = write_profile(tmp_path / "imm.toml", "THA/IMMIGRATION")
    with pytest.raises(ConfigError, match="ixb profile use NAME"):
        load_profile(None)
    NamedProfiles({"dsi": str(dsi), "imm": str(imm)}, current="imm").save()
    assert load_profile(None).agency.id == "THA/IMMIGRATION"  # the selected one
    assert load_profile(Path("dsi")).agency.id == "THA/DSI-ATHD"  # --profile NAME
    assert load_profile(dsi).agency.id == "THA/DSI-ATHD"  # --profile FILE
    monkeypatch.setenv("IXB_PROFILE", str(dsi))
    assert load_profile(None).agency.id == "THA/DSI-ATHD"  # $IXB_PROFILE over the selection
    assert resolve(Path("some/dir/file.toml")) == Path("some/dir/file.toml")
    for bad in ("", "a/b", "x" * 65, "-lead"):
        with pytest.raises(UsageError):
            check_name(bad)


def test_a_broken_config_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "ixb").mkdir()
    (tmp_path / "ixb" / "profiles.toml").write_text('current = "gone"\n[profiles]\n')
    with pytest.raises(ConfigError, match="current: 'gone' is not a profile name"):
        NamedProfiles.load()
