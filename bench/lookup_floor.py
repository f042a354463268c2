"""The lookup floor: the synchronous lookup path with nothing of ixb on it.

Four processes of plain nats-py across the two leaf-linked nats-servers of a
THA-MYS federation (configs rendered by :mod:`broker.natsd`: the same
accounts, link accounts, TLS, nkeys and ``sync_interval: always``)::

    requester ──floor.THA.lookup.IMMIGRATION──▶ relay THA  (IXB account, THA)
    relay THA ──floor.THA.lookup.MYS──────────▶ relay MYS  (link accounts, over the leaf)
    relay MYS ──floor.MYS.serve.IMMIGRATION───▶ responder  (IXB account, MYS)

and back along the same request/reply chain. The relays stand where the hubs
stand. In ``full`` mode each relay, on each pass (request, then answer),
verifies the Ed25519 signature of what it got, countersigns, appends a row
to its SQLite file through a :class:`GroupCommitter` and awaits the commit
before passing the message on; ``direct``, ``bare`` and ``crypto`` leave
parts out. docs/performance.md ("Lookups against the floor") says what each
mode measures and how the targets use it.

Each role is ``python -m bench.lookup_floor --role ROLE``: it reads its
:class:`RoleSpec` (throwaway keys included: they never touch the disk) as one
JSON line on stdin, prints ``ready`` once subscribed, and when its stdin
closes prints its figures as one JSON line. The requester is an open loop
(:func:`bench.common.open_loop`), latency from each request's scheduled send
time; a request not answered within :data:`REQUEST_TIMEOUT_S` counts as
failed (``completed < sent``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
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

from bench.common import PAYLOAD_BYTES, ms, open_loop, percentile
from broker.natsd import (
    TEMPLATE_DIR,
    NatsServer,
    find_nats_server,
    free_ports,
    wait_links_up,
    write_config,
)
from broker.natsplan import FederationPlan
from broker.natstls import write_throwaway_tls
from transport.connect import NatsAuth

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

REQUESTER_COUNTRY = "THA"
RESPONDER_COUNTRY = "MYS"
AGENCY = "IMMIGRATION"
PREFIX = "floor"
"""Not ``ixb``: nothing of ixb's subjects or permissions is on the floor's path."""
ASK_SUBJECT = f"{PREFIX}.{REQUESTER_COUNTRY}.lookup.{AGENCY}"
"""Requester → its own relay (the agency → own hub hop of the sync path)."""
CROSS_SUBJECT = f"{PREFIX}.{REQUESTER_COUNTRY}.lookup.{RESPONDER_COUNTRY}"
"""Relay → peer relay, in the pair's link accounts, over the leaf connection."""
SERVE_SUBJECT = f"{PREFIX}.{RESPONDER_COUNTRY}.serve.{AGENCY}"
"""Peer relay → responder."""
QUEUE = "floor"

MODES = ("direct", "bare", "crypto", "full")
LEVELS: tuple[tuple[str, float], ...] = (
    ("direct", 100.0),
    ("direct", 500.0),
    ("bare", 100.0),
    ("bare", 500.0),
    ("crypto", 100.0),
    ("crypto", 500.0),
    ("full", 100.0),
    ("full", 500.0),
    ("full", 1000.0),
)
SECONDS = 10.0
"""Send window of each level; the requests are at most rate x seconds."""
WARMUP_REQUESTS = 20
WARMUP_TIMEOUT_S = 15.0
WARMUP_RETRY_S = 0.05
WARMUP_ID_BASE = 1 << 64
REQUEST_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 5
ID_BYTES = 16
STDOUT_LIMIT = 1 << 24
"""A requester's result line holds every latency (a few hundred KiB at most)."""
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


# --- the orchestrating process ------------------------------------------------


class RoleProcess:
    """One role as a child process, stopped on every exit path."""

    def __init__(self, spec: RoleSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.lookup_floor",
                "--role",
                self.spec.role,
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=STDOUT_LIMIT,
            )
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.spec.to_line())
        await self.proc.stdin.drain()

    async def line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.spec.name}: no answer in {timeout:.0f} s") from None
        if not raw:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.spec.name} exited:\n{tail}")
        return raw.decode().strip()

    async def ready(self) -> None:
        got = await self.line(READY_TIMEOUT_S)
        if got != "ready":
            raise RuntimeError(f"{self.spec.name}: expected 'ready', got {got[:200]!r}")

    async def finish(self, timeout: float) -> dict[str, Any]:
        """Close its stdin (the signal to stop) and read its figures."""
        assert self.proc is not None and self.proc.stdin is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        result: dict[str, Any] = json.loads(await self.line(timeout))
        await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        return result

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


