"""``ixb hub agency …`` and ``ixb hub user …``: the operator's changes to a running hub.

Each command writes one change to the hub's registry (:mod:`broker.registry`)
and waits a few seconds for the running hub to apply it (it polls twice a
second): a new directory version at every peer, the pages' users. A hub that
is not running applies it when it starts. Refusals are one line, as always.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import re
import sqlite3
import sys
import time
from pathlib import Path

from broker import nats_permissions as perms
from broker.config import HubConfig, load_config
from broker.nats_users import add_agency_user, remove_agency_user
from broker.registry import (
    USER_ROLES,
    AgencyRecord,
    Registry,
    UserRow,
    agency_public_keys,
    config_agencies,
    merged_agencies,
    merged_users,
    operator,
)
from broker.web.auth import hash_password
from protocols.directory import MAX_PREVIOUS_KEYS, PreviousKey, RevocationInfo
from protocols.enrolment import MAX_REQUEST_BYTES, Request, RequestKind, verify_request
from protocols.errors import ConfigError, IoError, IxbError, UsageError
from protocols.fields import utc_iso, utc_text
from protocols.identifiers import Principal, parse_agency
from protocols.keys import KeyAlg, PublicIdentity, fingerprint
from protocols.limits import MS_PER_HOUR
from protocols.roles import Role
from transport.cliout import add_json, emit, wants_json
from transport.clock import wall_ms

MIN_PASSWORD_CHARS = 12
DEFAULT_GRACE_HOURS = 24.0
MAX_GRACE_HOURS = 24.0 * 30
APPLY_WAIT_S = 5.0
"""How long a command waits to see the running hub apply its change."""


def register(hub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``agency`` and ``user`` under ``ixb hub``."""
    agency = hub.add_parser("agency", help="this hub's agencies, changed live").add_subparsers(
        dest="agency_cmd", required=True
    )

    def cmd(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
    ) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=text, description=text)
        p.add_argument("--config", required=True, type=Path, help="the hub's TOML config")
        return add_json(p)

    p = cmd(agency, "list", "every agency of this hub: roles, state, keys")
    p.set_defaults(func=cmd_list)
    p = cmd(agency, "show", "one agency in full")
    p.add_argument("agency")
    p.set_defaults(func=cmd_show)
    p = cmd(agency, "revoke", "revoke an agency now, at every hub of the federation")
    p.add_argument("agency")
    p.add_argument("--reason", required=True)
    p.add_argument("--nats-plan", type=Path, help="federation plan to remove its NATS user from")
    p.add_argument(
        "--nats-pid",
        type=int,
        help="nats-server process to reload (SIGHUP); default: the pid_file of its config",
    )
    p.set_defaults(func=cmd_revoke)
    p = cmd(agency, "approve", "enrol an agency from its signed request (ixb agency enroll)")
    p.add_argument("request", type=Path)
    p.add_argument("--role", action="append", required=True, help="repeat for several roles")
    p.add_argument("--nats-plan", type=Path, help="federation plan to add its NATS user to")
    p.add_argument(
        "--nats-pid",
        type=int,
        help="nats-server process to reload (SIGHUP); default: the pid_file of its config",
    )
    p.set_defaults(func=cmd_approve)
    p = cmd(agency, "rotate", "move an agency to the new keys of its signed rotation request")
    p.add_argument("agency")
    p.add_argument("--request", required=True, type=Path, help="from ixb keys rotate")
    p.add_argument(
        "--grace-hours",
        type=float,
        default=DEFAULT_GRACE_HOURS,
        help="how long the old signing key stays valid for messages in flight (default 24)",
    )
    p.set_defaults(func=cmd_rotate)
    p = cmd(agency, "roles", "replace an agency's roles")
    p.add_argument("agency")
    p.add_argument("--role", action="append", required=True, help="repeat for several roles")
    p.set_defaults(func=cmd_roles)

    user = hub.add_parser("user", help="liaison users, changed live").add_subparsers(
        dest="user_cmd", required=True
    )
    p = cmd(user, "add", "add a liaison officer or auditor (password: $IXB_NEW_PASSWORD)")
    p.add_argument("name")
    p.add_argument("--role", choices=USER_ROLES, required=True)
    p.set_defaults(func=cmd_user_add)
    p = cmd(user, "passwd", "change a user's password (from $IXB_NEW_PASSWORD or a prompt)")
    p.add_argument("name")
    p.set_defaults(func=cmd_user_passwd)
    p = cmd(user, "remove", "remove a user; their sessions end at their next request")
    p.add_argument("name")
    p.set_defaults(func=cmd_user_remove)
    p = cmd(user, "list", "the users who may log in to the liaison pages")
    p.set_defaults(func=cmd_user_list)


