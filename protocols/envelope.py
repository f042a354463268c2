"""The envelope: encrypt-then-sign, so every hub can verify the sender without reading content.

Layout and the exact order of checks are in SPEC.md §Envelope. In short::

    envelope = {v: 1, hdr: bin, keys: bin, ct: bin, sig: bin, hops?: [hop]}
    hdr  = canonical MessagePack of Header (clear, signed)
    keys = canonical MessagePack of [[recipient, key_id, sealed_key], …]
    ct   = nonce(24) ‖ key_commitment(32) ‖ XChaCha20-Poly1305(pad(body), ad=H(hdr))
    sig  = Ed25519(sender, "ixb-sig-v1\\0" ‖ digest(hdr, keys, ct))
    hop  = [hub, key_id, at, Ed25519(hub, "ixb-hop-v1\\0" ‖ digest ‖ [hub, key_id, at])]

The signature covers the exact bytes of ``hdr``, ``keys`` and ``ct``; hubs
append hop signatures outside it, so countersigning never disturbs the
sender's signature. Binding the header into the AEAD as associated data means
a stolen ciphertext cannot be re-sent under another sender's name, and the
key commitment means every recipient decrypts the same plaintext.

Decoding (:func:`decode_envelope`) checks structure only. :func:`verify_envelope`
checks the sender's key and signature and the freshness at the caller's
``now_ms`` and returns a :class:`VerifiedEnvelope`: the only thing
:func:`open_envelope` decrypts, and only :func:`verify_envelope` makes one.

Everything here is pure: callers pass ``now_ms``; randomness comes from
libsodium.
"""

from __future__ import annotations

import dataclasses
import hmac
import struct
from collections.abc import Sequence
from typing import Annotated, Final, NoReturn, final

import msgspec
import nacl.bindings
import nacl.exceptions
import nacl.utils

from protocols import wire
from protocols.errors import (
    ClockSkewError,
    DecryptError,
    ExpiredError,
    IxbError,
    MalformedError,
    NotRecipientError,
    SchemaError,
    SignatureError,
    TooLargeError,
    TtlError,
    VersionError,
)
from protocols.fields import check_text, duration_text, utc_text
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import (
    MessageIdBytes,
    Principal,
    PrincipalStr,
    format_message_id,
    new_message_id,
    parse_principal,
)
from protocols.keys import (
    KEY_ID_BYTES,
    Identity,
    PublicIdentity,
    SigningKeyLookup,
    SigningKeyPair,
    blake2b_256,
    verify_signature,
)
from protocols.limits import (
    DEFAULT_LIMITS,
    MAX_HOPS,
    MAX_RECIPIENTS,
    MAX_SHORT_TEXT,
    Limits,
)
from protocols.messages import MESSAGE_TYPES, REPLY_TO, Body, decode_body, encode_body
from protocols.replay import ReplayGuard
from protocols.victims import check_victim_handling

ENVELOPE_VERSION = 1
NONCE_BYTES = 24
CONTENT_KEY_BYTES = 32
COMMITMENT_BYTES = 32
SEALED_KEY_BYTES = CONTENT_KEY_BYTES + 48  # crypto_box_seal overhead
AEAD_TAG_BYTES = 16
PAD_BLOCK = 256

DS_DIGEST = b"ixb-envelope-v1\x00"
DS_SIGNATURE = b"ixb-sig-v1\x00"
DS_HOP = b"ixb-hop-v1\x00"
DS_HEADER_AD = b"ixb-header-v1\x00"
DS_COMMIT = b"ixb-commit-v1\x00"
DS_PAYLOAD = b"ixb-payload-v1\x00"

KeyIdBytes = Annotated[bytes, msgspec.Meta(min_length=KEY_ID_BYTES, max_length=KEY_ID_BYTES)]
SignatureBytes = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
TypeName = Annotated[str, msgspec.Meta(pattern=r"^[a-z]+(\.[a-z]+)*$", max_length=32)]
ShortText = Annotated[str, msgspec.Meta(max_length=MAX_SHORT_TEXT)]
Millis = Annotated[int, msgspec.Meta(ge=0, lt=1 << 53)]
CaseRef = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9/._-]{0,63}$", max_length=64)]
"""A case reference, not prose: it travels in clear past every hub and into shared audit
entries (SPEC §4.2), so no spaces, no names with spaces, at most 64 characters."""


