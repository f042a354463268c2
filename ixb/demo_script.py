"""What every step of ``ixb demo`` shares: the timeline, the checks, the agencies' clients.

The steps themselves are :mod:`ixb.demo` (the exchange of every message type)
and :mod:`ixb.demo_lifecycle` (enrolment, key rotation and revocation on the
running federation).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from agency_client.msgstore import MessageStore, open_store
from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, Incoming, load_identity_for, load_previous_for
from ixb.deployment import Deployment
from protocols.errors import IxbError
from protocols.messages import Body, Receipt, ReceiptStatus
from transport.clock import wall_ms

COMMAND_TIMEOUT_S = 60.0
"""An ``ixb`` command the demo runs as an operator or an agency would."""


@dataclass
class Script:
    deployment: Deployment
    clients: dict[str, AgencyClient] = field(default_factory=dict)
    stores: dict[str, MessageStore] = field(default_factory=dict)
    """Each agency's message store: what it receives is kept, as by ``ixb inbox``."""
    failures: list[str] = field(default_factory=list)
    steps: int = 0
    """Each country's nats-server, reloaded when an agency's NATS user is added."""
    alert_id: bytes = b""
    t0: float = field(default_factory=time.perf_counter)

    def say(self, text: str) -> None:
        elapsed = time.perf_counter() - self.t0
        sys.stdout.write(f"{elapsed:7.2f} s  {text}\n")
        sys.stdout.flush()

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


T = TypeVar("T")


def body_as(item: Incoming, cls: type[T]) -> T:
    """The body as the expected type, or a clear failure naming what came instead."""
    if not isinstance(item.body, cls):
        raise TypeError(f"expected {cls.__name__}, got {item.header.type}")
    return item.body


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
