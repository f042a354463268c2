"""``ixb demo``: THA, MYS and MMR, each with its own NATS server and hub, exchange everything.

Everything runs as in production, on 127.0.0.1: three nats-servers (leaf-node
links over mutual TLS, JetStream; clients over TLS, all certificates from a
throwaway CA made for the run), three hub processes, and the agencies' automated
services (MYS's document responder, MMR's person-index responder) as ``ixb agency
respond`` processes. Every step a person takes is the ``ixb`` command they would
type, in its own process with their agency's profile (:mod:`ixb.demo_exchange`,
:mod:`ixb.demo_lifecycle`); the timeline shows each command line and its
outcome, and everything stays running until Ctrl-C, the cases the commands made
still there for ``ixb mla list``, ``ixb followup list``, ``ixb queue list``.
``--once`` stops after the script and exits 0 only if every step had the
expected outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
from pathlib import Path

from agency_client.docregistry import write_csv
from agency_client.personindex import index_path
from agency_client.profile import load_profile
from broker.natsd import start_federation
from ixb.demo_exchange import (
    MMR_REF,
    PERSONS_EXPORT,
    REGISTRY,
    SPECIMENS,
    STOLEN_PASSPORT,
    VALID_PASSPORT,
    exchange,
)
from ixb.demo_lifecycle import lifecycle
from ixb.demo_script import INDENT, Script, shown_line, shown_path
from ixb.deployment import Deployment, Layout, create_deployment
from ixb.processes import Processes, wait_hubs
from protocols.errors import UsageError
from protocols.roles import Role
from transport import cliargs

__all__ = ["MMR_REF", "REGISTRY", "STOLEN_PASSPORT", "VALID_PASSPORT", "cmd_demo", "register"]

PASSPHRASE = "ixb demo passphrase - not for real keys"  # noqa: S105 - demo key files only
LIAISON_PASSWORD = "ixb demo liaison"  # noqa: S105 - demo web login only
DEFAULT_DIR = "demo"
MARKER = ".ixb-demo"
"""Written into the demo's directory: only a directory holding it is cleared by a new run."""
RESPONDER_READY_S = 30.0

AGENCIES: dict[str, list[Role]] = {
    "THA/DSI-ATHD": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],  # DSI anti-trafficking
    "THA/IMMIGRATION": [Role.IMMIGRATION],
    "THA/OAG": [Role.CENTRAL_AUTHORITY],  # MLA central authority
    "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT],  # police anti-trafficking unit
    "MYS/IMMIGRATION": [Role.DOCUMENT_AUTHORITY, Role.IMMIGRATION],  # automated responder
    "MYS/AGC": [Role.CENTRAL_AUTHORITY],
    "MMR/MOHA-ATTU": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
}


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
    demo.add_argument(
        "--cluster",
        type=cliargs.country,
        metavar="CC",
        help="run this country's NATS as a cluster of three servers with replicated streams"
        " (docs/operations/cluster.md)",
    )
    demo.set_defaults(func=cmd_demo)


async def run_script(s: Script) -> None:
    await exchange(s)
    await lifecycle(s)


