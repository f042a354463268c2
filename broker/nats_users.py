"""Add an enrolled agency's user to its country's running nats-server, or remove a revoked one's.

The federation plan (``plan.json``, :mod:`broker.natsplan`) is what the
server's config is rendered from: the agency joins its country's list, with
the bcrypt hash of the password it generated as its password (nats-server
compares a ``$2…`` password as bcrypt), the config is rendered again and the
server reloads it on SIGHUP (what ``nats-server --signal reload=PID`` sends).
Connected clients stay connected.
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


def add_agency_user(
    plan_path: Path, agency: Principal, password_hash: str, pid: int | None
) -> Path:
    """Add ``agency`` to the plan and the rendered config; reload the server ``pid`` if given."""
    if not password_hash.startswith("$2"):
        raise UsageError(f"{agency}: the NATS password must arrive as a bcrypt hash")
    plan = load_plan(plan_path)
    names = tuple(plan.agencies.get(agency.country, ()))
    if agency.name in names:
        raise UsageError(f"{agency} already has a NATS user in {plan_path}")
    plan = dataclasses.replace(
        plan,
        agencies={**plan.agencies, agency.country: (*names, agency.name)},
        passwords={**plan.passwords, f"{agency.country}/agency/{agency.name}": password_hash},
    )
    return _apply(plan, plan_path, agency.country, pid)


def remove_agency_user(plan_path: Path, agency: Principal, pid: int | None) -> Path:
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
    )
    return _apply(plan, plan_path, agency.country, pid)


def _apply(plan: FederationPlan, plan_path: Path, country: str, pid: int | None) -> Path:
    """Render the server's config, keep the plan, and have the server reload it."""
    config = write_config(plan, country)
    save_plan(plan, plan_path)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise IoError(f"cannot signal nats-server {pid} to reload: {exc.strerror}") from None
    return config
