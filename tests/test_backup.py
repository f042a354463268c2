"""Restore refuses a backup it cannot trust before it writes anything."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from broker.backup import restore, state_lock
from broker.config import HubConfig
from protocols.errors import IoError, UsageError


def _config(tmp_path: Path) -> HubConfig:
    return msgspec.convert(
        {
            "hub": {
                "country": "THA",
                "key_file": "THA-hub.key",
                "state_dir": str(tmp_path / "state"),
                "federation_file": "f",
            },
            "nats": {"url": "nats://127.0.0.1:1"},
            "base_dir": str(tmp_path),
        },
        HubConfig,
    )


def _backup(tmp_path: Path, files: list[dict[str, object]]) -> Path:
    out = tmp_path / "backup"
    out.mkdir()
    manifest = {"format": 1, "country": "THA", "audit": {"size": 0, "root": ""}, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize(
    "name", ["state/../../etc/passwd", "key//etc/passwd", "elsewhere/x", "trust/../../x"]
)
def test_a_manifest_naming_files_outside_a_backup_is_refused(tmp_path: Path, name: str) -> None:
    config = _config(tmp_path)
    source = _backup(tmp_path, [{"name": name, "size": 1, "sha256": "00"}])
    with pytest.raises(UsageError, match="not a file of a backup"):
        restore(config, source)
    assert not (tmp_path / "state").exists()


def test_a_malformed_manifest_is_a_usage_error_not_a_crash(tmp_path: Path) -> None:
    source = _backup(tmp_path, [{"name": "state/hub.sqlite", "bogus": 1}])
    with pytest.raises(UsageError, match="malformed"):
        restore(_config(tmp_path), source)


def test_the_state_lock_has_one_holder(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with (
        state_lock(config, holder="the hub"),
        pytest.raises(IoError, match="a backup needs the hub stopped"),
        state_lock(config, holder="a backup"),
    ):
        pass
    with state_lock(config, holder="a backup"):
        pass  # free again once the first holder let go
