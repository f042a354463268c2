"""ixb's own vectors in protocols/vectors/checkpoint.json (its ``ixb`` part; SPEC §13).

Built from fixed seeds and entry fields only (Ed25519 is deterministic), so
``python -m tests.gen_vectors`` rewrites them byte for byte and
``tests/test_checkpoint.py`` checks the stored file is what :func:`build_ixb`
makes. The ``published`` part of the file is transcribed from other projects
and never regenerated.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from protocols import merkle
from protocols.audit import AuditEntry, AuditEvent, encode_entry
from protocols.checkpoint import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    cosign,
    log_origin,
    new_checkpoint,
    note_key_id,
    sign_checkpoint,
    sign_note,
    verifier_key,
    witness_name,
)
from protocols.handling import HandlingCode
from protocols.identifiers import hub_of
from protocols.keys import Identity, SigningKeyPair

T0 = 1_795_000_000_000
MSG_ALERT = "cd6ba249496ae09fe1212be8d7d456e0"
MSG_QUERY = "2e2de1c6a5cc4c480a2b86642e07cf97"
PAYLOAD = "06941217b81ce061435bbe75851549d827417896dde7ce24cd7e14fd36065ce5"
_ALERT = {
    "msg_id": MSG_ALERT,
    "type": "alert",
    "sender": "THA/DSI-ATHD",
    "recipients": ["MYS/IMMIGRATION", "MYS/RMP-ATIPSOM"],
    "handling": "H1",
}
ENTRIES: list[tuple[str, dict[str, Any]]] = [
    ("hub started", {"at": T0, "event": "hub_started"}),
    (
        "alert accepted",
        {
            "at": T0 + 1000,
            "event": "accepted",
            **_ALERT,
            "case_ref": "TIP-2026-0042",
            "payload_hash": PAYLOAD,
            "size": 2817,
        },
    ),
    (
        "alert relayed",
        {
            "at": T0 + 1004,
            "event": "relayed",
            **_ALERT,
            "payload_hash": PAYLOAD,
            "size": 2817,
            "peer": "MYS",
        },
    ),
    (
        "query rejected",
        {
            "at": T0 + 5000,
            "event": "rejected",
            "msg_id": MSG_QUERY,
            "type": "person.query",
            "sender": "MYS/IMMIGRATION",
            "recipients": ["THA/IMMIGRATION"],
            "size": 1024,
            "code": "ixb.E_SIGNATURE",
            "detail": "signature does not verify",
            "peer": "MYS",
        },
    ),
    (
        "checkpoint cosigned",
        {
            "at": T0 + 60000,
            "event": "checkpoint_cosigned",
            "peer": "MYS",
            "detail": "ixb.MYS size 17",
        },
    ),
    ("audit read", {"at": T0 + 90000, "event": "audit_read", "actor": "THA/OAG auditor 7"}),
]
REPLY_ENTRIES: list[tuple[str, dict[str, Any]]] = [
    (
        "read receipt accepted (version 2)",
        {
            "v": 2,
            "at": T0 + 7000,
            "event": "accepted",
            "msg_id": "0195f3a0c6d27c4a8e51b0a3d2c4e6f8",
            "type": "receipt",
            "sender": "MYS/RMP-ATIPSOM",
            "recipients": ["THA/DSI-ATHD"],
            "handling": "H1",
            "payload_hash": PAYLOAD[::-1],
            "size": 812,
            "peer": "MYS",
            "in_reply_to": MSG_ALERT,
        },
    ),
    (
        "query answer delivered (version 2)",
        {
            "v": 2,
            "at": T0 + 8000,
            "event": "delivered",
            "msg_id": "0195f3a0c6d27c4a8e51b0a3d2c4e6f9",
            "type": "person.result",
            "sender": "THA/IMMIGRATION",
            "recipients": ["MYS/IMMIGRATION"],
            "handling": "H2",
            "case_ref": "MYS-Q-2026-17",
            "in_reply_to": MSG_QUERY,
        },
    ),
]
"""Entries that answer a message: version 2 (SPEC §13.1), outside the log of ENTRIES."""
BYTES_FIELDS = ("msg_id", "payload_hash", "in_reply_to")
CHECKPOINT_TIMES = {4: T0 + 10_000, 6: T0 + 100_000}
COSIGNERS = (("MYS", T0 // 1000 + 101), ("MMR", T0 // 1000 + 102))


def entry_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The JSON fields of an entry, in wire order (the order of the SPEC §13.1 table)."""
    out = {"v": 1, "hub": "THA/HUB", **fields}
    order = list(AuditEntry.__struct_fields__)
    return {k: out[k] for k in sorted(out, key=order.index)}


