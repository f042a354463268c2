"""The federation file: every member's hub signing key, the trust anchors (SPEC.md §12).

The file is the same on every hub. Version 1 is exchanged out of band, as
X-Road's global configuration or the ICAO master list are, its fingerprints
compared by phone: it is the trust root. Every later version carries
detached Ed25519 signatures of member hubs over its canonical bytes
(:func:`signing_input`), and is accepted only when at least ``threshold``
hubs **of the version it replaces** signed it (:func:`check_successor`), so
no single hub or operator can change the membership, a key or the threshold.

:func:`parse_federation_file` reads it into :class:`FederationFile` (and
:func:`parse_federation` into its :class:`TrustAnchors`) or raises
:class:`~protocols.errors.ConfigError` naming the bad key (``hub[1].signing_key``);
:func:`render_federation_file` writes it, with fingerprints to compare by phone.
A :class:`TrustAnchors` that exists is valid: its constructor checks every
rule the file's reader does.
"""

from __future__ import annotations

import base64
import itertools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import msgspec

from protocols import wire
from protocols.errors import (
    ConfigError,
    IxbError,
    RollbackError,
    SignatureError,
    UnknownSenderError,
    UsageError,
)
from protocols.identifiers import check_country
from protocols.keys import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    KeyAlg,
    blake2b_256,
    fingerprint,
    key_id,
    verify_signature,
)
from protocols.wire import WireStruct

MAX_FEDERATION_CHARS: Final = 1024 * 1024

_FEDERATION_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9])?")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_HEX_SIG = re.compile(r"[0-9a-fA-F]{128}")

MAX_FEDERATION_VERSION: Final = (1 << 53) - 1
MAX_FEDERATION_SIGNATURES: Final = 256
KEY_GRACE_MS: Final = 24 * 3600 * 1000
"""How long a hub key that a new federation version changed still verifies new signatures,
from the moment a receiver took that version into use (SPEC §12, Key validity across
versions): envelopes countersigned before the switch and still queued on a link,
directories and checkpoints of a hub that has not switched yet."""
FEDERATION_REQUEST: Final = b"federation"
"""The payload of a request on ``ixb.<CC>.directory.get`` for the hub's version (SPEC §8)."""
DS_FEDERATION: Final = b"ixb-federation-v1\x00"
"""Domain separation of a hub's signature over a federation version (SPEC §1, §12)."""


