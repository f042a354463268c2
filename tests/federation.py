"""A running federation for integration tests: real nats-servers, real hubs, real agencies.

Hubs run in-process (as asyncio tasks, each with its own NATS connections and
state directory) so tests can stop, restart and inspect them; the demo runs
the same code as separate processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, Incoming, load_identity_for
from broker.cli import load_hub_parts
from broker.config import load_config
from broker.hub import Hub
from broker.natsd import NatsServer, start_federation
from broker.service import HubService
from ixb.deployment import Deployment, create_deployment
from protocols.identifiers import Principal, format_message_id, parse_agency
from protocols.keys import KdfProfile
from protocols.messages import Receipt
from protocols.roles import Role

PASSPHRASE = "integration test passphrase"

AGENCIES: dict[str, Sequence[Role]] = {
    "THA/DSI-ATHD": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
    "THA/IMMIGRATION": [Role.IMMIGRATION],
    "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT],
    "MYS/IMMIGRATION": [Role.DOCUMENT_AUTHORITY, Role.IMMIGRATION],
    "MMR/MOHA-ATTU": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
}


@dataclass
class RunningHub:
    service: HubService
    task: asyncio.Task[None]
    stop: asyncio.Event

    @property
    def hub(self) -> Hub:
        return self.service.hub

    async def shutdown(self) -> None:
        self.stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, timeout=20)


@dataclass
class Federation:
    deployment: Deployment
    servers: dict[str, NatsServer]
    hubs: dict[str, RunningHub] = field(default_factory=dict)
    clients: list[AgencyClient] = field(default_factory=list)

    async def start_hub(self, country: str) -> Hub:
        # an ephemeral HTTP port: a port picked at deployment time can be taken by the
        # time a restarted hub binds it again (the hub's own override mechanism)
        config = load_config(self.deployment.hub_config(country), env={"IXB_HUB__HTTP__PORT": "0"})
        os.environ.setdefault("IXB_PASSPHRASE", PASSPHRASE)
        identity, trust, agencies = load_hub_parts(config)
        hub = Hub(config, identity, trust, agencies)
        service = HubService(hub)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        self.hubs[country] = RunningHub(service, task, stop)
        await self.wait_ready(country)
        return hub

    async def wait_ready(self, country: str, timeout: float = 20.0) -> None:
        running = self.hubs[country]
        deadline = asyncio.get_running_loop().time() + timeout
        while not running.hub.state.ready:
            if running.task.done():
                running.task.result()  # raises the hub's failure
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"hub {country} not ready")
            await asyncio.sleep(0.05)

    async def stop_hub(self, country: str) -> None:
        await self.hubs.pop(country).shutdown()

    async def wait_directories(self, timeout: float = 30.0) -> None:
        """Until every hub holds every country's directory (they travel over the links)."""
        deadline = asyncio.get_running_loop().time() + timeout
        countries = self.deployment.countries
        while True:
            if all(
                r.hub.keys.version(c) is not None for r in self.hubs.values() for c in countries
            ):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("directories did not propagate")
            await asyncio.sleep(0.1)

    async def client(self, agency: str) -> AgencyClient:
        profile = load_profile(self.deployment.profile(agency))
        identity = load_identity_for(profile, PASSPHRASE)
        client = await AgencyClient.connect(profile, identity)
        self.clients.append(client)
        return client

    def principal(self, agency: str) -> Principal:
        return parse_agency(agency)


@contextlib.asynccontextmanager
async def running_federation(
    base: Path,
    agencies: Mapping[str, Sequence[Role]] = AGENCIES,
    **kw: object,
) -> AsyncIterator[Federation]:
    kw.setdefault("kdf", KdfProfile.INTERACTIVE)  # fast key files: tests open them often
    deployment = create_deployment(base, agencies, passphrase=PASSPHRASE, **kw)  # type: ignore[arg-type]
    async with start_federation(deployment.plan) as servers:
        fed = Federation(deployment, servers)
        try:
            for country in deployment.countries:
                await fed.start_hub(country)
            await fed.wait_directories()
            yield fed
        finally:
            for client in fed.clients:
                await client.close()
            for country in list(fed.hubs):
                await fed.stop_hub(country)


async def run_ixb(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The ``ixb`` command as a separate process, with the test passphrase and ``env``."""
    full_env = {**os.environ, "IXB_PASSPHRASE": PASSPHRASE, **env}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ixb", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def drain_into(client: AgencyClient, into: dict[str, Incoming], seconds: float) -> None:
    """Fetch and ack for ``seconds``; every message (receipts aside) into ``into`` by id.
    A refusal in the inbox fails the test."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        for item in await client.fetch(timeout=0.3):
            assert isinstance(item, Incoming), f"refused: {item}"
            await item.ack()
            if not isinstance(item.body, Receipt):
                into[format_message_id(item.header.id)] = item