def entry_from_json(fields: dict[str, Any]) -> AuditEntry:
    kw: dict[str, Any] = {
        k: bytes.fromhex(v) if k in BYTES_FIELDS else v for k, v in fields.items()
    }
    kw["event"] = AuditEvent(kw["event"])
    if "handling" in kw:
        kw["handling"] = HandlingCode(kw["handling"])
    if "recipients" in kw:
        kw["recipients"] = tuple(kw["recipients"])
    return AuditEntry(**kw)


def hub(country: str) -> Identity:
    seed = hashlib.sha256(f"ixb checkpoint vector {country}/HUB".encode()).digest()
    return Identity(hub_of(country), SigningKeyPair(seed), None)


def _party(country: str) -> dict[str, str]:
    public = hub(country).signing.public
    origin, witness = log_origin(country), witness_name(country)
    return {
        "signing_seed": hub(country).signing._seed().hex(),
        "signing_public": public.hex(),
        "log_origin": origin,
        "log_key_id": note_key_id(origin, SIG_ED25519, public).hex(),
        "log_verifier_key": verifier_key(origin, public),
        "witness_name": witness,
        "witness_key_id": note_key_id(witness, SIG_COSIGNATURE_V1, public).hex(),
        "witness_verifier_key": verifier_key(witness, public, SIG_COSIGNATURE_V1),
    }


