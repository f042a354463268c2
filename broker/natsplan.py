"""The nats-server side of a federation, as data: ports, credentials, configs.

One :class:`FederationPlan` describes a whole federation: ports, the public
NATS nkeys of every user, and store directories of every country's server.
:func:`render` fills the templates of ``deploy/nats/`` (the same files docker-compose uses)
with it and with the permissions of :mod:`broker.nats_permissions`; the plan
converts to and from JSON so that hubs and agencies running as separate
processes can find their server.

Every NATS user logs in with an nkey (Ed25519 challenge-response): the
rendered configs and the JSON hold only public ``U…`` keys. The seeds of a
freshly created plan live in :attr:`FederationPlan.seeds` (memory only, never
in JSON): :mod:`ixb.deployment` seals the hubs' and agencies' into their key
files, and :mod:`broker.natsd` writes each server's leaf-dialer seeds beside
its config (``seeds/leaf-<PEER>.conf``, 0600, included by the config), as it
holds its TLS key. The system account's user keeps a password, for local
tooling only; the config holds its bcrypt hash. Users of plans written
before nkeys (version 1: passwords) still render as they were.

Pure: no file, socket or process is touched here. Reading the templates,
probing free ports, writing configs and the plan file, and running the
servers are :mod:`broker.natsd`'s job.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, NamedTuple

import bcrypt

from broker import nats_permissions as perms
from protocols import subjects
from protocols.errors import ConfigError, IdentifierError
from protocols.identifiers import Principal, check_country
from protocols.keys import NkeySeed, is_nkey_user
from protocols.limits import MAX_ENVELOPE_BYTES
from transport.connect import NatsAuth

MAX_PAYLOAD = MAX_ENVELOPE_BYTES + 64 * 1024
"""The largest envelope the protocol allows, plus room for NATS headers."""
MAX_SUBSCRIPTIONS = 1024
"""Per connection: an agency needs a handful (its inbox pull, replies), a hub a few dozen;
a client that opens thousands is refused by the server, not by our CPU."""

PLAN_VERSION = 3
"""3: a country may run as a cluster (``more_nodes``); 2 (still read): public nkeys
(``nkeys``); 1 (still read): every user had a password in ``passwords``."""
READ_VERSIONS = (1, 2, PLAN_VERSION)
_PASSWORD_BYTES = 24
SYS_BCRYPT_ROUNDS = 11
"""nats-server's own ``passwd`` tool uses cost 11."""
SEEDS_DIR = "seeds"
"""Beside each server's config: the seeds it dials its leaf peers with (included, 0600)."""


class NodePorts(NamedTuple):
    """The ports of one server, when fixed rather than picked free."""

    client: int
    monitor: int
    leaf: int


CONTAINER_PORTS = NodePorts(client=4222, monitor=8222, leaf=7422)
"""nats-server's own defaults: for servers that each have their own network (containers)."""
CONTAINER_CLUSTER_PORT = 6222
"""nats-server's default route port, for a clustered country's containers."""
CLUSTER_PING = ("5s", 3)
"""A clustered country's servers ping clients, leaf peers and routes every 5 s and give
up after 3 unanswered: a hung node (a stopped process, a host that keeps its sockets
open) loses its clients, leafs and leaders within ~15-20 s instead of the defaults'
4 minutes, so the cluster can move on. Clients use the same figures (transport.connect)."""


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
    tls: NodeTls | None = None
    """TLS on the client and leaf listeners and on the remotes it dials; None: plain TCP
    (only tests that ask for it explicitly)."""
    server_name: str = ""
    """Unique in the federation (leaders are reported by it); empty: ``ixb-<country>``."""
    cluster_port: int | None = None
    """Route listener, for a node of a clustered country only."""

    @property
    def name(self) -> str:
        return self.server_name or f"ixb-{self.country}"

    @property
    def store_dir(self) -> Path:
        return self.jetstream_dir or self.base_dir / "jetstream"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "nats.conf"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "nats.log"

    @property
    def pid_path(self) -> Path:
        """Where the server writes its pid (``pid_file``), as the server sees it: what
        ``ixb hub agency approve/revoke --nats-plan`` signals to reload the config."""
        return (self.jetstream_dir or self.base_dir) / "nats.pid"

    def leaf_seed_path(self, peer: str) -> Path:
        """The file holding the seed this server dials ``peer`` with (beside its config)."""
        return self.base_dir / SEEDS_DIR / leaf_seed_file(peer)


