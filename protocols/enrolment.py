"""An agency's signed request to its national hub: to be enrolled, or to rotate its keys.

Local to one country (the agency's machine and its hub), so specified in
docs/deploying.md rather than SPEC.md; the encoding is the spec's canonical
MessagePack (SPEC §1.1)::

    signed  = {body: bin, sig: bin 64, previous_sig?: bin 64}
    body    = canonical MessagePack of Request
    sig     = Ed25519(body.signing_key, "ixb-enrolment-v1\\0" ‖ body)
    previous_sig (rotation only)
            = Ed25519(body.previous_signing_key, "ixb-enrolment-v1\\0" ‖ body)

An enrolment proves possession of the new signing key (its own signature);
the operator checks the id and fingerprints out of band before approving. A
rotation is also signed by the key it replaces, so nobody but the holder of
the current key can move an agency to new keys. Pure: bytes in, a verified
:class:`Request` or a typed error out.
"""

from __future__ import annotations

import enum
import hmac
from typing import Annotated, Final
from urllib.parse import urlsplit

import msgspec

from protocols import wire
from protocols.errors import SchemaError, SignatureError
from protocols.fields import ShortText, TimeMs, check_fields
from protocols.identifiers import Principal, PrincipalStr, parse_agency
from protocols.keys import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    PublicIdentity,
    is_nkey_user,
    verify_signature,
)

DS_ENROLMENT: Final = b"ixb-enrolment-v1\x00"
REQUEST_VERSION: Final = 1
MAX_REQUEST_BYTES: Final = 4096
SERVER_SCHEMES: Final = ("nats", "tls")

PublicKeyBytes = Annotated[
    bytes, msgspec.Meta(min_length=PUBLIC_KEY_BYTES, max_length=PUBLIC_KEY_BYTES)
]
SignatureBytes = Annotated[
    bytes, msgspec.Meta(min_length=SIGNATURE_BYTES, max_length=SIGNATURE_BYTES)
]


class RequestKind(enum.StrEnum):
    ENROL = "enrol"
    ROTATE = "rotate"


class Request(wire.WireStruct, frozen=True):
    """What the agency asks for; the hub's operator decides roles."""

    v: int
    kind: RequestKind
    agency: PrincipalStr
    signing_key: PublicKeyBytes
    encryption_key: PublicKeyBytes
    created: TimeMs
    server: ShortText | None = None
    """Enrolment: the NATS server the agency will connect to (``nats://`` or ``tls://``)."""
    nats_user: ShortText | None = None
    nats_password_hash: ShortText | None = None
    """Requests made before nkeys: bcrypt of the NATS password the agency generated and keeps."""
    nats_nkey: ShortText | None = None
    """Enrolment: the public NATS user nkey (``U…``) the agency logs in with; its seed is
    sealed in the agency's key file and never leaves it."""
    previous_signing_key: PublicKeyBytes | None = None
    """Rotation: the signing key being replaced (it signs the request too)."""

    def __post_init__(self) -> None:
        if self.v != REQUEST_VERSION:
            raise SchemaError(f"request version {self.v!r} is not {REQUEST_VERSION}")
        check_fields(self)
        parse_agency(self.agency)
        if self.kind is RequestKind.ENROL:
            if self.server is None or self.nats_user is None:
                raise SchemaError("an enrolment request names its server and NATS user")
            if (self.nats_nkey is None) == (self.nats_password_hash is None):
                raise SchemaError(
                    "an enrolment request carries a NATS nkey (or, before nkeys, a hash)"
                )
            if self.nats_nkey is not None and not is_nkey_user(self.nats_nkey):
                raise SchemaError("nats_nkey is not a public NATS user nkey (U…)")
            check_server(self.server)
        elif self.previous_signing_key is None:
            raise SchemaError("a rotation request names the signing key it replaces")

    @property
    def principal(self) -> Principal:
        return parse_agency(self.agency)

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(self.principal, self.signing_key, self.encryption_key)


class SignedRequest(wire.WireStruct, frozen=True):
    body: Annotated[bytes, msgspec.Meta(max_length=MAX_REQUEST_BYTES)]
    sig: SignatureBytes
    previous_sig: SignatureBytes | None = None


def check_server(address: str) -> str:
    """``nats://host:port`` or ``tls://host:port``, else :class:`SchemaError`."""
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        raise SchemaError(f"server {address!r}: not a nats:// or tls:// address") from None
    if parts.scheme not in SERVER_SCHEMES or not parts.hostname or port is None:
        raise SchemaError(f"server {address!r}: expected nats://HOST:PORT or tls://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise SchemaError(f"server {address!r}: only scheme, host and port")
    return address


def sign_request(request: Request, new: Identity, previous: Identity | None = None) -> bytes:
    """The signed request's bytes: by the new key, and (rotation) by the key it replaces."""
    if new.principal != request.principal or new.public().signing != request.signing_key:
        raise SchemaError("the request must be signed by the signing key it carries")
    body = wire.encode(request)
    previous_sig = None
    if request.kind is RequestKind.ROTATE:
        if previous is None or previous.public().signing != request.previous_signing_key:
            raise SchemaError("a rotation is signed by the key it replaces too")
        previous_sig = previous.signing.sign(DS_ENROLMENT + body)
    sig = new.signing.sign(DS_ENROLMENT + body)
    return wire.encode(SignedRequest(body=body, sig=sig, previous_sig=previous_sig))


def verify_request(data: bytes) -> Request:
    """Parse and check the signature(s): a :class:`Request` its keys' holder signed."""
    if len(data) > MAX_REQUEST_BYTES + 256:
        raise SchemaError(f"request is {len(data)} bytes; limit {MAX_REQUEST_BYTES}")
    outer = wire.decode(data, SignedRequest, "signed request")
    request = wire.decode(outer.body, Request, "request")
    try:
        verify_signature(request.signing_key, DS_ENROLMENT + outer.body, outer.sig)
    except SignatureError:
        raise SignatureError(
            f"request for {request.agency} is not signed by the signing key it carries"
        ) from None
    if request.kind is RequestKind.ROTATE:
        previous = request.previous_signing_key
        if outer.previous_sig is None or previous is None:
            raise SignatureError(f"rotation for {request.agency} lacks the old key's signature")
        try:
            verify_signature(previous, DS_ENROLMENT + outer.body, outer.previous_sig)
        except SignatureError:
            raise SignatureError(
                f"rotation for {request.agency} is not signed by the key it replaces"
            ) from None
    elif outer.previous_sig is not None:
        raise SchemaError("an enrolment request carries one signature")
    return request


def same_key(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
