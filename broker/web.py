"""The hub's audit pages for liaison officers and auditors: plain HTML over aiohttp.

Who reads them: the liaison officer in an embassy and the oversight body's
auditor (DESIGN.md, "Who uses it"). What they need: what was exchanged with
whom, when, under which handling code, and proof that nobody rewrote the
record. So every page is a read of the hub's :class:`~broker.audit.AuditLog`
and every read is itself logged (``ctx.record_read`` → an ``audit_read``
entry): an officer who looks is seen looking.

Design choices, each for a reason:

- Server-rendered HTML, no JavaScript at all: the CSP forbids scripts
  outright, so an injected ``<script>`` in a peer-supplied case reference can
  never run even if escaping were missed; and every value still goes through
  one escaping helper (:func:`render`).
- Sessions live in memory, keyed by a hash of the cookie (a memory dump or a
  timing leak reveals no usable cookie); absolute and idle expiry; a new id at
  every login (no fixation); the CSRF token is per session. Before login the
  form's token is an HMAC of a random pre-login cookie, so the login form is
  CSRF-safe without keeping state for anonymous visitors.
- Failed logins are counted per name and per client: past the limit the
  answer is 429 *before* the password is checked, so a locked name cannot be
  guessed at any speed. Password checks run in a thread, a few at a time
  (argon2id takes 64 MiB each).
- Quick at a million entries: a page asks :meth:`AuditLog.search` for one
  keyset page (indexed, ``before_index``) and never counts the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import secrets
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

import nacl.exceptions
import nacl.pwhash
from aiohttp import web

from broker.audit import MAX_SEARCH_LIMIT, AuditLog, AuditQuery, StoredEntry
from broker.store import OpenRequest as DeadlineRow
from protocols import merkle
from protocols.audit import AuditEntry, AuditEvent, decode_entry
from protocols.checkpoint import (
    log_origin,
    merge_notes,
    parse_checkpoint,
    parse_signed_note,
    witness_name,
)
from protocols.errors import IxbError
from protocols.identifiers import format_message_id, parse_message_id
from protocols.messages import MESSAGE_TYPES

__all__ = [
    "LIAISON",
    "DeadlineRow",
    "LiaisonContext",
    "ReconcileReport",
    "UserRecord",
    "WebLimits",
    "WitnessRow",
    "check_password",
    "hash_password",
    "render",
    "setup_liaison",
]

Role = Literal["liaison", "auditor"]
ROLES: Final[frozenset[str]] = frozenset({"liaison", "auditor"})
SESSION_COOKIE: Final = "ixb_session"
PRELOGIN_COOKIE: Final = "ixb_prelogin"

SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class WebLimits:
    """Every bound of the liaison pages in one place."""

    page_size: int = 50
    session_absolute_ms: int = 8 * 3600 * 1000
    session_idle_ms: int = 30 * 60 * 1000
    max_sessions: int = 10_000
    max_failures: int = 5
    failure_window_ms: int = 15 * 60 * 1000
    max_throttle_keys: int = 100_000
    max_field_chars: int = 128
    max_password_chars: int = 1024
    trail_entries: int = MAX_SEARCH_LIMIT
    reconcile_rows: int = 500
    alarms_shown: int = 50
    password_checks_at_once: int = 4


LIMITS: Final = WebLimits()


# --- what the hub fills in ------------------------------------------------------------


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


@dataclass
class LiaisonContext:
    """What the pages read, supplied by the hub."""

    hub_id: str
    audit: AuditLog
    users: Mapping[str, UserRecord]
    clock: Callable[[], int]  # ms since the epoch
    record_read: Callable[[str, str], None]  # (user name, what was read) → audit_read entry
    witness_status: Callable[[], Sequence[WitnessRow]]
    deadlines: Callable[[int], Sequence[DeadlineRow]]  # now_ms → rows
    reconcile: Callable[[str], Awaitable[ReconcileReport]] | None
    peers: Sequence[str]
    secure_cookies: bool = False


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


_DUMMY_HASH: list[str] = []


def _dummy_hash() -> str:
    """Checked for unknown names, so that "no such user" takes as long as a wrong password."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY_HASH[0]


# --- HTML: one escaping helper --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Markup:
    """HTML that is already safe. Made only by :func:`render` and :func:`join`."""

    html: str


def _escape(value: object) -> str:
    if isinstance(value, Markup):
        return value.html
    if value is None:
        return ""
    return html.escape(str(value), quote=True)


def render(template: str, /, **values: object) -> Markup:
    """Fill ``{name}`` slots of a literal template, escaping every value that is not Markup."""
    return Markup(template.format_map({k: _escape(v) for k, v in values.items()}))


def join(parts: Iterable[Markup], sep: str = "") -> Markup:
    return Markup(sep.join(p.html for p in parts))


EMPTY: Final = Markup("")


# --- sessions and throttling ----------------------------------------------------------


@dataclass
class _Session:
    user: str
    role: str
    password_hash: str  # the hash at login: a changed password ends the session
    csrf: str
    created_ms: int
    seen_ms: int


@dataclass
class _State:
    ctx: LiaisonContext
    limits: WebLimits
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: dict[bytes, _Session] = field(default_factory=dict)
    failures: dict[str, deque[int]] = field(default_factory=dict)
    password_checks: asyncio.Semaphore | None = None

    def login_token(self, prelogin: str) -> str:
        return hmac.new(self.secret, b"login\0" + prelogin.encode(), hashlib.sha256).hexdigest()

    def new_session(self, user: UserRecord, now: int) -> str:
        self._sweep(now)
        sid = secrets.token_urlsafe(32)
        self.sessions[_sid_key(sid)] = _Session(
            user.name, user.role, user.password_hash, secrets.token_urlsafe(32), now, now
        )
        return sid

    def _sweep(self, now: int) -> None:
        for key in [k for k, s in self.sessions.items() if not self._alive(s, now)]:
            del self.sessions[key]
        while len(self.sessions) >= self.limits.max_sessions:
            del self.sessions[next(iter(self.sessions))]  # the oldest login

    def _alive(self, s: _Session, now: int) -> bool:
        return (
            now - s.created_ms < self.limits.session_absolute_ms
            and now - s.seen_ms < self.limits.session_idle_ms
        )

    def session(self, request: web.Request) -> _Session | None:
        """The request's live session, if it has one and its user may still read."""
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid or len(sid) > 100:
            return None
        key = _sid_key(sid)
        s = self.sessions.get(key)
        if s is None:
            return None
        now = self.ctx.clock()
        user = self.ctx.users.get(s.user)
        if (
            not self._alive(s, now)
            or user is None
            or user.role not in ROLES
            or user.role != s.role
            or not hmac.compare_digest(user.password_hash, s.password_hash)
        ):
            del self.sessions[key]
            return None
        s.seen_ms = now
        return s

    def end_session(self, request: web.Request) -> None:
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            self.sessions.pop(_sid_key(sid), None)

    def throttled(self, keys: Sequence[str], now: int) -> bool:
        window = now - self.limits.failure_window_ms
        for key in keys:
            q = self.failures.get(key)
            if q is None:
                continue
            while q and q[0] <= window:
                q.popleft()
            if not q:
                del self.failures[key]
            elif len(q) >= self.limits.max_failures:
                return True
        return False

    def failed(self, keys: Sequence[str], now: int) -> None:
        if len(self.failures) >= self.limits.max_throttle_keys:
            window = now - self.limits.failure_window_ms
            for k in [k for k, q in self.failures.items() if not q or q[-1] <= window]:
                del self.failures[k]
            while len(self.failures) >= self.limits.max_throttle_keys:
                del self.failures[next(iter(self.failures))]
        for key in keys:
            self.failures.setdefault(key, deque()).append(now)


