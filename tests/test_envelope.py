"""Envelope: round trips, and every kind of bad input refused with its own code."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import msgspec
import mypy.api
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import wire
from protocols.envelope import (
    CONTENT_KEY_BYTES,
    NONCE_BYTES,
    Envelope,
    Header,
    VerifiedEnvelope,
    add_hop,
    assemble,
    decode_envelope,
    encrypt_body,
    open_envelope,
    seal_content_key,
    seal_envelope,
    verify_envelope,
    verify_hops,
)
from protocols.errors import IxbError, ReplayError
from protocols.examples import example_bodies
from protocols.handling import HandlingCode, Priority
from protocols.keys import Identity, KeyRing
from protocols.limits import MS_PER_DAY, MS_PER_HOUR, Limits
from protocols.messages import Body
from protocols.replay import ReplayGuard
from protocols.victims import names_victim
from tests.conftest import NOW_MS, Parties, make_parties
from tests.strategies import bodies

PARTIES = make_parties()
SENDER = "THA/DSI-ATHD"
TO = ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"]
ALERT = example_bodies(NOW_MS)["alert"]

fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def seal(body: Body = ALERT, *, to: list[str] = TO, now: int = NOW_MS, **kw: object) -> bytes:
    kw.setdefault("ttl_ms", MS_PER_DAY)
    return seal_envelope(
        sender=PARTIES[SENDER],
        recipients=[PARTIES.pub(r) for r in to],
        body=body,
        now_ms=now,
        **kw,  # type: ignore[arg-type]
    )


def code_of(fn: object) -> str:
    assert callable(fn)
    with pytest.raises(IxbError) as info:
        fn()
    return info.value.code


def full_check(data: bytes, ring: KeyRing = PARTIES.ring, now: int = NOW_MS) -> list[Body]:
    env = verify_envelope(data, ring, now)
    verify_hops(env.envelope, ring, now)
    return [open_envelope(env, PARTIES[r]).body for r in env.header.recipients]


ALERT_BYTES = seal()


# --- round trips ------------------------------------------------------------------


@fast
@given(body=bodies())
def test_every_body_type_round_trips_for_every_recipient(body: Body) -> None:
    type_name = next(t for t, b in example_bodies(NOW_MS).items() if type(b) is type(body))
    kw: dict[str, object] = {}
    if type_name not in (
        "alert",
        "doc.verify.request",
        "person.query",
        "followup.request",
        "mla.request",
    ):
        kw["in_reply_to"] = b"\x01" * 16
    if names_victim(body):  # the only code such a body may travel under (SPEC §6)
        kw["handling"] = HandlingCode.H2
    data = seal(body, **kw)
    assert full_check(data) == [body, body]
    assert decode_envelope(data).header.type == type_name


def test_header_fields_survive(parties: Parties) -> None:
    data = seal(
        handling=HandlingCode.H3,
        restriction="not to be shared with immigration",
        priority=Priority.URGENT,
        case_ref="THA-DSI-2026-0412",
    )
    h = decode_envelope(data).header
    assert (h.handling, h.priority, h.case_ref) == (
        HandlingCode.H3,
        Priority.URGENT,
        "THA-DSI-2026-0412",
    )
    assert h.restriction == "not to be shared with immigration"
    assert h.sender == SENDER
    assert h.recipients == TO
    assert h.expires - h.created == MS_PER_DAY
    assert h.id[6] >> 4 == 7  # UUIDv7


def test_hubs_see_no_plaintext() -> None:
    data = seal()
    for needle in (ALERT.title, ALERT.text[:20]):
        assert needle.encode() not in data


# --- integrity: every bit, every truncation -----------------------------------------


@fast
@given(bit=st.integers(min_value=0, max_value=len(ALERT_BYTES) * 8 - 1))
def test_any_single_bit_flip_is_refused(bit: int) -> None:
    tampered = bytearray(ALERT_BYTES)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IxbError):
        full_check(bytes(tampered))


def test_every_bit_flip_in_small_envelope_is_refused() -> None:
    """Exhaustive over a small envelope: no bit of it is unprotected."""
    body = example_bodies(NOW_MS)["person.result"]
    data = seal(body, to=["MYS/IMMIGRATION"], in_reply_to=b"\x02" * 16)
    for bit in range(len(data) * 8):
        tampered = bytearray(data)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IxbError):
            full_check(bytes(tampered))


def test_every_truncation_is_refused() -> None:
    for n in range(len(ALERT_BYTES)):
        with pytest.raises(IxbError):
            full_check(ALERT_BYTES[:n])


def test_trailing_bytes_are_refused() -> None:
    assert code_of(lambda: decode_envelope(ALERT_BYTES + b"\x00")) == "ixb.E_MALFORMED"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_only_typed_errors(data: bytes) -> None:
    with pytest.raises(IxbError):
        full_check(data)


@settings(max_examples=200, deadline=None)
@given(
    obj=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.binary(max_size=40)
        | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=5)
            | st.dictionaries(
                st.sampled_from(["v", "hdr", "keys", "ct", "sig", "hops", "x"]), inner, max_size=6
            )
        ),
        max_leaves=20,
    )
)
def test_random_msgpack_structures_raise_only_typed_errors(obj: object) -> None:
    with pytest.raises(IxbError):
        full_check(msgspec.msgpack.encode(obj))


# --- each refusal has its own code --------------------------------------------------


def _resigned_header(data: bytes, signer: Identity, **changes: object) -> bytes:
    """Rebuild an envelope with a changed header, signed by ``signer`` (an attacker)."""
    env = decode_envelope(data)
    fields = {f: getattr(env.header, f) for f in env.header.__struct_fields__}
    fields.update(changes)
    header = Header(**fields)  # type: ignore[arg-type]
    sealed = list(env.sealed_keys)
    return assemble(header, sealed, env.ct, signer.signing)


def test_changed_recipient_list_breaks_the_signature() -> None:
    env = decode_envelope(ALERT_BYTES)
    hdr = msgspec.msgpack.decode(env.hdr)
    hdr["recipients"] = ["MYS/RMP-ATIPSOM"]
    forged = wire.encode(
        {"v": 1, "hdr": msgspec.msgpack.encode(hdr), "keys": env.keys, "ct": env.ct, "sig": env.sig}
    )
    # keys no longer match recipients → refused structurally before any crypto
    assert code_of(lambda: full_check(forged)) == "ixb.E_SCHEMA"
    env2 = decode_envelope(seal(to=["MYS/RMP-ATIPSOM"]))
    swapped = wire.encode(
        {"v": 1, "hdr": env2.hdr, "keys": env2.keys, "ct": env.ct, "sig": env.sig}
    )
    assert code_of(lambda: full_check(swapped)) == "ixb.E_SIGNATURE"


def test_non_recipient_cannot_open() -> None:
    env = verify_envelope(ALERT_BYTES, PARTIES.ring, NOW_MS)
    assert code_of(lambda: open_envelope(env, PARTIES["THA/IMMIGRATION"])) == "ixb.E_NOT_RECIPIENT"
    assert code_of(lambda: open_envelope(env, PARTIES["THA/HUB"])) == "ixb.E_NOT_RECIPIENT"


# --- only a verified envelope opens ----------------------------------------------------


def test_an_unverified_envelope_does_not_open() -> None:
    decoded = decode_envelope(ALERT_BYTES)
    with pytest.raises(TypeError, match="not Envelope"):
        open_envelope(decoded, PARTIES[TO[0]])  # type: ignore[arg-type]
    verified = verify_envelope(decoded, PARTIES.ring, NOW_MS)
    assert verified.envelope is decoded
    assert open_envelope(verified, PARTIES[TO[0]]).body == ALERT


def test_only_verify_envelope_makes_a_verified_envelope() -> None:
    decoded = decode_envelope(ALERT_BYTES)
    with pytest.raises(TypeError, match="only by verify_envelope"):
        VerifiedEnvelope(decoded, _token=object())
    with pytest.raises(TypeError):
        VerifiedEnvelope(decoded)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="cannot be subclassed"):
        type("Forged", (VerifiedEnvelope,), {})
    verified = verify_envelope(ALERT_BYTES, PARTIES.ring, NOW_MS)
    other = decode_envelope(seal(to=["MYS/RMP-ATIPSOM"]))
    with pytest.raises(AttributeError, match="immutable"):
        verified.envelope = other  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del verified.envelope  # type: ignore[misc]
    for clone in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="verify the bytes again"):
            clone(verified)
    assert verified.envelope == decoded
    assert verified.header == decoded.header
    assert verified.message_id == decoded.message_id
    assert decoded.message_id in repr(verified)


def test_the_type_checker_refuses_to_open_an_unverified_envelope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mypy --strict: a plain Envelope where open_envelope wants a VerifiedEnvelope."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from protocols.envelope import decode_envelope, open_envelope, verify_envelope\n"
        "from protocols.keys import Identity, KeyRing\n"
        "\n"
        "\n"
        "def opens(data: bytes, ring: KeyRing, me: Identity) -> None:\n"
        "    open_envelope(verify_envelope(data, ring, 0), me)\n"
        "    open_envelope(decode_envelope(data), me)\n"
    )
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    cache = str(tmp_path / "mypy-cache")
    out, err, status = mypy.api.run(["--strict", "--cache-dir", cache, str(snippet)])
    assert status == 1, (out, err)
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert errors == [
        f'{snippet}:7: error: Argument 1 to "open_envelope" has incompatible type '
        '"Envelope"; expected "VerifiedEnvelope"  [arg-type]'
    ], out


def test_reused_id_is_a_replay_until_it_expires() -> None:
    guard = ReplayGuard()
    verify_envelope(ALERT_BYTES, PARTIES.ring, NOW_MS, replay=guard)
    again = lambda: verify_envelope(ALERT_BYTES, PARTIES.ring, NOW_MS + 1000, replay=guard)  # noqa: E731
    assert code_of(again) == "ixb.E_REPLAY"
    # with hops added it is still the same message
    hopped = add_hop(decode_envelope(ALERT_BYTES), PARTIES["THA/HUB"], NOW_MS).to_bytes()
    assert code_of(lambda: verify_envelope(hopped, PARTIES.ring, NOW_MS, replay=guard)) == (
        "ixb.E_REPLAY"
    )
    late = NOW_MS + MS_PER_DAY
    assert code_of(lambda: verify_envelope(ALERT_BYTES, PARTIES.ring, late, replay=guard)) == (
        "ixb.E_EXPIRED"
    )
    guard.prune(late)
    assert len(guard) == 0  # forgotten once expired: memory is bounded by the window


def test_forgery_does_not_poison_the_replay_guard() -> None:
    guard = ReplayGuard()
    forged = _resigned_header(ALERT_BYTES, PARTIES["MYS/IMMIGRATION"])
    assert code_of(lambda: verify_envelope(forged, PARTIES.ring, NOW_MS, replay=guard)) == (
        "ixb.E_SIGNATURE"
    )
    verify_envelope(ALERT_BYTES, PARTIES.ring, NOW_MS, replay=guard)


@pytest.mark.parametrize(
    ("now", "kw", "code"),
    [
        (NOW_MS + MS_PER_DAY, {}, "ixb.E_EXPIRED"),
        (NOW_MS + 2 * MS_PER_DAY, {}, "ixb.E_EXPIRED"),
        (NOW_MS - 10 * 60 * 1000, {}, "ixb.E_CLOCK_SKEW"),
        (NOW_MS, {"ttl_ms": 40 * MS_PER_DAY}, "ixb.E_TTL"),
    ],
    ids=["expired-exactly", "expired-later", "created-in-future", "ttl-too-long"],
)
def test_freshness(now: int, kw: dict[str, int], code: str) -> None:
    data = seal(**kw)  # type: ignore[arg-type]
    assert code_of(lambda: verify_envelope(data, PARTIES.ring, now)) == code


def test_small_skew_is_tolerated() -> None:
    verify_envelope(ALERT_BYTES, PARTIES.ring, NOW_MS - 60 * 1000)


def test_unknown_revoked_and_rotated_senders() -> None:
    stranger = make_parties()
    data = seal_envelope(
        sender=stranger[SENDER],
        recipients=[PARTIES.pub(TO[0])],
        body=ALERT,
        now_ms=NOW_MS,
        ttl_ms=MS_PER_HOUR,
    )
    # same principal, different key: the key id names no key we know
    assert code_of(lambda: verify_envelope(data, PARTIES.ring, NOW_MS)) == "ixb.E_UNKNOWN_SENDER"
    empty = KeyRing()
    assert code_of(lambda: verify_envelope(ALERT_BYTES, empty, NOW_MS)) == "ixb.E_UNKNOWN_SENDER"
    ring = KeyRing({i.principal: i.public() for i in PARTIES.ids.values()})
    ring.revoke(PARTIES[SENDER].principal)
    assert code_of(lambda: verify_envelope(ALERT_BYTES, ring, NOW_MS)) == "ixb.E_REVOKED"


def test_impersonation_is_a_signature_failure() -> None:
    forged = _resigned_header(ALERT_BYTES, PARTIES["MYS/IMMIGRATION"])
    assert code_of(lambda: verify_envelope(forged, PARTIES.ring, NOW_MS)) == "ixb.E_SIGNATURE"


def test_stolen_ciphertext_under_another_sender_does_not_decrypt() -> None:
    """Encrypt-then-sign's classic hole (re-signing a stolen ciphertext) is closed by the AD."""
    thief = PARTIES["MYS/IMMIGRATION"]
    stolen = _resigned_header(
        ALERT_BYTES, thief, sender="MYS/IMMIGRATION", sender_key=thief.signing.key_id
    )
    env = verify_envelope(stolen, PARTIES.ring, NOW_MS)  # authentic: the thief did sign it
    assert code_of(lambda: open_envelope(env, PARTIES[TO[0]])) == "ixb.E_DECRYPT"