class Header(wire.WireStruct, frozen=True):
    """The clear, signed header: everything a hub needs to route and enforce policy.

    ``sender`` and ``recipients`` are typed as plain text and checked by
    :func:`parse_principal`, so an id outside the grammar of SPEC §2 is
    ``E_IDENTIFIER`` (§9), not ``E_SCHEMA``. Checks run in the order of SPEC
    §4.7 step 4: field types and lengths, then the ids, then the other rules.
    """

    id: MessageIdBytes
    type: TypeName
    sender: str
    sender_key: KeyIdBytes
    recipients: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_RECIPIENTS)]
    created: Millis
    expires: Millis
    handling: HandlingCode
    priority: Priority
    restriction: ShortText | None = None
    case_ref: CaseRef | None = None
    in_reply_to: MessageIdBytes | None = None
    forward_of: MessageIdBytes | None = None

    def __post_init__(self) -> None:
        parse_principal(self.sender)
        for r in self.recipients:
            parse_principal(r)
        if self.type not in MESSAGE_TYPES:
            raise SchemaError(f"unknown message type {self.type!r}")
        if len(set(self.recipients)) != len(self.recipients):
            raise SchemaError("recipients must not repeat")
        if self.expires <= self.created:
            raise SchemaError("expires must be after created")
        if (self.handling is HandlingCode.H3) != bool(self.restriction):
            raise SchemaError("a restriction text is required with H3, and only with H3")
        if self.restriction is not None:  # shown at the other end, in terminals and pages
            check_text(self.restriction, "restriction")
            if not self.restriction.strip():
                raise SchemaError("restriction: blank")
        answers = self.type in REPLY_TO or self.type == "receipt"
        if answers and self.in_reply_to is None:
            raise SchemaError(f"{self.type} must name the message it answers (in_reply_to)")
        if self.forward_of is not None and self.forward_of in (self.id, self.in_reply_to):
            raise SchemaError("forward_of must name another, earlier message")

    @property
    def message_id(self) -> str:
        return format_message_id(self.id)

    @property
    def sender_principal(self) -> Principal:
        return parse_principal(self.sender)

    @property
    def recipient_principals(self) -> tuple[Principal, ...]:
        return tuple(parse_principal(r) for r in self.recipients)


class SealedKey(wire.WireStruct, frozen=True, array_like=True):
    """The content key sealed (``crypto_box_seal``) to one recipient's X25519 key."""

    recipient: PrincipalStr
    key_id: KeyIdBytes
    sealed: Annotated[bytes, msgspec.Meta(min_length=SEALED_KEY_BYTES, max_length=SEALED_KEY_BYTES)]


SealedKeys = Annotated[list[SealedKey], msgspec.Meta(min_length=1, max_length=MAX_RECIPIENTS)]


class HopClaim(wire.WireStruct, frozen=True, array_like=True):
    """What a hub states by countersigning: I, ``hub``, accepted this envelope at ``at``."""

    hub: PrincipalStr
    key_id: KeyIdBytes
    at: Millis


class Hop(wire.WireStruct, frozen=True, array_like=True):
    hub: PrincipalStr
    key_id: KeyIdBytes
    at: Millis
    sig: SignatureBytes

    @property
    def claim(self) -> HopClaim:
        return HopClaim(hub=self.hub, key_id=self.key_id, at=self.at)


class _Outer(wire.WireStruct, frozen=True):
    v: int
    hdr: bytes
    keys: bytes
    ct: bytes
    sig: SignatureBytes
    hops: Annotated[list[Hop], msgspec.Meta(max_length=MAX_HOPS)] = msgspec.field(
        default_factory=list
    )


_U32 = struct.Struct(">I").pack


