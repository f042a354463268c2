"""Agency and hub key pairs, fingerprints, and the key file encrypted at rest.

Secret key bytes never appear in ``repr``/``str`` (PyNaCl's objects print
their seed), are never logged, and leave this module only encrypted (key
file) or as the argument of a libsodium call.

Key file (SPEC.md §Key file): JSON text, secrets sealed with
XSalsa20-Poly1305 (``crypto_secretbox``) under a key derived from the
passphrase with Argon2id (``crypto_pwhash``); the KDF parameters are recorded
in the file and bounded when read, so a crafted file can neither weaken nor
exhaust the machine.

A key file may also seal the principal's NATS user nkeys (:class:`NkeySeed`,
the Ed25519 challenge-response nats-server offers instead of passwords):
an agency's under :data:`NATS_AGENCY`, a hub's under :data:`NATS_HUB` and
:func:`nats_link_label`. Files written without them still load.
"""

from __future__ import annotations

import base64
import enum
import functools
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal, NoReturn, Protocol

import msgspec
import nacl.bindings
import nacl.exceptions
import nacl.secret
import nacl.utils
import nkeys  # type: ignore[import-untyped]  # NATS's own encoding of Ed25519 keys
from nacl.public import PrivateKey
from nacl.pwhash import argon2id

from protocols.errors import (
    IxbError,
    KeyFileError,
    PassphraseError,
    RevokedError,
    SignatureError,
    UnknownSenderError,
)
from protocols.identifiers import Principal, parse_principal

KEY_ID_BYTES = 8
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MIN_PASSPHRASE_CHARS = 8
KEYFILE_FORMAT: Final = "ixb-keyfile-v1"


class KeyAlg(enum.StrEnum):
    ED25519 = "ed25519"
    X25519 = "x25519"


@functools.lru_cache(maxsize=4096)
def key_id(alg: KeyAlg, public: bytes) -> bytes:
    """8-byte id naming a public key on the wire (a hint for rotation, never trusted alone).

    Cached: key lookups recompute it for every envelope and hop checked, and it
    is a function of public bytes only.
    """
    return _key_hash(alg, public)[:KEY_ID_BYTES]


def fingerprint(alg: KeyAlg, public: bytes) -> str:
    """Human fingerprint, read aloud over the phone when exchanging trust anchors.

    ``ed25519:ABCD-EFGH-…``: 20 bytes of BLAKE2b-256 over the algorithm and
    key, in RFC 4648 base32 groups of four.
    """
    text = base64.b32encode(_key_hash(alg, public)[:20]).decode("ascii")
    return f"{alg.value}:" + "-".join(text[i : i + 4] for i in range(0, len(text), 4))


_BLAKE2B_KEY_MAX: Final = nacl.bindings.crypto_generichash_KEYBYTES_MAX


def _key_hash(alg: KeyAlg, public: bytes) -> bytes:
    return blake2b_256(b"ixb-key-v1\x00" + alg.value.encode("ascii") + b"\x00" + public)


def blake2b_256(data: bytes, key: bytes = b"") -> bytes:
    """libsodium's BLAKE2b-256 (``crypto_generichash``), keyed when ``key`` is given.

    The same call and bytes as ``nacl.hash.blake2b(data, digest_size=32,
    key=key)``, through ``nacl.bindings`` without the encoder layer
    (tests/test_keys_libsodium.py holds the two equal).
    """
    if type(data) is not bytes or type(key) is not bytes or len(key) > _BLAKE2B_KEY_MAX:
        raise TypeError("BLAKE2b takes bytes, and a key of at most 64 bytes")
    return nacl.bindings.crypto_generichash_blake2b_salt_personal(data, 32, key)


