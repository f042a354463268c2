"""Key files on disk: created 0600, never overwritten, passphrase from env or prompt."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from protocols.errors import IoError, PassphraseError
from protocols.keys import (
    Identity,
    KdfProfile,
    PublicIdentity,
    open_keyfile,
    read_nats_public,
    read_public,
    seal_keyfile,
)
from transport.files import env_secret, read_bytes, write_atomic

PASSPHRASE_ENV = "IXB_PASSPHRASE"  # noqa: S105 - the variable name, not a secret
MAX_KEYFILE_BYTES = 16 * 1024


def passphrase(*, confirm: bool) -> str:
    """``IXB_PASSPHRASE`` (or the file ``IXB_PASSPHRASE_FILE`` names) if set (scripts,
    services, containers), else an interactive prompt."""
    env = env_secret(PASSPHRASE_ENV)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise PassphraseError(
            f"no terminal to ask for a passphrase; set {PASSPHRASE_ENV} or {PASSPHRASE_ENV}_FILE"
        )
    first = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise PassphraseError("the two passphrases differ")
    return first


def create_private(path: Path, data: bytes, what: str) -> None:
    """Create ``path`` readable by its owner only, durably; never overwrite one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IoError(f"{path} exists; refusing to overwrite a {what}") from None
    except OSError as exc:
        raise IoError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_identity(path: Path, identity: Identity, secret: str, profile: KdfProfile) -> None:
    create_private(path, seal_keyfile(identity, secret, profile), "key file")


def load_identity(path: Path, secret: str) -> Identity:
    return open_keyfile(read_bytes(path, MAX_KEYFILE_BYTES), secret)


def load_public(path: Path) -> PublicIdentity:
    return read_public(read_bytes(path, MAX_KEYFILE_BYTES))


def replace_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically and durably (0600): a crash leaves the old file or the new.

    The old bytes are gone from the file system's view once this returns; copies
    in backups, snapshots or an SSD's remapped blocks are beyond its reach.
    """
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise IoError(f"cannot replace {path}: {exc.strerror or exc}") from None


def load_nats_public(path: Path) -> dict[str, str]:
    """The public NATS nkeys a key file seals, by label (no passphrase needed)."""
    return read_nats_public(read_bytes(path, MAX_KEYFILE_BYTES))
