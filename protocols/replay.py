"""Replay refusal by message id within each message's own expiry window.

An envelope is refused once expired, so an id only needs remembering until
its ``expires``; after that, freshness checks refuse it anyway. This is the
in-memory core; the hub persists the same decisions so a restart forgets
nothing.
"""

from __future__ import annotations

import heapq

from protocols.errors import ReplayError
from protocols.identifiers import format_message_id


class ReplayGuard:
    """Remembers message ids until they expire."""

    def __init__(self) -> None:
        self._expires: dict[bytes, int] = {}
        self._queue: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._expires)

    def seen(self, message_id: bytes, now_ms: int) -> bool:
        self.prune(now_ms)
        return message_id in self._expires

    def check_and_record(self, message_id: bytes, expires_ms: int, now_ms: int) -> None:
        """Record ``message_id`` or raise :class:`ReplayError` if it is still remembered."""
        if self.seen(message_id, now_ms):
            raise ReplayError(f"message {format_message_id(message_id)} was already received")
        self._expires[message_id] = expires_ms
        heapq.heappush(self._queue, (expires_ms, message_id))

    def prune(self, now_ms: int) -> None:
        while self._queue and self._queue[0][0] <= now_ms:
            _, mid = heapq.heappop(self._queue)
            self._expires.pop(mid, None)
