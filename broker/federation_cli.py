"""``ixb federation``: propose, sign, verify and show versions of the federation file.

A new version (a country added or removed, a hub key rotated, the threshold
changed) is proposed from the current one, signed by at least ``threshold``
member hubs of the current version, each with its own key on its own machine,
then installed by every operator into the running hub (``install``: no
restart), which checks it against the version it holds (SPEC §12).
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from pathlib import Path

from broker.config import load_config
from broker.registry import operator
from broker.trust import install_federation
from protocols.errors import ConfigError, IoError, IxbError, PassphraseError, UsageError
from protocols.federation import (
    KEY_GRACE_MS,
    FederationFile,
    changes,
    check_successor,
    parse_federation_file,
    propose,
    render_federation_file,
    sign_version,
)
from protocols.identifiers import check_country, hub_of
from protocols.keys import KeyAlg, fingerprint, open_keyfile, read_public
from transport.cliargs import int_range
from transport.cliout import add_json, emit
from transport.clock import wall_ms
from transport.files import env_secret, read_bytes, write_atomic

MAX_FILE = 1024 * 1024 + 1024
MAX_KEYFILE = 16 * 1024
PASSPHRASE_ENV = "IXB_PASSPHRASE"  # noqa: S105 - the variable name
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fed = sub.add_parser(
        "federation", help="the federation file: versions signed by a threshold of hubs"
    ).add_subparsers(dest="cmd", required=True)
    show = fed.add_parser("show", help="version, threshold, hubs, fingerprints, signatures")
    show.add_argument("file", type=Path)
    add_json(show)
    show.set_defaults(func=cmd_show)
    verify = fed.add_parser(
        "verify", help="may a hub holding --previous accept FILE? (threshold of signatures)"
    )
    verify.add_argument("file", type=Path)
    verify.add_argument("--previous", type=Path, help="the version FILE replaces")
    add_json(verify)
    verify.set_defaults(func=cmd_verify)
    prop = fed.add_parser("propose", help="the next version: the current one plus changes")
    prop.add_argument("--current", required=True, type=Path, help="the version in force")
    prop.add_argument("--out", required=True, type=Path, help="the new file (never overwritten)")
    prop.add_argument(
        "--add", action="append", default=[], metavar="CC=KEY", help="a new member's hub key"
    )
    prop.add_argument("--remove", action="append", default=[], metavar="CC")
    prop.add_argument(
        "--key", action="append", default=[], metavar="CC=KEY", help="a member's new hub key"
    )
    prop.add_argument(
        "--threshold",
        type=int_range(1, 1000),
        help="signatures a later version needs (at least 1, at most the members)",
    )
    add_json(prop)
    prop.set_defaults(func=cmd_propose)
    sign = fed.add_parser("sign", help="add this hub's signature to FILE")
    sign.add_argument("file", type=Path)
    sign.add_argument("--key", required=True, type=Path, help="this hub's key file")
    add_json(sign)
    sign.set_defaults(func=cmd_sign)
    install = fed.add_parser(
        "install", help="take FILE into use at a running hub (checked against the held version)"
    )
    install.add_argument("file", type=Path)
    install.add_argument("--config", required=True, type=Path, help="the hub's config")
    install.add_argument(
        "--grace-hours",
        type=float,
        default=KEY_GRACE_MS / 3_600_000,
        help="how long a hub key it replaces still verifies (0: the old key was stolen)",
    )
    add_json(install)
    install.set_defaults(func=cmd_install)


def load(path: Path) -> FederationFile:
    try:
        return parse_federation_file(read_bytes(path, MAX_FILE).decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.detail}") from None


def _describe(fed: FederationFile) -> dict[str, object]:
    return {
        "name": fed.name,
        "version": fed.version,
        "threshold": fed.threshold,
        "digest": fed.digest(),
        "hubs": {
            c: {"signing_key": k.hex(), "fingerprint": fingerprint(KeyAlg.ED25519, k)}
            for c, k in sorted(fed.trust.hubs.items())
        },
        "signatures": [s.country for s in fed.signatures],
    }


def cmd_show(args: argparse.Namespace) -> int:
    fed = load(args.file)
    if args.json:
        emit(args, "", _describe(fed))
        return 0
    out = [
        f"federation {fed.name}  version {fed.version}  threshold {fed.threshold} "
        f"of {len(fed.trust.hubs)}",
        f"digest     {fed.digest()}",
    ]
    out += [
        f"hub        {c}/HUB  {fingerprint(KeyAlg.ED25519, k)}"
        for c, k in sorted(fed.trust.hubs.items())
    ]
    signers = ", ".join(s.country for s in fed.signatures) or "none"
    out.append(f"signed by  {signers} (checked against the previous version: verify --previous)")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    fed = load(args.file)
    if args.previous is None:
        if fed.version != 1:
            raise UsageError(
                f"{args.file} is version {fed.version}: it counts only against the version "
                "it replaces; give --previous OLD"
            )
        emit(
            args,
            f"{args.file}: version 1 of {fed.name}, a trust root: compare its digest "
            f"{fed.digest()} or every hub's fingerprint out of band",
            {**_verdict(fed, "trust root"), "signers": [], "not_counted": [], "changes": []},
        )
        return 0
    previous = load(args.previous)
    try:
        succession = check_successor(previous, fed)
    except IxbError as exc:
        raise type(exc)(f"{args.file}: {exc.detail}") from None
    verdict = {
        **_verdict(fed, "same version" if succession.redelivery else "successor"),
        "previous_version": previous.version,
        "required": previous.threshold,
        "signers": list(succession.signers),
        "not_counted": list(succession.not_counted),
        "changes": list(succession.changes),
    }
    if succession.redelivery:
        emit(args, f"{args.file}: the same version {fed.version} as {args.previous}", verdict)
        return 0
    lines = [
        f"{args.file}: version {fed.version} of {fed.name} follows version {previous.version}, "
        f"signed by {', '.join(succession.signers)} ({previous.threshold} required)",
        *(f"  not counted: {why}" for why in succession.not_counted),
        *(f"  {change}" for change in succession.changes),
        f"  digest {fed.digest()}",
    ]
    emit(args, "\n".join(lines), verdict)
    return 0


def _verdict(fed: FederationFile, verdict: str) -> dict[str, object]:
    """What ``verify --json`` says of ``fed`` (signers and changes added by the caller)."""
    return {
        "valid": True,
        "verdict": verdict,
        "name": fed.name,
        "version": fed.version,
        "digest": fed.digest(),
    }


def _public_key(country: str, value: str) -> bytes:
    """A hub key given as 64 hex digits or as a key file (only its public part is read)."""
    if _HEX_KEY.fullmatch(value):
        return bytes.fromhex(value)
    public = read_public(read_bytes(Path(value), MAX_KEYFILE))
    if public.principal != hub_of(country):
        raise UsageError(f"{value} is the key of {public.principal}, not {country}/HUB")
    return public.signing


def _pairs(values: list[str], what: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for value in values:
        country, sep, key = value.partition("=")
        if not sep or not key:
            raise UsageError(f"--{what} {value!r}: expected CC=KEYFILE or CC=<64 hex digits>")
        try:
            check_country(country)
        except IxbError as exc:
            raise UsageError(f"--{what} {value!r}: {exc.detail}") from None
        out[country] = _public_key(country, key)
    return out


def cmd_propose(args: argparse.Namespace) -> int:
    current = load(args.current)
    new = propose(
        current,
        add=_pairs(args.add, "add"),
        remove=args.remove,
        keys=_pairs(args.key, "key"),
        threshold=args.threshold,
    )
    what = changes(current, new)
    if not what:
        raise UsageError("nothing changes: give --add, --remove, --key or --threshold")
    if args.out.exists():
        raise IoError(f"{args.out} exists; refusing to overwrite it")
    try:
        write_atomic(args.out, render_federation_file(new))
    except OSError as exc:
        raise IoError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    lines = [
        f"proposed version {new.version} of {new.name} in {args.out} (digest {new.digest()}):",
        *(f"  {change}" for change in what),
        f"it needs the signatures of {current.threshold} hubs of version {current.version} "
        f"({', '.join(sorted(current.trust.hubs))}): ixb federation sign {args.out} --key HUBKEY",
    ]
    data = {
        "file": str(args.out),
        "name": new.name,
        "version": new.version,
        "digest": new.digest(),
        "changes": list(what),
        "signatures_needed": current.threshold,
        "signers_of": sorted(current.trust.hubs),
    }
    emit(args, "\n".join(lines), data)
    return 0


def _passphrase() -> str:
    env = env_secret(PASSPHRASE_ENV)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise PassphraseError(
            f"no terminal to ask for a passphrase; set {PASSPHRASE_ENV} or {PASSPHRASE_ENV}_FILE"
        )
    return getpass.getpass("passphrase: ")


def cmd_sign(args: argparse.Namespace) -> int:
    fed = load(args.file)
    identity = open_keyfile(read_bytes(args.key, MAX_KEYFILE), _passphrase())
    signed = sign_version(fed, identity)
    try:
        write_atomic(args.file, render_federation_file(signed))
    except OSError as exc:
        raise IoError(f"cannot write {args.file}: {exc.strerror or exc}") from None
    signers = [s.country for s in signed.signatures]
    emit(
        args,
        f"signed version {fed.version} of {fed.name} (digest {fed.digest()}) as "
        f"{identity.principal} {identity.signing.fingerprint}; signatures: {', '.join(signers)}",
        {
            "file": str(args.file),
            "name": fed.name,
            "version": fed.version,
            "digest": fed.digest(),
            "signed_as": str(identity.principal),
            "fingerprint": identity.signing.fingerprint,
            "signatures": signers,
        },
    )
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    """Verify FILE against the hub's held version and hold it instead; the hub polls for it."""
    config = load_config(args.config)
    try:
        text = read_bytes(args.file, MAX_FILE).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{args.file}: not UTF-8") from None
    if not 0 <= args.grace_hours <= KEY_GRACE_MS / 3_600_000:
        raise UsageError(f"--grace-hours: from 0 to {KEY_GRACE_MS // 3_600_000}")
    grace_ms = int(args.grace_hours * 3_600_000)
    fed, succession = install_federation(
        config.trust_path, text, args.file, actor=operator(), at_ms=wall_ms(), grace_ms=grace_ms
    )
    data = {
        "hub": str(config.hub_id),
        "name": fed.name,
        "version": fed.version,
        "digest": fed.digest(),
        "installed": not succession.redelivery,
        "signers": list(succession.signers),
        "changes": list(succession.changes),
        "replaced_key_grace_hours": grace_ms / 3_600_000,
    }
    if succession.redelivery:
        emit(args, f"{config.hub_id} holds version {fed.version} already: nothing changes", data)
        return 0
    lines = [
        f"installed version {fed.version} of {fed.name} at {config.hub_id} "
        f"(digest {fed.digest()}), signed by {', '.join(succession.signers)}:",
        *(f"  {change}" for change in succession.changes),
        f"the running hub takes it into use within a second; a replaced hub key stays valid "
        f"for {grace_ms / 3_600_000:g} h",
    ]
    emit(args, "\n".join(lines), data)
    return 0
