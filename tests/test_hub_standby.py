"""Two hub processes for one country: one active, one standing by, over real servers.

THA's hub runs as two ``ixb hub run`` processes (``[hub] instance`` a and b, each with
its own state directory). The standby follows the ``AUDIT`` stream; when the active one
is SIGKILLed it takes the lease, routes what waited in the ingress and what comes after,
refuses a replay of what the dead process accepted, and signs checkpoints MYS witnesses
without alarm. The killed process comes back as a standby and takes over again when the
other stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agency_client.sdk import AgencyClient, Envelope, Incoming
from broker.audit.log import AuditLog
from broker.audit.search import AuditQuery
from broker.audit.shipping import UNKNOWN_ACCEPTANCES_META
from broker.auditing import to_record
from broker.lease import LEASE_TTL_S
from broker.natsd import free_ports
from broker.plan import Publish, ReceiptStatement, receipt_publish, seal_receipts
from broker.store import HubStore
from protocols import subjects
from protocols.audit import AuditEvent, make_entry
from protocols.checkpoint import log_origin
from protocols.envelope import decode_envelope
from protocols.examples import example_bodies
from protocols.identifiers import Principal, format_message_id
from protocols.messages import Receipt, ReceiptStatus
from tests.federation import PASSPHRASE, Federation, run_ixb, running_federation
from transport.clock import wall_ms

SENDER, RECIPIENT = "THA/DSI-ATHD", "MYS/RMP-ATIPSOM"
Health = dict[str, object]


@dataclass
class Instance:
    """One ``ixb hub run`` process of THA."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    state: Path
    log: Path

    async def health(self) -> Health | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                http.get(f"http://127.0.0.1:{self.port}/healthz") as resp,
            ):
                body: Health = await resp.json()
                return body
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def until(self, check: Callable[[Health], bool], timeout: float, what: str) -> float:
        start = time.monotonic()
        while True:
            if self.proc.returncode is not None:
                raise AssertionError(f"hub {self.name} exited: {self.log.read_text()[-3000:]}")
            body = await self.health()
            if body is not None and check(body):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"hub {self.name}: not {what} after {timeout:g} s: {body}")
            await asyncio.sleep(0.1)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), 30)


def active(h: Health) -> bool:
    return h["role"] == "active" and bool(h["ready"])


def standby(h: Health) -> bool:
    return h["role"] == "standby" and bool(h["nats"])


@contextlib.asynccontextmanager
async def instance(
    federation: Federation, name: str, base: Path, *, own_state: bool
) -> AsyncIterator[Instance]:
    config = federation.deployment.hub_config("THA")
    port = free_ports()("127.0.0.1")
    env = {
        **os.environ,
        "IXB_PASSPHRASE": PASSPHRASE,
        "IXB_HUB__HUB__INSTANCE": name,
        "IXB_HUB__HTTP__PORT": str(port),
    }
    state = base / "state" / "THA"
    if own_state:  # another host: its own state and trust directories
        state = base / name / "state"
        env["IXB_HUB__HUB__STATE_DIR"] = str(state)
        env["IXB_HUB__HUB__TRUST_DIR"] = str(base / name / "trust")
    log = base / f"hub-{name}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ixb",
            "hub",
            "run",
            "--config",
            str(config),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    hub = Instance(name, proc, port, state, log)
    try:
        yield hub
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def delivered(client: AgencyClient, ids: list[bytes], timeout: float = 30) -> None:
    for msg_id in ids:
        await client.wait_receipt(msg_id, ReceiptStatus.DELIVERED, timeout=timeout)


async def received(client: AgencyClient, seconds: float) -> list[str]:
    """Every message id fetched from the inbox in ``seconds``, repeats included."""
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for item in await client.fetch(timeout=0.3):
            assert isinstance(item, Incoming), f"refused: {item}"
            await item.ack()
            if not isinstance(item.body, Receipt):
                got.append(format_message_id(item.header.id))
    return got


class Sender:
    """THA/DSI-ATHD, keeping the bytes of every envelope it sends (to replay one)."""

    def __init__(self, client: AgencyClient) -> None:
        self.client = client
        self.sent: list[bytes] = []
        publish = client._publish

        async def keep(data: bytes, env: Envelope) -> bool:
            self.sent.append(data)
            return await publish(data, env)

        client._publish = keep  # type: ignore[method-assign]
        self.alert = example_bodies(client.clock())["alert"]

    async def alerts(self, count: int) -> list[bytes]:
        return [await self.client.send(self.alert, [RECIPIENT]) for _ in range(count)]

    async def replay_first(self, msg_id: bytes) -> str | None:
        """The first envelope sent (``msg_id``), again, as a new stream message: the code of
        its rejection."""
        await self.client.js.publish(
            subjects.ingress(self.client.principal),
            self.sent[0],
            headers={"Nats-Msg-Id": "replayed-after-the-takeover"},
        )
        refused = await self.client.wait_receipt(msg_id, ReceiptStatus.REJECTED, timeout=30)
        return refused.receipt.code


