"""The direct libsodium calls in protocols.keys give exactly what PyNaCl's own wrappers give.

keys.py calls ``nacl.bindings`` (public functions only) to skip PyNaCl's
object and encoder layers; these properties pin the results to the high-level
PyNaCl API the code used before, so a change of PyNaCl cannot silently alter
a digest, a key id, a signature or what verifies.
"""

from __future__ import annotations

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey, PublicKey, SealedBox

from protocols.errors import SignatureError
from protocols.keys import (
    EncryptionKeyPair,
    KeyAlg,
    SigningKeyPair,
    blake2b_256,
    key_id,
    verify_signature,
)

seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=300)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), key=st.binary(max_size=64))
def test_blake2b_256_is_pynacls_blake2b(data: bytes, key: bytes) -> None:
    expected = nacl.hash.blake2b(data, digest_size=32, key=key, encoder=nacl.encoding.RawEncoder)
    assert blake2b_256(data, key=key) == expected
    if not key:
        assert blake2b_256(data) == expected


@pytest.mark.parametrize(
    ("data", "key"),
    [("text", b""), (bytearray(b"x"), b""), (b"x", "key"), (b"x", b"k" * 65)],
)
def test_blake2b_256_refuses_what_pynacl_refuses(data: object, key: object) -> None:
    with pytest.raises(TypeError):
        blake2b_256(data, key=key)  # type: ignore[arg-type]


def _reference_key_id(alg: KeyAlg, public: bytes) -> bytes:
    data = b"ixb-key-v1\x00" + alg.value.encode("ascii") + b"\x00" + public
    return nacl.hash.blake2b(data, digest_size=32, encoder=nacl.encoding.RawEncoder)[:8]


@settings(max_examples=100, deadline=None)
@given(alg=st.sampled_from(KeyAlg), public=st.binary(min_size=32, max_size=32))
def test_key_id_is_unchanged(alg: KeyAlg, public: bytes) -> None:
    assert key_id(alg, public) == _reference_key_id(alg, public)


@settings(max_examples=50, deadline=None)
@given(publics=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40))
def test_cached_key_ids_always_name_their_own_key(publics: list[bytes]) -> None:
    """The key id cache never answers for another key or algorithm, before or after eviction."""
    for _ in range(2):
        for public in publics:
            for alg in KeyAlg:
                assert key_id(alg, public) == _reference_key_id(alg, public)
        key_id.cache_clear()
    ids = {key_id(alg, p): (alg, p) for p in set(publics) for alg in KeyAlg}
    assert len(ids) == 2 * len(set(publics))


@settings(max_examples=100, deadline=None)
@given(seed=seeds, message=messages)
def test_signing_key_pair_matches_pynacl(seed: bytes, message: bytes) -> None:
    pair = SigningKeyPair(seed)
    reference = nacl.signing.SigningKey(seed)
    assert pair.public == bytes(reference.verify_key)
    assert pair.sign(message) == reference.sign(message).signature
    assert pair._seed() == seed


@settings(max_examples=100, deadline=None)
@given(
    seed=seeds,
    other=seeds,
    message=messages,
    flip=st.integers(min_value=0, max_value=(64 + 300) * 8 - 1),
)
def test_a_signature_verifies_only_for_its_key_and_message(
    seed: bytes, other: bytes, message: bytes, flip: int
) -> None:
    signer, stranger = SigningKeyPair(seed), SigningKeyPair(other)
    sig = signer.sign(message)
    verify_signature(signer.public, message, sig)
    if stranger.public != signer.public:
        with pytest.raises(SignatureError):
            verify_signature(stranger.public, message, sig)
    # One flipped bit in the signature or the message, wherever it falls.
    signed = bytearray(sig + message)
    bit = flip % (len(signed) * 8)
    signed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SignatureError):
        verify_signature(signer.public, bytes(signed[64:]), bytes(signed[:64]))


@settings(max_examples=50, deadline=None)
@given(secret=seeds, other=seeds, message=st.binary(max_size=80))
def test_unseal_matches_pynacls_sealed_box(secret: bytes, other: bytes, message: bytes) -> None:
    pair = EncryptionKeyPair(secret)
    assert pair.public == bytes(PrivateKey(secret).public_key)
    assert bytes(pair.private_key) == secret
    sealed = SealedBox(PublicKey(pair.public)).encrypt(message)
    assert pair.unseal(sealed) == message
    assert SealedBox(pair.private_key).decrypt(sealed) == message
    stranger = EncryptionKeyPair(other)
    if stranger.public != pair.public:
        with pytest.raises(nacl.exceptions.CryptoError):
            stranger.unseal(sealed)


def test_key_pairs_hold_no_secret_in_repr() -> None:
    signing, encryption = SigningKeyPair(b"\x01" * 32), EncryptionKeyPair(b"\x02" * 32)
    shown = repr(signing) + str(signing) + repr(encryption) + str(encryption)
    for secret in (b"\x01" * 32, b"\x02" * 32, signing._sk):
        assert secret.hex() not in shown
        assert repr(secret)[2:-1] not in shown
