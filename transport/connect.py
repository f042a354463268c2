"""Opening a NATS connection: the same options for the hub and the agency SDK.

Every connection is named (``nats-server`` shows the name in ``connz`` and in
its log), gives each connect attempt :data:`CONNECT_TIMEOUT_S`, and once
connected reconnects every :data:`RECONNECT_WAIT_S` for ever by default: a
hub or an agency outlives restarts of its server.

With unbounded reconnects nats-py also retries the *first* connect for ever.
The hub wants that (it waits for its server, and stops when told to); a
command-line client wants an answer, so ``give_up_after`` bounds the first
connect without bounding later reconnects.

nats-py reports asynchronous errors (permission violations, slow consumers,
refused connection attempts) to an error callback whose default logs a full
traceback each time; here each is one structured log line naming the
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.aio.client import DEFAULT_INBOX_PREFIX
from nats.aio.client import Client as NatsClient

log = structlog.get_logger("ixb.nats")

CONNECT_TIMEOUT_S = 5
"""Per attempt of the first connect (nats-py's default is 2 s)."""
RECONNECT_WAIT_S = 0.5
"""Pause between reconnect attempts to the same server."""
UNBOUNDED = -1
"""``max_reconnect_attempts`` for "never give up"."""


def error_logger(
    name: str, seen: list[Exception] | None = None
) -> Callable[[Exception], Awaitable[None]]:
    """An error callback that logs one line per error (and appends it to ``seen``)."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats_error", connection=name, error=type(exc).__name__, detail=str(exc))
        if seen is not None:
            seen[:] = [exc]

    return on_error


async def connect(
    url: str,
    *,
    user: str,
    password: str,
    name: str,
    inbox_prefix: str | bytes = DEFAULT_INBOX_PREFIX,
    max_reconnect_attempts: int = UNBOUNDED,
    connect_timeout: int = CONNECT_TIMEOUT_S,
    give_up_after: float | None = None,
) -> NatsClient:
    """A connected client.

    Raises ``TimeoutError`` if no connect succeeded within ``give_up_after``
    seconds (``None``: keep trying while reconnects are unbounded), and
    nats-py's errors or ``OSError`` when it gives up by itself.
    """
    nc = NatsClient()
    seen: list[Exception] = []
    try:
        async with asyncio.timeout(give_up_after):
            await nc.connect(
                url,
                user=user,
                password=password,
                name=name,
                inbox_prefix=inbox_prefix,
                error_cb=error_logger(name, seen),
                allow_reconnect=True,
                max_reconnect_attempts=max_reconnect_attempts,
                reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]  # typed int
                connect_timeout=connect_timeout,
            )
    except TimeoutError:
        await _abandon(nc)
        if give_up_after is None:
            raise
        last = f"{type(seen[0]).__name__}: {seen[0]}" if seen else "no answer"
        raise TimeoutError(f"no NATS server at {url} within {give_up_after:g} s ({last})") from None
    except BaseException:  # cancelled (the hub is stopping) or refused: leave nothing running
        await _abandon(nc)
        raise
    return nc


async def _abandon(nc: NatsClient) -> None:
    with contextlib.suppress(nats.errors.Error, OSError):
        await nc.close()
