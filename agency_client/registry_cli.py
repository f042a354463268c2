"""``ixb registry``: the document authority's embedded registry (SQLite).

``load`` reads a country's CSV or JSON export, checks every row and loads
all of it in one transaction, or nothing: the first bad row is reported
with its line number (one line, exit 2). ``show`` prints the records of a
document number, ``stats`` counts by status. Nothing here connects.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from agency_client.docregistry import (
    MAX_REGISTRY_BYTES,
    DocumentRecord,
    SourceKind,
    SqliteRegistry,
    default_registry_path,
    read_export,
)
from agency_client.profile import load_profile
from protocols.errors import UsageError
from protocols.fields import utc_iso
from transport.cliout import add_json, emit
from transport.clock import wall_ms
from transport.files import read_bytes

FORMATS = ("csv", "json")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    registry = sub.add_parser(
        "registry", help="the document registry that answers document checks"
    ).add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
        p.add_argument(
            "--db",
            type=Path,
            metavar="FILE",
            help="the registry's SQLite file (default: the profile's [registry] source, "
            "else <CC>-<NAME>.documents.sqlite beside the profile)",
        )
        return add_json(p)

    load = common(
        registry.add_parser(
            "load",
            help="load a CSV or JSON export of issued documents (all rows or none)",
            description="Check every row of an export and load them in one transaction; a "
            "bad row refuses the whole file, naming its line. Columns (CSV header row, or "
            "JSON keys): document_number, issuing_state, surname, given_names, birth_date, "
            "expiry_date, nationality, sex, status (optional: valid, not_issued, revoked, "
            "reported_lost, reported_stolen, unknown).",
        )
    )
    load.add_argument("file", type=Path)
    load.add_argument("--format", choices=FORMATS, help="default: from the file's extension")
    load.add_argument(
        "--replace", action="store_true", help="the file replaces every record (default: adds)"
    )
    load.set_defaults(func=cmd_registry_load)

    show = common(registry.add_parser("show", help="the records of a document number"))
    show.add_argument("number")
    show.set_defaults(func=cmd_registry_show)

    stats = common(registry.add_parser("stats", help="how many documents, by status"))
    stats.set_defaults(func=cmd_registry_stats)


def registry_file(args: argparse.Namespace) -> Path:
    """``--db``, else the profile's ``sqlite:`` source, else the default beside the profile."""
    if args.db is not None:
        return Path(args.db)
    profile = load_profile(args.profile)
    base = Path(profile.base_dir)
    source = profile.registry.source
    if source is not None:
        kind, _, rest = source.partition(":")
        if kind != SourceKind.SQLITE:
            raise UsageError(f"the profile's registry is {kind}: source, not SQLite; give --db")
        path = Path(rest).expanduser()
        return path if path.is_absolute() else base / path
    return default_registry_path(base, profile.principal.country, profile.principal.name)


def cmd_registry_load(args: argparse.Namespace) -> int:
    fmt = args.format or args.file.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(f"{args.file}: say --format csv or --format json")
    records = read_export(read_bytes(args.file, MAX_REGISTRY_BYTES), fmt, args.file.name)
    db = registry_file(args)
    registry = SqliteRegistry(db, create=True)
    try:
        result = registry.load(records, replace=args.replace, file=args.file.name, now_ms=wall_ms())
    finally:
        registry.close()
    how = "replaced the registry with" if args.replace else "loaded"
    emit(
        args,
        f"{how} {result.loaded} documents from {args.file.name} into {db} ({result.total} in all)",
        {
            "registry": str(db),
            "file": str(args.file),
            "loaded": result.loaded,
            "total": result.total,
            "replaced": args.replace,
        },
    )
    return 0


def _record_json(record: DocumentRecord, today: str) -> dict[str, object]:
    data: dict[str, object] = msgspec.to_builtins(record)
    data["expired"] = record.expiry_date < today
    return data


def cmd_registry_show(args: argparse.Namespace) -> int:
    number = args.number.strip().upper().replace(" ", "")
    registry = SqliteRegistry(registry_file(args))
    try:
        found = registry.find(number)
    finally:
        registry.close()
    if not found:
        raise UsageError(f"no document {number} in the registry")
    today = datetime.now(UTC).date().isoformat()
    rows = [_record_json(r, today) for r in found]
    human = "\n".join(
        f"{r.issuing_state} {r.document_number}  {r.status}"
        + ("  (expired)" if r.expiry_date < today else "")
        + f"\n  {r.surname}, {r.given_names}  born {r.birth_date}  {r.sex}  {r.nationality}"
        f"  expires {r.expiry_date}"
        for r in found
    )
    emit(args, human, {"documents": rows})
    return 0


def cmd_registry_stats(args: argparse.Namespace) -> int:
    db = registry_file(args)
    registry = SqliteRegistry(db)
    try:
        stats = registry.stats(datetime.now(UTC).date())
    finally:
        registry.close()
    last = stats["last_load"]
    if last is not None:
        last = {"at": utc_iso(last["at_ms"])} | {k: v for k, v in last.items() if k != "at_ms"}
    data = {"registry": str(db), **stats, "last_load": last}
    lines = [f"{db}: {stats['documents']} documents"]
    lines += [f"  {status:<16} {n}" for status, n in stats["by_status"].items()]
    lines.append(f"  valid but expired {stats['valid_but_expired']}")
    if last is not None:
        verb = "replaced from" if last["replaced"] else "loaded from"
        lines.append(f"last {verb} {last['file']} at {last['at']} ({last['rows']} rows)")
    emit(args, "\n".join(lines), data)
    return 0