@dataclass(frozen=True, slots=True)
class RetiredKey:
    """A hub key an earlier version listed and a later one changed (SPEC §12, Key validity
    across versions): valid for new signatures before ``until_ms`` only."""

    country: str
    key: bytes
    until_ms: int


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """The hub signing key of every member country. An instance that exists is valid.

    ``retired`` is not part of the file: the hub keys that earlier versions
    listed and a later one changed, each with the end of its grace period, as
    the holder of the versions derived them (:meth:`with_retired`).
    """

    name: str
    hubs: Mapping[str, bytes]
    retired: tuple[RetiredKey, ...] = ()
    _by_key_id: Mapping[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _FEDERATION_NAME.fullmatch(self.name):
            raise ConfigError(
                "federation.name: 1-64 of letters, digits, space, '.', '_', '-' "
                "(starting and ending with a letter or digit)"
            )
        if not self.hubs:
            raise ConfigError("hub: a federation needs at least one hub")
        hubs: dict[str, bytes] = {}
        by_kid: dict[bytes, str] = {}
        for country, key in sorted(self.hubs.items()):
            try:
                check_country(country)
            except IxbError as exc:
                raise ConfigError(f"hub {country!r}: {exc.detail}") from None
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_BYTES:
                raise ConfigError(f"hub {country}: signing key must be 32 bytes")
            kid = key_id(KeyAlg.ED25519, key)
            if kid in by_kid:
                raise ConfigError(f"hub {country}: same signing key as hub {by_kid[kid]}")
            hubs[country] = key
            by_kid[kid] = country
        object.__setattr__(self, "hubs", MappingProxyType(hubs))
        object.__setattr__(self, "_by_key_id", MappingProxyType(by_kid))
        retired = tuple(self.retired)
        for old in retired:
            if old.country not in hubs or len(old.key) != PUBLIC_KEY_BYTES:
                raise ConfigError(f"retired key of {old.country}: not a member's 32-byte key")
        object.__setattr__(self, "retired", retired)

    @property
    def countries(self) -> tuple[str, ...]:
        return tuple(self.hubs)

    def hub_key(self, country: str) -> bytes:
        """The trust anchor of ``country``; a non-member has none."""
        try:
            return self.hubs[country]
        except KeyError:
            raise UnknownSenderError(
                f"{country[:8]}/HUB is not a hub of federation {self.name}"
            ) from None

    def country_of_key_id(self, kid: bytes) -> str | None:
        """Which member's hub key ``kid`` names, if any."""
        return self._by_key_id.get(kid)

    def signer(self, kid: bytes, now_ms: int) -> tuple[str, bytes] | None:
        """The member and hub key ``kid`` names at ``now_ms``: its current key, or a key
        retired by a later version while its grace lasts (SPEC §12, Key validity)."""
        country = self._by_key_id.get(kid)
        if country is not None:
            return country, self.hubs[country]
        for old in self.retired:
            if now_ms < old.until_ms and key_id(KeyAlg.ED25519, old.key) == kid:
                return old.country, old.key
        return None

    def hub_keys_at(self, country: str, now_ms: int) -> tuple[bytes, ...]:
        """Keys that may make a new signature of ``country``'s hub at ``now_ms``, current first."""
        return (
            self.hub_key(country),
            *(o.key for o in self.retired if o.country == country and now_ms < o.until_ms),
        )

    def hub_keys_ever(self, country: str) -> tuple[bytes, ...]:
        """Every key ``country``'s hub had in the versions known: for what it signed back
        then (audit logs, checkpoints, receipts kept), whatever the time now."""
        return (self.hub_key(country), *(o.key for o in self.retired if o.country == country))

    def with_retired(self, previous: TrustAnchors, until_ms: int) -> TrustAnchors:
        """These anchors, accepting until ``until_ms`` the hub keys ``previous`` listed that
        these change (a member removed loses its key at once); older retired keys kept."""
        if previous.name != self.name:
            raise ConfigError(f"federation.name: {previous.name!r} is not {self.name!r}")
        retired = list(self.retired)
        retired += [
            old
            for old in previous.retired
            if old.country in self.hubs and old.key != self.hubs[old.country]
        ]
        for country, key in sorted(previous.hubs.items()):
            if country in self.hubs and self.hubs[country] != key:
                retired.append(RetiredKey(country, key, until_ms))
        seen: dict[bytes, RetiredKey] = {}
        for old in retired:  # one entry per key: the longest grace
            if old.key not in seen or seen[old.key].until_ms < old.until_ms:
                seen[old.key] = old
        return TrustAnchors(self.name, self.hubs, tuple(seen.values()))


def default_threshold(hubs: int) -> int:
    """A file that states no threshold: a majority of its hubs (2 of 3)."""
    return hubs // 2 + 1


@dataclass(frozen=True, slots=True)
class FederationSignature:
    """A member hub's detached Ed25519 signature over a version's :func:`signing_input`."""

    country: str
    sig: bytes

    def __post_init__(self) -> None:
        try:
            check_country(self.country)
        except IxbError as exc:
            raise ConfigError(f"signature {self.country!r}: {exc.detail}") from None
        if not isinstance(self.sig, bytes) or len(self.sig) != SIGNATURE_BYTES:
            raise ConfigError(f"signature {self.country}: must be {SIGNATURE_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class FederationFile:
    """One version of the federation file: anchors, threshold, signatures. Valid if it exists.

    The signatures are not checked here: they count or not against the
    version this one replaces (:func:`check_successor`).
    """

    trust: TrustAnchors
    version: int = 1
    threshold: int = 0
    """0: the default, a majority (:func:`default_threshold`)."""
    signatures: tuple[FederationSignature, ...] = ()

    def __post_init__(self) -> None:
        if type(self.version) is not int or not 1 <= self.version <= MAX_FEDERATION_VERSION:
            raise ConfigError(f"federation.version: from 1 to {MAX_FEDERATION_VERSION}")
        n = len(self.trust.hubs)
        if self.threshold == 0:
            object.__setattr__(self, "threshold", default_threshold(n))
        if type(self.threshold) is not int or not 1 <= self.threshold <= n:
            raise ConfigError(
                f"federation.threshold: from 1 to the number of hubs ({n}), not {self.threshold}"
            )
        if len(self.signatures) > MAX_FEDERATION_SIGNATURES:
            raise ConfigError(f"signature: at most {MAX_FEDERATION_SIGNATURES}")
        object.__setattr__(self, "signatures", tuple(self.signatures))

    @property
    def name(self) -> str:
        return self.trust.name

    def body(self) -> bytes:
        """The canonical MessagePack of the version (SPEC §12): what its signatures cover."""
        return wire.encode(
            _FederationBody(
                name=self.trust.name,
                version=self.version,
                threshold=self.threshold,
                hubs=tuple(_HubKey(c, k) for c, k in sorted(self.trust.hubs.items())),
            )
        )

    def signing_input(self) -> bytes:
        return DS_FEDERATION + self.body()

    def digest(self) -> str:
        """The version's digest to read over the phone: ``fed:XXXX-…`` (20 bytes, base32)."""
        text = base64.b32encode(blake2b_256(self.signing_input())[:20]).decode("ascii")
        return "fed:" + "-".join(text[i : i + 4] for i in range(0, len(text), 4))

    def same_version(self, other: FederationFile) -> bool:
        """Same canonical bytes: the same version, however many signatures each copy carries."""
        return self.body() == other.body()


class _HubKey(msgspec.Struct, frozen=True, array_like=True):
    country: str
    signing_key: bytes


class _FederationBody(WireStruct, frozen=True):
    name: str
    version: int
    threshold: int
    hubs: tuple[_HubKey, ...]


@dataclass(frozen=True, slots=True)
class Succession:
    """A version accepted as the successor of ``previous``: who signed it, what it changes."""

    version: int
    signers: tuple[str, ...]
    """The member countries of the previous version whose signatures verified."""
    not_counted: tuple[str, ...]
    """Why each other signature did not count (``MMR: not a hub of version 1``)."""
    changes: tuple[str, ...]
    redelivery: bool = False
    """The version already held, delivered again: nothing changes."""


def check_successor(previous: FederationFile, new: FederationFile) -> Succession:
    """May a hub holding ``previous`` accept ``new``? (SPEC §12, Federation file versions.)

    In this order: another federation's file (``ixb.E_CONFIG``); an older
    version, or the same version with other content (``ixb.E_ROLLBACK``); the
    same version and content (accepted, nothing changes); a version that skips
    one (``ixb.E_CONFIG``: each version is checked against the one before it);
    fewer than ``previous.threshold`` hubs **of previous** whose signatures
    verify (``ixb.E_SIGNATURE``). A signer that is not a hub of ``previous``, or
    whose signature does not verify with its key there, does not count; a hub
    that signed twice counts once.
    """
    if new.name != previous.name:
        raise ConfigError(
            f"federation.name: {new.name!r} is another federation than {previous.name!r}"
        )
    if new.version < previous.version:
        raise RollbackError(
            f"federation version {new.version} is older than version {previous.version} "
            "already accepted"
        )
    if new.version == previous.version:
        if not new.same_version(previous):
            raise RollbackError(
                f"federation version {new.version} differs from the version {previous.version} "
                "already accepted: a changed file needs a new version"
            )
        return Succession(new.version, (), (), (), redelivery=True)
    if new.version != previous.version + 1:
        raise ConfigError(
            f"federation.version: {new.version} does not follow version {previous.version} "
            f"(the one accepted): install version {previous.version + 1} first"
        )
    message = new.signing_input()
    valid: list[str] = []
    not_counted: list[str] = []
    for signature in new.signatures:
        key = previous.trust.hubs.get(signature.country)
        if key is None:
            not_counted.append(f"{signature.country}: not a hub of version {previous.version}")
            continue
        try:
            verify_signature(key, message, signature.sig)
        except SignatureError:
            not_counted.append(
                f"{signature.country}: does not verify with its key of version {previous.version}"
            )
            continue
        if signature.country not in valid:
            valid.append(signature.country)
    if len(valid) < previous.threshold:
        shown = ", ".join(valid) or "none"
        extra = f"; not counted: {'; '.join(not_counted)}" if not_counted else ""
        raise SignatureError(
            f"federation version {new.version} needs signatures of {previous.threshold} hubs "
            f"of version {previous.version}, has {len(valid)} ({shown}){extra}"
        )
    return Succession(
        new.version, tuple(sorted(valid)), tuple(not_counted), tuple(changes(previous, new))
    )


def history(versions: Sequence[FederationFile]) -> TrustAnchors:
    """The anchors of the newest of ``versions``, knowing every hub key the others listed.

    Each version must follow the one before it (:func:`check_successor`): an
    auditor given versions 1 to N checks material a hub signed under any of
    them (:meth:`TrustAnchors.hub_keys_ever`); none of the older keys is
    valid for new signatures (their grace is over).
    """
    if not versions:
        raise UsageError("no federation version given")
    ordered = sorted(versions, key=lambda f: f.version)
    for previous, new in itertools.pairwise(ordered):
        check_successor(previous, new)
    trust = ordered[-1].trust
    for previous in reversed(ordered[:-1]):
        trust = trust.with_retired(previous.trust, 0)
    return trust


def changes(previous: FederationFile, new: FederationFile) -> list[str]:
    """What ``new`` changes, one line each, for operators to read before they sign."""
    out: list[str] = []
    if new.name != previous.name:
        out.append(f"name {previous.name!r} → {new.name!r}")
    old_hubs, new_hubs = previous.trust.hubs, new.trust.hubs
    for country in sorted(set(old_hubs) | set(new_hubs)):
        old, cur = old_hubs.get(country), new_hubs.get(country)
        if old is None and cur is not None:
            out.append(f"add {country}/HUB {fingerprint(KeyAlg.ED25519, cur)}")
        elif cur is None and old is not None:
            out.append(f"remove {country}/HUB {fingerprint(KeyAlg.ED25519, old)}")
        elif old is not None and cur is not None and old != cur:
            out.append(
                f"change the key of {country}/HUB: {fingerprint(KeyAlg.ED25519, old)} → "
                f"{fingerprint(KeyAlg.ED25519, cur)}"
            )
    if new.threshold != previous.threshold:
        out.append(f"threshold {previous.threshold} → {new.threshold}")
    return out


def propose(
    current: FederationFile,
    *,
    add: Mapping[str, bytes] | None = None,
    remove: Sequence[str] = (),
    keys: Mapping[str, bytes] | None = None,
    threshold: int | None = None,
) -> FederationFile:
    """The next version: ``current`` with these changes, version + 1, no signatures yet.

    ``add`` and ``keys`` map a country to its hub's Ed25519 public key. Without
    ``threshold`` the current one is kept.
    """
    hubs = dict(current.trust.hubs)
    for country, key in (add or {}).items():
        if country in hubs:
            raise UsageError(f"{country} is a member already (change its key instead)")
        hubs[country] = key
    for country in remove:
        if country not in hubs:
            raise UsageError(f"{country} is not a member of version {current.version}")
        del hubs[country]
    for country, key in (keys or {}).items():
        if country not in hubs:
            raise UsageError(f"{country} is not a member of version {current.version}")
        if hubs[country] == key:
            raise UsageError(f"{country}/HUB already has this key")
        hubs[country] = key
    if not hubs:
        raise UsageError("a federation needs at least one hub")
    if current.version >= MAX_FEDERATION_VERSION:
        raise UsageError("no version follows the last one")
    return FederationFile(
        TrustAnchors(current.name, hubs),
        current.version + 1,
        current.threshold if threshold is None else threshold,
    )


def sign_version(fed: FederationFile, hub: Identity) -> FederationFile:
    """``fed`` with ``hub``'s signature added (or replacing the one it made before)."""
    if not hub.principal.is_hub:
        raise UsageError(f"{hub.principal} is not a hub key: only hubs sign the federation file")
    country = hub.principal.country
    sig = FederationSignature(country, hub.signing.sign(fed.signing_input()))
    others = tuple(s for s in fed.signatures if s.country != country)
    return FederationFile(fed.trust, fed.version, fed.threshold, (*others, sig))


def parse_federation(text: str) -> TrustAnchors:
    """The trust anchors of a federation file (see :func:`parse_federation_file`)."""
    return parse_federation_file(text).trust


def parse_federation_file(text: str) -> FederationFile:
    """Read the federation file (TOML); every error names the bad key (``hub[1].signing_key``).

    ``hub[i]`` and ``signature[i]`` count the ``[[hub]]`` and ``[[signature]]``
    tables from 0 in file order. Signatures are parsed, not checked: whether
    they count depends on the version this file replaces (:func:`check_successor`).
    """
    if len(text) > MAX_FEDERATION_CHARS:
        raise ConfigError("federation file: larger than 1 MiB")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"federation file: not valid TOML ({exc})") from None
    _only_keys(doc, {"federation", "hub", "signature"}, "")
    fed = doc.get("federation")
    if not isinstance(fed, dict):
        raise ConfigError("federation: a [federation] table is required")
    _only_keys(fed, {"name", "version", "threshold"}, "federation.")
    name = fed.get("name")
    if not isinstance(name, str):
        raise ConfigError("federation.name: a string is required")
    version = _optional_int(fed, "version", "federation", 1)
    if not 1 <= version <= MAX_FEDERATION_VERSION:
        raise ConfigError(f"federation.version: from 1 to {MAX_FEDERATION_VERSION}")
    hubs = _parse_hubs(doc.get("hub"))
    threshold = _optional_int(fed, "threshold", "federation", default_threshold(len(hubs)))
    if not 1 <= threshold <= len(hubs):
        raise ConfigError(
            f"federation.threshold: from 1 to the number of hubs ({len(hubs)}), not {threshold}"
        )
    signatures = _parse_signatures(doc.get("signature", []))
    return FederationFile(TrustAnchors(name, hubs), version, threshold, tuple(signatures))


def _parse_hubs(hubs_doc: object) -> dict[str, bytes]:
    if not isinstance(hubs_doc, list) or not hubs_doc:
        raise ConfigError("hub: at least one [[hub]] table is required")
    hubs: dict[str, bytes] = {}
    first_at: dict[str, int] = {}
    key_at: dict[bytes, int] = {}
    for i, table in enumerate(hubs_doc):
        where = f"hub[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a [[hub]] table")
        _only_keys(table, {"country", "signing_key", "fingerprint"}, f"{where}.")
        country = _required_str(table, "country", where)
        try:
            check_country(country)
        except IxbError as exc:
            raise ConfigError(f"{where}.country: {exc.detail}") from None
        if country in first_at:
            raise ConfigError(f"{where}.country: {country} is already hub[{first_at[country]}]")
        hex_key = _required_str(table, "signing_key", where)
        if not _HEX_KEY.fullmatch(hex_key):
            raise ConfigError(f"{where}.signing_key: must be 64 hex digits (32 bytes)")
        key = bytes.fromhex(hex_key)
        kid = key_id(KeyAlg.ED25519, key)
        if kid in key_at:
            raise ConfigError(f"{where}.signing_key: same key as hub[{key_at[kid]}]")
        if "fingerprint" in table:
            stated = table["fingerprint"]
            actual = fingerprint(KeyAlg.ED25519, key)
            if stated != actual:
                raise ConfigError(
                    f"{where}.fingerprint: does not match signing_key (whose fingerprint is "
                    f"{actual}); check both with {country}'s hub operator"
                )
        hubs[country] = key
        first_at[country] = i
        key_at[kid] = i
    return hubs


