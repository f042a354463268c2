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
from broker.registry import agency_public_keys
from broker.service import HubService
from broker.trust import adopt_federation, anchors_in_force
from broker.web.auth import hash_password
from protocols.errors import ConfigError, IoError
from protocols.federation import TrustAnchors
from protocols.identifiers import Principal
from protocols.keys import Identity, PublicIdentity, open_keyfile
from transport import eventloop
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


def load_hub_parts(
    config: HubConfig,
) -> tuple[Identity, TrustAnchors, dict[Principal, PublicIdentity]]:
    """Key, trust anchors and agency keys named by the config, each checked.

    The federation file must be the version this hub holds or its successor,
    signed by the threshold of it (:func:`broker.trust.adopt_federation`).
    A later version is installed live (``ixb federation install``); the hub
    polls for it (:meth:`broker.hub.Hub.apply_federation`).
    """
    name = config.hub.passphrase_env
    passphrase = env_secret(name)
    if passphrase is None:
        raise ConfigError(f"hub.passphrase_env: set ${name} (or ${name}{FILE_SUFFIX}: its file)")
    identity = open_keyfile(_read(config.path(config.hub.key_file)), passphrase)
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


def cmd_passwd(args: argparse.Namespace) -> int:
    """Print a ``[[user]]`` block; the password comes from $IXB_NEW_PASSWORD or a prompt."""
    password_hash = hash_password(new_password())
    emit(
        args,
        f'[[user]]\nname = "{args.name}"\nrole = "{args.role}"\npassword_hash = "{password_hash}"',
        {"name": args.name, "role": args.role, "password_hash": password_hash},
    )
    return 0
