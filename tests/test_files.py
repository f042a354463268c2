"""transport.files: small files read with a limit and replaced all at once (real disk)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import ConfigError, IoError
from transport.files import env_secret, read_bytes, read_secret_file, write_atomic


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


def _secret(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@given(st.text(min_size=1).filter(lambda t: not t.endswith(("\n", "\r")) and "\x00" not in t))
def test_secret_file_round_trips_with_or_without_a_final_newline(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    directory = tmp_path_factory.mktemp("secret")
    for ending in ("", "\n", "\r\n"):
        raw = (text + ending).encode()
        if len(raw) > 4096:
            continue
        path = _secret(directory / "pass", raw)
        assert read_secret_file(path) == text
        assert env_secret("IXB_PASSPHRASE", {"IXB_PASSPHRASE_FILE": str(path)}) == text


def test_env_secret_prefers_nothing_and_refuses_ambiguity(tmp_path: Path) -> None:
    path = _secret(tmp_path / "pass", b"from the file\n")
    assert env_secret("IXB_PASSPHRASE", {}) is None
    assert env_secret("IXB_PASSPHRASE", {"IXB_PASSPHRASE": "direct"}) == "direct"
    both = {"IXB_PASSPHRASE": "direct", "IXB_PASSPHRASE_FILE": str(path)}
    with pytest.raises(ConfigError, match="both set"):
        env_secret("IXB_PASSPHRASE", both)
    with pytest.raises(ConfigError, match="is empty"):
        env_secret("IXB_PASSPHRASE", {"IXB_PASSPHRASE_FILE": ""})
    with pytest.raises(IoError, match="cannot read"):
        env_secret("IXB_PASSPHRASE", {"IXB_PASSPHRASE_FILE": str(tmp_path / "absent")})


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_secret_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _secret(tmp_path / "pass", b"a passphrase\n", mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(path)
    _secret(path, b"a passphrase\n", 0o400)
    assert read_secret_file(path) == "a passphrase"


def test_secret_file_that_is_no_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(_secret(tmp_path / "empty", b"\n"))
    with pytest.raises(ConfigError, match="larger than"):
        read_secret_file(_secret(tmp_path / "big", b"x" * 5000))
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_secret_file(_secret(tmp_path / "latin", b"caf\xe9"))
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises((ConfigError, IoError)):
        read_secret_file(directory)