def _parse_signatures(sigs_doc: object) -> list[FederationSignature]:
    if not isinstance(sigs_doc, list):
        raise ConfigError("signature: must be [[signature]] tables")
    if len(sigs_doc) > MAX_FEDERATION_SIGNATURES:
        raise ConfigError(f"signature: at most {MAX_FEDERATION_SIGNATURES} [[signature]] tables")
    signatures: list[FederationSignature] = []
    for i, table in enumerate(sigs_doc):
        where = f"signature[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a [[signature]] table")
        _only_keys(table, {"country", "sig"}, f"{where}.")
        country = _required_str(table, "country", where)
        try:
            check_country(country)
        except IxbError as exc:
            raise ConfigError(f"{where}.country: {exc.detail}") from None
        hex_sig = _required_str(table, "sig", where)
        if not _HEX_SIG.fullmatch(hex_sig):
            raise ConfigError(f"{where}.sig: must be 128 hex digits (64 bytes)")
        signatures.append(FederationSignature(country, bytes.fromhex(hex_sig)))
    return signatures


def _optional_int(table: Mapping[str, Any], key: str, where: str, default: int) -> int:
    if key not in table:
        return default
    value = table[key]
    if type(value) is not int:
        raise ConfigError(f"{where}.{key}: an integer is required")
    return value


