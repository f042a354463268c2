"""Add an enrolled agency's user to its country's running nats-server, or remove a revoked one's.

The federation plan (``plan.json``, :mod:`broker.natsplan`) is what the
server's config is rendered from: the agency joins its country's list with
the public nkey it generated (``U…``; its seed never left the agency's
machine), the config is rendered again and the server reloads it on SIGHUP
(what ``nats-server --signal reload=PID`` sends). The server's pid is read
from the ``pid_file`` its config names, unless given. Connected clients stay
connected; a removed user's connections are closed by the reload.

Agencies enrolled before nkeys sent a bcrypt hash of a password instead
(nats-server compares a ``$2…`` password as bcrypt); that still works.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

from broker.natsd import load_plan, save_plan, write_config
from broker.natsplan import FederationPlan
from protocols.errors import IoError, UsageError
from protocols.identifiers import Principal
from protocols.keys import is_nkey_user

MAX_PID_FILE_BYTES = 32


def add_agency_user(
    plan_path: Path,
    agency: Principal,
    *,
    nkey: str | None = None,
    password_hash: str | None = None,
    pid: int | None = None,
) -> tuple[Path, int | None]:
    """Add ``agency`` to the plan and the rendered config, and reload its server.

    Returns the config and the pid signalled (None: no server runs; it reads
    the config when it starts).
    """
    plan = load_plan(plan_path)
    names = tuple(plan.agencies.get(agency.country, ()))
    if agency.name in names:
        raise UsageError(f"{agency} already has a NATS user in {plan_path}")
    key = f"{agency.country}/agency/{agency.name}"
    if nkey is not None:
        if not is_nkey_user(nkey):
            raise UsageError(f"{agency}: {nkey!r} is not a public NATS user nkey (U…)")
        if nkey in plan.nkeys.values():
            raise UsageError(f"{agency}: that nkey is already another NATS user's")
        plan = dataclasses.replace(plan, nkeys={**plan.nkeys, key: nkey})
    elif password_hash is not None:
        if not password_hash.startswith("$2"):
            raise UsageError(f"{agency}: the NATS password must arrive as a bcrypt hash")
        plan = dataclasses.replace(plan, passwords={**plan.passwords, key: password_hash})
    else:
        raise UsageError(f"{agency}: an nkey (or a bcrypt password hash) is needed")
    plan = dataclasses.replace(
        plan, agencies={**plan.agencies, agency.country: (*names, agency.name)}
    )
    return _apply(plan, plan_path, agency.country, pid)


def remove_agency_user(
    plan_path: Path, agency: Principal, pid: int | None = None
) -> tuple[Path, int | None]:
    """Remove ``agency``'s NATS user (a revocation): the server closes its connections."""
    plan = load_plan(plan_path)
    names = tuple(plan.agencies.get(agency.country, ()))
    if agency.name not in names:
        raise UsageError(f"{agency} has no NATS user in {plan_path}")
    key = f"{agency.country}/agency/{agency.name}"
    plan = dataclasses.replace(
        plan,
        agencies={**plan.agencies, agency.country: tuple(n for n in names if n != agency.name)},
        passwords={k: v for k, v in plan.passwords.items() if k != key},
        nkeys={k: v for k, v in plan.nkeys.items() if k != key},
    )
    return _apply(plan, plan_path, agency.country, pid)


def server_pid(plan: FederationPlan, country: str, index: int = 1) -> int | None:
    """The pid in the ``pid_file`` of ``country``'s server (node ``index`` of a cluster);
    None if there is none (the server is not running)."""
    path = plan.members(country)[index - 1].pid_path
    try:
        with path.open("rb") as fh:
            text = fh.read(MAX_PID_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IoError(f"cannot read nats-server's pid file {path}: {exc.strerror}") from None
    try:
        pid = int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise IoError(f"{path} does not hold a pid") from None
    if pid <= 1:
        raise IoError(f"{path} does not hold a pid")
    return pid


def _apply(
    plan: FederationPlan, plan_path: Path, country: str, pid: int | None
) -> tuple[Path, int | None]:
    """Render the server's config, keep the plan, and have the server reload it.

    A clustered country's nodes must hold the same accounts: every node's config
    is rendered and every running node reloads (each from its own pid file).
    Returns the first node's config and pid.
    """
    members = plan.members(country)
    if pid is not None and len(members) > 1:
        raise UsageError(
            f"{country} runs a cluster of {len(members)} nats-servers: each is reloaded "
            "from its own pid file, not from one --pid"
        )
    configs = [write_config(plan, country, index=i) for i in range(1, len(members) + 1)]
    save_plan(plan, plan_path)
    signalled: list[int | None] = []
    for index, node in enumerate(members, start=1):
        node_pid = pid if pid is not None else server_pid(plan, country, index)
        if node_pid is not None:
            _reload(node_pid, node.pid_path)
        signalled.append(node_pid)
    return configs[0], signalled[0]


def _reload(pid: int, pid_path: Path) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        if pid_path.exists():
            raise IoError(
                f"nats-server {pid} (from {pid_path}) is not running; "
                "the config applies when it starts"
            ) from None
        raise IoError(f"no nats-server {pid} to reload") from None
    except OSError as exc:
        raise IoError(f"cannot signal nats-server {pid} to reload: {exc.strerror}") from None
