"""``ixb hub run``'s composition: the hub, and beside it its HTTP server.

The HTTP server (``/healthz``, ``/metrics``, the liaison pages) reads the hub
through :func:`broker.liaison.liaison_view` and :meth:`Hub.health`; the hub
itself imports none of it. The server starts first, so ``/healthz`` answers
503 until the hub is ready, and stops last.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from broker.backup import state_lock
from broker.hub import Hub
from broker.liaison import liaison_view
from broker.web.app import setup_liaison
from protocols.errors import IoError


def http_app(hub: Hub) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        body = hub.health()
        # a standby (another process of the country is active) is healthy when it follows
        serving = bool(body["ready"]) or body["role"] == "standby"
        ok = serving and bool(body["nats"])
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=hub.metrics.render(), content_type="text/plain")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    setup_liaison(app, liaison_view(hub))
    return app


class HubService:
    """A hub and its HTTP server, run and stopped together."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.http_port: int | None = None
        """The bound port (the configured one, or the one the OS chose for port 0)."""

    async def run(self, stop: asyncio.Event | None = None) -> None:
        cfg = self.hub.config.http
        runner = web.AppRunner(http_app(self.hub), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, cfg.host, cfg.port)
            try:
                await site.start()
            except OSError as exc:  # the port is taken, or not ours to bind
                why = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
                raise IoError(f"cannot listen for HTTP on {cfg.host}:{cfg.port}: {why}") from None
            ports = [address[1] for address in runner.addresses if isinstance(address, tuple)]
            self.http_port = ports[0] if ports else cfg.port
            # one hub per state directory; a backup or restore waits for it to stop
            with state_lock(self.hub.config, holder="a second hub"):
                await self.hub.run(stop)
        finally:
            await runner.cleanup()