@dataclass(frozen=True)
class Servers:
    """Where the floor's processes connect, and with which users."""

    ixb: Mapping[str, Link]
    """Per country: the ``IXB`` account (the hub's user)."""
    link: Mapping[str, Link]
    """Per country: its link account for the other country (the hub's link user)."""


def _keypair() -> tuple[str, str]:
    seed = os.urandom(32)
    pk, _sk = nacl.bindings.crypto_sign_seed_keypair(seed)
    return seed.hex(), pk.hex()


def role_specs(mode: str, servers: Servers, db_dir: Path) -> list[RoleSpec]:
    """The serving roles of ``mode`` (relays, responder) and, last, a requester template."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    ask, serve = REQUESTER_COUNTRY, RESPONDER_COUNTRY
    keys = {name: _keypair() for name in ("requester", "relay-a", "relay-b", "responder")}
    seed = {name: k[0] for name, k in keys.items()}
    pub = {name: k[1] for name, k in keys.items()}
    if mode == "direct":
        return [
            RoleSpec(
                "responder",
                "responder",
                mode,
                listen=servers.link[serve],
                listen_subject=CROSS_SUBJECT,
            ),
            RoleSpec(
                "requester", "requester", mode, send=servers.link[ask], send_subject=CROSS_SUBJECT
            ),
        ]
    return [
        RoleSpec(
            "relay",
            f"relay-{ask}",
            mode,
            listen=servers.ixb[ask],
            listen_subject=ASK_SUBJECT,
            send=servers.link[ask],
            send_subject=CROSS_SUBJECT,
            sign_seed=seed["relay-a"],
            upstream_key=pub["requester"],
            downstream_key=pub["relay-b"],
            db=str(db_dir / f"relay-{ask}.sqlite"),
        ),
        RoleSpec(
            "relay",
            f"relay-{serve}",
            mode,
            listen=servers.link[serve],
            listen_subject=CROSS_SUBJECT,
            send=servers.ixb[serve],
            send_subject=SERVE_SUBJECT,
            sign_seed=seed["relay-b"],
            upstream_key=pub["relay-a"],
            downstream_key=pub["responder"],
            db=str(db_dir / f"relay-{serve}.sqlite"),
        ),
        RoleSpec(
            "responder",
            "responder",
            mode,
            listen=servers.ixb[serve],
            listen_subject=SERVE_SUBJECT,
            sign_seed=seed["responder"],
            upstream_key=pub["relay-b"],
        ),
        RoleSpec(
            "requester",
            "requester",
            mode,
            send=servers.ixb[ask],
            send_subject=ASK_SUBJECT,
            sign_seed=seed["requester"],
            downstream_key=pub["relay-a"],
        ),
    ]


def summary(mode: str, rate: float, seconds: float, got: Mapping[str, Any]) -> dict[str, object]:
    latencies = [x / 1000 for x in got["latencies_ms"]]
    return {
        "mode": mode,
        "offered_per_s": rate,
        "seconds": seconds,
        "send_window_s": got["send_window_s"],
        "sent": got["sent"],
        "completed": got["completed"],
        "failed": got["failed"],
        "wrong": got["wrong"],
        "achieved_sent_per_s": round(got["sent"] / max(got["send_window_s"], 1e-9), 1),
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else None),
    }


async def run_level(
    mode: str, rate: float, seconds: float, servers: Servers, work: Path
) -> dict[str, object]:
    """Fresh relays and responder (fresh SQLite files), then one requester at ``rate``."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    *serving, requester = role_specs(mode, servers, work)
    requester = RoleSpec.from_line(
        RoleSpec(**{**asdict(requester), "rate": rate, "seconds": seconds}).to_line().decode()
    )
    procs = [RoleProcess(spec, work) for spec in serving]
    req = RoleProcess(requester, work)
    try:
        for proc in procs:
            await proc.start()
        await asyncio.gather(*(proc.ready() for proc in procs))
        await req.start()
        got = await req.finish(READY_TIMEOUT_S + seconds + 2 * REQUEST_TIMEOUT_S)
        stats = await asyncio.gather(*(proc.finish(STOP_TIMEOUT_S) for proc in procs))
    finally:
        for proc in (*procs, req):
            proc.kill()
    row = summary(mode, rate, seconds, got)
    row["relays"] = {s.pop("name"): s for s in stats if str(s.get("name", "")).startswith("relay")}
    print(f"  floor {mode:<6} {rate:>5.0f}/s: {_brief(row)}", flush=True)
    return row


def _brief(row: Mapping[str, object]) -> str:
    keys = ("sent", "completed", "failed", "p50_ms", "p99_ms")
    return ", ".join(f"{k} {row[k]}" for k in keys)


