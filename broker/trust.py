"""What a hub came to trust, kept apart from its state: the federation version, witness pins.

Both live in ``hub.trust_dir`` (:attr:`~broker.config.HubConfig.trust_path`),
small files written rarely and atomically:

- ``federation.toml``: the newest federation version this hub accepted. At
  start the configured file must be that version again or its successor,
  signed by the threshold of it (:func:`protocols.federation.check_successor`);
  an older one is refused. With none held, the configured file is the trust
  root (version 1, compared by phone; or, for a country that joined later,
  the version that added it).
- ``witness-<CC>.json``: this hub has witnessed ``CC``'s log (and with which
  key). A witness whose audit database holds no checkpoint of ``CC`` but
  finds this pin lost its state: it alarms and cosigns nothing for ``CC``
  until an operator runs ``ixb audit witness repin``, which marks the pin
  (who, when) so that the next checkpoint is trusted on first use again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import structlog

from protocols.errors import ConfigError, IoError, IxbError
from protocols.federation import (
    KEY_GRACE_MS,
    FederationFile,
    Succession,
    TrustAnchors,
    check_successor,
    parse_federation_file,
    render_federation_file,
)
from protocols.identifiers import check_country
from protocols.keys import KeyAlg, fingerprint
from transport.clock import wall_ms
from transport.files import write_atomic

log = structlog.get_logger("ixb.trust")

HELD_FEDERATION = "federation.toml"
INSTALLED = "federation-installed.json"
"""Who installed the held version and when: the start of the replaced keys' grace."""
CONFIGURED = "config"
"""The actor of a version adopted at start from ``hub.federation_file``."""
MAX_PIN_BYTES = 4096


def archived(trust_dir: Path, version: int) -> Path:
    """Where the version a newer one replaced is kept (``federation-v<N>.toml``)."""
    return trust_dir / f"federation-v{version}.toml"


@dataclass(frozen=True, slots=True)
class Installed:
    """The record of the held version's install: by whom, when, replacing which version."""

    version: int
    digest: str
    actor: str
    at_ms: int
    grace_ms: int = KEY_GRACE_MS
    """How long the keys it replaced stay valid (0: a stolen key, no grace)."""