def envelope_digest(hdr: bytes, keys: bytes, ct: bytes) -> bytes:
    """BLAKE2b-256 over the length-prefixed signed parts: what the sender and hops sign."""
    return blake2b_256(
        b"".join((DS_DIGEST, _U32(len(hdr)), hdr, _U32(len(keys)), keys, _U32(len(ct)), ct))
    )


def header_ad(hdr: bytes) -> bytes:
    return blake2b_256(DS_HEADER_AD + hdr)


def key_commitment(content_key: bytes) -> bytes:
    return blake2b_256(DS_COMMIT, key=content_key)


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A structurally valid envelope. Its signature is checked by :func:`verify_envelope`."""

    header: Header
    hdr: bytes
    keys: bytes
    ct: bytes
    sig: bytes
    sealed_keys: tuple[SealedKey, ...]
    hops: tuple[Hop, ...]
    digest: bytes
    size: int

    @property
    def message_id(self) -> str:
        return self.header.message_id

    @property
    def payload_hash(self) -> bytes:
        """Names the content in audit entries and receipts without revealing it."""
        return blake2b_256(DS_PAYLOAD + self.ct)

    def to_bytes(self) -> bytes:
        return _encode_outer(self.hdr, self.keys, self.ct, self.sig, self.hops)


def _encode_outer(hdr: bytes, keys: bytes, ct: bytes, sig: bytes, hops: Sequence[Hop]) -> bytes:
    return wire.encode(
        _Outer(v=ENVELOPE_VERSION, hdr=hdr, keys=keys, ct=ct, sig=sig, hops=list(hops))
    )


def decode_envelope(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Parse envelope bytes into typed parts; checks structure only, not the signature."""
    if len(data) > limits.max_envelope_bytes:
        raise TooLargeError(f"envelope is {len(data)} bytes; limit {limits.max_envelope_bytes}")
    try:
        version = msgspec.msgpack.decode(data, type=_VersionOnly).v
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        raise MalformedError("not an ixb envelope (no version field)") from None
    if version != ENVELOPE_VERSION:
        raise VersionError(f"envelope version {version} is not supported (want 1)")
    outer = wire.decode(data, _Outer, "envelope")
    header = wire.decode(outer.hdr, Header, "header")
    if len(header.recipients) > limits.max_recipients:
        raise TooLargeError(f"{len(header.recipients)} recipients; limit {limits.max_recipients}")
    if len(outer.hops) > limits.max_hops:
        raise TooLargeError(f"{len(outer.hops)} hops; limit {limits.max_hops}")
    sealed = wire.decode(outer.keys, SealedKeys, "keys")
    if [s.recipient for s in sealed] != header.recipients:
        raise SchemaError("sealed keys must list exactly the header's recipients, in order")
    if len(outer.ct) < NONCE_BYTES + COMMITMENT_BYTES + AEAD_TAG_BYTES:
        raise MalformedError("ciphertext is too short")
    return Envelope(
        header=header,
        hdr=outer.hdr,
        keys=outer.keys,
        ct=outer.ct,
        sig=outer.sig,
        sealed_keys=tuple(sealed),
        hops=tuple(outer.hops),
        digest=envelope_digest(outer.hdr, outer.keys, outer.ct),
        size=len(data),
    )


class _VersionOnly(msgspec.Struct):
    v: int


def check_times(header: Header, now_ms: int, limits: Limits = DEFAULT_LIMITS) -> None:
    """Freshness: not from the future, not expired, not living longer than allowed."""
    if header.created > now_ms + limits.max_clock_skew_ms:
        raise ClockSkewError(
            f"created {duration_text(header.created - now_ms)} in the future; "
            f"allowed skew {duration_text(limits.max_clock_skew_ms)}"
        )
    if now_ms >= header.expires:
        raise ExpiredError(
            f"expired {duration_text(now_ms - header.expires)} ago, at {utc_text(header.expires)}"
        )
    if header.expires - header.created > limits.max_ttl_ms:
        raise TtlError(f"lifetime {header.expires - header.created} ms exceeds {limits.max_ttl_ms}")


