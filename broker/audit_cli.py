"""``ixb audit``: search, show, export, verify and reconcile a hub's audit log.

Every command that reads the log writes an ``audit_read`` / ``audit_export``
entry naming who ran it: reading the record leaves a trace in the record.
``verify`` needs no hub at all: only the export and the federation file.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.audit.log import AuditLog
from broker.audit.records import StoredEntry
from broker.audit.search import AuditQuery
from broker.audit_rebuild import cmd_rebuild
from broker.auditing import reconcile_logs, to_record
from broker.config import HubConfig, load_config
from broker.store import HubStore
from broker.trust import WitnessPins
from protocols.audit import AuditEntry, AuditEvent, decode_entry, make_entry
from protocols.checkpoint import log_origin, merge_notes
from protocols.errors import ConfigError, IoError, IxbError, UsageError
from protocols.export import (
    CHECKPOINT,
    ENTRIES,
    MANIFEST,
    ExportedEntry,
    entry_line,
    manifest,
    verify_export,
)
from protocols.federation import FederationFile, history, parse_federation_file
from protocols.fields import utc_iso, utc_text
from protocols.identifiers import (
    check_country,
    format_message_id,
    parse_message_id,
    parse_principal,
)
from transport.cliargs import country, int_range, seconds
from transport.cliout import add_json, emit
from transport.clock import wall_ms

MAX_EXPORT_FILE = 4 * 1024 * 1024 * 1024
PAGE = 1000
MAX_LIMIT = 100_000
"""``ixb audit search --limit``: the most entries one search prints."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="the hub's tamper-evident audit log").add_subparsers(
        dest="cmd", required=True
    )

    def hub_cmd(name: str, text: str) -> argparse.ArgumentParser:
        p = audit.add_parser(name, help=text)
        p.add_argument("--config", required=True, type=Path, help="the hub's config")
        return add_json(p)

    search = hub_cmd("search", "find entries (newest first)")
    search.add_argument("--msg")
    search.add_argument("--case")
    search.add_argument("--agency")
    search.add_argument("--country", type=country, help="3-letter country code, e.g. MYS")
    search.add_argument("--type")
    search.add_argument("--event", choices=[e.value for e in AuditEvent])
    search.add_argument("--code")
    search.add_argument("--since", help="ISO date or time (UTC)")
    search.add_argument("--until", help="ISO date or time (UTC)")
    search.add_argument(
        "--limit",
        type=int_range(1, MAX_LIMIT),
        default=50,
        help=f"at most this many entries, 1 to {MAX_LIMIT} (default 50)",
    )
    search.set_defaults(func=cmd_search)
    show = hub_cmd("show", "the trail of one message, here and as peers reported it")
    show.add_argument("msg_id")
    show.set_defaults(func=cmd_show)
    export = hub_cmd("export", "entries with leaf bytes, proofs and the cosigned checkpoint")
    export.add_argument("--out", required=True, type=Path)
    export.add_argument("--msg", help="only this message's entries (with inclusion proofs)")
    export.set_defaults(func=cmd_export)
    reconcile = hub_cmd("reconcile", "compare our log with what a peer hub shared")
    reconcile.add_argument("--peer", required=True, type=country, help="the peer's country")
    reconcile.add_argument("--since", help="ISO date or time (UTC)")
    reconcile.add_argument(
        "--grace",
        type=seconds(allow_zero=True),
        default=60.0,
        metavar="SECONDS",
        help="seconds still in flight (default 60)",
    )
    reconcile.set_defaults(func=cmd_reconcile)
    rebuild = hub_cmd(
        "rebuild",
        "the hub stopped: bring its log back from the country's AUDIT stream (after a lost "
        "disk or an older backup restored), checked against what it holds, then verified",
    )
    rebuild.add_argument(
        "--timeout",
        type=seconds(),
        default=10.0,
        metavar="SECONDS",
        help="for the connection to the country's NATS (default 10)",
    )
    rebuild.set_defaults(func=cmd_rebuild)
    witness = audit.add_parser("witness", help="this hub as a witness of peer logs")
    witness_sub = witness.add_subparsers(dest="witness_cmd", required=True)
    repin = witness_sub.add_parser(
        "repin",
        help="after this witness lost its state: trust the peer's next checkpoint (recorded)",
    )
    repin.add_argument("--peer", required=True, help="the peer country, e.g. MYS")
    repin.add_argument("--config", required=True, type=Path, help="the hub's config")
    repin.add_argument(
        "--operator", help="who decided it (default: cli:<login name>), kept in the audit log"
    )
    add_json(repin)
    repin.set_defaults(func=cmd_witness_repin)
    verify = audit.add_parser("verify", help="verify an export (no hub needed)")
    verify.add_argument("dir", type=Path)
    verify.add_argument(
        "--federation",
        required=True,
        type=Path,
        action="append",
        help="the federation file; again for each earlier version (a hub key changed since)",
    )
    add_json(verify)
    verify.set_defaults(func=cmd_verify)


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO date or time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def _when(ms: int) -> str:
    """JSON output: ISO 8601 UTC (``2026-11-30T01:52:12.023Z``)."""
    return utc_iso(ms)


