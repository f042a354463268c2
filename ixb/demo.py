"""``ixb demo``: THA, MYS and MMR, each with its own NATS server and hub, exchange everything.

Everything runs as in production, on 127.0.0.1: three nats-servers (leaf-node
links over mutual TLS, JetStream; clients over TLS, all certificates from a
throwaway CA made for the run), three hub processes, MYS's automated document responder as
its own process; the scripted agencies below connect with their own
credentials and keys. The demo prints a timeline (who sent what to whom, hub
decisions, receipts, latencies), then leaves everything running until Ctrl-C.
``--once`` stops after the script and exits 0 only if every step had the
expected outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from agency_client.docregistry import DocumentRecord, write_csv
from agency_client.personindex import PersonResponder, index_path
from agency_client.profile import load_profile
from agency_client.sdk import Incoming, Queued
from broker.natsd import start_federation
from ixb.demo_lifecycle import lifecycle
from ixb.demo_script import Script, body_as, expect_rejection, since_ms
from ixb.deployment import Deployment, create_deployment
from ixb.processes import Processes, wait_hubs
from protocols.errors import HandlingError, UsageError
from protocols.examples import example_bodies, example_victim_alert
from protocols.handling import HandlingCode, Priority
from protocols.messages import (
    Body,
    Decision,
    DocPurpose,
    DocStatus,
    DocVerifyRequest,
    DocVerifyResponse,
    FollowupDecision,
    FollowupRequest,
    MlaStatus,
    MlaStatusCode,
    PersonQuery,
    PersonResult,
    ReceiptStatus,
)
from protocols.mrz import build_td3
from protocols.roles import Role
from transport.clock import wall_ms

PASSPHRASE = "ixb demo passphrase - not for real keys"  # noqa: S105 - demo key files only
MMR_REF = "MMR-ATTU-2026-000112"
"""The hit reference MMR's anti-trafficking unit answers the demo's person query with."""
PERSONS_EXPORT = f"""reference,surname,given_names,birth_date,nationality,document_number
{MMR_REF},Sample,Narong,1981-03-14,THA,
MMR-ATTU-2026-000113,Nguyễn,Văn An,1990-04,VNM,C1234567
MMR-ATTU-2026-000114,EXAMPLE,Aung Aung,1985,MMR,MA123456
"""
"""MMR's person index (invented persons): the demo's query hits the first row."""
LIAISON_PASSWORD = "ixb demo liaison"  # noqa: S105 - demo web login only
DEFAULT_DIR = "demo"
MARKER = ".ixb-demo"
"""Written into the demo's directory: only a directory holding it is cleared by a new run."""

AGENCIES: dict[str, list[Role]] = {
    "THA/DSI-ATHD": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],  # DSI anti-trafficking
    "THA/IMMIGRATION": [Role.IMMIGRATION],
    "THA/OAG": [Role.CENTRAL_AUTHORITY],  # MLA central authority
    "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT],  # police anti-trafficking unit
    "MYS/IMMIGRATION": [Role.DOCUMENT_AUTHORITY, Role.IMMIGRATION],  # automated responder
    "MYS/AGC": [Role.CENTRAL_AUTHORITY],
    "MMR/MOHA-ATTU": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
}

