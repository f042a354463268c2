"""Small files the hub and the agency both keep: read with a size limit, replaced durably.

Key files, federation versions, witness pins: each is read whole (and refused
past a limit, so a wrong path cannot exhaust memory) and replaced all at once
(a crash leaves the old file or the new one, never a mix), fsync'd with its
directory so that a replacement reported done survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from protocols.errors import ConfigError, IoError


def read_bytes(path: Path, limit: int) -> bytes:
    """Read a whole small file or raise :class:`IoError` with a readable reason."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise IoError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise IoError(f"{path} is larger than {limit} bytes")
    return data


FILE_SUFFIX = "_FILE"
"""``$IXB_PASSPHRASE_FILE`` names a file holding what ``$IXB_PASSPHRASE`` would (docker
and systemd secrets are files: a file is not shown by ``docker inspect`` or in
``/proc/<pid>/environ`` as a variable is)."""
MAX_SECRET_BYTES = 4096


def read_secret_file(path: Path) -> str:
    """A passphrase kept in a file of its own: UTF-8, one trailing newline dropped.

    Refused when others than its owner may read it (a group or world bit),
    as ssh refuses such a key: a secret left readable is a secret to rotate.
    """
    try:
        with path.open("rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            data = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise IoError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path} is not a regular file")
    if mode & 0o077:
        raise ConfigError(
            f"{path} may be read by others than its owner (mode {stat.S_IMODE(mode):o}): "
            "chmod 600 it, and change the passphrase if others did read it"
        )
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_SECRET_BYTES} bytes: not a passphrase")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"{path} is empty")
    return text


def env_secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``$name``, or the content of the file ``$name_FILE`` names; None if neither is set.

    Both set is refused: which of the two is meant cannot be guessed.
    """
    env = os.environ if environ is None else environ
    value = env.get(name)
    file_name = env.get(name + FILE_SUFFIX)
    if file_name is None:
        return value
    if value is not None:
        raise ConfigError(f"${name} and ${name}{FILE_SUFFIX} are both set: unset one")
    if not file_name:
        raise ConfigError(f"${name}{FILE_SUFFIX} is empty: name the file holding ${name}")
    return read_secret_file(Path(file_name))


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` by ``data`` (0600) all at once and durably.

    Raises :class:`OSError` as the disk does (the hub's writers retry those).
    The old bytes are gone from the file system's view once this returns;
    copies in backups, snapshots or an SSD's remapped blocks are beyond its reach.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