def leaf_seed_file(peer: str) -> str:
    return f"leaf-{peer}.conf"


CLUSTER_FILE = "cluster.conf"
"""Beside a clustered node's config (under ``seeds/``, 0600): its route login and routes."""


def node_client_url(node: CountryNode) -> str:
    scheme = "nats" if node.tls is None else "tls"
    return f"{scheme}://{node.host}:{node.client_port}"


def node_monitor_url(node: CountryNode) -> str:
    return f"http://{node.host}:{node.monitor_port}"


@dataclass(frozen=True, slots=True)
class NodeTls:
    """One server's TLS files, as the server sees them (PEM)."""

    cert_file: Path
    """Its certificate (chain): presented to clients, to leaf dialers, and when it dials."""
    key_file: Path
    ca_file: Path
    """The CA bundle it verifies leaf peers' certificates against; clients of this
    server verify the server against it too (the throwaway CA signs both)."""


TLS_TIMEOUT_S = 5
"""nats-server's TLS handshake timeout (its default, 2 s, is short on a loaded machine)."""


PortSource = Callable[[str], int]
"""A distinct port on the given host at each call (:func:`broker.natsd.free_ports` probes)."""


@dataclass(frozen=True, slots=True)
class NatsTemplates:
    """The text of each config template (``string.Template``; ``$$`` is a literal ``$``)."""

    country: str
    agency_user: str
    link_account: str
    leaf_user: str
    leaf_remote: str


TEMPLATE_FILES = {
    "country": "country.conf.template",
    "agency_user": "agency-user.conf.template",
    "link_account": "link-account.conf.template",
    "leaf_user": "leaf-user.conf.template",
    "leaf_remote": "leaf-remote.conf.template",
}
""":class:`NatsTemplates` field → file name in ``deploy/nats/``."""


def _quoted_list(items: Sequence[str], indent: int) -> str:
    pad = " " * indent
    return ",\n".join(f'{pad}"{item}"' for item in items)


def _node_tls(tls_dir: Path, country: str) -> NodeTls:
    return NodeTls(
        cert_file=tls_dir / f"{country}.pem",
        key_file=tls_dir / f"{country}-key.pem",
        ca_file=tls_dir / "ca.pem",
    )


def _tls_block(tls: NodeTls | None, indent: int, *, verify: bool, ca: bool) -> str:
    """A nats-server ``tls {}`` block, or nothing for plain TCP."""
    if tls is None:
        return ""
    pad = " " * indent
    lines = [f'cert_file: "{tls.cert_file}"', f'key_file: "{tls.key_file}"']
    if ca:
        lines.append(f'ca_file: "{tls.ca_file}"')
    if verify:
        lines.append("verify: true")
    lines.append(f"timeout: {TLS_TIMEOUT_S}")
    body = "".join(f"{pad}  {line}\n" for line in lines)
    return f"{pad}tls {{\n{body}{pad}}}"


