"""Hub commands: ``ixb hub run`` (the service); the audit log has its own group (audit_cli)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import structlog

from broker import backup_cli, lifecycle_cli
from broker.config import HubConfig, load_config
from broker.hub import Hub, install_signal_handlers
from broker.lifecycle_cli import new_password
from broker.natsd import load_plan, render_config, write_private
from broker.registry import agency_public_keys
from broker.service import HubService
from broker.trust import adopt_federation, anchors_in_force
from broker.web.auth import hash_password
from protocols.errors import ConfigError, IoError
from protocols.federation import TrustAnchors
from protocols.identifiers import Principal
from protocols.keys import Identity, PublicIdentity, open_keyfile
from transport import eventloop
from transport.cliargs import country, int_range
from transport.cliout import add_json, emit
from transport.files import FILE_SUFFIX, env_secret

MAX_SMALL_FILE = 64 * 1024


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hub = sub.add_parser("hub", help="national hub service").add_subparsers(
        dest="cmd", required=True
    )
    run = hub.add_parser("run", help="run the hub until SIGTERM/SIGINT")
    run.add_argument("--config", required=True, type=Path)
    run.set_defaults(func=cmd_run)
    passwd = hub.add_parser(
        "passwd", help="hash a liaison/auditor password for a [[user]] block of the hub config"
    )
    passwd.add_argument("--name", required=True)
    passwd.add_argument("--role", choices=["liaison", "auditor"], required=True)
    add_json(passwd)
    passwd.set_defaults(func=cmd_passwd)
    nats_config = hub.add_parser(
        "nats-config",
        help="one nats-server's config, rendered from the federation plan (plan.json)",
    )
    nats_config.add_argument("--plan", required=True, type=Path, help="the federation plan")
    nats_config.add_argument("--country", required=True, type=country)
    nats_config.add_argument(
        "--node", type=int_range(1, 15), default=1, help="the node of a clustered country"
    )
    nats_config.add_argument("--out", type=Path, help="write it here (0600) instead of printing it")
    add_json(nats_config)
    nats_config.set_defaults(func=cmd_nats_config)
    lifecycle_cli.register(hub)
    backup_cli.register(hub)


def configure_logging(json_logs: bool) -> None:
    """JSON lines for services, key=value for humans; never content (we never have it)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IoError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SMALL_FILE:
        raise IoError(f"{path} is larger than {MAX_SMALL_FILE} bytes")
    return data


def hub_identity(config: HubConfig) -> Identity:
    """The hub's keys, opened with the passphrase in ``$<hub.passphrase_env>`` (or in the
    file ``$<hub.passphrase_env>_FILE`` names)."""
    name = config.hub.passphrase_env
    passphrase = env_secret(name)
    if passphrase is None:
        raise ConfigError(f"hub.passphrase_env: set ${name} (or ${name}{FILE_SUFFIX}: its file)")
    return open_keyfile(_read(config.path(config.hub.key_file)), passphrase)


def load_hub_parts(
    config: HubConfig,
) -> tuple[Identity, TrustAnchors, dict[Principal, PublicIdentity]]:
    """Key, trust anchors and agency keys named by the config, each checked.

    The federation file must be the version this hub holds or its successor,
    signed by the threshold of it (:func:`broker.trust.adopt_federation`).
    A later version is installed live (``ixb federation install``); the hub
    polls for it (:meth:`broker.hub.Hub.apply_federation`).
    """
    identity = hub_identity(config)
    fed_path = config.path(config.hub.federation_file)
    try:
        fed_text = _read(fed_path).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{fed_path}: not UTF-8") from None
    held = adopt_federation(config.trust_path, fed_text, fed_path)
    return identity, anchors_in_force(config.trust_path, held), agency_public_keys(config)


def cmd_run(args: argparse.Namespace) -> int:
    configure_logging(json_logs=True)
    config = load_config(args.config)
    identity, trust, agencies = load_hub_parts(config)

    async def main() -> None:
        hub = Hub(config, identity, trust, agencies)
        install_signal_handlers(hub)
        await HubService(hub).run()

    eventloop.run(main())
    return 0


def cmd_nats_config(args: argparse.Namespace) -> int:
    """Render the config of one server of ``--country`` (node ``--node`` of its cluster).

    For a country laid out by hand, or after editing ``plan.json`` (a host name,
    a port): the config includes ``seeds/…`` files (leaf seeds, a cluster's
    route login) that stay where the plan was created; only public keys and
    bcrypt hashes are rendered."""
    plan = load_plan(args.plan)
    size = plan.cluster_size(args.country)
    if args.node > size:
        raise ConfigError(
            f"{args.country} has {size} nats-server(s) in {args.plan}, no node {args.node}"
        )
    text = render_config(plan, args.country, index=args.node)
    node = plan.members(args.country)[args.node - 1]
    if args.out is not None:
        write_private(args.out, text)
    data = {
        "country": args.country,
        "node": args.node,
        "server_name": node.name,
        "path": None if args.out is None else str(args.out),
        "config": None if args.out is not None else text,
    }
    human = f"wrote {node.name}'s config to {args.out}" if args.out is not None else text.rstrip()
    emit(args, human, data)
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """Print a ``[[user]]`` block; the password comes from $IXB_NEW_PASSWORD or a prompt."""
    password_hash = hash_password(new_password())
    emit(
        args,
        f'[[user]]\nname = "{args.name}"\nrole = "{args.role}"\npassword_hash = "{password_hash}"',
        {"name": args.name, "role": args.role, "password_hash": password_hash},
    )
    return 0
