"""The lookup floor's role processes: requester, relay and responder, plain nats-py.

Each runs as ``python -m bench.lookup_floor --role ROLE`` (:mod:`bench.lookup_floor`
starts them): it reads its :class:`RoleSpec` as one JSON line on stdin
(throwaway keys included: they never touch the disk), prints ``ready`` once
subscribed, and when its stdin closes prints its figures as one JSON line.
The requester needs no ``ready``: it runs its open loop and prints its figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.exceptions
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bench.common import PAYLOAD_BYTES, open_loop

QUEUE = "floor"
"""Relays and responders subscribe in a queue group, as the hubs' services do."""
WARMUP_REQUESTS = 20
WARMUP_TIMEOUT_S = 15.0
WARMUP_RETRY_S = 0.05
WARMUP_ID_BASE = 1 << 64
REQUEST_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5
ID_BYTES = 16
SIG_BYTES = 64
"""Ed25519 signature, appended to the message it signs (a chain: each hop signs all before)."""


# --- what each role is told ---------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One connection: a server, its CA, and the nkey seed of the user (throwaway)."""

    url: str
    ca_file: str | None
    seed: str = field(repr=False)


@dataclass(frozen=True)
class RoleSpec:
    """Everything one role process needs, sent as a JSON line on its stdin."""

    role: str  # requester | relay | responder
    name: str
    mode: str
    listen: Link | None = None
    listen_subject: str | None = None
    send: Link | None = None
    send_subject: str | None = None
    sign_seed: str | None = field(default=None, repr=False)
    """Hex Ed25519 seed of this role (crypto and full modes)."""
    upstream_key: str | None = None
    """Hex public key that signed what arrives as a request."""
    downstream_key: str | None = None
    """Hex public key that signed what arrives as an answer."""
    db: str | None = None
    rate: float = 0.0
    seconds: float = 0.0

    def to_line(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def from_line(cls, line: str) -> RoleSpec:
        data: dict[str, Any] = json.loads(line)
        for key in ("listen", "send"):
            if data.get(key) is not None:
                data[key] = Link(**data[key])
        return cls(**data)

    @property
    def crypto(self) -> bool:
        return self.mode in {"crypto", "full"}


# --- inside a role process ----------------------------------------------------


class Signer:
    """Ed25519 sign and verify with libsodium; a message carries its signatures at its end."""

    def __init__(self, seed_hex: str | None) -> None:
        self._sk: bytes | None = None
        if seed_hex is not None:
            _pk, self._sk = nacl.bindings.crypto_sign_seed_keypair(bytes.fromhex(seed_hex))

    def countersign(self, data: bytes) -> bytes:
        """``data`` followed by our signature over all of it."""
        assert self._sk is not None
        return data + nacl.bindings.crypto_sign(data, self._sk)[:SIG_BYTES]

    @staticmethod
    def verify(data: bytes, key_hex: str | None) -> bool:
        """The last signature of ``data`` is ``key_hex``'s over everything before it."""
        if key_hex is None or len(data) < SIG_BYTES:
            return False
        body, sig = data[:-SIG_BYTES], data[-SIG_BYTES:]
        try:
            nacl.bindings.crypto_sign_open(sig + body, bytes.fromhex(key_hex))
        except nacl.exceptions.BadSignatureError:
            return False
        return True


class GroupCommitter:
    """Appends rows to one SQLite file, many per transaction and fsync; callers await theirs.

    One writer thread; while it commits, new appends gather for the next
    commit (group commit). WAL with ``synchronous=FULL``: a commit returns
    once its WAL frames are fsynced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0
        self.rows = 0
        self._pending: list[tuple[tuple[object, ...], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS passes (id BLOB, pass TEXT, at_ms INTEGER,"
            " digest BLOB, signature BLOB)"
        )
        self._db = db

    def _commit(self, rows: list[tuple[object, ...]]) -> None:
        assert self._db is not None
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT INTO passes VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._open)
        self._task = asyncio.create_task(self._run())

    async def append(self, row: tuple[object, ...]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                await loop.run_in_executor(self._thread, self._commit, [r for r, _ in batch])
            except sqlite3.Error as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.commits += 1
            self.rows += len(batch)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._db.close)
        self._thread.shutdown(wait=True)


async def _connect(link: Link, name: str) -> NatsClient:
    tls = None
    if link.ca_file is not None:
        tls = ssl.create_default_context(cafile=link.ca_file)
    return await nats.connect(
        link.url,
        name=name,
        nkeys_seed_str=link.seed,
        tls=tls,
        connect_timeout=CONNECT_TIMEOUT_S,
        max_reconnect_attempts=0,
        allow_reconnect=False,
    )


def _row(data: bytes, which: str) -> tuple[object, ...]:
    return (
        data[:ID_BYTES],
        which,
        time.time_ns() // 1_000_000,
        hashlib.sha256(data).digest(),
        data[-SIG_BYTES:],
    )


class Relay:
    """Stands where a hub stands: per pass, verify, countersign, record durably, pass on."""

    def __init__(self, spec: RoleSpec, out: NatsClient, committer: GroupCommitter | None) -> None:
        self.spec = spec
        self.out = out
        self.committer = committer
        self.signer = Signer(spec.sign_seed)
        self.bad = 0
        self.failed = 0
        self.commit_failed = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def on_request(self, msg: Msg) -> None:
        # one task per lookup: nats-py runs a subscription's callbacks one at a time
        task = asyncio.create_task(self._handle(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _pass(self, data: bytes, key: str | None, which: str) -> bytes | None:
        if not self.spec.crypto:
            return data
        if not Signer.verify(data, key):
            self.bad += 1
            return None
        signed = self.signer.countersign(data)
        if self.committer is not None:
            try:
                await self.committer.append(_row(signed, which))
            except sqlite3.Error:
                self.commit_failed += 1  # not recorded: not passed on (the requester sees it)
                return None
        return signed

    async def _handle(self, msg: Msg) -> None:
        assert self.spec.send_subject is not None
        request = await self._pass(msg.data, self.spec.upstream_key, "request")
        if request is None:
            await msg.respond(b"")
            return
        try:
            reply = await self.out.request(
                self.spec.send_subject, request, timeout=REQUEST_TIMEOUT_S
            )
        except (TimeoutError, nats.errors.Error):
            self.failed += 1
            await msg.respond(b"")
            return
        answer = await self._pass(reply.data, self.spec.downstream_key, "answer")
        await msg.respond(answer if answer is not None else b"")


def _answer_body(request_id: bytes) -> bytes:
    return request_id + b"a" * (PAYLOAD_BYTES - ID_BYTES)


async def _until_stdin_closes() -> None:
    await asyncio.to_thread(sys.stdin.readline)


async def run_server_role(spec: RoleSpec) -> dict[str, object]:
    """A relay or the responder: subscribe, say ready, serve until stdin closes."""
    assert spec.listen is not None and spec.listen_subject is not None
    inbound = await _connect(spec.listen, f"floor-{spec.name}-in")
    out: NatsClient | None = None
    committer: GroupCommitter | None = None
    stats: dict[str, object] = {"name": spec.name}
    try:
        if spec.role == "relay":
            assert spec.send is not None
            out = await _connect(spec.send, f"floor-{spec.name}-out")
            if spec.mode == "full":
                assert spec.db is not None
                committer = GroupCommitter(Path(spec.db))
                await committer.start()
            relay = Relay(spec, out, committer)
            await inbound.subscribe(spec.listen_subject, queue=QUEUE, cb=relay.on_request)
        else:
            signer = Signer(spec.sign_seed)
            bad = 0

            async def answer(msg: Msg) -> None:
                nonlocal bad
                if spec.crypto and not Signer.verify(msg.data, spec.upstream_key):
                    bad += 1
                    await msg.respond(b"")
                    return
                body = _answer_body(msg.data[:ID_BYTES])
                await msg.respond(signer.countersign(body) if spec.crypto else body)

            await inbound.subscribe(spec.listen_subject, queue=QUEUE, cb=answer)
        await inbound.flush(timeout=CONNECT_TIMEOUT_S)
        print("ready", flush=True)
        await _until_stdin_closes()
        if spec.role == "relay":
            if relay.tasks:
                await asyncio.wait(relay.tasks, timeout=REQUEST_TIMEOUT_S)
            stats |= {
                "bad_signatures": relay.bad,
                "forward_failed": relay.failed,
                "commit_failed": relay.commit_failed,
            }
        else:
            stats["bad_signatures"] = bad
        if committer is not None:
            stats |= {
                "commits": committer.commits,
                "rows": committer.rows,
                "rows_per_commit": round(committer.rows / max(committer.commits, 1), 2),
            }
    finally:
        if committer is not None:
            await committer.close()
        for nc in (inbound, out):
            if nc is not None and not nc.is_closed:
                await nc.close()
    return stats


async def run_requester(spec: RoleSpec) -> dict[str, object]:
    """Open loop at ``spec.rate`` for ``spec.seconds``; latencies from the scheduled times."""
    assert spec.send is not None and spec.send_subject is not None
    subject = spec.send_subject
    nc = await _connect(spec.send, f"floor-{spec.name}")
    signer = Signer(spec.sign_seed)
    latencies: list[float] = []
    failed = wrong = 0
    filler = b"q" * (PAYLOAD_BYTES - ID_BYTES)

    async def one(i: int, scheduled: float | None) -> bool:
        nonlocal failed, wrong
        request_id = i.to_bytes(ID_BYTES, "big")
        body = request_id + filler
        data = signer.countersign(body) if spec.crypto else body
        try:
            reply = await nc.request(subject, data, timeout=REQUEST_TIMEOUT_S)
        except (TimeoutError, nats.errors.Error):
            failed += 1
            return False
        answer = reply.data
        ok = answer[:ID_BYTES] == request_id and (
            not spec.crypto or Signer.verify(answer, spec.downstream_key)
        )
        if not ok:
            wrong += 1
            return False
        if scheduled is not None:
            latencies.append(time.perf_counter() - scheduled)
        return True

    try:
        # Answered requests first: subscription interest has crossed the leaf, caches are warm.
        warm, i, deadline = 0, 0, time.monotonic() + WARMUP_TIMEOUT_S
        while warm < WARMUP_REQUESTS and time.monotonic() < deadline:
            i += 1
            if await one(WARMUP_ID_BASE + i, None):
                warm += 1
            else:
                await asyncio.sleep(WARMUP_RETRY_S)
        if warm < WARMUP_REQUESTS:
            raise RuntimeError(f"only {warm} warm-up lookups answered in {WARMUP_TIMEOUT_S} s")
        failed = wrong = 0

        async def fire(i: int, scheduled: float) -> None:
            await one(i, scheduled)

        started = time.perf_counter()
        sent, tasks = await open_loop(spec.rate, spec.seconds, fire)
        window = time.perf_counter() - started
        await asyncio.gather(*tasks)
    finally:
        await nc.close()
    return {
        "sent": sent,
        "completed": len(latencies),
        "failed": failed,
        "wrong": wrong,
        "send_window_s": round(window, 2),
        "latencies_ms": [round(x * 1000, 3) for x in latencies],
    }


async def role_main(spec: RoleSpec) -> dict[str, object]:
    if spec.role == "requester":
        return await run_requester(spec)
    return await run_server_role(spec)
