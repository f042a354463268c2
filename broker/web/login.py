"""``/login`` and ``/logout``: the HTTP side of :mod:`broker.web.auth`.

In: the login form (``csrf``, ``name``, ``password``, ``next``) and the
cookies. Out: 303 to ``next`` (only ever one of our own ``/audit`` pages) with
a new session cookie; or the form again with 400 (malformed), 401 (wrong name
or password), 429 with Retry-After (backing off, password not checked); 403 for a form without
its CSRF token. Passwords and cookies are never logged.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from broker.web.auth import Outcome
from broker.web.site import LIAISON, PRELOGIN_COOKIE, SESSION_COOKIE, Site, render

__all__ = ["duration_s", "login", "login_form", "logout", "safe_next"]


def duration_s(seconds: int) -> str:
    """``1 second``, ``45 seconds``, ``5 minutes``."""
    if seconds < 120:
        return f"{seconds} second" + ("" if seconds == 1 else "s")
    return f"{-(-seconds // 60)} minutes"


_REFUSED: Final = {
    Outcome.BAD_INPUT: "Enter a name and a password.",
    Outcome.WRONG: "Wrong name or password.",
}


def safe_next(value: str | None) -> str:
    """Only our own pages: no open redirect to another site after login."""
    if (
        value
        and (value == "/audit" or value.startswith(("/audit/", "/audit?")))
        and ("\\" not in value)
    ):
        return value[:2000]
    return "/audit"


async def login_form(request: web.Request) -> web.StreamResponse:
    site = request.app[LIAISON]
    s = site.session(request)
    return _login_page(
        request,
        site,
        safe_next(request.query.get("next")),
        logged_in_as=s.user if s is not None else None,
    )


def _login_page(
    request: web.Request,
    site: Site,
    next_url: str,
    *,
    error: str | None = None,
    logged_in_as: str | None = None,
    status: int = 200,
) -> web.Response:
    prelogin = site.auth.tokens.cookie(request.cookies.get(PRELOGIN_COOKIE))
    context = {
        "hub": site.view.hub_id,
        "error": error,
        "logged_in_as": logged_in_as,
        "csrf": site.auth.tokens.token(prelogin),
        "next_url": next_url,
        "max_name": site.limits.max_field_chars,
    }
    resp = render(request, "login.html", context, status)
    site.set_cookie(resp, PRELOGIN_COOKIE, prelogin)
    return resp


async def login(request: web.Request) -> web.StreamResponse:
    site = request.app[LIAISON]
    form = await request.post()
    if not site.auth.tokens.check(request.cookies.get(PRELOGIN_COOKIE), form.get("csrf")):
        raise web.HTTPForbidden(text="The login form expired or did not come from this site.")
    next_field = form.get("next")
    nxt = safe_next(next_field if isinstance(next_field, str) else None)
    result = await site.auth.log_in(
        site.view.users,
        form.get("name"),
        form.get("password"),
        client=site.client(request),
        now_ms=site.view.now_ms(),
        replacing=request.cookies.get(SESSION_COOKIE),  # a new id at every login: no fixation
    )
    if result.sid is None:
        if result.outcome is Outcome.THROTTLED:
            seconds = -(-result.retry_after_ms // 1000)
            error = (
                f"Too many failed attempts from this address. Try again in {duration_s(seconds)}."
            )
        else:
            error = _REFUSED[result.outcome]
        resp = _login_page(request, site, nxt, error=error, status=result.outcome.value)
        if result.outcome is Outcome.THROTTLED:
            resp.headers["Retry-After"] = str(-(-result.retry_after_ms // 1000))
        return resp
    resp = web.HTTPSeeOther(nxt)
    site.set_cookie(resp, SESSION_COOKIE, result.sid)
    resp.del_cookie(PRELOGIN_COOKIE, path="/")
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    site = request.app[LIAISON]
    s = site.session(request)
    if s is None:
        raise web.HTTPForbidden(text="Not logged in.")
    if not s.csrf_ok((await request.post()).get("csrf")):
        raise web.HTTPForbidden(text="The form did not come from this site.")
    site.auth.sessions.end(request.cookies.get(SESSION_COOKIE))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp
