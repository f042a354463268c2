"""Keys: secrets never shown, key files encrypted at rest and bounded when read."""

from __future__ import annotations

import json
import pickle

import nkeys  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import IxbError, KeyFileError, PassphraseError, SignatureError
from protocols.identifiers import hub_of, parse_agency
from protocols.keys import (
    NATS_AGENCY,
    NATS_HUB,
    EncryptionKeyPair,
    Identity,
    KdfProfile,
    KeyAlg,
    KeyHistory,
    NkeySeed,
    RetiredKey,
    fingerprint,
    is_nkey_user,
    nats_link_label,
    open_keyfile,
    open_keyfile_history,
    read_nats_public,
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


# --- NATS nkeys sealed in the key file ----------------------------------------------


def test_an_agency_key_file_seals_its_nats_nkey(identity: Identity, keyfile: bytes) -> None:
    seed = identity.nats_seed(NATS_AGENCY)
    assert seed is not None and is_nkey_user(seed.public)
    assert seed.seed_str() not in keyfile.decode() + repr(identity) + str(seed)
    assert read_nats_public(keyfile) == {NATS_AGENCY: seed.public}
    back = open_keyfile(keyfile, PASS).nats_seed(NATS_AGENCY)
    assert back is not None and back == seed and back.seed_str() == seed.seed_str()
    with pytest.raises(TypeError):
        pickle.dumps(seed)


def test_a_hub_key_file_seals_its_link_nkeys() -> None:
    hub = Identity.generate(hub_of("THA"))
    assert hub.nats == ()  # a hub's come with the federation plan
    seeds = {NATS_HUB: NkeySeed.generate(), nats_link_label("MYS"): NkeySeed.generate()}
    sealed = seal_keyfile(hub.with_nats(seeds), PASS, FAST)
    back = open_keyfile(sealed, PASS)
    assert {label: back.nats_seed(label) for label in seeds} == seeds
    assert read_nats_public(sealed) == {k: v.public for k, v in seeds.items()}


def test_a_key_file_without_nkeys_still_loads(identity: Identity) -> None:
    """Files written before nkeys: no ``public.nats``, three sealed elements."""
    old = Identity(identity.principal, identity.signing, identity.encryption)
    sealed = seal_keyfile(old, PASS, FAST)
    assert "nats" not in json.loads(sealed)["public"]
    assert open_keyfile(sealed, PASS).nats == () and read_nats_public(sealed) == {}


def test_a_swapped_public_nkey_is_detected(keyfile: bytes) -> None:
    doc = json.loads(keyfile)
    doc["public"]["nats"][NATS_AGENCY] = NkeySeed.generate().public
    with pytest.raises(KeyFileError, match="public NATS nkeys"):
        open_keyfile(json.dumps(doc).encode(), PASS)
    doc["public"]["nats"][NATS_AGENCY] = "U" + "A" * 55  # checksum wrong
    with pytest.raises(KeyFileError):
        read_nats_public(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_only_user_nkey_seeds_are_accepted(text: str) -> None:
    try:
        seed = NkeySeed(text)
    except KeyFileError:
        return
    assert text.startswith("SU") and seed.public.startswith("U") and is_nkey_user(seed.public)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_nkey_seed_round_trip(raw: bytes) -> None:
    encoded = nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER).decode()
    seed = NkeySeed(encoded)
    assert NkeySeed(seed.seed_str()).public == seed.public and is_nkey_user(seed.public)
    assert not is_nkey_user(seed.public[:-1] + ("A" if seed.public[-1] != "A" else "B"))
    account = nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_ACCOUNT).decode()
    with pytest.raises(KeyFileError):
        NkeySeed(account)  # an account seed (SA…) is not a user's


@pytest.mark.parametrize(
    "history",
    [
        KeyHistory(),
        KeyHistory(1_796_000_000_000),
        KeyHistory(None, (RetiredKey(EncryptionKeyPair.generate(), 5),)),
        KeyHistory(7, (RetiredKey(EncryptionKeyPair.generate(), 6),)),
    ],
)
def test_nats_seeds_and_key_history_live_side_by_side(history: KeyHistory) -> None:
    """The sealed array's optional elements (SPEC §3.1): nkeys after a history that may be
    absent, written as nil / empty then, so neither is read as the other."""
    ident = Identity.generate(parse_agency("THA/X")).with_nats({NATS_AGENCY: NkeySeed.generate()})
    data = seal_keyfile(ident, "a long passphrase", KdfProfile.INTERACTIVE, history)
    opened, got, _ = open_keyfile_history(data, "a long passphrase")
    assert [(k, s.seed_str()) for k, s in opened.nats] == [(k, s.seed_str()) for k, s in ident.nats]
    assert got.encryption_since == history.encryption_since
    assert [(bytes(r.key.private_key), r.retired_at) for r in got.retired] == [
        (bytes(r.key.private_key), r.retired_at) for r in history.retired
    ]