class SigningKeyPair:
    """Ed25519 key pair. The seed stays inside; ``repr`` shows the fingerprint only."""

    __slots__ = ("_sk", "key_id", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyFileError("an Ed25519 seed is 32 bytes")
        # libsodium's 64-byte secret key (seed ‖ public), signed with directly.
        self.public, self._sk = nacl.bindings.crypto_sign_seed_keypair(seed)
        self.key_id: bytes = key_id(KeyAlg.ED25519, self.public)

    @classmethod
    def generate(cls) -> SigningKeyPair:
        return cls(nacl.utils.random(32))

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature."""
        return nacl.bindings.crypto_sign(message, self._sk)[:SIGNATURE_BYTES]

    @property
    def fingerprint(self) -> str:
        return fingerprint(KeyAlg.ED25519, self.public)

    def _seed(self) -> bytes:
        return nacl.bindings.crypto_sign_ed25519_sk_to_seed(self._sk)

    def derive_secret(self, context: bytes) -> bytes:
        """A 32-byte secret for ``context`` (keyed BLAKE2b over the seed; the seed stays inside).

        For local use only, e.g. the key an agency's message store seals content with:
        it lives as long as this signing key, and reveals nothing about the seed.
        """
        if not context:
            raise ValueError("a derived secret needs a context")
        return blake2b_256(context, key=self._seed())

    def __repr__(self) -> str:
        return f"SigningKeyPair({self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("key pairs are not picklable; use a key file")


NATS_AGENCY: Final = "agency"
"""Label of an agency's NATS nkey in its key file."""
NATS_HUB: Final = "hub"
"""Label of a hub's own NATS nkey (its user in the country's IXB account)."""
NKEY_SEED_CHARS: Final = 58


def nats_link_label(peer: str) -> str:
    """Label of the nkey a hub's link to ``peer`` logs in with (the ``LINK_<peer>`` account)."""
    return f"link/{peer}"


class NkeySeed:
    """A NATS user nkey: an Ed25519 seed in NATS's encoding (``SU…``), and its public ``U…`` key.

    nats-server sends a nonce, the client signs it, the server checks the
    signature against the public key in its config: the server never holds
    the secret. The seed stays inside; ``repr`` shows the public key only.
    """

    __slots__ = ("_seed", "public")

    def __init__(self, seed: str) -> None:
        if len(seed) != NKEY_SEED_CHARS or not seed.startswith("SU") or not seed.isascii():
            raise KeyFileError("not a NATS user nkey seed (SU…)")
        buf = bytearray(seed.encode("ascii"))
        try:
            pair = nkeys.from_seed(buf)
            self.public: str = pair.public_key.decode("ascii")
            pair.wipe()
        except (nkeys.NkeysError, ValueError) as exc:
            raise KeyFileError(f"not a NATS user nkey seed ({exc})") from None
        self._seed = seed

    @classmethod
    def generate(cls) -> NkeySeed:
        raw = nacl.utils.random(32)
        return cls(nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER).decode("ascii"))

    def seed_str(self) -> str:
        """The encoded seed, for the NATS client's challenge-response (and the sealed file)."""
        return self._seed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NkeySeed) and hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash(self.public)

    def __repr__(self) -> str:
        return f"NkeySeed({self.public})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("nkey seeds are not picklable; use a key file")


def is_nkey_user(public: str) -> bool:
    """A well-formed public NATS user nkey (``U…``, checksum included)."""
    if len(public) != 56 or not public.startswith("U") or not public.isascii():
        return False
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except ValueError:
        return False
    body, crc = raw[:-2], raw[-2:]
    return bool(nkeys.crc16_checksum(body) == crc)


class EncryptionKeyPair:
    """X25519 key pair for receiving content keys."""

    __slots__ = ("_sk", "key_id", "public")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise KeyFileError("an X25519 secret key is 32 bytes")
        self._sk = bytes(secret)
        self.public: bytes = nacl.bindings.crypto_scalarmult_base(self._sk)
        self.key_id: bytes = key_id(KeyAlg.X25519, self.public)

    @classmethod
    def generate(cls) -> EncryptionKeyPair:
        return cls(bytes(PrivateKey.generate()))

    @property
    def private_key(self) -> PrivateKey:
        """For the key file and test vectors only; :meth:`unseal` is the hot path."""
        return PrivateKey(self._sk)

    def unseal(self, sealed: bytes) -> bytes:
        """Open a ``crypto_box_seal`` box sent to this key; ``CryptoError`` if it does not."""
        return nacl.bindings.crypto_box_seal_open(sealed, self.public, self._sk)

    @property
    def fingerprint(self) -> str:
        return fingerprint(KeyAlg.X25519, self.public)

    def __repr__(self) -> str:
        return f"EncryptionKeyPair({self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("key pairs are not picklable; use a key file")


