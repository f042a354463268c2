"""JetStream layout: stream and consumer names, and the streams a hub creates at startup.

Names are shared by the hub (which creates and reads the streams), the agency
SDK (which reads its ``INBOX`` consumer) and the NATS config (which grants
each agency its own consumer). Everything is created idempotently.

In the country's ``IXB`` account:

- ``INGRESS``: every local agency's ingress subject, a work queue shared by
  the hub workers;
- ``INBOX``: every local agency's inbox, kept until the agency has fetched
  and acknowledged it, with one durable pull consumer per agency;
- ``AUDIT``: the hub's audit leaves in batches, kept for ever: a lost or
  restored audit log is rebuilt from it.

In each link account ``<PEER>_LINK``:

- ``OUT_<PEER>``: what this hub sends to ``PEER`` (``ixb.<CC>.xb.<PEER>``);
- ``IN_<PEER>``: sources the peer's ``OUT_<CC>`` across the leaf connection
  from the peer's JetStream domain, with a durable pull consumer ``HUB``.

Store-and-forward between countries is JetStream sourcing: no retry loop of
our own. De-duplication is by ``Nats-Msg-Id`` within each stream's window.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Iterable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    ExternalStream,
    KeyValueConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
    StreamSource,
)
from nats.js.errors import (
    APIError,
    BadRequestError,
    BucketNotFoundError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue

from protocols import subjects
from protocols.identifiers import Principal, check_country

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, NatsError, JetStreamError)
"""What a NATS or JetStream call may raise when the server is away, slow or refusing."""
BUCKET_TIMEOUT_S = 4.0

LEADERLESS_RETRY_S = 20.0
"""How long a publish is retried (same ``Nats-Msg-Id``) while the stream has no leader:
a node of a clustered country died and its streams elect new leaders (4-8 s measured,
and sourcing across a leaf resumes ~10 s after the kill)."""
LEADERLESS_PAUSE_S = 0.25
PUBLISH_ATTEMPT_S = 2.0
"""One attempt of :func:`publish_within`."""
_IN_PROCESS = 10158
"""JetStream's "duplicate message id is in process": a retry overtook its stalled original."""


def no_leader(exc: BaseException) -> bool:
    """Whether JetStream refused for want of a stream leader (retry soon, same id).

    nats-py reports a leaderless stream as ``NoStreamResponseError`` at once, the
    same error as a subject with no stream: a caller retries within a deadline.
    """
    if isinstance(exc, NoStreamResponseError | ServiceUnavailableError):
        return True
    return isinstance(exc, APIError) and exc.err_code == _IN_PROCESS


async def publish_within(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    *,
    headers: dict[str, str],
    timeout: float,
) -> PubAck:
    """A JetStream publish that waits out a stream leader's election within ``timeout``
    seconds in all (same headers, so the same ``Nats-Msg-Id``: stored once); raises the
    last refusal, or ``TimeoutError``, when the time is up.

    Each attempt waits at most :data:`PUBLISH_ATTEMPT_S`: a publish routed to a node that
    just died is never answered, and waiting for it would use up the whole time."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no stream leader for {subject} within {timeout:g} s")
        try:
            return await js.publish(
                subject, data, headers=headers, timeout=min(left, PUBLISH_ATTEMPT_S)
            )
        except (NatsError, TimeoutError) as exc:
            leaderless = no_leader(exc) or isinstance(exc, TimeoutError | NatsTimeoutError)
            if not leaderless or deadline - time.monotonic() < LEADERLESS_PAUSE_S:
                raise
            await asyncio.sleep(LEADERLESS_PAUSE_S)


INGRESS_STREAM = "INGRESS"
INBOX_STREAM = "INBOX"
AUDIT_STREAM = "AUDIT"
HUB_CONSUMER = "HUB"

DUPLICATE_WINDOW_S = 10 * 60.0
"""De-duplication window: a publish retried with the same Nats-Msg-Id within it is stored once."""

INBOX_ACK_WAIT_S = 5.0
HUB_ACK_WAIT_S = 5.0
"""How long a delivered, unacknowledged message waits before JetStream redelivers it.

