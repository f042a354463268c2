"""Replay refusal by (sender, message id) within each message's own expiry window.

Ids are unique per sender (SPEC §4.7 step 10): keyed by id alone, anyone who
learns an id could use it first and get the genuine message refused. An
envelope is refused once expired, so a key only needs remembering until its
``expires``; after that, freshness checks refuse it anyway. This is the
in-memory core; the hub persists the same decisions so a restart forgets
nothing.
"""

from __future__ import annotations

import heapq

from protocols.errors import ReplayError
from protocols.identifiers import format_message_id

Key = tuple[str, bytes]
"""(sender, message id)."""


class ReplayGuard:
    """Remembers (sender, message id) until the message expires."""

    def __init__(self) -> None:
        self._expires: dict[Key, int] = {}
        self._queue: list[tuple[int, Key]] = []

    def __len__(self) -> int:
        return len(self._expires)

    def seen(self, sender: str, message_id: bytes, now_ms: int) -> bool:
        self.prune(now_ms)
        return (sender, message_id) in self._expires

    def check_and_record(
        self, sender: str, message_id: bytes, expires_ms: int, now_ms: int
    ) -> None:
        """Record ``sender``'s ``message_id`` or raise :class:`ReplayError` if still remembered."""
        if self.seen(sender, message_id, now_ms):
            raise ReplayError(f"message {format_message_id(message_id)} was already received")
        self._expires[(sender, message_id)] = expires_ms
        heapq.heappush(self._queue, (expires_ms, (sender, message_id)))

    def prune(self, now_ms: int) -> None:
        while self._queue and self._queue[0][0] <= now_ms:
            _, mid = heapq.heappop(self._queue)
            self._expires.pop(mid, None)