def verify_sender_signature(env: Envelope, keys: SigningKeyLookup, now_ms: int) -> None:
    """Steps 5-6 of the spec: the sender's key is valid at ``now_ms``, and it signed this."""
    public = keys.signing_key(env.header.sender_principal, env.header.sender_key, now_ms)
    verify_signature(public, DS_SIGNATURE + env.digest, env.sig)


def verify_envelope(
    data: bytes | Envelope,
    keys: SigningKeyLookup,
    now_ms: int,
    limits: Limits = DEFAULT_LIMITS,
    replay: ReplayGuard | None = None,
) -> VerifiedEnvelope:
    """Everything a hub checks before it trusts an envelope, in the spec's order.

    Structure, sender key (valid at ``now_ms``, not revoked), signature,
    freshness at ``now_ms``, and — only once all that passed, so forgeries
    cannot poison it — replay. Hop signatures are :func:`verify_hops`'.
    """
    env = data if isinstance(data, Envelope) else decode_envelope(data, limits)
    verify_sender_signature(env, keys, now_ms)
    check_times(env.header, now_ms, limits)
    if replay is not None:
        replay.check_and_record(env.header.sender, env.header.id, env.header.expires, now_ms)
    return VerifiedEnvelope(env, _token=_VERIFIED)


_VERIFIED: Final = object()
"""Held by :func:`verify_envelope` alone: the key to :class:`VerifiedEnvelope`'s constructor."""


@final
class VerifiedEnvelope:
    """An envelope whose sender signature and freshness :func:`verify_envelope` checked.

    The only thing :func:`open_envelope` decrypts. Only :func:`verify_envelope`
    makes one: the constructor refuses any caller without the module's private
    token. It is immutable, cannot be subclassed, copied or pickled (an
    unpickled one would skip verification: verify the bytes again instead),
    and the type checker sees a plain :class:`Envelope` as a different type.
    This guards against mistakes — opening what was only decoded — not against
    code in the same process set on getting around it, which Python cannot
    prevent. Hop signatures are not part of it (:func:`verify_hops`).
    """

    __slots__ = ("envelope",)
    envelope: Envelope

    def __init__(self, envelope: Envelope, *, _token: object) -> None:
        if _token is not _VERIFIED:
            raise TypeError("a VerifiedEnvelope is made only by verify_envelope")
        object.__setattr__(self, "envelope", envelope)

    def __init_subclass__(cls) -> NoReturn:
        raise TypeError("VerifiedEnvelope cannot be subclassed")

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a VerifiedEnvelope is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("a VerifiedEnvelope is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a VerifiedEnvelope is not copied or pickled; verify the bytes again")

    def __repr__(self) -> str:
        return f"VerifiedEnvelope({self.message_id}, {self.header.type})"

    @property
    def header(self) -> Header:
        return self.envelope.header

    @property
    def message_id(self) -> str:
        return self.envelope.message_id


@dataclasses.dataclass(frozen=True, slots=True)
class Opened:
    """A verified envelope opened by one of its recipients."""

    envelope: Envelope
    body: Body

    @property
    def header(self) -> Header:
        return self.envelope.header


def open_envelope(verified: VerifiedEnvelope, recipient: Identity) -> Opened:
    """Decrypt for ``recipient`` an envelope :func:`verify_envelope` verified.

    Anything else, a decoded but unverified :class:`Envelope` included, is a
    :class:`TypeError` (and a type checker's error before that).
    """
    if type(verified) is not VerifiedEnvelope:
        raise TypeError(
            f"open_envelope takes the VerifiedEnvelope verify_envelope returns, "
            f"not {type(verified).__name__}"
        )
    env = verified.envelope
    me = str(recipient.principal)
    if recipient.encryption is None:
        raise NotRecipientError(f"{me} has no encryption key (hubs cannot read content)")
    entry = next((s for s in env.sealed_keys if s.recipient == me), None)
    if entry is None:
        raise NotRecipientError(f"{me} is not a recipient of {env.message_id}")
    if not hmac.compare_digest(entry.key_id, recipient.encryption.key_id):
        raise DecryptError(f"content key is sealed to another key of {me} (rotated?)")
    try:
        content_key = recipient.encryption.unseal(entry.sealed)
    except nacl.exceptions.CryptoError:
        raise DecryptError("cannot unseal the content key") from None
    body_bytes = _decrypt_body(env.ct, content_key, env.hdr)
    body = decode_body(env.header.type, body_bytes)
    check_victim_handling(body, env.header.handling)  # §6: a sender that broke the rule shows
    return Opened(env, body)


