"""Signed directories, roles, trust anchors and TrustedDirectories: every refusal by code.

Regenerate protocols/vectors/directory.json (only when the format changes on
purpose) with ``python -m tests.test_directory``; the tests check the stored
file in both directions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import wire
from protocols.directory import (
    DS_DIRECTORY,
    MAX_DIRECTORY_ENTRIES,
    MAX_PREVIOUS_KEYS,
    MAX_SIGNED_DIRECTORY_BYTES,
    Directory,
    DirectoryEntry,
    PreviousKey,
    RevocationInfo,
    SignedDirectory,
    build_directory,
    entry_for,
    revoke_entry,
    rotate_entry,
    sign_directory,
    verify_directory,
)
from protocols.envelope import add_hop, open_envelope, seal_envelope, verify_envelope, verify_hops
from protocols.errors import (
    ConfigError,
    DirectoryError,
    ExpiredError,
    IxbError,
    RollbackError,
    UnknownSenderError,
)
from protocols.examples import example_bodies
from protocols.federation import TrustAnchors, parse_federation, render_federation
from protocols.identifiers import Principal, hub_of, parse_agency
from protocols.keys import (
    EncryptionKeyPair,
    Identity,
    KeyAlg,
    SigningKeyPair,
    fingerprint,
    key_id,
)
from protocols.limits import MS_PER_DAY, MS_PER_HOUR
from protocols.messages import MESSAGE_TYPES
from protocols.roles import HUB_MAY_SEND, ROLE_MAY_SEND, Role, check_may_send
from protocols.trusted import TrustedDirectories
from tests.conftest import NOW_MS
from tests.gen_vectors import derive, identity

VECTOR_FILE = Path(__file__).resolve().parent.parent / "protocols" / "vectors" / "directory.json"

HUBS = {c: Identity.generate(hub_of(c)) for c in ("THA", "MYS", "MMR")}
OUTSIDER_HUB = Identity.generate(hub_of("IDN"))  # a hub not in the federation
AGENCY_NAMES = [
    "THA/DSI-ATHD",
    "THA/IMMIGRATION",
    "THA/OAG",
    "MYS/RMP-ATIPSOM",
    "MYS/IMMIGRATION",
]
AG = {n: Identity.generate(parse_agency(n)) for n in AGENCY_NAMES}
TRUST = TrustAnchors("ixb-test", {c: h.signing.public for c, h in HUBS.items()})
ROLES: dict[str, tuple[Role, ...]] = {
    "THA/DSI-ATHD": (Role.TRAFFICKING_UNIT, Role.INVESTIGATOR),
    "THA/IMMIGRATION": (Role.IMMIGRATION,),
    "THA/OAG": (Role.CENTRAL_AUTHORITY,),
    "MYS/RMP-ATIPSOM": (Role.TRAFFICKING_UNIT,),
    "MYS/IMMIGRATION": (Role.IMMIGRATION, Role.DOCUMENT_AUTHORITY),
}
VALID_FROM = NOW_MS - 30 * MS_PER_DAY
VALID_UNTIL = NOW_MS + 365 * MS_PER_DAY
ISSUED = NOW_MS - MS_PER_HOUR
TTL = 7 * MS_PER_DAY


def entry(name: str, **kw: Any) -> DirectoryEntry:
    ident = kw.pop("ident", AG.get(name))
    assert ident is not None
    return entry_for(
        ident.public(),
        kw.pop("roles", ROLES.get(name, (Role.INVESTIGATOR,))),
        kw.pop("valid_from", VALID_FROM),
        kw.pop("valid_until", VALID_UNTIL),
        **kw,
    )


def directory(
    country: str = "THA",
    version: int = 3,
    entries: list[DirectoryEntry] | None = None,
    *,
    issued: int = ISSUED,
    ttl: int = TTL,
) -> Directory:
    if entries is None:
        entries = [entry(n) for n in AGENCY_NAMES if n.startswith(country)]
    return build_directory(hub_of(country), version, issued, ttl, entries)


def signed(d: Directory | None = None) -> bytes:
    d = directory() if d is None else d
    return sign_directory(d, HUBS[d.country])


def code_of(fn: Callable[[], object]) -> str:
    with pytest.raises(IxbError) as info:
        fn()
    return info.value.code


# Raw builders: produce what a buggy or hostile hub could send, bypassing our constructors.


def raw(d: Directory) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.msgpack.decode(wire.encode(d))
    return out


def sign_raw(body: Any, signer: SigningKeyPair, kid: bytes | None = None) -> bytes:
    data = body if isinstance(body, bytes) else msgspec.msgpack.encode(body)
    sig = signer.sign(DS_DIRECTORY + data)
    return msgspec.msgpack.encode({"body": data, "key_id": kid or signer.key_id, "sig": sig})


def tha_raw(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    body = raw(directory())
    mutate(body)
    return sign_raw(body, HUBS["THA"].signing)


def _set_entry(i: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["entries"][i].update(fields)

    return mutate


def _reverse_keys(body: dict[str, Any]) -> None:
    items = list(body.items())
    body.clear()
    body.update(reversed(items))


def _too_many_entries(body: dict[str, Any]) -> None:
    template = body["entries"][0]
    body["entries"] = [
        {
            **template,
            "agency": f"THA/A{i:05d}",
            "signing_key": derive(f"s{i}"),
            "encryption_key": derive(f"e{i}"),
        }
        for i in range(MAX_DIRECTORY_ENTRIES + 1)
    ]


SIGNED = signed()
DIR = directory()
OUTER = msgspec.msgpack.decode(SIGNED)


def test_raw_builder_matches_the_canonical_encoding() -> None:
    assert msgspec.msgpack.encode(raw(DIR)) == wire.encode(DIR)
    assert tha_raw(lambda b: None) == SIGNED


# --- verify_directory: the refusal table --------------------------------------------

# name → (signed bytes, keyword arguments to verify_directory, expected code)
REFUSALS: dict[str, tuple[Callable[[], bytes], dict[str, Any], str]] = {
    "empty input": (lambda: b"", {}, "ixb.E_MALFORMED"),
    "not MessagePack": (lambda: b"\xc1", {}, "ixb.E_MALFORMED"),
    "truncated": (lambda: SIGNED[:-1], {}, "ixb.E_MALFORMED"),
    "trailing byte": (lambda: SIGNED + b"\x00", {}, "ixb.E_MALFORMED"),
    "too large": (lambda: b"\x00" * (MAX_SIGNED_DIRECTORY_BYTES + 1), {}, "ixb.E_TOO_LARGE"),
    "outer keys reordered": (
        lambda: msgspec.msgpack.encode(dict(reversed(OUTER.items()))),
        {},
        "ixb.E_NONCANONICAL",
    ),
    "unknown outer field": (
        lambda: msgspec.msgpack.encode({**OUTER, "v": 1}),
        {},
        "ixb.E_SCHEMA",
    ),
    "short key id": (
        lambda: msgspec.msgpack.encode({**OUTER, "key_id": OUTER["key_id"][:7]}),
        {},
        "ixb.E_SCHEMA",
    ),
    # wrong signers
    "signature bit flipped": (
        lambda: msgspec.msgpack.encode(
            {**OUTER, "sig": bytes([OUTER["sig"][0] ^ 1]) + OUTER["sig"][1:]}
        ),
        {},
        "ixb.E_SIGNATURE",
    ),
    "body bit flipped": (
        lambda: msgspec.msgpack.encode(
            {**OUTER, "body": OUTER["body"][:-1] + bytes([OUTER["body"][-1] ^ 1])}
        ),
        {},
        "ixb.E_SIGNATURE",
    ),
    "another hub's key, THA's key id": (
        lambda: sign_raw(wire.encode(DIR), HUBS["MYS"].signing, HUBS["THA"].signing.key_id),
        {},
        "ixb.E_SIGNATURE",
    ),
    "an agency's key": (
        lambda: sign_raw(wire.encode(DIR), AG["THA/DSI-ATHD"].signing),
        {},
        "ixb.E_SIGNATURE",
    ),
    "an agency's key, THA's key id": (
        lambda: sign_raw(wire.encode(DIR), AG["THA/DSI-ATHD"].signing, HUBS["THA"].signing.key_id),
        {},
        "ixb.E_SIGNATURE",
    ),
    "a hub outside the federation": (
        lambda: sign_raw(wire.encode(directory("IDN", entries=[])), OUTSIDER_HUB.signing),
        {},
        "ixb.E_SIGNATURE",
    ),
    # authentic, but MYS's hub speaks for THA: refused as unauthorised (see spec)
    "THA directory signed by MYS hub": (
        lambda: sign_raw(wire.encode(DIR), HUBS["MYS"].signing),
        {},
        "ixb.E_UNAUTHORISED",
    ),
    "another country than asked": (lambda: SIGNED, {"country": "MYS"}, "ixb.E_DIRECTORY"),
    # freshness and rollback
    "expired: now == expires": (lambda: SIGNED, {"now": ISSUED + TTL}, "ixb.E_EXPIRED"),
    "expired long ago": (lambda: SIGNED, {"now": ISSUED + 100 * TTL}, "ixb.E_EXPIRED"),
    "older version": (lambda: SIGNED, {"current_version": 4}, "ixb.E_ROLLBACK"),
    "equal version, no current to compare": (
        lambda: SIGNED,
        {"current_version": 3},
        "ixb.E_ROLLBACK",
    ),
    "equal version, different content": (
        lambda: SIGNED,
        {"current_version": 3, "current": directory(entries=[entry("THA/OAG")])},
        "ixb.E_ROLLBACK",
    ),
    "rollback is reported before expiry": (
        lambda: SIGNED,
        {"current_version": 9, "now": ISSUED + 100 * TTL},
        "ixb.E_ROLLBACK",
    ),
    # schema, each re-signed by the genuine THA hub key
    "entry of another country": (
        lambda: tha_raw(lambda b: b["entries"].append(raw(directory("MYS"))["entries"][0])),
        {},
        "ixb.E_SCHEMA",
    ),
    "entries unsorted": (
        lambda: tha_raw(lambda b: b["entries"].reverse()),
        {},
        "ixb.E_SCHEMA",
    ),
    "entry repeated": (
        lambda: tha_raw(lambda b: b["entries"].insert(1, b["entries"][0])),
        {},
        "ixb.E_SCHEMA",
    ),
    "two agencies share a signing key": (
        lambda: tha_raw(
            lambda b: b["entries"][1].update(signing_key=b["entries"][0]["signing_key"])
        ),
        {},
        "ixb.E_SCHEMA",
    ),
    "too many entries": (lambda: tha_raw(_too_many_entries), {}, "ixb.E_SCHEMA"),
    "roles empty": (lambda: tha_raw(_set_entry(0, roles=[])), {}, "ixb.E_SCHEMA"),
    "roles unsorted": (
        lambda: tha_raw(_set_entry(0, roles=["trafficking_unit", "investigator"])),
        {},
        "ixb.E_SCHEMA",
    ),
    "role repeated": (
        lambda: tha_raw(_set_entry(0, roles=["investigator", "investigator"])),
        {},
        "ixb.E_SCHEMA",
    ),
    "unknown role": (lambda: tha_raw(_set_entry(0, roles=["spy"])), {}, "ixb.E_SCHEMA"),
    "signing key 31 bytes": (
        lambda: tha_raw(_set_entry(0, signing_key=b"\x01" * 31)),
        {},
        "ixb.E_SCHEMA",
    ),
    "valid_until before valid_from": (
        lambda: tha_raw(_set_entry(0, valid_until=VALID_FROM - 1)),
        {},
        "ixb.E_SCHEMA",
    ),
    "revocation without reason": (
        lambda: tha_raw(_set_entry(0, revoked={"at": NOW_MS, "reason": ""})),
        {},
        "ixb.E_SCHEMA",
    ),
    "revocation reason with a control character": (
        lambda: tha_raw(_set_entry(0, revoked={"at": NOW_MS, "reason": "a\x1b[31mb"})),
        {},
        "ixb.E_SCHEMA",
    ),
    "previous key equals the current one": (
        lambda: tha_raw(
            lambda b: b["entries"][0].update(
                previous_signing_keys=[
                    {"key": b["entries"][0]["signing_key"], "valid_until": NOW_MS}
                ]
            )
        ),
        {},
        "ixb.E_SCHEMA",
    ),
    "too many previous keys": (
        lambda: tha_raw(
            _set_entry(
                0,
                previous_signing_keys=[
                    {"key": derive(f"p{i}"), "valid_until": NOW_MS}
                    for i in range(MAX_PREVIOUS_KEYS + 1)
                ],
            )
        ),
        {},
        "ixb.E_SCHEMA",
    ),
    "explicit empty previous_signing_keys": (
        lambda: tha_raw(_set_entry(0, previous_signing_keys=[])),
        {},
        "ixb.E_NONCANONICAL",
    ),
    "explicit nil revoked": (
        lambda: tha_raw(_set_entry(0, revoked=None)),
        {},
        "ixb.E_NONCANONICAL",
    ),
    "unknown body field": (lambda: tha_raw(lambda b: b.update(x=1)), {}, "ixb.E_SCHEMA"),
    "version 0": (lambda: tha_raw(lambda b: b.update(version=0)), {}, "ixb.E_SCHEMA"),
    "expires == issued": (
        lambda: tha_raw(lambda b: b.update(expires=ISSUED)),
        {},
        "ixb.E_SCHEMA",
    ),
    "hub is an agency id": (
        lambda: tha_raw(lambda b: b.update(hub="THA/DSI-ATHD")),
        {},
        "ixb.E_IDENTIFIER",
    ),
    "agency named HUB": (
        lambda: tha_raw(_set_entry(0, agency="THA/HUB")),
        {},
        "ixb.E_IDENTIFIER",
    ),
    "body not canonical (reordered)": (
        lambda: tha_raw(_reverse_keys),
        {},
        "ixb.E_NONCANONICAL",
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals(name: str) -> None:
    make, kw, code = REFUSALS[name]
    args = {"current_version": None, **kw}
    now = args.pop("now", NOW_MS)
    assert code_of(lambda: verify_directory(make(), TRUST, now, **args)) == code


def test_valid_directory_verifies() -> None:
    got = verify_directory(SIGNED, TRUST, NOW_MS, current_version=None)
    assert got == DIR
    assert got.country == "THA"
    assert got.hub_principal == hub_of("THA")
    assert [e.agency for e in got.entries] == ["THA/DSI-ATHD", "THA/IMMIGRATION", "THA/OAG"]
    # a newer version than the trusted one passes; so does the trusted one re-delivered
    assert verify_directory(SIGNED, TRUST, NOW_MS, current_version=2) == DIR
    assert verify_directory(SIGNED, TRUST, NOW_MS, current_version=3, current=DIR) == DIR
    assert verify_directory(SIGNED, TRUST, NOW_MS, current_version=None, country="THA") == DIR
    # last millisecond before expiry
    assert verify_directory(SIGNED, TRUST, ISSUED + TTL - 1, current_version=None) == DIR


def test_signing_needs_the_directory_s_own_hub() -> None:
    assert code_of(lambda: sign_directory(DIR, HUBS["MYS"])) == "ixb.E_UNAUTHORISED"


def test_signature_covers_the_labelled_body() -> None:
    outer = wire.decode(SIGNED, SignedDirectory, "signed directory")
    assert outer.body == wire.encode(DIR)
    assert outer.key_id == key_id(KeyAlg.ED25519, HUBS["THA"].signing.public)
    assert outer.sig == HUBS["THA"].signing.sign(b"ixb-directory-v1\x00" + outer.body)


# --- fuzzing: any input ends in a typed error --------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_only_typed_errors(data: bytes) -> None:
    with pytest.raises(IxbError):
        verify_directory(data, TRUST, NOW_MS, current_version=None)


@settings(max_examples=300, deadline=None)
@given(bit=st.integers(min_value=0, max_value=len(SIGNED) * 8 - 1))
def test_single_bit_flips_are_refused_with_typed_errors(bit: int) -> None:
    flipped = bytearray(SIGNED)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IxbError):
        verify_directory(bytes(flipped), TRUST, NOW_MS, current_version=None)


def test_every_single_bit_flip_is_refused() -> None:
    small = signed(directory(entries=[entry("THA/OAG")]))
    for bit in range(len(small) * 8):
        flipped = bytearray(small)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IxbError):
            verify_directory(bytes(flipped), TRUST, NOW_MS, current_version=None)


@settings(max_examples=150, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=len(SIGNED)),
    junk=st.binary(max_size=16),
)
def test_spliced_input_raises_only_typed_errors(cut: int, junk: bytes) -> None:
    data = SIGNED[:cut] + junk + SIGNED[cut + len(junk) :]
    try:
        got = verify_directory(data, TRUST, NOW_MS, current_version=None)
    except IxbError:
        return
    assert data == SIGNED  # only the untouched input may pass
    assert got == DIR


@settings(max_examples=60, deadline=None)
@given(
    roles=st.sets(st.sampled_from(list(Role)), min_size=1),
    start=st.integers(min_value=0, max_value=NOW_MS),
    length=st.integers(min_value=1, max_value=10 * 365 * MS_PER_DAY),
    version=st.integers(min_value=1, max_value=(1 << 53) - 1),
    revoked_at=st.none() | st.integers(min_value=0, max_value=NOW_MS * 2),
)
def test_built_directories_round_trip(
    roles: set[Role], start: int, length: int, version: int, revoked_at: int | None
) -> None:
    revoked = None if revoked_at is None else RevocationInfo(at=revoked_at, reason="test")
    e = entry("THA/OAG", roles=roles, valid_from=start, valid_until=start + length, revoked=revoked)
    d = directory(version=version, entries=[e, entry("THA/DSI-ATHD")])
    assert verify_directory(signed(d), TRUST, NOW_MS, current_version=version - 1) == d


# --- roles ----------------------------------------------------------------------------


def test_role_table_covers_every_message_type_and_nothing_else() -> None:
    assert set(ROLE_MAY_SEND) == set(Role)
    sendable = set().union(*ROLE_MAY_SEND.values())
    assert sendable == set(MESSAGE_TYPES)
    assert HUB_MAY_SEND.issubset(MESSAGE_TYPES)


EXPECTED_TABLE = {
    Role.TRAFFICKING_UNIT: "alert person.query person.result followup.request "
    "followup.decision receipt",
    Role.INVESTIGATOR: "alert person.query person.result followup.request "
    "followup.decision receipt",
    Role.IMMIGRATION: "doc.verify.request alert receipt",
    Role.DOCUMENT_AUTHORITY: "doc.verify.response receipt",
    Role.CENTRAL_AUTHORITY: "mla.request mla.status alert receipt",
    Role.LIAISON: "",
    Role.AUDITOR: "",
}


@pytest.mark.parametrize("role", list(Role))
def test_role_table_is_the_documented_one(role: Role) -> None:
    assert ROLE_MAY_SEND[role] == frozenset(EXPECTED_TABLE[role].split())


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("type_name", list(MESSAGE_TYPES))
def test_check_may_send_follows_the_table(role: Role, type_name: str) -> None:
    if type_name in ROLE_MAY_SEND[role]:
        check_may_send([role], type_name)
    else:
        assert code_of(lambda: check_may_send([role], type_name)) == "ixb.E_UNAUTHORISED"


def test_check_may_send_takes_the_union_of_roles() -> None:
    check_may_send([Role.IMMIGRATION, Role.DOCUMENT_AUTHORITY], "doc.verify.response")
    check_may_send([Role.IMMIGRATION, Role.DOCUMENT_AUTHORITY], "doc.verify.request")
    assert code_of(lambda: check_may_send([], "receipt")) == "ixb.E_UNAUTHORISED"
    assert code_of(lambda: check_may_send([Role.AUDITOR], "receipt")) == "ixb.E_UNAUTHORISED"
    assert code_of(lambda: check_may_send([Role.INVESTIGATOR], "nope")) == "ixb.E_SCHEMA"


# --- TrustedDirectories ----------------------------------------------------------------


def keys_with(*dirs: Directory, now: int = NOW_MS) -> TrustedDirectories:
    keys = TrustedDirectories(TRUST)
    for d in dirs:
        assert keys.update(d.country, signed(d), now)
    return keys


def agency(name: str) -> Principal:
    return parse_agency(name)


def test_keys_answer_for_current_keys_and_hubs() -> None:
    keys = keys_with(directory("THA"), directory("MYS"))
    dsi = AG["THA/DSI-ATHD"]
    assert keys.signing_key(dsi.principal, dsi.signing.key_id, NOW_MS) == dsi.signing.public
    for c, hub in HUBS.items():  # hubs come from the trust anchors, no directory needed
        assert keys.signing_key(hub_of(c), hub.signing.key_id, NOW_MS) == hub.signing.public
    immigration = agency("MYS/IMMIGRATION")
    assert keys.encryption_key(immigration, NOW_MS) == AG["MYS/IMMIGRATION"].public()
    assert keys.roles(immigration, NOW_MS) == {Role.IMMIGRATION, Role.DOCUMENT_AUTHORITY}
    assert keys.roles(hub_of("THA"), NOW_MS) == frozenset()
    assert keys.entry(agency("THA/OAG")) == entry("THA/OAG")
    assert keys.version("THA") == 3
    assert keys.version("MMR") is None
    assert keys.agencies("THA") == tuple(
        agency(n) for n in ("THA/DSI-ATHD", "THA/IMMIGRATION", "THA/OAG")
    )
    assert keys.agencies("MMR") == ()
    assert keys.directory("THA") == directory("THA")
    assert keys.signed("THA") == signed(directory("THA"))
    assert keys.trust is TRUST


KEY_REFUSALS: dict[str, tuple[Callable[[TrustedDirectories], object], str]] = {
    "hub with wrong key id": (
        lambda k: k.signing_key(hub_of("THA"), HUBS["MYS"].signing.key_id, NOW_MS),
        "ixb.E_UNKNOWN_SENDER",
    ),
    "hub outside the federation": (
        lambda k: k.signing_key(hub_of("IDN"), OUTSIDER_HUB.signing.key_id, NOW_MS),
        "ixb.E_UNKNOWN_SENDER",
    ),
    "agency of a country without a directory": (
        lambda k: k.signing_key(agency("MMR/MOHA-ATTU"), b"\x00" * 8, NOW_MS),
        "ixb.E_UNKNOWN_SENDER",
    ),
    "agency not listed": (
        lambda k: k.signing_key(agency("THA/NOBODY"), b"\x00" * 8, NOW_MS),
        "ixb.E_UNKNOWN_SENDER",
    ),
    "agency with an unknown key id": (
        lambda k: k.signing_key(agency("THA/OAG"), AG["THA/DSI-ATHD"].signing.key_id, NOW_MS),
        "ixb.E_UNKNOWN_SENDER",
    ),
    "entry of unlisted agency": (lambda k: k.entry(agency("THA/NOBODY")), "ixb.E_UNKNOWN_SENDER"),
    "encryption key of a hub": (
        lambda k: k.encryption_key(hub_of("THA"), NOW_MS),
        "ixb.E_NOT_RECIPIENT",
    ),
    "hub sending an alert": (
        lambda k: k.check_may_send(hub_of("THA"), "alert", NOW_MS),
        "ixb.E_UNAUTHORISED",
    ),
    "immigration answering a document check": (
        lambda k: k.check_may_send(agency("THA/IMMIGRATION"), "doc.verify.response", NOW_MS),
        "ixb.E_UNAUTHORISED",
    ),
}


@pytest.mark.parametrize("name", list(KEY_REFUSALS))
def test_key_lookup_refusals(name: str) -> None:
    keys = keys_with(directory("THA"))
    call, code = KEY_REFUSALS[name]
    assert code_of(lambda: call(keys)) == code


def test_may_send_checks_through_the_directory() -> None:
    keys = keys_with(directory("THA"), directory("MYS"))
    keys.check_may_send(hub_of("THA"), "receipt", NOW_MS)
    keys.check_may_send(agency("MYS/IMMIGRATION"), "doc.verify.response", NOW_MS)
    keys.check_may_send(agency("THA/OAG"), "mla.request", NOW_MS)


def test_rotation_keeps_the_previous_key_until_its_valid_until() -> None:
    name = "THA/DSI-ATHD"
    old = AG[name]
    new = Identity(old.principal, SigningKeyPair.generate(), EncryptionKeyPair.generate())
    keys = keys_with(directory("THA", 1), directory("MYS", 1))
    to = [keys.encryption_key(agency("MYS/RMP-ATIPSOM"), NOW_MS)]
    alert = example_bodies(NOW_MS)["alert"]
    by_old = seal_envelope(sender=old, recipients=to, body=alert, now_ms=NOW_MS, ttl_ms=MS_PER_DAY)

    grace_end = NOW_MS + 6 * MS_PER_HOUR
    rotated = rotate_entry(entry(name), new.public(), now_ms=NOW_MS, old_key_valid_until=grace_end)
    assert rotated.previous_signing_keys == (
        PreviousKey(key=old.signing.public, valid_until=grace_end),
    )
    v2 = directory("THA", 2, [rotated, entry("THA/IMMIGRATION"), entry("THA/OAG")])
    now = NOW_MS + MS_PER_HOUR
    assert keys.update("THA", signed(v2), now)
    by_new = seal_envelope(sender=new, recipients=to, body=alert, now_ms=now, ttl_ms=MS_PER_DAY)
    verify_envelope(by_old, keys, now)  # in flight across the rotation: still good
    verify_envelope(by_new, keys, now)
    assert keys.encryption_key(old.principal, now) == new.public()

    verify_envelope(by_old, keys, grace_end - 1)
    with pytest.raises(UnknownSenderError, match="replaced"):
        verify_envelope(by_old, keys, grace_end)
    verify_envelope(by_new, keys, grace_end)


def test_rotation_drops_retired_keys_and_keeps_at_most_the_maximum() -> None:
    e = entry("THA/OAG")
    for i in range(MAX_PREVIOUS_KEYS + 3):
        fresh = Identity.generate(parse_agency("THA/OAG")).public()
        e = rotate_entry(e, fresh, now_ms=NOW_MS + i, old_key_valid_until=NOW_MS + 100 + i)
    assert len(e.previous_signing_keys) == MAX_PREVIOUS_KEYS
    assert [p.valid_until for p in e.previous_signing_keys] == sorted(
        (p.valid_until for p in e.previous_signing_keys), reverse=True
    )
    later = Identity.generate(parse_agency("THA/OAG")).public()
    e = rotate_entry(e, later, now_ms=NOW_MS + 10_000, old_key_valid_until=NOW_MS + 20_000)
    assert len(e.previous_signing_keys) == 1  # the others had retired by then
    with pytest.raises(IxbError):
        rotate_entry(e, AG["THA/DSI-ATHD"].public(), now_ms=NOW_MS, old_key_valid_until=NOW_MS)


def test_revocation_takes_effect_at_its_time() -> None:
    name = "THA/DSI-ATHD"
    at = NOW_MS + 10
    revoked = revoke_entry(entry(name), at, "key compromised")
    keys = keys_with(directory("THA", 4, [revoked, entry("THA/OAG")]))
    sender = AG[name]
    kid = sender.signing.key_id
    assert keys.signing_key(sender.principal, kid, at - 1) == sender.signing.public
    keys.encryption_key(sender.principal, at - 1)
    for call in (
        lambda: keys.signing_key(sender.principal, kid, at),
        lambda: keys.encryption_key(sender.principal, at),
        lambda: keys.roles(sender.principal, at),
        lambda: keys.check_may_send(sender.principal, "alert", at),
    ):
        assert code_of(call) == "ixb.E_REVOKED"
    assert keys.entry(sender.principal).revoked == RevocationInfo(at=at, reason="key compromised")


def test_revocation_covers_previous_keys_too() -> None:
    name = "THA/OAG"
    old = AG[name]
    new = Identity.generate(old.principal).public()
    rotated = rotate_entry(entry(name), new, now_ms=NOW_MS, old_key_valid_until=NOW_MS + MS_PER_DAY)
    keys = keys_with(directory("THA", 1, [revoke_entry(rotated, NOW_MS, "disbanded")]))
    old_kid = old.signing.key_id
    assert code_of(lambda: keys.signing_key(old.principal, old_kid, NOW_MS)) == "ixb.E_REVOKED"


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "now", "message"),
    [
        (NOW_MS + 1, NOW_MS + MS_PER_DAY, NOW_MS, "not valid before"),
        (NOW_MS - MS_PER_DAY, NOW_MS, NOW_MS, "ended"),
    ],
)
def test_entries_are_used_only_inside_their_validity(
    valid_from: int, valid_until: int, now: int, message: str
) -> None:
    e = entry("THA/OAG", valid_from=valid_from, valid_until=valid_until)
    keys = keys_with(directory("THA", 1, [e]), now=now)
    oag = AG["THA/OAG"]
    with pytest.raises(IxbError, match=message) as info:
        keys.signing_key(oag.principal, oag.signing.key_id, now)
    assert info.value.code == "ixb.E_REVOKED"
    inside = (valid_from + valid_until) // 2
    assert keys.signing_key(oag.principal, oag.signing.key_id, inside) == oag.signing.public


def test_update_moves_forward_only() -> None:
    keys = keys_with()
    v3, v4 = signed(directory("THA", 3)), signed(directory("THA", 4, [entry("THA/OAG")]))
    assert keys.update("THA", v3, NOW_MS)
    assert not keys.update("THA", v3, NOW_MS)  # re-delivery: no-op
    assert keys.update("THA", v4, NOW_MS)
    assert not keys.update("THA", v4, NOW_MS)
    with pytest.raises(RollbackError):
        keys.update("THA", v3, NOW_MS)
    other_v4 = signed(directory("THA", 4, [entry("THA/IMMIGRATION")]))
    with pytest.raises(RollbackError):
        keys.update("THA", other_v4, NOW_MS)
    with pytest.raises(DirectoryError):
        keys.update("MYS", v4, NOW_MS)  # THA's directory delivered as MYS's
    assert keys.version("THA") == 4
    assert keys.signed("THA") == v4
    assert keys.agencies("THA") == (agency("THA/OAG"),)
    assert code_of(lambda: keys.update("XXZ", v4, NOW_MS)) == "ixb.E_IDENTIFIER"


def test_an_expired_directory_is_not_used() -> None:
    d = directory("THA", 1)
    keys = keys_with(d)
    oag = AG["THA/OAG"]
    now = d.expires
    with pytest.raises(DirectoryError, match="expired"):
        keys.signing_key(oag.principal, oag.signing.key_id, now)
    with pytest.raises(ExpiredError):
        keys.update("THA", signed(d), now)  # the same bytes again do not revive it
    keys.signing_key(hub_of("THA"), HUBS["THA"].signing.key_id, now)  # anchors do not expire
    fresh = directory("THA", 2, issued=now)
    assert keys.update("THA", signed(fresh), now)
    assert keys.signing_key(oag.principal, oag.signing.key_id, now) == oag.signing.public


def _flipped(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 1
    return bytes(out)


# Candidates a receiver may be handed for THA: genuine versions 1-4, a second version 3
# with other content, one already expired, a forgery, and MYS's directory.
THA_V = {v: signed(directory("THA", v)) for v in (1, 2, 3, 4)}
CANDIDATES = [
    *THA_V.values(),
    signed(directory("THA", 3, [entry("THA/OAG")])),
    signed(directory("THA", 5, issued=ISSUED - 2 * TTL)),
    _flipped(THA_V[4]),
    signed(directory("MYS", 6)),
]
GENUINE = set(CANDIDATES[:5])


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(range(len(CANDIDATES))), st.sampled_from([0, TTL // 2, TTL])),
        max_size=12,
    )
)
def test_trusted_directories_only_move_forward_through_verified_directories(
    steps: list[tuple[int, int]],
) -> None:
    """Whatever arrives, in any order and at any time: the trusted THA directory is always
    one that verified, its version never goes down, and a refused update changes nothing."""
    keys = TrustedDirectories(TRUST)
    for index, later in steps:
        before, version = keys.signed("THA"), keys.version("THA") or 0
        try:
            changed = keys.update("THA", CANDIDATES[index], NOW_MS + later)
        except IxbError:
            assert keys.signed("THA") == before
            continue
        after = keys.signed("THA")
        assert after in GENUINE
        assert (keys.version("THA") or 0) >= version
        assert changed == (after != before)
        assert keys.directory("THA") == wire.decode(
            msgspec.msgpack.decode(after)["body"], Directory, "directory"
        )


# --- end to end: an envelope verified against directories -----------------------------


def test_envelope_accepted_then_refused_after_revocation() -> None:
    keys = keys_with(directory("THA", 1), directory("MYS", 1))
    sender, to = AG["THA/DSI-ATHD"], agency("MYS/RMP-ATIPSOM")
    keys.check_may_send(sender.principal, "alert", NOW_MS)
    body = example_bodies(NOW_MS)["alert"]
    data = seal_envelope(
        sender=sender,
        recipients=[keys.encryption_key(to, NOW_MS)],
        body=body,
        now_ms=NOW_MS,
        ttl_ms=MS_PER_DAY,
    )
    verified = verify_envelope(data, keys, NOW_MS)
    hopped = add_hop(verified.envelope, HUBS["THA"], NOW_MS + 1)
    assert verify_hops(hopped, keys, NOW_MS + 1) == (hub_of("THA"),)
    assert open_envelope(verified, AG["MYS/RMP-ATIPSOM"]).body == body

    revoked_at = NOW_MS + 1000
    v2 = directory(
        "THA",
        2,
        [revoke_entry(entry("THA/DSI-ATHD"), revoked_at, "officer left"), entry("THA/OAG")],
        issued=NOW_MS + 10,
    )
    assert keys.update("THA", signed(v2), NOW_MS + 10)
    verify_envelope(data, keys, NOW_MS + 10)  # revocation is not retroactive before `at`
    assert code_of(lambda: verify_envelope(data, keys, revoked_at)) == "ixb.E_REVOKED"
    assert code_of(lambda: keys.encryption_key(sender.principal, revoked_at)) == "ixb.E_REVOKED"


# --- federation file ------------------------------------------------------------------

K = {c: h.signing.public.hex() for c, h in HUBS.items()}
FP = {c: fingerprint(KeyAlg.ED25519, h.signing.public) for c, h in HUBS.items()}
HEAD = '[federation]\nname = "ixb-test"\n'


def hub_toml(country: str, key: str | None = None, extra: str = "") -> str:
    return f'\n[[hub]]\ncountry = "{country}"\nsigning_key = "{key or K[country]}"\n{extra}'


def test_federation_round_trips() -> None:
    text = render_federation("ixb-test", {c: h.signing.public for c, h in HUBS.items()})
    assert parse_federation(text) == TRUST
    assert TRUST.countries == ("MMR", "MYS", "THA")
    assert all(FP[c] in text for c in HUBS)
    hand = HEAD + hub_toml("THA", extra=f'fingerprint = "{FP["THA"]}"\n') + hub_toml("MYS")
    trust = parse_federation(hand)
    assert trust.hub_key("THA") == HUBS["THA"].signing.public
    assert trust.country_of_key_id(HUBS["MYS"].signing.key_id) == "MYS"
    assert trust.country_of_key_id(AG["THA/OAG"].signing.key_id) is None
    upper = parse_federation(HEAD + hub_toml("THA", K["THA"].upper()) + hub_toml("MYS"))
    assert upper == trust  # hex digits in either case
    assert code_of(lambda: trust.hub_key("IDN")) == "ixb.E_UNKNOWN_SENDER"


FEDERATION_ERRORS: dict[str, tuple[str, str]] = {
    "not TOML": ("[federation\n", "federation file: not valid TOML"),
    "no federation table": (hub_toml("THA"), "federation: a [federation] table"),
    "unknown top-level key": ("colour = 1\n" + HEAD + hub_toml("THA"), "colour: unknown key"),
    "unknown federation key": (
        '[federation]\nname = "x"\ncolour = 1\n' + hub_toml("THA"),
        "federation.colour: unknown key",
    ),
    "name missing": ("[federation]\n" + hub_toml("THA"), "federation.name"),
    "name not a string": ("[federation]\nname = 7\n" + hub_toml("THA"), "federation.name"),
    "name with a newline": (
        '[federation]\nname = "a\\nb"\n' + hub_toml("THA"),
        "federation.name",
    ),
    "no hubs": (HEAD, "hub: at least one"),
    "hub is not an array of tables": ('hub = "THA"\n' + HEAD, "hub: at least one"),
    "hub array holds a string": ('hub = ["THA"]\n' + HEAD, "hub[0]: must be a [[hub]] table"),
    "unknown hub key": (HEAD + hub_toml("THA", extra="colour = 1\n"), "hub[0].colour"),
    "country missing": (
        HEAD + f'[[hub]]\nsigning_key = "{K["THA"]}"\n',
        "hub[0].country: a string is required",
    ),
    "country unknown": (HEAD + hub_toml("THA") + hub_toml("XXZ", K["MYS"]), "hub[1].country"),
    "country lower case": (HEAD + hub_toml("THA").replace('"THA"', '"tha"'), "hub[0].country"),
    "country twice": (
        HEAD + hub_toml("THA") + hub_toml("THA", K["MYS"]),
        "hub[1].country: THA is already hub[0]",
    ),
    "key missing": (HEAD + '[[hub]]\ncountry = "THA"\n', "hub[0].signing_key"),
    "key not hex": (HEAD + hub_toml("THA") + hub_toml("MYS", "zz" * 32), "hub[1].signing_key"),
    "key too short": (HEAD + hub_toml("THA", K["THA"][:-2]), "hub[0].signing_key"),
    "key with spaces": (HEAD + hub_toml("THA", K["THA"][:-2] + " a"), "hub[0].signing_key"),
    "key an integer": (
        HEAD + '[[hub]]\ncountry = "THA"\nsigning_key = 5\n',
        "hub[0].signing_key: a string",
    ),
    "same key twice": (
        HEAD + hub_toml("THA") + hub_toml("MYS", K["THA"]),
        "hub[1].signing_key: same key as hub[0]",
    ),
    "fingerprint mismatch": (
        HEAD + hub_toml("THA") + hub_toml("MYS", extra=f'fingerprint = "{FP["THA"]}"\n'),
        "hub[1].fingerprint: does not match",
    ),
    "fingerprint not a string": (
        HEAD + hub_toml("THA", extra="fingerprint = 1\n"),
        "hub[0].fingerprint",
    ),
}


@pytest.mark.parametrize("name", list(FEDERATION_ERRORS))
def test_federation_errors_name_the_key(name: str) -> None:
    text, message = FEDERATION_ERRORS[name]
    with pytest.raises(ConfigError) as info:
        parse_federation(text)
    assert info.value.code == "ixb.E_CONFIG"
    assert message in info.value.detail


def test_trust_anchors_validate_on_construction() -> None:
    key = HUBS["THA"].signing.public
    for name, hubs in [
        ("bad name!", {"THA": key}),
        ("x", {}),
        ("x", {"XXZ": key}),
        ("x", {"THA": key[:31]}),
        ("x", {"THA": key, "MYS": key}),
    ]:
        with pytest.raises(ConfigError):
            TrustAnchors(name, hubs)
    with pytest.raises(ConfigError):
        render_federation("x", {"THA": key, "MYS": key})


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_federation_parser_raises_only_config_errors(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_federation(HEAD + text)


# --- builders -------------------------------------------------------------------------


def test_builders_refuse_what_cannot_be_listed() -> None:
    hub_pub = HUBS["THA"].public()
    assert code_of(lambda: entry_for(hub_pub, [Role.LIAISON], 0, 1)) == "ixb.E_SCHEMA"
    oag = AG["THA/OAG"].public()
    assert code_of(lambda: entry_for(oag, ["spy"], 0, 1)) == "ixb.E_SCHEMA"
    assert code_of(lambda: entry_for(oag, [], 0, 1)) == "ixb.E_SCHEMA"
    assert code_of(lambda: entry_for(oag, [Role.LIAISON], 1, 1)) == "ixb.E_SCHEMA"
    both = entry_for(oag, ["liaison", Role.AUDITOR, Role.LIAISON], 0, 1)
    assert both.roles == (Role.AUDITOR, Role.LIAISON)
    assert code_of(lambda: build_directory(agency("THA/OAG"), 1, 0, 1, [])) == "ixb.E_SCHEMA"
    assert code_of(lambda: build_directory(hub_of("THA"), 1, 0, 0, [])) == "ixb.E_SCHEMA"
    assert code_of(lambda: build_directory(hub_of("THA"), 0, 0, 1, [])) == "ixb.E_SCHEMA"
    mys = entry("MYS/IMMIGRATION")
    assert code_of(lambda: build_directory(hub_of("THA"), 1, 0, 1, [mys])) == "ixb.E_SCHEMA"
    dup = [entry("THA/OAG"), entry("THA/OAG")]
    assert code_of(lambda: build_directory(hub_of("THA"), 1, 0, 1, dup)) == "ixb.E_SCHEMA"
    # local construction applies the same bounds as decoding
    assert code_of(lambda: RevocationInfo(at=-1, reason="x")) == "ixb.E_SCHEMA"
    assert code_of(lambda: PreviousKey(key=b"k", valid_until=0)) == "ixb.E_SCHEMA"


# --- vectors: protocols/vectors/directory.json ------------------------------------------

VECTOR_AGENCIES = ["THA/DSI-ATHD", "THA/IMMIGRATION", "THA/OAG", "THA/PATROL-7"]
VECTOR_HUBS = ["THA", "MYS", "MMR"]


def _bytes_to_hex(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _bytes_to_hex(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bytes_to_hex(v) for v in value]
    return value


def directory_json(d: Directory) -> dict[str, Any]:
    out: dict[str, Any] = _bytes_to_hex(raw(d))
    return out


def directory_from_json(doc: dict[str, Any]) -> Directory:
    """Rebuild from the stored fields alone, without any of the vector generator's code."""
    entries = []
    for e in doc["entries"]:
        revoked = e.get("revoked")
        entries.append(
            DirectoryEntry(
                agency=e["agency"],
                roles=tuple(Role(r) for r in e["roles"]),
                signing_key=bytes.fromhex(e["signing_key"]),
                encryption_key=bytes.fromhex(e["encryption_key"]),
                valid_from=e["valid_from"],
                valid_until=e["valid_until"],
                revoked=None if revoked is None else RevocationInfo(**revoked),
                previous_signing_keys=tuple(
                    PreviousKey(key=bytes.fromhex(p["key"]), valid_until=p["valid_until"])
                    for p in e.get("previous_signing_keys", [])
                ),
            )
        )
    return Directory(
        hub=doc["hub"],
        version=doc["version"],
        issued=doc["issued"],
        expires=doc["expires"],
        entries=tuple(entries),
    )


