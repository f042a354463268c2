"""``ixb overdue``: requests past due, for an agency (``--profile``) or a hub (``--config``).

An agency reads its own records (and takes new reminders from its inbox); an
operator or liaison officer reads the hub's store. The two halves live with
the packages that own those records.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agency_client.overdue import cmd_overdue
from broker.deadlines_cli import cmd_hub_overdue
from protocols.errors import UsageError
from transport.cliargs import add_connect_timeout, seconds
from transport.cliout import add_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "overdue",
        help="requests past their answer deadline: asked by you, asked of you (or at a hub)",
    )
    p.description = (
        "For an agency (--profile): what it asked that is overdue, what it was asked that is "
        "overdue, and the reminders its hub sent. For a hub (--config HUB.toml): every "
        "unanswered request it carried that is past due, and the reminders it sent."
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
    where.add_argument("--config", type=Path, help="the hub's config: list from its store")
    p.add_argument(
        "--offline",
        action="store_true",
        help="agency: list from local records only (do not take new reminders from the inbox)",
    )
    p.add_argument(
        "--wait",
        type=seconds(allow_zero=True),
        default=1.0,
        metavar="SECONDS",
        help="agency: seconds to wait for new reminders (default 1)",
    )
    p.add_argument(
        "--open",
        action="store_true",
        help="agency: also the requests still open and not yet due, with when each is due",
    )
    add_connect_timeout(p)
    add_json(p)
    p.set_defaults(func=_overdue)


def _overdue(args: argparse.Namespace) -> int:
    if args.config is not None:
        if args.offline:
            raise UsageError("--offline is for agencies; a hub's store is always local")
        if args.open:
            raise UsageError("--open is for agencies; a hub lists what is past due")
        return cmd_hub_overdue(args)
    return cmd_overdue(args)
