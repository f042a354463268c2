"""Envelope test vectors, checked in both directions.

Decode direction: the stored bytes decode, verify and open with the stored
keys to the stored body. Encode direction: rebuilding from the stored inputs
(keys, header fields, body, content key, nonce, sealed boxes) gives the stored
bytes exactly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nacl.public import PrivateKey, SealedBox

from protocols import wire
from protocols.audit import WitnessSize, decode_witness_size, encode_witness_size
from protocols.checkpoint import log_origin, verify_checkpoint, verify_cosignature
from protocols.envelope import (
    Header,
    SealedKey,
    add_hop,
    assemble,
    decode_envelope,
    encrypt_body,
    header_ad,
    key_commitment,
    open_envelope,
    seal_envelope,
    verify_envelope,
    verify_hops,
)
from protocols.errors import IxbError
from protocols.federation import (
    KEY_GRACE_MS,
    check_successor,
    parse_federation_file,
    render_federation_file,
    sign_version,
)
from protocols.handling import HandlingCode
from protocols.identifiers import check_country, hub_of, parse_agency, parse_principal
from protocols.keys import (
    EncryptionKeyPair,
    Identity,
    KeyRing,
    SigningKeyPair,
    open_keyfile,
    read_public,
)
from protocols.messages import MESSAGE_TYPES, Receipt, ReceiptStatus, decode_body, encode_body
from protocols.receipts import check_receipt_signer, check_receipt_statement, check_reminder
from protocols.victims import names_victim
from tests.gen_vectors import bytes_fields, countries_doc, from_hex_json, hex_json

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "vectors"
DOC: dict[str, Any] = json.loads((VECTORS / "envelopes.json").read_text())
NOW = DOC["now_ms"]


def _identity(name: str, p: dict[str, Any]) -> Identity:
    principal = hub_of(name[:3]) if name.endswith("/HUB") else parse_agency(name)
    enc = None
    if "encryption_secret" in p:
        enc = EncryptionKeyPair(bytes.fromhex(p["encryption_secret"]))
    return Identity(principal, SigningKeyPair(bytes.fromhex(p["signing_seed"])), enc)


IDS = {name: _identity(name, p) for name, p in DOC["parties"].items()}
RING = KeyRing({i.principal: i.public() for i in IDS.values()})
CASES = {v["name"]: v for v in DOC["envelopes"]}


def test_vectors_cover_every_message_type() -> None:
    assert {v["type"] for v in DOC["envelopes"]} == set(MESSAGE_TYPES)


def test_party_keys_match_their_public_parts() -> None:
    for name, p in DOC["parties"].items():
        pub = IDS[name].public()
        assert pub.signing.hex() == p["signing_public"]
        assert pub.signing_key_id.hex() == p["signing_key_id"]
        assert pub.fingerprints() == p["fingerprints"]
        if pub.encryption is not None:
            assert pub.encryption.hex() == p["encryption_public"]


@pytest.mark.parametrize("name", list(CASES))
def test_decode_direction(name: str) -> None:
    v = CASES[name]
    verified = verify_envelope(bytes.fromhex(v["envelope"]), RING, NOW)
    env = verified.envelope
    assert env.hdr.hex() == v["header_msgpack"]
    assert env.keys.hex() == v["keys_msgpack"]
    assert env.digest.hex() == v["digest"]
    assert env.payload_hash.hex() == v["payload_hash"]
    assert [h.hub for h in env.hops] == [h["hub"] for h in v["hops"]]
    verify_hops(env, RING, NOW)
    for recipient in v["header"]["recipients"]:
        opened = open_envelope(verified, IDS[recipient])
        assert encode_body(opened.body).hex() == v["body_msgpack"]
        assert json.loads(json.dumps(hex_json(opened.body))) == v["body"]


@pytest.mark.parametrize("name", list(CASES))
def test_encode_direction(name: str) -> None:
    _check_encode(CASES[name])


def _check_encode(v: dict[str, Any]) -> None:
    fields = dict(v["header"])
    for key in ("id", "sender_key", "in_reply_to"):
        if key in fields:
            fields[key] = bytes.fromhex(fields[key])
    header = msgspec.convert(fields, Header)
    hdr = wire.encode(header)
    assert hdr.hex() == v["header_msgpack"]
    assert header_ad(hdr).hex() == v["ad"]
    body = decode_body(v["type"], bytes.fromhex(v["body_msgpack"]))
    assert body == from_hex_json(v["body"], MESSAGE_TYPES[v["type"]])
    content_key = bytes.fromhex(v["content_key"])
    assert key_commitment(content_key).hex() == v["commitment"]
    ct = encrypt_body(body, content_key, bytes.fromhex(v["nonce"]), hdr)
    assert ct.hex() == v["ct"]
    sealed = []
    for s in v["sealed_keys"]:
        secret = IDS[s["recipient"]].encryption
        assert secret is not None
        box = SealedBox(PrivateKey(bytes(secret.private_key)))
        assert box.decrypt(bytes.fromhex(s["sealed"])) == content_key
        sealed.append(
            SealedKey(
                recipient=s["recipient"],
                key_id=bytes.fromhex(s["key_id"]),
                sealed=bytes.fromhex(s["sealed"]),
            )
        )
    data = assemble(header, sealed, ct, IDS[v["header"]["sender"]].signing)
    env = decode_envelope(data)
    assert env.sig.hex() == v["signature"]
    for hop in v["hops"]:
        env = add_hop(env, IDS[hop["hub"]], hop["at"])
    assert env.to_bytes().hex() == v["envelope"]


VICTIM = DOC["victim_refused"]


def test_an_h0_alert_naming_a_victim_verifies_but_its_recipient_refuses_to_open_it() -> None:
    verified = verify_envelope(bytes.fromhex(VICTIM["envelope"]), RING, NOW)
    assert verified.header.handling is HandlingCode.H0
    body = decode_body(VICTIM["type"], bytes.fromhex(VICTIM["body_msgpack"]))
    assert names_victim(body)
    for recipient in VICTIM["header"]["recipients"]:
        with pytest.raises(IxbError) as info:
            open_envelope(verified, IDS[recipient])
        assert info.value.code == VICTIM["error"] == "ixb.E_HANDLING"


def test_the_victim_vector_rebuilds_from_its_inputs_and_no_sender_would_seal_it() -> None:
    _check_encode(VICTIM)
    body = decode_body(VICTIM["type"], bytes.fromhex(VICTIM["body_msgpack"]))
    sender = IDS[VICTIM["header"]["sender"]]
    to = [IDS[r].public() for r in VICTIM["header"]["recipients"]]
    with pytest.raises(IxbError) as info:
        seal_envelope(sender=sender, recipients=to, body=body, now_ms=NOW, ttl_ms=60_000)
    assert info.value.code == "ixb.E_HANDLING"
    sealed = seal_envelope(
        sender=sender,
        recipients=to,
        body=body,
        now_ms=NOW,
        ttl_ms=60_000,
        handling=HandlingCode.H2,
    )
    opened = open_envelope(
        verify_envelope(sealed, RING, NOW), IDS[VICTIM["header"]["recipients"][0]]
    )
    assert opened.body == body


@pytest.mark.parametrize("case", DOC["invalid"], ids=[c["name"] for c in DOC["invalid"]])
def test_invalid_vectors(case: dict[str, Any]) -> None:
    with pytest.raises(IxbError) as info:
        env = verify_envelope(bytes.fromhex(case["envelope"]), RING, NOW)
        verify_hops(env.envelope, RING, NOW)
    assert info.value.code == case["error"]


def test_alert_file_and_keyfile_vectors() -> None:
    alert = (VECTORS / "alert.ixb").read_bytes()
    assert alert.hex() == CASES["alert"]["envelope"]
    keyfile = (VECTORS / "THA-DSI-ATHD.key").read_bytes()
    ident = open_keyfile(keyfile, "ixb test vector passphrase")
    assert ident.public() == IDS["THA/DSI-ATHD"].public()
    assert read_public(keyfile) == IDS["THA/DSI-ATHD"].public()


WITNESS: dict[str, Any] = json.loads((VECTORS / "witness.json").read_text())
_CHECKPOINT_PARTIES: dict[str, Any] = json.loads((VECTORS / "checkpoint.json").read_text())["ixb"][
    "parties"
]


@pytest.mark.parametrize("case", WITNESS["answers"], ids=lambda c: c["name"])
def test_witness_size_both_directions(case: dict[str, Any]) -> None:
    note = None if case["note"] is None else case["note"].encode()
    encoding = bytes.fromhex(case["encoding"])
    assert encode_witness_size(WitnessSize(size=case["size"], note=note)) == encoding
    decoded = decode_witness_size(encoding)
    assert (decoded.size, decoded.note) == (case["size"], note)
    if decoded.note is not None:  # what the origin checks before proving from ``size``
        origin, witness = (_CHECKPOINT_PARTIES[p] for p in (WITNESS["origin"], WITNESS["witness"]))
        cp = verify_checkpoint(
            decoded.note, bytes.fromhex(origin["signing_public"]), log_origin("THA")
        )
        assert cp.size == decoded.size
        verify_cosignature(
            decoded.note, bytes.fromhex(witness["signing_public"]), witness["witness_name"]
        )


@pytest.mark.parametrize("case", WITNESS["invalid"], ids=lambda c: c["name"])
def test_invalid_witness_sizes(case: dict[str, Any]) -> None:
    with pytest.raises(IxbError) as err:
        decode_witness_size(bytes.fromhex(case["encoding"]))
    assert err.value.code == case["error"]


_HEX = re.compile(r"(?:[0-9a-f]{2})*")


def _hex_everywhere(value: Any, path: str = "") -> list[str]:
    """Paths of the strings of an intermediate-value field that are not lower-case hex."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _hex_everywhere(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _hex_everywhere(v, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and not _HEX.fullmatch(value) else []


