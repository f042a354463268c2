"""``ixb retention run``: drop delivered content past its type's retention, now.

For an agency (``--profile``, or ``$IXB_PROFILE``): the content of its
message store, per ``[store]``. For a hub (``--config HUB.toml``): the
envelopes in its ``INBOX`` and link streams, per ``[retention]``, erased
once their consumer has acknowledged them. Both keep the metadata; both
also run on their own (the store at every open, the hub on a schedule).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
from pathlib import Path

from agency_client.msgstore import Pruned, open_store
from agency_client.profile import load_profile
from broker.cli import load_hub_parts
from broker.config import load_config
from broker.hub import Hub
from protocols.errors import UsageError
from protocols.fields import utc_iso
from transport.cliout import add_json, emit
from transport.clock import wall_ms
from transport.retention import StreamSweep


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("retention", help="drop delivered content past its retention")
    actions = group.add_subparsers(dest="retention_action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="apply retention now: an agency's store (--profile) or a hub's streams (--config)",
    )
    run.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
    run.add_argument("--config", type=Path, help="hub config: erase from the hub's streams")
    run.add_argument(
        "--as-of",
        metavar="TIME",
        help="apply it as at this ISO 8601 UTC time (to bring a deletion forward)",
    )
    add_json(run)
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    now = _as_of(args.as_of) if args.as_of else wall_ms()
    if args.config is not None:
        if args.profile is not None:
            raise UsageError("retention run: --config (a hub) or --profile (an agency), not both")
        return _hub(args, now)
    return _agency(args, now)


def _agency(args: argparse.Namespace, now: int) -> int:
    profile = load_profile(args.profile)
    store = open_store(profile, [], now)  # pruning reads metadata only: no key needed
    try:
        pruned: Pruned = store.last_prune
    finally:
        store.close()
    data = {
        "agency": profile.agency.id,
        "as_of": utc_iso(now),
        "removed": pruned.removed,
        "oldest_kept": None if pruned.oldest_kept is None else utc_iso(pruned.oldest_kept),
    }
    emit(args, _human(f"store of {profile.agency.id}", pruned.removed, pruned.oldest_kept), data)
    return 0


def _hub(args: argparse.Namespace, now: int) -> int:
    config = load_config(args.config)
    identity, trust, agencies = load_hub_parts(config)
    hub = Hub(config, identity, trust, agencies, clock=lambda: now)
    sweeps: list[StreamSweep] = asyncio.run(hub.retention_once())
    data = {
        "hub": str(config.hub_id),
        "as_of": utc_iso(now),
        "streams": [
            {
                **s.as_json(),
                "oldest_kept": None if s.oldest_kept_ms is None else utc_iso(s.oldest_kept_ms),
            }
            for s in sweeps
        ],
    }
    lines = [_human(f"stream {s.stream}", s.removed, s.oldest_kept_ms) for s in sweeps]
    lines += [f"  {s.unacked} past retention but not yet acknowledged" for s in sweeps if s.unacked]
    emit(args, "\n".join(lines), data)
    return 0


def _human(where: str, removed: dict[str, int], oldest: int | None) -> str:
    what = ", ".join(f"{n} {t}" for t, n in sorted(removed.items())) or "nothing"
    kept = "no content kept" if oldest is None else f"oldest kept {utc_iso(oldest)}"
    return f"{where}: removed {what}; {kept}"


def _as_of(text: str) -> int:
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--as-of: {text!r} is not an ISO 8601 time") from None
    if when.utcoffset() != datetime.timedelta(0):
        raise UsageError(f"--as-of: {text!r} must be UTC (…Z)")
    return int(when.timestamp() * 1000)