VALID_PASSPORT = build_td3(
    issuing_state="MYS",
    surname="SAMPLE",
    given_names="SITI AMINAH",
    document_number="A12345678",
    nationality="MYS",
    birth_date="900101",
    sex="F",
    expiry_date="310101",
)
STOLEN_PASSPORT = build_td3(
    issuing_state="MYS",
    surname="EXAMPLE",
    given_names="AHMAD",
    document_number="A87654321",
    nationality="MYS",
    birth_date="850615",
    sex="M",
    expiry_date="300615",
)
REGISTRY = [
    DocumentRecord(
        document_number="A12345678",
        issuing_state="MYS",
        surname="SAMPLE",
        given_names="SITI AMINAH",
        birth_date="1990-01-01",
        expiry_date="2031-01-01",
        nationality="MYS",
        sex="F",
    ),
    DocumentRecord(
        document_number="A87654321",
        issuing_state="MYS",
        surname="EXAMPLE",
        given_names="AHMAD",
        birth_date="1985-06-15",
        expiry_date="2030-06-15",
        nationality="MYS",
        sex="M",
        status=DocStatus.REPORTED_STOLEN,
    ),
]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run THA, MYS and MMR and exchange every message type")
    demo.add_argument(
        "--once",
        action="store_true",
        help="stop after the script; exit non-zero unless every step went as expected",
    )
    demo.add_argument(
        "--dir",
        type=Path,
        default=Path(DEFAULT_DIR),
        help=f"where to put keys, configs and state (default: ./{DEFAULT_DIR}; a previous"
        " demo's directory is cleared, any other non-empty directory refused)",
    )
    demo.set_defaults(func=cmd_demo)


async def run_script(s: Script) -> None:
    ex = example_bodies(wall_ms())
    # every officer's client connects first, so latencies below are the exchange's own
    # (MYS/IMMIGRATION is the automated responder, a process of its own)
    for agency in AGENCIES:
        if agency != "MYS/IMMIGRATION":
            await s.client(agency)
    await alert(s, ex)
    await document_checks(s)
    result = await person_query(s, ex)
    await followup(s, ex, result)
    await mla(s, ex)
    await refusals(s, ex)
    await lifecycle(s)


async def alert(s: Script, ex: dict[str, Body]) -> None:
    s.say("ALERT  THA/DSI-ATHD → MYS/RMP-ATIPSOM, MMR/MOHA-ATTU  [H2, urgent]")
    s.alert_id, start = await s.send(
        "THA/DSI-ATHD",
        ex["alert"],
        ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"],
        handling=HandlingCode.H2,
        priority=Priority.URGENT,
        case_ref="THA-DSI-2026-0412",
    )
    for agency in ("MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"):
        got = await s.next_message(agency, "alert")
        via = " → ".join(str(h) for h in got.hubs)
        s.say(
            f"       delivered to {agency} after {since_ms(start)} via {via}; verified, decrypted"
        )
        s.check(got.body == ex["alert"] and got.header.id == s.alert_id, f"alert to {agency}")
        await (await s.client(agency)).send_read_receipt(got)
    for status in (
        ReceiptStatus.ACCEPTED,
        ReceiptStatus.RELAYED,
        ReceiptStatus.DELIVERED,
        ReceiptStatus.READ,
    ):
        r = await s.receipt("THA/DSI-ATHD", s.alert_id, status)
        s.check(r is not None, f"alert {status.value} receipt")
        if r is not None:
            s.say(f"       receipt {status.value:<9} signed by {r.by}")


async def document_checks(s: Script) -> None:
    officer = await s.client("THA/IMMIGRATION")
    for label, mrz, expected in (
        ("valid passport", VALID_PASSPORT, DocStatus.VALID),
        ("stolen passport", STOLEN_PASSPORT, DocStatus.REPORTED_STOLEN),
    ):
        s.say(f"DOC CHECK  THA/IMMIGRATION → MYS/IMMIGRATION (automated)  {label}")
        start = time.perf_counter()
        # the synchronous path (SPEC §14): both hubs audit it before the answer moves on
        answer = await officer.lookup(
            DocVerifyRequest(mrz=mrz, purpose=DocPurpose.BORDER_CHECK, checkpoint="SADAO"),
            "MYS/IMMIGRATION",
            timeout=15,
            priority=Priority.URGENT,
        )
        if isinstance(answer, Queued):  # MYS's responder did not answer in time
            s.check(False, f"doc check {label}: {answer.describe(officer.clock())}")
            continue
        reply = body_as(answer, DocVerifyResponse)
        s.say(
            f"       answer: {reply.status.value} ({reply.answered_by.value}) in {since_ms(start)}"
        )
        s.check(reply.status is expected, f"doc check {label}")