TEXT_FIELDS = {"name", "type", "header", "body", "sealed_keys", "hops"}


def test_every_byte_string_in_envelopes_json_is_lower_case_hex() -> None:
    """SPEC §11: one encoding for bytes. Bodies' byte fields (a receipt's ``for_id``) too."""
    for v in DOC["envelopes"]:
        plain = {k: x for k, x in v.items() if k not in TEXT_FIELDS}
        assert _hex_everywhere(plain) == [], v["name"]
        for s in v["sealed_keys"]:
            assert _hex_everywhere({"key_id": s["key_id"], "sealed": s["sealed"]}) == []
        for h in v["hops"]:
            assert _hex_everywhere({"key_id": h["key_id"], "sig": h["sig"]}) == []
        typ = msgspec.inspect.type_info(MESSAGE_TYPES[v["type"]])
        for where, value in bytes_fields(v["body"], typ) + bytes_fields(
            v["header"], msgspec.inspect.type_info(Header)
        ):
            assert isinstance(value, str) and _HEX.fullmatch(value), (v["name"], where, value)
    receipt = CASES["receipt"]["body"]
    assert len(receipt["for_id"]) == 32  # 16 bytes as hex, not 24 characters of base64
    for p in DOC["parties"].values():
        assert _hex_everywhere({k: x for k, x in p.items() if k != "fingerprints"}) == []


