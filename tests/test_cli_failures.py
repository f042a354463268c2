"""The ``ixb`` command when things go wrong: one line, the right exit status, in time.

Real processes against real nats-servers: a server that is not there (a
closed port), a server that refuses our key, a hub that refuses a request
(shown as soon as its rejection arrives, and kept for ``ixb receipts``),
arguments out of range, and a hub whose HTTP port is taken.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agency_client.profile import load_profile
from agency_client.sdk import load_identity_for
from broker.natsd import start_federation
from ixb.deployment import Deployment, create_deployment
from protocols.errors import UnauthorisedError
from protocols.keys import NATS_AGENCY, KdfProfile, NkeySeed, seal_keyfile
from protocols.messages import PersonQuery
from protocols.roles import Role
from tests.federation import AGENCIES, PASSPHRASE, Federation, run_ixb, running_federation

ZERO_ID = "00000000-0000-0000-0000-000000000000"
TIMEOUT_S = 2.0
SLACK_S = 2.0
"""The brief's bound: a failure ends within ``--timeout`` + 2 s, process start included."""
UNREACHABLE = re.compile(r"^error ixb\.E_IO: cannot reach (tls|nats)://127\.0\.0\.1:\d+: (.+)$")

CONNECTING: dict[str, list[str]] = {
    "send alert": [
        *("send", "alert", "--to", "MYS/RMP-ATIPSOM", "--title", "t", "--text", "t"),
        *("--category", "other", "--source-grade", "B", "--info-grade", "2"),
    ],
    "inbox": ["inbox"],
    "receipts": ["receipts", ZERO_ID],
    "verify-doc": [
        "verify-doc",
        "--mrz",
        "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
        "L898902C36UTO7408122F1204159ZE184226B<<<<<10",
    ],
    "query person": [
        "query",
        "person",
        "--to",
        "MYS/RMP-ATIPSOM",
        "--surname",
        "X",
        "--document-number",
        "EXAMPLE1",
        "--purpose",
        "p",
        "--legal-basis",
        "b",
    ],
    "keys rotate": ["keys", "rotate", "--encryption-only"],
    "agency respond": ["agency", "respond", "--documents", "{registry}"],
    "directory ls": ["directory", "ls", "--country", "mys"],
}


def timed_ixb(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    full_env = {**os.environ, "IXB_PASSPHRASE": PASSPHRASE, **env}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ixb", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return result, time.monotonic() - start


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """THA alone, planned but (here) never started: its NATS port is closed."""
    return create_deployment(
        tmp_path_factory.mktemp("planned"),
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
        kdf=KdfProfile.INTERACTIVE,
    )


@pytest.mark.parametrize("command", list(CONNECTING), ids=list(CONNECTING))
def test_an_unreachable_server_is_one_line_within_the_timeout(
    deployment: Deployment, command: str
) -> None:
    profile = str(deployment.profile("THA/DSI-ATHD"))
    timeout = [] if command in ("verify-doc", "query person") else ["--timeout", str(TIMEOUT_S)]
    # verify-doc and query: --timeout waits for the answer; the connect gets at most 5 s of it
    args = [*CONNECTING[command], *timeout]
    if command in ("verify-doc", "query person"):
        args += ["--timeout", str(TIMEOUT_S)]
    registry = deployment.base / "registry.json"
    registry.write_text("[]\n")
    args = [a.format(registry=registry) for a in args]
    result, took = timed_ixb(*args, IXB_PROFILE=profile)
    line = one_line(result)
    match = UNREACHABLE.match(line)
    assert match is not None, line
    assert match.group(2) == "connection refused", line
    assert took < TIMEOUT_S + SLACK_S, f"{command}: {took:.2f} s"
    # --json: the same line, and the same error as one object on stdout
    as_json, _ = timed_ixb(*args, "--json", IXB_PROFILE=profile)
    json_line = one_line(as_json)
    assert UNREACHABLE.match(json_line) is not None, json_line
    code, _, detail = json_line.removeprefix("error ").partition(": ")
    assert json.loads(as_json.stdout) == {"error": {"code": code, "detail": detail}}


@pytest.fixture
def servers_only(tmp_path: Path) -> Iterator[Deployment]:
    yield create_deployment(
        tmp_path,
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
        kdf=KdfProfile.INTERACTIVE,
    )


async def test_a_wrong_nkey_is_one_line_within_the_timeout(servers_only: Deployment) -> None:
    """The key file seals another NATS nkey than the one the server's config lists."""
    deployment = servers_only
    profile_path = deployment.profile("THA/DSI-ATHD")
    profile = load_profile(profile_path)
    identity = load_identity_for(profile, PASSPHRASE)
    impostor = identity.with_nats({NATS_AGENCY: NkeySeed.generate()})
    key_path = profile.path(profile.agency.key_file)
    key_path.write_bytes(seal_keyfile(impostor, PASSPHRASE, KdfProfile.INTERACTIVE))
    async with start_federation(deployment.plan):
        for command in ("send alert", "inbox"):
            args = [*CONNECTING[command], "--timeout", str(TIMEOUT_S)]
            start = time.monotonic()
            result = await run_ixb(*args, IXB_PROFILE=str(profile_path))
            took = time.monotonic() - start
            line = one_line(result)
            match = UNREACHABLE.match(line)
            assert match is not None, line
            assert match.group(2).endswith("authorization violation"), line
            assert took < TIMEOUT_S + SLACK_S, f"{command}: {took:.2f} s"


AGENCIES_WITH_REGISTRY = {**AGENCIES, "MYS/REGISTRY": [Role.DOCUMENT_AUTHORITY]}


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path, AGENCIES_WITH_REGISTRY) as federation:
        yield federation