# --- helpers ---------------------------------------------------------------------------


def new_password() -> str:
    """A new password from $IXB_NEW_PASSWORD or, in a terminal, typed twice."""
    secret = os.environ.get("IXB_NEW_PASSWORD")
    if secret is None:
        if not sys.stdin.isatty():
            raise ConfigError("set IXB_NEW_PASSWORD or run in a terminal")
        secret = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != secret:
            raise ConfigError("the two passwords differ")
    if len(secret) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"a password has at least {MIN_PASSWORD_CHARS} characters")
    return secret


when = utc_text


def parse_roles(names: list[str]) -> tuple[Role, ...]:
    known = sorted(r.value for r in Role)
    out: set[Role] = set()
    for name in names:
        if name not in known:
            raise UsageError(f"unknown role {name!r} (known: {', '.join(known)})")
        out.add(Role(name))
    return tuple(sorted(out))


def _agency_id(config: HubConfig, text: str) -> Principal:
    agency = parse_agency(text)
    if agency.country != config.country:
        raise UsageError(f"{agency} is not an agency of {config.country}; this is {config.hub_id}")
    return agency


def agencies_of(config: HubConfig, registry: Registry) -> dict[Principal, AgencyRecord]:
    """The agencies as the running hub sees them: the config's, then the registry's."""
    return merged_agencies(config_agencies(config, agency_public_keys(config)), registry.agencies())


def _existing(config: HubConfig, registry: Registry, text: str) -> tuple[Principal, AgencyRecord]:
    agency = _agency_id(config, text)
    record = agencies_of(config, registry).get(agency)
    if record is None:
        raise UsageError(f"{agency} is not an agency of {config.hub_id}")
    return agency, record


def _existing_user(config: HubConfig, registry: Registry, name: str) -> UserRow:
    """The liaison user ``name``; refused (and the registry closed) if there is none."""
    user = _users(config, registry).get(name)
    if user is None:
        registry.close()
        raise UsageError(f"no user {name} at {config.hub_id}")
    return user


def applied(config: HubConfig, seq: int) -> bool:
    """Wait up to :data:`APPLY_WAIT_S` for the running hub to apply change ``seq``."""
    path = config.path(config.hub.state_dir) / "hub.sqlite"
    deadline = time.monotonic() + APPLY_WAIT_S
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'registry_seq'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            row = None
        if row is not None and int(row[0]) >= seq:
            return True
        time.sleep(0.1)
    return False


def _settle(config: HubConfig, registry: Registry, what: str) -> tuple[str, dict[str, object]]:
    """Close ``registry`` and wait for the running hub to apply its last change: the line
    saying so, and the same facts for JSON."""
    seq = registry.last_seq()
    registry.close()
    done = applied(config, seq)
    if done:
        human = f"{what}; applied by the running hub {config.hub_id} (change {seq})"
    else:
        human = (
            f"{what}; recorded as change {seq}: the hub applies it when it runs "
            f"(not applied within {APPLY_WAIT_S:.0f} s)"
        )
    return human, {"hub": str(config.hub_id), "change": seq, "applied": done}


