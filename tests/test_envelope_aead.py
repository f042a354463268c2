"""The envelope's XChaCha20-Poly1305 helpers give exactly what nacl.bindings gives.

protocols.envelope wraps ``nacl.bindings``' AEAD with its own argument checks
and a None for "does not authenticate"; these properties pin it to the bare
binding (same ciphertext, same plaintext, the same inputs refused), and check
that unpadding still refuses what it refused.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.envelope import PAD_BLOCK, _aead_decrypt, _aead_encrypt, _unpad
from protocols.errors import DecryptError

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=24, max_size=24)
ads = st.binary(max_size=64)


@settings(max_examples=200, deadline=None)
@given(plain=st.binary(max_size=2000), ad=ads, nonce=nonces, key=keys)
def test_aead_matches_nacl_bindings(plain: bytes, ad: bytes, nonce: bytes, key: bytes) -> None:
    sealed = _aead_encrypt(plain, ad, nonce, key)
    assert sealed == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
    assert _aead_decrypt(sealed, ad, nonce, key) == plain


@settings(max_examples=200, deadline=None)
@given(
    plain=st.binary(max_size=300),
    ad=ads,
    nonce=nonces,
    key=keys,
    flip=st.integers(min_value=0),
    part=st.sampled_from(["sealed", "ad", "nonce", "key"]),
)
def test_any_flipped_bit_fails_like_nacl_bindings(
    *, plain: bytes, ad: bytes, nonce: bytes, key: bytes, flip: int, part: str
) -> None:
    args = {"sealed": _aead_encrypt(plain, ad, nonce, key), "ad": ad, "nonce": nonce, "key": key}
    if not args[part]:
        return
    changed = bytearray(args[part])
    bit = flip % (len(changed) * 8)
    changed[bit // 8] ^= 1 << (bit % 8)
    args[part] = bytes(changed)
    assert _aead_decrypt(args["sealed"], args["ad"], args["nonce"], args["key"]) is None
    with pytest.raises(nacl.exceptions.CryptoError):
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            args["sealed"], args["ad"], args["nonce"], args["key"]
        )


@pytest.mark.parametrize("sealed", [b"", b"\x00" * 15])
def test_shorter_than_a_tag_does_not_authenticate(sealed: bytes) -> None:
    assert _aead_decrypt(sealed, b"", b"\x00" * 24, b"\x00" * 32) is None


@pytest.mark.parametrize(
    ("nonce", "key", "data"),
    [
        (b"\x00" * 23, b"\x00" * 32, b""),
        (b"\x00" * 25, b"\x00" * 32, b""),
        (b"\x00" * 24, b"\x00" * 31, b""),
        (b"\x00" * 24, b"\x00" * 33, b""),
        (b"\x00" * 24, b"\x00" * 32, "text"),
        (bytearray(24), b"\x00" * 32, b""),
    ],
)
def test_wrong_lengths_and_types_are_refused_before_libsodium(
    nonce: bytes, key: bytes, data: bytes
) -> None:
    with pytest.raises(TypeError):
        _aead_encrypt(data, b"", nonce, key)
    with pytest.raises(TypeError):
        _aead_decrypt(data, b"", nonce, key)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=600), junk=st.binary(min_size=1, max_size=8))
def test_unpad_refuses_any_nonzero_padding(body: bytes, junk: bytes) -> None:
    framed = len(body).to_bytes(4, "big") + body
    padded = framed + bytes(-len(framed) % PAD_BLOCK)
    assert _unpad(padded) == body
    room = len(padded) - len(framed)
    if room and any(junk):
        tail = (junk * room)[:room]
        if any(tail):
            with pytest.raises(DecryptError):
                _unpad(framed + tail)