async def person_query(s: Script, ex: dict[str, Body]) -> Incoming:
    s.say("PERSON QUERY  THA/DSI-ATHD → MMR/MOHA-ATTU (hit/no-hit, no personal data back)")
    mmr = await s.client("MMR/MOHA-ATTU")
    # MMR answers from its person index, as `ixb agency respond --index` does (in the
    # scripted client here: it also decides the follow-up below)
    responder = PersonResponder(
        mmr, index_path(load_profile(s.deployment.profile("MMR/MOHA-ATTU")))
    )
    try:
        example = ex["person.query"]
        assert isinstance(example, PersonQuery)  # noqa: S101 - the examples' own type
        unknown = msgspec.structs.replace(example, surname="NOBODY", given_names="KNOWN")
        answers: list[Incoming] = []
        for query_body in (example, unknown):
            query_id, start = await s.send(
                "THA/DSI-ATHD", query_body, ["MMR/MOHA-ATTU"], case_ref="THA-DSI-2026-0412"
            )
            await responder(mmr, await s.next_message("MMR/MOHA-ATTU", "person.query"))
            result = await s.next_message("THA/DSI-ATHD", "person.result")
            hit = body_as(result, PersonResult)
            who = "a person MMR holds" if query_body is example else "a person it does not"
            answer = f"HIT, reference {hit.reference}" if hit.hit else "no hit"
            s.say(f"       {who}: {answer} after {since_ms(start)}")
            s.check(
                hit.hit == (query_body is example) and result.header.in_reply_to == query_id,
                "person.result",
            )
            answers.append(result)
    finally:
        responder.close()
    listed = await s.ixb_ok(
        "ixb index queries at MMR",
        *("index", "queries", "--json"),
        *("--profile", str(s.deployment.profile("MMR/MOHA-ATTU"))),
    )
    queries = json.loads(listed)["queries"] if listed else []
    s.say(
        f"       MMR's record (ixb index queries): {len(queries)} queries by "
        f"{', '.join(sorted({q['requester'] for q in queries}))}, each with its time, purpose"
        " and legal basis; the terms only as keyed hashes"
    )
    s.check([q["hit"] for q in queries] == [True, False], "MMR's record of the queries")
    return answers[0]


def followup_for(ex: dict[str, Body], hit: PersonResult) -> FollowupRequest:
    """The example follow-up request, citing the reference the owner answered with."""
    example = ex["followup.request"]
    assert isinstance(example, FollowupRequest)  # noqa: S101 - the examples' own type
    return msgspec.structs.replace(example, reference=hit.reference or "")


async def followup(s: Script, ex: dict[str, Body], result: Incoming) -> None:
    s.say("FOLLOW-UP  THA/DSI-ATHD → MMR/MOHA-ATTU; a named officer at MMR decides")
    await s.send(
        "THA/DSI-ATHD",
        followup_for(ex, body_as(result, PersonResult)),
        ["MMR/MOHA-ATTU"],
        in_reply_to=result.header.id,
        case_ref="THA-DSI-2026-0412",
    )
    request = await s.next_message("MMR/MOHA-ATTU", "followup.request")
    mmr = await s.client("MMR/MOHA-ATTU")
    await mmr.reply(request, ex["followup.decision"], handling=HandlingCode.H1)
    decision = body_as(await s.next_message("THA/DSI-ATHD", "followup.decision"), FollowupDecision)
    s.say(f"       decision: {decision.decision.value} by {decision.decided_by} [H1]")
    s.check(
        decision.decision in (Decision.APPROVED, Decision.PARTIALLY_APPROVED), "followup.decision"
    )


