"""Self-service encryption-key updates (SPEC §12.1) and the key file's retired keys (§3.1).

Regenerate protocols/vectors/enckey.json (only when the format changes on
purpose) with ``python -m tests.test_enckey``; the tests check the stored file
in both directions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agency_client.enckeys import KeyFile, KeySchedule
from agency_client.keystore import save_identity
from broker.keyupdates import claimed_agency, decide_key_update
from broker.registry import AgencyRecord
from protocols import wire
from protocols.enckey import (
    DS_ENCKEY,
    MAX_SKEW_MS,
    MIN_INTERVAL_MS,
    KeyUpdate,
    KeyUpdateAnswer,
    LastUpdate,
    SignedKeyUpdate,
    decode_answer,
    encode_answer,
    parse_update,
    sign_update,
    verify_update,
)
from protocols.errors import IxbError
from protocols.identifiers import parse_agency
from protocols.keys import (
    MAX_RETIRED_KEYS,
    NATS_AGENCY,
    EncryptionKeyPair,
    Identity,
    KdfProfile,
    KeyHistory,
    NkeySeed,
    RetiredKey,
    SigningKeyPair,
    open_keyfile,
    open_keyfile_history,
    seal_keyfile,
)
from protocols.roles import Role
from tests.gen_vectors import derive

VECTOR_FILE = Path(__file__).resolve().parent.parent / "protocols" / "vectors" / "enckey.json"
AGENCY = parse_agency("THA/DSI-ATHD")
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PASS = "correct horse battery"


def _identity() -> Identity:
    return Identity(
        AGENCY,
        SigningKeyPair(derive("enckey signing seed")),
        EncryptionKeyPair(derive("enckey encryption secret")),
    )


def _update(key: bytes, created: int = NOW) -> KeyUpdate:
    return KeyUpdate(v=1, agency=str(AGENCY), encryption_key=key, created=created)


NEW_KEY = EncryptionKeyPair(derive("enckey new encryption secret")).public


# --- the vector, both ways --------------------------------------------------------------


def build_vector() -> dict[str, Any]:
    me = _identity()
    update = _update(NEW_KEY)
    return {
        "what": "SPEC §12.1 self-service encryption-key update, signed by the listed key",
        "signing_seed": derive("enckey signing seed").hex(),
        "signing_public": me.signing.public.hex(),
        "current_encryption_public": (me.encryption.public if me.encryption else b"").hex(),
        "update": {
            "v": 1,
            "agency": update.agency,
            "encryption_key": NEW_KEY.hex(),
            "created": NOW,
        },
        "now_ms": NOW + 1000,
        "signed": sign_update(update, me).hex(),
    }


VECTORS: dict[str, Any] = (
    json.loads(VECTOR_FILE.read_text()) if VECTOR_FILE.exists() else build_vector()
)


def test_vector_build_gives_the_stored_bytes() -> None:
    me = Identity(
        AGENCY,
        SigningKeyPair(bytes.fromhex(VECTORS["signing_seed"])),
        EncryptionKeyPair(derive("any")),  # not part of what is signed
    )
    u = VECTORS["update"]
    update = KeyUpdate(
        v=u["v"],
        agency=u["agency"],
        encryption_key=bytes.fromhex(u["encryption_key"]),
        created=u["created"],
    )
    assert me.signing.public.hex() == VECTORS["signing_public"]
    assert sign_update(update, me).hex() == VECTORS["signed"]


def test_vector_bytes_verify() -> None:
    got = verify_update(
        bytes.fromhex(VECTORS["signed"]),
        bytes.fromhex(VECTORS["signing_public"]),
        bytes.fromhex(VECTORS["current_encryption_public"]),
        None,
        VECTORS["now_ms"],
    )
    assert got.encryption_key.hex() == VECTORS["update"]["encryption_key"]
    assert got.created == VECTORS["update"]["created"]
    outer = wire.decode(bytes.fromhex(VECTORS["signed"]), SignedKeyUpdate, "signed")
    assert outer.sig == _identity().signing.sign(DS_ENCKEY + outer.body)


def test_stored_vector_is_what_the_code_builds() -> None:
    assert build_vector() == VECTORS


# --- refusals, by code ------------------------------------------------------------------


def _signed(created: int = NOW, key: bytes = NEW_KEY, signer: Identity | None = None) -> bytes:
    return sign_update(_update(key, created), signer or _identity())


def _refused(data: bytes, last: LastUpdate | None = None, now: int = NOW) -> str:
    me = _identity().public()
    with pytest.raises(IxbError) as err:
        verify_update(data, me.signing, me.encryption or b"", last, now)
    return err.value.code


def test_refusals_each_with_its_code() -> None:
    other = Identity.generate(AGENCY)
    assert _refused(_signed(signer=other)) == "ixb.E_SIGNATURE"
    assert _refused(_signed(), LastUpdate(NOW, NOW - 1)) == "ixb.E_REPLAY"
    assert _refused(_signed(created=NOW - MAX_SKEW_MS - 1)) == "ixb.E_CLOCK_SKEW"
    assert _refused(_signed(created=NOW + MAX_SKEW_MS + 1)) == "ixb.E_CLOCK_SKEW"
    current = _identity().encryption
    assert current is not None
    assert _refused(_signed(key=current.public)) == "ixb.E_REPLAY"
    last = LastUpdate(NOW - 1, NOW - MIN_INTERVAL_MS + 1)
    assert _refused(_signed(), last) == "ixb.E_RATE_LIMITED"
    assert _refused(b"\x81\xa1x\x01") == "ixb.E_SCHEMA"
    assert _refused(b"\xc1") == "ixb.E_MALFORMED"
    ok = LastUpdate(NOW - 1, NOW - MIN_INTERVAL_MS)
    me = _identity().public()
    assert verify_update(_signed(), me.signing, me.encryption or b"", ok, NOW).created == NOW


def test_hub_decision_unknown_revoked_and_wrong_subject() -> None:
    me = _identity()
    record = AgencyRecord(public=me.public(), roles=(Role.INVESTIGATOR,))
    data = _signed()
    assert claimed_agency("THA", "DSI-ATHD", data) == AGENCY
    with pytest.raises(IxbError) as err:
        claimed_agency("THA", "OTHER", data)
    assert err.value.code == "ixb.E_UNAUTHORISED"
    with pytest.raises(IxbError) as err:
        decide_key_update(AGENCY, data, {}, None, NOW)
    assert err.value.code == "ixb.E_UNKNOWN_SENDER"
    revoked = AgencyRecord(public=me.public(), roles=(Role.INVESTIGATOR,), config_revoked="gone")
    with pytest.raises(IxbError) as err:
        decide_key_update(AGENCY, data, {AGENCY: revoked}, None, NOW)
    assert err.value.code == "ixb.E_REVOKED"
    update, rec = decide_key_update(AGENCY, data, {AGENCY: record}, None, NOW)
    assert rec.public.encryption == NEW_KEY == update.encryption_key
    assert rec.public.signing == me.signing.public
    assert rec.previous_encryption[0][0] == (me.encryption.public if me.encryption else b"")


# --- round trips ------------------------------------------------------------------------

keys32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=50, deadline=None)
@given(key=keys32, created=st.integers(min_value=0, max_value=2**40))
def test_update_round_trip(key: bytes, created: int) -> None:
    data = _signed(created=created, key=key)
    update, outer = parse_update(data)
    assert update == _update(key, created)
    assert wire.encode(outer) == data
    me = _identity().public()
    listed = b"\x00" * 32 if key != b"\x00" * 32 else b"\x01" * 32
    assert verify_update(data, me.signing, listed, None, created).encryption_key == key


@settings(max_examples=50, deadline=None)
@given(
    code=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    detail=st.text(max_size=100),
    version=st.one_of(st.none(), st.integers(min_value=0, max_value=2**53)),
)
def test_answer_round_trip(code: str | None, detail: str, version: int | None) -> None:
    answer = KeyUpdateAnswer(code=code, detail=detail, version=version)
    assert decode_answer(encode_answer(answer)) == answer


@settings(max_examples=10, deadline=None)
@given(
    since=st.one_of(st.none(), st.integers(min_value=0, max_value=2**45)),
    retired_at=st.lists(st.integers(min_value=0, max_value=2**45), max_size=MAX_RETIRED_KEYS),
)
def test_key_file_history_round_trip(since: int | None, retired_at: list[int]) -> None:
    me = _identity()
    retired = tuple(RetiredKey(EncryptionKeyPair.generate(), at) for at in retired_at)
    data = seal_keyfile(me, PASS, KdfProfile.INTERACTIVE, KeyHistory(since, retired))
    identity, history, sealer = open_keyfile_history(data, PASS)
    assert identity.public() == me.public()
    assert history.encryption_since == since
    assert [(r.key.public, r.retired_at) for r in history.retired] == [
        (r.key.public, r.retired_at) for r in retired
    ]
    again, history2 = sealer.open(sealer.seal(identity, history))
    assert again.public() == me.public() and len(history2.retired) == len(retired)


def test_key_file_without_history_keeps_its_three_element_secrets() -> None:
    """Files written before (and without history) still read; no history: no new fields."""
    data = seal_keyfile(_identity(), PASS, KdfProfile.INTERACTIVE)
    assert open_keyfile(data, PASS).public() == _identity().public()
    assert open_keyfile_history(data, PASS)[1] == KeyHistory()


def test_key_file_rotate_and_destroy(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    nkey = NkeySeed.generate()
    save_identity(path, _identity().with_nats({NATS_AGENCY: nkey}), PASS, KdfProfile.INTERACTIVE)
    kf = KeyFile.open(path, PASS, NOW)
    assert kf.state.history.encryption_since == NOW  # stamped on first open
    old = kf.state.encryption.public
    schedule = KeySchedule(rotation_ms=1000, grace_ms=500)
    assert not kf.state.due(schedule, NOW + 999) and kf.state.due(schedule, NOW + 1000)
    state = kf.rotate(NOW + 1000)
    assert state.encryption.public != old
    assert [r.key.public for r in state.history.retired] == [old]
    assert not state.destroyable(schedule, listed=old, now=NOW + 10_000)  # still listed
    assert not state.destroyable(schedule, listed=state.encryption.public, now=NOW + 1499)
    doomed = state.destroyable(schedule, listed=state.encryption.public, now=NOW + 1500)
    assert [r.key.public for r in doomed] == [old]
    kf.destroy({old}, NOW + 1500)
    on_disk, history, _ = open_keyfile_history(path.read_bytes(), PASS)
    assert history.retired == ()
    assert on_disk.encryption is not None and on_disk.encryption.public == state.encryption.public
    assert [(k, v.seed_str()) for k, v in on_disk.nats] == [(NATS_AGENCY, nkey.seed_str())]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_key_file_keeps_at_most_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    save_identity(path, _identity(), PASS, KdfProfile.INTERACTIVE)
    kf = KeyFile.open(path, PASS, NOW)
    first = kf.state.encryption.public
    for i in range(MAX_RETIRED_KEYS + 2):
        kf.rotate(NOW + i)
    _, history, _ = open_keyfile_history(path.read_bytes(), PASS)
    assert len(history.retired) == MAX_RETIRED_KEYS
    assert first not in {r.key.public for r in history.retired}


def test_a_second_process_rotation_is_not_undone(tmp_path: Path) -> None:
    """Two openers of one file (a daemon and a command line): each rewrite reads it first."""
    path = tmp_path / "a.key"
    save_identity(path, _identity(), PASS, KdfProfile.INTERACTIVE)
    a = KeyFile.open(path, PASS, NOW)
    b = KeyFile.open(path, PASS, NOW)
    rotated = a.rotate(NOW + 1).encryption.public
    b.destroy({b"\x00" * 32}, NOW + 2)  # b's view was stale; it must not lose a's new key
    identity, _, _ = open_keyfile_history(path.read_bytes(), PASS)
    assert identity.encryption is not None and identity.encryption.public == rotated


def test_nothing_secret_in_reprs(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    save_identity(path, _identity(), PASS, KdfProfile.INTERACTIVE)
    kf = KeyFile.open(path, PASS, NOW)
    secret = derive("enckey encryption secret")
    for text in (repr(kf), repr(kf._sealer), repr(kf.state), str(kf.state.history)):
        assert secret.hex() not in text and PASS not in text
    with pytest.raises(TypeError):
        msgspec.msgpack.encode(kf._sealer)


def main() -> None:
    VECTOR_FILE.write_text(json.dumps(build_vector(), indent=2) + "\n")


if __name__ == "__main__":
    main()
