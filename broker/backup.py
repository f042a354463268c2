"""A hub's state, backed up and restored: its SQLite files, its trust directory, its key file.

In: a hub config (what to copy from where) and a backup directory. Out:
:func:`backup` writes a consistent copy and ``manifest.json`` (each file's
size and SHA-256, the audit log's size and root); :func:`restore` checks the
manifest, puts every file back and verifies the audit log's tree.
Guaranteed: neither runs beside the hub (:func:`state_lock`: the running hub
holds it), so a backup is the state the hub stopped with, and a restore
never writes under a running hub.

What is not here: the JetStream store of the country's nats-server (the
messages waiting to be settled, the inboxes, the links' streams), which the
server's own tools back up; and what a restore means for the peers'
witnesses (docs/operations/backup.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from broker.audit.log import AuditLog
from broker.config import HubConfig
from protocols.errors import IoError, UsageError

LOCK_FILE = "hub.lock"
MANIFEST = "manifest.json"
FORMAT = 1
_SQLITE_SIDE = ("-wal", "-shm", "-journal")


@contextlib.contextmanager
def state_lock(config: HubConfig, *, holder: str) -> Iterator[None]:
    """Hold the state directory's lock (the running hub, a backup, a restore); another
    holder at the same time: ``IoError`` at once, naming what to do."""
    state = config.path(config.hub.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IoError(
                f"{state} is in use (a running hub, or a backup or restore): {holder} needs "
                "the hub stopped"
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Copied:
    name: str
    """Where it sits in the backup: ``state/…``, ``trust/…``, ``key/…``."""
    size: int
    sha256: str


@dataclass(frozen=True)
class Summary:
    country: str
    files: tuple[Copied, ...]
    audit_size: int
    audit_root: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sources(config: HubConfig) -> list[tuple[Path, str]]:
    """(file, name in the backup) of everything a hub needs back."""
    state = config.path(config.hub.state_dir)
    trust = config.trust_path
    out: list[tuple[Path, str]] = []
    for path in sorted(state.rglob("*")):
        if not path.is_file() or path.name == LOCK_FILE or path.name.endswith(_SQLITE_SIDE):
            continue
        if trust in path.parents:
            continue
        out.append((path, f"state/{path.relative_to(state)}"))
    if trust.exists():
        out += [
            (p, f"trust/{p.relative_to(trust)}") for p in sorted(trust.rglob("*")) if p.is_file()
        ]
    key = config.path(config.hub.key_file)
    out.append((key, f"key/{key.name}"))
    return out


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".sqlite":
        # SQLite's online backup: one consistent file, the write-ahead log folded in
        with (
            contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as source,
            contextlib.closing(sqlite3.connect(dest)) as target,
        ):
            source.backup(target)
    else:
        shutil.copyfile(src, dest)
    dest.chmod(0o600)


def _audit_summary(path: Path) -> tuple[int, str]:
    log = AuditLog(path)
    try:
        log.verify_storage()
        return log.size, log.root().hex()
    finally:
        log.close()


def backup(config: HubConfig, out: Path) -> Summary:
    """Copy the stopped hub's state into ``out`` (new or empty), with its manifest."""
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty: back up into a new directory")
    with state_lock(config, holder="a backup"):
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o700)
        names = []
        for src, name in _sources(config):
            if not src.exists():
                raise IoError(f"{src} is missing: nothing to back up of it")
            _copy(src, out / name)
            names.append(name)
        # verified on the copy (which opening may touch: hashed after)
        audit = out / "state" / "audit.sqlite"
        size, root = _audit_summary(audit) if audit.exists() else (0, "")
        for side in out.rglob("*"):
            if side.name.endswith(_SQLITE_SIDE):
                side.unlink()
        files = [Copied(n, (out / n).stat().st_size, _sha256(out / n)) for n in names]
    summary = Summary(config.country, tuple(files), size, root)
    manifest = {
        "format": FORMAT,
        "country": summary.country,
        "audit": {"size": size, "root": root},
        "files": [asdict(f) for f in files],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return summary


def restore(config: HubConfig, source: Path) -> Summary:
    """Put a backup of this country's hub back (the hub stopped): every file checked against
    the manifest first, then copied over; the audit log's tree verified."""
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{source} holds no readable {MANIFEST}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{source}: backup format {manifest.get('format')!r}, not {FORMAT}")
    if manifest.get("country") != config.country:
        raise UsageError(f"{source} is a backup of {manifest.get('country')}, not {config.country}")
    try:
        files = [Copied(**f) for f in manifest["files"]]
        expected = (int(manifest["audit"]["size"]), str(manifest["audit"]["root"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{source}/{MANIFEST} is malformed: {exc}") from None
    for f in files:
        part, _, rest = f.name.partition("/")
        inner = Path(rest)
        if part not in {"state", "trust", "key"} or inner.is_absolute() or ".." in inner.parts:
            raise UsageError(f"{source}/{MANIFEST} names {f.name!r}: not a file of a backup")
    for f in files:
        path = source / f.name
        if not path.is_file() or _sha256(path) != f.sha256:
            raise IoError(f"{path} is missing or differs from the manifest: not restored")
    state = config.path(config.hub.state_dir)
    trust = config.trust_path
    key = config.path(config.hub.key_file)
    with state_lock(config, holder="a restore"):
        for path in list(state.rglob("*")):  # the state being replaced, side files too
            if path.is_file() and path.name != LOCK_FILE and trust not in path.parents:
                path.unlink()
        if trust.exists():
            shutil.rmtree(trust)
        for f in files:
            part, _, rest = f.name.partition("/")
            dest = {"state": state / rest, "trust": trust / rest, "key": key}[part]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / f.name, dest)
            dest.chmod(0o600)
        audit = state / "audit.sqlite"
        size, root = _audit_summary(audit) if audit.exists() else (0, "")
    if (size, root) != expected:
        raise IoError(f"the restored audit log is size {size}, the backup's was not")
    return Summary(config.country, tuple(files), size, root)
