"""``ixb compose prepare``: the files ``docker-compose.yml`` mounts, one container per process.

The same federation as ``ixb demo`` (THA, MYS, MMR; keys, trust anchors, hub
configs, agency profiles from :func:`ixb.deployment.create_deployment`, NATS
configs rendered by :class:`broker.natsplan.FederationPlan` from ``deploy/nats/``),
laid out for containers:

- each nats-server listens on 0.0.0.0 with nats-server's default ports in its
  own container, reached by its service name (``nats-tha`` …), its JetStream
  store on the volume at ``/data``; configs in ``<out>/nats/<CC>.conf``;
  TLS on every NATS connection: a throwaway CA and one certificate per server
  (valid for its service name) in ``<out>/tls``, seen at ``/etc/nats/tls``;
- hubs and agencies see ``<out>`` at ``/ixb``; each hub serves HTTP on
  0.0.0.0 at a fixed port per country (published on the host's 127.0.0.1);
- MYS's document responder answers from ``<out>/MYS-documents.json``.

``<out>`` holds keys and nkey seeds (files 0600): keep it out of git. Key
files are sealed with ``$IXB_PASSPHRASE``, which must be set: only ``ixb demo``
has a built-in passphrase.
"""

from __future__ import annotations

import argparse
import os
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

DEFAULT_OUT = Path("deploy/compose")
"""What ``docker-compose.yml`` mounts, relative to the repository root."""

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


def nats_service(country: str) -> str:
    """The compose service (and host name) of a country's nats-server."""
    return f"nats-{country.lower()}"


def compose_layout(countries: list[str]) -> Layout:
    return Layout(
        bind_host=CONTAINER_BIND,
        nats_hosts={c: nats_service(c) for c in countries},
        nats_ports=CONTAINER_PORTS,
        nats_store_dir=NATS_STORE_DIR,
        nats_tls_dir=NATS_TLS_DIR,
        http_ports=HUB_HTTP_PORTS,
        mount=MOUNT,
    )


def write_compose_deployment(
    out_dir: Path, *, passphrase: str, kdf: KdfProfile = KdfProfile.MODERATE
) -> None:
    """Generate keys, nkeys and every config ``docker-compose.yml`` mounts into ``out_dir``.

    Refuses a directory prepared before: new keys and nkeys would not
    match the hubs' state and the NATS volumes of the running deployment.
    """
    if (out_dir / "plan.json").exists():
        raise ConfigError(
            f"{out_dir} is already prepared; to start over: "
            f"docker compose down -v && rm -rf {out_dir}"
        )
    countries = sorted({parse_agency(agency).country for agency in AGENCIES})
    deployment = create_deployment(
        out_dir, AGENCIES, passphrase=passphrase, kdf=kdf, layout=compose_layout(countries)
    )
    for country in deployment.countries:
        _write_private(
            out_dir / "nats" / f"{country}.conf", render_config(deployment.plan, country)
        )
        # Mounted on its own (read-write, over the read-only /ixb): must exist
        # first, or docker would create it owned by root.
        (out_dir / "state" / country).mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(out_dir / "MYS-documents.json", DocumentRegistry.dump(REGISTRY))


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
    add_json(prepare)
    prepare.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    out: Path = args.out
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if not passphrase:
        raise UsageError(
            f"set ${PASSPHRASE_ENV} to the passphrase that seals the key files "
            "(docker compose passes the same variable to the hubs)"
        )
    write_compose_deployment(out, passphrase=passphrase)
    emit(
        args,
        f"prepared {out} (keys sealed with ${PASSPHRASE_ENV})\nnext: docker compose up",
        {"dir": str(out), "next": "docker compose up"},
    )
    return 0