def build_vectors() -> dict[str, Any]:
    ids = {n: identity(n) for n in VECTOR_AGENCIES + [f"{c}/HUB" for c in VECTOR_HUBS]}
    hubs = {c: ids[f"{c}/HUB"] for c in VECTOR_HUBS}
    previous = SigningKeyPair(derive("THA/OAG/ed25519-previous"))
    roles = {
        "THA/DSI-ATHD": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
        "THA/IMMIGRATION": [Role.IMMIGRATION, Role.DOCUMENT_AUTHORITY],
        "THA/OAG": [Role.CENTRAL_AUTHORITY],
        "THA/PATROL-7": [Role.TRAFFICKING_UNIT],
    }
    entries = {n: entry_for(ids[n].public(), roles[n], VALID_FROM, VALID_UNTIL) for n in roles}
    entries["THA/OAG"] = msgspec.structs.replace(
        entries["THA/OAG"],
        previous_signing_keys=(PreviousKey(key=previous.public, valid_until=NOW_MS + MS_PER_DAY),),
    )
    entries["THA/PATROL-7"] = revoke_entry(
        entries["THA/PATROL-7"], NOW_MS - MS_PER_DAY, "unit disbanded"
    )
    d = build_directory(hub_of("THA"), 3, ISSUED, TTL, entries.values())
    data = sign_directory(d, hubs["THA"])
    outer = wire.decode(data, SignedDirectory, "signed directory")
    tha, mys = hubs["THA"].signing, hubs["MYS"].signing
    body = raw(d)

    def resigned(mutate: Callable[[dict[str, Any]], None]) -> bytes:
        b = raw(d)
        mutate(b)
        return sign_raw(b, tha)

    def case(name: str, signed_bytes: bytes, error: str | None, **kw: Any) -> dict[str, Any]:
        current: bytes | None = kw.get("current")
        out = {
            "name": name,
            "signed": signed_bytes.hex(),
            "now_ms": kw.get("now_ms", NOW_MS),
            "current_version": None if current is None else _body_of(current).version,
            "current": None if current is None else current.hex(),
        }
        return out if error is None else {**out, "error": error}

    v4 = sign_directory(
        build_directory(hub_of("THA"), 4, ISSUED, TTL, entries.values()), hubs["THA"]
    )
    other_v3 = sign_directory(
        build_directory(hub_of("THA"), 3, ISSUED + 1, TTL, entries.values()), hubs["THA"]
    )

    outer_map = msgspec.msgpack.decode(data)
    invalid = [
        case("not MessagePack", b"\xc1", "ixb.E_MALFORMED"),
        case("truncated", data[:-1], "ixb.E_MALFORMED"),
        case(
            "outer keys reordered",
            msgspec.msgpack.encode(dict(reversed(outer_map.items()))),
            "ixb.E_NONCANONICAL",
        ),
        case(
            "signature bit flipped",
            msgspec.msgpack.encode({**outer_map, "sig": bytes([outer.sig[0] ^ 1]) + outer.sig[1:]}),
            "ixb.E_SIGNATURE",
        ),
        case(
            "signed by MYS/HUB under THA/HUB's key id",
            sign_raw(body, mys, tha.key_id),
            "ixb.E_SIGNATURE",
        ),
        case("signed by an agency", sign_raw(body, ids["THA/DSI-ATHD"].signing), "ixb.E_SIGNATURE"),
        case("THA's directory signed by MYS/HUB", sign_raw(body, mys), "ixb.E_UNAUTHORISED"),
        case("older than the trusted version 4", data, "ixb.E_ROLLBACK", current=v4),
        case(
            "same version as the trusted one, other content",
            data,
            "ixb.E_ROLLBACK",
            current=other_v3,
        ),
        case("expired (now = expires)", data, "ixb.E_EXPIRED", now_ms=d.expires),
        case("entries unsorted", resigned(lambda b: b["entries"].reverse()), "ixb.E_SCHEMA"),
        case(
            "entry repeated",
            resigned(lambda b: b["entries"].insert(0, b["entries"][0])),
            "ixb.E_SCHEMA",
        ),
        case(
            "entry of another country",
            resigned(lambda b: b["entries"].append({**b["entries"][-1], "agency": "VNM/X"})),
            "ixb.E_SCHEMA",
        ),
        case(
            "roles not in ascending order",
            resigned(lambda b: b["entries"][0].update(roles=["trafficking_unit", "investigator"])),
            "ixb.E_SCHEMA",
        ),
    ]
    return {
        "about": "ixb signed directory test vectors; see protocols/SPEC.md §Directory",
        "now_ms": NOW_MS,
        "federation": {
            "name": "ixb-test-vectors",
            "toml": render_federation(
                "ixb-test-vectors", {c: h.signing.public for c, h in hubs.items()}
            ),
        },
        "hubs": {
            f"{c}/HUB": {
                "signing_seed": h.signing._seed().hex(),
                "signing_public": h.signing.public.hex(),
                "key_id": h.signing.key_id.hex(),
                "fingerprint": h.signing.fingerprint,
            }
            for c, h in hubs.items()
        },
        "directory": directory_json(d),
        "body": outer.body.hex(),
        "signing_input": (DS_DIRECTORY + outer.body).hex(),
        "key_id": outer.key_id.hex(),
        "sig": outer.sig.hex(),
        "signed": data.hex(),
        "invalid": invalid,
        "accepted": [
            case(
                "re-delivery of the trusted directory (same version, same content)",
                data,
                None,
                current=data,
            ),
            case(
                "newer than the trusted version 2", v4, None, current=_resigned_version(d, 2, hubs)
            ),
        ],
    }


