"""Signed agency directories and the federation's trust anchors (SPEC.md §Directory).

Each national hub publishes a versioned, expiring list of its agencies (roles,
keys, validity, revocation), signed with the hub key. The hub keys are the
federation's trust anchors, exchanged out of band in the federation file, as
X-Road's global configuration or the ICAO master list. A receiver trusts an
agency key only through its country's latest verified directory, and a hub key
only through the federation file.

As in python-tuf's ``trusted_metadata_set``, verification is pure: bytes and
``now_ms`` in, a verified :class:`Directory` or a typed error out, and
:class:`DirectoryKeys` only ever moves forward (a newer version replaces an
older one, never the reverse). Fetching, storing and the clock live outside::

    signed = {body: bin, key_id: bin 8, sig: bin 64}
    body   = canonical MessagePack of Directory
    sig    = Ed25519(hub, "ixb-directory-v1\\0" ‖ body)

Roles say which message types an agency may send (:data:`ROLE_MAY_SEND`).
"""

from __future__ import annotations

import enum
import hmac
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Final

import msgspec

from protocols import wire
from protocols.errors import (
    ConfigError,
    DirectoryError,
    ExpiredError,
    IxbError,
    NotRecipientError,
    RevokedError,
    RollbackError,
    SchemaError,
    SignatureError,
    TooLargeError,
    UnauthorisedError,
    UnknownSenderError,
)
from protocols.fields import ShortText, TimeMs, check_fields
from protocols.identifiers import (
    Principal,
    PrincipalStr,
    check_country,
    parse_agency,
    parse_hub,
)
from protocols.keys import (
    KEY_ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    KeyAlg,
    PublicIdentity,
    fingerprint,
    key_id,
    verify_signature,
)
from protocols.messages import MESSAGE_TYPES

DS_DIRECTORY: Final = b"ixb-directory-v1\x00"

# Hard protocol maxima (SPEC.md §Directory); changing one is a protocol change.
MAX_DIRECTORY_ENTRIES: Final = 10_000
MAX_PREVIOUS_KEYS: Final = 8
MAX_VERSION: Final = (1 << 53) - 1
MAX_DIRECTORY_BYTES: Final = 32 * 1024 * 1024
"""Above the worst case of 10,000 maximal entries (about 19 MiB); real ones are ~200 B each."""
MAX_SIGNED_DIRECTORY_BYTES: Final = MAX_DIRECTORY_BYTES + 128  # body + key id + signature
MAX_FEDERATION_CHARS: Final = 1024 * 1024

# --- roles ----------------------------------------------------------------------


class Role(enum.StrEnum):
    """What an agency does, and so which message types it may send."""

    TRAFFICKING_UNIT = "trafficking_unit"
    IMMIGRATION = "immigration"
    DOCUMENT_AUTHORITY = "document_authority"
    INVESTIGATOR = "investigator"
    CENTRAL_AUTHORITY = "central_authority"
    LIAISON = "liaison"
    AUDITOR = "auditor"


MAX_ROLES: Final = len(Role)

_CASEWORK: Final = frozenset(
    {
        "alert",
        "person.query",
        "person.result",
        "followup.request",
        "followup.decision",
        "receipt",
    }
)

ROLE_MAY_SEND: Final[Mapping[Role, frozenset[str]]] = MappingProxyType(
    {
        Role.TRAFFICKING_UNIT: _CASEWORK,
        Role.INVESTIGATOR: _CASEWORK,
        Role.IMMIGRATION: frozenset({"doc.verify.request", "alert", "receipt"}),
        Role.DOCUMENT_AUTHORITY: frozenset({"doc.verify.response", "receipt"}),
        Role.CENTRAL_AUTHORITY: frozenset({"mla.request", "mla.status", "alert", "receipt"}),
        # Oversight reads the audit log through its hub; it takes no part in exchanges.
        Role.LIAISON: frozenset(),
        Role.AUDITOR: frozenset(),
    }
)
"""Message types each role may send; an agency may send the union over its roles."""

HUB_MAY_SEND: Final = frozenset({"receipt"})
"""Hubs sign rejection and relay receipts, nothing else."""


def check_may_send(roles: Iterable[Role], type_name: str) -> None:
    """Refuse unless one of ``roles`` may send ``type_name`` (:data:`ROLE_MAY_SEND`)."""
    if type_name not in MESSAGE_TYPES:
        raise SchemaError(f"unknown message type {type_name[:40]!r}")
    held = sorted(set(roles))
    if not any(type_name in ROLE_MAY_SEND[r] for r in held):
        named = ", ".join(held) or "no role"
        raise UnauthorisedError(f"{named} may not send {type_name}")


