"""A hub told to stop stops, even while its NATS server is unreachable."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from broker.cli import load_hub_parts
from broker.config import load_config
from broker.hub import Hub
from ixb.deployment import create_deployment
from protocols.roles import Role
from tests.federation import PASSPHRASE


async def test_stop_while_nats_is_unreachable(tmp_path: Path) -> None:
    deployment = create_deployment(
        tmp_path,
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT], "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
    )  # no nats-server started: every connection attempt is refused
    os.environ.setdefault("IXB_PASSPHRASE", PASSPHRASE)
    config = load_config(deployment.hub_config("THA"), env={})
    hub = Hub(config, *load_hub_parts(config))
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    await asyncio.sleep(1.0)
    assert not task.done()  # still trying to connect, as it should
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert not hub.state.ready
