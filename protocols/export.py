"""Audit log exports, and their verification with nothing but the spec and the trust anchors.

An export is a directory of three files (SPEC §13.10):

- ``manifest.json``: ``{"format": "ixb-audit-export-v1", "hub": "THA/HUB",
  "size": N, "complete": true|false}``;
- ``checkpoint.note``: the hub's signed checkpoint of size N, with every
  witness cosignature the hub holds for it;
- ``entries.jsonl``: one JSON object per line, ``{"index": i, "leaf":
  base64(entry bytes), "proof": [hex, …]}``, indexes strictly increasing;
  ``complete`` exports hold every entry from 0 to N-1.

:func:`verify_export` takes the three files' bytes (this module does no I/O)
and checks the checkpoint signature against the hub's trust anchor, every
cosignature it can (reporting which peers witnessed), every entry's schema
and inclusion proof, and for a complete export the root recomputed from all
leaves: a deleted, inserted, altered or reordered entry cannot pass.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.audit import AuditEntry, decode_entry
from protocols.checkpoint import (
    Checkpoint,
    log_origin,
    verify_checkpoint_by_any,
    verify_cosignature_by_any,
    witness_name,
)
from protocols.errors import IxbError, MalformedError, MerkleProofError
from protocols.federation import TrustAnchors
from protocols.identifiers import parse_hub
from protocols.merkle import leaf_hash, root_from_hashes, verify_inclusion

EXPORT_FORMAT = "ixb-audit-export-v1"
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint.note"
ENTRIES = "entries.jsonl"


@dataclass(frozen=True, slots=True)
class ExportedEntry:
    index: int
    leaf: bytes
    proof: tuple[bytes, ...]


def manifest(hub: str, size: int, complete: bool) -> bytes:
    return json.dumps(
        {"format": EXPORT_FORMAT, "hub": hub, "size": size, "complete": complete}, indent=1
    ).encode()


def entry_line(entry: ExportedEntry) -> bytes:
    return (
        json.dumps(
            {
                "index": entry.index,
                "leaf": base64.b64encode(entry.leaf).decode(),
                "proof": [h.hex() for h in entry.proof],
            }
        ).encode()
        + b"\n"
    )


@dataclass(frozen=True, slots=True)
class VerifiedExport:
    checkpoint: Checkpoint
    hub: str
    entries: tuple[tuple[int, AuditEntry], ...]
    witnesses: tuple[str, ...]
    complete: bool


def verify_export(
    manifest_bytes: bytes, note: bytes, entries_bytes: bytes, trust: TrustAnchors
) -> VerifiedExport:
    """Everything an auditor checks; raises the first problem as a typed error."""
    try:
        meta = json.loads(manifest_bytes)
        if meta.get("format") != EXPORT_FORMAT:
            raise MalformedError(f"manifest: format is not {EXPORT_FORMAT}")
        hub = parse_hub(str(meta["hub"]))
        size = int(meta["size"])
        complete = bool(meta["complete"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MalformedError(f"manifest: {exc}") from None
    # any key the hub had in the versions given: a log outlives a hub key (SPEC §12)
    cp, _ = verify_checkpoint_by_any(
        note, trust.hub_keys_ever(hub.country), log_origin(hub.country)
    )
    if cp.size != size:
        raise MalformedError(f"manifest says size {size}, checkpoint says {cp.size}")
    witnesses = []
    for country in trust.countries:
        if country == hub.country:
            continue
        try:
            verify_cosignature_by_any(note, trust.hub_keys_ever(country), witness_name(country))
        except IxbError:
            continue
        witnesses.append(country)
    parsed = _parse_entries(entries_bytes)
    verified: list[tuple[int, AuditEntry]] = []
    previous = -1
    for e in parsed:
        if e.index <= previous:
            raise MalformedError(f"entry {e.index}: indexes must increase")
        previous = e.index
        try:
            verify_inclusion(e.leaf, e.index, cp.size, e.proof, cp.root)
        except MerkleProofError as exc:
            raise MerkleProofError(f"entry {e.index}: {exc.detail}") from None
        entry = decode_entry(e.leaf)
        if entry.hub != str(hub):
            raise MalformedError(f"entry {e.index} belongs to {entry.hub}, not {hub}")
        verified.append((e.index, entry))
    if complete:
        if [i for i, _ in verified] != list(range(size)):
            raise MerkleProofError("a complete export must hold every entry from 0 to size-1")
        if root_from_hashes([leaf_hash(e.leaf) for e in parsed]) != cp.root:
            raise MerkleProofError("the entries do not hash to the checkpoint's root")
    return VerifiedExport(cp, str(hub), tuple(verified), tuple(witnesses), complete)


def _parse_entries(data: bytes) -> Sequence[ExportedEntry]:
    out: list[ExportedEntry] = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            out.append(
                ExportedEntry(
                    index=int(obj["index"]),
                    leaf=base64.b64decode(obj["leaf"], validate=True),
                    proof=tuple(bytes.fromhex(h) for h in obj["proof"]),
                )
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise MalformedError(f"entries line {n}: {exc}") from None
    return out
