"""Passwords, sessions, CSRF tokens and login throttling of the liaison pages.

In: cookie values and form fields as the browser sent them, the readers
(name → :class:`UserRecord`) and the time, ``now_ms``, always from the
caller. Out: sessions, tokens and login verdicts; the HTTP layer turns them
into cookies and status codes. Guaranteed:

- passwords are argon2id (libsodium's interactive cost); an unknown name is
  checked against a dummy hash, so it costs what a wrong password costs;
- a session id is 32 random bytes, stored only as its SHA-256; it dies
  ``session_absolute_ms`` after login, ``session_idle_ms`` after its last
  use, when its user is removed, changes role or password, or at logout;
  every login makes a new one (no fixation); at most ``max_sessions``;
- each session has its own CSRF token; the login form's token is an HMAC of
  a random pre-login cookie (no state kept for anonymous visitors);
- failed logins slow the guesser, never the officer: an exponential
  back-off per (name, client) and a limit per client, both checked *before*
  any password; nothing is counted per name alone, so failures from one
  address cannot lock a name out elsewhere (:class:`Throttle`).

No clock is read here and nothing of aiohttp is imported.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.pwhash

from broker.web.limits import LIMITS, WebLimits
from broker.web.view import ROLES, UserRecord

__all__ = [
    "Auth",
    "LoginResult",
    "LoginTokens",
    "Outcome",
    "Session",
    "Sessions",
    "Throttle",
    "check_password",
    "dummy_hash",
    "hash_password",
    "session_key",
]


# --- passwords ------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """argon2id at libsodium's interactive cost, in its self-describing string form."""
    hashed = nacl.pwhash.argon2id.str(
        password.encode("utf-8"),
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    )
    return hashed.decode("ascii")


def check_password(password_hash: str, password: str) -> bool:
    """libsodium's constant-time verify; False for a wrong password or a malformed hash."""
    try:
        return bool(
            nacl.pwhash.argon2id.verify(password_hash.encode("ascii"), password.encode("utf-8"))
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError, UnicodeError, AttributeError):
        return False


@functools.cache
def dummy_hash() -> str:
    """Checked for unknown names, so that "no such user" takes as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


# --- sessions -------------------------------------------------------------------------


def session_key(sid: str) -> bytes:
    """What the server keeps of a session id: its SHA-256, never the id itself."""
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).digest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


@dataclass
class Session:
    """One logged-in reader."""

    user: str
    role: str
    password_hash: str  # the hash at login: a changed password ends the session
    csrf: str
    created_ms: int
    seen_ms: int

    def csrf_ok(self, token: object) -> bool:
        """Whether a form's ``csrf`` field is this session's token (constant time)."""
        return isinstance(token, str) and _same(token, self.csrf)


class Sessions:
    """Live sessions in memory, keyed by :func:`session_key` of the cookie, oldest first."""

    def __init__(self, limits: WebLimits = LIMITS) -> None:
        self.limits = limits
        self._by_key: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, sid: object) -> bool:
        return isinstance(sid, str) and session_key(sid) in self._by_key

    def alive(self, s: Session, now_ms: int) -> bool:
        return (
            now_ms - s.created_ms < self.limits.session_absolute_ms
            and now_ms - s.seen_ms < self.limits.session_idle_ms
        )

    def start(self, user: UserRecord, now_ms: int, *, replacing: str | None = None) -> str:
        """A new session id for ``user``; the one it replaces (if any) ends."""
        self.end(replacing)
        for key in [k for k, s in self._by_key.items() if not self.alive(s, now_ms)]:
            del self._by_key[key]
        while len(self._by_key) >= self.limits.max_sessions:
            del self._by_key[next(iter(self._by_key))]  # the oldest login
        sid = secrets.token_urlsafe(32)
        self._by_key[session_key(sid)] = Session(
            user.name, user.role, user.password_hash, secrets.token_urlsafe(32), now_ms, now_ms
        )
        return sid

    def get(self, sid: str | None, users: Mapping[str, UserRecord], now_ms: int) -> Session | None:
        """The live session of cookie ``sid``, if its user may still read; marks it used."""
        if not sid or len(sid) > self.limits.max_cookie_chars:
            return None
        key = session_key(sid)
        s = self._by_key.get(key)
        if s is None:
            return None
        user = users.get(s.user)
        if (
            not self.alive(s, now_ms)
            or user is None
            or user.role not in ROLES
            or user.role != s.role
            or not _same(user.password_hash, s.password_hash)
        ):
            del self._by_key[key]
            return None
        s.seen_ms = now_ms
        return s

    def end(self, sid: str | None) -> None:
        if sid:
            self._by_key.pop(session_key(sid), None)

    def clear(self) -> None:
        self._by_key.clear()


# --- the login form's CSRF token ------------------------------------------------------


class LoginTokens:
    """Pre-login CSRF tokens: an HMAC of the visitor's random pre-login cookie."""

    def __init__(self, secret: bytes | None = None, limits: WebLimits = LIMITS) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.limits = limits

    def cookie(self, current: str | None) -> str:
        """The pre-login cookie to (re)send: the visitor's own if usable, else a new one."""
        if not current or len(current) > self.limits.max_cookie_chars:
            return secrets.token_urlsafe(32)
        return current

    def token(self, prelogin: str) -> str:
        data = b"login\0" + prelogin.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def check(self, prelogin: str | None, token: object) -> bool:
        """Whether ``token`` is the one issued with cookie ``prelogin`` (constant time)."""
        if not prelogin or not isinstance(token, str):
            return False
        return _same(token, self.token(prelogin))


