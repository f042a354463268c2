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

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nacl.encoding
import nacl.hash
from nacl.public import PrivateKey, SealedBox

from protocols import wire
from protocols.audit import WitnessSize, encode_witness_size
from protocols.countries import ISO3166_ALPHA3
from protocols.envelope import (
    Envelope,
    Header,
    SealedKey,
    add_hop,
    assemble,
    decode_envelope,
    encrypt_body,
    header_ad,
    key_commitment,
    seal_content_key,
)
from protocols.examples import example_bodies, example_victim_alert
from protocols.federation import (
    KEY_GRACE_MS,
    FederationFile,
    FederationSignature,
    TrustAnchors,
    propose,
    render_federation_file,
    sign_version,
)
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import hub_of, new_message_id, parse_agency
from protocols.keys import (
    EncryptionKeyPair,
    Identity,
    KdfProfile,
    SigningKeyPair,
    seal_keyfile,
)
from protocols.limits import MS_PER_DAY, MS_PER_HOUR
from protocols.messages import REPLY_TO, Receipt, ReceiptStatus, encode_body
from tests.gen_checkpoint import build_ixb

T = TypeVar("T")
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
    # THA's hub reminds its requester that the person query is overdue (SPEC §5, §6)
    ("receipt", "THA/HUB", ["THA/DSI-ATHD"], {"name": "receipt.overdue"}),
]
"""Each case is named for its type, unless ``name`` in its extras says otherwise."""


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