def _report(
    args: argparse.Namespace,
    config: HubConfig,
    registry: Registry,
    what: str,
    data: dict[str, object],
) -> int:
    human, applied_as = _settle(config, registry, what)
    emit(args, human, {**data, **applied_as})
    return 0


# --- agencies ----------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    registry = Registry.of(config)
    try:
        rows = agencies_of(config, registry)
    finally:
        registry.close()
    lines = []
    for agency, rec in rows.items():
        state = (
            f"revoked {when(rec.revoked.at)}"
            if rec.revoked is not None
            else ("revoked (config)" if rec.config_revoked else "active")
        )
        roles = ",".join(r.value for r in rec.roles)
        fp = rec.public.fingerprints()["signing"]
        lines.append(f"{agency!s:28} {state:32} {roles:40} {fp}")
    emit(args, "\n".join(lines), {"agencies": [_agency_json(a, r) for a, r in rows.items()]})
    return 0


def _agency_json(agency: Principal, rec: AgencyRecord) -> dict[str, object]:
    revoked: dict[str, object] | None = None
    if rec.revoked is not None:
        revoked = {"at": utc_iso(rec.revoked.at), "reason": rec.revoked.reason}
    elif rec.config_revoked:
        revoked = {"at": None, "reason": rec.config_revoked, "by_config": True}
    return {
        "agency": str(agency),
        "state": "active" if revoked is None else "revoked",
        "roles": [r.value for r in rec.roles],
        "fingerprints": rec.public.fingerprints(),
        "previous": [
            {"fingerprint": _fp(p.key), "valid_until": utc_iso(p.valid_until)} for p in rec.previous
        ],
        "revoked": revoked,
        "nats_user": rec.nats_user,
    }


def cmd_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    registry = Registry.of(config)
    try:
        agency, rec = _existing(config, registry, args.agency)
    finally:
        registry.close()
    out = [f"agency      {agency}", f"roles       {', '.join(r.value for r in rec.roles)}"]
    for name, fp in rec.public.fingerprints().items():
        out.append(f"{name:11} {fp}")
    out.extend(
        f"previous    {_fp(prev.key)} valid until {when(prev.valid_until)}" for prev in rec.previous
    )
    if rec.revoked is not None:
        out.append(f"revoked     {when(rec.revoked.at)}: {rec.revoked.reason}")
    elif rec.config_revoked:
        out.append(f"revoked     (config): {rec.config_revoked}")
    if rec.nats_user:
        out.append(f"nats user   {rec.nats_user}")
    emit(args, "\n".join(out), _agency_json(agency, rec))
    return 0


def _fp(key: bytes) -> str:
    return fingerprint(KeyAlg.ED25519, key)


