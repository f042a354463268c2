"""A hub told to stop stops, even while its NATS server is unreachable."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from broker.cli import load_hub_parts
from broker.config import load_config
from broker.hub import PRUNE_KEEP_MS, Hub
from ixb.deployment import create_deployment
from protocols.envelope import decode_envelope, seal_envelope
from protocols.examples import example_bodies
from protocols.identifiers import parse_agency
from protocols.keys import Identity, KdfProfile
from protocols.limits import MS_PER_DAY
from protocols.roles import Role
from tests.federation import PASSPHRASE


async def test_stop_while_nats_is_unreachable(tmp_path: Path) -> None:
    deployment = create_deployment(
        tmp_path,
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT], "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
        kdf=KdfProfile.INTERACTIVE,
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


async def test_the_hub_prunes_expired_messages_on_a_timer(tmp_path: Path) -> None:
    deployment = create_deployment(
        tmp_path,
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT], "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
        kdf=KdfProfile.INTERACTIVE,
    )
    os.environ.setdefault("IXB_PASSPHRASE", PASSPHRASE)
    config = load_config(deployment.hub_config("THA"), env={})
    now = [1_795_000_000_000]
    hub = Hub(config, *load_hub_parts(config), clock=lambda: now[0])
    sender = Identity.generate(parse_agency("THA/DSI-ATHD"))
    env = decode_envelope(
        seal_envelope(
            sender=sender,
            recipients=[Identity.generate(parse_agency("MYS/RMP-ATIPSOM")).public()],
            body=example_bodies(now[0])["alert"],
            now_ms=now[0],
            ttl_ms=MS_PER_DAY,
        )
    )
    with hub.store.transaction():
        hub.store.remember(env.header, env.digest)
    hub.prune_period_s = 0.02
    stop = asyncio.Event()
    task = asyncio.create_task(hub.pruner(stop))
    try:
        await asyncio.sleep(0.1)
        assert hub.store.known(env.header.sender, env.header.id) is not None  # not expired yet
        now[0] += MS_PER_DAY + PRUNE_KEEP_MS + 1
        for _ in range(100):
            if hub.store.known(env.header.sender, env.header.id) is None:
                break
            await asyncio.sleep(0.02)
        assert hub.store.known(env.header.sender, env.header.id) is None
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        hub.store.close()
        hub.audit_log.close()
