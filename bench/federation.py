"""A two-country federation for the NATS benchmarks: THA and MYS, hubs as separate processes.

Hubs run as ``ixb hub run`` processes, as in ``ixb demo`` and production: each
has its own interpreter (its own GIL), and its memory is its own VmRSS. The
load generator (agency clients) runs in the benchmark process.

The one departure from the demo's configuration is the per-agency rate limit
(``policy.max_per_minute`` / ``burst``, default 600/min and 120): a benchmark
with one sending agency would otherwise measure the limiter. It is raised
through the hub's own environment overrides and recorded in the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, load_identity_for
from broker.natsd import start_federation
from ixb.deployment import Deployment, create_deployment
from protocols.directory import Role

PASSPHRASE = "ixb bench passphrase - not for real keys"  # noqa: S105 - throwaway keys
BENCH_RATE_LIMIT = 1_000_000_000
POLICY_ENV = {
    "IXB_HUB__POLICY__MAX_PER_MINUTE": str(BENCH_RATE_LIMIT),
    "IXB_HUB__POLICY__BURST": str(BENCH_RATE_LIMIT),
}
AGENCIES: dict[str, Sequence[Role]] = {
    "THA/DSI-ATHD": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
    "THA/IMMIGRATION": [Role.IMMIGRATION],
    "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT],
    "MYS/IMMIGRATION": [Role.DOCUMENT_AUTHORITY, Role.IMMIGRATION],
}
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def make_deployment(base: Path) -> Deployment:
    return create_deployment(base, AGENCIES, passphrase=PASSPHRASE)


@dataclass
class Bench:
    deployment: Deployment
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    clients: list[AgencyClient] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**self.deployment.env(), **POLICY_ENV}

    def spawn(self, name: str, *args: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(  # noqa: S603 - our interpreter and arguments
                [sys.executable, "-m", "ixb", *args],
                stdout=out,
                stderr=out,
                env=self.env(),
                stdin=subprocess.DEVNULL,
            )

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited early; see {self.logs / name}.log")

    async def client(self, agency: str) -> AgencyClient:
        profile = load_profile(self.deployment.profile(agency))
        client = await AgencyClient.connect(profile, load_identity_for(profile, PASSPHRASE))
        self.clients.append(client)
        return client

    async def wait_hubs(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = set(self.deployment.countries)
        while pending:
            self.check_alive()
            for country in list(pending):
                health = await asyncio.to_thread(_health, self.deployment.hub_url(country))
                dirs = health.get("directories") if health else None
                if (
                    health
                    and health.get("ready")
                    and isinstance(dirs, dict)
                    and all(v is not None for v in dirs.values())
                ):
                    pending.discard(country)
            if time.monotonic() > deadline:
                raise TimeoutError(f"hubs not ready: {sorted(pending)}")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _health(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310 - localhost
            data: dict[str, object] = json.loads(resp.read())
            return data
    except (OSError, ValueError):
        return None


@contextlib.asynccontextmanager
async def running(base: Path, responders: Mapping[str, Path] | None = None) -> AsyncIterator[Bench]:
    """nats-servers, hub processes and (``agency`` → registry file) document responders."""
    os.environ.setdefault("IXB_PASSPHRASE", PASSPHRASE)
    deployment = make_deployment(base)
    async with start_federation(deployment.plan):
        bench = Bench(deployment, base / "logs")
        try:
            for country in deployment.countries:
                bench.spawn(
                    f"hub-{country}", "hub", "run", "--config", str(deployment.hub_config(country))
                )
            await bench.wait_hubs()
            for agency, registry in (responders or {}).items():
                bench.spawn(
                    f"responder-{agency.replace('/', '-')}",
                    "agency",
                    "respond",
                    "--profile",
                    str(deployment.profile(agency)),
                    "--documents",
                    str(registry),
                )
            yield bench
        finally:
            for client in bench.clients:
                await client.close()
            await asyncio.to_thread(bench.stop)