def copied_of(health: Health) -> int:
    """The leaves a process knows the AUDIT stream holds (0 while it has not read it)."""
    value = health.get("audit_copied")
    return value if isinstance(value, int) else 0


async def copied(hub: Instance) -> int:
    size = (await hub.health() or {}).get("audit_copied")
    assert isinstance(size, int) and size > 0, size
    return size


async def witnessed_by_mys(federation: Federation, size: int) -> None:
    """Until MYS witnessed a THA checkpoint of ``size`` leaves or more."""
    mys = federation.hubs["MYS"].hub
    deadline = time.monotonic() + 30
    while (w := mys.audit_log.last_witnessed(log_origin("THA"))) is None or w[0] < size:
        assert time.monotonic() < deadline, f"MYS witnessed {w}, THA copied {size}"
        await asyncio.sleep(0.2)
    assert mys.audit_log.alarms() == []


IMMIGRATION = Principal("THA", "IMMIGRATION")


def _mys_sees_revoked(federation: Federation) -> int | None:
    """The version of THA's directory MYS holds, if it lists THA/IMMIGRATION revoked."""
    keys = federation.hubs["MYS"].hub.keys
    version = keys.version("THA")
    if version is None or IMMIGRATION not in keys.agencies("THA"):
        return None
    return version if keys.entry(IMMIGRATION).revoked is not None else None