Short, so that a message pushed into a connection that died (a crashed hub
worker, an agency process killed mid-work) comes back within seconds. Work
that legitimately takes longer keeps its messages with ``in_progress()``
every :data:`KEEPALIVE_S` (:func:`transport.fetch.keep_in_progress`): a hub
batch waiting for its turn or its disks, a message the agency application
holds. Consumers created with another value are updated at startup."""
KEEPALIVE_S = 1.5
"""How often work in progress tells JetStream so: well within both ack waits."""
MAX_AGE_S = 31 * 24 * 3600.0
"""How long an envelope is kept at most: the protocol's longest envelope lifetime."""
LINK_STREAM_MAX_BYTES = 256 * 1024 * 1024
"""Cap of each link stream, within the link account's ``max_file``: when full,
publishing is refused (discard new), never silently dropped."""

SOURCE_IDLE_NS = 3_000_000_000
"""A source silent for longer than this is considered stalled (it heartbeats every second)."""

_STREAM_NAME_IN_USE = 10058  # JSStreamNameExistErr: same name, other config


def out_stream(peer: str) -> str:
    return f"OUT_{check_country(peer)}"


def in_stream(peer: str) -> str:
    return f"IN_{check_country(peer)}"


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    """Create the stream, or bring an existing one to ``config``."""
    try:
        return await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise
    return await js.update_stream(config)


def file_stream(name: str, **config: Any) -> StreamConfig:
    """A file-backed stream de-duplicating by ``Nats-Msg-Id`` within the window."""
    return StreamConfig(
        name=name, storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW_S, **config
    )


def kept_stream(name: str, **config: Any) -> StreamConfig:
    """A stream that keeps each message for the protocol's longest envelope lifetime."""
    return file_stream(name, retention=RetentionPolicy.LIMITS, max_age=MAX_AGE_S, **config)


def durable_consumer(name: str, ack_wait: float, **config: Any) -> ConsumerConfig:
    """A durable pull consumer from the start, explicit acks, redelivered until acked."""
    return ConsumerConfig(
        name=name,
        durable_name=name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=-1,
        **config,
    )


async def ensure_country_streams(
    js: JetStreamContext, country: str, agencies: Iterable[str], *, replicas: int = 1
) -> None:
    """``INGRESS``, ``INBOX`` with each agency's inbox consumer, and ``AUDIT``, in ``IXB``.

    ``replicas``: copies of each stream on the nodes of a clustered country
    (3: any one node can be lost); consumers follow their stream's.
    """
    for config in (
        file_stream(
            INGRESS_STREAM,
            subjects=[subjects.ingress_all(country)],
            retention=RetentionPolicy.WORK_QUEUE,
            num_replicas=replicas,
        ),
        kept_stream(INBOX_STREAM, subjects=[subjects.inbox_all(country)], num_replicas=replicas),
        # the audit log's leaves, kept for ever (broker.audit.shipping): what a lost or
        # restored audit log is rebuilt from (``ixb audit rebuild``)
        file_stream(
            AUDIT_STREAM,
            subjects=[subjects.audit_log(country)],
            retention=RetentionPolicy.LIMITS,
            num_replicas=replicas,
        ),
    ):
        await ensure_stream(js, config)
    for name in agencies:
        await js.add_consumer(
            INBOX_STREAM,
            durable_consumer(
                name, INBOX_ACK_WAIT_S, filter_subject=subjects.inbox(Principal(country, name))
            ),
        )


async def ensure_link_streams(
    js: JetStreamContext, country: str, peer: str, *, replicas: int = 1
) -> None:
    """``OUT_<peer>``, ``IN_<peer>`` and its ``HUB`` consumer, in ``<peer>_LINK``."""
    # when full, publishing is refused (discard new), never silently dropped
    capped = {
        "max_bytes": LINK_STREAM_MAX_BYTES,
        "discard": DiscardPolicy.NEW,
        "num_replicas": replicas,
    }
    await ensure_stream(
        js,
        kept_stream(out_stream(peer), subjects=[subjects.cross_border(country, peer)], **capped),
    )
    source = StreamSource(
        name=out_stream(country),
        external=ExternalStream(api=subjects.js_api(peer), deliver=subjects.deliver(peer, country)),
    )
    await ensure_stream(js, kept_stream(in_stream(peer), sources=[source], **capped))
    await js.add_consumer(in_stream(peer), durable_consumer(HUB_CONSUMER, HUB_ACK_WAIT_S))