# --- wire structures ------------------------------------------------------------

PublicKeyBytes = Annotated[
    bytes, msgspec.Meta(min_length=PUBLIC_KEY_BYTES, max_length=PUBLIC_KEY_BYTES)
]
KeyIdBytes = Annotated[bytes, msgspec.Meta(min_length=KEY_ID_BYTES, max_length=KEY_ID_BYTES)]
SignatureBytes = Annotated[
    bytes, msgspec.Meta(min_length=SIGNATURE_BYTES, max_length=SIGNATURE_BYTES)
]
Version = Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)]


class RevocationInfo(wire.WireStruct, frozen=True):
    """From ``at`` on, nothing signed by the agency is accepted, whatever key it used."""

    at: TimeMs
    reason: ShortText

    def __post_init__(self) -> None:
        check_fields(self)


class PreviousKey(wire.WireStruct, frozen=True):
    """A signing key replaced by rotation, still accepted until ``valid_until``.

    Envelopes signed just before a rotation are in flight (or queued for an
    offline agency) when the new directory arrives; they stay verifiable until
    the old key's grace period ends.
    """

    key: PublicKeyBytes
    valid_until: TimeMs

    def __post_init__(self) -> None:
        check_fields(self)


class DirectoryEntry(wire.WireStruct, frozen=True):
    """One agency: its roles and keys, valid over ``[valid_from, valid_until)``."""

    agency: PrincipalStr
    roles: Annotated[tuple[Role, ...], msgspec.Meta(min_length=1, max_length=MAX_ROLES)]
    signing_key: PublicKeyBytes
    encryption_key: PublicKeyBytes
    valid_from: TimeMs
    valid_until: TimeMs
    revoked: RevocationInfo | None = None
    previous_signing_keys: Annotated[
        tuple[PreviousKey, ...], msgspec.Meta(max_length=MAX_PREVIOUS_KEYS)
    ] = ()

    def __post_init__(self) -> None:
        check_fields(self)
        parse_agency(self.agency)
        # One order for a set of roles, so equal entries have equal bytes.
        if list(self.roles) != sorted(set(self.roles)):
            raise SchemaError(
                f"{self.agency}: roles must be in ascending order (by name) without repeats"
            )
        if self.valid_from >= self.valid_until:
            raise SchemaError(f"{self.agency}: valid_until must be after valid_from")
        previous = [p.key for p in self.previous_signing_keys]
        if len(set(previous)) != len(previous) or self.signing_key in previous:
            raise SchemaError(
                f"{self.agency}: previous_signing_keys must not repeat a key or the current one"
            )

    @property
    def principal(self) -> Principal:
        return parse_agency(self.agency)

    @property
    def signing_key_id(self) -> bytes:
        return key_id(KeyAlg.ED25519, self.signing_key)

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(self.principal, self.signing_key, self.encryption_key)


class Directory(wire.WireStruct, frozen=True):
    """A hub's agencies at one version. Entries are sorted by agency id, one per agency."""

    hub: PrincipalStr
    version: Version
    issued: TimeMs
    expires: TimeMs
    entries: Annotated[tuple[DirectoryEntry, ...], msgspec.Meta(max_length=MAX_DIRECTORY_ENTRIES)]

    def __post_init__(self) -> None:
        check_fields(self)
        hub = parse_hub(self.hub)
        if self.expires <= self.issued:
            raise SchemaError("directory: expires must be after issued")
        prefix = f"{hub.country}/"
        previous = ""
        signing: set[bytes] = set()
        encryption: set[bytes] = set()
        for i, entry in enumerate(self.entries):
            where = f"directory.entries[{i}] ({entry.agency})"
            if not entry.agency.startswith(prefix):
                raise SchemaError(f"{where}: not an agency of {hub.country}")
            if entry.agency <= previous:
                raise SchemaError(f"{where}: entries must be sorted by agency, without repeats")
            if entry.signing_key in signing or entry.encryption_key in encryption:
                raise SchemaError(f"{where}: shares a key with another agency")
            previous = entry.agency
            signing.add(entry.signing_key)
            encryption.add(entry.encryption_key)

    @property
    def country(self) -> str:
        return self.hub.split("/", 1)[0]

    @property
    def hub_principal(self) -> Principal:
        return parse_hub(self.hub)