def _decrypt_body(ct: bytes, content_key: bytes, hdr: bytes) -> bytes:
    """Check the key commitment, decrypt, and strip the padding."""
    nonce = ct[:NONCE_BYTES]
    commitment = ct[NONCE_BYTES : NONCE_BYTES + COMMITMENT_BYTES]
    if not hmac.compare_digest(commitment, key_commitment(content_key)):
        raise DecryptError("content key does not match the ciphertext's commitment")
    padded = _aead_decrypt(ct[NONCE_BYTES + COMMITMENT_BYTES :], header_ad(hdr), nonce, content_key)
    if padded is None:
        raise DecryptError("ciphertext does not authenticate")
    return _unpad(padded)


def _pad(body: bytes) -> bytes:
    framed = _U32(len(body)) + body
    return framed + b"\x00" * (-len(framed) % PAD_BLOCK)


def _unpad(padded: bytes) -> bytes:
    if len(padded) < 4 or len(padded) % PAD_BLOCK:
        raise DecryptError("plaintext padding is malformed")
    (n,) = struct.unpack(">I", padded[:4])
    if n > len(padded) - 4 or padded[4 + n :] != bytes(len(padded) - 4 - n):
        raise DecryptError("plaintext padding is malformed")
    return padded[4 : 4 + n]


# --- building -----------------------------------------------------------------


def encrypt_body(body: Body, content_key: bytes, nonce: bytes, hdr: bytes) -> bytes:
    """``ct`` for a body: nonce ‖ commitment ‖ AEAD(pad(body), ad=H(hdr))."""
    if len(content_key) != CONTENT_KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("content key is 32 bytes and nonce 24 bytes")
    sealed = _aead_encrypt(_pad(encode_body(body)), header_ad(hdr), nonce, content_key)
    return nonce + key_commitment(content_key) + sealed


# XChaCha20-Poly1305 through nacl.bindings. The arguments are checked here first, so
# a wrong type or length is a TypeError whatever PyNaCl version raises, and a
# ciphertext that does not authenticate is None rather than an exception;
# tests/test_envelope_aead.py holds both functions equal to nacl.bindings.


def _check_aead_args(data: bytes, ad: bytes, nonce: bytes, key: bytes) -> None:
    if not (
        type(data) is bytes
        and type(ad) is bytes
        and type(nonce) is bytes
        and type(key) is bytes
        and len(nonce) == NONCE_BYTES
        and len(key) == CONTENT_KEY_BYTES
    ):
        raise TypeError("AEAD takes bytes, a 24-byte nonce and a 32-byte key")


def _aead_encrypt(plain: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    _check_aead_args(plain, ad, nonce, key)
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)


def _aead_decrypt(sealed: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """The plaintext, or None when ``sealed`` does not authenticate (tag checked by libsodium)."""
    _check_aead_args(sealed, ad, nonce, key)
    if len(sealed) < AEAD_TAG_BYTES:
        return None
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, ad, nonce, key)
    except nacl.exceptions.CryptoError:
        return None


def seal_content_key(content_key: bytes, recipient: PublicIdentity) -> SealedKey:
    kid = recipient.encryption_key_id
    if recipient.encryption is None or kid is None:
        raise NotRecipientError(f"{recipient.principal} has no encryption key")
    return SealedKey(
        recipient=str(recipient.principal),
        key_id=kid,
        sealed=nacl.bindings.crypto_box_seal(content_key, recipient.encryption),
    )


