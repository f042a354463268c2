"""Pulling from a JetStream consumer: one message as soon as it arrives, plus the ready rest.

nats-py's ``fetch(batch)`` waits out its whole timeout for the rest of a
batch once the stream is idle, and even its "no wait" probe carries an
``expires`` that makes the server linger for it. :func:`fetch_ready` instead
waits for one message (``fetch(1)`` returns as soon as it arrives) and then
:func:`drain_waiting` takes what else is already there, without waiting for
anything that is not.

Contract with nats-py (pinned ``<3`` in pyproject.toml): the fast path of
:func:`drain_waiting` uses four private attributes of
``JetStreamContext.PullSubscription`` — ``_nc`` (the client), ``_nms`` (the
``CONSUMER.MSG.NEXT`` subject), ``_deliver`` (the reply subject) and ``_sub``
(the bound subscription). If any is missing it falls back to the public
``fetch`` with a very short timeout. ``tests/test_transport_fetch.py`` runs
both paths against a real nats-server, and fails first if an upgrade removes
the internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from typing import Protocol

import nats.errors
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import StatusCode

DRAIN_TIMEOUT_S = 1.0
"""Safety bound of the fast path: the server answers a ``no_wait`` pull at once."""
FALLBACK_DRAIN_S = 0.005
"""How long the fallback lets nats-py's own fetch wait for the ready messages."""


class PullSource(Protocol):
    """What the functions here need: nats-py's ``PullSubscription`` has it."""

    async def fetch(self, batch: int = ..., timeout: float | None = ...) -> list[Msg]: ...


async def fetch_ready(psub: PullSource, batch: int, timeout: float) -> list[Msg]:
    """Wait up to ``timeout`` for one message, then take up to ``batch - 1`` already ready.

    Raises nats-py's ``TimeoutError`` when nothing arrives within ``timeout``.
    """
    first = await psub.fetch(1, timeout=timeout)
    if batch <= 1:
        return first
    return first + await drain_waiting(psub, batch - 1)


async def drain_waiting(
    psub: PullSource, limit: int, *, fallback_timeout: float = FALLBACK_DRAIN_S
) -> list[Msg]:
    """Up to ``limit`` messages the consumer has ready now, in one round trip.

    A pull request with ``no_wait`` and no ``expires`` is answered at once:
    the waiting messages, then a 404/408 status if there were fewer than
    asked. nats-py has no call for it, so this speaks the JetStream pull
    protocol on the subscription nats-py bound. A message arriving after the
    safety timeout stays in the subscription's queue, where the next
    ``fetch`` takes it first.

    Without nats-py's internals: ``psub.fetch(limit, timeout=fallback_timeout)``,
    which may linger up to ``fallback_timeout`` and returns what arrived by then.
    """
    nc, nms, deliver, sub = (getattr(psub, a, None) for a in ("_nc", "_nms", "_deliver", "_sub"))
    if nc is None or nms is None or deliver is None or sub is None:
        try:
            return list(await psub.fetch(limit, timeout=fallback_timeout))
        except (NatsTimeoutError, TimeoutError):
            return []
    msgs: list[Msg] = []
    request = json.dumps({"batch": limit, "no_wait": True}).encode()
    await nc.publish(nms, request, deliver)
    while len(msgs) < limit:
        try:
            msg = await sub.next_msg(timeout=DRAIN_TIMEOUT_S)
        except (NatsTimeoutError, TimeoutError):
            break
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            msgs.append(msg)
        elif status in (StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT):
            break
    return msgs


async def keep_in_progress(held: Callable[[], Iterable[Msg]], every: float) -> None:
    """Until cancelled: every ``every`` seconds, tell JetStream each held message is in progress.

    ``held`` is asked each time (messages come and go); those already acked,
    nacked or terminated are skipped. Keeps a consumer's short ack wait from
    redelivering work that is merely slow; while the connection is down the
    signal is lost, which is what lets stranded messages come back.
    """
    while True:
        await asyncio.sleep(every)
        for msg in list(held()):
            if not msg.is_acked:
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()