class SignedDirectory(wire.WireStruct, frozen=True):
    """The outer structure: the body is carried as bytes so the signature covers exact bytes."""

    body: Annotated[bytes, msgspec.Meta(max_length=MAX_DIRECTORY_BYTES)]
    key_id: KeyIdBytes
    sig: SignatureBytes


# --- trust anchors (federation file) --------------------------------------------

_FEDERATION_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9])?")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """The hub signing key of every member country. An instance that exists is valid."""

    name: str
    hubs: Mapping[str, bytes]
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


def parse_federation(text: str) -> TrustAnchors:
    """Read the federation file (TOML); every error names the bad key (``hub[1].signing_key``).

    ``hub[i]`` counts the ``[[hub]]`` tables from 0 in file order.
    """
    if len(text) > MAX_FEDERATION_CHARS:
        raise ConfigError("federation file: larger than 1 MiB")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"federation file: not valid TOML ({exc})") from None
    _only_keys(doc, {"federation", "hub"}, "")
    fed = doc.get("federation")
    if not isinstance(fed, dict):
        raise ConfigError("federation: a [federation] table is required")
    _only_keys(fed, {"name"}, "federation.")
    name = fed.get("name")
    if not isinstance(name, str):
        raise ConfigError("federation.name: a string is required")
    hubs_doc = doc.get("hub")
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
    return TrustAnchors(name, hubs)


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


# --- signing and verifying -------------------------------------------------------


def sign_directory(directory: Directory, hub: Identity) -> bytes:
    """The signed directory's bytes: what a hub publishes on ``ixb.<CC>.directory``."""
    if str(hub.principal) != directory.hub:
        raise UnauthorisedError(f"{hub.principal} may not sign the directory of {directory.hub}")
    body = wire.encode(directory)
    if len(body) > MAX_DIRECTORY_BYTES:
        raise TooLargeError(f"directory is {len(body)} bytes; limit {MAX_DIRECTORY_BYTES}")
    sig = hub.signing.sign(DS_DIRECTORY + body)
    return wire.encode(SignedDirectory(body=body, key_id=hub.signing.key_id, sig=sig))


def verify_directory(
    data: bytes,
    trust: TrustAnchors,
    now_ms: int,
    *,
    current_version: int | None,
    current: Directory | None = None,
    country: str | None = None,
) -> Directory:
    """Check a signed directory in the spec's order; return it or raise a typed error.

    ``current_version`` is the version already trusted for that country (None:
    none yet). Only a newer version passes, except that a re-delivery of
    ``current`` itself (same version, same content) is returned unchanged, so
    the caller sees equal versions and does nothing. ``country``, if given, is
    the country whose directory the caller asked for.
    """
    if len(data) > MAX_SIGNED_DIRECTORY_BYTES:
        raise TooLargeError(
            f"signed directory is {len(data)} bytes; limit {MAX_SIGNED_DIRECTORY_BYTES}"
        )
    outer = wire.decode(data, SignedDirectory, "signed directory")
    signer = trust.country_of_key_id(outer.key_id)
    if signer is None:
        raise SignatureError(
            f"directory is not signed by a hub of federation {trust.name} "
            f"(key id {outer.key_id.hex()})"
        )
    try:
        verify_signature(trust.hub_key(signer), DS_DIRECTORY + outer.body, outer.sig)
    except SignatureError:
        raise SignatureError(
            f"directory signature does not verify with {signer}/HUB's key"
        ) from None
    directory = wire.decode(outer.body, Directory, "directory")
    if directory.country != signer:
        raise UnauthorisedError(f"{signer}/HUB may not publish the directory of {directory.hub}")
    if country is not None and directory.country != country:
        raise DirectoryError(f"asked for the directory of {country}, got {directory.hub}'s")
    if current_version is not None and directory.version <= current_version:
        if directory.version < current_version:
            raise RollbackError(
                f"{directory.hub} directory version {directory.version} is older than the "
                f"trusted version {current_version}"
            )
        if directory != current:
            raise RollbackError(
                f"{directory.hub} directory version {directory.version} differs from the "
                "trusted directory of the same version"
            )
    if now_ms >= directory.expires:
        raise ExpiredError(_expired(directory, now_ms))
    return directory


def _expired(directory: Directory, now_ms: int) -> str:
    return (
        f"{directory.hub} directory version {directory.version} expired at "
        f"{directory.expires} ({now_ms - directory.expires} ms ago)"
    )


# --- building (hubs) ------------------------------------------------------------


