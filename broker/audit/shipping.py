"""The audit log's leaves, copied into the country's replicated ``AUDIT`` stream.

Why: the SQLite file is on one disk. The hub copies every leaf it appended
into JetStream (three replicas in a clustered country) and signs a checkpoint
only over what JetStream already holds, so whatever a peer's witness
cosigned can be rebuilt after the disk is lost or an older backup is
restored (``ixb audit rebuild``): the rebuilt log extends every cosigned
checkpoint, and the witnesses see a log that grew, not a fork.

One stream message is a :class:`Batch`: MessagePack ``[1, first, [leaf, …]]``,
the leaves ``first``, ``first + 1`` … as the tree holds them (the exact bytes
hashed into it), at most :data:`MAX_BATCH_LEAVES` and about
:data:`MAX_BATCH_BYTES`. ``Nats-Msg-Id`` is
``audit:<CC>:<first>:<count>:<digest>`` (the digest of its leaves): a batch
sent again after a crash is stored once, one sent again with more leaves
overlaps the first with the same bytes, and a *different* batch at the same
place (a log rewritten and its stream purged) is never mistaken for a repeat
and silently dropped. :func:`assemble` takes the batches in any order, accepts
identical overlaps and refuses two different leaves at one index or a gap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from broker.audit.records import StoredEntry
from protocols.errors import AuditStreamError
from protocols.limits import Limits

BATCH_FORMAT = 1
MAX_BATCH_LEAVES = 512
MAX_BATCH_BYTES = 512 * 1024
"""Well below the servers' ``max_payload`` (an audit leaf is a few hundred bytes)."""
UNKNOWN_ACCEPTANCES_META = "unknown_acceptances_until"
"""Hub store meta key (ms): set by a rebuild that appended leaves the store never knew;
until then the hub also looks for a message's acceptance in the log (replays)."""


def unknown_acceptances_until(now_ms: int, limits: Limits) -> int:
    """Until when (ms) a log that gained leaves its store never knew may be asked about
    replays: as long as any envelope accepted before ``now_ms`` can arrive again."""
    return now_ms + limits.max_ttl_ms + limits.max_clock_skew_ms


@dataclass(frozen=True, slots=True)
class Batch:
    first: int
    leaves: tuple[bytes, ...]

    @property
    def end(self) -> int:
        return self.first + len(self.leaves)

    def msg_id(self, country: str) -> str:
        digest = hashlib.sha256(b"".join(hashlib.sha256(x).digest() for x in self.leaves))
        return f"audit:{country}:{self.first}:{len(self.leaves)}:{digest.hexdigest()[:16]}"

    def encode(self) -> bytes:
        return msgspec.msgpack.encode((BATCH_FORMAT, self.first, self.leaves))


def decode_batch(data: bytes) -> Batch:
    """A batch from the stream; anything else is an :class:`AuditStreamError`."""
    try:
        fmt, first, leaves = msgspec.msgpack.decode(data)
    except (ValueError, TypeError, msgspec.DecodeError) as exc:
        raise AuditStreamError(f"an AUDIT stream message is not a batch of leaves: {exc}") from None
    if fmt != BATCH_FORMAT:
        raise AuditStreamError(f"AUDIT batch format {fmt!r}, not {BATCH_FORMAT}")
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise AuditStreamError("an AUDIT batch has no valid first index")
    if not isinstance(leaves, list) or not leaves or not all(isinstance(x, bytes) for x in leaves):
        raise AuditStreamError("an AUDIT batch holds no leaves, or something else than leaves")
    return Batch(first, tuple(leaves))


def batches(entries: Sequence[StoredEntry]) -> list[Batch]:
    """Consecutive stored entries cut into batches (each within the limits)."""
    out: list[Batch] = []
    leaves: list[bytes] = []
    first = entries[0].index if entries else 0
    size = 0
    for entry in entries:
        if leaves and (len(leaves) >= MAX_BATCH_LEAVES or size + len(entry.data) > MAX_BATCH_BYTES):
            out.append(Batch(first, tuple(leaves)))
            first, leaves, size = entry.index, [], 0
        if entry.index != first + len(leaves):
            raise ValueError(f"entries are not consecutive at {entry.index}")
        leaves.append(entry.data)
        size += len(entry.data)
    if leaves:
        out.append(Batch(first, tuple(leaves)))
    return out


def assemble(found: Iterable[Batch]) -> list[bytes]:
    """Every leaf from index 0, from batches in any order, overlapping or repeated.

    Raises :class:`AuditStreamError` for two different leaves at one index (the
    stream was written by two diverging logs) or a missing index.
    """
    leaves: dict[int, bytes] = {}
    for batch in found:
        for offset, leaf in enumerate(batch.leaves):
            index = batch.first + offset
            held = leaves.setdefault(index, leaf)
            if held != leaf:
                raise AuditStreamError(
                    f"the AUDIT stream holds two different leaves at index {index}"
                )
    size = len(leaves)
    if size and max(leaves) != size - 1:
        missing = min(set(range(max(leaves) + 1)) - set(leaves))
        raise AuditStreamError(f"the AUDIT stream has no leaf at index {missing}")
    return [leaves[i] for i in range(size)]