def _new_password() -> str:
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def bcrypt_hash(password: str) -> str:
    """What nats-server accepts in place of a password (it compares ``$2…`` as bcrypt)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(SYS_BCRYPT_ROUNDS)).decode()


def _is_hash(password: str) -> bool:
    return password.startswith("$2")


def _quote(value: str) -> str:
    """A nats-server config string: ours are URL-safe base64, nkeys or bcrypt hashes."""
    if '"' in value or "\\" in value or "\n" in value:
        raise ConfigError("a NATS credential holds a quote, backslash or newline")
    return f'"{value}"'


@dataclass(frozen=True)
class FederationPlan:
    """Everything needed to run and reach the nats-servers of a federation."""

    countries: tuple[str, ...]
    agencies: Mapping[str, tuple[str, ...]]
    nodes: Mapping[str, CountryNode]
    passwords: Mapping[str, str] = field(repr=False)
    """The system users' bcrypt hashes (``CC/sys``); in version-1 plans, every user's password."""
    bind_host: str = "127.0.0.1"
    link_limits: LinkLimits = LinkLimits()
    nkeys: Mapping[str, str] = field(default_factory=dict)
    """Public ``U…`` nkey of every user (``CC/hub``, ``CC/agency/NAME``, ``CC/link/PEER``,
    ``leaf/LO/HI``)."""
    seeds: Mapping[str, NkeySeed] = field(default_factory=dict, repr=False, compare=False)
    """The private side of :attr:`nkeys`, in memory after :meth:`create` only; never saved."""
    system_passwords: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The system users' passwords by country, in memory after :meth:`create` only."""
    more_nodes: Mapping[str, tuple[CountryNode, ...]] = field(default_factory=dict)
    """A clustered country's nodes after the first (which is in :attr:`nodes`)."""
    route_passwords: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """A clustered country's route password (its nodes log into each other with it), in
    memory after :meth:`create` only; the configs include it from a 0600 file."""

    def __post_init__(self) -> None:
        if len(set(self.countries)) != len(self.countries):
            raise ConfigError("a country appears twice in the federation")
        names = [n.name for c in self.countries if c in self.nodes for n in self.members(c)]
        if len(set(names)) != len(names):
            raise ConfigError("two nats-servers of the federation have the same server_name")
        for country, extra in self.more_nodes.items():
            if country not in self.nodes:
                raise ConfigError(f"more_nodes.{country}: not a country of this plan")
            if any(n.cluster_port is None for n in self.members(country)) or not extra:
                raise ConfigError(f"{country}: every node of a cluster needs a route port")
            if f"{country}/route" not in self.passwords:
                raise ConfigError(f"{country}: a cluster needs a route password")
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
        for key, public in self.nkeys.items():
            if not is_nkey_user(public):
                raise ConfigError(f"nkeys.{key}: not a public NATS user nkey (U…)")
            seed = self.seeds.get(key)
            if seed is not None and seed.public != public:
                raise ConfigError(f"nkeys.{key}: does not match its seed")
        if len(set(self.nkeys.values())) != len(self.nkeys):
            raise ConfigError("the same nkey is given to two NATS users")

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
        ports: NodePorts | PortSource,
        store_dir: Path | None = None,
        link_limits: LinkLimits | None = None,
        tls: bool = True,
        tls_dir: Path | None = None,
        clusters: Mapping[str, int | Sequence[str]] | None = None,
    ) -> FederationPlan:
        """A plan with fresh nkeys (seeds in :attr:`seeds`), on ports from ``ports``.

        ``ports`` is either a :data:`PortSource`, asked for every port with
        ``bind_host`` (:func:`broker.natsd.free_ports` gives ports free when
        chosen; another process could take one before the server starts,
        which :meth:`broker.natsd.NatsServer.start` reports with the log), or
        fixed :class:`NodePorts` for every server: that needs one container
        per server (docker compose), each with its own network, so a
        distinct host per country.

        For containers, ``hosts`` names each country's server as peers and
        clients reach it (its service name, instead of ``host``), and
        ``store_dir`` is every server's JetStream dir inside its container
        (its own volume).

        ``clusters`` runs a country as several nats-servers (3 for quorum with
        one node lost): a count (every node on that country's host, each with
        its own ports and dirs ``<CC>``, ``<CC>-2`` …) or each node's host (a
        container's service name). The nodes route to each other with a
        password (and mutual TLS when the plan has TLS); a JetStream stream
        there can be replicated (``[nats] replicas`` of the hub config).
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
        stray = set(clusters or {}) - set(ordered)
        if stray:
            raise ConfigError(f"clusters given for countries outside the plan: {sorted(stray)}")
        node_hosts: dict[str, tuple[str, ...]] = {}
        for c in ordered:
            size_or_hosts = (clusters or {}).get(c, 1)
            if isinstance(size_or_hosts, int):
                node_hosts[c] = ((hosts or {}).get(c, host),) * size_or_hosts
            else:
                node_hosts[c] = tuple(size_or_hosts)
            if len(node_hosts[c]) < 1 or len(node_hosts[c]) == 2:
                raise ConfigError(
                    f"clusters.{c}: 1 node, or 3 or more (2 have no quorum with one lost)"
                )
        every_host = [h for c in ordered for h in node_hosts[c]]
        if isinstance(ports, NodePorts) and len(set(every_host)) != len(every_host):
            raise ConfigError("fixed ports need a distinct host per server (one container each)")
        nodes: dict[str, CountryNode] = {}
        more_nodes: dict[str, tuple[CountryNode, ...]] = {}
        routes: dict[str, str] = {}
        passwords: dict[str, str] = {}
        system: dict[str, str] = {}
        seeds: dict[str, NkeySeed] = {}
        for country in ordered:
            listens = any(peer > country for peer in ordered)
            members = node_hosts[country]
            planned = _country_nodes(
                country,
                members,
                listens=listens,
                ports=ports,
                bind_host=bind_host,
                base_dir=base_dir,
                store_dir=store_dir,
                tls_dir=(tls_dir or base_dir / "tls") if tls else None,
            )
            nodes[country] = planned[0]
            if len(planned) > 1:
                more_nodes[country] = tuple(planned[1:])
                routes[country] = _new_password()
                passwords[f"{country}/route"] = bcrypt_hash(routes[country])
            system[country] = _new_password()
            passwords[f"{country}/sys"] = bcrypt_hash(system[country])
            seeds[f"{country}/hub"] = NkeySeed.generate()
            for name in agencies.get(country, ()):
                seeds[f"{country}/agency/{name}"] = NkeySeed.generate()
            for peer in ordered:
                if peer != country:
                    seeds[f"{country}/link/{peer}"] = NkeySeed.generate()
                if peer > country:
                    seeds[f"leaf/{country}/{peer}"] = NkeySeed.generate()
        return cls(
            countries=ordered,
            agencies={c: tuple(agencies.get(c, ())) for c in ordered},
            nodes=nodes,
            passwords=passwords,
            bind_host=bind_host,
            link_limits=link_limits or LinkLimits(),
            nkeys={key: seed.public for key, seed in seeds.items()},
            seeds=seeds,
            system_passwords=system,
            more_nodes=more_nodes,
            route_passwords=routes,
        )

    # -- lookups ---------------------------------------------------------

    def _auth(self, key: str, user: str) -> NatsAuth:
        """The credentials of user ``key`` (needs the seeds: a freshly created plan)."""
        seed = self.seeds.get(key)
        if seed is not None:
            return NatsAuth(seed=seed)
        if key in self.nkeys:
            raise ConfigError(
                f"the federation plan holds only the public nkey of {key}: "
                "its seed is sealed in a key file (or beside the server's config)"
            )
        password = self.passwords.get(key)
        if password is None or _is_hash(password):
            raise ConfigError(f"the federation plan has no credentials for {key}")
        return NatsAuth(user=user, password=password)  # a version-1 plan

    def _user_auth(self, key: str, user: str) -> str:
        """The config's fields that authenticate user ``key``: its nkey, or (v1) a password."""
        public = self.nkeys.get(key)
        if public is not None:
            return f"nkey: {_quote(public)}"
        password = self.passwords.get(key)
        if password is None:
            raise ConfigError(f"the federation plan has no credentials for {key}")
        return f"user: {_quote(user)}, password: {_quote(password)}"

    def leaf_seed(self, listener: str, dialer: str) -> NkeySeed | None:
        """The seed ``dialer``'s server dials ``listener`` with, while the plan holds it."""
        lo, hi = sorted((listener, dialer))
        return self.seeds.get(f"leaf/{lo}/{hi}")

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

    def members(self, country: str) -> tuple[CountryNode, ...]:
        """Every nats-server of ``country``: one, or the nodes of its cluster."""
        return (self._node(country), *self.more_nodes.get(country, ()))

    def cluster_size(self, country: str) -> int:
        return len(self.members(country))

    def client_url(self, country: str) -> str:
        """Where clients connect: one URL, or a cluster's URLs joined by commas."""
        return ",".join(node_client_url(node) for node in self.members(country))

    def client_ca_file(self, country: str) -> Path | None:
        """The CA file a client on the servers' machine verifies ``country``'s server with."""
        tls = self._node(country).tls
        return None if tls is None else tls.ca_file

    def monitor_url(self, country: str) -> str:
        """The first node's monitoring endpoint (:func:`node_monitor_url` for any node)."""
        return node_monitor_url(self._node(country))

    def route_login(self, country: str) -> str | None:
        """A clustered country's ``seeds/cluster.conf``: the routes' login and the route
        URLs carrying the password (only while the plan holds it: after :meth:`create`)."""
        password = self.route_passwords.get(country)
        if password is None:
            return None
        urls = [
            f"nats-route://{perms.ROUTE_USER}:{password}@{n.host}:{n.cluster_port}"
            for n in self.members(country)
        ]
        return (
            f"authorization {{ user: {_quote(perms.ROUTE_USER)}, "
            f"password: {_quote(self.passwords[f'{country}/route'])} }}\n"
            f"routes: [\n{_quoted_list(urls, 2)}\n]\n"
        )

    def hub_credentials(self, country: str) -> NatsAuth:
        self._node(country)
        return self._auth(f"{country}/hub", perms.HUB_USER)

    def link_credentials(self, country: str, peer: str) -> NatsAuth:
        return self._auth(f"{country}/link/{peer}", perms.link_user(peer))

    def agency_credentials(self, country: str, name: str) -> NatsAuth:
        if name not in self.agencies.get(country, ()):
            raise ConfigError(f"{country}/{name} is not an agency of this federation")
        return self._auth(f"{country}/agency/{name}", perms.agency_user(name))

    def system_credentials(self, country: str) -> NatsAuth:
        password = self.system_passwords.get(country)
        if password is None:
            return self._auth(f"{country}/sys", perms.SYSTEM_USER)  # version 1: in clear
        return NatsAuth(user=perms.SYSTEM_USER, password=password)

    def leaf_credentials(self, listener: str, dialer: str) -> NatsAuth:
        """What ``dialer``'s server logs into ``listener``'s leaf port with."""
        lo, hi = sorted((listener, dialer))
        if lo != listener:
            raise ConfigError(f"{listener} does not listen for {dialer}: the smaller code listens")
        return self._auth(f"leaf/{lo}/{hi}", perms.leaf_user(dialer))

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
            "nodes": {c: _node_json(n) for c, n in self.nodes.items()},
            "more_nodes": {c: [_node_json(n) for n in ns] for c, ns in self.more_nodes.items()},
            "passwords": dict(self.passwords),
            "nkeys": dict(self.nkeys),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FederationPlan:
        try:
            if data["version"] not in READ_VERSIONS:
                raise ConfigError(f"federation plan version {data['version']!r} is not supported")
            nodes = {c: _node_from_json(c, n) for c, n in data["nodes"].items()}
            more_nodes = {
                c: tuple(_node_from_json(c, n) for n in ns)
                for c, ns in data.get("more_nodes", {}).items()
            }
            return cls(
                countries=tuple(data["countries"]),
                agencies={c: tuple(names) for c, names in data["agencies"].items()},
                nodes=nodes,
                passwords={str(k): str(v) for k, v in data["passwords"].items()},
                bind_host=str(data["bind_host"]),
                link_limits=LinkLimits(**data["link_limits"]),
                nkeys={str(k): str(v) for k, v in data.get("nkeys", {}).items()},
                more_nodes=more_nodes,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed federation plan: {exc!r}") from exc


def _country_nodes(
    country: str,
    hosts: Sequence[str],
    *,
    listens: bool,
    ports: NodePorts | PortSource,
    bind_host: str,
    base_dir: Path,
    store_dir: Path | None,
    tls_dir: Path | None,
) -> list[CountryNode]:
    """The servers of one country: one, or the nodes of its cluster (one per host)."""
    clustered = len(hosts) > 1
    planned: list[CountryNode] = []
    for index, node_host in enumerate(hosts, start=1):
        if isinstance(ports, NodePorts):
            client, monitor = ports.client, ports.monitor
            leaf = ports.leaf if listens else None
            route = CONTAINER_CLUSTER_PORT if clustered else None
        else:
            # Asked where the server will listen: a service name in
            # node_hosts may not resolve on this machine.
            client, monitor = ports(bind_host), ports(bind_host)
            leaf = ports(bind_host) if listens else None
            route = ports(bind_host) if clustered else None
        planned.append(
            CountryNode(
                country=country,
                host=node_host,
                client_port=client,
                monitor_port=monitor,
                leaf_port=leaf,
                base_dir=base_dir / (country if index == 1 else f"{country}-{index}"),
                jetstream_dir=store_dir,
                tls=None if tls_dir is None else _node_tls(tls_dir, country),
                server_name=f"ixb-{country}-{index}" if clustered else "",
                cluster_port=route,
            )
        )
    return planned


def _node_json(n: CountryNode) -> dict[str, Any]:
    return {
        "host": n.host,
        "client_port": n.client_port,
        "monitor_port": n.monitor_port,
        "leaf_port": n.leaf_port,
        "base_dir": str(n.base_dir),
        "jetstream_dir": None if n.jetstream_dir is None else str(n.jetstream_dir),
        "tls": None
        if n.tls is None
        else {
            "cert_file": str(n.tls.cert_file),
            "key_file": str(n.tls.key_file),
            "ca_file": str(n.tls.ca_file),
        },
        "server_name": n.server_name,
        "cluster_port": n.cluster_port,
    }


def _node_from_json(country: str, n: Mapping[str, Any]) -> CountryNode:
    return CountryNode(
        country=country,
        host=str(n["host"]),
        client_port=int(n["client_port"]),
        monitor_port=int(n["monitor_port"]),
        leaf_port=None if n["leaf_port"] is None else int(n["leaf_port"]),
        base_dir=Path(n["base_dir"]),
        jetstream_dir=None if n.get("jetstream_dir") is None else Path(n["jetstream_dir"]),
        tls=None
        if n.get("tls") is None
        else NodeTls(
            cert_file=Path(n["tls"]["cert_file"]),
            key_file=Path(n["tls"]["key_file"]),
            ca_file=Path(n["tls"]["ca_file"]),
        ),
        server_name=str(n.get("server_name") or ""),
        cluster_port=None if n.get("cluster_port") is None else int(n["cluster_port"]),
    )


def render(plan: FederationPlan, country: str, templates: NatsTemplates, index: int = 1) -> str:
    """The nats-server config of ``country``'s server (node ``index`` of its cluster)."""
    members = plan.members(country)
    if not 1 <= index <= len(members):
        raise ConfigError(f"{country} has no node {index} (it has {len(members)})")
    node = members[index - 1]
    agency_tpl = Template(templates.agency_user)
    agency_users = [
        _agency_user(plan, agency_tpl, Principal(country, name))
        for name in plan.agencies.get(country, ())
    ]
    accounts: list[str] = []
    remotes: list[str] = []
    for peer in plan.peers(country):
        leaf_user = "      # (no leaf user: we dial this peer)"
        if country < peer:
            leaf_user = (
                Template(templates.leaf_user)
                .substitute(
                    peer=peer,
                    leaf_auth=plan._user_auth(f"leaf/{country}/{peer}", perms.leaf_user(peer)),
                    leaf_allow=_quoted_list(perms.leaf_publish_allow(country, peer), 14),
                    leaf_deny=_quoted_list(perms.leaf_deny_subjects(country, peer), 14),
                )
                .rstrip("\n")
            )
        else:
            key = f"leaf/{peer}/{country}"
            if key in plan.nkeys:
                userinfo = ""
                leaf_auth = f'include "{SEEDS_DIR}/{leaf_seed_file(peer)}"  # seed: "SU..." (0600)'
            else:  # a version-1 plan: the password in the URL
                password = plan.passwords.get(key)
                if password is None:
                    raise ConfigError(f"the federation plan has no credentials for {key}")
                userinfo = f"{perms.leaf_user(country)}:{password}@"
                leaf_auth = "# (a version-1 plan: the password is in the URL)"
            remotes.append(
                Template(templates.leaf_remote)
                .substitute(
                    peer=peer,
                    account=perms.link_account(peer),
                    leaf_auth=leaf_auth,
                    # Every node of a clustered peer: we hold one link, to any of them.
                    peer_urls=_quoted_list(
                        [
                            f"nats-leaf://{userinfo}{n.host}:{n.leaf_port}"
                            for n in plan.members(peer)
                        ],
                        8,
                    ),
                    remote_tls=_tls_block(node.tls, 6, verify=False, ca=True),
                    leaf_deny=_quoted_list(perms.leaf_deny_subjects(country, peer), 8),
                )
                .rstrip("\n")
            )
        limits = plan.link_limits
        accounts.append(
            Template(templates.link_account)
            .substitute(
                account=perms.link_account(peer),
                link_auth=plan._user_auth(f"{country}/link/{peer}", perms.link_user(peer)),
                leaf_user=leaf_user,
                max_memory=limits.max_memory,
                # A replicated stream is counted once per replica.
                max_file=limits.max_file * len(members),
                max_streams=limits.max_streams,
                max_consumers=limits.max_consumers,
            )
            .rstrip("\n")
        )
    leaf_listen = (
        f'  listen: "{plan.bind_host}:{node.leaf_port}"'
        if node.leaf_port is not None
        else "  # no peer sorts after us: we only dial"
    )
    if node.leaf_port is not None and node.tls is not None:
        # Mutual TLS: a dialing peer must present a certificate from our CA bundle.
        leaf_listen += "\n" + _tls_block(node.tls, 2, verify=True, ca=True)
    client_tls = (
        "# Plain TCP: this plan has no TLS files (tests only)."
        if node.tls is None
        else "# Clients (hubs, agencies) verify this certificate; they log in with nkeys.\n"
        + _tls_block(node.tls, 0, verify=False, ca=False)
    )
    return Template(templates.country).substitute(
        country=country,
        server_name=node.name,
        cluster=_cluster_block(plan, node),
        bind_host=plan.bind_host,
        client_port=node.client_port,
        client_tls=client_tls,
        monitor_port=node.monitor_port,
        max_payload=MAX_PAYLOAD,
        max_subscriptions=MAX_SUBSCRIPTIONS,
        store_dir=str(node.store_dir),
        pid_file=str(node.pid_path),
        sys_auth=_system_auth(plan, country),
        hub_auth=plan._user_auth(f"{country}/hub", perms.HUB_USER),
        agency_users=",\n".join(agency_users),
        link_accounts="\n".join(accounts),
        leaf_listen=leaf_listen,
        leaf_remotes=",\n".join(remotes),
    )


def _cluster_block(plan: FederationPlan, node: CountryNode) -> str:
    """The routes between a clustered country's nodes, and the pings that let a hung node
    go; a comment for a single server."""
    if node.cluster_port is None:
        return "# One server: no cluster."
    interval, most = CLUSTER_PING
    lines = [
        f"# Node of the {node.country} cluster; replicated streams keep a quorum of its nodes.",
        f'ping_interval: "{interval}"',
        f"ping_max: {most}",
        "cluster {",
        f'  name: "ixb-{node.country}"',
        f'  listen: "{plan.bind_host}:{node.cluster_port}"',
        "  # Clients and peers use the URLs they were given, never gossiped ones.",
        "  no_advertise: true",
        "  # The route login and every node's route URL (with its password): 0600.",
        f'  include "{SEEDS_DIR}/{CLUSTER_FILE}"',
    ]
    tls = _tls_block(node.tls, 2, verify=True, ca=True)
    if tls:
        lines.append(tls)
    lines.append("}")
    return "\n".join(lines)


def _system_auth(plan: FederationPlan, country: str) -> str:
    """The system user: a password (local tooling only), as its bcrypt hash when the plan has it."""
    password = plan.passwords.get(f"{country}/sys")
    if password is None:
        raise ConfigError(f"the federation plan has no system user for {country}")
    return f"user: {_quote(perms.SYSTEM_USER)}, password: {_quote(password)}"


def _agency_user(plan: FederationPlan, template: Template, agency: Principal) -> str:
    if agency.name not in plan.agencies.get(agency.country, ()):
        raise ConfigError(f"{agency} is not an agency of this federation")
    subscribe = ", ".join(f'"{s}"' for s in perms.agency_subscribe_allow(agency))
    return template.substitute(
        country=agency.country,
        name=agency.name,
        auth=plan._user_auth(
            f"{agency.country}/agency/{agency.name}", perms.agency_user(agency.name)
        ),
        publish_allow=_quoted_list(perms.agency_publish_allow(agency), 14),
        subscribe_allow=subscribe,
        allow_responses=perms.AGENCY_RESPONSES,
        reply_prefix=subjects.reply_prefix(agency.name),
    ).rstrip("\n")