async def mla(s: Script, ex: dict[str, Body]) -> None:
    s.say("MLA REQUEST  THA/OAG → MYS/AGC, then status updates")
    mla_id, _ = await s.send(
        "THA/OAG",
        ex["mla.request"],
        ["MYS/AGC"],
        priority=Priority.HIGH,
        case_ref="THA-OAG-MLA-2026-031",
    )
    request = await s.next_message("MYS/AGC", "mla.request")
    agc = await s.client("MYS/AGC")
    previous: MlaStatusCode | None = None
    for code in (MlaStatusCode.RECEIVED, MlaStatusCode.ACKNOWLEDGED, MlaStatusCode.IN_EXECUTION):
        await agc.reply(request, MlaStatus(status=code, previous=previous))
        update = await s.next_message("THA/OAG", "mla.status")
        status = body_as(update, MlaStatus)
        s.say(f"       status: {status.status.value}")
        s.check(
            status.status is code and update.header.in_reply_to == mla_id,
            f"mla.status {code.value}",
        )
        previous = code


async def refusals(s: Script, ex: dict[str, Body]) -> None:
    s.say("REFUSALS (each answered with a signed rejection receipt, nothing delivered)")
    mys = await s.client("MYS/RMP-ATIPSOM")
    bad = await mys.send(
        ex["alert"], ["MYS/IMMIGRATION"], handling=HandlingCode.H2, forward_of=s.alert_id
    )
    await expect_rejection(
        s, "MYS/RMP-ATIPSOM", bad, "ixb.E_HANDLING", "H2 alert forwarded to MYS/IMMIGRATION"
    )
    officer = await s.client("THA/IMMIGRATION")
    bad = await officer.send(ex["person.query"], ["MMR/MOHA-ATTU"])
    await expect_rejection(
        s, "THA/IMMIGRATION", bad, "ixb.E_UNAUTHORISED", "person query from an immigration desk"
    )
    sender = await s.client("THA/DSI-ATHD")
    try:
        await sender.send(example_victim_alert(0), ["MYS/RMP-ATIPSOM"], handling=HandlingCode.H0)
    except HandlingError as exc:
        s.say(f"       alert naming a victim under H0: {exc.code}, never sealed by THA/DSI-ATHD")
        s.check(True, "victim alert under H0 refused by the sender")
    else:
        s.check(False, "victim alert under H0 refused by the sender")


async def demo(base: Path, once: bool) -> int:
    say = sys.stdout.write
    say(f"ixb demo: three countries on 127.0.0.1, state in {base}\n")
    deployment = create_deployment(
        base, AGENCIES, passphrase=PASSPHRASE, liaison_password=LIAISON_PASSWORD
    )
    script = Script(deployment)
    async with start_federation(deployment.plan):
        script.say(
            "NATS servers up: THA, MYS, MMR with leaf links and JetStream; every "
            f"connection TLS (throwaway CA {deployment.ca_file}; leaf links mutual TLS)"
        )
        procs = Processes(deployment, base / "logs")
        try:
            for country in deployment.countries:
                procs.spawn(
                    f"hub-{country}", "hub", "run", "--config", str(deployment.hub_config(country))
                )
            await wait_hubs(deployment, procs)
            script.say("hubs ready; signed agency directories exchanged across the links")
            await load_registry(script, base, str(deployment.profile("MYS/IMMIGRATION")))
            procs.spawn(
                "responder-MYS-IMMIGRATION",
                "agency",
                "respond",
                "--profile",
                str(deployment.profile("MYS/IMMIGRATION")),
            )
            persons = base / "MMR-persons.csv"
            persons.write_text(PERSONS_EXPORT, encoding="utf-8")
            mmr_profile = str(deployment.profile("MMR/MOHA-ATTU"))
            await script.ixb_ok(
                "ixb index load at MMR", "index", "load", str(persons), "--profile", mmr_profile
            )
            script.say(f"MMR/MOHA-ATTU loaded its person index from {persons.name} (hashed)")
            try:
                await run_script(script)
            finally:
                await script.disconnect_all()
            await audit_step(script, deployment)
            report(script, deployment)
            if not once:
                # from now on MMR's person queries are answered by the command, its own process
                index = str(index_path(load_profile(Path(mmr_profile))))
                procs.spawn(
                    "responder-MMR-MOHA-ATTU",
                    *("agency", "respond", "--profile", mmr_profile, "--index", index),
                )
                say(
                    "MMR/MOHA-ATTU answers person queries from its index (ixb agency respond "
                    f"--index {index}); ixb index queries shows who asked\n"
                )
                say("running until Ctrl-C\n")
                await _wait_for_interrupt()
        finally:
            unclean = await asyncio.to_thread(procs.stop)
            for name in unclean:
                script.check(False, f"{name} did not stop cleanly on SIGTERM")
    return 1 if script.failures else 0


