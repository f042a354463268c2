"""One hub worker on one core, without NATS: what a hub does per message, and its crypto floor.

A real :class:`broker.hub.Hub` (its HubStore and AuditLog in a temporary
directory, configured by ``create_deployment`` as for the demo, rate limit
raised as in :mod:`bench.federation`) is built but not run; its NATS
publishes and acks are replaced by no-ops. Per 1 KiB alert from THA/DSI-ATHD
to MYS/RMP-ATIPSOM, three cuts, each on fresh envelopes:

- ``pipeline``: ``Pipeline.from_local`` (decode, verify the sender, policy,
  replay record, countersign), a fetched batch of 64 per store transaction
  as the hub decides them;
- ``worker``: ``Settler.local`` on fetched batches of 64 (a hub under
  load): the pipeline, the routing plan, the hub-signed receipts to the
  sender (one per statement for the batch, sealed and audited), one durable
  audit commit (the store synced beside it), then one durable store commit
  (the routed marks) per batch, the acks, metrics and one structured log
  line per message. This is the hub figure;
- ``worker_single``: the same, one message per batch (an idle hub: every
  message pays its own commits and receipts).

Logging is configured as ``ixb hub run`` does (JSON lines), written to /dev/null.
The crypto floor is one Ed25519 verify plus one sign over a 32-byte digest.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import logging
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

import nacl.bindings
import structlog
from nats.aio.msg import Msg

from bench.common import alert_1k
from bench.federation import PASSPHRASE, POLICY_ENV, make_deployment
from broker.cli import load_hub_parts
from broker.config import load_config
from broker.hub import Hub
from broker.pipeline import Accepted
from broker.plan import Publish
from protocols import subjects
from protocols.envelope import seal_envelope
from protocols.identifiers import hub_of, parse_agency
from protocols.keys import Identity
from protocols.limits import MS_PER_DAY

MESSAGES = 2_000
SINGLE_MESSAGES = 500
BATCH = 64  # broker.hub.FETCH_BATCH: what a loaded hub fetches at once
MAX_SECONDS = 10.0
FLOOR_SECONDS = 2.0
PROFILE_MESSAGES = 600
PROFILE_LINES = 25
SENDER = "THA/DSI-ATHD"
RECIPIENT = "MYS/RMP-ATIPSOM"


class OfflineHub(Hub):
    """A hub whose NATS publishes succeed without a server (everything else is the real code)."""

    async def _publish(self, p: Publish) -> None:
        return None


class _NoClient:
    """Where an :class:`OfflineMsg` sends its ack: nowhere."""

    async def publish(self, *_args: object, **_kwargs: object) -> None:
        return None


def offline_msg(data: bytes, subject: str, seq: int) -> Msg:
    """A JetStream message as a fetch hands it over (first delivery), acked into the void."""
    reply = f"$JS.ACK.INGRESS.hub.1.{seq}.{seq}.{time.time_ns()}.0"
    return Msg(_client=cast(Any, _NoClient()), subject=subject, reply=reply, data=data)


def _configure_logging(sink: TextIO) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sink),
        cache_logger_on_first_use=False,
    )


def crypto_floor() -> float:
    """Verify + sign over a digest, per second, on one core."""
    sender = Identity.generate(parse_agency(SENDER))
    hub = Identity.generate(hub_of("THA"))
    digest = os.urandom(32)
    signed = sender.signing.sign(digest) + digest
    public = sender.signing.public
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < FLOOR_SECONDS and n < 200_000:
        nacl.bindings.crypto_sign_open(signed, public)
        hub.signing.sign(digest)
        n += 1
    return n / (time.perf_counter() - start)


class Setup:
    def __init__(self, base: Path) -> None:
        os.environ.setdefault("IXB_PASSPHRASE", PASSPHRASE)
        self.deployment = make_deployment(base)
        self.hubs = {c: self._hub(c) for c in ("THA", "MYS")}

    def _hub(self, country: str) -> OfflineHub:
        config = load_config(self.deployment.hub_config(country), env=POLICY_ENV)
        identity, trust, agencies = load_hub_parts(config)
        return OfflineHub(config, identity, trust, agencies)

    async def start(self) -> None:
        for hub in self.hubs.values():
            await hub.publish_own_directory()
        tha, mys = self.hubs["THA"], self.hubs["MYS"]
        tha.keys.update("MYS", mys.store.directories()["MYS"], tha.clock())
        mys.keys.update("THA", tha.store.directories()["THA"], mys.clock())
        from agency_client.profile import load_profile  # noqa: PLC0415 - bench-only import
        from agency_client.sdk import load_identity_for  # noqa: PLC0415

        profile = load_profile(self.deployment.profile(SENDER))
        self.sender = load_identity_for(profile, PASSPHRASE)
        self.recipient = tha.keys.encryption_key(parse_agency(RECIPIENT), tha.clock())

    def envelopes(self, n: int, offset: int) -> list[bytes]:
        now = int(time.time() * 1000)
        return [
            seal_envelope(
                sender=self.sender,
                recipients=[self.recipient],
                body=alert_1k(offset + i),
                now_ms=now,
                ttl_ms=MS_PER_DAY,
            )
            for i in range(n)
        ]

    def close(self) -> None:
        for hub in self.hubs.values():
            hub.store.close()
            hub.audit_log.close()


async def _measure(
    data: list[bytes], step: Callable[[list[bytes]], object], batch: int
) -> tuple[float, int]:
    n, start = 0, time.perf_counter()
    for i in range(0, len(data), batch):
        result = step(data[i : i + batch])
        if asyncio.iscoroutine(result):
            await result
        n += len(data[i : i + batch])
        if time.perf_counter() - start > MAX_SECONDS:
            break
    return n / (time.perf_counter() - start), n


def _steps(hub: OfflineHub) -> dict[str, Callable[[list[bytes]], object]]:
    publisher = parse_agency(SENDER).name
    subject = subjects.ingress(parse_agency(SENDER))
    seq = iter(range(1, 1 << 40))

    def decide(batch: list[bytes]) -> None:
        with hub.store.transaction(durable=False):
            for data in batch:
                outcome = hub.pipeline.from_local(data, publisher, hub.clock())
                if not isinstance(outcome, Accepted):
                    raise RuntimeError(f"bench envelope rejected: {outcome.error}")  # noqa: TRY004

    async def worker(batch: list[bytes]) -> None:
        await hub.settler.local([offline_msg(d, subject, next(seq)) for d in batch])

    return {"pipeline": decide, "worker": worker}


def profile_top(hub: OfflineHub, data: list[bytes]) -> list[str]:
    worker = _steps(hub)["worker"]

    async def go() -> None:
        for i in range(0, len(data), BATCH):
            await worker(data[i : i + BATCH])  # type: ignore[misc]

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(go())
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(PROFILE_LINES)
    return [line for line in out.getvalue().splitlines() if line.strip()]


async def _run_async(setup: Setup) -> dict[str, object]:
    await setup.start()
    hub = setup.hubs["THA"]
    steps = _steps(hub)
    cuts = {
        "pipeline": (steps["pipeline"], BATCH, MESSAGES),
        "worker": (steps["worker"], BATCH, MESSAGES),
        "worker_single": (steps["worker"], 1, SINGLE_MESSAGES),
    }
    rates: dict[str, float] = {}
    counts: dict[str, int] = {}
    for i, (name, (step, batch, n)) in enumerate(cuts.items()):
        data = setup.envelopes(n, offset=i * MESSAGES)
        rates[name], counts[name] = await _measure(data, step, batch)
    return {
        "hub_msgs_per_s_per_core": round(rates["worker"], 1),
        "hub_pipeline_only_per_s": round(rates["pipeline"], 1),
        "hub_worker_single_per_s": round(rates["worker_single"], 1),
        "hub_batch": BATCH,
        "hub_messages_measured": counts,
    }


def run() -> dict[str, object]:
    with (
        Path(os.devnull).open("w") as sink,
        tempfile.TemporaryDirectory(prefix="ixb-bench-hub-") as tmp,
    ):
        _configure_logging(sink)
        floor = crypto_floor()
        setup = Setup(Path(tmp))
        try:
            results = asyncio.run(_run_async(setup))
            profile = profile_top(
                setup.hubs["THA"], setup.envelopes(PROFILE_MESSAGES, offset=10 * MESSAGES)
            )
        finally:
            setup.close()
    hub_rate = results["hub_msgs_per_s_per_core"]
    assert isinstance(hub_rate, float)
    return {
        "crypto_floor_msgs_per_s": round(floor, 1),
        **results,
        "hub_ratio": round(hub_rate / floor, 4),
        "hub_profile_top": profile,
    }


if __name__ == "__main__":
    r = run()
    for line in cast(list[str], r.pop("hub_profile_top")):
        print(line)
    print(r)