def _body_of(signed_bytes: bytes) -> Directory:
    outer = wire.decode(signed_bytes, SignedDirectory, "signed directory")
    return wire.decode(outer.body, Directory, "directory")


def _resigned_version(d: Directory, version: int, hubs: dict[str, Identity]) -> bytes:
    return sign_directory(
        build_directory(hub_of("THA"), version, d.issued, d.expires - d.issued, d.entries),
        hubs["THA"],
    )


VECTORS: dict[str, Any] = json.loads(VECTOR_FILE.read_text()) if VECTOR_FILE.exists() else {}


def test_vector_file_is_what_the_generator_makes() -> None:
    assert build_vectors() == VECTORS


def test_vector_decode_direction() -> None:
    trust = parse_federation(VECTORS["federation"]["toml"])
    for hub, h in VECTORS["hubs"].items():
        key = bytes.fromhex(h["signing_public"])
        assert trust.hub_key(hub[:3]) == key
        assert key_id(KeyAlg.ED25519, key).hex() == h["key_id"]
        assert fingerprint(KeyAlg.ED25519, key) == h["fingerprint"]
    data = bytes.fromhex(VECTORS["signed"])
    got = verify_directory(data, trust, VECTORS["now_ms"], current_version=None)
    assert directory_json(got) == VECTORS["directory"]
    outer = wire.decode(data, SignedDirectory, "signed directory")
    assert outer.body.hex() == VECTORS["body"]
    assert outer.key_id.hex() == VECTORS["key_id"]
    assert outer.sig.hex() == VECTORS["sig"]