def read_installed(trust_dir: Path) -> Installed | None:
    try:
        raw = json.loads((trust_dir / INSTALLED).read_bytes()[:MAX_PIN_BYTES])
        return Installed(
            int(raw["version"]),
            str(raw["digest"]),
            str(raw["actor"]),
            int(raw["at_ms"]),
            int(raw.get("grace_ms", KEY_GRACE_MS)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record_install(
    trust_dir: Path,
    held: FederationFile,
    new: FederationFile,
    *,
    actor: str,
    at_ms: int,
    grace_ms: int = KEY_GRACE_MS,
) -> None:
    """Keep the replaced version, the install record, then the new version (the trigger)."""
    body = {
        "version": new.version,
        "digest": new.digest(),
        "actor": actor,
        "at_ms": at_ms,
        "grace_ms": grace_ms,
    }
    try:
        write_atomic(archived(trust_dir, held.version), render_federation_file(held))
        write_atomic(trust_dir / INSTALLED, json.dumps(body, indent=1) + "\n")
        write_atomic(trust_dir / HELD_FEDERATION, render_federation_file(new))
    except OSError as exc:
        raise IoError(f"cannot write {trust_dir}: {exc.strerror or exc}") from None


def install_federation(
    trust_dir: Path,
    text: str,
    source: Path,
    *,
    actor: str,
    at_ms: int,
    grace_ms: int = KEY_GRACE_MS,
) -> tuple[FederationFile, Succession]:
    """An operator's live install: ``text`` replaces the held version if it is its successor.

    The same refusals as at start (``ixb.E_ROLLBACK``, ``ixb.E_SIGNATURE``,
    ``ixb.E_CONFIG``); a running hub notices the new ``federation.toml``
    within :data:`~broker.registry.POLL_S` and takes it into use.
    """
    new = _parse(text, source)
    held_path = trust_dir / HELD_FEDERATION
    try:
        held = _parse(held_path.read_text(encoding="utf-8"), held_path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{held_path}: no federation version held ({exc}); start the hub once first"
        ) from None
    try:
        succession = check_successor(held, new)
    except IxbError as exc:
        raise type(exc)(f"{source}: {exc.detail}") from None
    if not succession.redelivery:
        _record_install(trust_dir, held, new, actor=actor, at_ms=at_ms, grace_ms=grace_ms)
    return new, succession


def anchors_in_force(trust_dir: Path, held: FederationFile) -> TrustAnchors:
    """The held version's anchors, with the keys it replaced still valid during their grace.

    The grace runs from the install recorded in ``federation-installed.json``;
    keys of older versions count for what they signed back then
    (:meth:`TrustAnchors.hub_keys_ever`) but no longer for new signatures.
    """
    installed = read_installed(trust_dir)
    trust = held.trust
    version = held.version - 1
    while version >= 1:
        previous = held_file(archived(trust_dir, version))
        if previous is None or previous.name != held.name:
            break
        grace = (
            installed.at_ms + installed.grace_ms
            if installed is not None
            and installed.version == held.version
            and version == held.version - 1
            else 0
        )
        trust = trust.with_retired(previous.trust, grace)
        version -= 1
    return trust


def held_file(path: Path) -> FederationFile | None:
    try:
        return parse_federation_file(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, IxbError):
        return None


def adopt_federation(trust_dir: Path, configured_text: str, source: Path) -> FederationFile:
    """The configured federation file, if this hub may trust it; keep it as the one held.

    Refusals (one line each): an older version than the one held
    (``ixb.E_ROLLBACK``), a successor without the threshold's signatures
    (``ixb.E_SIGNATURE``), a skipped version or another federation (``ixb.E_CONFIG``).
    """
    configured = _parse(configured_text, source)
    held_path = trust_dir / HELD_FEDERATION
    held: FederationFile | None = None
    if held_path.exists():
        try:
            held_text = held_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise IoError(f"cannot read {held_path}: {exc.strerror or exc}") from None
        held = _parse(held_text, held_path)
    if held is None:
        _keep(held_path, configured)
        log.info(
            "federation_root",
            version=configured.version,
            digest=configured.digest(),
            detail="no version held: the configured file is the trust root",
        )
        return configured
    installed = read_installed(trust_dir)
    if (
        configured.version < held.version
        and installed is not None
        and installed.digest == held.digest()
        and installed.actor != CONFIGURED
    ):
        kept = held_file(archived(trust_dir, configured.version))
        if kept is not None and kept.same_version(configured):
            # installed live since (`ixb federation install`): the file configured is
            # one this hub held before, not a rollback; the held version stays
            log.warning(
                "federation_config_stale",
                configured=configured.version,
                held=held.version,
                detail=f"{source} is an earlier version; the hub uses the one it holds",
            )
            return held
    try:
        succession: Succession = check_successor(held, configured)
    except IxbError as exc:
        raise type(exc)(f"{source}: {exc.detail}") from None
    if not succession.redelivery:
        _record_install(trust_dir, held, configured, actor=CONFIGURED, at_ms=wall_ms())
        log.info(
            "federation_accepted",
            version=configured.version,
            previous=held.version,
            signers=list(succession.signers),
            changes=list(succession.changes),
        )
    return configured


def held_federation(trust_dir: Path) -> FederationFile | None:
    """The version this hub holds (None before its first start, or if unreadable)."""
    try:
        return parse_federation_file((trust_dir / HELD_FEDERATION).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, IxbError):
        return None


def _keep(path: Path, fed: FederationFile) -> None:
    try:
        write_atomic(path, render_federation_file(fed))
    except OSError as exc:
        raise IoError(f"cannot write {path}: {exc.strerror or exc}") from None


def _parse(text: str, source: Path) -> FederationFile:
    try:
        return parse_federation_file(text)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.detail}") from None


@dataclass(frozen=True, slots=True)
class Pin:
    """This hub witnessed ``peer``'s log; ``repin_by`` set: an operator allowed a fresh start."""

    peer: str
    key: str
    """The fingerprint of the peer's hub key the log was witnessed with."""
    since_ms: int
    repin_by: str | None = None
    repin_at_ms: int | None = None


class WitnessPins:
    """``witness-<CC>.json`` files in the trust directory (one per peer: no shared writes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, peer: str) -> Path:
        return self.directory / f"witness-{check_country(peer)}.json"

    def get(self, peer: str) -> Pin | None:
        path = self._path(peer)
        try:
            data = path.read_bytes()[: MAX_PIN_BYTES + 1]
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IoError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            raw = json.loads(data)
            return Pin(
                peer=str(raw["peer"]),
                key=str(raw["key"]),
                since_ms=int(raw["since_ms"]),
                repin_by=None if raw.get("repin_by") is None else str(raw["repin_by"]),
                repin_at_ms=None if raw.get("repin_at_ms") is None else int(raw["repin_at_ms"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a witness pin ({exc})") from None

    def pin(self, peer: str, key: bytes, at_ms: int) -> None:
        """Witnessing ``peer``'s log with ``key`` from ``at_ms`` (clears a repin)."""
        self._write(Pin(peer, fingerprint(KeyAlg.ED25519, key), at_ms))

    def allow_repin(self, peer: str, actor: str, at_ms: int) -> Pin:
        """An operator's word that ``peer``'s next checkpoint may be trusted on first use."""
        old = self.get(peer)
        pin = Pin(
            peer,
            old.key if old is not None else "",
            old.since_ms if old is not None else at_ms,
            repin_by=actor,
            repin_at_ms=at_ms,
        )
        self._write(pin)
        return pin

    def _write(self, pin: Pin) -> None:
        body = {
            "peer": pin.peer,
            "key": pin.key,
            "since_ms": pin.since_ms,
            "repin_by": pin.repin_by,
            "repin_at_ms": pin.repin_at_ms,
        }
        write_atomic(self._path(pin.peer), json.dumps(body, indent=1) + "\n")
