"""What every step of ``ixb demo`` shares: the timeline, the checks, the commands it runs.

Every step a person or an agency's service takes is an ``ixb`` command in its
own process, with the acting agency's profile (:meth:`Script.cmd`); the
timeline shows each command line and its outcome. The steps are
:mod:`ixb.demo_exchange` (every message type), :mod:`ixb.demo_lifecycle`
(enrolment, key rotation and revocation on the running federation); the few
things no command expresses use the SDK clients kept here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agency_client.msgstore import MessageStore, open_store
from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, Incoming, load_identity_for, load_previous_for
from ixb.deployment import Deployment
from protocols.errors import IxbError
from protocols.messages import Body, Receipt, ReceiptStatus
from transport.clock import wall_ms

COMMAND_TIMEOUT_S = 60.0
"""An ``ixb`` command the demo runs as an operator or an agency would."""
UNTIL_S = 15.0
"""How long a step asks again (``ixb inbox``, ``ixb queue list`` …) for what is on its way."""
ELIDED = frozenset(
    {
        "--title",
        "--text",
        "--summary",
        "--release-text",
        "--purpose",
        "--legal-basis",
        "--contact",
        "--mrz",
    }
)
"""Options whose values the timeline shows as ``…`` (long free text)."""
INDENT = " " * 15
"""Where a command's outcome lines start, under its ``$ ixb …`` line."""


