"""Add an enrolled agency's user to its country's running nats-server.

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
    config = write_config(plan, agency.country)
    save_plan(plan, plan_path)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise IoError(f"cannot signal nats-server {pid} to reload: {exc.strerror}") from None
    return config
