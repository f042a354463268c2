"""The signed directory's wire format: build, sign and verify one (SPEC.md §12).

Each national hub publishes a versioned, expiring list of its agencies (roles,
keys, validity, revocation), signed with its hub key::

    signed = {body: bin, key_id: bin 8, sig: bin 64}
    body   = canonical MessagePack of Directory
    sig    = Ed25519(hub, "ixb-directory-v1\\0" ‖ body)

:func:`verify_directory` is pure: bytes, the trust anchors
(:mod:`protocols.federation`), ``now_ms`` and the version already trusted in;
a verified :class:`Directory` or a typed error out, checked in the order of
§12 "Verification order" (the step numbers are marked in the code). Which
directory is trusted at a time, and what it answers, is
:mod:`protocols.trusted`; roles are :mod:`protocols.roles`. Builders
(:func:`build_directory`, :func:`entry_for`, :func:`rotate_entry`,
:func:`revoke_entry`, :func:`sign_directory`) are for a hub's own directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Final

import msgspec

from protocols import wire
from protocols.errors import (
    DirectoryError,
    ExpiredError,
    RollbackError,
    SchemaError,
    SignatureError,
    TooLargeError,
    UnauthorisedError,
)
from protocols.federation import TrustAnchors
from protocols.fields import ShortText, TimeMs, check_fields, duration_text, utc_text
from protocols.identifiers import (
    Principal,
    PrincipalStr,
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
    key_id,
    verify_signature,
)
from protocols.limits import MAX_ENVELOPE_BYTES
from protocols.roles import MAX_ROLES, Role

DS_DIRECTORY: Final = b"ixb-directory-v1\x00"

# Hard protocol maxima (SPEC.md §Directory); changing one is a protocol change.
MAX_DIRECTORY_ENTRIES: Final = 10_000
MAX_PREVIOUS_KEYS: Final = 8
MAX_VERSION: Final = (1 << 53) - 1
MAX_SIGNED_DIRECTORY_BYTES: Final = MAX_ENVELOPE_BYTES
"""A signed directory travels as one NATS message (cross-border stream, directory answer), so
it fits where an envelope does: 4 MiB, about 20,000 typical entries of ~200 bytes."""
MAX_DIRECTORY_BYTES: Final = MAX_SIGNED_DIRECTORY_BYTES - 128  # body; + key id + signature

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
    # §12 step 1: size, before anything is parsed.
    if len(data) > MAX_SIGNED_DIRECTORY_BYTES:
        raise TooLargeError(
            f"signed directory is {len(data)} bytes; limit {MAX_SIGNED_DIRECTORY_BYTES}"
        )
    # Step 2: the outer structure only; the body stays bytes until its signature verifies.
    outer = wire.decode(data, SignedDirectory, "signed directory")
    # Step 3: the key id names one of the federation's hub keys at now_ms (a key a
    # later federation version changed counts during its grace): the signer.
    found = trust.signer(outer.key_id, now_ms)
    if found is None:
        raise SignatureError(
            f"directory is not signed by a hub of federation {trust.name} "
            f"(key id {outer.key_id.hex()})"
        )
    signer, signer_key = found
    # Step 4: the signer's hub key signed exactly these body bytes.
    try:
        verify_signature(signer_key, DS_DIRECTORY + outer.body, outer.sig)
    except SignatureError:
        raise SignatureError(
            f"directory signature does not verify with {signer}/HUB's key"
        ) from None
    # Step 5: the body parses as a Directory, with every rule of its tables.
    directory = wire.decode(outer.body, Directory, "directory")
    # Step 6: a hub speaks only for its own country.
    if directory.country != signer:
        raise UnauthorisedError(f"{signer}/HUB may not publish the directory of {directory.hub}")
    # Step 7: it is the country the caller asked for.
    if country is not None and directory.country != country:
        raise DirectoryError(f"asked for the directory of {country}, got {directory.hub}'s")
    # Step 8: newer than the trusted version, or a re-delivery of the trusted directory.
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
    # Step 9: not expired (after step 8, so a replayed old directory is the rollback it is).
    check_unexpired(directory, now_ms)
    return directory


def check_unexpired(directory: Directory, now_ms: int) -> None:
    """Step 9 alone: :class:`ExpiredError` unless ``now_ms`` is before ``expires``."""
    if now_ms >= directory.expires:
        raise ExpiredError(
            f"{directory.hub} directory version {directory.version} expired at "
            f"{utc_text(directory.expires)} ({duration_text(now_ms - directory.expires)} ago)"
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