# --- throttling -----------------------------------------------------------------------


class Throttle:
    """Failed logins: an exponential back-off per (name, client), a limit per client.

    Nothing is kept per name alone: failures from one address never stop
    the same name logging in from another, so knowing an officer's name is
    not enough to lock them out. A guesser is slowed where they are: after
    ``backoff_free_failures`` failures for a name from one client, each next
    try waits ``backoff_base_ms`` doubled per failure (at most
    ``backoff_max_ms``); and one client may fail at most
    ``max_client_failures`` times in ``failure_window_ms`` over all names.
    A pair is forgotten ``failure_window_ms`` after its last failure, or at a
    successful login. At most ``max_throttle_keys`` keys are remembered.
    """

    def __init__(self, limits: WebLimits = LIMITS) -> None:
        self.limits = limits
        self.pairs: dict[tuple[str, str], tuple[int, int]] = {}  # → (failures, last failure ms)
        self.clients: dict[str, deque[int]] = {}

    def _delay(self, failures: int) -> int:
        extra = failures - self.limits.backoff_free_failures
        if extra <= 0:
            return 0
        return min(self.limits.backoff_base_ms << min(extra - 1, 40), self.limits.backoff_max_ms)

    def _forget_old(self, now_ms: int) -> None:
        window = now_ms - self.limits.failure_window_ms
        for pair in [p for p, (_, last) in self.pairs.items() if last <= window]:
            del self.pairs[pair]
        for client in [c for c, q in self.clients.items() if not q or q[-1] <= window]:
            del self.clients[client]

    def retry_after_ms(self, name: str, client: str | None, now_ms: int) -> int:
        """How long this name from this client must still wait before a try; 0: it may try."""
        c = client or ""
        wait = 0
        got = self.pairs.get((name, c))
        if got is not None:
            failures, last = got
            if now_ms - last >= self.limits.failure_window_ms:
                del self.pairs[(name, c)]
            else:
                wait = max(0, last + self._delay(failures) - now_ms)
        q = self.clients.get(c)
        if q is not None:
            window = now_ms - self.limits.failure_window_ms
            while q and q[0] <= window:
                q.popleft()
            if not q:
                del self.clients[c]
            elif len(q) >= self.limits.max_client_failures:
                wait = max(wait, q[0] + self.limits.failure_window_ms - now_ms)
        return wait

    def failed(self, name: str, client: str | None, now_ms: int) -> None:
        """Count a failure for the pair and for the client."""
        c = client or ""
        new = ((name, c) not in self.pairs) + (c not in self.clients)
        if len(self.pairs) + len(self.clients) + new > self.limits.max_throttle_keys:
            self._forget_old(now_ms)
            self._make_room(name, c, new)
        failures, _ = self.pairs.pop((name, c), (0, now_ms))
        self.pairs[(name, c)] = (failures + 1, now_ms)  # re-inserted: newest last
        q = self.clients.setdefault(c, deque())
        q.append(now_ms)
        if len(q) > self.limits.max_client_failures:
            q.popleft()  # the limit is all that is ever compared

    def _make_room(self, name: str, c: str, new: int) -> None:
        """Forget the oldest live keys (pairs first) but this attempt's own."""

        def full() -> bool:
            return len(self.pairs) + len(self.clients) + new > self.limits.max_throttle_keys

        for pair in [p for p in self.pairs if p != (name, c)]:  # oldest first
            if not full():
                return
            del self.pairs[pair]
        for client in [k for k in self.clients if k != c]:
            if not full():
                return
            del self.clients[client]

    def forgive(self, name: str, client: str | None) -> None:
        """A successful login clears its pair (not its client's count)."""
        self.pairs.pop((name, client or ""), None)