def test_recipients_cannot_be_shown_different_content() -> None:
    """Key commitment: a sender cannot give two recipients two different plaintexts."""
    sender = PARTIES[SENDER]
    header = decode_envelope(ALERT_BYTES).header
    k1, k2 = b"\x01" * CONTENT_KEY_BYTES, b"\x02" * CONTENT_KEY_BYTES
    ct = encrypt_body(ALERT, k1, b"\x00" * NONCE_BYTES, wire.encode(header))
    sealed = [seal_content_key(k1, PARTIES.pub(TO[0])), seal_content_key(k2, PARTIES.pub(TO[1]))]
    env = verify_envelope(assemble(header, sealed, ct, sender.signing), PARTIES.ring, NOW_MS)
    assert open_envelope(env, PARTIES[TO[0]]).body == ALERT
    assert code_of(lambda: open_envelope(env, PARTIES[TO[1]])) == "ixb.E_DECRYPT"


def test_limits() -> None:
    assert code_of(lambda: decode_envelope(ALERT_BYTES, Limits(max_envelope_bytes=100))) == (
        "ixb.E_TOO_LARGE"
    )
    assert code_of(lambda: decode_envelope(ALERT_BYTES, Limits(max_recipients=1))) == (
        "ixb.E_TOO_LARGE"
    )
    hopped = decode_envelope(ALERT_BYTES)
    for _ in range(3):
        hopped = add_hop(hopped, PARTIES["THA/HUB"], NOW_MS)
    assert code_of(lambda: decode_envelope(hopped.to_bytes(), Limits(max_hops=2))) == (
        "ixb.E_TOO_LARGE"
    )


