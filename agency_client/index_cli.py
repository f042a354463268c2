"""``ixb index load|stats|queries``: the agency's person index and who queried it.

``ixb agency respond --index PATH`` answers ``person.query`` from the index
(:mod:`agency_client.commands`); these commands load it and show its owner
what was asked. None of them connects to the hub.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agency_client.commands import parse_since
from agency_client.keystore import passphrase
from agency_client.personindex import (
    PersonIndex,
    QueryRecord,
    index_path,
    index_stats,
    read_export,
)
from agency_client.profile import Profile, load_profile
from agency_client.sdk import load_identity_for, load_previous_for
from protocols.fields import utc_iso
from transport.cliout import add_json, emit
from transport.clock import wall_ms


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    index = sub.add_parser(
        "index",
        help="the agency's person index (hit/no-hit) and who queried it",
        description="The person index answers person queries with hit (and an opaque "
        "reference) or no hit. It keeps keyed hashes of normalised names, dates and document "
        "numbers, never the terms themselves; see docs/operations/person-index.md.",
    ).add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
        p.add_argument(
            "--index",
            type=Path,
            metavar="PATH",
            help="the index file (default: <CC>-<NAME>.index beside the profile)",
        )
        return add_json(p)

    load = common(
        index.add_parser(
            "load",
            help="load an export (CSV or JSON) into the index",
            description="Rows: reference and surname required; given_names, birth_date "
            "(YYYY, YYYY-MM or YYYY-MM-DD), nationality (3 letters), document_number optional. "
            "A bad row refuses the whole file, naming its lines. Rows already held are skipped.",
            epilog="example: ixb index load persons.csv   (first line: reference,surname,"
            "given_names,birth_date,nationality,document_number)",
        )
    )
    load.add_argument("file", type=Path)
    load.add_argument("--format", choices=["csv", "json"], help="default: from the suffix")
    load.add_argument(
        "--replace", action="store_true", help="drop every row held first (one transaction)"
    )
    load.set_defaults(func=cmd_index_load)

    stats = common(index.add_parser("stats", help="rows, references and queries answered"))
    stats.set_defaults(func=cmd_index_stats)

    queries = common(
        index.add_parser(
            "queries",
            help="who queried the index: when, purpose, legal basis, what was hit",
            description="Every person query the index answered: who asked, when, the message "
            "id, the references hit, the purpose and legal basis given, and a keyed hash of "
            "the terms (equal for the same person asked the same way; never the terms).",
        )
    )
    queries.add_argument("--since", metavar="WHEN", help="ISO 8601, UTC (2026-11-01T08:00)")
    queries.add_argument("--reference", metavar="REF", help="only the queries that hit REF")
    queries.set_defaults(func=cmd_index_queries)


def _profile_and_path(args: argparse.Namespace) -> tuple[Profile | None, Path]:
    if args.index is not None and args.profile is None:
        return None, args.index
    profile = load_profile(args.profile)
    return profile, args.index or index_path(profile)


def _open(args: argparse.Namespace, *, create: bool) -> PersonIndex:
    profile = load_profile(args.profile)
    path = args.index or index_path(profile)
    secret = passphrase(confirm=False)
    previous = load_previous_for(profile, secret)
    identities = [load_identity_for(profile, secret), *([previous] if previous else [])]
    return PersonIndex(path, identities, create=create)


def cmd_index_load(args: argparse.Namespace) -> int:
    rows = read_export(args.file, args.format)  # all checked before the index is touched
    index = _open(args, create=True)
    try:
        added, already = index.load(rows, replace=args.replace, now=wall_ms())
    finally:
        index.close()
    stats = index_stats(index.path)
    human = (
        f"loaded {added} rows from {args.file} into {index.path}"
        + (f" ({already} already held)" if already else "")
        + (" replacing the previous rows" if args.replace else "")
        + f"; {stats.records} rows, {stats.references} references"
    )
    emit(
        args,
        human,
        {
            "index": str(index.path),
            "file": str(args.file),
            "added": added,
            "already_held": already,
            "replaced": args.replace,
            "records": stats.records,
            "references": stats.references,
        },
    )
    return 0


def cmd_index_stats(args: argparse.Namespace) -> int:
    _, path = _profile_and_path(args)
    s = index_stats(path)

    def when(ms: int | None) -> str | None:
        return None if ms is None else utc_iso(ms)

    human = (
        f"{path}: {s.records} rows, {s.references} references; {s.queries} queries answered,"
        f" {s.hits} hits; last loaded {when(s.last_loaded) or 'never'}, last query "
        f"{when(s.last_query) or 'never'}"
    )
    emit(
        args,
        human,
        {
            "index": str(path),
            "records": s.records,
            "references": s.references,
            "queries": s.queries,
            "hits": s.hits,
            "last_loaded": when(s.last_loaded),
            "last_query": when(s.last_query),
        },
    )
    return 0


def _query_json(q: QueryRecord) -> dict[str, object]:
    return {
        "at": utc_iso(q.at),
        "requester": q.requester,
        "message_id": q.message_id,
        "hit": q.hit,
        "references": list(q.references),
        "purpose": q.purpose,
        "legal_basis": q.legal_basis,
        "terms_hash": q.terms,
    }


def cmd_index_queries(args: argparse.Namespace) -> int:
    since = 0 if args.since is None else parse_since(args.since)
    index = _open(args, create=False)
    try:
        found = index.queries(since=since, reference=args.reference)
    finally:
        index.close()
    lines = [
        f"{utc_iso(q.at)}  {q.requester}  {'HIT ' + ', '.join(q.references) if q.hit else 'no hit'}"
        f"  id {q.message_id}  terms {q.terms}\n"
        f"    purpose: {q.purpose or '(sealed under a key no longer held)'}\n"
        f"    legal basis: {q.legal_basis or '-'}"
        for q in found
    ]
    emit(args, "\n".join(lines) or "no queries", {"queries": [_query_json(q) for q in found]})
    return 0