@pytest.mark.parametrize("name", ["THA/HUB", "MYS/HUB"])
def test_hub_key_files_have_no_encryption_field(name: str) -> None:
    """SPEC §3.1: a hub has no X25519 key, and its key file says so by leaving the field out."""
    data = (VECTORS / f"{name.replace('/', '-')}.key").read_bytes()
    doc = json.loads(data)
    assert set(doc["public"]) == {"signing"}
    ident = open_keyfile(data, "ixb test vector passphrase")
    assert ident.public() == IDS[name].public()
    assert ident.encryption is None


def test_agency_key_file_has_both_public_keys() -> None:
    doc = json.loads((VECTORS / "THA-DSI-ATHD.key").read_bytes())
    assert set(doc["public"]) == {"signing", "encryption"}


def test_country_list_vector_both_directions() -> None:
    """SPEC §2: the participant countries are protocols/vectors/countries.json, not only code."""
    doc = json.loads((VECTORS / "countries.json").read_text())
    assert doc == countries_doc()  # encode direction: the file is what the code holds
    codes = doc["codes"]
    assert codes == sorted(set(codes)) and doc["count"] == len(codes) == 249
    for code in codes:  # decode direction: every listed code names a participant …
        assert check_country(code) == code
        assert str(parse_principal(f"{code}/HUB")) == f"{code}/HUB"
    for code in ("XXA", "UTO", "D", "EUE", "QQQ", "tha", "ANT"):  # … and nothing else does
        assert code not in codes
        with pytest.raises(IxbError) as info:
            check_country(code)
        assert info.value.code == "ixb.E_IDENTIFIER"


FEDERATION = json.loads((VECTORS / "federation.json").read_text())


def test_federation_versions_both_directions() -> None:
    seeds = FEDERATION["hubs"]
    for name in ("v1", "v2"):
        version = FEDERATION[name]
        fed = parse_federation_file(version["text"])
        assert render_federation_file(fed) == version["text"]
        assert fed.body().hex() == version["body"]
        assert fed.signing_input().hex() == version["signing_input"]
        assert bytes.fromhex(version["signing_input"]).startswith(b"ixb-federation-v1\x00")
        assert fed.digest() == version["digest"]
        # Ed25519 is deterministic: every signature is rebuilt from the signer's seed
        for stored in version["signatures"]:
            signer = _identity(f"{stored['country']}/HUB", seeds[f"{stored['country']}/HUB"])
            rebuilt = sign_version(fed, signer).signatures[-1]
            assert rebuilt.sig.hex() == stored["sig"]


