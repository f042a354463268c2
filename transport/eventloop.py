"""The event loop our long-running services run on: uvloop when it is installed.

In: a coroutine. Out: its result, as :func:`asyncio.run` returns it.
Guaranteed: the same semantics as :func:`asyncio.run` (one fresh loop,
cancelled leftovers, async generators shut down); with uvloop (a declared
dependency, libuv underneath) each wake-up of the loop costs less CPU, which
is most of what a hub spends per lookup hop on the synchronous path
(docs/performance.md, "The synchronous path"). ``IXB_EVENT_LOOP=asyncio``
selects the standard loop, for comparison or if uvloop misbehaves somewhere.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "IXB_EVENT_LOOP"


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` will use in this environment."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401, PLC0415 - optional at import time, checked here
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new loop (uvloop unless ``IXB_EVENT_LOOP=asyncio``)."""
    if loop_name() == "uvloop":
        import uvloop  # noqa: PLC0415 - see loop_name

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
