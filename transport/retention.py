"""Erasing delivered envelopes from a JetStream stream once their type's retention is over.

A message goes only when it is older than its type's retention
(:mod:`protocols.retention`) *and* its consumer has acknowledged it (the
caller says so, from the consumer's ack floor). It is deleted with the
server's erase (``STREAM.MSG.DELETE`` without ``no_erase``): nats-server
overwrites the stored record with random bytes, so the ciphertext is in no
block file afterwards. The type is read from the envelope's signed header,
which every hub on the path reads anyway: no content is opened.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from protocols import subjects
from protocols.envelope import decode_envelope
from protocols.errors import IxbError
from protocols.limits import MS_PER_DAY
from protocols.retention import Retention
from transport import streams

API_TIMEOUT_S = 2.0
SOURCE_HEADER = "Nats-Stream-Source"
CONTROL_HEADER = "Ixb-Kind"
"""Set on control items (directories, checkpoints) on a link: public, not content."""

Acked = Callable[[str, int], bool]
"""(subject, stream sequence) → whether the message's consumer has acknowledged it."""


@dataclass
class StreamSweep:
    """One stream's pass: erased per type, expired but not yet acknowledged, oldest kept."""

    stream: str
    removed: dict[str, int] = field(default_factory=dict)
    unacked: int = 0
    oldest_kept_ms: int | None = None

    def as_json(self) -> dict[str, object]:
        return {"stream": self.stream, "removed": self.removed, "unacked": self.unacked}


async def erase_expired(
    js: JetStreamContext, stream: str, retention: Retention, now_ms: int, acked: Acked
) -> StreamSweep:
    """Erase from ``stream`` what is past its retention and acknowledged.

    Walks from the stream's first message while messages are older than the
    shortest retention in force: nothing newer can be due. Messages kept for
    longer (another type, not yet acknowledged) are looked at again next time.
    """
    sweep = StreamSweep(stream)
    shortest = retention.shortest_days
    info = await js.stream_info(stream)
    if shortest == 0 or not info.state.messages:
        return sweep
    horizon = now_ms - shortest * MS_PER_DAY
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except NotFoundError:
            continue  # deleted already
        stored_ms = int(msg.time.timestamp() * 1000) if msg.time else now_ms
        if stored_ms >= horizon:
            if sweep.oldest_kept_ms is None:
                sweep.oldest_kept_ms = stored_ms
            break
        type_name = _type_of(msg.headers, msg.data)
        if type_name is None or not retention.expired(type_name, stored_ms, now_ms):
            sweep.oldest_kept_ms = sweep.oldest_kept_ms or stored_ms
            continue
        if not acked(msg.subject or "", seq):
            sweep.unacked += 1
            sweep.oldest_kept_ms = sweep.oldest_kept_ms or stored_ms
            continue
        await erase(js, stream, seq)
        sweep.removed[type_name] = sweep.removed.get(type_name, 0) + 1
    return sweep


async def sourced_upto(nc: NatsClient, country: str, peer: str) -> int:
    """The last ``OUT_<peer>`` sequence the peer's ``IN_<country>`` has stored (0: unknown).

    Sourcing is in order, so everything up to it is at the peer. Read from the
    ``Nats-Stream-Source`` header of the peer's last sourced message, asked of
    the peer's JetStream across the leaf; unknown while the peer does not answer
    or holds none of our messages (then nothing is erased from ``OUT_<peer>``).
    """
    subject = f"{subjects.js_api(peer)}.STREAM.MSG.GET.{streams.in_stream(country)}"
    request = json.dumps({"last_by_subj": subjects.cross_border(country, peer)}).encode()
    try:
        reply = await nc.request(subject, request, timeout=API_TIMEOUT_S)
        message = json.loads(reply.data).get("message") or {}
        head = base64.b64decode(message.get("hdrs") or "").decode("ascii", "replace")
    except (NoRespondersError, NatsTimeoutError, ValueError, AttributeError):
        return 0
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == SOURCE_HEADER.lower():
            fields = value.split()
            if len(fields) >= 2 and fields[0].split(":")[0] == streams.out_stream(peer):
                return int(fields[1]) if fields[1].isdigit() else 0
    return 0


async def erase(js: JetStreamContext, stream: str, seq: int) -> None:
    """Delete one message with its stored bytes overwritten.

    nats-py sends ``{"seq": N}``: ``no_erase`` absent is false, the server's
    secure erase. A message deleted meanwhile (another pass) is fine.
    """
    try:
        await js.delete_msg(stream, seq)
    except NotFoundError:
        return


def _type_of(headers: dict[str, str] | None, data: bytes | None) -> str | None:
    """The envelope's type from its clear header; None for control items and non-envelopes."""
    if (headers and CONTROL_HEADER in headers) or data is None:
        return None
    try:
        return decode_envelope(data).header.type
    except IxbError:
        return None
