"""A two-country federation for the NATS benchmarks: THA and MYS, hubs as separate processes.

Hubs run as ``ixb hub run`` processes, as in ``ixb demo`` and production: each
has its own interpreter (its own GIL), and its memory is its own VmRSS. The
load generator (agency clients) runs in the benchmark process.

The one departure from the demo's configuration is the per-agency rate limit
(``policy.max_per_minute`` / ``burst``, default 600/min and 120): a benchmark
with one sending agency would otherwise measure the limiter. It is raised
through the hub's own environment overrides and recorded in the results.

A benchmark of scale (:mod:`bench.scale`) hands :func:`running` a
:class:`~ixb.deployment.Layout` (a country as a nats-server cluster) and
more overrides for every hub (``IXB_HUB__HUB__WORKERS``); the defaults are
one server per country and the hub configuration as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, load_identity_for
from broker.natsd import start_federation
from ixb.deployment import Deployment, Layout, create_deployment
from ixb.processes import Processes, wait_hubs
from protocols.keys import KdfProfile
from protocols.roles import Role

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
ONE_SERVER_EACH = Layout()
"""The demo's layout: every country on one nats-server, all on 127.0.0.1."""
STOP_TIMEOUT_S = 20.0


def make_deployment(
    base: Path,
    agencies: Mapping[str, Sequence[Role]] = AGENCIES,
    kdf: KdfProfile = KdfProfile.MODERATE,
    layout: Layout = ONE_SERVER_EACH,
) -> Deployment:
    """The benchmark's countries and agencies (``kdf``: a test may seal key files faster;
    ``layout``: where the servers run, e.g. a country as a cluster)."""
    return create_deployment(base, agencies, passphrase=PASSPHRASE, kdf=kdf, layout=layout)


@dataclass
class Bench:
    """The running federation: hub and responder processes, and the benchmark's clients."""

    deployment: Deployment
    procs: Processes
    clients: list[AgencyClient] = field(default_factory=list)

    def pid(self, name: str) -> int:
        return self.procs.pid(name)

    async def client(self, agency: str) -> AgencyClient:
        profile = load_profile(self.deployment.profile(agency))
        client = await AgencyClient.connect(profile, load_identity_for(profile, PASSPHRASE))
        self.clients.append(client)
        return client


INSTANCE_ENV = "IXB_HUB__HUB__INSTANCE"


async def _start_standby(bench: Bench, state: Path, country: str) -> None:
    """``country``'s second hub process, once it stands by behind the first."""
    name = f"hub-{country}-standby"
    bench.procs.spawn(
        name,
        "hub",
        "run",
        "--config",
        str(bench.deployment.hub_config(country)),
        env={
            INSTANCE_ENV: "b",
            "IXB_HUB__HUB__STATE_DIR": str(state / "state"),
            "IXB_HUB__HUB__TRUST_DIR": str(state / "trust"),
            "IXB_HUB__HTTP__PORT": "0",
        },
    )
    await bench.procs.wait_output(name, "hub_standby", READY_TIMEOUT_S)


@contextlib.asynccontextmanager
async def running(
    base: Path,
    responders: Mapping[str, Path] | None = None,
    *,
    agencies: Mapping[str, Sequence[Role]] = AGENCIES,
    kdf: KdfProfile = KdfProfile.MODERATE,
    layout: Layout = ONE_SERVER_EACH,
    hub_env: Mapping[str, str] | None = None,
    standby: str | None = None,
) -> AsyncIterator[Bench]:
    """nats-servers, hub processes and (``agency`` → registry file) document responders.

    ``layout``: where the nats-servers run (``Layout(nats_clusters={"THA": 3})``: THA as
    a three-node cluster, every node started). ``hub_env``: ``IXB_HUB__…`` overrides for
    every hub process besides the raised rate limit (``{"IXB_HUB__HUB__WORKERS": "2"}``).
    ``standby``: a country whose hub runs as two processes (``[hub] instance`` ``a``, then
    ``b`` standing by with its own state, ``hub-<CC>-standby``).
    """
    os.environ.setdefault("IXB_PASSPHRASE", PASSPHRASE)
    deployment = make_deployment(base, agencies, kdf, layout)
    async with start_federation(deployment.plan):
        env = {**POLICY_ENV, **(hub_env or {})}
        bench = Bench(deployment, Processes(deployment, base / "logs", env))
        try:
            for country in deployment.countries:
                bench.procs.spawn(
                    f"hub-{country}",
                    "hub",
                    "run",
                    "--config",
                    str(deployment.hub_config(country)),
                    env={INSTANCE_ENV: "a"} if country == standby else None,
                )
            await wait_hubs(deployment, bench.procs, READY_TIMEOUT_S)
            if standby is not None:
                await _start_standby(bench, base / "standby", standby)
            for agency, registry in (responders or {}).items():
                bench.procs.spawn(
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
            await asyncio.to_thread(bench.procs.stop)