def entry_for(
    public: PublicIdentity,
    roles: Iterable[Role | str],
    valid_from: int,
    valid_until: int,
    *,
    revoked: RevocationInfo | None = None,
    previous_signing_keys: Iterable[PreviousKey] = (),
) -> DirectoryEntry:
    """A directory entry for an agency's public keys (roles in any order, repeats ignored)."""
    if public.principal.is_hub or public.encryption is None:
        raise SchemaError(f"{public.principal}: only agencies, with an encryption key, are listed")
    try:
        ordered = tuple(sorted({Role(r) for r in roles}))
    except ValueError:
        raise SchemaError(f"{public.principal}: unknown role") from None
    return DirectoryEntry(
        agency=str(public.principal),
        roles=ordered,
        signing_key=public.signing,
        encryption_key=public.encryption,
        valid_from=valid_from,
        valid_until=valid_until,
        revoked=revoked,
        previous_signing_keys=tuple(previous_signing_keys),
    )


def rotate_entry(
    entry: DirectoryEntry, new: PublicIdentity, *, now_ms: int, old_key_valid_until: int
) -> DirectoryEntry:
    """The entry with ``new``'s keys; the old signing key stays valid until ``old_key_valid_until``.

    Previous keys already past their grace period at ``now_ms`` are dropped,
    and at most :data:`MAX_PREVIOUS_KEYS` (the most recent) are kept.
    """
    if str(new.principal) != entry.agency or new.encryption is None:
        raise SchemaError(f"{new.principal}: rotation needs new keys of {entry.agency}")
    kept = [
        p
        for p in entry.previous_signing_keys
        if p.valid_until > now_ms and p.key not in (new.signing, entry.signing_key)
    ]
    previous = (PreviousKey(key=entry.signing_key, valid_until=old_key_valid_until), *kept)
    return msgspec.structs.replace(
        entry,
        signing_key=new.signing,
        encryption_key=new.encryption,
        previous_signing_keys=previous[:MAX_PREVIOUS_KEYS],
    )


def revoke_entry(entry: DirectoryEntry, at_ms: int, reason: str) -> DirectoryEntry:
    """The entry revoked from ``at_ms`` on (every key, current and previous)."""
    return msgspec.structs.replace(entry, revoked=RevocationInfo(at=at_ms, reason=reason))


def build_directory(
    hub: Principal, version: int, issued_ms: int, ttl_ms: int, entries: Iterable[DirectoryEntry]
) -> Directory:
    """A directory of ``entries`` (any order), valid for ``ttl_ms`` from ``issued_ms``.

    Peers refuse every agency of a country whose directory has expired, so a
    hub re-signs well before that (e.g. every ``ttl_ms / 3``).
    """
    if not hub.is_hub:
        raise SchemaError(f"{hub} is not a hub id (CC/HUB)")
    if ttl_ms <= 0:
        raise SchemaError("directory ttl must be positive")
    return Directory(
        hub=str(hub),
        version=version,
        issued=issued_ms,
        expires=issued_ms + ttl_ms,
        entries=tuple(sorted(entries, key=lambda e: e.agency)),
    )


# --- the key lookup a hub or agency verifies with ---------------------------------


@dataclass(frozen=True, slots=True)
class _Installed:
    directory: Directory
    signed: bytes
    by_agency: Mapping[str, DirectoryEntry]


