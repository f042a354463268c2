"""What a hub process that takes over needs besides the audit log: a JetStream KV bucket.

The ``AUDIT`` stream carries the log. Two more things decide whether the new
active hub (:mod:`broker.lease`) can route and witness at once, and both
arrive from the peers only now and then:

- each peer's **directory** (its agencies' keys): without it every message to
  that country is refused as an unknown recipient until the peer publishes
  again (hours). Key ``directory.<PEER>``: ``[version, signed bytes]``; the
  taker installs it only after the same verification as a directory from the
  link (:meth:`~broker.control.ControlPlane.load_peer_directories`);
- the largest **checkpoint of each peer's log it witnessed**: without it the
  next checkpoint would be taken on first use, and a peer's fork across the
  takeover would go unseen. Key ``witnessed.<PEER>``:
  ``[size, root, note, at_ms]``, as :meth:`~broker.audit.log.AuditLog.save_witnessed`
  stores it;
- the operator's **registry** (agencies approved, revoked, their key updates,
  liaison users) and the last change applied: without it a revocation made
  on the active host would be undone by the next directory the taker signs.
  Key ``registry``: ``[applied change, SQLite image]``; the taker replaces
  its own registry with it (keeping its old file beside it), and its own
  **directory** (key ``directory.<CC>``) so its next version follows the
  last one the peers hold.

The active hub writes what changed every second (with its checkpoints); a
standby reads the bucket when it takes over. Both live in the country's own
JetStream (the hub's account: no agency may write there), replicated like
its streams. What this does not carry is in docs/operations/cluster.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
import nats.js.errors
import structlog
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from transport.connect import StateLog
from transport.streams import key_value_bucket

log = structlog.get_logger("ixb.hub")

BUCKET = "ixb_hub_state"
CALL_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Directory:
    version: int
    signed: bytes


@dataclass(frozen=True, slots=True)
class Witnessed:
    size: int
    root: bytes
    note: bytes
    at_ms: int


@dataclass(frozen=True, slots=True)
class Registry:
    applied: int
    """The last operator change the active process applied (``registry_seq``)."""
    image: bytes
    """``registry.sqlite`` as one SQLite image (:meth:`broker.registry.Registry.snapshot`)."""


@dataclass(frozen=True, slots=True)
class Shared:
    directories: dict[str, Directory]
    witnessed: dict[str, Witnessed]
    registry: Registry | None = None


def encode(shared: Shared) -> dict[str, bytes]:
    """The bucket's keys and values for ``shared``."""
    out = {
        f"directory.{c}": msgspec.msgpack.encode((d.version, d.signed))
        for c, d in shared.directories.items()
    }
    out |= {
        f"witnessed.{c}": msgspec.msgpack.encode((w.size, w.root, w.note, w.at_ms))
        for c, w in shared.witnessed.items()
    }
    if shared.registry is not None:
        out["registry"] = msgspec.msgpack.encode((shared.registry.applied, shared.registry.image))
    return out


def decode(items: Mapping[str, bytes]) -> Shared:
    """What the bucket holds; a key or value of another shape is left out."""
    directories: dict[str, Directory] = {}
    witnessed: dict[str, Witnessed] = {}
    registry: Registry | None = None
    for key, value in items.items():
        kind, _, country = key.partition(".")
        try:
            fields = msgspec.msgpack.decode(value)
            if kind == "directory":
                version, signed = fields
                if isinstance(version, int) and isinstance(signed, bytes):
                    directories[country] = Directory(version, signed)
            elif kind == "witnessed":
                size, root, note, at_ms = fields
                if all(isinstance(x, int) for x in (size, at_ms)) and all(
                    isinstance(x, bytes) for x in (root, note)
                ):
                    witnessed[country] = Witnessed(size, root, note, at_ms)
            elif kind == "registry":
                applied, image = fields
                if isinstance(applied, int) and isinstance(image, bytes):
                    registry = Registry(applied, image)
        except (msgspec.DecodeError, TypeError, ValueError):
            continue
    return Shared(directories, witnessed, registry)


@dataclass(eq=False)
class SharedState:
    js: JetStreamContext
    replicas: int = 1
    _kv: KeyValue | None = field(default=None, init=False)
    _written: dict[str, bytes] = field(default_factory=dict, init=False)
    failures: StateLog = field(
        default_factory=lambda: StateLog("shared_state_write_failed", logger=log), init=False
    )

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await key_value_bucket(
                self.js,
                BUCKET,
                replicas=self.replicas,
                description="what a hub process taking over needs besides its log",
            )
        return self._kv

    async def write(self, shared: Shared) -> int:
        """Put what changed since the last call; how many keys were written."""
        kv = await self._bucket()
        written = 0
        for key, value in encode(shared).items():
            if self._written.get(key) == value:
                continue
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await kv.put(key, value)
            self._written[key] = value
            written += 1
        return written

    async def read(self) -> Shared:
        kv = await self._bucket()
        items: dict[str, bytes] = {}
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return Shared({}, {})
        for key in keys:
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            if entry.value is not None:
                items[key] = entry.value
        return decode(items)