def test_vector_encode_direction() -> None:
    d = directory_from_json(VECTORS["directory"])
    body = wire.encode(d)
    assert body.hex() == VECTORS["body"]
    assert (b"ixb-directory-v1\x00" + body).hex() == VECTORS["signing_input"]
    hub = VECTORS["hubs"]["THA/HUB"]
    signer = Identity(hub_of("THA"), SigningKeyPair(bytes.fromhex(hub["signing_seed"])), None)
    assert sign_directory(d, signer).hex() == VECTORS["signed"]


@pytest.mark.parametrize("case", VECTORS.get("invalid", []), ids=lambda c: c["name"])
def test_vector_invalid_cases(case: dict[str, Any]) -> None:
    trust = parse_federation(VECTORS["federation"]["toml"])
    data = bytes.fromhex(case["signed"])

    def call() -> Directory:
        return verify_directory(data, trust, case["now_ms"], **_current(case))

    assert code_of(call) == case["error"]


def _current(case: dict[str, Any]) -> dict[str, Any]:
    """§12 step 8's inputs: the trusted version and the trusted directory itself."""
    current = None if case["current"] is None else _body_of(bytes.fromhex(case["current"]))
    assert case["current_version"] == (None if current is None else current.version)
    return {"current_version": case["current_version"], "current": current}


