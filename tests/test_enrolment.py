"""Enrolment on a running federation: keys made at the agency, a signed request, the
operator's approval; the new agency sends across a border without any restart."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from agency_client.keystore import load_nats_public
from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, load_identity_for
from protocols import wire
from protocols.enrolment import (
    DS_ENROLMENT,
    Request,
    RequestKind,
    SignedRequest,
    check_server,
)
from protocols.errors import SchemaError
from protocols.examples import example_bodies
from protocols.identifiers import parse_agency
from protocols.keys import Identity, KdfProfile, read_public
from protocols.messages import ReceiptStatus
from tests.federation import PASSPHRASE, Federation, run_ixb, running_federation
from tests.test_federation import collect


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


async def _enroll(fed: Federation, agency: str, out: Path, server: str | None = None) -> Path:
    done = await run_ixb(
        "agency",
        "enroll",
        "--agency",
        agency,
        "--server",
        server or fed.deployment.plan.client_url(agency[:3]),
        "--out",
        str(out),
        "--federation",
        str(fed.deployment.base / "federation.toml"),
        "--nats-ca-file",
        str(fed.deployment.ca_file),
    )
    assert done.returncode == 0, done.stderr
    return out / f"{agency.replace('/', '-')}.request"


async def _approve(fed: Federation, request: Path, *roles: str) -> tuple[int, str, str]:
    args = [a for r in roles for a in ("--role", r)]
    done = await run_ixb(
        "hub",
        "agency",
        "approve",
        str(request),
        *args,
        "--config",
        str(fed.deployment.hub_config("THA")),
        "--nats-plan",
        str(fed.deployment.base / "plan.json"),
        # no --nats-pid: the server's pid_file says whom to reload
    )
    assert "Traceback" not in done.stderr
    return done.returncode, done.stdout, done.stderr


async def test_an_agency_enrols_and_sends_without_a_restart(
    fed: Federation, tmp_path: Path
) -> None:
    out = tmp_path / "new-unit"
    request = await _enroll(fed, "THA/NEW-UNIT", out)
    key_text = (out / "THA-NEW-UNIT.key").read_bytes()
    assert read_public(key_text).principal == parse_agency("THA/NEW-UNIT")
    kdf = json.loads(key_text)["kdf"]  # sealed with the passphrase, MODERATE cost or more
    assert (kdf["opslimit"], kdf["memlimit"]) >= KdfProfile.MODERATE.params
    assert b"signing_seed" not in key_text
    assert (out / "THA-NEW-UNIT.key").stat().st_mode & 0o077 == 0
    tasks = {c: r.task for c, r in fed.hubs.items()}

    nkey = load_nats_public(out / "THA-NEW-UNIT.key")["agency"]
    assert (
        wire.decode(
            wire.decode(request.read_bytes(), SignedRequest, "r").body, Request, "r"
        ).nats_nkey
        == nkey
    )
    profile_text = (out / "THA-NEW-UNIT.toml").read_text()
    assert "password" not in profile_text and "SU" not in profile_text  # no secret at all
    code, stdout, stderr = await _approve(fed, request, "trafficking_unit")
    assert code == 0, stderr
    assert "applied by the running hub" in stdout
    assert f"nkey {nkey}" in stdout and f"nats-server {fed.servers['THA'].pid} reloads" in stdout
    rendered = fed.deployment.plan.node("THA").config_path.read_text()
    assert f'nkey: "{nkey}"' in rendered
    assert not re.search(r"\bSU[A-Z2-7]{56}\b", rendered)
    agency = parse_agency("THA/NEW-UNIT")
    deadline = asyncio.get_running_loop().time() + 5
    while any(agency not in r.hub.keys.agencies("THA") for r in fed.hubs.values()):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)

    profile = load_profile(out / "THA-NEW-UNIT.toml")
    client = await AgencyClient.connect(profile, load_identity_for(profile, PASSPHRASE))
    fed.clients.append(client)
    receiver = await fed.client("MYS/RMP-ATIPSOM")
    msg_id = await client.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    await client.wait_receipt(msg_id, ReceiptStatus.DELIVERED, timeout=20)
    (item,) = await collect(receiver, 1)
    assert str(item.header.sender) == "THA/NEW-UNIT"
    assert all(fed.hubs[c].task is t and not t.done() for c, t in tasks.items())

    # the same agency again: refused
    code, _, stderr = await _approve(fed, request, "trafficking_unit")
    assert code == 2 and "already enrolled" in stderr and len(stderr.splitlines()) == 1


async def test_bad_requests_are_refused_in_one_line(fed: Federation, tmp_path: Path) -> None:
    good = await _enroll(fed, "THA/GOOD-UNIT", tmp_path / "good")
    foreign = await _enroll(fed, "MYS/SOME-UNIT", tmp_path / "foreign")

    # signed by another key than the one it carries
    outer = wire.decode(good.read_bytes(), SignedRequest, "request")
    other = Identity.generate(parse_agency("THA/GOOD-UNIT"))
    forged = tmp_path / "forged.request"
    forged.write_bytes(
        wire.encode(
            SignedRequest(body=outer.body, sig=other.signing.sign(DS_ENROLMENT + outer.body))
        )
    )
    # a malformed server address, correctly signed (built as raw fields: the struct refuses it)
    ident = Identity.generate(parse_agency("THA/BAD-SERVER"))
    request = wire.decode(outer.body, Request, "request")
    raw = msgspec.structs.asdict(request) | {
        "agency": "THA/BAD-SERVER",
        "signing_key": ident.public().signing,
        "encryption_key": ident.public().encryption,
        "server": "http://hub.example:4222",
        "kind": RequestKind.ENROL.value,
    }
    body = msgspec.msgpack.encode({k: v for k, v in raw.items() if v is not None})
    bad_server = tmp_path / "bad-server.request"
    bad_server.write_bytes(
        wire.encode(SignedRequest(body=body, sig=ident.signing.sign(DS_ENROLMENT + body)))
    )
    with pytest.raises(SchemaError):  # the regular path refuses such a request before signing
        check_server("http://hub.example:4222")

    cases = [
        (forged, ("trafficking_unit",), "ixb.E_SIGNATURE", "not signed by the signing key"),
        (foreign, ("trafficking_unit",), "ixb.E_USAGE", "asks to enrol in MYS"),
        (bad_server, ("trafficking_unit",), "ixb.E_SCHEMA", "nats://HOST:PORT"),
        (good, ("wizard",), "ixb.E_USAGE", "unknown role 'wizard'"),
    ]
    for path, roles, code_text, text in cases:
        code, _, stderr = await _approve(fed, path, *roles)
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1, (path, stderr)
        assert lines[0].startswith(f"error {code_text}") and text in lines[0], lines

    done = await run_ixb(
        "agency",
        "enroll",
        "--agency",
        "THA/X",
        "--server",
        "nats://nohost",
        "--out",
        str(tmp_path / "x"),
    )
    assert done.returncode == 2 and "nats://HOST:PORT" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


async def test_a_wrong_nkey_is_refused_at_once_in_one_line(fed: Federation, tmp_path: Path) -> None:
    """The key file of another enrolment (same id, another nkey): the server refuses it."""
    out = tmp_path / "unit"
    request = await _enroll(fed, "THA/NEW-UNIT", out)
    code, _, stderr = await _approve(fed, request, "trafficking_unit")
    assert code == 0, stderr
    other = await run_ixb(
        "keys",
        "new",
        "--agency",
        "THA/NEW-UNIT",
        "--out",
        str(tmp_path / "other.key"),
        "--kdf",
        "interactive",
    )
    assert other.returncode == 0, other.stderr
    profile = (out / "THA-NEW-UNIT.toml").read_text()
    impostor = tmp_path / "impostor.toml"
    impostor.write_text(profile.replace(str(out / "THA-NEW-UNIT.key"), str(tmp_path / "other.key")))
    start = asyncio.get_running_loop().time()
    done = await run_ixb("inbox", "--profile", str(impostor))
    assert asyncio.get_running_loop().time() - start < 30  # not FIRST_CONNECT_S of retries
    assert done.returncode != 0
    assert done.stderr.startswith("error ixb.E_IO: "), done.stderr
    assert done.stderr.rstrip("\n").endswith("authorization violation"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    # the right key file still connects
    ok = await run_ixb("inbox", "--profile", str(out / "THA-NEW-UNIT.toml"))
    assert ok.returncode == 0, ok.stderr