async def revoke_immigration(federation: Federation) -> int:
    """Revoke THA/IMMIGRATION on the active process's host; the THA directory version in
    which MYS first sees it revoked."""
    config = str(federation.deployment.hub_config("THA"))
    done = await run_ixb(
        "hub", "agency", "revoke", "--config", config, "--reason", "left", str(IMMIGRATION)
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 20
    while (version := _mys_sees_revoked(federation)) is None:
        assert time.monotonic() < deadline, "MYS never saw the revocation"
        await asyncio.sleep(0.1)
    return version


async def revoked_at_mys(federation: Federation, *, newer_than: int) -> None:
    """Until MYS holds a THA directory newer than ``newer_than`` (signed by the process that
    took over), which must still list THA/IMMIGRATION revoked."""
    keys = federation.hubs["MYS"].hub.keys
    deadline = time.monotonic() + 20
    while (keys.version("THA") or 0) <= newer_than:
        assert time.monotonic() < deadline, f"MYS holds THA v{keys.version('THA')}"
        await asyncio.sleep(0.1)
    assert _mys_sees_revoked(federation) is not None


def _append_uncopied(state: Path) -> tuple[int, bytes]:
    """A leaf appended to a stopped hub's log and never copied: (its index, its bytes)."""
    log = AuditLog(state / "audit.sqlite")
    try:
        entry = make_entry("THA/HUB", wall_ms(), AuditEvent.HUB_STOPPED, detail="never copied")
        (index,) = log.append([to_record(entry)])
        return index, log.leaf(index)
    finally:
        log.close()


def _kept_aside(state: Path, unshipped: tuple[int, bytes]) -> None:
    """One diverged log set aside beside the new one, the uncopied leaf still in it."""
    aside = [
        p for p in state.glob("audit.sqlite.diverged-*") if not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(aside) == 1, aside
    kept = AuditLog(aside[0])
    try:
        assert kept.leaf(unshipped[0]) == unshipped[1]  # nothing deleted
    finally:
        kept.close()


def _looks_up_acceptances_in_its_log(state: Path) -> None:
    """The process that took over knows its store lacks what the other one decided."""
    store = HubStore(state / "hub.sqlite")
    try:
        assert store.meta(UNKNOWN_ACCEPTANCES_META) is not None
    finally:
        store.close()


async def test_a_standby_hub_takes_over_from_a_killed_one_and_hands_back(tmp_path: Path) -> None:
    base = tmp_path / "fed"
    async with running_federation(base) as federation:
        sender = Sender(await federation.client(SENDER))
        recipient = await federation.client(RECIPIENT)
        await federation.stop_hub("THA")  # its two processes take its place
        async with instance(federation, "a", base, own_state=False) as a:
            await a.until(active, 60, "active")
            async with instance(federation, "b", base, own_state=True) as b:
                await b.until(standby, 60, "standing by")
                before = await sender.alerts(4)
                await delivered(sender.client, before)
                # an agency revoked through the active process's registry (its host)
                revoked_in = await revoke_immigration(federation)
                size = await copied(a)
                # the standby follows what the active one copies into the AUDIT stream
                await b.until(lambda h: copied_of(h) >= size, 20, "following")

                await a.stop(signal.SIGKILL)
                during = await sender.alerts(4)  # they wait in THA's ingress
                took = await b.until(active, LEASE_TTL_S + 20, "active")
                assert took <= LEASE_TTL_S + 10
                after = await sender.alerts(2)
                await delivered(sender.client, during + after)
                everything = [format_message_id(m) for m in before + during + after]
                assert sorted(await received(recipient, 5)) == sorted(everything)  # each once

                # what the killed process accepted is a replay to the new one (from its log)
                assert await sender.replay_first(before[0]) == "ixb.E_REPLAY"
                _looks_up_acceptances_in_its_log(b.state)
                # the revocation made on a's host holds under b: b's next directory keeps it
                await revoked_at_mys(federation, newer_than=revoked_in)
                # MYS witnesses the new process's checkpoints: one log that grew, no alarm
                await witnessed_by_mys(federation, await copied(b))

                # the killed process comes back. Had it died between appending a leaf and
                # copying it, its log would differ from the stream where b wrote since:
                # it sets its file aside (kept) and builds its log again from the stream
                unshipped = _append_uncopied(a.state)
                async with instance(federation, "a", base, own_state=False) as a2:
                    await a2.until(standby, 60, "standing by")
                    _kept_aside(a.state, unshipped)
                    last = await copied(b)
                    await a2.until(lambda h: copied_of(h) >= last, 20, "following")
                    # stopped cleanly, b gives the lease up: a takes over at once
                    assert await b.stop() == 0
                    assert await a2.until(active, 15, "active") < LEASE_TTL_S
                    final = await sender.alerts(1)
                    await delivered(sender.client, final)
                    assert await received(recipient, 3) == [format_message_id(final[0])]
                    await witnessed_by_mys(federation, await copied(a2))
                    assert await a2.stop() == 0

        for state in (base / "state" / "THA", base / "b" / "state"):
            log = AuditLog(state / "audit.sqlite")
            try:
                log.verify_storage()
            finally:
                log.close()


async def test_a_receipt_already_sent_under_its_id_is_the_one_recorded(tmp_path: Path) -> None:
    """A receipt sealed again (by a process that took over, or after a restore) goes out
    under the same ``Nats-Msg-Id`` as the one sent before: JetStream keeps the first, and
    the hub learns its bytes, to record that receipt rather than the one dropped."""
    async with running_federation(tmp_path / "fed") as federation:
        hub = federation.hubs["THA"].hub
        entry = make_entry("THA/HUB", wall_ms(), AuditEvent.DELIVERED, msg_id=bytes(16))
        to = subjects.inbox(Principal("THA", "DSI-ATHD"))
        first = Publish(to, b"sealed first", "receipt-dedup-1", frozenset(), entry=entry)
        again = dataclasses.replace(first, data=b"sealed again")
        assert await hub._publish(first) is None
        assert await hub._publish(first) is None  # the same bytes: nothing to learn
        assert await hub._publish(again) == b"sealed first"
        # a publish that records nothing of its own is not read back
        plain = dataclasses.replace(again, entry=None)
        assert await hub._publish(plain) is None

        # receipts a process sent and died before recording: the one taking over finds
        # them in the streams it sent them to, and records each once
        sender = await federation.client(SENDER)
        ids = [await sender.send(example_bodies(0)["alert"], [RECIPIENT]) for _ in range(2)]
        await delivered(sender, ids)
        local = Principal("THA", "DSI-ATHD")
        abroad = Principal("MYS", "RMP-ATIPSOM")
        receipts = []
        for to, status in ((local, ReceiptStatus.ACCEPTED), (abroad, ReceiptStatus.DELIVERED)):
            sealed = seal_receipts(
                [ReceiptStatement(to, status, None, None, tuple(ids), frozenset())],
                identity=hub.identity,
                encryption_key=hub._encryption_key,
                links=frozenset(hub.links),
                now=hub.clock(),
            )
            ((dedup, data),) = sealed.fresh
            await hub._publish(receipt_publish(hub.identity.principal, dedup, data, hub.clock()))
            receipts.append(format_message_id(decode_envelope(data).header.id))
        queries = [AuditQuery(msg_id=r) for r in receipts]
        assert [hub.audit_log.search(q) for q in queries] == [[], []]
        before = hub.audit_log.size
        await hub._receipts_sent_before()
        assert [[e.event for e in hub.audit_log.search(q)] for q in queries] == [
            ["delivered"],
            ["relayed"],
        ]
        assert hub.audit_log.size == before + 2  # the receipts recorded before: not again
        await hub._receipts_sent_before()
        assert hub.audit_log.size == before + 2
