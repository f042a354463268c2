"""``ixb hub backup`` and ``ixb hub restore``: the stopped hub's state, copied out and back."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from broker.backup import Summary, backup, restore
from broker.config import load_config
from transport.cliout import add_json, emit


def register(hub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = hub.add_parser(
        "backup",
        help="copy the stopped hub's state (SQLite files, trust directory, key file) into DIR",
    )
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="a new or empty directory")
    add_json(p)
    p.set_defaults(func=cmd_backup)
    r = hub.add_parser(
        "restore", help="put a backup of this hub back (the hub stopped), checked and verified"
    )
    r.add_argument("--config", required=True, type=Path)
    r.add_argument("--from", dest="source", required=True, type=Path, help="a backup directory")
    add_json(r)
    r.set_defaults(func=cmd_restore)


def _data(s: Summary, where: Path) -> dict[str, object]:
    return {
        "country": s.country,
        "directory": str(where),
        "files": [dataclasses.asdict(f) for f in s.files],
        "audit_size": s.audit_size,
        "audit_root": s.audit_root,
    }


def cmd_backup(args: argparse.Namespace) -> int:
    s = backup(load_config(args.config), args.out)
    _report(
        args,
        s,
        args.out,
        f"backed up {s.country}'s hub into {args.out}",
        "the JetStream store is the nats-server's to back up",
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    s = restore(load_config(args.config), args.source)
    _report(
        args,
        s,
        args.source,
        f"restored {s.country}'s hub from {args.source}",
        f"then `ixb audit rebuild --config {args.config}` (the log's leaves recorded after "
        "the backup, from the AUDIT stream), start the hub; why",
    )
    return 0


def _report(args: argparse.Namespace, s: Summary, where: Path, done: str, then: str) -> None:
    human = (
        f"{done}: {len(s.files)} files, audit log of {s.audit_size} entries verified"
        f" (root {s.audit_root[:16]}…); {then}: docs/operations/backup.md"
    )
    emit(args, human, _data(s, where))