@dataclass(frozen=True, slots=True)
class Identity:
    """The keys of one principal: an agency (sign + encrypt) or a hub (sign only)."""

    principal: Principal
    signing: SigningKeyPair
    encryption: EncryptionKeyPair | None
    nats: tuple[tuple[str, NkeySeed], ...] = field(default=())
    """NATS user nkeys by label (:data:`NATS_AGENCY`, :data:`NATS_HUB`, :func:`nats_link_label`);
    empty for key files written before nkeys."""

    def __post_init__(self) -> None:
        if not self.principal.is_hub and self.encryption is None:
            raise KeyFileError(f"agency {self.principal} needs an encryption key")
        labels = [label for label, _ in self.nats]
        if len(set(labels)) != len(labels):
            raise KeyFileError(f"{self.principal}: a NATS nkey label appears twice")

    @classmethod
    def generate(cls, principal: Principal) -> Identity:
        """New keys; an agency also gets its NATS nkey (a hub's come with its federation plan)."""
        enc = None if principal.is_hub else EncryptionKeyPair.generate()
        nats = () if principal.is_hub else ((NATS_AGENCY, NkeySeed.generate()),)
        return cls(principal, SigningKeyPair.generate(), enc, nats)

    def nats_seed(self, label: str) -> NkeySeed | None:
        """The sealed nkey under ``label``, or None (an older key file: use a password)."""
        return dict(self.nats).get(label)

    def with_nats(self, seeds: Mapping[str, NkeySeed]) -> Identity:
        """The same keys with these NATS nkeys (replacing any of the same label)."""
        merged = {**dict(self.nats), **seeds}
        nats = tuple(sorted(merged.items()))
        return Identity(self.principal, self.signing, self.encryption, nats)

    def public(self) -> PublicIdentity:
        return PublicIdentity(
            principal=self.principal,
            signing=self.signing.public,
            encryption=None if self.encryption is None else self.encryption.public,
        )


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """What others know of a principal: its id and public keys."""

    principal: Principal
    signing: bytes
    encryption: bytes | None

    def __post_init__(self) -> None:
        if len(self.signing) != PUBLIC_KEY_BYTES:
            raise KeyFileError("an Ed25519 public key is 32 bytes")
        if self.encryption is not None and len(self.encryption) != PUBLIC_KEY_BYTES:
            raise KeyFileError("an X25519 public key is 32 bytes")

    @property
    def signing_key_id(self) -> bytes:
        return key_id(KeyAlg.ED25519, self.signing)

    @property
    def encryption_key_id(self) -> bytes | None:
        return None if self.encryption is None else key_id(KeyAlg.X25519, self.encryption)

    def fingerprints(self) -> dict[str, str]:
        out = {"signing": fingerprint(KeyAlg.ED25519, self.signing)}
        if self.encryption is not None:
            out["encryption"] = fingerprint(KeyAlg.X25519, self.encryption)
        return out


