"""A hub process whose disk is full: it stays up, says so, holds every message, then recovers.

The hub runs as in production (``python -m ixb hub run``, its own process,
logs on a pipe as under journald); ``RLIMIT_FSIZE`` set to 0 on that process
makes every file write of it fail with ``EFBIG`` (Python ignores
``SIGXFSZ``), which is what a full disk does to its SQLite files. The
nats-servers, the other hub and the agencies are not limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, Incoming, load_identity_for
from broker.audit.log import AuditLog
from broker.audit.search import AuditQuery
from broker.natsd import start_federation
from ixb.deployment import Deployment, create_deployment
from protocols.examples import example_bodies
from protocols.identifiers import format_message_id
from protocols.keys import KdfProfile
from protocols.roles import Role
from tests.federation import PASSPHRASE
from tests.nats_fixtures import eventually
from tests.test_delivery import receive
from transport import streams
from transport.connect import connect

SENDER = "THA/DSI-ATHD"
RECEIVER = "MYS/RMP-ATIPSOM"
AGENCIES = {SENDER: [Role.TRAFFICKING_UNIT], RECEIVER: [Role.TRAFFICKING_UNIT]}
SENT_WHILE_FULL = 5


@dataclass
class HubProcess:
    """``ixb hub run`` for one country, its JSON log lines read from a pipe."""

    country: str
    proc: subprocess.Popen[bytes]
    url: str
    lines: list[dict[str, object]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, deployment: Deployment, country: str) -> HubProcess:
        config = str(deployment.hub_config(country))
        proc = subprocess.Popen(
            [sys.executable, "-m", "ixb", "hub", "run", "--config", config],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**deployment.env(), "IXB_PASSPHRASE": PASSPHRASE},
        )
        hub = cls(country, proc, deployment.hub_url(country))
        hub.reader = threading.Thread(target=hub._drain, daemon=True)
        hub.reader.start()
        return hub

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            with contextlib.suppress(ValueError):  # anything but a log line: kept in raw
                self.lines.append(json.loads(line))

    def events(self, *names: str) -> list[dict[str, object]]:
        return [e for e in self.lines if e.get("event") in names]

    async def health(self) -> tuple[int, dict[str, object]]:
        return await asyncio.to_thread(_get_health, self.url)

    def limit_file_size(self, soft: int) -> None:
        _soft, hard = resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.reader is not None:
            self.reader.join(timeout=5)  # the pipe ends with the process
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def _get_health(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310 - localhost
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 while not ready: still a health report
        return exc.code, json.loads(exc.read())
    except (OSError, ValueError):
        return 0, {}


@dataclass
class Running:
    deployment: Deployment
    hubs: dict[str, HubProcess]
    clients: list[AgencyClient] = field(default_factory=list)

    async def client(self, agency: str) -> AgencyClient:
        profile = load_profile(self.deployment.profile(agency))
        client = await AgencyClient.connect(profile, load_identity_for(profile, PASSPHRASE))
        self.clients.append(client)
        return client

    async def ready(self, country: str) -> bool:
        hub = self.hubs[country]
        assert hub.proc.poll() is None, b"".join(hub.raw).decode(errors="replace")
        status, health = await hub.health()
        directories = health.get("directories")
        return (
            status == 200
            and health.get("storage") == "ok"
            and isinstance(directories, dict)
            and all(v is not None for v in directories.values())
        )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    deployment = create_deployment(
        tmp_path, AGENCIES, passphrase=PASSPHRASE, kdf=KdfProfile.INTERACTIVE
    )
    async with start_federation(deployment.plan) as _servers:
        hubs = {c: HubProcess.start(deployment, c) for c in deployment.countries}
        fed = Running(deployment, hubs)
        try:
            for country in hubs:
                await eventually(lambda c=country: fed.ready(c), 60, f"hub {country} ready")  # type: ignore[misc]
            yield fed
        finally:
            for client in fed.clients:
                await client.close()
            for hub in hubs.values():
                hub.stop()


async def receive_all(client: AgencyClient, wanted: set[bytes], timeout: float) -> Counter[bytes]:
    """Every message handed over (acked), by id, until all of ``wanted`` came or ``timeout``
    (with nothing wanted: for the whole ``timeout``)."""
    got: Counter[bytes] = Counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (wanted and wanted <= got.keys()):
        for item in await client.fetch(timeout=0.5):
            assert isinstance(item, Incoming), item
            got[item.header.id] += 1
            await item.ack()
    return got


def routing_events(state_dir: Path, msg_id: bytes) -> Counter[str]:
    log = AuditLog(state_dir / "audit.sqlite")
    try:
        log.verify_storage()
        query = AuditQuery(msg_id=format_message_id(msg_id))
        return Counter(e.event for e in log.search(query, limit=100))
    finally:
        log.close()


async def test_a_hub_whose_disk_is_full_holds_every_message_and_delivers_each_once_after(
    running: Running,
) -> None:
    tha = running.hubs["THA"]
    sender = await running.client(SENDER)
    receiver = await running.client(RECEIVER)
    alert = example_bodies(0)["alert"]
    plan = running.deployment.plan
    auth = plan.hub_credentials("THA")
    nc = await connect(
        plan.client_url("THA"),
        auth=auth,
        name="test",
        ca_file=plan.client_ca_file("THA"),
    )
    js = nc.jetstream()
    try:
        warm = await sender.send(alert, [RECEIVER])
        await (await receive(receiver, warm, timeout=30)).ack()

        async def settled() -> bool:
            info = await js.consumer_info(streams.INGRESS_STREAM, streams.HUB_CONSUMER)
            return info.num_pending + info.num_ack_pending == 0

        await eventually(settled, 10, "THA acked the first message")

        tha.limit_file_size(0)  # the disk is full: every write of the hub's files fails
        sent = [await sender.send(alert, [RECEIVER]) for _ in range(SENT_WHILE_FULL)]

        async def failing() -> bool:
            status, health = await tha.health()
            return status == 503 and str(health.get("storage", "")).startswith("failing")

        await eventually(failing, 30, "THA reports its storage failing")
        _status, health = await tha.health()
        assert health["ready"] is False and health["nats"] is True, health
        assert not await receive_all(receiver, set(), timeout=4)  # nothing delivered …
        assert tha.proc.poll() is None  # … the hub is up …
        info = await js.consumer_info(streams.INGRESS_STREAM, streams.HUB_CONSUMER)
        # … and nothing is lost: every message still in the work queue, unacknowledged
        assert info.num_pending + info.num_ack_pending == SENT_WHILE_FULL, info
        assert info.num_redelivered > 0  # tried, naked, tried again
    finally:
        await nc.close()
    failed = tha.events("storage_failed")[0]
    # the first to fail: a batch from the ingress, or a checkpoint MYS sent to witness
    assert failed["writer"] in ("settle", "control"), failed
    assert "disk I/O error" in str(failed["detail"]), failed  # SQLite's word for EFBIG

    started = time.monotonic()
    tha.limit_file_size(resource.RLIM_INFINITY)  # space again: no restart
    got = await receive_all(receiver, set(sent), timeout=60)
    print(f"delivered {SENT_WHILE_FULL} messages {time.monotonic() - started:.1f} s after")
    got.update(await receive_all(receiver, set(), timeout=3))
    assert got == dict.fromkeys(sent, 1)  # each once, none lost
    await eventually(lambda: running.ready("THA"), 30, "THA ready again")
    # one line per change of state: failed, recovered (a write that needed no new page
    # may succeed on a full disk under load, so the spell may be told more than once,
    # but never twice the same state in a row, and it ends recovered)
    changes = tha.events("storage_failed", "storage_recovered")
    events = [e["event"] for e in changes]
    assert events[::2] == ["storage_failed"] * len(events[::2]), changes
    assert events[1::2] == ["storage_recovered"] * len(events[1::2]), changes
    assert events[-1] == "storage_recovered" and len(events) <= 4, changes
    assert tha.stop() == 0
    assert running.hubs["MYS"].stop() == 0
    state = running.deployment.base / "state"
    for msg_id in sent:
        assert routing_events(state / "THA", msg_id) == {"accepted": 1, "relayed": 1}
        assert routing_events(state / "MYS", msg_id) == {"accepted": 1, "delivered": 1}
    assert not any(b"Traceback" in line for line in tha.raw), b"".join(tha.raw)