@pytest.mark.parametrize("case", VECTORS.get("accepted", []), ids=lambda c: c["name"])
def test_vector_accepted_cases(case: dict[str, Any]) -> None:
    """§12 step 8: a newer version passes, and so does the trusted directory delivered again."""
    trust = parse_federation(VECTORS["federation"]["toml"])
    data = bytes.fromhex(case["signed"])
    assert verify_directory(data, trust, case["now_ms"], **_current(case)) == _body_of(data)


def test_vectors_cover_both_sides_of_step_8() -> None:
    names = [c["name"] for c in VECTORS["accepted"]]
    assert any("re-delivery" in n for n in names)
    same = [c for c in VECTORS["invalid"] if "same version" in c["name"]]
    assert [c["error"] for c in same] == ["ixb.E_ROLLBACK"]
    assert same[0]["current"] != same[0]["signed"]
    assert same[0]["current_version"] == _body_of(bytes.fromhex(same[0]["signed"])).version


def test_envelope_vectors_verify_against_the_directory_vector() -> None:
    """The two vector files share keys: the stored alert verifies through the directory."""
    envelopes = json.loads((VECTOR_FILE.parent / "envelopes.json").read_text())
    keys = TrustedDirectories(parse_federation(VECTORS["federation"]["toml"]))
    assert keys.update("THA", bytes.fromhex(VECTORS["signed"]), NOW_MS)
    alert = next(e for e in envelopes["envelopes"] if e["name"] == "alert")
    now = envelopes["now_ms"]
    env = verify_envelope(bytes.fromhex(alert["envelope"]), keys, now)
    assert verify_hops(env.envelope, keys, now) == (hub_of("THA"), hub_of("MYS"))
    patrol = agency("THA/PATROL-7")
    assert code_of(lambda: keys.signing_key(patrol, b"\x00" * 8, NOW_MS)) == "ixb.E_REVOKED"


def main() -> None:
    VECTOR_FILE.write_text(json.dumps(build_vectors(), indent=1) + "\n")


if __name__ == "__main__":
    main()


def test_a_signed_directory_fits_in_one_nats_message() -> None:
    """It travels on the cross-border streams and in one directory answer (SPEC §8, §12)."""
    from broker.natsplan import MAX_PAYLOAD

    assert MAX_SIGNED_DIRECTORY_BYTES <= MAX_PAYLOAD
