"""``setup_liaison``: the liaison pages added to an aiohttp application.

In: the application and a :class:`~broker.web.view.LiaisonView`. Out: the
routes ``/`` (→ ``/audit``), ``/login``, ``/logout``, ``/static/liaison.css``,
``/audit``, ``/audit/export.csv``, ``/audit/message/{msg_id}``,
``/audit/proof/{index}`` (and its ``export.zip``), ``/audit/witness``,
``/audit/deadlines`` and, when the view can reconcile, ``/audit/reconcile``;
security headers on every response of the application; every error as a
page in the site's frame; sessions dropped when it shuts down.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from broker.web import login, oversight, pages, proof
from broker.web.auth import Auth
from broker.web.limits import LIMITS, WebLimits
from broker.web.site import (
    LIAISON,
    Site,
    download,
    error_pages,
    new_environment,
    page,
    security_headers,
)
from broker.web.view import LiaisonView

__all__ = ["CSS", "setup_liaison"]

CSS: Final = importlib.resources.files("broker.web").joinpath("static/style.css").read_text("utf-8")


def setup_liaison(app: web.Application, view: LiaisonView, *, limits: WebLimits = LIMITS) -> None:
    """Add the liaison pages to the hub's app: ``/login``, ``/audit…``, ``/static/liaison.css``."""
    app[LIAISON] = Site(view, limits, Auth(limits))
    new_environment(app)
    app.on_response_prepare.append(security_headers)
    app.middlewares.append(error_pages)
    app.cleanup_ctx.append(_lifetime)
    r = app.router
    r.add_get("/", _root)
    r.add_get("/login", login.login_form)
    r.add_post("/login", login.login)
    r.add_post("/logout", login.logout)
    r.add_get("/static/liaison.css", _css)
    r.add_get("/audit", page(pages.exchange_log))
    r.add_get("/audit/export.csv", download(pages.export_csv))
    r.add_get("/audit/message/{msg_id}", page(pages.trail))
    r.add_get("/audit/proof/{index}", page(proof.proof))
    r.add_get("/audit/proof/{index}/export.zip", download(proof.proof_bundle))
    r.add_get("/audit/witness", page(oversight.witness))
    r.add_get("/audit/deadlines", page(oversight.deadlines))
    if view.reconcile is not None:
        r.add_get("/audit/reconcile", page(oversight.reconcile))


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    app[LIAISON].auth.close()  # no live session outlives the server


async def _root(_: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/audit")


async def _css(_: web.Request) -> web.StreamResponse:
    return web.Response(text=CSS, content_type="text/css")