def test_version_and_canonical_form() -> None:
    outer = msgspec.msgpack.decode(ALERT_BYTES)
    outer["v"] = 2
    assert code_of(lambda: decode_envelope(msgspec.msgpack.encode(outer))) == "ixb.E_VERSION"
    outer["v"] = 1
    reordered = dict(reversed(list(outer.items())))
    assert code_of(lambda: decode_envelope(msgspec.msgpack.encode(reordered))) == (
        "ixb.E_NONCANONICAL"
    )
    outer["extra"] = 1
    assert code_of(lambda: decode_envelope(msgspec.msgpack.encode(outer))) == "ixb.E_SCHEMA"


def test_header_rules() -> None:
    h3_without_text = lambda: seal(handling=HandlingCode.H3)  # noqa: E731
    assert code_of(h3_without_text) == "ixb.E_SCHEMA"
    answer = example_bodies(NOW_MS)["person.result"]
    assert code_of(lambda: seal(answer)) == "ixb.E_SCHEMA"  # an answer must say what it answers
    assert code_of(lambda: seal(to=[TO[0], TO[0]])) == "ixb.E_SCHEMA"


# --- hop signatures --------------------------------------------------------------


def test_hops_countersign_without_touching_the_sender_signature() -> None:
    env = decode_envelope(ALERT_BYTES)
    env = add_hop(env, PARTIES["THA/HUB"], NOW_MS + 1)
    env = add_hop(env, PARTIES["MYS/HUB"], NOW_MS + 2)
    data = env.to_bytes()
    assert len(data) == env.size
    again = verify_envelope(data, PARTIES.ring, NOW_MS).envelope
    assert [str(h) for h in verify_hops(again, PARTIES.ring, NOW_MS)] == ["THA/HUB", "MYS/HUB"]
    assert full_check(data) == [ALERT, ALERT]
    assert again.digest == decode_envelope(ALERT_BYTES).digest
    assert again.payload_hash == decode_envelope(ALERT_BYTES).payload_hash


def test_forged_or_non_hub_hops_are_refused() -> None:
    env = add_hop(decode_envelope(ALERT_BYTES), PARTIES["THA/HUB"], NOW_MS)
    hop = env.hops[0]
    moved = msgspec.structs.replace(hop, at=hop.at + 1)
    bad = Envelope(**{**{f: getattr(env, f) for f in env.__slots__}, "hops": (moved,)})
    assert code_of(lambda: verify_hops(bad, PARTIES.ring, NOW_MS)) == "ixb.E_SIGNATURE"
    assert code_of(lambda: add_hop(env, PARTIES["THA/DSI-ATHD"], NOW_MS)) == "ixb.E_SCHEMA"
    agency_hop = msgspec.structs.replace(hop, hub="THA/DSI-ATHD")
    bad2 = Envelope(**{**{f: getattr(env, f) for f in env.__slots__}, "hops": (agency_hop,)})
    assert code_of(lambda: verify_hops(bad2, PARTIES.ring, NOW_MS)) == "ixb.E_SIGNATURE"


COUNTERSIGNED_BYTES = add_hop(
    add_hop(decode_envelope(ALERT_BYTES), PARTIES["THA/HUB"], NOW_MS + 1),
    PARTIES["MYS/HUB"],
    NOW_MS + 2,
).to_bytes()


@fast
@given(bit=st.integers(min_value=0, max_value=len(COUNTERSIGNED_BYTES) * 8 - 1))
def test_any_single_bit_flip_in_a_countersigned_envelope_is_refused(bit: int) -> None:
    tampered = bytearray(COUNTERSIGNED_BYTES)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IxbError):
        full_check(bytes(tampered))


def test_the_replay_guard_keys_by_sender_and_id() -> None:
    guard = ReplayGuard()
    mid = b"\x01" * 16
    guard.check_and_record("THA/DSI-ATHD", mid, NOW_MS + 1000, NOW_MS)
    guard.check_and_record("MMR/MOHA-ATTU", mid, NOW_MS + 1000, NOW_MS)  # another sender's id
    with pytest.raises(ReplayError):
        guard.check_and_record("THA/DSI-ATHD", mid, NOW_MS + 1000, NOW_MS)
    assert len(guard) == 2