# --- logging in -----------------------------------------------------------------------


class Outcome(enum.Enum):
    """What a login attempt came to; the HTTP status the pages answer with."""

    OK = 303
    BAD_INPUT = 400
    WRONG = 401
    THROTTLED = 429


@dataclass(frozen=True)
class LoginResult:
    outcome: Outcome
    sid: str | None = None  # the new session's id, when OK
    retry_after_ms: int = 0  # when THROTTLED: how long until this name may try from here


@dataclass
class Auth:
    """The liaison pages' login rules: sessions, tokens and throttling of one site."""

    limits: WebLimits = LIMITS
    verify: Callable[[str, str], bool] = check_password  # (hash, password), run in a thread
    sessions: Sessions = field(init=False)
    throttle: Throttle = field(init=False)
    tokens: LoginTokens = field(init=False)
    _checks: asyncio.Semaphore | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.limits)
        self.throttle = Throttle(self.limits)
        self.tokens = LoginTokens(limits=self.limits)

    async def log_in(
        self,
        users: Mapping[str, UserRecord],
        name: object,
        password: object,
        *,
        client: str | None,
        now_ms: int,
        replacing: str | None = None,
    ) -> LoginResult:
        """Check a login form's name and password; on success a new session replaces the old.

        Refused without checking the password while this name from this
        client is backing off, or the client is over its limit (see
        :class:`Throttle`).
        """
        if (
            not isinstance(name, str)
            or not isinstance(password, str)
            or not 0 < len(name) <= self.limits.max_field_chars
            or len(password) > self.limits.max_password_chars
        ):
            return LoginResult(Outcome.BAD_INPUT)
        wait = self.throttle.retry_after_ms(name, client, now_ms)
        if wait > 0:
            return LoginResult(Outcome.THROTTLED, retry_after_ms=wait)
        user = users.get(name)
        ok = await self._verify(user.password_hash if user else dummy_hash(), password)
        if not ok or user is None or user.role not in ROLES:
            self.throttle.failed(name, client, now_ms)
            return LoginResult(Outcome.WRONG)
        self.throttle.forgive(name, client)
        return LoginResult(Outcome.OK, self.sessions.start(user, now_ms, replacing=replacing))

    async def _verify(self, password_hash: str, password: str) -> bool:
        """argon2id takes 64 MiB: a few checks at a time, each in a worker thread."""
        if self._checks is None:
            self._checks = asyncio.Semaphore(self.limits.password_checks_at_once)
        async with self._checks:
            return await asyncio.to_thread(self.verify, password_hash, password)

    def close(self) -> None:
        """No live session outlives the server."""
        self.sessions.clear()
        self._checks = None