def cmd_revoke(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    registry = Registry.of(config)
    agency, rec = _existing(config, registry, args.agency)
    if rec.revoked is not None:
        raise UsageError(f"{agency} was revoked at {when(rec.revoked.at)}: {rec.revoked.reason}")
    now = wall_ms()
    try:
        revoked = RevocationInfo(at=now, reason=args.reason)
    except IxbError as exc:
        raise UsageError(f"--reason: {exc.detail}") from None
    with registry.change(operator(), now, f"agency {agency} revoked: {args.reason}") as db:
        Registry.put_agency(db, _replace(rec, revoked=revoked), now)
    human, applied_as = _settle(config, registry, f"{agency} revoked at {when(now)}")
    data: dict[str, object] = {"agency": str(agency), "revoked_at": utc_iso(now), **applied_as}
    if args.nats_plan is not None:  # after the revocation is in force: the hub refuses first
        if not wants_json(args):  # the revocation stands even if the next step fails
            sys.stdout.write(human + "\n")
        _, pid = remove_agency_user(args.nats_plan, agency, args.nats_pid)
        closed = "; its connections are closed" if pid is not None else ""
        human = f"{agency}'s NATS user removed; {_reloaded(pid)}{closed}"
        data |= {"nats_user_removed": True, "nats_server_pid": pid}
    emit(args, human, data)
    return 0


def cmd_roles(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    registry = Registry.of(config)
    agency, rec = _existing(config, registry, args.agency)
    roles = parse_roles(args.role)
    text = ",".join(r.value for r in roles)
    now = wall_ms()
    with registry.change(operator(), now, f"agency {agency} roles: {text}") as db:
        Registry.put_agency(db, _replace(rec, roles=roles), now)
    data: dict[str, object] = {"agency": str(agency), "roles": [r.value for r in roles]}
    return _report(args, config, registry, f"{agency} roles: {text}", data)


def _replace(rec: AgencyRecord, **changes: object) -> AgencyRecord:
    return dataclasses.replace(rec, **changes)  # type: ignore[arg-type]


def add_agency(
    config: HubConfig,
    public: PublicIdentity,
    roles: tuple[Role, ...],
    *,
    nats_user: str | None = None,
    what: str,
) -> tuple[str, dict[str, object]]:
    """Enrol a new agency (``approve``): refused if its id is already enrolled."""
    registry = Registry.of(config)
    agency = public.principal
    if agency in agencies_of(config, registry):
        registry.close()
        raise UsageError(f"{agency} is already enrolled at {config.hub_id}")
    now = wall_ms()
    with registry.change(operator(), now, what) as db:
        Registry.put_agency(db, AgencyRecord(public=public, roles=roles, nats_user=nats_user), now)
    return _settle(config, registry, what)


def _read_request(path: Path) -> Request:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_REQUEST_BYTES + 512)
    except OSError as exc:
        raise IoError(f"cannot read {path}: {exc.strerror or exc}") from None
    return verify_request(data)


def cmd_approve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    request = _read_request(args.request)
    if request.kind is not RequestKind.ENROL:
        raise UsageError(f"{args.request} is a key rotation; use ixb hub agency rotate")
    agency = request.principal
    if agency.country != config.country:
        raise UsageError(f"{agency} asks to enrol in {agency.country}; this is {config.hub_id}")
    roles = parse_roles(args.role)
    if request.nats_user != perms.agency_user(agency.name):
        raise UsageError(
            f"NATS user {request.nats_user!r}: {agency}'s is {perms.agency_user(agency.name)!r}"
        )
    registry = Registry.of(config)
    try:
        if agency in agencies_of(config, registry):
            raise UsageError(f"{agency} is already enrolled at {config.hub_id}")
    finally:
        registry.close()
    pid = None
    if args.nats_plan is not None:
        _, pid = add_agency_user(
            args.nats_plan,
            agency,
            nkey=request.nats_nkey,
            password_hash=request.nats_password_hash,
            pid=args.nats_pid,
        )
    text = ",".join(r.value for r in roles)
    human, applied_as = add_agency(
        config,
        request.public,
        roles,
        nats_user=request.nats_user,
        what=f"agency {agency} enrolled ({text}), signing key {_fp(request.signing_key)}",
    )
    data: dict[str, object] = {
        "agency": str(agency),
        "roles": [r.value for r in roles],
        "fingerprints": request.public.fingerprints(),
        "nats_user": request.nats_user,
        **applied_as,
    }
    if args.nats_plan is not None:
        how = f"nkey {request.nats_nkey}" if request.nats_nkey else "password (bcrypt)"
        human += f"\n{agency}'s NATS user added ({how}); {_reloaded(pid)}"
        data |= {"nats_user_added": True, "nats_server_pid": pid}
    emit(args, human, data)
    return 0


def _reloaded(pid: int | None) -> str:
    if pid is None:
        return "no nats-server is running (no pid file): the config applies when it starts"
    return f"nats-server {pid} reloads its config"


def cmd_rotate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    request = _read_request(args.request)
    if request.kind is not RequestKind.ROTATE:
        raise UsageError(f"{args.request} is an enrolment request; use ixb hub agency approve")
    if not 0 < args.grace_hours <= MAX_GRACE_HOURS:
        raise UsageError(f"--grace-hours: between 0 and {MAX_GRACE_HOURS}")
    registry = Registry.of(config)
    agency, rec = _existing(config, registry, args.agency)
    if request.principal != agency:
        raise UsageError(f"{args.request} is a rotation for {request.agency}, not {agency}")
    if rec.revoked is not None or rec.config_revoked:
        raise UsageError(f"{agency} is revoked: it gets no new keys (enrol it anew)")
    old = rec.public
    if request.previous_signing_key != old.signing:
        raise UsageError(
            f"{args.request} replaces signing key {_fp(request.previous_signing_key or b'')}, "
            f"but {agency}'s current one is {_fp(old.signing)}"
        )
    now = wall_ms()
    until = now + int(args.grace_hours * MS_PER_HOUR)
    kept = [p for p in rec.previous if p.valid_until > now and p.key != request.signing_key][
        : MAX_PREVIOUS_KEYS - 1
    ]
    kept_enc = [(k, u) for k, u in rec.previous_encryption if u > now][: MAX_PREVIOUS_KEYS - 1]
    rotated = _replace(
        rec,
        public=request.public,
        previous=(PreviousKey(key=old.signing, valid_until=until), *kept),
        previous_encryption=((old.encryption or b"", until), *kept_enc),
    )
    what = (
        f"agency {agency} keys rotated: signing {_fp(request.signing_key)}, "
        f"old key valid until {when(until)}"
    )
    with registry.change(operator(), now, what) as db:
        Registry.put_agency(db, rotated, now)
    return _report(
        args,
        config,
        registry,
        f"{agency}: new keys; the old signing key valid until {when(until)}",
        {
            "agency": str(agency),
            "fingerprints": request.public.fingerprints(),
            "previous_valid_until": utc_iso(until),
        },
    )


# --- users -------------------------------------------------------------------------------


def _users(config: HubConfig, registry: Registry) -> dict[str, UserRow]:
    return merged_users(config, registry.users())


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name):
        raise UsageError(f"user name {name!r}: lower-case letters, digits, '.', '_', '-'")
    return name