@pytest.mark.parametrize("case", FEDERATION["cases"], ids=lambda c: c["name"])
def test_federation_successor_cases(case: dict[str, Any]) -> None:
    previous = parse_federation_file(case["previous"])
    new = parse_federation_file(case["file"])
    if case["error"] is None:
        assert list(check_successor(previous, new).signers) == case["signers"]
    else:
        with pytest.raises(IxbError) as err:
            check_successor(previous, new)
        assert err.value.code == case["error"]


def test_federation_key_validity_across_versions() -> None:
    """SPEC §12, Key validity across versions: a replaced hub key during its grace."""
    vec = FEDERATION["key_validity"]
    previous = parse_federation_file(FEDERATION[vec["previous"]]["text"])
    held = parse_federation_file(FEDERATION[vec["held"]]["text"])
    assert vec["grace_ms"] == KEY_GRACE_MS
    trust = held.trust.with_retired(previous.trust, vec["installed_ms"] + vec["grace_ms"])
    seen = set()
    for case in vec["cases"]:
        found = trust.signer(bytes.fromhex(case["key_id"]), case["now_ms"])
        assert (None if found is None else found[0]) == case["country"], case["name"]
        seen.add(case["country"])
    assert None in seen and "MYS" in seen  # both outcomes are exercised
    for country, keys in vec["keys_ever"].items():
        assert [k.hex() for k in trust.hub_keys_ever(country)] == keys
    assert len(vec["keys_ever"]["MYS"]) == 2


def test_the_overdue_reminder_vector_follows_the_reminder_rule() -> None:
    """SPEC §5 rule 5: the reminder is signed by the hub of its addressee's own country."""
    v = CASES["receipt.overdue"]
    verified = verify_envelope(bytes.fromhex(v["envelope"]), RING, NOW)
    (addressee,) = verified.header.recipient_principals
    opened = open_envelope(verified, IDS[str(addressee)])
    assert isinstance(opened.body, Receipt)
    assert opened.body.status is ReceiptStatus.OVERDUE
    assert opened.body.for_id == bytes.fromhex(CASES["person.query"]["header"]["id"])
    signer = verified.header.sender_principal
    check_receipt_signer(opened.body, signer, in_reply_to=verified.header.in_reply_to)
    check_reminder(opened.body, signer, addressee)
    with pytest.raises(IxbError, match="addressee's country"):
        check_reminder(opened.body, signer, parse_agency("MYS/RMP-ATIPSOM"))


LOOKUP: dict[str, Any] = json.loads((VECTORS / "lookup.json").read_text())


@pytest.mark.parametrize("case", LOOKUP["receipts"], ids=lambda c: c["name"])
def test_lookup_receipts_both_directions(case: dict[str, Any]) -> None:
    raw = case["body"]
    body = Receipt(
        **{**raw, "for_id": bytes.fromhex(raw["for_id"]), "status": ReceiptStatus(raw["status"])}
    )
    encoding = bytes.fromhex(case["encoding"])
    assert encode_body(body) == encoding
    assert decode_body(Receipt.TYPE, encoding) == body


@pytest.mark.parametrize("case", LOOKUP["invalid"], ids=lambda c: c["name"])
def test_invalid_lookup_receipts(case: dict[str, Any]) -> None:
    with pytest.raises(IxbError) as err:
        decode_body(Receipt.TYPE, bytes.fromhex(case["encoding"]))
    assert err.value.code == case["error"]


@pytest.mark.parametrize("case", LOOKUP["signers"], ids=lambda c: f"{c['status']}-{c['signer']}")
def test_who_may_state_a_lookups_receipt(case: dict[str, Any]) -> None:
    signer = parse_principal(case["signer"])
    receipt = Receipt(
        for_id=bytes(16),
        status=ReceiptStatus(case["status"]),
        by=case["signer"],
        at_ms=LOOKUP["now_ms"],
        due_ms=LOOKUP["now_ms"] + 1,
    )
    sender = parse_principal(case["original_sender"])
    recipients = [parse_principal(r) for r in case["original_recipients"]]
    if case["error"] is None:
        check_receipt_statement(receipt, signer, sender, recipients)
        return
    with pytest.raises(IxbError) as err:
        check_receipt_statement(receipt, signer, sender, recipients)
    assert err.value.code == case["error"]
