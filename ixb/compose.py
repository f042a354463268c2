"""``ixb compose prepare``: the files ``docker-compose.yml`` mounts, one container per process.

The same federation as ``ixb demo`` (THA, MYS, MMR; keys, trust anchors, hub
configs, agency profiles from :func:`ixb.deployment.create_deployment`, NATS
configs rendered by :class:`broker.natsplan.FederationPlan` from ``deploy/nats/``),
laid out for containers:

- THA runs as a cluster of three nats-servers (``nats-tha-1`` … ``nats-tha-3``,
  routes on 6222, every stream of its hub on all three: ``replicas = 3``), the
  production shape of a country; MYS and MMR run one server each
  (``nats-mys``, ``nats-mmr``);
- each nats-server listens on 0.0.0.0 with nats-server's default ports in its
  own container, reached by its service name, its JetStream store in
  ``<out>/data/<node>`` (seen at ``/data``); its config is
  ``<out>/nats/<node>.conf`` and the seeds it includes ``<out>/nats/<node>/seeds``,
  where ``<node>`` is ``THA``, ``THA-2``, ``THA-3``, ``MYS``, ``MMR`` (a
  cluster node's seeds hold its route login too);
- TLS on every NATS connection: a throwaway CA and one certificate per
  country (valid for the service names of all its servers) in ``<out>/tls``,
  seen at ``/etc/nats/tls``;
- hubs and agencies see ``<out>`` at ``/ixb``; each hub serves HTTP on
  0.0.0.0 at a fixed port per country (published on the host's 127.0.0.1);
- THA's hub runs as two processes (``hub-tha-1``, ``hub-tha-2``: one active,
  the other standing by), each with its own ``[hub] instance``, state (and in
  it trust) directory ``<out>/state/THA-<n>`` and HTTP port, set in the
  service's environment over the one ``hubs/THA.toml``; that file's own
  ``state_dir`` (``/ixb/state/THA``) is left unmade, so a THA hub started
  without its overrides stops at once instead of sharing a state;
- MYS's document responder answers from ``<out>/MYS-documents.json``.

``<out>`` holds keys and nkey seeds (files 0600): keep it out of git. Key
files are sealed with ``$IXB_PASSPHRASE`` (or the file ``$IXB_PASSPHRASE_FILE``
names), which must be set: only ``ixb demo`` has a built-in passphrase. The
containers read it from a compose secret, written here to ``--passphrase-file``
(0600, default ``deploy/secrets/ixb-passphrase``, outside ``<out>``: a copy of
the keys does not take the passphrase along).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from agency_client.docregistry import DocumentRegistry
from broker.natsd import render_config
from broker.natsplan import CONTAINER_PORTS
from ixb.demo import AGENCIES, REGISTRY
from ixb.deployment import Layout, _write_private, create_deployment
from protocols.errors import ConfigError, UsageError
from protocols.identifiers import parse_agency
from protocols.keys import KdfProfile
from transport.cliout import add_json, emit
from transport.files import FILE_SUFFIX, env_secret, read_secret_file

DEFAULT_OUT = Path("deploy/compose")
"""What ``docker-compose.yml`` mounts, relative to the repository root."""

DEFAULT_PASSPHRASE_FILE = Path("deploy/secrets/ixb-passphrase")
"""The compose secret the hubs and agencies read the key files' passphrase from."""

SECRET_MOUNT = Path("/run/secrets/ixb-passphrase")
"""Where compose mounts that secret in each hub and agency container."""

MOUNT = Path("/ixb")
"""Where hub and agency containers see the prepared directory."""

NATS_STORE_DIR = Path("/data")
"""JetStream store inside each nats container (a named volume)."""

NATS_TLS_DIR = Path("/etc/nats/tls")
"""Where each nats container sees ``<out>/tls`` (certificates, keys, the CA)."""

HUB_HTTP_PORTS = {"THA": 8701, "MYS": 8702, "MMR": 8703}
"""Each hub's HTTP port, the same inside its container and on the host."""

CONTAINER_BIND = "0.0.0.0"  # noqa: S104 - inside a container, on the compose network
"""Where nats-servers and hubs listen in their containers."""

PASSPHRASE_ENV = "IXB_PASSPHRASE"  # noqa: S105 - a variable name

RESPONDERS = ("MYS/IMMIGRATION",)
"""Agencies docker-compose.yml runs (``ixb agency respond``): each writes its state
(answers given) in ``<out>/agency-state/<CC>-<NAME>``, its own writable mount."""

CLUSTERS = {"THA": 3}
"""Countries run as a nats-server cluster, and its size: THA shows the production shape."""


HUB_PROCESSES = {"THA": (("tha-1", 8701), ("tha-2", 8704))}
"""Countries whose hub runs as several processes, one active and the others standing by
(docs/operations/cluster.md, "Hub processes"): each process's ``[hub] instance`` and HTTP
port. The first port is the country's in ``HUB_HTTP_PORTS`` (its config's own)."""


@dataclass(frozen=True)
class HubProcess:
    """One hub container: its compose service, ``[hub] instance`` (``""``: the country's
    only hub process), state directory under ``<out>/state`` and HTTP port."""

    service: str
    instance: str
    state: str
    port: int


