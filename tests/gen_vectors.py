"""Generate the vectors in protocols/vectors/: ``python -m tests.gen_vectors [PART ...]``.

PARTs (default: all): ``envelopes`` (envelopes.json and alert.ixb),
``keyfiles`` (the three ``*.key`` files), ``checkpoint`` (the ``ixb`` part of
checkpoint.json, :mod:`tests.gen_checkpoint`), ``countries`` (countries.json).
directory.json is ``python -m tests.test_directory``'s.

Keys, message ids, content keys and nonces are derived from fixed labels, so
every field but the sealed boxes (whose ephemeral keys libsodium draws) is
reproducible; the sealed boxes are stored and checked by unsealing them.
Run it only when the format changes on purpose: tests check the stored file
in both directions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import nacl.encoding
import nacl.hash

from protocols import wire
from protocols.countries import ISO3166_ALPHA3
from protocols.envelope import (
    Envelope,
    Header,
    add_hop,
    assemble,
    decode_envelope,
    encrypt_body,
    header_ad,
    key_commitment,
    seal_content_key,
)
from protocols.examples import example_bodies
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import hub_of, new_message_id, parse_agency
from protocols.keys import (
    EncryptionKeyPair,
    Identity,
    KdfProfile,
    SigningKeyPair,
    seal_keyfile,
)
from protocols.limits import MS_PER_DAY
from protocols.messages import REPLY_TO, encode_body
from tests.gen_checkpoint import build_ixb

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "vectors"
NOW_MS = 1_795_000_000_000
KEYFILE_PASSPHRASE = "ixb test vector passphrase"
AGENCIES = [
    "THA/DSI-ATHD",
    "THA/IMMIGRATION",
    "MYS/IMMIGRATION",
    "MYS/RMP-ATIPSOM",
    "MMR/MOHA-ATTU",
    "THA/OAG",
    "MYS/AGC",
]
HUBS = ["THA", "MYS", "MMR"]

# (type, sender, recipients, header extras)
SCENARIO: list[tuple[str, str, list[str], dict[str, Any]]] = [
    (
        "alert",
        "THA/DSI-ATHD",
        ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"],
        {"handling": HandlingCode.H2, "priority": Priority.URGENT, "case_ref": "THA-DSI-2026-0412"},
    ),
    ("doc.verify.request", "THA/IMMIGRATION", ["MYS/IMMIGRATION"], {"priority": Priority.URGENT}),
    ("doc.verify.response", "MYS/IMMIGRATION", ["THA/IMMIGRATION"], {}),
    (
        "person.query",
        "THA/DSI-ATHD",
        ["MMR/MOHA-ATTU"],
        {"handling": HandlingCode.H3, "restriction": "no use for immigration decisions"},
    ),
    ("person.result", "MMR/MOHA-ATTU", ["THA/DSI-ATHD"], {}),
    ("followup.request", "THA/DSI-ATHD", ["MMR/MOHA-ATTU"], {"priority": Priority.HIGH}),
    ("followup.decision", "MMR/MOHA-ATTU", ["THA/DSI-ATHD"], {"handling": HandlingCode.H1}),
    (
        "mla.request",
        "THA/OAG",
        ["MYS/AGC"],
        {"priority": Priority.HIGH, "case_ref": "THA-OAG-MLA-2026-031"},
    ),
    ("mla.status", "MYS/AGC", ["THA/OAG"], {}),
    ("receipt", "MYS/RMP-ATIPSOM", ["THA/DSI-ATHD"], {}),
]


def derive(label: str, size: int = 32) -> bytes:
    return nacl.hash.blake2b(
        b"ixb-test-vector\x00" + label.encode(), digest_size=size, encoder=nacl.encoding.RawEncoder
    )


def identity(name: str) -> Identity:
    principal = hub_of(name[:3]) if name.endswith("/HUB") else parse_agency(name)
    enc = None if principal.is_hub else EncryptionKeyPair(derive(f"{name}/x25519"))
    return Identity(principal, SigningKeyPair(derive(f"{name}/ed25519")), enc)


def party_json(ident: Identity) -> dict[str, Any]:
    pub = ident.public()
    out: dict[str, Any] = {
        "signing_seed": ident.signing._seed().hex(),
        "signing_public": pub.signing.hex(),
        "signing_key_id": pub.signing_key_id.hex(),
        "fingerprints": pub.fingerprints(),
    }
    if ident.encryption is not None:
        out["encryption_secret"] = bytes(ident.encryption.private_key).hex()
        out["encryption_public"] = ident.encryption.public.hex()
        out["encryption_key_id"] = ident.encryption.key_id.hex()
    return out


def header_json(h: Header) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(h)
    for field in ("id", "sender_key", "in_reply_to"):
        if field in out:
            out[field] = getattr(h, field).hex()
    return out


def envelope_json(
    name: str, env: Envelope, *, content_key: bytes, nonce: bytes, body: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "type": env.header.type,
        "header": header_json(env.header),
        "header_msgpack": env.hdr.hex(),
        "body": msgspec.to_builtins(body),
        "body_msgpack": encode_body(body).hex(),
        "content_key": content_key.hex(),
        "nonce": nonce.hex(),
        "commitment": key_commitment(content_key).hex(),
        "ad": header_ad(env.hdr).hex(),
        "sealed_keys": [
            {"recipient": s.recipient, "key_id": s.key_id.hex(), "sealed": s.sealed.hex()}
            for s in env.sealed_keys
        ],
        "keys_msgpack": env.keys.hex(),
        "ct": env.ct.hex(),
        "digest": env.digest.hex(),
        "signature": env.sig.hex(),
        "payload_hash": env.payload_hash.hex(),
        "hops": [
            {"hub": h.hub, "key_id": h.key_id.hex(), "at": h.at, "sig": h.sig.hex()}
            for h in env.hops
        ],
        "envelope": env.to_bytes().hex(),
    }


def build() -> dict[str, Any]:
    ids = {n: identity(n) for n in AGENCIES + [f"{c}/HUB" for c in HUBS]}
    bodies = example_bodies(NOW_MS)
    envelopes: list[dict[str, Any]] = []
    previous: dict[str, bytes] = {}
    for type_name, sender, to, scenario_extras in SCENARIO:
        body = bodies[type_name]
        mid = new_message_id(NOW_MS, derive(f"{type_name}/id", 10))
        extras = dict(scenario_extras)
        if type_name in REPLY_TO:
            extras["in_reply_to"] = previous[REPLY_TO[type_name]]
        elif type_name == "receipt":
            extras["in_reply_to"] = previous["alert"]
        header = Header(
            id=mid,
            type=type_name,
            sender=sender,
            sender_key=ids[sender].signing.key_id,
            recipients=to,
            created=NOW_MS,
            expires=NOW_MS + MS_PER_DAY,
            handling=extras.pop("handling", HandlingCode.H0),
            priority=extras.pop("priority", Priority.NORMAL),
            **extras,
        )
        previous[type_name] = mid
        content_key, nonce = derive(f"{type_name}/key"), derive(f"{type_name}/nonce", 24)
        ct = encrypt_body(body, content_key, nonce, wire.encode(header))
        sealed = [seal_content_key(content_key, ids[r].public()) for r in to]
        env = decode_envelope(assemble(header, sealed, ct, ids[sender].signing))
        if type_name == "alert":
            env = add_hop(env, ids["THA/HUB"], NOW_MS + 3)
            env = add_hop(env, ids["MYS/HUB"], NOW_MS + 9)
        envelopes.append(
            envelope_json(type_name, env, content_key=content_key, nonce=nonce, body=body)
        )
    return {
        "about": "ixb envelope test vectors; see protocols/SPEC.md §11",
        "now_ms": NOW_MS,
        "parties": {n: party_json(i) for n, i in ids.items()},
        "envelopes": envelopes,
        "invalid": invalid_vectors(bytes.fromhex(envelopes[0]["envelope"])),
    }


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def invalid_vectors(alert: bytes) -> list[dict[str, Any]]:
    """Bad envelopes with the code a conforming receiver must answer (at ``now_ms``)."""
    env = decode_envelope(alert)
    outer = msgspec.msgpack.decode(alert)
    cases: list[tuple[str, bytes, str]] = [
        ("empty", b"", "ixb.E_MALFORMED"),
        ("not msgpack", b"\xc1", "ixb.E_MALFORMED"),
        ("truncated", alert[:-1], "ixb.E_MALFORMED"),
        ("version 2", msgspec.msgpack.encode({**outer, "v": 2}), "ixb.E_VERSION"),
        (
            "reordered outer keys",
            msgspec.msgpack.encode(dict(reversed(outer.items()))),
            "ixb.E_NONCANONICAL",
        ),
        ("unknown outer field", msgspec.msgpack.encode({**outer, "x": 0}), "ixb.E_SCHEMA"),
        (
            "signature bit flipped",
            msgspec.msgpack.encode({**outer, "sig": _flip(env.sig, 0)}),
            "ixb.E_SIGNATURE",
        ),
        (
            "ciphertext bit flipped",
            msgspec.msgpack.encode({**outer, "ct": _flip(env.ct, 40)}),
            "ixb.E_SIGNATURE",
        ),
        (
            "hop signature bit flipped",
            msgspec.msgpack.encode(
                {
                    **outer,
                    "hops": [[*outer["hops"][0][:3], _flip(env.hops[0].sig, 5)], outer["hops"][1]],
                }
            ),
            "ixb.E_SIGNATURE",
        ),
    ]
    return [{"name": n, "envelope": d.hex(), "error": c} for n, d, c in cases]


def write_envelopes() -> None:
    doc = build()
    (VECTORS / "envelopes.json").write_text(json.dumps(doc, indent=1) + "\n")
    alert = bytes.fromhex(doc["envelopes"][0]["envelope"])
    (VECTORS / "alert.ixb").write_bytes(alert)


def write_keyfiles() -> None:
    keyfile = seal_keyfile(identity("THA/DSI-ATHD"), KEYFILE_PASSPHRASE, KdfProfile.INTERACTIVE)
    (VECTORS / "THA-DSI-ATHD.key").write_bytes(keyfile)
    for hub in ("THA", "MYS"):
        hub_file = seal_keyfile(identity(f"{hub}/HUB"), KEYFILE_PASSPHRASE, KdfProfile.INTERACTIVE)
        (VECTORS / f"{hub}-HUB.key").write_bytes(hub_file)


def write_checkpoint() -> None:
    path = VECTORS / "checkpoint.json"
    doc = json.loads(path.read_text())
    doc["ixb"] = build_ixb()
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def countries_doc() -> dict[str, Any]:
    return {
        "about": (
            "The participant country codes of SPEC §2: the officially assigned ISO 3166-1 "
            "alpha-3 codes, in ascending order. An id whose country is not listed is "
            "ixb.E_IDENTIFIER. MRZs accept ICAO 9303's extra codes on top (§7)."
        ),
        "count": len(ISO3166_ALPHA3),
        "codes": sorted(ISO3166_ALPHA3),
    }


def write_countries() -> None:
    (VECTORS / "countries.json").write_text(json.dumps(countries_doc(), indent=1) + "\n")


PARTS: dict[str, Callable[[], None]] = {
    "envelopes": write_envelopes,
    "keyfiles": write_keyfiles,
    "checkpoint": write_checkpoint,
    "countries": write_countries,
}


def main(argv: list[str] | None = None) -> None:
    parts = sys.argv[1:] if argv is None else argv
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {sorted(PARTS)}")
    VECTORS.mkdir(exist_ok=True)
    for name in parts or PARTS:
        PARTS[name]()


if __name__ == "__main__":
    main()
