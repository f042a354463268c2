"""Agency-side commands: ``ixb keys``, ``ixb mrz``, ``ixb envelope``.

Human output by default, ``--json`` for scripts. Errors reach the dispatcher
as typed :class:`~protocols.errors.IxbError` and become one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agency_client import enrol
from agency_client.docview import document_line, document_summary, split_lines
from agency_client.keystore import (
    load_identity,
    load_nats_public,
    load_public,
    passphrase,
    save_identity,
)
from protocols.envelope import (
    Envelope,
    check_times,
    decode_envelope,
    verify_hops,
    verify_sender_signature,
)
from protocols.errors import IxbError, UsageError
from protocols.fields import utc_iso
from protocols.identifiers import (
    Principal,
    check_country,
    format_message_id,
    parse_agency,
    parse_hub,
)
from protocols.keys import (
    NATS_HUB,
    Identity,
    KdfProfile,
    KeyRing,
    NkeySeed,
    PublicIdentity,
    nats_link_label,
)
from protocols.limits import MAX_ENVELOPE_BYTES
from protocols.mrz import parse_mrz
from transport.cliout import add_json, emit
from transport.clock import wall_ms
from transport.files import read_bytes

EXIT_USER_ERROR = 2
EXIT_NOT_VERIFIED = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create and show key files").add_subparsers(
        dest="cmd", required=True
    )
    new = keys.add_parser("new", help="create a key file (asks for a passphrase)")
    who = new.add_mutually_exclusive_group(required=True)
    who.add_argument("--agency", help="agency id, e.g. THA/DSI-ATHD")
    who.add_argument("--hub", help="hub id, e.g. THA/HUB")
    new.add_argument("--out", required=True, type=Path, help="key file to create")
    new.add_argument(
        "--kdf",
        choices=[p.value for p in KdfProfile],
        default=KdfProfile.MODERATE.value,
        help="Argon2id cost (default: moderate)",
    )
    new.add_argument(
        "--nats-from",
        type=Path,
        metavar="OLD_KEY_FILE",
        help="carry the NATS nkeys sealed in OLD_KEY_FILE (same principal and passphrase) "
        "into the new file: a hub key rotation keeps the hub's NATS logins",
    )
    new.add_argument(
        "--link",
        action="append",
        default=[],
        metavar="PEER",
        help="(hubs) also an nkey for the link to PEER's country (repeat per peer); "
        "a hub key file always gets its own NATS nkey 'hub'",
    )
    add_json(new)
    new.set_defaults(func=cmd_keys_new)
    enrol.register_rotate(keys)
    show = keys.add_parser("show", help="public keys and fingerprints of a key file")
    show.add_argument("file", type=Path)
    add_json(show)
    show.set_defaults(func=cmd_keys_show)

    mrz = sub.add_parser("mrz", help="travel-document MRZ tools").add_subparsers(
        dest="cmd", required=True
    )
    check = mrz.add_parser(
        "check",
        help="parse an MRZ and validate every check digit (nothing is sent)",
        description="Parse a machine-readable zone (ICAO 9303 TD1, TD2, TD3, visas), check "
        "every check digit, and echo the document: number, name, expiry (flagged if expired).",
        epilog="example: ixb mrz check 'P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<' "
        "'L898902C36UTO7408122F1204159ZE184226B<<<<<10'  (or both lines pasted as one "
        "argument)",
    )
    check.add_argument(
        "lines", nargs="+", metavar="LINE", help="the MRZ lines, or one argument holding them all"
    )
    add_json(check)
    check.set_defaults(func=cmd_mrz_check)

    env = sub.add_parser("envelope", help="envelope tools").add_subparsers(
        dest="cmd", required=True
    )
    inspect = env.add_parser(
        "inspect", help="show an envelope's header and verify its signature (never its content)"
    )
    inspect.add_argument("file", type=Path)
    inspect.add_argument(
        "--key",
        action="append",
        type=Path,
        default=[],
        metavar="KEYFILE",
        help="key file of the sender or a hop's hub (public part only; repeatable)",
    )
    add_json(inspect)
    inspect.set_defaults(func=cmd_envelope_inspect)


def cmd_keys_new(args: argparse.Namespace) -> int:
    principal: Principal = parse_agency(args.agency) if args.agency else parse_hub(args.hub)
    if args.link and args.agency:
        raise UsageError("--link: only a hub key file holds link nkeys")
    identity = Identity.generate(principal)
    if args.hub and args.nats_from is None:  # its NATS logins: public keys for the server config
        peers = {check_country(peer) for peer in args.link}
        if principal.country in peers:
            raise UsageError(f"--link: {principal.country} is this hub's own country")
        labels = [NATS_HUB, *(nats_link_label(peer) for peer in sorted(peers))]
        identity = identity.with_nats({label: NkeySeed.generate() for label in labels})
    secret = passphrase(confirm=True)
    if args.nats_from is not None:
        old = load_identity(args.nats_from, secret)
        if old.principal != principal:
            raise UsageError(
                f"--nats-from: {args.nats_from} is {old.principal}'s, not {principal}'s"
            )
        if not old.nats:
            raise UsageError(f"--nats-from: {args.nats_from} seals no NATS nkey")
        identity = Identity(principal, identity.signing, identity.encryption, old.nats)
    save_identity(args.out, identity, secret, KdfProfile(args.kdf))
    pub = identity.public()
    nkeys = {label: seed.public for label, seed in identity.nats}
    human = f"created {args.out} for {principal}\n{_fingerprints(pub)}{_nats(nkeys)}"
    emit(args, human, {"file": str(args.out), **_public_json(pub, nkeys)})
    return 0


def _public_json(pub: PublicIdentity, nkeys: dict[str, str]) -> dict[str, object]:
    return {
        "principal": str(pub.principal),
        "signing_public": pub.signing.hex(),
        "encryption_public": None if pub.encryption is None else pub.encryption.hex(),
        "fingerprints": pub.fingerprints(),
        "nats_nkeys": nkeys,
    }


def _nats(nkeys: dict[str, str]) -> str:
    """The public NATS nkeys the file seals (what a server config may hold)."""
    return "".join(f"  {'nats ' + label:<10} {public}\n" for label, public in sorted(nkeys.items()))


def _fingerprints(pub: PublicIdentity) -> str:
    return "".join(f"  {role:<10} {fpr}\n" for role, fpr in pub.fingerprints().items())


def cmd_keys_show(args: argparse.Namespace) -> int:
    pub = load_public(args.file)
    nkeys = load_nats_public(args.file)
    human = f"{pub.principal}\n{_fingerprints(pub)}{_nats(nkeys)}"
    emit(args, human, _public_json(pub, nkeys))
    return 0


def cmd_mrz_check(args: argparse.Namespace) -> int:
    today = datetime.now(UTC).date()
    mrz = parse_mrz(split_lines(args.lines), today=today)
    emit(
        args,
        f"check digits valid ({mrz.format})\n{document_line(mrz, today)}",
        {**mrz.to_json_dict(), **document_summary(mrz, today)},
    )
    return 0


def _ms_to_iso(ms: int) -> str:
    return utc_iso(ms)


def envelope_summary(env: Envelope) -> dict[str, Any]:
    """The metadata of an envelope, as a hub sees it: never content."""
    h = env.header
    return {
        "id": h.message_id,
        "type": h.type,
        "sender": h.sender,
        "sender_key_id": h.sender_key.hex(),
        "recipients": list(h.recipients),
        "created": _ms_to_iso(h.created),
        "expires": _ms_to_iso(h.expires),
        "handling": h.handling.value,
        "restriction": h.restriction,
        "priority": h.priority.value,
        "case_ref": h.case_ref,
        "in_reply_to": None if h.in_reply_to is None else format_message_id(h.in_reply_to),
        "size_bytes": env.size,
        "payload_hash": env.payload_hash.hex(),
        "hops": [{"hub": hop.hub, "at": _ms_to_iso(hop.at)} for hop in env.hops],
    }


def cmd_envelope_inspect(args: argparse.Namespace) -> int:
    data = read_bytes(args.file, MAX_ENVELOPE_BYTES)
    env = decode_envelope(data)
    summary = envelope_summary(env)
    ring = KeyRing()
    for path in args.key:
        ring.add(load_public(path))
    status = 0
    now = wall_ms()
    if not args.key:
        summary["signature"] = "not checked: pass --key with the sender's key file"
        status = EXIT_NOT_VERIFIED
    else:
        try:
            verify_sender_signature(env, ring, now)
            summary["signature"] = f"valid, signed by {env.header.sender}"
            if env.hops:
                verify_hops(env, ring, now)
                summary["signature"] += " and countersigned by every hop"
        except IxbError as exc:
            summary["signature"] = f"FAILED {exc.code}: {exc.detail}"
            status = EXIT_USER_ERROR
    try:
        check_times(env.header, now)
        summary["freshness"] = "fresh"
    except IxbError as exc:
        summary["freshness"] = f"{exc.code}: {exc.detail}"
    if args.json:
        emit(args, "", summary)
        return status
    summary["hops"] = [f"{h['hub']} at {h['at']}" for h in summary["hops"]]
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        sys.stdout.write(f"{key:<{width}}  {'-' if shown in (None, '') else shown}\n")
    return status