def hub_processes(country: str) -> tuple[HubProcess, ...]:
    """Every hub container of ``country``: one, or one per process of ``HUB_PROCESSES``."""
    base = f"hub-{country.lower()}"
    several = HUB_PROCESSES.get(country)
    if several is None:
        return (HubProcess(base, "", country, HUB_HTTP_PORTS[country]),)
    return tuple(
        HubProcess(f"{base}-{n}", instance, f"{country}-{n}", port)
        for n, (instance, port) in enumerate(several, start=1)
    )


def nats_service(country: str, index: int | None = None) -> str:
    """The compose service (and host name) of a country's nats-server, or of node
    ``index`` (1-based) of its cluster."""
    base = f"nats-{country.lower()}"
    return base if index is None else f"{base}-{index}"


def nats_services(country: str) -> tuple[str, ...]:
    """Every nats-server service of ``country``: one, or one per node of its cluster."""
    size = CLUSTERS.get(country, 1)
    if size == 1:
        return (nats_service(country),)
    return tuple(nats_service(country, i) for i in range(1, size + 1))


def compose_layout(countries: list[str]) -> Layout:
    return Layout(
        bind_host=CONTAINER_BIND,
        nats_hosts={c: nats_service(c) for c in countries if c not in CLUSTERS},
        nats_ports=CONTAINER_PORTS,
        nats_store_dir=NATS_STORE_DIR,
        nats_tls_dir=NATS_TLS_DIR,
        http_ports=HUB_HTTP_PORTS,
        mount=MOUNT,
        nats_clusters={c: nats_services(c) for c in countries if c in CLUSTERS},
    )


def write_compose_deployment(
    out_dir: Path,
    *,
    passphrase: str,
    passphrase_file: Path,
    kdf: KdfProfile = KdfProfile.MODERATE,
) -> None:
    """Generate keys, nkeys and every config ``docker-compose.yml`` mounts into
    ``out_dir``, and the passphrase's compose secret at ``passphrase_file``.

    Refuses a directory prepared before: new keys and nkeys would not
    match the hubs' state and the NATS stores of the running deployment;
    and a passphrase file holding another passphrase than the one given.
    """
    if (out_dir / "plan.json").exists():
        raise ConfigError(
            f"{out_dir} is already prepared; to start over: "
            f"docker compose down -v && rm -rf {out_dir}"
        )
    if passphrase_file.exists() and read_secret_file(passphrase_file) != passphrase:
        raise ConfigError(
            f"{passphrase_file} holds another passphrase than ${PASSPHRASE_ENV}: "
            "remove it, or give the one it holds"
        )
    countries = sorted({parse_agency(agency).country for agency in AGENCIES})
    deployment = create_deployment(
        out_dir, AGENCIES, passphrase=passphrase, kdf=kdf, layout=compose_layout(countries)
    )
    plan = deployment.plan
    for country in deployment.countries:
        for index, node in enumerate(plan.members(country), start=1):
            # named after the node's own dir (THA, THA-2 …), which holds its seeds
            _write_private(
                out_dir / "nats" / f"{node.base_dir.name}.conf",
                render_config(plan, country, index=index),
            )
            # The JetStream store, mounted at /data: made here, owned by whoever
            # runs the containers (docker would create a missing one as root).
            (out_dir / "data" / node.base_dir.name).mkdir(mode=0o700, parents=True)
        # Each hub process's state (its trust in it: <state_dir>/trust), mounted on its
        # own (read-write, over the read-only /ixb): must exist first, or docker would
        # create it owned by root.
        for process in hub_processes(country):
            (out_dir / "state" / process.state).mkdir(mode=0o700, parents=True)
    for agency in RESPONDERS:
        profile = deployment.profile(agency)
        state = Path("agency-state") / profile.stem
        (out_dir / state).mkdir(mode=0o700, parents=True)
        # Its state file is written beside the profile unless base_dir says elsewhere
        # (the profile's other paths are absolute): /ixb is read-only in containers.
        text = profile.read_text(encoding="utf-8")
        _write_private(profile, f"base_dir = {json.dumps(str(MOUNT / state))}\n\n{text}")
    _write_private(out_dir / "MYS-documents.json", DocumentRegistry.dump(REGISTRY))
    passphrase_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(passphrase_file, passphrase + "\n")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compose = sub.add_parser("compose", help="files for docker-compose.yml").add_subparsers(
        dest="cmd", required=True
    )
    prepare = compose.add_parser(
        "prepare", help="generate keys, nkeys and configs for `docker compose up`"
    )
    prepare.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where (default: {DEFAULT_OUT})"
    )
    prepare.add_argument(
        "--passphrase-file",
        type=Path,
        default=DEFAULT_PASSPHRASE_FILE,
        help=f"the compose secret the containers read the passphrase from "
        f"(default: {DEFAULT_PASSPHRASE_FILE})",
    )
    add_json(prepare)
    prepare.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    out: Path = args.out
    secret: Path = args.passphrase_file
    passphrase = env_secret(PASSPHRASE_ENV)
    if not passphrase:
        raise UsageError(
            f"set ${PASSPHRASE_ENV} (or ${PASSPHRASE_ENV}{FILE_SUFFIX}) to the passphrase "
            f"that seals the key files (the containers read it from {secret})"
        )
    write_compose_deployment(out, passphrase=passphrase, passphrase_file=secret)
    emit(
        args,
        f"prepared {out} (keys sealed with the passphrase in {secret})\nnext: docker compose up",
        {"dir": str(out), "passphrase_file": str(secret), "next": "docker compose up"},
    )
    return 0