def assemble(
    header: Header, sealed: Sequence[SealedKey], ct: bytes, signer: SigningKeyPair
) -> bytes:
    """Sign and encode. ``sealed`` must follow ``header.recipients`` in order."""
    return _assemble(wire.encode(header), sealed, ct, signer)


def _assemble(hdr: bytes, sealed: Sequence[SealedKey], ct: bytes, signer: SigningKeyPair) -> bytes:
    keys = wire.encode(list(sealed))
    sig = signer.sign(DS_SIGNATURE + envelope_digest(hdr, keys, ct))
    return _encode_outer(hdr, keys, ct, sig, ())


def seal_envelope(
    *,
    sender: Identity,
    recipients: Sequence[PublicIdentity],
    body: Body,
    now_ms: int,
    ttl_ms: int,
    handling: HandlingCode = HandlingCode.H0,
    priority: Priority = Priority.NORMAL,
    restriction: str | None = None,
    case_ref: str | None = None,
    in_reply_to: bytes | None = None,
    forward_of: bytes | None = None,
) -> bytes:
    """Build, encrypt to every recipient, and sign a message: the one call senders need."""
    type_name = _type_name(body)
    check_victim_handling(body, handling)
    header = Header(
        id=new_message_id(now_ms, nacl.utils.random(10)),
        type=type_name,
        sender=str(sender.principal),
        sender_key=sender.signing.key_id,
        recipients=[str(r.principal) for r in recipients],
        created=now_ms,
        expires=now_ms + ttl_ms,
        handling=handling,
        priority=priority,
        restriction=restriction,
        case_ref=case_ref,
        in_reply_to=in_reply_to,
        forward_of=forward_of,
    )
    # Header() ran its checks on construction; re-decode proves the same on the wire.
    hdr = wire.encode(header)
    wire.decode(hdr, Header, "header")
    content_key = nacl.utils.random(CONTENT_KEY_BYTES)
    ct = encrypt_body(body, content_key, nacl.utils.random(NONCE_BYTES), hdr)
    sealed = [seal_content_key(content_key, r) for r in recipients]
    return _assemble(hdr, sealed, ct, sender.signing)


def _type_name(body: Body) -> str:
    for name, cls in MESSAGE_TYPES.items():
        if type(body) is cls:
            return name
    raise SchemaError(f"{type(body).__name__} is not a message body")


# --- hop signatures -------------------------------------------------------------


def add_hop(env: Envelope, hub: Identity, at_ms: int) -> Envelope:
    """Countersign as ``hub``: a new envelope with one more hop, sender signature untouched."""
    if not hub.principal.is_hub:
        raise SchemaError(f"{hub.principal} is not a hub")
    claim = HopClaim(hub=str(hub.principal), key_id=hub.signing.key_id, at=at_ms)
    sig = hub.signing.sign(_hop_message(env.digest, claim))
    hops = (*env.hops, Hop(hub=claim.hub, key_id=claim.key_id, at=claim.at, sig=sig))
    size = len(_encode_outer(env.hdr, env.keys, env.ct, env.sig, hops))
    return dataclasses.replace(env, hops=hops, size=size)


def _hop_message(digest: bytes, claim: HopClaim) -> bytes:
    return DS_HOP + digest + wire.encode(claim)


def verify_hops(env: Envelope, keys: SigningKeyLookup, now_ms: int) -> tuple[Principal, ...]:
    """Check every hop signature with the hubs' keys at ``now_ms``; returns the hubs in order."""
    hubs: list[Principal] = []
    for i, hop in enumerate(env.hops):
        hub = parse_principal(hop.hub)
        if not hub.is_hub:
            raise SignatureError(f"hop {i} is not signed by a hub")
        try:
            public = keys.signing_key(hub, hop.key_id, now_ms)
            verify_signature(public, _hop_message(env.digest, hop.claim), hop.sig)
        except IxbError as exc:
            raise SignatureError(f"hop {i} ({hop.hub}): {exc.detail}") from None
        hubs.append(hub)
    return tuple(hubs)