def _text(iso: str) -> str:
    """Human output of a :func:`_when` time: ``2026-11-30 01:52:12.023Z``."""
    return iso.replace("T", " ", 1)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _open(config: HubConfig) -> AuditLog:
    path = config.path(config.hub.state_dir) / "audit.sqlite"
    if not path.exists():
        raise IoError(f"no audit log at {path} (has the hub run?)")
    return AuditLog(path)


def _note_read(log: AuditLog, config: HubConfig, event: AuditEvent, what: str) -> None:
    entry = AuditEntry(
        v=1,
        hub=str(config.hub_id),
        at=wall_ms(),
        event=event,
        actor=_actor(),
        detail=what[:256],
    )
    log.append([to_record(entry)])


def cmd_witness_repin(args: argparse.Namespace) -> int:
    """Record who allowed a fresh start, then mark the pin; the hub trusts the next checkpoint.

    Refused when the witness still holds a checkpoint of the peer's log (its
    state is not lost: a repin would only weaken it).
    """
    config = load_config(args.config)
    try:
        peer = check_country(args.peer)
    except IxbError as exc:
        raise UsageError(f"--peer: {exc.detail}") from None
    if peer not in config.links:
        raise UsageError(f"--peer: {peer} is not a peer of {config.hub_id}")
    operator = args.operator or _actor()
    log = _open(config)
    try:
        last = log.last_witnessed(log_origin(peer))
        if last is not None:
            raise UsageError(
                f"this witness holds {log_origin(peer)} at size {last[0]}: nothing to repin"
            )
        pins = WitnessPins(config.trust_path)
        before = pins.get(peer)
        entry = make_entry(
            str(config.hub_id),
            wall_ms(),
            AuditEvent.POLICY_CHANGED,
            peer=peer,
            actor=operator,
            detail=(
                f"witness repin of {log_origin(peer)}: its next checkpoint is trusted on first use"
                + ("" if before is None else f" (witnessed since {before.since_ms} ms)")
            ),
        )
        log.append([to_record(entry)])
        try:
            pins.allow_repin(peer, operator, entry.at)
        except OSError as exc:
            raise IoError(f"cannot write the witness pin: {exc.strerror or exc}") from None
    finally:
        log.close()
    emit(
        args,
        f"repinned {log_origin(peer)} by {operator}: {config.hub_id} cosigns {peer}'s next "
        "checkpoint as a first one (recorded in the audit log)",
        {"peer": peer, "origin": log_origin(peer), "operator": operator, "at": _when(entry.at)},
    )
    return 0


def _row(e: StoredEntry) -> dict[str, Any]:
    try:
        entry = decode_entry(e.data)
        handling = entry.handling.value if entry.handling else None
        detail, actor = entry.detail, entry.actor
    except IxbError:
        handling, detail, actor = None, "(unreadable entry)", None
    return {
        "index": e.index,
        "at": _when(e.at_ms),
        "event": e.event,
        "msg_id": e.msg_id,
        "type": e.type,
        "sender": e.sender,
        "recipients": list(e.recipients),
        "handling": handling,
        "case_ref": e.case_ref,
        "code": e.code,
        "detail": detail,
        "peer": e.peer,
        "actor": actor,
    }


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        parts = [f"{r['index']:>7}", _text(r["at"]), f"{r['event']:<20}"]
        if r["msg_id"]:
            parts.append(r["msg_id"])
        if r["type"]:
            parts.append(r["type"])
        if r["sender"]:
            parts.append(f"{r['sender']} → {', '.join(r['recipients'])}")
        if r["handling"]:
            parts.append(r["handling"])
        if r["peer"]:
            parts.append(f"peer {r['peer']}")
        if r["code"]:
            parts.append(r["code"])
        if r["detail"]:
            parts.append(r["detail"])
        if r["actor"]:
            parts.append(f"by {r['actor']}")
        sys.stdout.write("  ".join(parts) + "\n")