async def load_registry(s: Script, base: Path, profile: str) -> None:
    """MYS's passport office exports its records; ``ixb registry load`` fills the registry."""
    export = base / "MYS-passports.csv"
    export.write_text(write_csv(REGISTRY), encoding="utf-8")
    out = await s.ixb_ok(
        "ixb registry load at MYS", "registry", "load", str(export), "--profile", profile
    )
    s.say(f"MYS/IMMIGRATION loaded its document registry: {out.strip()}")


async def audit_step(s: Script, deployment: Deployment) -> None:
    """Reconcile THA's and MYS's logs, as a liaison officer would, once checkpoints passed."""
    s.say("AUDIT  THA and MYS reconcile their witnessed logs")
    config = str(deployment.hub_config("THA"))
    deadline = time.monotonic() + 20
    while True:
        result = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "ixb",
                "audit",
                "reconcile",
                "--config",
                config,
                "--peer",
                "MYS",
                "--grace",
                "0",
            ],
            capture_output=True,
            text=True,
            env=deployment.env(),
            check=False,
            timeout=60,
        )
        clean = result.returncode == 0 and " 0 only in" in result.stdout
        if clean or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    for line in result.stdout.strip().splitlines():
        s.say(f"       {line}")
    s.check(clean, "THA and MYS audit logs reconcile")


def report(script: Script, deployment: Deployment) -> None:
    say = sys.stdout.write
    say("\n")
    for country in deployment.countries:
        say(
            f"hub {country}: liaison pages {deployment.hub_url(country)}/audit"
            f"   health {deployment.hub_url(country)}/healthz   /metrics\n"
        )
    say(f"liaison login: user 'liaison', password '{LIAISON_PASSWORD}'\n")
    say(f"audit CLI: ixb audit search --config {deployment.hub_config('THA')}\n")
    say(
        f"\nagency profiles (IXB_PROFILE=…), key files sealed with IXB_PASSPHRASE='{PASSPHRASE}':\n"
    )
    for agency in AGENCIES:
        say(f"  {agency:<16} {deployment.profile(agency)}\n")
    say("specimen passports in MYS's registry (ixb verify-doc --mrz LINE1 LINE2):\n")
    for label, mrz in (("valid", VALID_PASSPORT), ("reported stolen", STOLEN_PASSPORT)):
        say(f"  {label}:\n" + "".join(f"    {line}\n" for line in mrz))
    if script.failures:
        say("\nFAILED:\n" + "".join(f"  {f}\n" for f in script.failures))
    else:
        say(f"\nall {script.steps} checks went as expected\n")


async def _wait_for_interrupt() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def prepare_dir(base: Path) -> str | None:
    """An empty directory for this run; a previous demo's is cleared (the line saying so).

    A non-empty directory without the demo's marker is someone else's: refused.
    """
    if base.exists() and not base.is_dir():
        raise UsageError(f"--dir {base}: exists and is not a directory")
    said = None
    if base.is_dir() and any(base.iterdir()):
        if not (base / MARKER).is_file():
            raise UsageError(
                f"--dir {base}: not empty and not a previous demo's directory; "
                "pass an empty or new directory"
            )
        shutil.rmtree(base)
        said = f"ixb demo: cleared the previous run's {base}"
    base.mkdir(parents=True, exist_ok=True)
    (base / MARKER).write_text("made by ixb demo; the next ixb demo clears this directory\n")
    return said


def cmd_demo(args: argparse.Namespace) -> int:
    base = args.dir.resolve()
    said = prepare_dir(base)
    if said:
        sys.stdout.write(said + "\n")
    return asyncio.run(demo(base, args.once))
