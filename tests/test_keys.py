"""Keys: secrets never shown, key files encrypted at rest and bounded when read."""

from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import IxbError, KeyFileError, PassphraseError, SignatureError
from protocols.identifiers import hub_of, parse_agency
from protocols.keys import (
    Identity,
    KdfProfile,
    KeyAlg,
    fingerprint,
    open_keyfile,
    read_public,
    seal_keyfile,
    verify_signature,
)

AGENCY = parse_agency("THA/DSI-ATHD")
PASS = "correct horse battery staple"
FAST = KdfProfile.INTERACTIVE


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate(AGENCY)


@pytest.fixture(scope="module")
def keyfile(identity: Identity) -> bytes:
    return seal_keyfile(identity, PASS, FAST)


def _secret_bytes(identity: Identity) -> list[bytes]:
    assert identity.encryption is not None
    return [identity.signing._seed(), bytes(identity.encryption.private_key)]


def test_repr_and_str_never_show_secrets(identity: Identity) -> None:
    shown = repr(identity) + str(identity) + repr(identity.signing) + str(identity.encryption)
    for secret in _secret_bytes(identity):
        assert secret.hex() not in shown
        assert secret.hex().upper() not in shown
        assert repr(secret)[2:-1] not in shown
    assert identity.signing.fingerprint in shown


def test_key_pairs_refuse_pickling(identity: Identity) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(identity.signing)


def test_keyfile_round_trip_and_no_secret_in_clear(identity: Identity, keyfile: bytes) -> None:
    doc = json.loads(keyfile)
    assert doc["kdf"]["alg"] == "argon2id13"
    assert (doc["kdf"]["opslimit"], doc["kdf"]["memlimit"]) == FAST.params
    for secret in _secret_bytes(identity):
        assert secret.hex().encode() not in keyfile
        assert secret not in keyfile
    back = open_keyfile(keyfile, PASS)
    assert back.public() == identity.public()
    assert back.signing.sign(b"x") == identity.signing.sign(b"x")  # Ed25519 is deterministic
    assert read_public(keyfile) == identity.public()


def test_wrong_passphrase(keyfile: bytes) -> None:
    with pytest.raises(PassphraseError):
        open_keyfile(keyfile, "wrong passphrase!")


def test_short_passphrase_refused(identity: Identity) -> None:
    with pytest.raises(PassphraseError):
        seal_keyfile(identity, "short", FAST)


def _edit(keyfile: bytes, path: list[str], value: object) -> bytes:
    doc = json.loads(keyfile)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (["kdf", "opslimit"], 1, KeyFileError),  # weaker than interactive
        (["kdf", "memlimit"], 1 << 40, KeyFileError),  # would exhaust memory
        (["kdf", "alg"], "scrypt", KeyFileError),
        (["kdf", "salt"], "AAAA", KeyFileError),
        (["box", "nonce"], "!!", KeyFileError),
        (["principal"], "THA/OTHER", KeyFileError),  # public part swapped
        (["public", "signing"], "A" * 43 + "=", KeyFileError),
        (["format"], "ixb-keyfile-v9", KeyFileError),
    ],
)
def test_tampered_keyfile(
    keyfile: bytes, path: list[str], value: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        open_keyfile(_edit(keyfile, path, value), PASS)


def test_swapped_public_key_is_detected(keyfile: bytes) -> None:
    other = Identity.generate(AGENCY)
    other_doc = json.loads(seal_keyfile(other, PASS, FAST))
    mixed = _edit(keyfile, ["public"], other_doc["public"])
    with pytest.raises(KeyFileError):
        open_keyfile(mixed, PASS)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_keyfiles_raise_typed_errors(data: bytes) -> None:
    with pytest.raises(IxbError):
        open_keyfile(data, PASS)


def test_hub_identity_has_no_encryption_key() -> None:
    hub = Identity.generate(hub_of("THA"))
    assert hub.encryption is None
    assert open_keyfile(seal_keyfile(hub, PASS, FAST), PASS).public() == hub.public()


def test_signatures(identity: Identity) -> None:
    sig = identity.signing.sign(b"message")
    verify_signature(identity.signing.public, b"message", sig)
    with pytest.raises(SignatureError):
        verify_signature(identity.signing.public, b"messagf", sig)
    with pytest.raises(SignatureError):
        verify_signature(identity.signing.public, b"message", sig[:10])


def test_fingerprints_are_stable_and_distinct(identity: Identity) -> None:
    fpr = fingerprint(KeyAlg.ED25519, identity.signing.public)
    assert fpr == identity.signing.fingerprint
    assert fpr.startswith("ed25519:")
    assert fingerprint(KeyAlg.X25519, identity.signing.public) != fpr
    assert len(fpr.split(":")[1].replace("-", "")) == 32  # 20 bytes in base32


def test_hub_key_file_omits_encryption_and_older_null_still_reads() -> None:
    hub = Identity.generate(hub_of("THA"))
    data = seal_keyfile(hub, PASS, FAST)
    doc = json.loads(data)
    assert "encryption" not in doc["public"]  # SPEC §3.1: absent, never null
    assert open_keyfile(data, PASS).public() == hub.public()
    doc["public"]["encryption"] = None  # what files written before said
    older = json.dumps(doc).encode()
    assert read_public(older) == hub.public()
    assert open_keyfile(older, PASS).public() == hub.public()