class DirectoryKeys:
    """Who may sign, per the trust anchors and each country's latest verified directory.

    Implements :class:`protocols.keys.SigningKeyLookup`. ``clock`` returns
    the current time in ms: the hub passes a real clock, tests a fixed one,
    so this module never reads one itself. State moves forward only: a
    directory replaces the installed one of its country only if it verifies
    and is newer.
    """

    def __init__(self, trust: TrustAnchors, clock: Callable[[], int]) -> None:
        self._trust = trust
        self._clock = clock
        self._installed: dict[str, _Installed] = {}

    @property
    def trust(self) -> TrustAnchors:
        return self._trust

    # -- updates --

    def update(self, country: str, signed: bytes) -> bool:
        """Verify and install ``country``'s directory; True if it replaced the installed one.

        A re-delivery of the installed bytes is a no-op (False). Anything else
        that is not a valid, newer directory of ``country`` raises, and the
        installed directory stays.
        """
        check_country(country)
        now = self._clock()
        installed = self._installed.get(country)
        if installed is not None and signed == installed.signed:
            # Verified before with the same (immutable) anchors: only time has moved.
            if now >= installed.directory.expires:
                raise ExpiredError(_expired(installed.directory, now))
            return False
        directory = verify_directory(
            signed,
            self._trust,
            now,
            current_version=None if installed is None else installed.directory.version,
            current=None if installed is None else installed.directory,
            country=country,
        )
        if installed is not None and directory == installed.directory:
            return False
        by_agency = MappingProxyType({e.agency: e for e in directory.entries})
        self._installed[country] = _Installed(directory, signed, by_agency)
        return True

    # -- what is installed --

    def version(self, country: str) -> int | None:
        installed = self._installed.get(country)
        return None if installed is None else installed.directory.version

    def directory(self, country: str) -> Directory | None:
        installed = self._installed.get(country)
        return None if installed is None else installed.directory

    def signed(self, country: str) -> bytes | None:
        """The installed directory's signed bytes, to store or pass on unchanged."""
        installed = self._installed.get(country)
        return None if installed is None else installed.signed

    def agencies(self, country: str) -> tuple[Principal, ...]:
        """Every agency listed for ``country``, revoked and expired ones included."""
        installed = self._installed.get(country)
        if installed is None:
            return ()
        return tuple(e.principal for e in installed.directory.entries)

    def entry(self, agency: Principal) -> DirectoryEntry:
        """The agency's entry as listed, for display and audit: no validity checks."""
        installed = self._installed.get(agency.country)
        entry = None if installed is None else installed.by_agency.get(str(agency))
        if entry is None:
            raise UnknownSenderError(f"{agency} is not in a directory")
        return entry

    # -- decisions (all checked at the clock's now) --

    def signing_key(self, sender: Principal, kid: bytes) -> bytes:
        """The key ``sender`` signed with, if ``kid`` names one that is valid now."""
        if sender.is_hub:
            key = self._trust.hub_key(sender.country)
            if not hmac.compare_digest(key_id(KeyAlg.ED25519, key), kid):
                raise UnknownSenderError(
                    f"{sender} has no signing key with key id {kid.hex()} in the federation file"
                )
            return key
        now = self._clock()
        entry = self._active(sender, now)
        if hmac.compare_digest(entry.signing_key_id, kid):
            return entry.signing_key
        for previous in entry.previous_signing_keys:
            if hmac.compare_digest(key_id(KeyAlg.ED25519, previous.key), kid):
                if now < previous.valid_until:
                    return previous.key
                raise UnknownSenderError(
                    f"{sender}'s signing key {kid.hex()} was replaced; "
                    f"accepted until {previous.valid_until}"
                )
        raise UnknownSenderError(f"{sender} has no signing key with key id {kid.hex()}")

    def encryption_key(self, agency: Principal) -> PublicIdentity:
        """Who to seal content keys to; refused for revoked or out-of-validity agencies."""
        if agency.is_hub:
            raise NotRecipientError(f"{agency} has no encryption key (hubs cannot read content)")
        return self._active(agency, self._clock()).public

    def roles(self, agency: Principal) -> frozenset[Role]:
        """The roles of an agency that is valid now (hubs have none)."""
        if agency.is_hub:
            return frozenset()
        return frozenset(self._active(agency, self._clock()).roles)

    def check_may_send(self, sender: Principal, type_name: str) -> None:
        """Refuse unless ``sender`` (agency or hub) may send ``type_name`` now."""
        if sender.is_hub:
            if type_name not in HUB_MAY_SEND:
                raise UnauthorisedError(f"{sender} is a hub: it may send only receipts")
            return
        check_may_send(self.roles(sender), type_name)

    def _active(self, agency: Principal, now: int) -> DirectoryEntry:
        installed = self._installed.get(agency.country)
        if installed is None:
            raise UnknownSenderError(f"{agency} is unknown: no directory of {agency.country} yet")
        self._check_fresh(installed.directory, now)
        entry = installed.by_agency.get(str(agency))
        if entry is None:
            raise UnknownSenderError(
                f"{agency} is not in {agency.country}'s directory "
                f"(version {installed.directory.version})"
            )
        if entry.revoked is not None and entry.revoked.at <= now:
            raise RevokedError(
                f"{agency} was revoked at {entry.revoked.at}: {entry.revoked.reason}"
            )
        if now < entry.valid_from:
            raise RevokedError(f"{agency} is not valid before {entry.valid_from}")
        if now >= entry.valid_until:
            raise RevokedError(f"{agency}'s directory entry ended at {entry.valid_until}")
        return entry

    @staticmethod
    def _check_fresh(directory: Directory, now: int) -> None:
        # A frozen directory would keep revoked keys alive: refuse rather than guess.
        if now >= directory.expires:
            raise DirectoryError(
                f"{directory.hub} directory version {directory.version} expired at "
                f"{directory.expires} and no newer one has arrived"
            )