def hex_json(value: Any) -> Any:
    """JSON of a wire value with every byte string as lower-case hex (SPEC §11)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: hex_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hex_json(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return hex_json(msgspec.to_builtins(value, builtin_types=(bytes,)))
    return value


def _unhex(value: Any, t: msgspec.inspect.Type) -> Any:
    if isinstance(t, msgspec.inspect.BytesType) and isinstance(value, str):
        return bytes.fromhex(value)
    if isinstance(t, msgspec.inspect.StructType) and isinstance(value, dict):
        types = {f.encode_name: f.type for f in t.fields}
        return {k: _unhex(v, types[k]) if k in types else v for k, v in value.items()}
    if isinstance(t, msgspec.inspect.CollectionType) and isinstance(value, list):
        return [_unhex(v, t.item_type) for v in value]
    if isinstance(t, msgspec.inspect.UnionType):
        for member in t.types:
            if not isinstance(member, msgspec.inspect.NoneType | msgspec.inspect.StrType):
                value = _unhex(value, member)
    return value


def from_hex_json(value: Any, typ: type[T]) -> T:
    """The inverse of :func:`hex_json` for a value of ``typ``."""
    return msgspec.convert(_unhex(value, msgspec.inspect.type_info(typ)), typ)


def bytes_fields(value: Any, t: msgspec.inspect.Type, path: str = "") -> list[tuple[str, Any]]:
    """Every value of ``value`` (JSON) that ``t`` types as a byte string, with its path."""
    if isinstance(t, msgspec.inspect.BytesType):
        return [(path, value)]
    if isinstance(t, msgspec.inspect.StructType) and isinstance(value, dict):
        types = {f.encode_name: f.type for f in t.fields}
        return [x for k, v in value.items() for x in bytes_fields(v, types[k], f"{path}.{k}")]
    if isinstance(t, msgspec.inspect.CollectionType) and isinstance(value, list):
        return [
            x for i, v in enumerate(value) for x in bytes_fields(v, t.item_type, f"{path}[{i}]")
        ]
    if isinstance(t, msgspec.inspect.UnionType) and value is not None:
        return [x for m in t.types for x in bytes_fields(value, m, path)]
    return []


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
        "body": hex_json(body),
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


@functools.cache
def _stored_sealed_keys() -> dict[tuple[str, str], bytes]:
    path = VECTORS / "envelopes.json"
    if not path.exists():
        return {}
    return {
        (e["name"], s["recipient"]): bytes.fromhex(s["sealed"])
        for e in json.loads(path.read_text())["envelopes"]
        for s in e["sealed_keys"]
    }


def _sealed(name: str, content_key: bytes, recipient: Identity) -> SealedKey:
    """The stored sealed box if it still opens to ``content_key`` (libsodium draws a new
    ephemeral key per box, so re-sealing would change every vector), else a new one."""
    fresh = seal_content_key(content_key, recipient.public())
    stored = _stored_sealed_keys().get((name, str(recipient.principal)))
    assert recipient.encryption is not None
    box = SealedBox(PrivateKey(bytes(recipient.encryption.private_key)))
    if stored is None or box.decrypt(stored) != content_key:
        return fresh
    return msgspec.structs.replace(fresh, sealed=stored)


def build() -> dict[str, Any]:
    ids = {n: identity(n) for n in AGENCIES + [f"{c}/HUB" for c in HUBS]}
    bodies = example_bodies(NOW_MS)
    envelopes: list[dict[str, Any]] = []
    previous: dict[str, bytes] = {}
    for type_name, sender, to, scenario_extras in SCENARIO:
        extras = dict(scenario_extras)
        name = extras.pop("name", type_name)
        body = bodies[type_name]
        mid = new_message_id(NOW_MS, derive(f"{name}/id", 10))
        if type_name in REPLY_TO:
            extras["in_reply_to"] = previous[REPLY_TO[type_name]]
        elif name == "receipt.overdue":
            request = previous["person.query"]
            extras["in_reply_to"] = request
            body = Receipt(
                for_id=request,
                status=ReceiptStatus.OVERDUE,
                by=sender,
                at_ms=NOW_MS,
                due_ms=NOW_MS - MS_PER_HOUR,
                detail="person.query was due an hour before",
            )
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
        previous[name] = mid
        content_key, nonce = derive(f"{name}/key"), derive(f"{name}/nonce", 24)
        ct = encrypt_body(body, content_key, nonce, wire.encode(header))
        sealed = [_sealed(name, content_key, ids[r]) for r in to]
        env = decode_envelope(assemble(header, sealed, ct, ids[sender].signing))
        if type_name == "alert":
            env = add_hop(env, ids["THA/HUB"], NOW_MS + 3)
            env = add_hop(env, ids["MYS/HUB"], NOW_MS + 9)
        envelopes.append(envelope_json(name, env, content_key=content_key, nonce=nonce, body=body))
    return {
        "about": "ixb envelope test vectors; see protocols/SPEC.md §11",
        "now_ms": NOW_MS,
        "parties": {n: party_json(i) for n, i in ids.items()},
        "envelopes": envelopes,
        "invalid": invalid_vectors(bytes.fromhex(envelopes[0]["envelope"])),
        "victim_refused": victim_refused(ids),
    }


def victim_refused(ids: dict[str, Identity]) -> dict[str, Any]:
    """An H0 alert naming a victim, validly signed: its recipient must refuse to open it
    with ``ixb.E_HANDLING`` (SPEC §6). Built below :func:`seal_envelope`, which refuses it."""
    name, sender, to = "alert.victim.H0", "THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"]
    body = example_victim_alert(NOW_MS)
    header = Header(
        id=new_message_id(NOW_MS, derive(f"{name}/id", 10)),
        type=body.TYPE,
        sender=sender,
        sender_key=ids[sender].signing.key_id,
        recipients=to,
        created=NOW_MS,
        expires=NOW_MS + MS_PER_DAY,
        handling=HandlingCode.H0,
        priority=Priority.URGENT,
    )
    content_key, nonce = derive(f"{name}/key"), derive(f"{name}/nonce", 24)
    ct = encrypt_body(body, content_key, nonce, wire.encode(header))
    sealed = [_sealed(name, content_key, ids[r]) for r in to]
    env = decode_envelope(assemble(header, sealed, ct, ids[sender].signing))
    doc = envelope_json(name, env, content_key=content_key, nonce=nonce, body=body)
    return {**doc, "error": "ixb.E_HANDLING"}


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
    cases += step4_vectors(alert)
    return [{"name": n, "envelope": d.hex(), "error": c} for n, d, c in cases]


def build_witness() -> dict[str, Any]:
    """protocols/vectors/witness.json: a witness's conflict answer (SPEC §13.9).

    From checkpoint.json's ``THA`` log: the size-6 checkpoint with ``MYS/HUB``'s
    cosignature line (Ed25519: every byte reproducible).
    """
    log = json.loads((VECTORS / "checkpoint.json").read_text())["ixb"]["log"]
    note = log["checkpoints"][1]["note"] + log["cosignatures"][0]["line"]
    answers = [("no checkpoint cosigned yet", WitnessSize(size=0))]
    answers.append(("size 6, cosigned by MYS/HUB", WitnessSize(size=6, note=note.encode())))
    return {
        "about": "Witness size answers (Ixb-Kind: witness-size, SPEC §13.9), canonical"
        " MessagePack in hex. The origin is THA (checkpoint.json's log), the witness MYS/HUB.",
        "origin": "THA/HUB",
        "witness": "MYS/HUB",
        "answers": [
            {
                "name": name,
                "size": a.size,
                "note": None if a.note is None else a.note.decode(),
                "encoding": encode_witness_size(a).hex(),
            }
            for name, a in answers
        ],
        "invalid": [
            {
                "name": "a note with size 0",
                "encoding": "82a473697a6500a46e6f7465c40178",
                "error": "ixb.E_SCHEMA",
            },
            {
                "name": "size above 0 without its note",
                "encoding": "81a473697a6506",
                "error": "ixb.E_SCHEMA",
            },
            {"name": "an unknown key", "encoding": "82a473697a6500a16100", "error": "ixb.E_SCHEMA"},
            {
                "name": "size in a long form",
                "encoding": "81a473697a65cc00",
                "error": "ixb.E_NONCANONICAL",
            },
        ],
    }


def step4_vectors(alert: bytes) -> list[tuple[str, bytes, str]]:
    """SPEC §4.7 step 4: one envelope per code, and one per rule of precedence.

    The checks run before the signature's, so the parts are edited without re-signing.
    """
    outer = msgspec.msgpack.decode(alert)
    hdr = msgspec.msgpack.decode(outer["hdr"])
    keys = msgspec.msgpack.decode(outer["keys"])
    enc = msgspec.msgpack.encode

    def with_hdr(raw: bytes, **more: Any) -> bytes:
        return enc({**outer, "hdr": raw, **more})

    def with_fields(**fields: Any) -> bytes:
        return with_hdr(enc({**hdr, **fields}))

    bad_name = ["MYS/rmp-atipsom", *hdr["recipients"][1:]]
    wrong_type = enc({**hdr, "created": str(hdr["created"])})
    many = [f"MYS/A{i:02d}" for i in range(65)]
    hop = outer["hops"][0]
    return [
        # one of each code
        ("header not MessagePack", with_hdr(b"\xc1"), "ixb.E_MALFORMED"),
        ("header field of the wrong type", with_hdr(wrong_type), "ixb.E_SCHEMA"),
        (
            "recipient name outside the grammar",
            with_fields(recipients=bad_name),
            "ixb.E_IDENTIFIER",
        ),
        ("sender of no country", with_fields(sender="QQQ/DSI-ATHD"), "ixb.E_IDENTIFIER"),
        ("header keys reordered", with_hdr(enc(dict(reversed(hdr.items())))), "ixb.E_NONCANONICAL"),
        ("65 recipients (limit 64)", with_fields(recipients=many), "ixb.E_TOO_LARGE"),
        ("9 hops (limit 8)", enc({**outer, "hops": [hop] * 9}), "ixb.E_TOO_LARGE"),
        ("17 hops (protocol maximum 16)", enc({**outer, "hops": [hop] * 17}), "ixb.E_SCHEMA"),
        (
            "case reference with a space (not a reference: §4.2)",
            with_fields(case_ref="SMITH JOHN"),
            "ixb.E_SCHEMA",
        ),
        (
            "H3 restriction with an escape sequence",
            with_fields(handling="H3", restriction="use only \x1b[31mhere"),
            "ixb.E_SCHEMA",
        ),
        ("keys not MessagePack", enc({**outer, "keys": b"\xc1"}), "ixb.E_MALFORMED"),
        ("keys miss a recipient", enc({**outer, "keys": enc(keys[:1])}), "ixb.E_SCHEMA"),
        ("ciphertext of 71 bytes", enc({**outer, "ct": outer["ct"][:71]}), "ixb.E_MALFORMED"),
        # precedence inside one structure: MALFORMED, then SCHEMA, then IDENTIFIER, then
        # the other rules (E_SCHEMA), then NONCANONICAL
        ("header wrongly typed and truncated", with_hdr(wrong_type[:-1]), "ixb.E_MALFORMED"),
        (
            "header wrongly typed and naming a bad recipient",
            with_hdr(enc({**hdr, "created": "0", "recipients": bad_name})),
            "ixb.E_SCHEMA",
        ),
        (
            "bad recipient and an unknown message type",
            with_fields(recipients=bad_name, type="gossip"),
            "ixb.E_IDENTIFIER",
        ),
        (
            "bad recipient in a header with reordered keys",
            with_hdr(enc(dict(reversed({**hdr, "recipients": bad_name}.items())))),
            "ixb.E_IDENTIFIER",
        ),
        (
            "recipients repeat in a header with reordered keys",
            with_hdr(enc(dict(reversed({**hdr, "recipients": hdr["recipients"] * 2}.items())))),
            "ixb.E_SCHEMA",
        ),
        # precedence between structures: version, outer, header, limits, keys, ciphertext
        ("version 2 with a bad header", enc({**outer, "v": 2, "hdr": b"\xc1"}), "ixb.E_VERSION"),
        (
            "unknown outer field and a bad header",
            enc({**outer, "hdr": b"\xc1", "x": 0}),
            "ixb.E_SCHEMA",
        ),
        (
            "bad header and keys not MessagePack",
            with_hdr(enc({**hdr, "recipients": bad_name}), keys=b"\xc1"),
            "ixb.E_IDENTIFIER",
        ),
        (
            "65 recipients and keys that do not match",
            with_hdr(enc({**hdr, "recipients": many}), keys=b"\xc1"),
            "ixb.E_TOO_LARGE",
        ),
        (
            "keys that do not match and a ciphertext of 71 bytes",
            enc({**outer, "keys": enc(keys[:1]), "ct": outer["ct"][:71]}),
            "ixb.E_SCHEMA",
        ),
    ]


def write_envelopes() -> None:
    doc = build()
    (VECTORS / "envelopes.json").write_text(json.dumps(doc, indent=1) + "\n")
    alert = bytes.fromhex(doc["envelopes"][0]["envelope"])
    (VECTORS / "alert.ixb").write_bytes(alert)


def write_keyfiles() -> None:
    """The key files, each rewritten only if its clear part would change (salt and
    nonce are random, so an unchanged file is kept as it is)."""
    for name in ("THA/DSI-ATHD", "THA/HUB", "MYS/HUB"):
        path = VECTORS / f"{name.replace('/', '-')}.key"
        new = seal_keyfile(identity(name), KEYFILE_PASSPHRASE, KdfProfile.INTERACTIVE)

        def clear(data: bytes) -> dict[str, Any]:
            doc: dict[str, Any] = json.loads(data)
            return {k: v for k, v in doc.items() if k not in ("kdf", "box")}

        if not path.exists() or clear(path.read_bytes()) != clear(new):
            path.write_bytes(new)


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


def write_witness() -> None:
    (VECTORS / "witness.json").write_text(json.dumps(build_witness(), indent=1) + "\n")


FEDERATION_HUBS = ("THA/HUB", "MYS/HUB", "MMR/HUB")


def federation_identities() -> dict[str, Identity]:
    """The three members' hubs (as in envelopes.json), MYS's next key, LAO (not a member)."""
    ids = {name: identity(name) for name in FEDERATION_HUBS}
    ids["MYS/HUB rotated"] = Identity(
        hub_of("MYS"), SigningKeyPair(derive("MYS/HUB/rotated/ed25519")), None
    )
    ids["LAO/HUB"] = identity("LAO/HUB")
    return ids


def build_federation() -> dict[str, Any]:
    """SPEC §12, Federation file versions: a root, a successor, and what a hub refuses."""
    ids = federation_identities()
    v1 = FederationFile(
        TrustAnchors("ixb-demo", {n[:3]: ids[n].signing.public for n in FEDERATION_HUBS}),
        1,
        2,
    )
    v2 = propose(
        v1,
        keys={"MYS": ids["MYS/HUB rotated"].signing.public},
        add={"LAO": ids["LAO/HUB"].signing.public},
    )
    v2_ok = sign_version(sign_version(v2, ids["THA/HUB"]), ids["MMR/HUB"])
    v2_one = sign_version(v2, ids["THA/HUB"])
    v2_lao = sign_version(v2_one, ids["LAO/HUB"])
    v2_dup = FederationFile(v2.trust, 2, 2, v2_one.signatures * 2)
    mmr_sig = sign_version(v2, ids["MMR/HUB"]).signatures[0]
    bad = FederationSignature(
        "MMR", mmr_sig.sig[:10] + bytes([mmr_sig.sig[10] ^ 1]) + mmr_sig.sig[11:]
    )
    v2_bad = FederationFile(v2.trust, 2, 2, (*v2_one.signatures, bad))
    v2_other = sign_version(sign_version(propose(v1, threshold=3), ids["THA/HUB"]), ids["MMR/HUB"])
    v2_more = sign_version(v2_ok, ids["MYS/HUB"])
    v3 = sign_version(sign_version(propose(v2, remove=["LAO"]), ids["THA/HUB"]), ids["MMR/HUB"])

    def version_json(fed: FederationFile) -> dict[str, Any]:
        return {
            "text": render_federation_file(fed),
            "body": fed.body().hex(),
            "signing_input": fed.signing_input().hex(),
            "digest": fed.digest(),
            "signatures": [{"country": s.country, "sig": s.sig.hex()} for s in fed.signatures],
        }

    def case(name: str, prev: FederationFile, new: FederationFile, error: str | None,
             signers: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        return {
            "name": name,
            "previous": render_federation_file(prev),
            "file": render_federation_file(new),
            "error": error,
            "signers": signers,
        }

    installed = 1_900_000_000_000
    held = v2_ok.trust.with_retired(v1.trust, installed + KEY_GRACE_MS)

    def validity(name: str, signer: str, now_ms: int) -> dict[str, Any]:
        kid = ids[signer].signing.key_id
        found = held.signer(kid, now_ms)
        return {
            "name": name,
            "key_id": kid.hex(),
            "now_ms": now_ms,
            "country": None if found is None else found[0],
        }

    end = installed + KEY_GRACE_MS
    return {
        "hubs": {name: party_json(ident) for name, ident in ids.items()},
        "v1": version_json(v1),
        "v2": version_json(v2_ok),
        "key_validity": {
            "previous": "v1",
            "held": "v2",
            "installed_ms": installed,
            "grace_ms": KEY_GRACE_MS,
            "cases": [
                validity("new-key", "MYS/HUB rotated", end + 5),
                validity("replaced-key-at-install", "MYS/HUB", installed),
                validity("replaced-key-last-ms-of-grace", "MYS/HUB", end - 1),
                validity("replaced-key-after-grace", "MYS/HUB", end),
                validity("unchanged-key", "THA/HUB", end + 5),
                validity("added-member", "LAO/HUB", installed),
            ],
            "keys_ever": {c: [k.hex() for k in held.hub_keys_ever(c)] for c in sorted(held.hubs)},
        },
        "cases": [
            case("valid-v2-signed-2-of-3", v1, v2_ok, None, ["MMR", "THA"]),
            case("redelivery-more-signatures", v2_ok, v2_more, None, []),
            case("too-few-signatures", v1, v2_one, "ixb.E_SIGNATURE"),
            case("signature-by-non-member", v1, v2_lao, "ixb.E_SIGNATURE"),
            case("duplicate-signer-counts-once", v1, v2_dup, "ixb.E_SIGNATURE"),
            case("signature-does-not-verify", v1, v2_bad, "ixb.E_SIGNATURE"),
            case("rollback", v2_ok, v1, "ixb.E_ROLLBACK"),
            case("same-version-other-content", v2_ok, v2_other, "ixb.E_ROLLBACK"),
            case("skipped-version", v1, v3, "ixb.E_CONFIG"),
        ],
    }


def write_federation() -> None:
    (VECTORS / "federation.json").write_text(json.dumps(build_federation(), indent=1) + "\n")


def build_lookup() -> dict[str, Any]:
    """Receipt bodies of the synchronous path (SPEC §14): what a requester may receive."""
    request_id = new_message_id(NOW_MS - 1000, derive("lookup/id", 10))
    valid = {
        "queued": Receipt(
            for_id=request_id,
            status=ReceiptStatus.QUEUED,
            by="MYS/HUB",
            at_ms=NOW_MS,
            detail="queued at MYS/IMMIGRATION",
            due_ms=NOW_MS - 1000 + 8 * 3600 * 1000,
        ),
        "busy": Receipt(
            for_id=request_id,
            status=ReceiptStatus.REJECTED,
            by="THA/HUB",
            at_ms=NOW_MS,
            code="ixb.E_BUSY",
            detail="THA/HUB has 512 lookups in flight; retry",
        ),
    }
    fields = {
        "for_id": request_id,
        "status": "queued",
        "by": "MYS/HUB",
        "at_ms": NOW_MS,
    }
    invalid = [
        ("queued without due_ms", fields, "ixb.E_SCHEMA"),
        (
            "due_ms on a delivered receipt",
            {**fields, "status": "delivered", "due_ms": NOW_MS},
            "ixb.E_SCHEMA",
        ),
    ]
    return {
        "about": "receipt bodies of the synchronous path; see protocols/SPEC.md §5 and §14",
        "now_ms": NOW_MS,
        "receipts": [
            {"name": name, "body": _hex_ids(body), "encoding": encode_body(body).hex()}
            for name, body in valid.items()
        ],
        "invalid": [
            {"name": name, "encoding": wire.encode(raw).hex(), "error": code}
            for name, raw, code in invalid
        ],
        "signers": [
            {
                "status": "queued",
                "signer": signer,
                "original_sender": "THA/IMMIGRATION",
                "original_recipients": ["MYS/IMMIGRATION"],
                "error": error,
            }
            for signer, error in (
                ("MYS/HUB", None),
                ("THA/HUB", None),
                ("MMR/HUB", "ixb.E_UNAUTHORISED"),
                ("MYS/IMMIGRATION", "ixb.E_UNAUTHORISED"),
            )
        ],
    }


def _hex_ids(body: Receipt) -> dict[str, Any]:
    """The body's fields as JSON: message ids as lower-case hex, absent fields left out."""
    out: dict[str, Any] = msgspec.to_builtins(body)
    out["for_id"] = body.for_id.hex()
    out.pop("also", None)
    return out


def write_lookup() -> None:
    (VECTORS / "lookup.json").write_text(json.dumps(build_lookup(), indent=1) + "\n")


PARTS: dict[str, Callable[[], None]] = {
    "envelopes": write_envelopes,
    "keyfiles": write_keyfiles,
    "checkpoint": write_checkpoint,
    "witness": write_witness,  # from checkpoint.json's log: after it
    "countries": write_countries,
    "federation": write_federation,
    "lookup": write_lookup,
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
