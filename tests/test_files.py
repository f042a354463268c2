"""transport.files: small files read with a limit and replaced all at once (real disk)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.errors import IoError
from transport.files import read_bytes, write_atomic


def test_write_atomic_replaces_whole_private_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pin.json"
    write_atomic(path, "first")
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["pin.json"]


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "pin.json"
    write_atomic(path, "kept")
    (tmp_path / "pin.json.dir").mkdir()
    target = tmp_path / "pin.json.dir"  # replacing a directory by a file fails
    with pytest.raises(OSError):
        write_atomic(target, "x")
    assert path.read_text() == "kept"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_read_bytes_refuses_past_its_limit_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"x" * 11)
    assert read_bytes(path, 11) == b"x" * 11
    with pytest.raises(IoError, match="larger than 10 bytes"):
        read_bytes(path, 10)
    with pytest.raises(IoError, match=r"cannot read .*missing"):
        read_bytes(tmp_path / "missing", 10)