@dataclass(frozen=True)
class Ran:
    """One ``ixb`` command the demo ran: its line as shown, exit status, output."""

    shown: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self) -> dict[str, Any]:
        """The one JSON object it printed (``{}`` if none)."""
        try:
            data = json.loads(self.stdout)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def error(self) -> str:
        """Its one-line error (stderr's last line), or the exit status."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit {self.returncode}"

    def error_code(self) -> str | None:
        """The ``ixb.E_…`` code of its ``--json`` error object, if it failed with one."""
        error = self.json().get("error")
        return error.get("code") if isinstance(error, dict) else None


def shown_path(arg: str) -> str:
    """A path under the working directory as a relative one (``demo/agencies/…``)."""
    if not arg.startswith("/"):
        return arg
    try:
        return os.path.relpath(arg) if Path(arg).is_relative_to(Path.cwd()) else arg
    except ValueError:
        return arg


def shown_line(args: Sequence[str]) -> str:
    """``ixb ARGS`` as the timeline shows it: long free text as ``…``, paths relative."""
    out: list[str] = ["ixb"]
    eliding = False
    for arg in args:
        if arg.startswith("--"):
            eliding = arg in ELIDED
            out.append(arg)
        elif eliding:
            if out[-1] != "…":
                out.append("…")
        else:
            out.append(shlex.quote(shown_path(arg)))
    return " ".join(out)


@dataclass
class Script:
    deployment: Deployment
    clients: dict[str, AgencyClient] = field(default_factory=dict)
    stores: dict[str, MessageStore] = field(default_factory=dict)
    """Each agency's message store: what it receives is kept, as by ``ixb inbox``."""
    failures: list[str] = field(default_factory=list)
    steps: int = 0
    alert_id: str = ""
    """The demo's alert, which the refusals step tries to forward."""
    t0: float = field(default_factory=time.perf_counter)

    def say(self, text: str) -> None:
        elapsed = time.perf_counter() - self.t0
        sys.stdout.write(f"{elapsed:7.2f} s  {text}\n")
        sys.stdout.flush()

    async def cmd(self, agency: str | None, *args: str) -> Ran:
        """``ixb ARGS --json`` in its own process, with ``agency``'s profile."""
        argv = [*args, "--json"]
        if agency is not None:
            argv += ["--profile", str(self.deployment.profile(agency))]
        done = await self.ixb(*argv)
        return Ran(shown_line(argv), done.returncode, done.stdout, done.stderr)

    async def cmd_until(
        self,
        agency: str | None,
        args: Sequence[str],
        done: Callable[[dict[str, Any]], bool],
        timeout: float = UNTIL_S,
    ) -> Ran:
        """:meth:`cmd` again until ``done`` holds for what it printed (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            ran = await self.cmd(agency, *args)
            if (ran.ok and done(ran.json())) or time.monotonic() > deadline:
                return ran
            await asyncio.sleep(0.2)

    async def inbox_until(
        self, agency: str, wanted: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> tuple[Ran, list[dict[str, Any]]]:
        """``ixb inbox`` at ``agency`` until ``count`` new messages ``wanted`` were listed
        (each is listed once: what earlier runs listed is kept)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + UNTIL_S
        while True:
            ran = await self.cmd(agency, "inbox", "--wait", "0.5")
            found += [m for m in ran.json().get("messages", []) if wanted(m)]
            if len(found) >= count or not ran.ok or time.monotonic() > deadline:
                return ran, found

    @staticmethod
    def missing(ran: Ran) -> str:
        """Why a step's ``…_until`` found nothing: the command's error, or the wait."""
        return ran.error if not ran.ok else f"nothing arrived within {UNTIL_S:g} s"

    def show(self, ran: Ran, *outcome: str) -> None:
        """The command line as run, then its outcome (one line, or a few)."""
        self.say(f"  $ {ran.shown}")
        for line in outcome:
            sys.stdout.write(f"{INDENT}{line}\n")
        sys.stdout.flush()

    def expect_ok(self, ran: Ran, what: str) -> bool:
        """Check ``ran`` succeeded; its error line is the failure if not."""
        self.check(ran.ok, f"{what}: {ran.error}")
        return ran.ok

    def check(self, ok: bool, what: str) -> None:
        self.steps += 1
        if not ok:
            self.failures.append(what)
            self.say(f"UNEXPECTED: {what}")

    async def client(self, agency: str) -> AgencyClient:
        if agency not in self.clients:
            await self.connect(agency, self.deployment.profile(agency))
        return self.clients[agency]

    async def connect(self, agency: str, profile_path: Path) -> AgencyClient:
        """Connect ``agency`` (with its previous keys, if any); what it receives is kept in its
        profile's message store, so ``ixb inbox --all`` and ``ixb show`` find it afterwards."""
        profile = load_profile(profile_path)
        identity = load_identity_for(profile, self.deployment.passphrase)
        previous = load_previous_for(profile, self.deployment.passphrase)
        held = [identity, *([previous] if previous else [])]
        store = self.stores[agency] = open_store(profile, held, wall_ms())
        client = await AgencyClient.connect(profile, identity, previous=previous)

        def keep(item: Incoming) -> None:
            at = client.clock()
            store.keep(header=item.header, body=item.body, via=item.hubs, received_at=at)

        client.keep = keep
        self.clients[agency] = client
        return client

    async def disconnect(self, agency: str) -> None:
        """Close ``agency``'s client and its message store."""
        client = self.clients.pop(agency, None)
        if client is not None:
            await client.close()
        store = self.stores.pop(agency, None)
        if store is not None:
            store.close()

    async def disconnect_all(self) -> None:
        for agency in list(self.clients):
            await self.disconnect(agency)

    async def next_message(self, agency: str, type_name: str, timeout: float = 15.0) -> Incoming:
        client = await self.client(agency)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in await client.fetch(timeout=0.5):
                if isinstance(item, Incoming):
                    await item.ack()
                    if item.header.type == type_name:
                        return item
        raise TimeoutError(f"{agency} received no {type_name} within {timeout:g} s")

    async def receipt(self, agency: str, msg_id: bytes, status: ReceiptStatus) -> Receipt | None:
        client = await self.client(agency)
        try:
            return (await client.wait_receipt(msg_id, status, timeout=15)).receipt
        except IxbError:
            return None

    async def send(
        self, sender: str, body: Body, to: list[str], **kw: object
    ) -> tuple[bytes, float]:
        client = await self.client(sender)
        start = time.perf_counter()
        msg_id = await client.send(body, to, **kw)  # type: ignore[arg-type]
        return msg_id, start

    async def ixb(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``ixb ARGS`` as its own process, as the operator or the agency would."""
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ixb", *args],
            capture_output=True,
            text=True,
            env=self.deployment.env(),
            check=False,
            timeout=COMMAND_TIMEOUT_S,
        )

    async def ixb_ok(self, what: str, *args: str) -> str:
        """``ixb ARGS``, checked to succeed; its output (empty if it failed)."""
        done = await self.ixb(*args)
        ok = done.returncode == 0
        self.check(ok, f"{what}: {done.stderr.strip() or done.returncode}")
        return done.stdout if ok else ""


def since_ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.0f} ms"


async def expect_rejection(s: Script, agency: str, msg_id: bytes, code: str, what: str) -> None:
    receipt = await s.receipt(agency, msg_id, ReceiptStatus.REJECTED)
    got = receipt.code if receipt is not None else "no receipt"
    s.say(
        f"       {what}: {got} ({receipt.detail if receipt else ''}) by "
        f"{receipt.by if receipt else '-'}"
    )
    s.check(got == code, f"{what}: expected {code}, got {got}")