# --- the servers ----------------------------------------------------------------


def floor_templates(dest: Path) -> Path:
    """The ``deploy/nats`` config templates, with the floor's subject allowed over the leaf.

    The listening server's leaf user may receive ``floor.<FROM>.lookup.<TO>``
    from its peer: one line more in its allow list; nothing else differs from
    a federation's configs.
    """
    shutil.copytree(TEMPLATE_DIR, dest)
    path = dest / "leaf-user.conf.template"
    text = path.read_text(encoding="utf-8")
    if "${leaf_allow}" not in text:
        raise RuntimeError(f"{path}: no ${{leaf_allow}} placeholder to extend")
    extra = f'${{leaf_allow}},\n              "{PREFIX}.*.lookup.*"'
    path.write_text(text.replace("${leaf_allow}", extra, 1), encoding="utf-8")
    return dest


class FloorServer(NatsServer):
    """A country's server, its config rendered from the floor's templates."""

    def __init__(self, plan: FederationPlan, country: str, templates: Path) -> None:
        super().__init__(plan, country)
        self.templates = templates

    async def start(self) -> None:
        config = write_config(self.plan, self.country, self.templates)
        self._spawn(find_nats_server(), config)
        try:
            await self._wait_healthy()
        except BaseException:
            self.kill_now()
            raise


@contextlib.asynccontextmanager
async def two_servers(base: Path) -> AsyncIterator[Servers]:
    """THA and MYS nats-servers as a federation renders them (TLS, nkeys, fsync), leaf-linked."""

    countries = (REQUESTER_COUNTRY, RESPONDER_COUNTRY)
    plan = FederationPlan.create(
        countries, {c: [AGENCY] for c in countries}, base / "fed", ports=free_ports()
    )
    write_throwaway_tls(plan)
    templates = floor_templates(base / "templates")
    servers = {c: FloorServer(plan, c, templates) for c in plan.countries}
    try:
        await asyncio.gather(*(s.start() for s in servers.values()))
        await wait_links_up(servers)

        def link(auth_country: str, auth: NatsAuth) -> Link:
            ca = plan.client_ca_file(auth_country)
            seed = auth.seed.seed_str() if auth.seed is not None else ""
            return Link(plan.client_url(auth_country), str(ca) if ca else None, seed)

        peer = {REQUESTER_COUNTRY: RESPONDER_COUNTRY, RESPONDER_COUNTRY: REQUESTER_COUNTRY}
        yield Servers(
            ixb={c: link(c, plan.hub_credentials(c)) for c in countries},
            link={c: link(c, plan.link_credentials(c, peer[c])) for c in countries},
        )
    finally:
        await asyncio.gather(*(s.stop() for s in servers.values()), return_exceptions=True)
        for server in servers.values():
            server.kill_now()


# --- results ----------------------------------------------------------------------


def result_key(mode: str, rate: float, figure: str) -> str:
    """``lookup_floor_500_p50_ms`` for the full floor, ``lookup_floor_bare_500_p50_ms`` else."""
    middle = "" if mode == "full" else f"{mode}_"
    return f"lookup_floor_{middle}{rate:g}_{figure}"


def flatten(rows: Sequence[Mapping[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for row in rows:
        mode, rate = str(row["mode"]), float(row["offered_per_s"])  # type: ignore[arg-type]
        for figure in ("p50_ms", "p99_ms", "sent", "completed"):
            out[result_key(mode, rate, figure)] = row[figure]
    return out


async def run(
    levels: Sequence[tuple[str, float]] = LEVELS,
    seconds: float = SECONDS,
    base: Path | None = None,
) -> dict[str, object]:
    """Every level of the floor on one pair of servers; flat keys plus ``lookup_floor_runs``."""
    with contextlib.ExitStack() as stack:
        if base is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ixb-floor-")))
        rows: list[dict[str, object]] = []
        async with two_servers(base) as servers:
            for mode, rate in levels:
                work = base / f"{mode}-{rate:g}"
                rows.append(await run_level(mode, rate, seconds, servers, work))
    return {
        **flatten(rows),
        "lookup_floor_seconds": seconds,
        "lookup_floor_runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the lookup floor (bench/lookup_floor.py)")
    parser.add_argument("--role", choices=("requester", "relay", "responder"))
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args(argv)
    if args.role is not None:
        spec = RoleSpec.from_line(sys.stdin.readline())
        result = asyncio.run(role_main(spec))
        print(json.dumps(result), flush=True)
        return 0
    results = asyncio.run(run(seconds=args.seconds))
    print(json.dumps({k: v for k, v in results.items() if k != "lookup_floor_runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
