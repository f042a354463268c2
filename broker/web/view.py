"""What the liaison pages read: a read-only :class:`LiaisonView` and the data it returns.

In: whatever implements the Protocol (the hub fills a :class:`LiaisonContext`;
tests fill one with fixtures). Out: frozen rows the pages show. Guaranteed:
the pages never write through a view, except :meth:`LiaisonView.record_read`,
which logs each read (a page whose read cannot be logged is not shown). This
module imports nothing of the hub and nothing of aiohttp.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from broker.audit.records import StoredEntry
from broker.audit.search import AuditQuery
from broker.store import OpenRequest as DeadlineRow
from broker.store import Reminder as ReminderRow

__all__ = [
    "ROLES",
    "AuditReader",
    "DeadlineRow",
    "LiaisonContext",
    "LiaisonView",
    "PeerStep",
    "ReconcileFn",
    "ReconcileReport",
    "ReminderRow",
    "Role",
    "UserRecord",
    "WitnessRow",
]

Role = Literal["liaison", "auditor"]
ROLES: Final[frozenset[str]] = frozenset({"liaison", "auditor"})


@dataclass(frozen=True)
class UserRecord:
    """A person allowed to read this hub's audit pages."""

    name: str
    role: Role
    password_hash: str


@dataclass(frozen=True)
class WitnessRow:
    """One direction of witnessing between this hub and a peer, as the hub last saw it."""

    peer: str
    direction: Literal["they witness us", "we witness them"]
    size: int | None
    root_hex: str | None
    at_ms: int | None
    status: str
    alarm: bool = False


@dataclass(frozen=True)
class ReconcileReport:
    """This hub's log against a peer's, for the exchanges between the two since ``since_ms``."""

    peer: str
    since_ms: int
    only_here: Sequence[tuple[str, str, int]]  # (msg_id, event, at_ms)
    only_there: Sequence[tuple[str, str, int]]  # (msg_id, event, at_ms)
    different: Sequence[tuple[str, str, str]]  # (msg_id, what we hold, what they hold)
    matched: int


@dataclass(frozen=True)
class PeerStep:
    """An entry a peer hub shared about a message (verified against its checkpoint)."""

    hub: str  # the peer country whose log holds it
    index: int  # its leaf index in that log
    msg_id: str
    event: str
    at_ms: int
    code: str | None = None


ReconcileFn = Callable[[str, int], Awaitable[ReconcileReport]]
"""(peer, since_ms) → the report for exchanges with that peer since then."""


class AuditReader(Protocol):
    """The read side of :class:`broker.audit.AuditLog` that the pages use."""

    @property
    def size(self) -> int: ...

    def search(self, query: AuditQuery, *, limit: int = 100) -> list[StoredEntry]: ...

    def entries(self, start: int, end: int) -> list[StoredEntry]: ...

    def root(self, size: int | None = None) -> bytes: ...

    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...

    def latest_checkpoint(self) -> tuple[int, bytes, bytes] | None: ...

    def checkpoint_for(self, size: int) -> bytes | None: ...

    def cosignatures(self, size: int | None = None) -> list[tuple[str, int, bytes, int]]: ...

    def last_witnessed(self, origin: str) -> tuple[int, bytes, bytes, int] | None: ...

    def alarms(self) -> list[tuple[str, int, str]]: ...


class LiaisonView(Protocol):
    """Everything the liaison pages read about one hub.

    Methods may block (SQLite reads): the pages call the audit reader from a
    worker thread, the others on the event loop, so they must be quick.
    """

    @property
    def hub_id(self) -> str: ...

    @property
    def audit(self) -> AuditReader: ...

    @property
    def users(self) -> Mapping[str, UserRecord]:
        """Who may log in, by name; read at every request (a removed user is out at once)."""
        ...

    @property
    def peers(self) -> Sequence[str]: ...

    @property
    def secure_cookies(self) -> bool:
        """Set the cookies' Secure flag (the site is served over HTTPS)."""
        ...

    @property
    def trusted_proxies(self) -> frozenset[str]:
        """Reverse proxies whose ``X-Forwarded-For`` names the client (else: ignored)."""
        ...

    @property
    def reconcile(self) -> ReconcileFn | None:
        """Compare our log with a peer's; None: this hub cannot, and offers no such page."""
        ...

    def now_ms(self) -> int:
        """Milliseconds since the epoch: the one clock of the pages and their sessions."""
        ...

    def record_read(self, user: str, what: str, /) -> None:
        """Log that ``user`` read ``what`` (an ``audit_read`` entry); raise if it cannot."""
        ...

    def witness_status(self) -> Sequence[WitnessRow]: ...

    def deadlines(self, now_ms: int, /) -> Sequence[DeadlineRow]: ...

    def reminders(self) -> Sequence[ReminderRow]:
        """Overdue reminders this hub sent to its agencies, newest first."""
        ...

    def peer_steps(self, msg_ids: Sequence[str], /) -> Sequence[PeerStep]:
        """What peers shared about these messages, oldest first (quick: an indexed read)."""
        ...


def _no_peer_steps(_: Sequence[str]) -> Sequence[PeerStep]:
    return ()


def _no_reminders() -> Sequence[ReminderRow]:
    return ()


@dataclass
class LiaisonContext:
    """A :class:`LiaisonView` made of plain values and callables (the hub's, or a test's)."""

    hub_id: str
    audit: AuditReader
    users: Mapping[str, UserRecord]
    clock: Callable[[], int]  # ms since the epoch
    record_read: Callable[[str, str], None]  # (user name, what was read) → audit_read entry
    witness_status: Callable[[], Sequence[WitnessRow]]
    deadlines: Callable[[int], Sequence[DeadlineRow]]  # now_ms → rows
    reconcile: ReconcileFn | None
    peers: Sequence[str]
    secure_cookies: bool = False
    trusted_proxies: frozenset[str] = frozenset()
    peer_steps: Callable[[Sequence[str]], Sequence[PeerStep]] = _no_peer_steps
    reminders: Callable[[], Sequence[ReminderRow]] = _no_reminders

    def now_ms(self) -> int:
        return self.clock()