async def ixb_as(
    fed: Federation, agency: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = await run_ixb(*args, IXB_PROFILE=str(fed.deployment.profile(agency)))
    return result, time.monotonic() - start


REJECTED = re.compile(r"^error ixb\.E_UNAUTHORISED: (\w+/HUB) rejected ([0-9a-f-]{36}): .+$")


async def test_refusals_show_at_once_and_are_kept(fed: Federation) -> None:
    # the SDK: a refused request ends as soon as the hub's rejection arrives
    immigration = await fed.client("THA/IMMIGRATION")
    query = PersonQuery(surname="X", document_number="EXAMPLE1", purpose="p", legal_basis="b")
    start = time.monotonic()
    with pytest.raises(UnauthorisedError, match=r"^THA/HUB rejected "):
        await immigration.request(query, ["MYS/RMP-ATIPSOM"], timeout=30)
    assert time.monotonic() - start < 1.0

    # the CLI: the same refusal, one line, long before its 30 s timeout
    baseline, base_took = await ixb_as(fed, "THA/IMMIGRATION", "receipts", ZERO_ID, "--wait", "0")
    assert baseline.returncode == 0, baseline.stderr
    refused, took = await ixb_as(
        fed, "THA/IMMIGRATION", *CONNECTING["query person"], "--timeout", "30"
    )
    line = one_line(refused)
    match = REJECTED.match(line)
    assert match is not None, line
    assert match.group(1) == "THA/HUB"
    # a command that connects and reads costs base_took; the refusal adds under 1 s
    assert took < base_took + 1.0, f"refused after {took:.2f} s (a bare command: {base_took:.2f} s)"

    # the rejection the query consumed is in the receipt store
    shown, _ = await ixb_as(
        fed, "THA/IMMIGRATION", "receipts", "--json", match.group(2), "--wait", "0"
    )
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)["receipts"]
    assert [(r["status"], r["signer"], r["code"]) for r in rows] == [
        ("rejected", "THA/HUB", "ixb.E_UNAUTHORISED")
    ], rows

    # send --wait: accepted, delivered, rejected
    alert = CONNECTING["send alert"]
    accepted, _ = await ixb_as(fed, "THA/DSI-ATHD", *alert, "--wait")
    assert accepted.returncode == 0, accepted.stderr
    assert re.search(r"^accepted [0-9a-f-]{36} \(signed by THA/HUB\)$", accepted.stdout, re.M), (
        accepted.stdout
    )
    delivered, _ = await ixb_as(fed, "THA/DSI-ATHD", *alert, "--wait", "delivered", "--json")
    assert delivered.returncode == 0, delivered.stderr
    outcome = json.loads(delivered.stdout)
    assert outcome["outcome"] == "delivered" and outcome["signed_by"] == "MYS/HUB", outcome
    rejected, _ = await ixb_as(fed, "MYS/REGISTRY", *alert, "--wait")
    assert rejected.returncode == 4, rejected
    assert re.search(
        r"^rejected [0-9a-f-]{36}: ixb\.E_UNAUTHORISED .*\(signed by MYS/HUB\)$",
        rejected.stdout,
        re.M,
    ), rejected.stdout

    # an agency no directory lists
    unknown, _ = await ixb_as(
        fed,
        "THA/DSI-ATHD",
        *[("MYS/NOBODY" if a == "MYS/RMP-ATIPSOM" else a) for a in CONNECTING["send alert"]],
    )
    assert one_line(unknown).startswith("error ixb.E_UNKNOWN_RECIPIENT: MYS/NOBODY "), unknown


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "search", "--config", "x.toml", "--limit", "0"],
        ["audit", "search", "--config", "x.toml", "--limit", "-5"],
        ["audit", "search", "--config", "x.toml", "--limit", "100001"],
        ["audit", "search", "--config", "x.toml", "--limit", "ten"],
        ["audit", "search", "--config", "x.toml", "--country", "Malaysia"],
        ["directory", "ls", "--country", "MY"],
        ["audit", "reconcile", "--config", "x.toml", "--peer", "MY"],
        ["audit", "reconcile", "--config", "x.toml", "--peer", "MYS", "--grace", "-1"],
        ["inbox", "--max", "0"],
        ["inbox", "--wait", "-1"],
        ["inbox", "--timeout", "0"],
        ["inbox", "--timeout", "nan"],
        ["receipts", "X", "--wait", "inf"],
        ["agency", "respond", "--documents", "r.json", "--concurrency", "0"],
        ["verify-doc", "--mrz", "X", "--timeout", "0"],
        ["send", "alert", "--to", "A/B", "--title", "t", "--text", "t", "--wait", "read"],
        ["send", "alert", "--to", "A/B", "--title", "t", "--text", "t", "--timeout", "-2"],
        ["keys", "rotate", "--timeout", "0"],
        ["federation", "propose", "--current", "f", "--out", "o", "--threshold", "0"],
    ],
    ids=" ".join,
)
def test_arguments_out_of_range_are_one_line(args: list[str]) -> None:
    result, _ = timed_ixb(*args)
    line = one_line(result)
    assert line.startswith("error ixb.E_USAGE: ixb "), line
    assert "argument --" in line, line