def cmd_user_add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    name = _check_name(args.name)
    registry = Registry.of(config)
    if name in _users(config, registry):
        registry.close()
        raise UsageError(f"user {name} exists (ixb hub user passwd changes the password)")
    password_hash = hash_password(new_password())
    with registry.change(operator(), wall_ms(), f"user {name} added ({args.role})") as db:
        Registry.put_user(db, UserRow(name, args.role, password_hash))
    return _report(
        args,
        config,
        registry,
        f"user {name} added ({args.role})",
        {"user": name, "role": args.role},
    )


def cmd_user_passwd(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    registry = Registry.of(config)
    user = _existing_user(config, registry, args.name)
    password_hash = hash_password(new_password())
    with registry.change(operator(), wall_ms(), f"user {user.name} password changed") as db:
        Registry.put_user(db, UserRow(user.name, user.role, password_hash))
    return _report(
        args, config, registry, f"user {user.name}: password changed", {"user": user.name}
    )


def cmd_user_remove(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    registry = Registry.of(config)
    user = _existing_user(config, registry, args.name)
    with registry.change(operator(), wall_ms(), f"user {user.name} removed") as db:
        Registry.put_user(db, UserRow(user.name, user.role, "-", removed=True))
    return _report(
        args, config, registry, f"user {user.name} removed", {"user": user.name, "removed": True}
    )


def cmd_user_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    registry = Registry.of(config)
    try:
        users = _users(config, registry)
    finally:
        registry.close()
    emit(
        args,
        "\n".join(f"{user.name:24} {user.role}" for user in users.values()),
        {"users": [{"name": user.name, "role": user.role} for user in users.values()]},
    )
    return 0