def cmd_search(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    log = _open(config)
    try:
        found = log.search(
            AuditQuery(
                msg_id=format_message_id(parse_message_id(args.msg)) if args.msg else None,
                case_ref=args.case,
                agency=args.agency,
                country=args.country,
                type=args.type,
                event=args.event,
                code=args.code,
                since_ms=_ms(args.since),
                until_ms=_ms(args.until),
            ),
            limit=args.limit,
        )
        rows = [_row(e) for e in found]
        _note_read(log, config, AuditEvent.AUDIT_READ, f"search {_filters(args)}")
    finally:
        log.close()
    if args.json:
        emit(args, "", {"entries": rows})
    else:
        _print_rows(rows)
    return 0


def _filters(args: argparse.Namespace) -> str:
    keys = ("msg", "case", "agency", "country", "type", "event", "code", "since", "until")
    return " ".join(f"{k}={getattr(args, k)}" for k in keys if getattr(args, k, None))


def cmd_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    msg_id = format_message_id(parse_message_id(args.msg_id))
    log = _open(config)
    store = HubStore(config.path(config.hub.state_dir) / "hub.sqlite")
    try:
        here = [
            dict(_row(e), hub=str(config.hub_id))
            for e in log.search(AuditQuery(msg_id=msg_id), limit=500)
        ]
        addressed = {r for row in here for r in row["recipients"]}
        answers = _answers(log.search(AuditQuery(in_reply_to=msg_id), limit=500), addressed)
        here += [
            dict(_row(e), hub=str(config.hub_id), event=what, by=e.sender, answer=e.msg_id)
            for e, what in answers.values()
        ]
        there = []
        for peer in sorted(config.links):
            for p in store.peer_entries(peer):
                if p.msg_id in answers and p.event != "rejected":
                    e, what = answers[p.msg_id]
                    there.append(
                        dict(
                            _row(dataclasses.replace(e, index=p.index, at_ms=p.at_ms)),
                            hub=f"{peer}/HUB (shared)",
                            event=what,
                            by=e.sender,
                            answer=e.msg_id,
                        )
                    )
                if p.msg_id == msg_id:
                    stored = StoredEntry(
                        p.index,
                        p.data,
                        p.at_ms,
                        p.event,
                        p.msg_id,
                        None,
                        None,
                        (),
                        None,
                        None,
                        p.peer,
                    )
                    there.append(dict(_row(stored), hub=f"{peer}/HUB (shared)"))
        _note_read(log, config, AuditEvent.AUDIT_READ, f"show {msg_id}")
    finally:
        store.close()
        log.close()
    trail = sorted(here + there, key=lambda r: (r["at"], r["index"]))
    if args.json:
        emit(args, "", {"msg_id": msg_id, "trail": trail})
        return 0
    if not trail:
        sys.stdout.write(f"no entries for {msg_id}\n")
    for r in trail:
        sys.stdout.write(
            f"{_text(r['at'])}  {r['hub']:<20} {r['event']:<12} #{r['index']}"
            + (f"  peer {r['peer']}" if r["peer"] else "")
            + (f"  {r['code']}" if r["code"] else "")
            + (f"  by {r['by']} ({r['type']} {r['answer']})" if r.get("by") else "")
            + "\n"
        )
    return 0


def _answers(found: list[StoredEntry], addressed: set[str]) -> dict[str, tuple[StoredEntry, str]]:
    """Each answer to a message (its first entry here): "read" for a recipient's receipt (an
    agency states only read), "answered" for its reply; refused ones left out."""
    out: dict[str, tuple[StoredEntry, str]] = {}
    for e in found:  # newest first: the last kept is the first recorded
        if e.msg_id is None or e.sender not in addressed or e.code is not None:
            continue
        if e.sender is None:
            continue
        if parse_principal(e.sender).is_hub:
            continue
        out[e.msg_id] = (e, "read" if e.type == "receipt" else "answered")
    return out


def cmd_export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    log = _open(config)
    try:
        latest = log.latest_checkpoint()
        if latest is None:
            raise IoError("the hub has not signed a checkpoint yet")
        size, _root, note = latest
        cosigned = [n for _w, s, n, _at in log.cosignatures(size) if s == size]
        note = merge_notes(note, *cosigned) if cosigned else note
        args.out.mkdir(parents=True, exist_ok=False)
        complete = args.msg is None
        if complete:
            indexes: list[int] = list(range(size))
        else:
            msg_id = format_message_id(parse_message_id(args.msg))
            indexes = sorted(
                e.index for e in log.search(AuditQuery(msg_id=msg_id), limit=1000) if e.index < size
            )
        with (args.out / ENTRIES).open("wb") as fh:
            for lo in range(0, len(indexes), PAGE):
                chunk = indexes[lo : lo + PAGE]
                stored = {e.index: e for e in log.entries(chunk[0], chunk[-1] + 1)}
                for i in chunk:
                    fh.write(
                        entry_line(
                            ExportedEntry(i, stored[i].data, tuple(log.inclusion_proof(i, size)))
                        )
                    )
        (args.out / CHECKPOINT).write_bytes(note)
        (args.out / MANIFEST).write_bytes(manifest(str(config.hub_id), size, complete))
        _note_read(
            log,
            config,
            AuditEvent.AUDIT_EXPORT,
            f"export size {size}" + (f" msg {args.msg}" if args.msg else ""),
        )
    except FileExistsError:
        raise IoError(f"{args.out} exists; export into a new directory") from None
    finally:
        log.close()
    witnesses = len(cosigned)
    emit(
        args,
        f"exported {len(indexes)} entries of {size} to {args.out}"
        f" (checkpoint cosigned by {witnesses} peer(s))",
        {"dir": str(args.out), "entries": len(indexes), "size": size, "cosignatures": witnesses},
    )
    return 0


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_EXPORT_FILE:
            raise IoError(f"{path} is too large")
        return path.read_bytes()
    except OSError as exc:
        raise IoError(f"cannot read {path}: {exc.strerror or exc}") from None


def _federation(path: Path) -> FederationFile:
    try:
        return parse_federation_file(_read(path).decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.detail}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    trust = history([_federation(path) for path in args.federation])
    result = verify_export(
        _read(args.dir / MANIFEST), _read(args.dir / CHECKPOINT), _read(args.dir / ENTRIES), trust
    )
    summary = {
        "valid": True,
        "hub": result.hub,
        "size": result.checkpoint.size,
        "root": result.checkpoint.root.hex(),
        "time": None if result.checkpoint.time_ms is None else _when(result.checkpoint.time_ms),
        "entries": len(result.entries),
        "complete": result.complete,
        "witnessed_by": list(result.witnesses),
    }
    if args.json:
        emit(args, "", summary)
    else:
        sys.stdout.write(
            f"valid: {summary['entries']} entries of {result.hub}'s log (size {summary['size']},"
            f" {'complete' if result.complete else 'selected entries with proofs'}),"
            f" checkpoint signed by {result.hub}"
            + (
                f", cosigned by {', '.join(result.witnesses)}"
                if result.witnesses
                else ", no cosignatures"
            )
            + "\n"
        )
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.peer not in config.links:
        raise UsageError(f"{config.country} has no link to {args.peer}")
    log = _open(config)
    store = HubStore(config.path(config.hub.state_dir) / "hub.sqlite")
    try:
        report = reconcile_logs(
            log,
            store,
            config.country,
            args.peer,
            now_ms=wall_ms(),
            since_ms=_ms(args.since) or 0,
            grace_ms=int(args.grace * 1000),
        )
        _note_read(log, config, AuditEvent.AUDIT_READ, f"reconcile {args.peer}")
    finally:
        store.close()
        log.close()
    data = {
        "peer": report.peer,
        "matched": report.matched,
        "clean": report.clean,
        "only_here": [_item(i) for i in report.only_here],
        "only_there": [_item(i) for i in report.only_there],
        "different": [{"msg_id": m, "differs": d} for m, d in report.different],
    }
    if args.json:
        emit(args, "", data)
    else:
        sys.stdout.write(
            f"{config.country} ↔ {args.peer}: {report.matched} exchanges match on both sides;"
            f" {len(report.only_here)} only in {config.country}'s log,"
            f" {len(report.only_there)} only in {args.peer}'s, {len(report.different)} differ\n"
        )
        for i in report.only_here:
            sys.stdout.write(
                f"  only here:  {i.msg_id} {i.event} {i.type or ''} {utc_text(i.at_ms)}\n"
            )
        for i in report.only_there:
            sys.stdout.write(
                f"  only there: {i.msg_id} {i.event} {i.type or ''} {utc_text(i.at_ms)}\n"
            )
        for m, d in report.different:
            sys.stdout.write(f"  different:  {m} ({d})\n")
    return 0 if report.clean else 1


def _item(i: Any) -> dict[str, Any]:
    return {"msg_id": i.msg_id, "event": i.event, "type": i.type, "at": _when(i.at_ms)}
