"""The agency's encryption keys over time: rotated on a schedule, destroyed after their grace.

The key file (SPEC §3.1) holds the current keys and the encryption keys
retired by rotation, each with the time it was retired. :class:`KeyFile`
reads and rewrites it under the passphrase it was opened with (the derived
key is kept, never the passphrase), atomically, under a lock, after reading
it again: another process of the same agency (a command line beside a
long-running client) may have rotated it meanwhile, and a rewrite never
undoes what it did.

What the client decides (:class:`AgencyClient.maintain_keys
<agency_client.sdk.AgencyClient.maintain_keys>`):

- **rotate** when the current encryption key is older than
  ``encryption_rotation_hours``: a new key sealed into the file, the old one
  retired, then the signed update sent to the hub (SPEC §12.1);
- **destroy** a retired key once (a) the hub's directory no longer lists it,
  (b) the inbox consumer has nothing pending nor unacknowledged, and (c)
  ``encryption_key_grace_hours`` have passed since it was retired.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from agency_client.keystore import MAX_KEYFILE_BYTES, replace_private
from agency_client.profile import Profile
from protocols.errors import IoError, KeyFileError
from protocols.keys import (
    MAX_RETIRED_KEYS,
    EncryptionKeyPair,
    Identity,
    KeyFileSealer,
    KeyHistory,
    RetiredKey,
    open_keyfile_history,
)
from protocols.limits import MS_PER_HOUR
from transport.files import read_bytes

log = structlog.get_logger("ixb.agency")


@dataclass(frozen=True, slots=True)
class KeySchedule:
    """``rotation_ms`` 0: no scheduled rotation. Both from the agency's profile."""

    rotation_ms: int
    grace_ms: int

    @classmethod
    def of(cls, profile: Profile) -> KeySchedule:
        return cls(
            rotation_ms=int(profile.agency.encryption_rotation_hours * MS_PER_HOUR),
            grace_ms=int(profile.agency.encryption_key_grace_hours * MS_PER_HOUR),
        )


@dataclass(frozen=True, slots=True)
class KeyState:
    """One reading of the key file."""

    identity: Identity
    history: KeyHistory

    @property
    def encryption(self) -> EncryptionKeyPair:
        if self.identity.encryption is None:
            raise KeyFileError(f"{self.identity.principal} has no encryption key")
        return self.identity.encryption

    def decryption_identities(self) -> tuple[Identity, ...]:
        """The current identity, then one per retired encryption key (newest first)."""
        me = self.identity
        return (me, *(Identity(me.principal, me.signing, r.key) for r in self.history.retired))

    def due(self, schedule: KeySchedule, now: int) -> bool:
        since = self.history.encryption_since
        return (
            schedule.rotation_ms > 0 and since is not None and now - since >= schedule.rotation_ms
        )

    def destroyable(self, schedule: KeySchedule, listed: bytes, now: int) -> list[RetiredKey]:
        """Retired keys past their grace that the directory no longer lists (conditions a, c)."""
        return [
            r
            for r in self.history.retired
            if r.key.public != listed and now - r.retired_at >= schedule.grace_ms
        ]


class KeyFile:
    """An agency key file opened for rotation and destruction (no repr of what it holds)."""

    def __init__(self, path: Path, sealer: KeyFileSealer, state: KeyState) -> None:
        self.path = path
        self._sealer = sealer
        self.state = state

    def __repr__(self) -> str:
        return f"KeyFile({self.path})"

    @classmethod
    def open(cls, path: Path, passphrase: str, now: int) -> KeyFile:
        """Open; a file that does not say since when its key is current is stamped ``now``."""
        identity, history, sealer = open_keyfile_history(
            read_bytes(path, MAX_KEYFILE_BYTES), passphrase
        )
        keys = cls(path, sealer, KeyState(identity, history))
        if history.encryption_since is None:
            with keys._locked() as state:
                if state.history.encryption_since is None:
                    keys._write(state.identity, KeyHistory(now, state.history.retired))
        return keys

    def reload(self) -> KeyState:
        identity, history = self._sealer.open(read_bytes(self.path, MAX_KEYFILE_BYTES))
        self.state = KeyState(identity, history)
        return self.state

    def rotate(self, now: int) -> KeyState:
        """A new encryption key, current from ``now``; the old one retired at ``now``.

        Past :data:`MAX_RETIRED_KEYS`, the oldest retired key is destroyed.
        """
        with self._locked() as state:
            me = state.identity
            new = Identity(me.principal, me.signing, EncryptionKeyPair.generate(), me.nats)
            retired = (RetiredKey(state.encryption, now), *state.history.retired)
            self._write(new, KeyHistory(now, retired[:MAX_RETIRED_KEYS]))
            for dropped in retired[MAX_RETIRED_KEYS:]:
                _destroyed(me, dropped, now, reason="cap")
            log.info(
                "encryption_key_rotated",
                agency=str(me.principal),
                fingerprint=new.public().fingerprints()["encryption"],
            )
        return self.state

    def destroy(self, publics: set[bytes], now: int) -> KeyState:
        """Rewrite the file without the retired keys of ``publics``."""
        with self._locked() as state:
            kept = tuple(r for r in state.history.retired if r.key.public not in publics)
            gone = [r for r in state.history.retired if r.key.public in publics]
            if gone:
                self._write(state.identity, KeyHistory(state.history.encryption_since, kept))
                for r in gone:
                    _destroyed(state.identity, r, now, reason="grace")
        return self.state

    @contextmanager
    def _locked(self) -> Iterator[KeyState]:
        """The file's state as it is now, under an exclusive lock beside it."""
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise IoError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self.reload()
        finally:
            os.close(fd)  # releases the lock

    def _write(self, identity: Identity, history: KeyHistory) -> None:
        replace_private(self.path, self._sealer.seal(identity, history))
        self.state = KeyState(identity, history)


def _destroyed(me: Identity, r: RetiredKey, now: int, *, reason: str) -> None:
    log.info(
        "encryption_key_destroyed",
        agency=str(me.principal),
        fingerprint=r.key.fingerprint,
        retired_at=r.retired_at,
        kept_ms=now - r.retired_at,
        reason=reason,
    )


def open_key_file(profile: Profile, passphrase: str, now: int) -> KeyFile:
    return KeyFile.open(profile.path(profile.agency.key_file), passphrase, now)
