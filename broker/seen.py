"""Replay rows: the store's, and the lookup path's that its next group commit writes.

In: the headers the pipeline accepted (:meth:`SeenRows.remember`, or through
:meth:`SeenRows.deferred` on the lookup path). Out: what the pipeline asks
of them (:class:`~broker.pipeline.SeenMessages`). Guaranteed: a row
remembered on either path is known to both at once; a deferred row is in
the store, durably, before any answer of the group that carried it is
released (the :class:`~broker.groupcommit.GroupCommitter` writes the rows in
its thread and syncs them beside the audit commit).

Why deferred: a lookup decided on the event loop used to write its replay
row there, in a transaction of its own (six SQLite statements per hub pass,
each waiting for the store's lock). The row is needed at once only in
memory, to refuse a replay of the same envelope; on disk it is needed only
before the answer leaves the hub, which is when the group commit makes the
audit entries durable anyway (docs/performance.md, "Replay rows in the group
commit").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.pipeline import KnownMessage, SeenMessages
from broker.store import HubStore
from protocols.envelope import Header

Row = tuple[Header, bytes]
"""A header the pipeline accepted, and its envelope's digest."""


@dataclass(eq=False)
class SeenRows:
    """The durable path's :class:`~broker.pipeline.SeenMessages`: rows written in the
    caller's transaction, and those the lookup path left for the group commit."""

    store: HubStore
    _unwritten: dict[tuple[str, bytes], Row] = field(default_factory=dict)

    def known(self, sender: str, message_id: bytes) -> KnownMessage | None:
        held = self._unwritten.get((sender, message_id))
        if held is None:
            return self.store.known(sender, message_id)
        header, digest = held
        return KnownMessage(
            digest=digest,
            sender=header.sender,
            recipients=tuple(header.recipients),
            handling=header.handling,
            restriction=header.restriction,
            routed=False,
        )

    def original(self, message_id: bytes, party: str) -> KnownMessage | None:
        # the store's only: a forward naming a lookup within the one group commit before its
        # row is written is refused as a forward of an unknown message (safe, and unlikely)
        return self.store.original(message_id, party)

    def remember(self, header: Header, digest: bytes) -> None:
        self.store.remember(header, digest)

    def defer(self, header: Header, digest: bytes) -> None:
        """Known from now on; written by the next group commit."""
        self._unwritten.setdefault((header.sender, header.id), (header, digest))

    def deferred(self) -> SeenMessages:
        """The same rows, but :meth:`~broker.pipeline.SeenMessages.remember` keeps the row in
        memory for the next group commit (the lookup path's view)."""
        return _Deferred(self)

    # --- the group commit's side ------------------------------------------------------

    def unwritten(self) -> list[Row]:
        """The rows the next group commit writes (taken on the event loop, at its start)."""
        return list(self._unwritten.values())

    def write(self, rows: list[Row]) -> None:
        """Write ``rows`` (the commit thread; durable at the store's next ``sync``)."""
        self.store.remember_many(rows)

    def written(self, rows: list[Row]) -> None:
        """``rows`` are in the store: forget them here (on the event loop)."""
        for header, _digest in rows:
            self._unwritten.pop((header.sender, header.id), None)


@dataclass(frozen=True, eq=False)
class _Deferred:
    rows: SeenRows

    def known(self, sender: str, message_id: bytes) -> KnownMessage | None:
        return self.rows.known(sender, message_id)

    def original(self, message_id: bytes, party: str) -> KnownMessage | None:
        return self.rows.original(message_id, party)

    def remember(self, header: Header, digest: bytes) -> None:
        self.rows.defer(header, digest)