def test_ixb_alone_shows_help_and_version_prints_it() -> None:
    alone, _ = timed_ixb()
    assert alone.returncode == 0, alone
    assert alone.stdout.startswith("usage: ixb "), alone.stdout
    assert "verify-doc" in alone.stdout
    version, _ = timed_ixb("--version")
    assert version.returncode == 0
    assert re.fullmatch(r"ixb \d+\.\d+\.\d+\S*\n", version.stdout), version.stdout


def test_hub_run_on_a_busy_port_is_one_line(deployment: Deployment) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result, took = timed_ixb(
            "hub",
            "run",
            "--config",
            str(deployment.hub_config("THA")),
            IXB_HUB__HTTP__PORT=str(port),
            IXB_HUB__HTTP__HOST="127.0.0.1",
        )
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    # a service logs JSON lines (its first start says which federation file it trusts);
    # the failure is the one line that is not one
    lines = result.stderr.strip().splitlines()
    assert all(json.loads(x) for x in lines[:-1]), lines
    line = lines[-1]
    assert (
        line
        == f"error ixb.E_IO: cannot listen for HTTP on 127.0.0.1:{port}: address already in use"
    ), line
    assert took < 10


async def test_a_connection_lost_mid_command_ends_in_one_line(fed: Federation) -> None:
    """The server goes away while ``ixb inbox`` waits: a few reconnects, then one line."""
    profile = str(fed.deployment.profile("MYS/RMP-ATIPSOM"))
    env = {**os.environ, "IXB_PASSPHRASE": PASSPHRASE, "IXB_PROFILE": profile}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ixb", "inbox", "--wait", "60", "--timeout", str(TIMEOUT_S)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    await asyncio.sleep(3)  # connected, waiting for messages
    assert process.returncode is None
    await fed.servers["MYS"].kill()
    lost = time.monotonic()
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    took = time.monotonic() - lost
    result = subprocess.CompletedProcess([], process.returncode or 0, "", stderr.decode())
    line = one_line(result)
    assert line.startswith("error ixb.E_IO: lost the connection to "), line
    assert took < 2 * TIMEOUT_S + SLACK_S + 2, f"{took:.2f} s"