def _sid_key(sid: str) -> bytes:
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).digest()


LIAISON: Final = web.AppKey("ixb_liaison", _State)


# --- wiring ---------------------------------------------------------------------------


def setup_liaison(app: web.Application, ctx: LiaisonContext) -> None:
    """Add the liaison pages to the hub's app: ``/login``, ``/audit…``, ``/static/liaison.css``."""
    state = _State(ctx, LIMITS)
    app[LIAISON] = state
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_lifetime)
    r = app.router
    r.add_get("/", _root)
    r.add_get("/login", _login_form)
    r.add_post("/login", _login)
    r.add_post("/logout", _logout)
    r.add_get("/static/liaison.css", _css)
    r.add_get("/audit", _page(_exchange_log))
    r.add_get("/audit/message/{msg_id}", _page(_trail))
    r.add_get("/audit/proof/{index}", _page(_proof))
    r.add_get("/audit/witness", _page(_witness))
    r.add_get("/audit/deadlines", _page(_deadlines))
    if ctx.reconcile is not None:
        r.add_get("/audit/reconcile", _page(_reconcile))


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    state = app[LIAISON]
    state.password_checks = asyncio.Semaphore(state.limits.password_checks_at_once)
    yield
    state.sessions.clear()  # no live session outlives the server


async def _security_headers(_: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _state(request: web.Request) -> _State:
    return request.app[LIAISON]


async def _root(_: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/audit")


async def _css(_: web.Request) -> web.StreamResponse:
    return web.Response(text=CSS, content_type="text/css")


# --- login and logout -----------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only our own pages: no open redirect to another site after login."""
    if (
        value
        and (value == "/audit" or value.startswith(("/audit/", "/audit?")))
        and ("\\" not in value)
    ):
        return value[:2000]
    return "/audit"


async def _login_form(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    nxt = _safe_next(request.query.get("next"))
    s = st.session(request)
    note = (
        render(
            '<p class="note">You are logged in as {u}. <a href="{n}">Back to the audit log</a>,'
            " or log in as someone else.</p>",
            u=s.user,
            n=nxt,
        )
        if s is not None
        else EMPTY
    )
    return _login_page(request, st, nxt, note, 200)


def _login_page(
    request: web.Request, st: _State, nxt: str, message: Markup, status: int
) -> web.Response:
    prelogin = request.cookies.get(PRELOGIN_COOKIE)
    if not prelogin or len(prelogin) > 100:
        prelogin = secrets.token_urlsafe(32)
    body = render(
        """<main class="login">
<h1>ixb · {hub} hub</h1>
<p class="lead">Audit log of exchanges. For liaison officers and auditors of this hub.</p>
{message}
<form method="post" action="/login" class="login-form">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="next" value="{next}">
<label for="name">Name</label>
<input id="name" name="name" autocomplete="username" required maxlength="{maxlen}" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>
<p class="note">Every page you open is recorded in this hub's audit log.</p>
</main>""",
        hub=st.ctx.hub_id,
        message=message,
        csrf=st.login_token(prelogin),
        next=nxt,
        maxlen=st.limits.max_field_chars,
    )
    resp = _html(f"Log in · ixb {st.ctx.hub_id}", body, status)
    resp.set_cookie(
        PRELOGIN_COOKIE,
        prelogin,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=st.ctx.secure_cookies,
    )
    return resp


async def _login(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    form = await request.post()
    prelogin = request.cookies.get(PRELOGIN_COOKIE, "")
    token = form.get("csrf")
    if (
        not prelogin
        or not isinstance(token, str)
        or not hmac.compare_digest(token.encode(), st.login_token(prelogin).encode())
    ):
        raise web.HTTPForbidden(text="The login form expired or did not come from this site.")
    name, password = form.get("name"), form.get("password")
    next_field = form.get("next")
    nxt = _safe_next(next_field if isinstance(next_field, str) else None)
    if (
        not isinstance(name, str)
        or not isinstance(password, str)
        or not 0 < len(name) <= st.limits.max_field_chars
        or len(password) > st.limits.max_password_chars
    ):
        return _login_page(request, st, nxt, _error("Enter a name and a password."), 400)
    now = st.ctx.clock()
    keys = (f"name:{name}", f"client:{request.remote}")
    if st.throttled(keys, now):
        return _login_page(
            request,
            st,
            nxt,
            _error("Too many failed attempts. Wait 15 minutes, then try again."),
            429,
        )
    user = st.ctx.users.get(name)
    ok = await _verify(st, user.password_hash if user else _dummy_hash(), password)
    if not ok or user is None or user.role not in ROLES:
        st.failed(keys, now)
        return _login_page(request, st, nxt, _error("Wrong name or password."), 401)
    st.failures.pop(keys[0], None)
    st.end_session(request)  # a new id at every login: no session fixation
    sid = st.new_session(user, now)
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(
        SESSION_COOKIE,
        sid,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=st.ctx.secure_cookies,
    )
    resp.del_cookie(PRELOGIN_COOKIE, path="/")
    raise resp


async def _verify(st: _State, password_hash: str, password: str) -> bool:
    sem = st.password_checks
    if sem is None:  # app not started through its runner
        return await asyncio.to_thread(check_password, password_hash, password)
    async with sem:
        return await asyncio.to_thread(check_password, password_hash, password)


async def _logout(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    s = st.session(request)
    if s is None:
        raise web.HTTPForbidden(text="Not logged in.")
    token = (await request.post()).get("csrf")
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), s.csrf.encode()):
        raise web.HTTPForbidden(text="The form did not come from this site.")
    st.end_session(request)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


# --- pages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Page:
    title: str
    body: Markup
    read: str  # what the audit_read entry says was looked at
    status: int = 200
    alarm_rows: Sequence[WitnessRow] = ()  # the witness page adds the hub's own alarm rows


_PageHandler = Callable[[web.Request, _State, _Session], Awaitable[_Page]]


def _page(handler: _PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Require a reader's session, render the page in the common layout, log the read."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        st = _state(request)
        s = st.session(request)
        if s is None:
            if request.method in ("GET", "HEAD"):
                target = "/login?" + urllib.parse.urlencode({"next": request.path_qs})
                raise web.HTTPFound(target)
            raise web.HTTPForbidden(text="Not logged in.")
        page = await handler(request, st, s)
        banner = _alarm_banner(st, await asyncio.to_thread(st.ctx.audit.alarms), page.alarm_rows)
        if page.status == 200:
            # No read without its record: if logging fails the page is not shown.
            st.ctx.record_read(s.user, page.read)
        return _html(
            f"{page.title} · ixb {st.ctx.hub_id}",
            _layout(request, st, s, page, banner),
            page.status,
        )

    return wrapped


_NAV: Final = (
    ("/audit", "Exchange log"),
    ("/audit/witness", "Witnesses"),
    ("/audit/reconcile", "Reconcile"),
    ("/audit/deadlines", "Deadlines"),
)


def _layout(request: web.Request, st: _State, s: _Session, page: _Page, banner: Markup) -> Markup:
    links = []
    for href, label in _NAV:
        if href == "/audit/reconcile" and st.ctx.reconcile is None:
            continue
        here = request.path == href or (href == "/audit" and request.path.startswith("/audit/m"))
        links.append(
            render(
                '<a href="{href}"{cur}>{label}</a>',
                href=href,
                label=label,
                cur=Markup(' aria-current="page"' if here else ""),
            )
        )
    return render(
        """<header class="top">
<div class="brand"><strong>ixb</strong> · {hub} hub · audit log</div>
<nav>{links}</nav>
<form method="post" action="/logout" class="who">
<span>{user} <span class="role">{role}</span></span>
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit">Log out</button>
</form>
</header>
<main>
{banner}
<h1>{title}</h1>
{body}
</main>
<footer>Times are UTC. The log holds metadata only, never message content.
Every page you open is itself recorded in this hub's audit log.</footer>""",
        hub=st.ctx.hub_id,
        links=join(links),
        user=s.user,
        role=s.role,
        csrf=s.csrf,
        banner=banner,
        title=page.title,
        body=page.body,
    )


def _html(title: str, body: Markup, status: int) -> web.Response:
    page = render(
        """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/static/liaison.css">
</head>
<body>
{body}
</body>
</html>
""",
        title=title,
        body=body,
    )
    return web.Response(text=page.html, content_type="text/html", status=status)


def _error(text: str) -> Markup:
    return render('<p class="error" role="alert">{text}</p>', text=text)


def _alarm_banner(
    st: _State, alarms: Sequence[tuple[str, int, str]], witness_rows: Sequence[WitnessRow]
) -> Markup:
    """Shown on every page while any alarm stands: tampering must not go unnoticed.

    Every page reads the log's stored alarms (one small table); the hub's
    witness rows, which may cost more to build, only on the witness page.
    """
    alarms = alarms[-st.limits.alarms_shown :]
    rows = [r for r in witness_rows if r.alarm]
    if not alarms and not rows:
        return EMPTY
    items = [
        render(
            "<li><strong>{o}</strong>: {d} <span class=when>({t})</span></li>",
            o=_log_name(o),
            d=d,
            t=_utc(a),
        )
        for o, a, d in alarms
    ] + [
        render(
            "<li><strong>{p}</strong> ({dir}): {s} <span class=when>({t})</span></li>",
            p=r.peer,
            dir=r.direction,
            s=r.status,
            t=_utc(r.at_ms),
        )
        for r in rows
    ]
    return render(
        """<section class="alarm" role="alert">
<h2>Tampering alarm</h2>
<p>A log failed to extend what it had signed before, or a witness saw two versions of it.
Treat the affected log as untrusted until resolved. <a href="/audit/witness">Witness status</a></p>
<ul>{items}</ul>
</section>""",
        items=join(items),
    )


# --- exchange log ---------------------------------------------------------------------

_SEARCH_FIELDS: Final = ("msg_id", "case_ref", "agency", "country", "type", "event", "code")


@dataclass(frozen=True)
class _Query:
    filters: dict[str, str]
    since_ms: int | None
    until_ms: int | None
    before: int | None
    raw: dict[str, str]


def _parse_query(request: web.Request, st: _State) -> _Query | str:
    q = request.query
    raw: dict[str, str] = {}
    for name in (*_SEARCH_FIELDS, "from", "to"):
        value = q.get(name, "").strip()
        if len(value) > st.limits.max_field_chars:
            return f"The {name} field is too long."
        if value:
            raw[name] = value
    filters = {k: v for k, v in raw.items() if k in _SEARCH_FIELDS}
    if "country" in filters:
        filters["country"] = filters["country"].upper()
    if "agency" in filters:
        filters["agency"] = filters["agency"].upper()
    if "msg_id" in filters:
        try:
            filters["msg_id"] = format_message_id(parse_message_id(filters["msg_id"]))
        except IxbError:
            return "The message id is not a UUID."
    try:
        since = _day_ms(raw["from"]) if "from" in raw else None
        until = _day_ms(raw["to"]) + 86_400_000 if "to" in raw else None
    except ValueError:
        return "Dates are written YYYY-MM-DD."
    before = None
    if "before" in q:
        text = q["before"]
        if not text.isdigit() or len(text) > 20:
            return "The page position is not a number."
        before = int(text)
    return _Query(filters, since, until, before, raw)


def _day_ms(text: str) -> int:
    day = date.fromisoformat(text)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


async def _exchange_log(request: web.Request, st: _State, s: _Session) -> _Page:
    parsed = _parse_query(request, st)
    form_values = {k: v for k, v in request.query.items() if k != "before"}
    if isinstance(parsed, str):
        body = join([_search_form(form_values), _error(parsed)])
        return _Page("Exchange log", body, "", 400)
    limit = st.limits.page_size

    def fetch() -> tuple[list[StoredEntry], int]:
        audit = st.ctx.audit
        f = parsed.filters.get
        found = audit.search(
            AuditQuery(
                msg_id=f("msg_id"),
                case_ref=f("case_ref"),
                agency=f("agency"),
                country=f("country"),
                type=f("type"),
                event=f("event"),
                code=f("code"),
                since_ms=parsed.since_ms,
                until_ms=parsed.until_ms,
                before_index=parsed.before,
            ),
            limit=limit + 1,
        )
        return found, audit.size

    found, size = await asyncio.to_thread(fetch)
    rows, more = found[:limit], len(found) > limit
    pager = []
    if parsed.before is not None:
        pager.append(
            render('<a href="/audit?{q}">⇤ Newest</a>', q=urllib.parse.urlencode(parsed.raw))
        )
    if more:
        qs = urllib.parse.urlencode({**parsed.raw, "before": str(rows[-1].index)})
        pager.append(render('<a href="/audit?{q}" rel="next">Older entries →</a>', q=qs))
    if rows:
        summary = render(
            "<p class=summary>Entries <strong>#{hi}</strong> to <strong>#{lo}</strong>,"
            " newest first. The log holds {size} entries.</p>",
            hi=rows[0].index,
            lo=rows[-1].index,
            size=f"{size:,}",
        )
        table = _entries_table(rows, link_messages=True)
    else:
        summary = render(
            "<p class=summary>No entries match. The log holds {size} entries.</p>", size=f"{size:,}"
        )
        table = EMPTY
    body = join(
        [
            _search_form(form_values),
            summary,
            table,
            render('<nav class="pager">{p}</nav>', p=join(pager)),
        ]
    )
    read = "audit " + urllib.parse.urlencode(
        {**parsed.raw, **({"before": str(parsed.before)} if parsed.before is not None else {})}
    )
    return _Page("Exchange log", body, read.strip())


def _search_form(values: Mapping[str, str]) -> Markup:
    def text(name: str, label: str, placeholder: str, kind: str = "text") -> Markup:
        return render(
            '<label>{label}<input name="{name}" type="{kind}" value="{value}"'
            ' placeholder="{ph}" maxlength="128"></label>',
            label=label,
            name=name,
            kind=kind,
            value=values.get(name, ""),
            ph=placeholder,
        )

    def select(name: str, label: str, options: Iterable[str]) -> Markup:
        current = values.get(name, "")
        opts = [render('<option value="">any</option>')]
        opts += [
            render(
                '<option value="{v}"{sel}>{v}</option>',
                v=o,
                sel=Markup(" selected" if o == current else ""),
            )
            for o in options
        ]
        return render(
            '<label>{label}<select name="{name}">{opts}</select></label>',
            label=label,
            name=name,
            opts=join(opts),
        )

    return render(
        """<form method="get" action="/audit" class="search">
{msg}{case}{agency}{country}{type}{event}{code}{since}{until}
<div class="buttons"><button type="submit">Search</button> <a href="/audit">Clear</a></div>
</form>""",
        msg=text("msg_id", "Message id", "0193…-…"),
        case=text("case_ref", "Case ref", "e.g. TIP-2026-0117"),
        agency=text("agency", "Agency", "e.g. THA/DSI-ATHD"),
        country=text("country", "Country", "e.g. MYS"),
        type=select("type", "Type", sorted(MESSAGE_TYPES)),
        event=select("event", "Event", [e.value for e in AuditEvent]),
        code=text("code", "Error code", "e.g. ixb.E_SIGNATURE"),
        since=text("from", "From (UTC)", "YYYY-MM-DD", "date"),
        until=text("to", "To (UTC)", "YYYY-MM-DD", "date"),
    )


def _decoded(e: StoredEntry) -> AuditEntry | None:
    try:
        return decode_entry(e.data)
    except IxbError:
        return None


def _entries_table(rows: Sequence[StoredEntry], *, link_messages: bool) -> Markup:
    out = []
    for e in rows:
        d = _decoded(e)
        handling = d.handling.value if d is not None and d.handling is not None else ""
        detail = d.detail if d is not None else None
        actor = d.actor if d is not None else None
        if e.msg_id and link_messages:
            message = render(
                '<a class="mid" href="/audit/message/{q}">{m}</a>',
                q=urllib.parse.quote(e.msg_id, safe=""),
                m=e.msg_id,
            )
        else:
            message = render('<span class="mid">{m}</span>', m=e.msg_id)
        out.append(
            render(
                """<tr class="{cls}">
<td class="num">{idx}</td><td class="time">{time}</td>
<td><span class="ev ev-{ev}">{ev}</span></td>
<td>{type}<br>{message}</td>
<td>{parties}</td><td class="handling">{handling}</td><td class="case">{case}</td>
<td>{code}{sep}{detail}{actor}</td><td>{peer}</td>
<td><a href="/audit/proof/{idx}">proof</a></td>
</tr>""",
                cls="refused" if e.code else "",
                idx=e.index,
                time=_utc(e.at_ms),
                ev=e.event,
                type=e.type or "",
                message=message,
                parties=_parties(e.sender, e.recipients),
                handling=handling,
                case=e.case_ref,
                code=render("<code>{c}</code>", c=e.code) if e.code else EMPTY,
                sep=Markup("<br>") if e.code and detail else EMPTY,
                detail=detail,
                actor=render("by {a}", a=actor) if actor else EMPTY,
                peer=e.peer,
            )
        )
    return render(
        """<table class="log">
<thead><tr><th class="num">#</th><th>Time (UTC)</th><th>Event</th><th>Message</th>
<th>Sender → recipients</th><th>Handling</th><th>Case ref</th><th>Code / detail</th>
<th>Peer</th><th>Proof</th></tr></thead>
<tbody>{rows}</tbody>
</table>""",
        rows=join(out),
    )


def _parties(sender: str | None, recipients: Sequence[str]) -> Markup:
    if not sender and not recipients:
        return EMPTY
    names = [render('<span class="who-is">{n}</span>', n=n) for n in recipients]
    return render(
        '<span class="who-is">{s}</span> <span class="arrow">→</span> {r}',
        s=sender or "?",
        r=join(names, ", ") if names else "?",
    )


# --- one message's trail --------------------------------------------------------------


async def _trail(request: web.Request, st: _State, s: _Session) -> _Page:
    raw = request.match_info["msg_id"]
    try:
        msg_id = format_message_id(parse_message_id(raw[:100]))
    except IxbError:
        raise web.HTTPNotFound(text="Not a message id.") from None
    limits = st.limits

    def fetch() -> tuple[list[StoredEntry], list[StoredEntry]]:
        audit = st.ctx.audit
        found = audit.search(AuditQuery(msg_id=msg_id), limit=limits.trail_entries)
        case_ref = found[-1].case_ref if found else None
        # Receipts and replies are messages of their own; the case ref ties them together.
        related = (
            audit.search(AuditQuery(case_ref=case_ref), limit=limits.page_size + len(found))
            if case_ref
            else []
        )
        return found, [e for e in related if e.msg_id != msg_id][: limits.page_size]

    found, related = await asyncio.to_thread(fetch)
    entries = found[::-1]  # oldest first: the order things happened
    if not entries:
        body = render("<p>This hub's log has no entry for message <code>{m}</code>.</p>", m=msg_id)
        return _Page("Message trail", body, f"trail {msg_id}")
    first = entries[0]
    d = next((x for x in map(_decoded, entries) if x is not None), None)
    facts = [
        ("Message id", render("<code>{m}</code>", m=msg_id)),
        ("Type", render("{t}", t=first.type)),
        ("Sender → recipients", _parties(first.sender, first.recipients)),
        ("Case ref", render("{c}", c=first.case_ref)),
    ]
    if d is not None:
        facts += [
            (
                "Handling",
                render(
                    "<strong>{h}</strong> — {m}",
                    h=d.handling.value if d.handling else "",
                    m=d.handling.meaning if d.handling else "",
                ),
            ),
            (
                "Payload hash",
                render("<code>{h}</code>", h=d.payload_hash.hex() if d.payload_hash else ""),
            ),
            ("Size", render("{n}", n=f"{d.size:,} bytes" if d.size is not None else "")),
        ]
    facts_html = join(render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in facts)
    steps = []
    for e in entries:
        ed = _decoded(e)
        steps.append(
            render(
                """<tr class="{cls}"><td class="num">{idx}</td><td class="time">{time}</td>
<td><span class="ev ev-{ev}">{ev}</span></td><td>{parties}</td><td>{peer}</td>
<td>{code} {detail}</td>
<td><a href="/audit/proof/{idx}">inclusion proof</a></td></tr>""",
                cls="refused" if e.code else "",
                idx=e.index,
                time=_utc(e.at_ms),
                ev=e.event,
                parties=_parties(e.sender, e.recipients),
                peer=e.peer,
                code=render("<code>{c}</code>", c=e.code) if e.code else EMPTY,
                detail=ed.detail if ed is not None else None,
            )
        )
    more = (
        render("<p class=note>Showing the latest {n} entries only.</p>", n=len(entries))
        if len(entries) >= st.limits.trail_entries
        else EMPTY
    )
    body = render(
        """<dl class="facts">{facts}</dl>
<h2>What this hub did with it</h2>
<table class="log trail">
<thead><tr><th class="num">Leaf #</th><th>Time (UTC)</th><th>Event</th><th>Sender → recipients</th>
<th>Peer</th><th>Code / detail</th><th>Proof</th></tr></thead>
<tbody>{steps}</tbody></table>
{more}
<p class="note">The counterpart country's hub keeps its own entries for this message;
<a href="/audit/reconcile">Reconcile</a> compares the two logs.</p>
{related}""",
        facts=facts_html,
        steps=join(steps),
        more=more,
        related=render(
            "<h2>Other entries in case {c} (receipts, replies), newest first</h2>{t}",
            c=first.case_ref,
            t=_entries_table(related, link_messages=True),
        )
        if related
        else EMPTY,
    )
    return _Page("Message trail", body, f"trail {msg_id}")


# --- inclusion proof ------------------------------------------------------------------


async def _proof(request: web.Request, st: _State, s: _Session) -> _Page:
    text = request.match_info["index"]
    if not text.isdigit() or len(text) > 20:
        raise web.HTTPNotFound(text="No such leaf.")
    index = int(text)

    def fetch() -> tuple[StoredEntry, int, bytes, bytes | None, list[bytes]] | None:
        audit = st.ctx.audit
        size = audit.size
        if index >= size:
            return None
        entry = audit.entries(index, index + 1)[0]
        cp = audit.latest_checkpoint()
        if cp is not None and index < cp[0]:
            note = _with_cosignatures(cp[2], [n for _, _, n, _ in audit.cosignatures(cp[0])])
            return entry, cp[0], cp[1], note, audit.inclusion_proof(index, cp[0])
        return entry, size, audit.root(size), None, audit.inclusion_proof(index, size)

    got = await asyncio.to_thread(fetch)
    if got is None:
        raise web.HTTPNotFound(text="No such leaf.")
    entry, size, root, note, proof = got
    leaf = merkle.leaf_hash(entry.data)
    try:
        merkle.verify_inclusion(entry.data, index, size, proof, root)
        verdict = render(
            '<p class="ok">✔ Verified: leaf #{i} is in the tree of size {n}.</p>', i=index, n=size
        )
    except IxbError as exc:
        verdict = render('<p class="error">✘ The proof does not verify: {e}</p>', e=exc.detail)
    if note is not None:
        against = render(
            "<p>Proved against the latest <strong>signed checkpoint</strong>: size {n},"
            " signed {t}.</p>",
            n=f"{size:,}",
            t=_utc(_note_time(note)),
        )
        note_html = render(
            "<h2>Signed checkpoint (with witness cosignatures)</h2><pre class=note>{n}</pre>",
            n=note.decode("utf-8", "replace"),
        )
    else:
        against = render(
            "<p class=warn>This entry is newer than the latest signed checkpoint; proved"
            " against the current, not yet signed, tree of size {n}. The next checkpoint"
            " will cover it.</p>",
            n=f"{size:,}",
        )
        note_html = EMPTY
    hashes = join(
        render("<tr><td class=num>{i}</td><td><code>{h}</code></td></tr>", i=i, h=h.hex())
        for i, h in enumerate(proof)
    )
    body = render(
        """{verdict}{against}
<dl class="facts">
<dt>Leaf index</dt><dd>{index}</dd>
<dt>Event</dt><dd>{event} at {time}</dd>
<dt>Message</dt><dd>{mid}</dd>
<dt>Leaf hash</dt><dd><code>{leaf}</code></dd>
<dt>Tree size</dt><dd>{size}</dd>
<dt>Root hash</dt><dd><code>{root}</code></dd>
</dl>
<h2>Proof: sibling hashes, lowest first (RFC 9162 §2.1.3)</h2>
<table class="hashes"><thead><tr><th>#</th><th>SHA-256</th></tr></thead>
<tbody>{hashes}</tbody></table>
<h2>Leaf bytes (canonical MessagePack, hex)</h2>
<pre class="hex">{data}</pre>
{note}""",
        verdict=verdict,
        against=against,
        index=index,
        event=entry.event,
        time=_utc(entry.at_ms),
        mid=render('<a href="/audit/message/{m}">{m}</a>', m=entry.msg_id) if entry.msg_id else "",
        leaf=leaf.hex(),
        size=f"{size:,}",
        root=root.hex(),
        hashes=hashes,
        data=entry.data.hex(),
        note=note_html,
    )
    return _Page("Inclusion proof", body, f"proof {index}")


def _with_cosignatures(note: bytes, cosigned: Sequence[bytes]) -> bytes:
    """Our checkpoint note with every witness's cosignature line, as an auditor checks it."""
    try:
        return merge_notes(note, *cosigned)
    except IxbError:
        return note


def _note_time(note: bytes) -> int | None:
    try:
        body, _ = parse_signed_note(note)
        return parse_checkpoint(body).time_ms
    except IxbError:
        return None


# --- witnesses ------------------------------------------------------------------------


async def _witness(request: web.Request, st: _State, s: _Session) -> _Page:
    ctx = st.ctx

    def fetch() -> tuple[
        tuple[int, bytes, bytes] | None,
        list[tuple[str, int, bytes, int]],
        list[tuple[str, tuple[int, bytes, bytes, int] | None]],
        int,
    ]:
        audit = ctx.audit
        cp = audit.latest_checkpoint()
        cosigs = audit.cosignatures(cp[0]) if cp is not None else []
        theirs = [(p, audit.last_witnessed(log_origin(p))) for p in ctx.peers]
        return cp, cosigs, theirs, audit.size

    cp, cosigs, theirs, size = await asyncio.to_thread(fetch)
    rows = ctx.witness_status()
    if cp is None:
        ours = render("<p class=warn>This hub has not signed a checkpoint yet.</p>")
    else:
        by_witness = {w: at for w, _, _, at in cosigs}
        cos_rows = []
        for p in ctx.peers:
            name = witness_name(p)
            at = by_witness.pop(name, None)
            cos_rows.append(
                render(
                    "<tr class={cls}><td>{p}</td><td>{st}</td><td class=time>{t}</td></tr>",
                    cls="" if at is not None else "missing",
                    p=p,
                    st="cosigned" if at is not None else "not cosigned (yet)",
                    t=_utc(at),
                )
            )
        cos_rows += [
            render("<tr><td>{w}</td><td>cosigned</td><td class=time>{t}</td></tr>", w=w, t=_utc(at))
            for w, at in by_witness.items()
        ]
        ours = render(
            """<dl class="facts">
<dt>Size</dt><dd>{size} entries <span class=note>(the log now holds {now})</span></dd>
<dt>Root hash</dt><dd><code>{root}</code></dd>
<dt>Signed</dt><dd>{time}</dd>
</dl>
<table class="log"><thead><tr><th>Peer (witness)</th><th>Status</th><th>Cosigned (UTC)</th></tr>
</thead><tbody>{rows}</tbody></table>""",
            size=f"{cp[0]:,}",
            now=f"{size:,}",
            root=cp[1].hex(),
            time=_utc(_note_time(cp[2])),
            rows=join(cos_rows),
        )
    status_rows = join(
        render(
            """<tr class="{cls}"><td>{peer}</td><td>{dir}</td><td class=num>{size}</td>
<td><code>{root}</code></td><td class=time>{t}</td><td>{status}</td></tr>""",
            cls="alarm-row" if r.alarm else "",
            peer=r.peer,
            dir=r.direction,
            size=f"{r.size:,}" if r.size is not None else "—",
            root=_short_hex(r.root_hex),
            t=_utc(r.at_ms),
            status=render("<strong>ALARM</strong> {s}", s=r.status) if r.alarm else r.status,
        )
        for r in rows
    )
    their_rows = join(
        render(
            "<tr><td>{p}</td><td class=num>{n}</td><td><code>{root}</code></td>"
            "<td class=time>{t}</td></tr>",
            p=p,
            n=f"{w[0]:,}" if w else "—",
            root=_short_hex(w[1].hex()) if w else "",
            t=_utc(w[3]) if w else "never",
        )
        for p, w in theirs
    )
    body = render(
        """<h2>Our log ({hub}): latest signed checkpoint and who cosigned it</h2>
{ours}
<h2>Witnessing, peer by peer</h2>
<table class="log"><thead><tr><th>Peer</th><th>Direction</th><th class="num">Last size</th>
<th>Root</th>
<th>When (UTC)</th><th>Status</th></tr></thead><tbody>{status}</tbody></table>
<h2>Peers' logs we witness (last checkpoint we verified)</h2>
<table class="log"><thead><tr><th>Peer</th><th class="num">Size</th><th>Root</th>
<th>Verified (UTC)</th></tr>
</thead><tbody>{theirs}</tbody></table>""",
        hub=ctx.hub_id,
        ours=ours,
        status=status_rows,
        theirs=their_rows,
    )
    return _Page("Checkpoints and witnesses", body, "witness", alarm_rows=rows)


def _log_name(origin: str) -> str:
    """``MMR's log`` for ``ixb.MMR``: officers think in countries, not origins."""
    cc = origin.removeprefix("ixb.")
    return f"{cc}'s log" if cc != origin and len(cc) == 3 else origin


def _short_hex(value: str | None) -> str:
    if not value:
        return ""
    return value if len(value) <= 16 else value[:16] + "…"


# --- reconciliation -------------------------------------------------------------------


async def _reconcile(request: web.Request, st: _State, s: _Session) -> _Page:
    ctx = st.ctx
    assert ctx.reconcile is not None  # noqa: S101 - the route exists only then
    peer = request.query.get("peer", "").strip().upper()
    options = join(
        render(
            '<option value="{p}"{sel}>{p}</option>',
            p=p,
            sel=Markup(" selected" if p == peer else ""),
        )
        for p in ctx.peers
    )
    form = render(
        """<form method="get" action="/audit/reconcile" class="search inline">
<label>Compare this hub's log with the log of
<select name="peer">{options}</select></label>
<div class="buttons"><button type="submit">Reconcile</button></div>
</form>""",
        options=options,
    )
    if not peer:
        return _Page("Reconcile with a peer", form, "reconcile")
    if peer not in ctx.peers:
        return _Page(
            "Reconcile with a peer", join([form, _error("Not a peer of this hub.")]), "", 400
        )
    try:
        report = await ctx.reconcile(peer)
    except (IxbError, OSError, TimeoutError) as exc:
        detail = exc.detail if isinstance(exc, IxbError) else (str(exc) or type(exc).__name__)
        msg = _error(f"Reconciliation with {peer} failed: {detail}")
        return _Page("Reconcile with a peer", join([form, msg]), "", 502)
    cap = st.limits.reconcile_rows

    def missing(rows: Sequence[tuple[str, str, int]], where: str) -> Markup:
        if not rows:
            return render("<p class=ok>None: every entry {w} has its counterpart.</p>", w=where)
        body = join(
            render(
                "<tr><td>{m}</td><td><span class='ev ev-{e}'>{e}</span></td>"
                "<td class=time>{t}</td></tr>",
                m=_mid_link(m),
                e=e,
                t=_utc(t),
            )
            for m, e, t in rows[:cap]
        )
        return render(
            """<table class="log"><thead><tr><th>Message</th><th>Event</th><th>Time (UTC)</th></tr>
</thead><tbody>{b}</tbody></table>{more}""",
            b=body,
            more=_more(len(rows), cap),
        )

    if report.different:
        diff = render(
            """<table class="log"><thead><tr><th>Message</th><th>{here}</th><th>{there}</th></tr>
</thead><tbody>{b}</tbody></table>{more}""",
            here=f"At {ctx.hub_id}",
            there=f"At {report.peer}",
            b=join(
                render("<tr><td>{m}</td><td>{h}</td><td>{t}</td></tr>", m=_mid_link(m), h=h, t=t)
                for m, h, t in report.different[:cap]
            ),
            more=_more(len(report.different), cap),
        )
    else:
        diff = render("<p class=ok>None.</p>")
    clean = not (report.only_here or report.only_there or report.different)
    body = render(
        """{form}
<p class="summary">Exchanges between {hub} and {peer} since {since}.</p>
<ul class="counts">
<li class="ok"><strong>{matched}</strong> matched</li>
<li class="{c1}"><strong>{n1}</strong> only in our log</li>
<li class="{c2}"><strong>{n2}</strong> only in {peer}'s log</li>
<li class="{c3}"><strong>{n3}</strong> recorded differently</li>
</ul>
{verdict}
<h2>Only in our log ({hub})</h2>{here}
<h2>Only in {peer}'s log</h2>{there}
<h2>Recorded differently</h2>{diff}""",
        form=form,
        hub=ctx.hub_id,
        peer=report.peer,
        since=_utc(report.since_ms),
        matched=f"{report.matched:,}",
        n1=f"{len(report.only_here):,}",
        n2=f"{len(report.only_there):,}",
        n3=f"{len(report.different):,}",
        c1="bad" if report.only_here else "ok",
        c2="bad" if report.only_there else "ok",
        c3="bad" if report.different else "ok",
        verdict=render("<p class=ok>✔ The two logs agree.</p>")
        if clean
        else render("<p class=warn>The two logs disagree: see below.</p>"),
        here=missing(report.only_here, f"in {ctx.hub_id}'s log"),
        there=missing(report.only_there, f"in {report.peer}'s log"),
        diff=diff,
    )
    return _Page(f"Reconcile with {report.peer}", body, f"reconcile peer={peer}")


def _more(n: int, cap: int) -> Markup:
    return render("<p class=note>and {k} more.</p>", k=f"{n - cap:,}") if n > cap else EMPTY


def _mid_link(msg_id: str) -> Markup:
    return render(
        '<a class="mid" href="/audit/message/{q}">{m}</a>',
        q=urllib.parse.quote(msg_id, safe=""),
        m=msg_id,
    )


# --- deadlines ------------------------------------------------------------------------


async def _deadlines(request: web.Request, st: _State, s: _Session) -> _Page:
    now = st.ctx.clock()
    rows = st.ctx.deadlines(now)
    overdue = sorted((r for r in rows if not r.answered and r.due_ms < now), key=lambda r: r.due_ms)
    open_ = sorted((r for r in rows if not r.answered and r.due_ms >= now), key=lambda r: r.due_ms)
    answered = sorted((r for r in rows if r.answered), key=lambda r: -r.due_ms)

    def table(items: Sequence[DeadlineRow], cls: str, when: Callable[[DeadlineRow], str]) -> Markup:
        if not items:
            return render("<p class=ok>None.</p>")
        return render(
            """<table class="log {cls}"><thead><tr><th>Message</th><th>Type</th>
<th>Sender → recipients</th><th>Priority</th><th>Sent (UTC)</th><th>Due (UTC)</th><th></th></tr>
</thead><tbody>{b}</tbody></table>""",
            cls=cls,
            b=join(
                render(
                    """<tr><td>{m}</td><td>{t}</td><td>{p}</td>
<td><span class="prio prio-{pr}">{pr}</span></td>
<td class=time>{c}</td><td class=time>{d}</td><td class=when>{w}</td></tr>""",
                    m=_mid_link(r.msg_id),
                    t=r.type,
                    p=_parties(r.sender, r.recipients),
                    pr=r.priority,
                    c=_utc(r.created_ms),
                    d=_utc(r.due_ms),
                    w=when(r),
                )
                for r in items
            ),
        )

    body = render(
        """<h2 class="{oc}">Overdue: {no}</h2>{over}
<h2>Open: {nopen}</h2>{open}
{ans}""",
        oc="bad" if overdue else "",
        no=len(overdue),
        over=table(overdue, "overdue", lambda r: "overdue by " + _duration(now - r.due_ms)),
        nopen=len(open_),
        open=table(open_, "open", lambda r: "due in " + _duration(r.due_ms - now)),
        ans=render("<h2>Answered</h2>{t}", t=table(answered, "answered", lambda r: "answered"))
        if answered
        else EMPTY,
    )
    return _Page("Deadlines", body, "deadlines")


# --- formatting -----------------------------------------------------------------------


def _utc(ms: int | None) -> str:
    if ms is None:
        return "—"
    try:
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    except OverflowError:
        return str(ms)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _duration(ms: int) -> str:
    minutes = max(ms, 0) // 60_000
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


CSS: Final = """\
/* ixb liaison pages: readable on screen and on paper; no scripts, no web fonts. */
:root {
  --ink: #1b1f24; --muted: #59636e; --line: #d5dae0; --bg: #ffffff; --zebra: #f5f7f9;
  --brand: #14365d; --link: #0b5cad; --red: #b3261e; --red-bg: #fdecea; --green: #1e6b34;
  --green-bg: #e7f4ea; --amber-bg: #fff4d6;
}
* { box-sizing: border-box; }
html { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
body { margin: 0; color: var(--ink); background: var(--bg); }
a { color: var(--link); }
code, .mid, pre, .hex { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: 0.86em; }
.top { display: flex; align-items: center; gap: 1.5rem; padding: 0.6rem 1.5rem;
  background: var(--brand); color: #fff; flex-wrap: wrap; }
.top .brand { font-size: 1.05rem; }
.top nav { display: flex; gap: 0.3rem; flex: 1; }
.top nav a { color: #fff; text-decoration: none; padding: 0.3rem 0.7rem; border-radius: 4px; }
.top nav a:hover { background: rgba(255, 255, 255, 0.15); }
.top nav a[aria-current="page"] { background: #fff; color: var(--brand); font-weight: 600; }
.who { display: flex; align-items: center; gap: 0.6rem; margin: 0; }
.who .role { font-size: 0.8em; padding: 0.05rem 0.45rem; border: 1px solid #fff;
  border-radius: 9px; }
main { padding: 0.5rem 1.5rem 2rem; max-width: 1500px; }
h1 { font-size: 1.5rem; margin: 1rem 0 0.6rem; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 0.5rem; }
h2.bad { color: var(--red); }
footer { color: var(--muted); font-size: 0.85rem; padding: 1rem 1.5rem;
  border-top: 1px solid var(--line); }
button { font: inherit; padding: 0.35rem 1rem; border: 1px solid var(--brand); border-radius: 4px;
  background: var(--brand); color: #fff; cursor: pointer; }
.who button { background: transparent; border-color: #fff; padding: 0.15rem 0.7rem; }
input, select { font: inherit; padding: 0.3rem 0.4rem; border: 1px solid #9aa4ae;
  border-radius: 4px;
  width: 100%; background: #fff; }
.search { display: grid; grid-template-columns: repeat(auto-fill, minmax(12rem, 1fr));
  gap: 0.6rem 1rem;
  padding: 0.8rem 1rem; background: var(--zebra); border: 1px solid var(--line);
  border-radius: 6px; }
.search.inline { grid-template-columns: minmax(18rem, 26rem) auto; align-items: end; }
.search label { display: flex; flex-direction: column; font-size: 0.85rem; color: var(--muted);
  gap: 0.15rem; }
.search .buttons { display: flex; align-items: end; gap: 1rem; }
.summary { margin: 0.9rem 0 0.5rem; }
table { border-collapse: collapse; width: 100%; margin: 0.3rem 0 0.8rem; }
th, td { text-align: left; vertical-align: top; padding: 0.35rem 0.55rem;
  border-bottom: 1px solid var(--line); }
th { font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.03em; color: var(--muted);
  border-bottom: 2px solid var(--line); }
tbody tr:nth-child(even) { background: var(--zebra); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; color: var(--muted); }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.handling { font-weight: 600; }
.log .mid { color: var(--link); font-size: 0.78rem; white-space: nowrap; }
.who-is, td.case, td.when { white-space: nowrap; }
.arrow { color: var(--muted); }
tr.refused td { background: var(--red-bg); }
tr.alarm-row td { background: var(--red-bg); color: var(--red); }
tr.missing td { color: var(--muted); }
.ev { display: inline-block; padding: 0.05rem 0.5rem; border-radius: 9px; font-size: 0.82rem;
  background: #e8edf2; white-space: nowrap; }
.ev-accepted, .ev-delivered, .ev-relayed { background: var(--green-bg); color: var(--green); }
.ev-rejected, .ev-witness_alarm, .ev-directory_rejected { background: var(--red); color: #fff; }
.ev-audit_read, .ev-audit_export { background: var(--amber-bg); }
.prio { font-weight: 600; }
.prio-urgent { color: var(--red); }
.alarm { background: var(--red); color: #fff; padding: 0.8rem 1.2rem; margin: 1rem 0;
  border-radius: 6px;
  border: 3px solid #7a1712; }
.alarm h2 { margin: 0 0 0.3rem; font-size: 1.3rem; text-transform: uppercase;
  letter-spacing: 0.05em; }
.alarm a { color: #fff; font-weight: 600; }
.alarm ul { margin: 0.4rem 0 0; padding-left: 1.2rem; }
.alarm .when { opacity: 0.85; }
.error { background: var(--red-bg); color: var(--red); padding: 0.5rem 0.8rem; border-radius: 4px;
  border-left: 4px solid var(--red); }
.ok { color: var(--green); }
p.ok { background: var(--green-bg); padding: 0.5rem 0.8rem; border-radius: 4px; }
.warn { background: var(--amber-bg); padding: 0.5rem 0.8rem; border-radius: 4px; }
.bad { color: var(--red); }
.note { color: var(--muted); font-size: 0.88rem; }
pre.note { color: var(--ink); background: var(--zebra); padding: 0.6rem; white-space: pre-wrap; }
.hex { word-break: break-all; white-space: pre-wrap; background: var(--zebra); padding: 0.6rem; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1.2rem;
  margin: 0.6rem 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; word-break: break-all; }
.counts { display: flex; gap: 1rem; list-style: none; padding: 0; flex-wrap: wrap; }
.counts li { border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 1rem;
  min-width: 11rem; }
.counts li strong { display: block; font-size: 1.6rem; }
.counts li.bad { border-color: var(--red); background: var(--red-bg); }
.counts li.ok { color: var(--ink); }
.pager { display: flex; gap: 1.5rem; margin: 0.5rem 0; }
.login { max-width: 24rem; margin: 4rem auto; padding: 0 1rem; }
.login .lead { color: var(--muted); }
.login-form { display: flex; flex-direction: column; gap: 0.4rem; margin: 1.2rem 0; }
.login-form button { margin-top: 0.8rem; padding: 0.5rem; }
@media print {
  .top nav, .who, .search, .pager, footer { display: none; }
  .top { background: none; color: #000; padding: 0; }
  main { padding: 0; max-width: none; }
  a { color: inherit; text-decoration: none; }
  .alarm { background: none; color: var(--red); }
  tbody tr:nth-child(even), tr.refused td { background: none; }
  tr { break-inside: avoid; }
}
"""
