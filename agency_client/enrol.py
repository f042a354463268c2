"""``ixb agency enroll`` and ``ixb keys rotate``: keys made on the agency's machine, and
the signed request (:mod:`protocols.enrolment`) its hub's operator approves.

Private keys never leave this machine: the key file is sealed with the
passphrase (Argon2id, :attr:`KdfProfile.MODERATE` unless told otherwise), and
seals the NATS nkey the agency logs in with too: the hub gets its public
``U…`` key only, and the profile holds no secret at all.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from agency_client.enckeys import KeyState, open_key_file
from agency_client.federation_state import state_path
from agency_client.keystore import (
    MAX_KEYFILE_BYTES,
    create_private,
    passphrase,
    save_identity,
)
from agency_client.msgstore import open_store, store_path
from agency_client.profile import Profile, load_profile, render_profile
from agency_client.sdk import AgencyClient, load_previous_for, previous_key_file
from protocols.enrolment import Request, RequestKind, check_server, sign_request
from protocols.errors import IxbError, UsageError
from protocols.fields import utc_iso
from protocols.identifiers import parse_agency
from protocols.keys import (
    MAX_RETIRED_KEYS,
    NATS_AGENCY,
    Identity,
    KdfProfile,
    KeyHistory,
    PublicIdentity,
    RetiredKey,
    open_keyfile_history,
    seal_keyfile,
)
from transport.cliargs import add_connect_timeout, reconnects_for
from transport.cliout import add_json, emit
from transport.clock import wall_ms
from transport.files import read_bytes


def nats_user(name: str) -> str:
    """The agency's NATS user (the hub's ``agency_user`` rule; checked at approval)."""
    return f"agency-{name}"


def _fingerprints(pub: PublicIdentity) -> str:
    return "".join(f"  {role:<10} {fpr}\n" for role, fpr in pub.fingerprints().items())


def cmd_enroll(args: argparse.Namespace) -> int:
    agency = parse_agency(args.agency)
    try:
        server = check_server(args.server)
    except IxbError as exc:
        raise UsageError(f"--server: {exc.detail}") from None
    out: Path = args.out
    stem = f"{agency.country}-{agency.name}"
    key_file, profile_file, request_file = (
        out / f"{stem}.key",
        out / f"{stem}.toml",
        out / f"{stem}.request",
    )
    for path in (key_file, profile_file, request_file):
        if path.exists():
            raise UsageError(f"{path} exists; enrol into an empty directory")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity = Identity.generate(agency)  # with its NATS nkey
    nkey = identity.nats_seed(NATS_AGENCY)
    if nkey is None:  # pragma: no cover - generate() always makes one
        raise UsageError(f"{agency}: no NATS nkey generated")
    save_identity(key_file, identity, passphrase(confirm=True), KdfProfile(args.kdf))
    user = nats_user(agency.name)
    federation = args.federation.resolve() if args.federation else out.resolve() / "federation.toml"
    text = render_profile(
        agency=str(agency),
        key_file=str(key_file.resolve()),
        federation_file=str(federation),
        url=server,
        ca_file=None if args.nats_ca_file is None else str(args.nats_ca_file.resolve()),
    )
    create_private(profile_file, text.encode(), "profile")
    request = Request(
        v=1,
        kind=RequestKind.ENROL,
        agency=str(agency),
        signing_key=identity.public().signing,
        encryption_key=_encryption(identity.public()),
        created=wall_ms(),
        server=server,
        nats_user=user,
        nats_nkey=nkey.public,
    )
    create_private(request_file, sign_request(request, identity), "request")
    emit(
        args,
        f"keys for {agency} in {key_file} (sealed with your passphrase)\n"
        f"profile {profile_file}\n"
        f"request {request_file}: give it to your hub's operator, and read them these "
        f"fingerprints to compare:\n{_fingerprints(identity.public())}"
        f"  {'nats':<10} {nkey.public}\n",
        {
            "agency": str(agency),
            "key_file": str(key_file),
            "profile": str(profile_file),
            "request": str(request_file),
            "created": utc_iso(request.created),
            "fingerprints": identity.public().fingerprints(),
            "nats_nkey": nkey.public,
        },
    )
    return 0


def _encryption(pub: PublicIdentity) -> bytes:
    if pub.encryption is None:
        raise UsageError(f"{pub.principal} has no encryption key")
    return pub.encryption


def cmd_rotate(args: argparse.Namespace) -> int:
    """New signing and encryption keys; the old key file is kept beside (``.key.previous``)."""
    profile = load_profile(args.profile)
    if args.encryption_only:
        return _rotate_encryption(args, profile)
    key_file = profile.path(profile.agency.key_file)
    previous_file = previous_key_file(key_file)
    if previous_file.exists():
        raise UsageError(
            f"{previous_file} exists: the last rotation is not finished. Once the hub's "
            "operator ran `ixb hub agency rotate` with its request, any command of this "
            "profile (e.g. `ixb inbox`) sees the new keys listed and removes it"
        )
    secret = passphrase(confirm=False)
    now = wall_ms()
    old, history, _ = open_keyfile_history(read_bytes(key_file, MAX_KEYFILE_BYTES), secret)
    new_file = key_file.with_name(key_file.name + ".new")
    request_file = (
        args.out
        if args.out is not None
        else key_file.with_name(f"{old.principal.country}-{old.principal.name}.rotate")
    )
    if new_file.exists():
        raise UsageError(f"{new_file} exists: a rotation is already pending")
    fresh = Identity.generate(old.principal)
    # the NATS nkey stays: the server knows it (a key file without one keeps using its
    # profile's password, so it gets none here either)
    new = Identity(old.principal, fresh.signing, fresh.encryption, old.nats)
    # the replaced encryption key joins the retired ones (opened until drained and past
    # their grace, then destroyed: docs/operations/keys.md, forward secrecy)
    retired = (
        *(() if old.encryption is None else (RetiredKey(old.encryption, now),)),
        *history.retired,
    )
    create_private(
        new_file,
        seal_keyfile(
            new, secret, KdfProfile(args.kdf), KeyHistory(now, retired[:MAX_RETIRED_KEYS])
        ),
        "key file",
    )
    request = Request(
        v=1,
        kind=RequestKind.ROTATE,
        agency=str(old.principal),
        signing_key=new.public().signing,
        encryption_key=_encryption(new.public()),
        created=now,
        previous_signing_key=old.public().signing,
    )
    create_private(request_file, sign_request(request, new, old), "request")
    # the new keys become the profile's key file; the old ones stay beside it, for
    # messages sealed to them before the hub published the rotation
    key_file.replace(previous_file)
    new_file.replace(key_file)
    # the message store's content is sealed under a key derived from the signing key:
    # seal it again under the new one now, while both are in hand
    # (``….key.previous`` goes once the hub lists the new keys)
    if store_path(profile).exists():
        open_store(profile, [new, old], now).close()
    emit(
        args,
        f"new keys for {old.principal} in {key_file} (old ones kept in {previous_file})\n"
        f"request {request_file}: the hub's operator runs `ixb hub agency rotate` with it\n"
        f"{_fingerprints(new.public())}",
        {
            "agency": str(old.principal),
            "key_file": str(key_file),
            "previous_key_file": str(previous_file),
            "request": str(request_file),
            "created": utc_iso(now),
            "fingerprints": new.public().fingerprints(),
        },
    )
    return 0


def _rotate_encryption(args: argparse.Namespace, profile: Profile) -> int:
    """A new encryption key, listed by the hub at once (SPEC §12.1): no operator needed."""
    connect_timeout: float = args.timeout
    secret = passphrase(confirm=False)
    key_file = open_key_file(profile, secret, wall_ms())
    agency = profile.principal

    async def main() -> KeyState:
        client = await AgencyClient.connect(
            profile,
            key_file.state.identity,
            previous=load_previous_for(profile, secret),
            federation_state=state_path(Path(profile.base_dir), agency.country, agency.name),
            key_file=key_file,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=reconnects_for(connect_timeout),
            log_connection=False,
        )
        try:
            return await client.rotate_encryption_key()
        finally:
            await client.close()

    state = asyncio.run(main())
    retired = len(state.history.retired)
    fingerprint = state.identity.public().fingerprints()["encryption"]
    emit(
        args,
        f"new encryption key for {agency}, listed by the hub: {fingerprint}\n"
        f"{retired} retired encryption key(s) kept until drained and past their grace",
        {"agency": str(agency), "encryption": fingerprint, "retired_encryption_keys": retired},
    )
    return 0


def register_enroll(agency_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enroll = agency_sub.add_parser(
        "enroll",
        help="create this agency's keys, profile and signed enrolment request",
    )
    enroll.add_argument("--agency", required=True, help="CC/NAME")
    enroll.add_argument("--server", required=True, help="nats://HOST:PORT or tls://HOST:PORT")
    enroll.add_argument("--out", required=True, type=Path, help="directory for the new files")
    enroll.add_argument(
        "--federation", type=Path, help="federation file (default: OUT/federation.toml)"
    )
    enroll.add_argument(
        "--nats-ca-file", type=Path, help="CA bundle that verifies the hub's NATS server (TLS)"
    )
    enroll.add_argument(
        "--kdf",
        choices=[p.value for p in KdfProfile if p is not KdfProfile.INTERACTIVE],
        default=KdfProfile.MODERATE.value,
    )
    add_json(enroll)
    enroll.set_defaults(func=cmd_enroll)


def register_rotate(keys: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rotate = keys.add_parser(
        "rotate", help="new keys for this agency; the old ones kept for messages in flight"
    )
    rotate.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
    rotate.add_argument("--out", type=Path, help="where to write the signed rotation request")
    rotate.add_argument(
        "--encryption-only",
        action="store_true",
        help="only a new encryption key, listed by the hub at once (no operator needed)",
    )
    rotate.add_argument(
        "--kdf",
        choices=[p.value for p in KdfProfile if p is not KdfProfile.INTERACTIVE],
        default=KdfProfile.MODERATE.value,
    )
    add_connect_timeout(rotate)
    add_json(rotate)
    rotate.set_defaults(func=cmd_rotate)
