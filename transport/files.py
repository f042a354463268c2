"""Small files the hub and the agency both keep: read with a size limit, replaced durably.

Key files, federation versions, witness pins: each is read whole (and refused
past a limit, so a wrong path cannot exhaust memory) and replaced all at once
(a crash leaves the old file or the new one, never a mix), fsync'd with its
directory so that a replacement reported done survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from protocols.errors import IoError


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
