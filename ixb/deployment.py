"""Lay out a whole federation on disk: keys, trust anchors, NATS plan, hub configs, profiles.

What an operator of each country would do by hand (docs/deploying.md), done
at once for the demo and the integration tests::

    base/
      plan.json               NATS ports and public nkeys (0600; no secret)
      nats/THA/seeds/         the seeds THA's server dials its leaf peers with (0600)
      nats/THA/sys.password   THA's system-account password, for local tooling (0600)
      tls/ca.pem, tls/THA.pem, tls/THA-key.pem   a throwaway CA and each server's certificate
      federation.toml         trust anchors: every hub's key, exchanged out of band
      trust/THA/              what THA's hub accepted: federation version, witness pins
      keys/THA-HUB.key        hub key files, agency key files (passphrase-encrypted; they
                              seal the NATS nkeys too)
      hubs/THA.toml           one hub config per country
      hubs/agency-keys/       the agencies' key files as their hubs received them (public half read)
      agencies/THA-DSI-ATHD.toml   one profile per agency

By default every process runs on this machine's 127.0.0.1 with free ports; a
:class:`Layout` places them elsewhere (``ixb.compose``: one container each).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agency_client.profile import render_profile
from broker.natsd import free_ports, save_plan, write_leaf_seeds
from broker.natsplan import FederationPlan, NodePorts
from broker.natstls import write_throwaway_tls
from broker.web.auth import hash_password
from protocols.federation import render_federation
from protocols.identifiers import Principal, hub_of, parse_agency
from protocols.keys import (
    NATS_AGENCY,
    NATS_HUB,
    Identity,
    KdfProfile,
    nats_link_label,
    seal_keyfile,
)
from protocols.messages import MESSAGE_TYPES
from protocols.roles import Role

AgencySpec = Mapping[str, Sequence[Role]]
"""Agency id (``THA/DSI-ATHD``) → its roles."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the servers, hubs and agencies run, and how they reach each other.

    The defaults are the demo's: everything on 127.0.0.1, free ports, files
    read where they are written.
    """

    bind_host: str = "127.0.0.1"
    """Where nats-servers and hub HTTP listen."""
    nats_hosts: Mapping[str, str] | None = None
    """Per country, the address of its nats-server (a service name); else 127.0.0.1."""
    nats_ports: NodePorts | None = None
    """The same fixed ports for every nats-server (each in its own container)."""
    nats_store_dir: Path | None = None
    """Every nats-server's JetStream dir as it sees it (a container volume)."""
    nats_tls_dir: Path | None = None
    """Where every nats-server sees the deployment's ``tls/`` directory (a container mount)."""
    http_ports: Mapping[str, int] | None = None
    """Per country, the hub's HTTP port; else a free port."""
    mount: Path | None = None
    """Where the deployment directory appears to hubs and agencies (a container mount)."""
    nats_clusters: Mapping[str, int | Sequence[str]] | None = None
    """Countries that run a nats-server cluster: its size, or each node's host (a service
    name); see :meth:`broker.natsplan.FederationPlan.create`."""


@dataclass(frozen=True)
class Deployment:
    base: Path
    plan: FederationPlan
    countries: tuple[str, ...]
    agencies: dict[Principal, tuple[Role, ...]]
    passphrase: str
    http_ports: dict[str, int]

    def hub_url(self, country: str) -> str:
        return f"http://127.0.0.1:{self.http_ports[country]}"

    def hub_config(self, country: str) -> Path:
        return self.base / "hubs" / f"{country}.toml"

    def profile(self, agency: str | Principal) -> Path:
        p = agency if isinstance(agency, Principal) else parse_agency(agency)
        return self.base / "agencies" / f"{p.country}-{p.name}.toml"

    @property
    def ca_file(self) -> Path:
        """The throwaway CA every nats-server's certificate is issued by."""
        return self.base / "tls" / "ca.pem"

    def key_file(self, principal: Principal) -> Path:
        return self.base / "keys" / f"{principal.country}-{principal.name}.key"

    def hub_agency_key(self, principal: Principal) -> Path:
        """The agency's key file as its hub received it (``[[agency]] key``)."""
        return self.base / "hubs" / "agency-keys" / f"{principal.country}-{principal.name}.key"

    def env(self) -> dict[str, str]:
        """Environment for hub and agency processes (passphrase of the demo's key files)."""
        return {**os.environ, "IXB_PASSPHRASE": self.passphrase}


