"""An agency's self-service encryption-key update, and its hub's decision on it (SPEC §12.1).

A new X25519 key does not change who the agency is, so the agency asks its
own hub directly, signed with the signing key the hub lists for it; no
operator round trip. Pure: bytes in, a verified :class:`KeyUpdate` or a typed
error out; the caller passes the agency's listed keys, its last accepted
update and ``now``::

    signed = {body: bin, sig: bin 64}
    body   = canonical MessagePack of KeyUpdate
    sig    = Ed25519(listed signing key, "ixb-enckey-v1\\0" ‖ body)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

from protocols import wire
from protocols.errors import (
    ClockSkewError,
    RateLimitedError,
    ReplayError,
    SchemaError,
    SignatureError,
)
from protocols.fields import ShortText, TimeMs, check_fields
from protocols.identifiers import Principal, PrincipalStr, parse_agency
from protocols.keys import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    KeyAlg,
    fingerprint,
    verify_signature,
)

DS_ENCKEY: Final = b"ixb-enckey-v1\x00"
UPDATE_VERSION: Final = 1
MAX_UPDATE_BYTES: Final = 512
MAX_SKEW_MS: Final = 5 * 60 * 1000
"""An update's ``created`` must be within this of the hub's clock: a stale one is refused."""
MIN_INTERVAL_MS: Final = 10 * 60 * 1000
"""At most one accepted update per agency per this (the hub's default)."""

PublicKeyBytes = Annotated[
    bytes, msgspec.Meta(min_length=PUBLIC_KEY_BYTES, max_length=PUBLIC_KEY_BYTES)
]
SignatureBytes = Annotated[
    bytes, msgspec.Meta(min_length=SIGNATURE_BYTES, max_length=SIGNATURE_BYTES)
]


class KeyUpdate(wire.WireStruct, frozen=True):
    """The agency's new encryption key, from ``created`` on."""

    v: int
    agency: PrincipalStr
    encryption_key: PublicKeyBytes
    created: TimeMs

    def __post_init__(self) -> None:
        if self.v != UPDATE_VERSION:
            raise SchemaError(f"key update version {self.v!r} is not {UPDATE_VERSION}")
        check_fields(self)
        parse_agency(self.agency)

    @property
    def principal(self) -> Principal:
        return parse_agency(self.agency)

    @property
    def fingerprint(self) -> str:
        return fingerprint(KeyAlg.X25519, self.encryption_key)


class SignedKeyUpdate(wire.WireStruct, frozen=True):
    body: Annotated[bytes, msgspec.Meta(max_length=MAX_UPDATE_BYTES)]
    sig: SignatureBytes


class KeyUpdateAnswer(wire.WireStruct, frozen=True):
    """The hub's reply: ``code`` None and the directory ``version`` that lists the key,
    or the refusal's code (SPEC §9) and a one-line reason."""

    code: ShortText | None = None
    detail: str = ""
    version: int | None = None


@dataclass(frozen=True, slots=True)
class LastUpdate:
    """The agency's last update the hub accepted: its ``created``, and when the hub took it."""

    created: int
    accepted_at: int


def sign_update(update: KeyUpdate, signer: Identity) -> bytes:
    """The signed update's bytes, by ``signer`` (the agency's listed signing key)."""
    if signer.principal != update.principal:
        raise SchemaError(f"{signer.principal} cannot sign a key update for {update.agency}")
    body = wire.encode(update)
    return wire.encode(SignedKeyUpdate(body=body, sig=signer.signing.sign(DS_ENCKEY + body)))


def parse_update(data: bytes) -> tuple[KeyUpdate, SignedKeyUpdate]:
    """Decode without checking the signature (the hub needs the agency to find its key)."""
    if len(data) > MAX_UPDATE_BYTES + 128:
        raise SchemaError(f"key update is {len(data)} bytes; limit {MAX_UPDATE_BYTES}")
    outer = wire.decode(data, SignedKeyUpdate, "signed key update")
    return wire.decode(outer.body, KeyUpdate, "key update"), outer


def verify_update(
    data: bytes,
    signing_key: bytes,
    current_encryption: bytes,
    last: LastUpdate | None,
    now: int,
    *,
    min_interval_ms: int = MIN_INTERVAL_MS,
) -> KeyUpdate:
    """Steps 1-5 of SPEC §12.1: the update, if the agency may make it at ``now``.

    The caller has found the agency listed and not revoked (step 2) and passes
    its listed keys and its last accepted update.
    """
    update, outer = parse_update(data)  # 1
    try:  # 3
        verify_signature(signing_key, DS_ENCKEY + outer.body, outer.sig)
    except SignatureError:
        raise SignatureError(
            f"key update for {update.agency} is not signed by its listed signing key"
        ) from None
    if last is not None and update.created <= last.created:  # 4
        raise ReplayError(f"key update for {update.agency} is not newer than the last accepted")
    if abs(update.created - now) > MAX_SKEW_MS:
        raise ClockSkewError(
            f"key update for {update.agency} was made at {update.created}, "
            f"more than {MAX_SKEW_MS // 1000} s from {now}"
        )
    if update.encryption_key == current_encryption:
        raise ReplayError(f"key update for {update.agency} carries the key already listed")
    if last is not None and now - last.accepted_at < min_interval_ms:  # 5
        raise RateLimitedError(
            f"{update.agency} updated its encryption key less than "
            f"{min_interval_ms // 60_000} min ago"
        )
    return update


def encode_answer(answer: KeyUpdateAnswer) -> bytes:
    return wire.encode(answer)


def decode_answer(data: bytes) -> KeyUpdateAnswer:
    return wire.decode(data, KeyUpdateAnswer, "key update answer")
