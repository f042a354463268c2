"""``ixb directory ls``: whom this agency can address, from the signed directories the SDK holds.

The directories are the hubs' own, verified against the federation file's
trust anchors on connecting (nothing here is taken on the hub's word): per
country, each agency with its roles, whether it can be addressed now
(revoked, expired or not yet valid if not), and its key fingerprints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agency_client.commands import _run  # the one connect-and-run path every command shares
from agency_client.sdk import AgencyClient
from protocols.directory import DirectoryEntry
from protocols.fields import utc_iso, utc_text
from transport.cliargs import add_connect_timeout, country
from transport.cliout import add_json, emit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    directory = sub.add_parser(
        "directory", help="the agencies this agency can address"
    ).add_subparsers(dest="cmd", required=True)
    ls = directory.add_parser(
        "ls",
        help="agencies per country: roles, state, key fingerprints (signed directories)",
        description="List the agencies of every country whose signed directory the hub "
        "passed on and the federation file's anchors verified.",
        epilog="example: IXB_PROFILE=demo/agencies/THA-DSI-ATHD.toml ixb directory ls "
        "--country MYS",
    )
    ls.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
    add_json(ls)
    ls.add_argument(
        "--country", type=country, help="only this country (ISO 3166 alpha-3, e.g. MYS)"
    )
    add_connect_timeout(ls)
    ls.set_defaults(func=cmd_directory_ls)


def _state(entry: DirectoryEntry, now: int) -> str:
    if entry.revoked is not None and entry.revoked.at <= now:
        return f"revoked {utc_text(entry.revoked.at)}: {entry.revoked.reason}"
    if now < entry.valid_from:
        return f"valid from {utc_text(entry.valid_from)}"
    if now >= entry.valid_until:
        return f"expired {utc_text(entry.valid_until)}"
    return "active"


def listing(client: AgencyClient, country: str | None) -> list[dict[str, Any]]:
    """One row per country: its directory version and expiry, and its agencies."""
    now = client.clock()
    rows: list[dict[str, Any]] = []
    federation = client.federation
    countries = sorted(federation.trust.countries) if federation is not None else []
    for cc in countries:
        if country is not None and cc != country:
            continue
        directory = client.keys.directory(cc)
        entries = () if directory is None else directory.entries
        agencies = [
            {
                "agency": entry.agency,
                "roles": [r.value for r in entry.roles],
                "state": _state(entry, now),
                "addressable": _state(entry, now) == "active",
                "fingerprints": entry.public.fingerprints(),
                "valid_until": utc_iso(entry.valid_until),
            }
            for entry in entries
        ]
        rows.append(
            {
                "country": cc,
                "directory_version": None if directory is None else directory.version,
                "directory_expires": None if directory is None else utc_iso(directory.expires),
                "agencies": agencies,
            }
        )
    return rows


def cmd_directory_ls(args: argparse.Namespace) -> int:
    country = None if args.country is None else args.country.upper()

    async def go(client: AgencyClient) -> int:
        rows = listing(client, country)
        if args.json:
            emit(args, "", {"countries": rows})
            return 0
        for row in rows:
            if row["directory_version"] is None:
                sys.stdout.write(f"{row['country']}  no directory received yet\n")
                continue
            sys.stdout.write(
                f"{row['country']}  directory version {row['directory_version']},"
                f" {len(row['agencies'])} agencies\n"
            )
            for a in row["agencies"]:
                sys.stdout.write(f"  {a['agency']:<22} {', '.join(a['roles'])}  [{a['state']}]\n")
                for role, fpr in a["fingerprints"].items():
                    sys.stdout.write(f"      {role:<10} {fpr}\n")
        return 0

    return _run(args, go)