async def source_active(js: JetStreamContext, peer: str) -> bool:
    """Whether ``IN_<peer>`` has heard from its source recently."""
    info = await js.stream_info(in_stream(peer))
    actives = [source.active for source in info.sources or ()]
    return bool(actives) and all(a is not None and 0 <= a <= SOURCE_IDLE_NS for a in actives)


async def peer_reachable(nc: NatsClient, peer: str, timeout: float = 1.0) -> bool:
    """Whether the peer's JetStream answers across the leaf connection."""
    try:
        await nc.request(f"{subjects.js_api(peer)}.INFO", b"", timeout=timeout)
    except (NoRespondersError, NatsTimeoutError):
        return False
    return True


async def resume_link_source(nc: NatsClient, peer: str) -> bool:
    """Restart ``IN_<peer>``'s source if it is idle while the peer answers.

    Why: when a server starts, its streams ask for their source consumers
    before the leaf connection is up; that request waits 30 s for an answer
    and then backs off 10 s (nats-server ``srcConsumerWaitTime`` and
    ``calculateRetryBackoff``), so a restarted destination receives its
    backlog only after about 40 s. Removing and re-adding the source starts
    it at once; the server resumes after the last sourced sequence (found in
    the stream), and the duplicate window absorbs any overlap. Returns
    whether it restarted the source. Call it when the hub (re)connects to a
    link account, and when the link comes back.
    """
    js = nc.jetstream()
    if await source_active(js, peer) or not await peer_reachable(nc, peer):
        return False
    config = (await js.stream_info(in_stream(peer))).config
    sources = config.sources
    await js.update_stream(config.evolve(sources=[]))
    await js.update_stream(config.evolve(sources=sources))
    return True


async def outbound_backlog(nc: NatsClient, country: str, peer: str) -> int | None:
    """Messages in our ``OUT_<peer>`` that the peer's ``IN_<country>`` has not sourced yet.

    Asked of the peer's JetStream across the leaf (stream info is not among
    the denied API calls); ``None`` while the peer does not answer.
    """
    subject = f"{subjects.js_api(peer)}.STREAM.INFO.{in_stream(country)}"
    try:
        reply = await nc.request(subject, b"", timeout=1.0)
    except (NoRespondersError, NatsTimeoutError):
        return None
    try:
        info = json.loads(reply.data)
        lags = [int(s.get("lag", 0)) for s in info.get("sources", [])]
    except (ValueError, TypeError, AttributeError):
        return None
    return sum(lags) if lags else None


async def key_value_bucket(
    js: JetStreamContext,
    bucket: str,
    *,
    replicas: int,
    description: str,
    ttl: float | None = None,
) -> KeyValue:
    """A KV bucket of this account (created when missing: file storage, one value a key,
    ``ttl`` the age at which a key lapses)."""
    async with asyncio.timeout(BUCKET_TIMEOUT_S):
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    ttl=ttl,
                    storage=StorageType.FILE,
                    replicas=replicas,
                    description=description,
                )
            )


READ_SINCE_BATCH = 256
READ_SINCE_WAIT_S = 0.5


async def read_since(
    js: JetStreamContext, stream: str, subject: str, since_ms: int, *, limit: int
) -> list[bytes]:
    """The payloads ``stream`` stored on ``subject`` from ``since_ms`` (wall clock) on, at
    most ``limit``, through a consumer of its own that acks nothing and goes away."""
    start = datetime.datetime.fromtimestamp(since_ms / 1000, tz=datetime.UTC)
    psub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
        ),
    )
    out: list[bytes] = []
    try:
        while len(out) < limit:
            try:
                got = await psub.fetch(min(READ_SINCE_BATCH, limit - len(out)), READ_SINCE_WAIT_S)
            except NatsTimeoutError:
                break
            out += [m.data for m in got]
            if not got:
                break
    finally:
        await psub.unsubscribe()
    return out
