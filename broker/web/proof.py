"""``/audit/proof/{n}``: a leaf's inclusion proof, its checkpoint's cosignatures, a download.

In: the leaf index from the path and the :class:`~broker.web.view.LiaisonView`.
Out: the proof page, or ``/audit/proof/{n}/export.zip``: the leaf, its proof
and the checkpoint with every cosignature, in the layout of ``ixb audit
export``, so ``ixb audit verify`` checks it with the federation file alone.
Guaranteed: the proof is against the largest *cosigned* checkpoint that
covers the leaf (else the latest signed one, else the current tree, said so
on the page); 404 for a leaf the log does not hold, and for a download no
signed checkpoint covers yet; reads run in a worker thread.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from broker.audit.records import StoredEntry
from broker.web.auth import Session
from broker.web.format import note_time
from broker.web.site import Download, Page, Site
from protocols import merkle
from protocols.checkpoint import merge_notes, witness_name
from protocols.errors import IxbError
from protocols.export import CHECKPOINT, ENTRIES, MANIFEST, ExportedEntry, entry_line, manifest
from protocols.identifiers import hub_of

__all__ = ["proof", "proof_bundle"]


@dataclass(frozen=True)
class _Proved:
    """A leaf and what proves it: the tree it is proved in and, if signed, its note."""

    entry: StoredEntry
    size: int
    root: bytes
    note: bytes | None  # our signed checkpoint with every cosignature we hold for it
    cosigners: Sequence[tuple[str, int | None]]  # witness → when it cosigned (None: not yet)
    newer_uncosigned: int | None  # a newer checkpoint, not yet cosigned, of this size
    path: Sequence[bytes]


def _prove(site: Site, index: int) -> _Proved | None:
    """Prove ``index`` against the largest cosigned checkpoint covering it, else the
    latest signed one, else the current tree (worker thread)."""
    audit = site.view.audit
    size = audit.size
    if index >= size:
        return None
    entry = audit.entries(index, index + 1)[0]
    latest = audit.latest_checkpoint()
    cosigs = audit.cosignatures()
    cosigned = [s for _, s, _, _ in cosigs if s > index]
    at = max(cosigned) if cosigned else (latest[0] if latest and index < latest[0] else None)
    base = audit.checkpoint_for(at) if at is not None else None
    if at is None or base is None:
        return _Proved(
            entry, size, audit.root(size), None, [], None, audit.inclusion_proof(index, size)
        )
    here = [(w, n, t) for w, s, n, t in cosigs if s == at]
    note = _with_cosignatures(base, [n for _, n, _ in here])
    by_witness: dict[str, int | None] = {w: t for w, _, t in here}
    cosigners = [(p, by_witness.pop(witness_name(p), None)) for p in site.view.peers]
    cosigners += list(by_witness.items())
    newer = latest[0] if latest is not None and latest[0] > at else None
    return _Proved(
        entry, at, audit.root(at), note, cosigners, newer, audit.inclusion_proof(index, at)
    )


def _leaf_index(request: web.Request) -> int:
    text = request.match_info["index"]
    if not text.isdigit() or len(text) > 20:
        raise web.HTTPNotFound(text="No such leaf.")
    return int(text)


async def proof(request: web.Request, site: Site, s: Session) -> Page:
    index = _leaf_index(request)
    got = await asyncio.to_thread(_prove, site, index)
    if got is None:
        raise web.HTTPNotFound(text=f"This hub's log has no leaf #{index}.")
    try:
        merkle.verify_inclusion(got.entry.data, index, got.size, got.path, got.root)
        failure = None
    except IxbError as exc:
        failure = exc.detail
    context = {
        "index": index,
        "entry": got.entry,
        "size": got.size,
        "root": got.root,
        "leaf_hash": merkle.leaf_hash(got.entry.data),
        "proof": got.path,
        "failure": failure,
        "note": got.note,
        "note_time": note_time(got.note) if got.note is not None else None,
        "cosigners": got.cosigners,
        "cosigned_by": [w for w, at in got.cosigners if at is not None],
        "newer_uncosigned": got.newer_uncosigned,
        "bundle": _bundle_name(site, index),
    }
    return Page("proof.html", "Inclusion proof", f"proof {index}", context)


def _bundle_name(site: Site, index: int) -> str:
    country = site.view.hub_id.split("/", 1)[0]
    return f"ixb-{country}-leaf-{index}"


async def proof_bundle(request: web.Request, site: Site, s: Session) -> Download:
    """The proof as an ``ixb audit export``: verify it offline with ``ixb audit verify``."""
    index = _leaf_index(request)
    got = await asyncio.to_thread(_prove, site, index)
    if got is None or got.note is None:
        raise web.HTTPNotFound(text=f"No signed checkpoint covers leaf #{index} yet.")
    name = _bundle_name(site, index)
    buf = io.BytesIO()
    hub_id = site.view.hub_id
    hub = hub_id if "/" in hub_id else str(hub_of(hub_id))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{name}/{MANIFEST}", manifest(hub, got.size, False))
        z.writestr(f"{name}/{CHECKPOINT}", got.note)
        z.writestr(
            f"{name}/{ENTRIES}",
            entry_line(ExportedEntry(index, got.entry.data, tuple(got.path))),
        )
    return Download(buf.getvalue(), "application/zip", f"{name}.zip", f"proof export {index}")


def _with_cosignatures(note: bytes, cosigned: Sequence[bytes]) -> bytes:
    """Our checkpoint note with every witness's cosignature line, as an auditor checks it."""
    try:
        return merge_notes(note, *cosigned)
    except IxbError:
        return note