def _only_keys(table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            shown = key[:64] if key.isprintable() else repr(key[:64])
            raise ConfigError(f"{prefix}{shown}: unknown key")


def _required_str(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: a string is required")
    return value


def render_federation_file(fed: FederationFile) -> str:
    """The file of this version: version, threshold, fingerprints, and its signatures."""
    lines = [
        "# ixb federation file: the trust anchors (hub signing keys) of every member.",
        "# Version 1 is the trust root: compare every fingerprint with that hub's operator,",
        "# out of band. A later version counts only when `threshold` hubs of the version",
        "# before it signed it: check it with `ixb federation verify FILE --previous OLD`.",
        f"# digest {fed.digest()}",
        "[federation]",
        f'name = "{fed.name}"',
        f"version = {fed.version}",
        f"threshold = {fed.threshold}",
    ]
    for country, key in sorted(fed.trust.hubs.items()):
        lines += [
            "",
            "[[hub]]",
            f'country = "{country}"',
            f'signing_key = "{key.hex()}"',
            f'fingerprint = "{fingerprint(KeyAlg.ED25519, key)}"',
        ]
    for signature in fed.signatures:
        lines += [
            "",
            "[[signature]]",
            f'country = "{signature.country}"',
            f'sig = "{signature.sig.hex()}"',
        ]
    return "\n".join(lines) + "\n"


def render_federation(name: str, hubs: Mapping[str, bytes]) -> str:
    """The federation file for these hub keys, with fingerprints to compare out of band."""
    trust = TrustAnchors(name, hubs)
    lines = [
        "# ixb federation file: the trust anchors (hub signing keys) of every member.",
        "# Compare every fingerprint with that hub's operator, out of band, before use.",
        "[federation]",
        f'name = "{trust.name}"',
    ]
    for country, key in trust.hubs.items():
        lines += [
            "",
            "[[hub]]",
            f'country = "{country}"',
            f'signing_key = "{key.hex()}"',
            f'fingerprint = "{fingerprint(KeyAlg.ED25519, key)}"',
        ]
    return "\n".join(lines) + "\n"