async def demo(base: Path, once: bool, cluster: str | None = None) -> int:
    say = sys.stdout.write
    say(f"ixb demo: three countries on 127.0.0.1, state in {base}\n")
    deployment = create_deployment(
        base,
        AGENCIES,
        passphrase=PASSPHRASE,
        liaison_password=LIAISON_PASSWORD,
        layout=Layout(nats_clusters={cluster: 3} if cluster else None),
    )
    script = Script(deployment)
    async with start_federation(deployment.plan):
        shape = ", ".join(
            f"{c} ({deployment.plan.cluster_size(c)} servers, streams replicated)"
            if deployment.plan.cluster_size(c) > 1
            else c
            for c in deployment.countries
        )
        script.say(
            f"NATS servers up: {shape} with leaf links and JetStream; every "
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
            await asyncio.gather(load_registry(script), load_index(script))
            await start_responders(script, procs)
            try:
                await run_script(script)
            finally:
                await script.disconnect_all()
            await audit_step(script)
            report(script, deployment)
            if not once:
                say("running until Ctrl-C\n")
                await _wait_for_interrupt()
        finally:
            unclean = await asyncio.to_thread(procs.stop)
            for name in unclean:
                script.check(False, f"{name} did not stop cleanly on SIGTERM")
    return 1 if script.failures else 0


async def load_registry(s: Script) -> None:
    """MYS's passport office exports its records; ``ixb registry load`` fills the registry."""
    export = s.deployment.base / "MYS-passports.csv"
    export.write_text(write_csv(REGISTRY), encoding="utf-8")
    ran = await s.cmd("MYS/IMMIGRATION", "registry", "load", str(export))
    d = ran.json()
    s.show(ran, f"MYS/IMMIGRATION's document registry: {d.get('loaded', ran.error)} passports")
    s.expect_ok(ran, "ixb registry load at MYS")


async def load_index(s: Script) -> None:
    """MMR's unit exports its records of persons; ``ixb index load`` keeps them hashed."""
    export = s.deployment.base / "MMR-persons.csv"
    export.write_text(PERSONS_EXPORT, encoding="utf-8")
    ran = await s.cmd("MMR/MOHA-ATTU", "index", "load", str(export))
    d = ran.json()
    s.show(ran, f"MMR/MOHA-ATTU's person index: {d.get('added', ran.error)} persons, hashed")
    s.expect_ok(ran, "ixb index load at MMR")


async def start_responders(s: Script, procs: Processes) -> None:
    """The automated services, each ``ixb agency respond`` in its own process, up to the end:
    MYS's document registry (what it cannot decide waits for a person) and MMR's person index."""
    d = s.deployment
    mmr = d.profile("MMR/MOHA-ATTU")
    responders = {
        "responder-MYS-IMMIGRATION": (
            "agency", "respond", "--unknown", "ask_human",
            "--profile", str(d.profile("MYS/IMMIGRATION")),
        ),
        "responder-MMR-MOHA-ATTU": (
            "agency", "respond", "--index", str(index_path(load_profile(mmr))),
            "--profile", str(mmr),
        ),
    }  # fmt: skip
    for name, args in responders.items():
        procs.spawn(name, *args)
    ready = await asyncio.gather(
        *(procs.wait_output(name, ": answering ", RESPONDER_READY_S) for name in responders)
    )
    for (name, args), line in zip(responders.items(), ready, strict=True):
        s.say(f"  $ {shown_line(args)} &   (logs/{name}.log)")
        sys.stdout.write(f"{INDENT}{line}\n")


async def audit_step(s: Script) -> None:
    """Reconcile THA's and MYS's logs, as a liaison officer would, once checkpoints passed."""
    s.say("AUDIT  THA and MYS reconcile their witnessed logs")
    config = str(s.deployment.hub_config("THA"))

    def clean(d: dict[str, object]) -> bool:  # nothing one side logged and the other did not
        return "matched" in d and not (d.get("only_here") or d.get("only_there"))

    args = ("audit", "reconcile", "--config", config, "--peer", "MYS", "--grace", "0")
    ran = await s.cmd_until(None, args, clean, timeout=20)
    d = ran.json()
    s.show(
        ran,
        f"THA ↔ MYS: {d.get('matched', ran.error)} exchanges match on both sides;"
        f" {len(d.get('only_here') or [])} only in THA's log,"
        f" {len(d.get('only_there') or [])} only in MYS's, {len(d.get('different') or [])} differ",
    )
    s.check(ran.ok and clean(d), "THA and MYS audit logs reconcile")


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
    for label, specimen in SPECIMENS.items():
        said = f"{label} (status unknown: a person answers)" if specimen.undecided else label
        say(f"  {said}:\n" + "".join(f"    {line}\n" for line in specimen.mrz()))
    profile = {agency: shown_path(str(deployment.profile(agency))) for agency in AGENCIES}
    say(
        "the demo's cases, as the commands left them:\n"
        f"  ixb mla list --profile {profile['MYS/AGC']}\n"
        f"  ixb followup list --all --profile {profile['MMR/MOHA-ATTU']}\n"
        f"  ixb queue list --profile {profile['MYS/IMMIGRATION']}\n"
        f"  ixb overdue --open --profile {profile['THA/DSI-ATHD']}\n"
    )
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
    return asyncio.run(demo(base, args.once, args.cluster))