def _hexes(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def _flip_b64_bit(line: str, byte: int) -> str:
    """The signature line with bit 0 of decoded byte ``byte`` flipped (canonical base64)."""
    head, b64 = line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[byte] ^= 1
    return f"{head} {base64.b64encode(bytes(raw)).decode()}\n"


def _non_canonical_b64(line: str) -> str:
    """The line with an unused low bit of the base64 text's last character set."""
    head, b64 = line.rstrip("\n").rsplit(" ", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = b64.rstrip("=")
    last = alphabet[alphabet.index(body[-1]) ^ 1]
    return f"{head} {body[:-1]}{last}{b64[len(body) :]}\n"


def _invalid_checkpoint_notes(leaves: list[bytes]) -> list[dict[str, Any]]:
    tha, mys = hub("THA"), hub("MYS")
    cp = new_checkpoint("THA", 4, merkle.root(leaves[:4]), CHECKPOINT_TIMES[4])
    text = cp.body().decode()
    note = sign_checkpoint(cp, tha).decode()
    line = note[len(text) + 1 :]

    def signed(body: str) -> str:
        return body + "\n" + sign_note(body.encode(), "ixb.THA", tha.signing).line()

    root_b64 = text.split("\n")[2]
    short_root = base64.b64encode(base64.b64decode(root_b64)[:31]).decode()
    witness_only = cosign(note.encode(), mys, "ixb.MYS.witness", COSIGNERS[0][1]).decode()
    cases: list[tuple[str, str | bytes, str]] = [
        ("no blank line before the signatures", text + line, "ixb.E_CHECKPOINT"),
        ("CRLF line endings", note.replace("\n", "\r\n"), "ixb.E_CHECKPOINT"),
        ("hyphen instead of em dash", text + "\n" + "-" + line[1:], "ixb.E_CHECKPOINT"),
        (
            "two spaces after the key name",
            text + "\n" + line.replace("ixb.THA ", "ixb.THA  ", 1),
            "ixb.E_CHECKPOINT",
        ),
        (
            "non-canonical base64 in the signature",
            text + "\n" + _non_canonical_b64(line),
            "ixb.E_CHECKPOINT",
        ),
        ("signature line without final newline", note[:-1], "ixb.E_CHECKPOINT"),
        ("the same signature line twice", note + line, "ixb.E_CHECKPOINT"),
        (
            "size with a leading zero (validly signed)",
            signed(text.replace("\n4\n", "\n04\n", 1)),
            "ixb.E_CHECKPOINT",
        ),
        (
            "root hash of 31 bytes (validly signed)",
            signed(text.replace(root_b64, short_root)),
            "ixb.E_CHECKPOINT",
        ),
        (
            "no time extension (validly signed)",
            signed(text.split("time ")[0]),
            "ixb.E_CHECKPOINT",
        ),
        (
            "time with a leading zero (validly signed)",
            signed(text.replace("time ", "time 0")),
            "ixb.E_CHECKPOINT",
        ),
        ("empty extension line (validly signed)", signed(text + "\n"), "ixb.E_CHECKPOINT"),
        (
            "checkpoint of another log, signed by this key",
            signed(text.replace("ixb.THA", "ixb.MYS", 1)),
            "ixb.E_CHECKPOINT",
        ),
        (
            "one bit of the signature flipped",
            text + "\n" + _flip_b64_bit(line, 10),
            "ixb.E_SIGNATURE",
        ),
        (
            "size changed after signing",
            note.replace("\n4\n", "\n5\n", 1),
            "ixb.E_SIGNATURE",
        ),
        (
            "signed by another key under the log's name",
            text + "\n" + sign_note(text.encode(), "ixb.THA", mys.signing).line(),
            "ixb.E_SIGNATURE",
        ),
        (
            "only a witness cosignature",
            text + "\n" + witness_only.rsplit("\n", 2)[1] + "\n",
            "ixb.E_SIGNATURE",
        ),
        ("not UTF-8", b"\xff" + note.encode(), "ixb.E_CHECKPOINT"),
    ]
    out = []
    for name, value, error in cases:
        key = "note_hex" if isinstance(value, bytes) else "note"
        out.append({"name": name, key: value.hex() if isinstance(value, bytes) else value})
        out[-1]["error"] = error
    return out


def _invalid_cosignatures(note6: str, cosigned_by_mys: str) -> list[dict[str, str]]:
    tha, mys = hub("THA"), hub("MYS")
    text = note6.split("\n\n", maxsplit=1)[0] + "\n"
    mys_line = cosigned_by_mys[len(note6) :]
    head, b64 = mys_line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[11] += 1  # the low byte of the big-endian timestamp, after the 4-byte key id
    later = f"{head} {base64.b64encode(bytes(raw)).decode()}\n"
    return [
        {
            "name": "timestamp changed after signing",
            "note": note6 + later,
            "error": "ixb.E_SIGNATURE",
        },
        {
            "name": "checkpoint text changed after cosigning",
            "note": cosigned_by_mys.replace("\n6\n", "\n7\n", 1),
            "error": "ixb.E_SIGNATURE",
        },
        {
            "name": "a plain Ed25519 (type 0x01) signature under the witness name",
            "note": note6 + sign_note(text.encode(), "ixb.MYS.witness", mys.signing).line(),
            "error": "ixb.E_SIGNATURE",
        },
        {"name": "no cosignature at all", "note": note6, "error": "ixb.E_SIGNATURE"},
        {
            "name": "cosigned text is not a checkpoint",
            "note": "hello\n\n" + sign_note(b"hello\n", "ixb.THA", tha.signing).line() + mys_line,
            "error": "ixb.E_CHECKPOINT",
        },
    ]


def build_ixb() -> dict[str, Any]:
    """The ``ixb`` part of checkpoint.json."""
    tha = hub("THA")
    fields = [(name, entry_fields(f)) for name, f in ENTRIES]
    leaves = [encode_entry(entry_from_json(f)) for _, f in fields]
    checkpoints = []
    notes = {}
    for size, time_ms in CHECKPOINT_TIMES.items():
        cp = new_checkpoint("THA", size, merkle.root(leaves[:size]), time_ms)
        notes[size] = sign_checkpoint(cp, tha)
        checkpoints.append(
            {
                "size": size,
                "root": cp.root.hex(),
                "time_ms": time_ms,
                "text": cp.body().decode(),
                "note": notes[size].decode(),
            }
        )
    copies = [cosign(notes[6], hub(cc), witness_name(cc), t) for cc, t in COSIGNERS]
    cosignatures = [
        {
            "witness": f"{cc}/HUB",
            "name": witness_name(cc),
            "time_s": t,
            "line": copy.decode()[len(notes[6].decode()) :],
        }
        for (cc, t), copy in zip(COSIGNERS, copies, strict=True)
    ]
    cosigned = notes[6].decode() + "".join(c["line"] for c in cosignatures)

    rewritten = entry_fields({**ENTRIES[3][1], "code": "ixb.E_POLICY"})
    forged3 = [*leaves[:3], encode_entry(entry_from_json(rewritten)), *leaves[4:]]
    stopped = entry_fields({"at": T0 + 100_000, "event": "hub_stopped"})
    deleted1 = [leaves[0], *leaves[2:], encode_entry(entry_from_json(stopped))]
    swapped = [leaves[0], leaves[2], leaves[1], *leaves[3:]]

    def case(name: str, about: str, new: list[bytes], error: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name,
            "about": about,
            "old_size": 4,
            "old_root": merkle.root(leaves[:4]).hex(),
            "new_size": len(new),
            "new_root": merkle.root(new).hex(),
            "proof": _hexes(merkle.consistency_proof(new, 4)) if len(new) >= 4 else [],
        }
        if error is not None:
            out["error"] = error
        return out

    consistency_cases = [
        case("honest extension 4 -> 6", "", leaves, None),
        case("same checkpoint again", "", leaves[:4], None),
        case(
            "entry 3 rewritten, then extended",
            "the rejected entry's code was changed after the fact",
            forged3,
            "ixb.E_FORK",
        ),
        case(
            "entry 1 deleted, then extended",
            "same size as the honest log, one entry missing",
            deleted1,
            "ixb.E_FORK",
        ),
        case("entries 1 and 2 swapped", "", swapped, "ixb.E_FORK"),
        case("log shrank to 3 entries", "", leaves[:3], "ixb.E_FORK"),
        case("same size, different root", "entry 3 rewritten", forged3[:4], "ixb.E_FORK"),
    ]
    return {
        "about": (
            "ixb's own vectors, made by tests/gen_checkpoint.py. Hub signing seeds are "
            "SHA-256('ixb checkpoint vector <CC>/HUB'); entries are the listed fields "
            "(absent fields omitted, SPEC §1.1: the shortest map header). Ed25519 is "
            "deterministic, so every byte here is reproducible from the seeds and fields. "
            "'audit_entries' (version 1) are the log; 'reply_entries' are version 2 entries "
            "carrying in_reply_to, outside the log."
        ),
        "parties": {f"{cc}/HUB": _party(cc) for cc in ("THA", "MYS", "MMR")},
        "audit_entries": [
            {
                "name": name,
                "fields": f,
                "encoding": leaf.hex(),
                "leaf_hash": merkle.leaf_hash(leaf).hex(),
            }
            for (name, f), leaf in zip(fields, leaves, strict=True)
        ],
        "reply_entries": [
            {
                "name": name,
                "fields": entry_fields(f),
                "encoding": encode_entry(entry_from_json(entry_fields(f))).hex(),
                "leaf_hash": merkle.leaf_hash(encode_entry(entry_from_json(entry_fields(f)))).hex(),
            }
            for name, f in REPLY_ENTRIES
        ],
        "log": {
            "country": "THA",
            "checkpoints": checkpoints,
            "consistency": {
                "old_size": 4,
                "new_size": 6,
                "proof": _hexes(merkle.consistency_proof(leaves, 4)),
            },
            "inclusion": {
                "index": 3,
                "size": 6,
                "proof": _hexes(merkle.inclusion_proof(leaves, 3)),
            },
            "cosignatures": cosignatures,
            "cosigned_note": cosigned,
        },
        "consistency_cases": consistency_cases,
        "invalid_checkpoint_notes": {
            "about": "verify_checkpoint(note, THA/HUB's key, 'ixb.THA')",
            "cases": _invalid_checkpoint_notes(leaves),
        },
        "invalid_cosignatures": {
            "about": "verify_cosignature(note, MYS/HUB's key, 'ixb.MYS.witness')",
            "cases": _invalid_cosignatures(notes[6].decode(), copies[0].decode()),
        },
    }