def _write_private(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _toml_str(value: str) -> str:
    return json.dumps(value)


def create_deployment(
    base: Path,
    agencies: AgencySpec,
    *,
    passphrase: str,
    kdf: KdfProfile = KdfProfile.MODERATE,
    exchange: Mapping[str, Sequence[str]] | None = None,
    workers: int = 1,
    layout: Layout = Layout(),
    liaison_password: str | None = None,
) -> Deployment:
    """Generate everything for the agencies' countries; ``exchange`` defaults to every type.

    Key files are sealed with ``kdf`` (libsodium's moderate Argon2id cost unless
    a test asks for less); every NATS link runs over TLS with a throwaway CA
    written to ``base/tls``.
    """
    parsed = {parse_agency(a): tuple(roles) for a, roles in agencies.items()}
    countries = tuple(sorted({p.country for p in parsed}))
    # one source for every port of the run: none is handed out twice (a hub's HTTP port
    # once went to a nats-server that had not bound its own yet)
    port_source = free_ports()
    plan = FederationPlan.create(
        countries,
        {c: [p.name for p in parsed if p.country == c] for c in countries},
        base / "nats",
        bind_host=layout.bind_host,
        hosts=layout.nats_hosts,
        ports=layout.nats_ports or port_source,
        store_dir=layout.nats_store_dir,
        tls_dir=layout.nats_tls_dir or base / "tls",
        clusters=layout.nats_clusters,
    )
    base.mkdir(parents=True, exist_ok=True)
    save_plan(plan, base / "plan.json")
    for country in countries:
        for index in range(1, plan.cluster_size(country) + 1):
            write_leaf_seeds(plan, country, index=index)
        _write_private(
            plan.node(country).base_dir / "sys.password",
            plan.system_credentials(country).password or "",
        )
    write_throwaway_tls(plan, base / "tls")
    http_ports = {
        c: (layout.http_ports or {}).get(c) or port_source("127.0.0.1") for c in countries
    }
    deployment = Deployment(base, plan, countries, parsed, passphrase, http_ports)
    root = layout.mount or base

    def seen(path: Path) -> str:
        """``path`` (under base) as the hubs and agencies see it."""
        return str(root / path.relative_to(base))

    hub_ids = {
        c: Identity.generate(hub_of(c)).with_nats(
            {
                NATS_HUB: plan.seeds[f"{c}/hub"],
                **{nats_link_label(p): plan.seeds[f"{c}/link/{p}"] for p in plan.peers(c)},
            }
        )
        for c in countries
    }
    for ident in hub_ids.values():
        _write_private(deployment.key_file(ident.principal), seal_keyfile(ident, passphrase, kdf))
    for principal in parsed:
        seed = plan.seeds[f"{principal.country}/agency/{principal.name}"]
        ident = Identity.generate(principal).with_nats({NATS_AGENCY: seed})
        sealed = seal_keyfile(ident, passphrase, kdf)
        _write_private(deployment.key_file(principal), sealed)
        # the hub's own copy, as the agency handed it over: the hub reads only its public
        # half, and a rotation at the agency (`ixb keys rotate`) must not change it
        _write_private(deployment.hub_agency_key(principal), sealed)
    federation = render_federation("ixb-demo", {c: i.signing.public for c, i in hub_ids.items()})
    _write_private(base / "federation.toml", federation)

    types = list(MESSAGE_TYPES)
    liaison_hash = hash_password(liaison_password) if liaison_password is not None else ""
    for country in countries:
        peers = [c for c in countries if c != country]
        lines = [
            "[hub]",
            f"country = {_toml_str(country)}",
            f"key_file = {_toml_str(seen(deployment.key_file(hub_of(country))))}",
            f"state_dir = {_toml_str(seen(base / 'state' / country))}",
            f"federation_file = {_toml_str(seen(base / 'federation.toml'))}",
            # beside the state, not in it (a state lost is then noticed); in containers
            # only the state is writable, so there the default: <state_dir>/trust
            *(
                [f"trust_dir = {_toml_str(str(base / 'trust' / country))}"]
                if layout.mount is None
                else []
            ),
            f"workers = {workers}",
            "",
            "[nats]",
            "# the hub logs in with the NATS nkey sealed in key_file",
            f"url = {_toml_str(plan.client_url(country))}",
            f"ca_file = {_toml_str(seen(deployment.ca_file))}",
            *(
                [f"replicas = {min(3, plan.cluster_size(country))}  # every stream on 3 nodes"]
                if plan.cluster_size(country) > 1
                else []
            ),
            "",
            "[http]",
            f"host = {_toml_str(layout.bind_host)}",
            f"port = {deployment.http_ports[country]}",
            "",
        ]
        for peer in peers:
            lines += [f"[links.{peer}]  # nkey link/{peer}, sealed in key_file", ""]
        lines.append("[policy.exchange]")
        for peer in peers:
            allowed = list((exchange or {}).get(peer, types))
            lines.append(f"{peer} = {json.dumps(allowed)}")
        lines.append("")
        for principal, roles in parsed.items():
            if principal.country != country:
                continue
            lines += [
                "[[agency]]",
                f"id = {_toml_str(str(principal))}",
                f"roles = {json.dumps([r.value for r in roles])}",
                f"key = {_toml_str(seen(deployment.hub_agency_key(principal)))}",
                *_rate_lines(roles),
                "",
            ]
        if liaison_password is not None:
            lines += [
                "[[user]]",
                'name = "liaison"',
                'role = "liaison"',
                f"password_hash = {_toml_str(liaison_hash)}",
                "",
            ]
        _write_private(deployment.hub_config(country), "\n".join(lines))

    for principal in parsed:
        _write_private(
            deployment.profile(principal),
            render_profile(
                agency=str(principal),
                key_file=seen(deployment.key_file(principal)),
                federation_file=seen(base / "federation.toml"),
                url=plan.client_url(principal.country),
                ca_file=seen(deployment.ca_file),
            ),
        )
    return deployment


AUTOMATED_ROLES = frozenset({Role.DOCUMENT_AUTHORITY, Role.IMMIGRATION})
AUTOMATED_PER_MINUTE = 60_000
AUTOMATED_BURST = 2_000


def _rate_lines(roles: Sequence[Role]) -> list[str]:
    """A per-agency rate limit for border checks: 1,000 a second, not the policy's 10.

    Document checks come from every desk of a country and are answered by a
    machine; the policy default (600 a minute) suits people writing alerts.
    """
    if not AUTOMATED_ROLES.intersection(roles):
        return []
    return [f"max_per_minute = {AUTOMATED_PER_MINUTE}", f"burst = {AUTOMATED_BURST}"]
