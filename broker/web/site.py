"""The frame every liaison page shares: state, templates, headers, and the page wrapper.

In: a :class:`~broker.web.view.LiaisonView` and the request. Out: HTML
responses rendered from ``templates/`` with autoescaping on. Guaranteed:
every response carries :data:`SECURITY_HEADERS` (a CSP that allows no script
at all); a page behind the login is shown only to a live session, and only
after its read was recorded (``view.record_read``); a standing tampering
alarm is on every such page.
"""

from __future__ import annotations

import asyncio
import ipaddress
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from broker.web.auth import Auth, Session
from broker.web.format import FILTERS
from broker.web.limits import WebLimits
from broker.web.view import LiaisonView, WitnessRow

__all__ = [
    "JINJA",
    "LIAISON",
    "PRELOGIN_COOKIE",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "Download",
    "Page",
    "Site",
    "download",
    "error_pages",
    "new_environment",
    "page",
    "render",
]

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


@dataclass
class Site:
    """One hub's liaison pages: what they read, their bounds, their logins."""

    view: LiaisonView
    limits: WebLimits
    auth: Auth

    def session(self, request: web.Request) -> Session | None:
        """The request's live session, if it has one and its user may still read."""
        return self.auth.sessions.get(
            request.cookies.get(SESSION_COOKIE), self.view.users, self.view.now_ms()
        )

    def client(self, request: web.Request) -> str | None:
        """The client's address: the peer's, or from a trusted proxy its ``X-Forwarded-For``.

        The rightmost address not of a trusted proxy is the one the first
        trusted proxy saw connect; anything left of it the client could forge.
        """
        remote = request.remote
        trusted = self.view.trusted_proxies
        if remote not in trusted:
            return remote
        hops = [
            h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")
        ]
        for hop in reversed(hops):
            try:
                address = str(ipaddress.ip_address(hop))
            except ValueError:
                return remote  # a malformed header: the proxy itself is the client
            if address not in trusted:
                return address
        return remote

    def set_cookie(self, response: web.StreamResponse, name: str, value: str) -> None:
        response.set_cookie(
            name,
            value,
            httponly=True,
            samesite="Strict",
            path="/",
            secure=self.view.secure_cookies,
        )


LIAISON: Final = web.AppKey("ixb_liaison", Site)
JINJA: Final = web.AppKey("ixb_liaison_jinja", jinja2.Environment)


def _none_is_empty(value: object) -> object:
    """Absent values (no peer, no case ref) show as nothing, not as "None"."""
    return "" if value is None else value


def new_environment(app: web.Application) -> jinja2.Environment:
    """The templates of this package, autoescaped, strict about undefined names."""
    return aiohttp_jinja2.setup(
        app,
        app_key=JINJA,
        loader=jinja2.PackageLoader("broker.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_none_is_empty,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        filters=dict(FILTERS),
        default_helpers=False,
    )


def render(
    request: web.Request, template: str, context: Mapping[str, Any], status: int = 200
) -> web.Response:
    return aiohttp_jinja2.render_template(template, request, context, app_key=JINJA, status=status)


async def security_headers(_: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


_ERROR_TITLES: Final[Mapping[int, str]] = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
}


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as a page of the site: the common frame, its reason, a way back.

    A logged-in reader gets the navigation too; the status is kept. Redirects
    and responses pass through untouched.
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        site = request.app[LIAISON]
        s = site.session(request)
        title = _ERROR_TITLES.get(exc.status, exc.reason)
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        context = {
            "hub": site.view.hub_id,
            "title": title,
            "status": exc.status,
            "detail": detail,
            "logged_in": s is not None,
            "user": s.user if s is not None else "",
            "role": s.role if s is not None else "",
            "csrf": s.csrf if s is not None else "",
            "nav": _nav(request, site) if s is not None else [],
            "alarms": [],
            "alarm_rows": [],
        }
        resp = render(request, "error.html", context, exc.status)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp


# --- pages behind the login -----------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """What a page handler returns: its template and values, and what the read record says."""

    template: str
    title: str
    read: str  # what the audit_read entry says was looked at
    context: Mapping[str, Any] = field(default_factory=dict)
    status: int = 200
    alarm_rows: Sequence[WitnessRow] = ()  # the witness page adds the hub's own alarm rows


PageHandler = Callable[[web.Request, Site, Session], Awaitable[Page]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_NAV: Final = (
    ("/audit", "Exchange register"),
    ("/audit/witness", "Witnesses"),
    ("/audit/reconcile", "Reconcile"),
    ("/audit/deadlines", "Deadlines"),
)


def page(handler: PageHandler) -> Handler:
    """Require a reader's session, render the page in the common layout, log the read."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        site = request.app[LIAISON]
        s = site.session(request)
        if s is None:
            if request.method in ("GET", "HEAD"):
                target = "/login?" + urllib.parse.urlencode({"next": request.path_qs})
                raise web.HTTPFound(target)
            raise web.HTTPForbidden(text="Not logged in.")
        p = await handler(request, site, s)
        # Every page reads the log's stored alarms (one small table); the hub's
        # witness rows, which may cost more to build, only the witness page.
        alarms = await asyncio.to_thread(site.view.audit.alarms)
        if p.status == 200:
            # No read without its record: if logging fails the page is not shown.
            site.view.record_read(s.user, p.read)
        frame = {
            "hub": site.view.hub_id,
            "title": p.title,
            "user": s.user,
            "role": s.role,
            "csrf": s.csrf,
            "nav": _nav(request, site),
            "alarms": alarms[-site.limits.alarms_shown :],
            "alarm_rows": [r for r in p.alarm_rows if r.alarm],
        }
        return render(request, p.template, {**p.context, **frame}, p.status)

    return wrapped


@dataclass(frozen=True)
class Download:
    """What a download handler returns: the bytes, their type and name, what was read."""

    body: bytes
    content_type: str
    filename: str
    read: str


DownloadHandler = Callable[[web.Request, Site, Session], Awaitable[Download]]


def download(handler: DownloadHandler) -> Handler:
    """Like :func:`page`, for a file: a live session, the read recorded, then the bytes."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        site = request.app[LIAISON]
        s = site.session(request)
        if s is None:
            target = "/login?" + urllib.parse.urlencode({"next": request.path_qs})
            raise web.HTTPFound(target)
        d = await handler(request, site, s)
        site.view.record_read(s.user, d.read)
        resp = web.Response(body=d.body, content_type=d.content_type)
        resp.headers["Content-Disposition"] = f'attachment; filename="{d.filename}"'
        return resp

    return wrapped


@dataclass(frozen=True)
class _Link:
    href: str
    label: str
    current: bool


def _nav(request: web.Request, site: Site) -> list[_Link]:
    return [
        _Link(
            href,
            label,
            request.path == href or (href == "/audit" and request.path.startswith("/audit/m")),
        )
        for href, label in _NAV
        if href != "/audit/reconcile" or site.view.reconcile is not None
    ]
