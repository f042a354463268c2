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
to its SQLite file through a group committer and awaits the commit before
passing the message on; ``direct``, ``bare`` and ``crypto`` leave parts out.
docs/performance.md ("Lookups against the floor") says what each mode
measures and how the targets use it.

The roles live in :mod:`bench.floor_roles`; here each is started as
``python -m bench.lookup_floor --role ROLE`` (:class:`RoleProcess`), told its
:class:`~bench.floor_roles.RoleSpec` on stdin and stopped by closing it. Every
mode and rate gets fresh role processes and SQLite files on the same two
servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nacl.bindings

from bench.common import latency_figures
from bench.floor_roles import REQUEST_TIMEOUT_S, Link, RoleSpec, role_main
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
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
STDOUT_LIMIT = 1 << 24
"""A requester's result line holds every latency (a few hundred KiB at most)."""


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
        **latency_figures(latencies),
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
