"""A deployment's hubs and agency services as separate processes, as in production.

Used by ``ixb demo`` and the NATS benchmarks: spawn ``ixb …`` commands with
the deployment's environment, wait until every hub is ready and holds every
country's directory, stop everything with SIGTERM (as a service manager would).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ixb.deployment import Deployment
from protocols.errors import LocalError

STOP_TIMEOUT_S = 15.0


@dataclass
class Processes:
    """Hubs and agency services as separate processes; all stopped on exit."""

    deployment: Deployment
    logs: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def spawn(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        """``ixb *args`` as ``name`` (its output in ``logs/<name>.log``); ``env`` on top of
        the deployment's and :attr:`extra_env`."""
        self.names.append(name)
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / f"{name}.log").open("ab")
        self.procs.append(
            subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                [sys.executable, "-m", "ixb", *args],
                stdout=out,
                stderr=out,
                env={**self.deployment.env(), **self.extra_env, **(env or {})},
                stdin=subprocess.DEVNULL,
            )
        )
        out.close()

    def pid(self, name: str) -> int:
        return self.procs[self.names.index(name)].pid

    def check_alive(self) -> None:
        for name, p in zip(self.names, self.procs, strict=True):
            if p.poll() is not None:
                raise LocalError(f"{name} exited early; see {self.logs / name}.log")

    async def wait_output(self, name: str, text: str, timeout: float) -> str:
        """The first line of ``name``'s output holding ``text``, once it printed it (a
        service saying it is ready); :class:`LocalError` if it exits or takes too long."""
        log = self.logs / f"{name}.log"
        deadline = time.monotonic() + timeout
        while True:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
            found = next((line for line in lines if text in line), None)
            if found is not None:
                return found
            self.check_alive()
            if time.monotonic() > deadline:
                raise LocalError(f"{name} not ready after {timeout:g} s; see {log}")
            await asyncio.sleep(0.1)

    def stop(self) -> list[str]:
        """SIGTERM, as an operator's service manager would; returns who did not exit cleanly."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        unclean = []
        for name, p in zip(self.names, self.procs, strict=True):
            try:
                code = p.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                code = None
            if code != 0:
                unclean.append(f"{name} (exit {code})")
        return unclean


async def wait_hubs(deployment: Deployment, procs: Processes, timeout: float = 60.0) -> None:
    """Until every hub answers /healthz and holds every country's directory."""
    deadline = time.monotonic() + timeout
    pending = set(deployment.countries)
    while pending:
        procs.check_alive()
        for country in list(pending):
            health = await asyncio.to_thread(_health, deployment.hub_url(country))
            directories = health.get("directories") if health else None
            if (
                health
                and health.get("ready")
                and isinstance(directories, dict)
                and all(v is not None for v in directories.values())
            ):
                pending.discard(country)
        if time.monotonic() > deadline:
            raise LocalError(f"hubs not ready after {timeout:g} s: {sorted(pending)}")
        await asyncio.sleep(0.2)


def _health(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310 - localhost
            data: dict[str, object] = json.loads(resp.read())
            return data
    except (OSError, ValueError):
        return None