def verify_signature(public: bytes, message: bytes, signature: bytes) -> None:
    """Check a detached Ed25519 signature or raise :class:`SignatureError`."""
    if len(signature) != SIGNATURE_BYTES or len(public) != PUBLIC_KEY_BYTES:
        raise SignatureError("signature or key has the wrong length")
    try:
        # What nacl.signing.VerifyKey.verify does, without building a key object per call.
        nacl.bindings.crypto_sign_open(signature + message, public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        raise SignatureError("signature does not verify") from None


# --- who may sign -------------------------------------------------------------


class SigningKeyLookup(Protocol):
    """Resolves the Ed25519 key a sender signed with, or raises a typed error.

    ``now_ms`` is the reference time of the decision the key is for (the
    envelope's verification): a key is valid or not at that time. Hubs and
    agencies answer from their verified directories
    (:class:`protocols.trusted.TrustedDirectories`); tests and the in-process
    demo use :class:`KeyRing`.
    """

    def signing_key(self, sender: Principal, kid: bytes, now_ms: int) -> bytes: ...


class KeyRing:
    """An in-memory map of principals to public identities, with revocation."""

    def __init__(self, identities: Mapping[Principal, PublicIdentity] | None = None) -> None:
        self._ids: dict[Principal, PublicIdentity] = dict(identities or {})
        self._revoked: set[Principal] = set()

    def add(self, identity: PublicIdentity) -> None:
        self._ids[identity.principal] = identity

    def revoke(self, principal: Principal) -> None:
        self._revoked.add(principal)

    def get(self, principal: Principal) -> PublicIdentity:
        try:
            return self._ids[principal]
        except KeyError:
            raise UnknownSenderError(f"{principal} is not in the directory") from None

    def signing_key(self, sender: Principal, kid: bytes, now_ms: int) -> bytes:
        """The sender's one key (a key ring's keys and revocations do not depend on time)."""
        identity = self.get(sender)
        if sender in self._revoked:
            raise RevokedError(f"{sender} is revoked")
        if not hmac.compare_digest(identity.signing_key_id, kid):
            raise UnknownSenderError(f"{sender} has no signing key with that key id")
        return identity.signing


# --- key file -----------------------------------------------------------------


class KdfProfile(enum.StrEnum):
    """libsodium's named Argon2id cost levels."""

    INTERACTIVE = "interactive"
    MODERATE = "moderate"
    SENSITIVE = "sensitive"

    @property
    def params(self) -> tuple[int, int]:
        return {
            KdfProfile.INTERACTIVE: (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
            KdfProfile.MODERATE: (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
            KdfProfile.SENSITIVE: (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
        }[self]


_B64 = Annotated[str, msgspec.Meta(max_length=4096)]


class _Kdf(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    alg: Literal["argon2id13"]
    opslimit: int
    memlimit: int
    salt: _B64


class _Box(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    alg: Literal["xsalsa20poly1305"]
    nonce: _B64
    ct: _B64


class _PublicPart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """``encryption`` is absent for a hub (SPEC §3.1); ``null``, as older files wrote it,
    still reads as absent."""

    signing: _B64
    encryption: _B64 | None = None
    nats: dict[str, str] | None = None
    """Public NATS user nkeys (``U…``) by label, when the file seals their seeds."""


class _KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: Literal["ixb-keyfile-v1"]
    principal: str
    public: _PublicPart
    kdf: _Kdf
    box: _Box


class _Secrets(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True, omit_defaults=True
):
    """``encryption_since``, ``retired`` and ``nats`` (SPEC §3.1) are omitted while unused
    (trailing defaults only), so a file without them has the three-element array it
    always had."""

    principal: str
    signing_seed: bytes
    encryption_secret: bytes | None
    encryption_since: int | None = None
    retired: tuple[tuple[bytes, int], ...] = ()
    nats: dict[str, str] | None = None
    """Seeds of the NATS user nkeys by label; absent in files written before nkeys."""


MAX_RETIRED_KEYS: Final = 8
"""Retired encryption keys a key file keeps at most: the oldest is destroyed first."""


@dataclass(frozen=True, slots=True)
class RetiredKey:
    """An encryption key replaced by a newer one, kept to open what was sealed to it."""

    key: EncryptionKeyPair
    retired_at: int


@dataclass(frozen=True, slots=True)
class KeyHistory:
    """What a key file keeps beside the current keys: since when the encryption key is
    current (None: not recorded, as in files written before), and the retired ones."""

    encryption_since: int | None = None
    retired: tuple[RetiredKey, ...] = ()

    def __post_init__(self) -> None:
        if len(self.retired) > MAX_RETIRED_KEYS:
            raise KeyFileError(f"a key file keeps at most {MAX_RETIRED_KEYS} retired keys")


def _b64d(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise KeyFileError(f"key file: {what} is not base64") from None


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        passphrase.encode("utf-8"),
        salt,
        opslimit=opslimit,
        memlimit=memlimit,
    )


def seal_keyfile(
    identity: Identity,
    passphrase: str,
    profile: KdfProfile = KdfProfile.MODERATE,
    history: KeyHistory | None = None,
) -> bytes:
    """Encrypt an identity under a passphrase; returns the key file's bytes (JSON)."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise PassphraseError(f"passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")
    opslimit, memlimit = profile.params
    salt = nacl.utils.random(argon2id.SALTBYTES)
    sealer = KeyFileSealer(_derive(passphrase, salt, opslimit, memlimit), salt, opslimit, memlimit)
    return sealer.seal(identity, history or KeyHistory())


class KeyFileSealer:
    """Re-seals a key file under the passphrase it was opened with, without keeping the
    passphrase nor deriving again: the derived box key, the salt and the KDF cost stay,
    every seal takes a fresh random nonce. No repr of the key."""

    __slots__ = ("_key", "_memlimit", "_opslimit", "_salt")

    def __init__(self, key: bytes, salt: bytes, opslimit: int, memlimit: int) -> None:
        self._key, self._salt, self._opslimit, self._memlimit = key, salt, opslimit, memlimit

    def __repr__(self) -> str:
        return "KeyFileSealer()"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a sealer holds a key; it is not picklable")

    def seal(self, identity: Identity, history: KeyHistory) -> bytes:
        """The key file's bytes (JSON) for ``identity`` and ``history``."""
        return _seal_with(identity, history, self._key, self._salt, self._opslimit, self._memlimit)

    def open(self, data: bytes) -> tuple[Identity, KeyHistory]:
        """Read the key file again (another process may have rotated it), with the key held.

        A file sealed since under another salt or passphrase is :class:`KeyFileError`.
        """
        doc = _parse_keyfile(data)
        same = hmac.compare_digest(_b64d(doc.kdf.salt, "salt"), self._salt) and (
            doc.kdf.opslimit,
            doc.kdf.memlimit,
        ) == (self._opslimit, self._memlimit)
        if not same:
            raise KeyFileError("key file was sealed again under another passphrase; reopen it")
        identity, history, _ = _unseal(data, doc, self._key)
        return identity, history


def _seal_with(  # noqa: PLR0917
    identity: Identity,
    history: KeyHistory,
    key: bytes,
    salt: bytes,
    opslimit: int,
    memlimit: int,
) -> bytes:
    box = nacl.secret.SecretBox(key)
    secrets = msgspec.msgpack.encode(
        _Secrets(
            principal=str(identity.principal),
            signing_seed=identity.signing._seed(),
            encryption_secret=None
            if identity.encryption is None
            else bytes(identity.encryption.private_key),
            encryption_since=history.encryption_since,
            retired=tuple((bytes(r.key.private_key), r.retired_at) for r in history.retired),
            nats={label: seed.seed_str() for label, seed in identity.nats} or None,
        )
    )
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = box.encrypt(secrets, nonce).ciphertext
    pub = identity.public()
    doc = _KeyFile(
        format=KEYFILE_FORMAT,
        principal=str(identity.principal),
        public=_PublicPart(
            signing=_b64e(pub.signing),
            encryption=None if pub.encryption is None else _b64e(pub.encryption),
            nats={label: seed.public for label, seed in identity.nats} or None,
        ),
        kdf=_Kdf(alg="argon2id13", opslimit=opslimit, memlimit=memlimit, salt=_b64e(salt)),
        box=_Box(alg="xsalsa20poly1305", nonce=_b64e(nonce), ct=_b64e(sealed)),
    )
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def _parse_keyfile(data: bytes) -> _KeyFile:
    if len(data) > 16 * 1024:
        raise KeyFileError("key file is too large")
    try:
        return msgspec.json.decode(data, type=_KeyFile)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"not an ixb key file ({exc})") from None


def read_public(data: bytes) -> PublicIdentity:
    """The public part of a key file, without the passphrase."""
    doc = _parse_keyfile(data)
    try:
        principal = parse_principal(doc.principal)
    except IxbError as exc:
        raise KeyFileError(f"key file: {exc.detail}") from None
    enc = None if doc.public.encryption is None else _b64d(doc.public.encryption, "encryption")
    return PublicIdentity(principal, _b64d(doc.public.signing, "signing"), enc)


def read_nats_public(data: bytes) -> dict[str, str]:
    """The public NATS user nkeys a key file seals, by label (empty for older files)."""
    nats = _parse_keyfile(data).public.nats or {}
    for label, public in nats.items():
        if not is_nkey_user(public):
            raise KeyFileError(f"key file: public.nats.{label} is not a NATS user nkey")
    return dict(nats)


def open_keyfile(data: bytes, passphrase: str) -> Identity:
    """Decrypt a key file; checks that the secrets match the public part."""
    return open_keyfile_history(data, passphrase)[0]


def open_keyfile_history(
    data: bytes, passphrase: str
) -> tuple[Identity, KeyHistory, KeyFileSealer]:
    """Decrypt a key file: its identity, its retired encryption keys, and a sealer that
    writes it again under the same passphrase (key rotation, key destruction)."""
    doc = _parse_keyfile(data)
    min_ops, min_mem = KdfProfile.INTERACTIVE.params
    max_ops, max_mem = KdfProfile.SENSITIVE.params
    if not (min_ops <= doc.kdf.opslimit <= max_ops and min_mem <= doc.kdf.memlimit <= max_mem):
        raise KeyFileError("key file: KDF parameters outside the accepted range")
    salt = _b64d(doc.kdf.salt, "salt")
    nonce = _b64d(doc.box.nonce, "nonce")
    if len(salt) != argon2id.SALTBYTES or len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise KeyFileError("key file: salt or nonce has the wrong length")
    return _unseal(data, doc, _derive(passphrase, salt, doc.kdf.opslimit, doc.kdf.memlimit))


def _unseal(data: bytes, doc: _KeyFile, key: bytes) -> tuple[Identity, KeyHistory, KeyFileSealer]:
    public = read_public(data)
    salt = _b64d(doc.kdf.salt, "salt")
    nonce = _b64d(doc.box.nonce, "nonce")
    if len(salt) != argon2id.SALTBYTES or len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise KeyFileError("key file: salt or nonce has the wrong length")
    box = nacl.secret.SecretBox(key)
    try:
        plain = box.decrypt(_b64d(doc.box.ct, "ciphertext"), nonce)
    except nacl.exceptions.CryptoError:
        raise PassphraseError("wrong passphrase, or the key file was altered") from None
    try:
        secrets = msgspec.msgpack.decode(plain, type=_Secrets)
        signing = SigningKeyPair(secrets.signing_seed)
        enc = (
            None
            if secrets.encryption_secret is None
            else EncryptionKeyPair(secrets.encryption_secret)
        )
        retired = tuple(RetiredKey(EncryptionKeyPair(k), at) for k, at in secrets.retired)
        history = KeyHistory(secrets.encryption_since, retired)
        nats = tuple(sorted((k, NkeySeed(v)) for k, v in (secrets.nats or {}).items()))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        raise KeyFileError("key file: sealed secrets are malformed") from None
    identity = Identity(public.principal, signing, enc, nats)
    if secrets.principal != str(public.principal) or identity.public() != public:
        raise KeyFileError("key file: public part does not match the sealed secrets")
    if {k: s.public for k, s in nats} != (doc.public.nats or {}):
        raise KeyFileError("key file: public NATS nkeys do not match the sealed secrets")
    return identity, history, KeyFileSealer(key, salt, doc.kdf.opslimit, doc.kdf.memlimit)
