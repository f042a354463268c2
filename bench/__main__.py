"""``make bench``: the exchange against its floors, every figure with its floor from the same run.

Absolute times vary on shared machines, so figures are paired with floors:
envelope crypto against bare libsodium (below), one hub worker against the
Ed25519 verify + sign it must do (:mod:`bench.hub_core`), end to end and
document checks across two hubs against plain nats-py on the same kind of
server (:mod:`bench.raw_nats`, :mod:`bench.e2e`, :mod:`bench.doc_verify`),
the audit log at a million entries (:mod:`bench.audit_bench`, run by the
same make target; its results are merged in when present), and lookups
(document checks, and a person query to three countries at once:
:mod:`bench.person_query`) against the lookup floor
(:mod:`bench.lookup_floor`, judged by :mod:`bench.targets`), and scale
(:mod:`bench.scale`: end to end with THA as a three-node cluster, and THA's
hub with two ingress workers, each as a ratio to one server and one worker in
the same run). Writes ``bench/results.json`` and prints a table with each
target's pass or fail. ``--only lookup`` runs the floor, the document checks
and the person query alone, ``--only scale`` the scale runs alone; either is
merged into the last ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import nacl.bindings
import nacl.utils
from nacl.public import PublicKey, SealedBox

from bench import (
    audit_bench,
    doc_verify,
    e2e,
    hub_core,
    lookup_floor,
    person_query,
    plot,
    raw_nats,
    scale,
    targets,
)
from bench.common import machine, quiet_client_logs
from protocols.envelope import (
    decode_envelope,
    open_envelope,
    seal_envelope,
    verify_envelope,
)
from protocols.examples import example_bodies
from protocols.identifiers import parse_agency
from protocols.keys import Identity, KeyRing
from protocols.limits import MS_PER_DAY
from transport import eventloop

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
AUDIT_RESULTS = HERE / "audit_results.json"
SECONDS_PER_CASE = 1.5
MAX_ITERATIONS = 200_000


def rate(fn: Callable[[], object]) -> float:
    """Operations per second over a bounded time and count."""
    fn()
    n, start = 0, time.perf_counter()
    deadline = start + SECONDS_PER_CASE
    while n < MAX_ITERATIONS and time.perf_counter() < deadline:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def crypto_ratios() -> dict[str, object]:
    now = int(time.time() * 1000)
    sender = Identity.generate(parse_agency("THA/DSI-ATHD"))
    recipient = Identity.generate(parse_agency("MYS/RMP-ATIPSOM"))
    ring = KeyRing({i.principal: i.public() for i in (sender, recipient)})
    body = example_bodies(now)["alert"]
    data = seal_envelope(
        sender=sender, recipients=[recipient.public()], body=body, now_ms=now, ttl_ms=MS_PER_DAY
    )
    env = verify_envelope(data, ring, now)
    sig = sender.signing.sign(b"x" * 32)
    assert recipient.encryption is not None
    rpk = PublicKey(recipient.encryption.public)
    key, nonce = nacl.utils.random(32), nacl.utils.random(24)
    plain = b"\x00" * 1024

    def raw_seal() -> None:
        sender.signing.sign(b"x" * 32)
        SealedBox(rpk).encrypt(key)
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, b"", nonce, key)

    measured = {
        "raw_ed25519_verify_per_s": rate(
            lambda: nacl.bindings.crypto_sign_open(sig + b"x" * 32, sender.signing.public)
        ),
        "raw_seal_floor_per_s": rate(raw_seal),
        "envelope_seal_per_s": rate(
            lambda: seal_envelope(
                sender=sender,
                recipients=[recipient.public()],
                body=body,
                now_ms=now,
                ttl_ms=MS_PER_DAY,
            )
        ),
        "envelope_verify_per_s": rate(lambda: verify_envelope(data, ring, now)),
        "envelope_decode_per_s": rate(lambda: decode_envelope(data)),
        "envelope_open_per_s": rate(lambda: open_envelope(env, recipient)),
    }
    return {
        **{k: round(v, 1) for k, v in measured.items()},
        "verify_ratio": round(
            measured["envelope_verify_per_s"] / measured["raw_ed25519_verify_per_s"], 3
        ),
        "seal_ratio": round(measured["envelope_seal_per_s"] / measured["raw_seal_floor_per_s"], 3),
        "envelope_bytes": len(data),
    }


TARGETS: tuple[tuple[str, str, float], ...] = (
    ("hub_ratio", ">=", 0.6),
    ("e2e_ratio", ">=", 0.3),
    ("doc_verify_p50_ms", "<=", 5.0),
    ("doc_verify_p99_ms", "<=", 25.0),
    ("audit_append_per_s", ">=", 20_000),
    ("audit_proof_ms_1m", "<=", 1.0),
    ("hub_rss_mib", "<=", 300.0),
)


def verdicts(results: dict[str, object]) -> dict[str, str]:
    out = {}
    for key, op, bound in TARGETS:
        value = results.get(key)
        if not isinstance(value, int | float):
            out[key] = "not measured"
            continue
        ok = value >= bound if op == ">=" else value <= bound
        out[key] = f"{'PASS' if ok else 'FAIL'} ({value} {op} {bound:g} wanted)"
    return out


def audit(entries: int, rerun: bool) -> dict[str, object]:
    """The audit-log bench (its own table and audit_results.json), folded into the summary."""
    if rerun:
        started = time.perf_counter()
        audit_bench.main(["--entries", str(entries)])
        wall = round(time.perf_counter() - started, 1)
    else:
        wall = None
    if not AUDIT_RESULTS.exists():
        return {}
    data = json.loads(AUDIT_RESULTS.read_text())
    milestones = data["milestones"]
    proofs = {size: m["inclusion_proof_ms"] for size, m in milestones.items()}
    return {
        "audit_append_per_s": data["durable_appends_per_s"],
        "audit_append_batch": data["batch"],
        "audit_single_entry_append_per_s": data["single_entry_appends_per_s"],
        "audit_entries": data["entries"],
        "audit_proof_ms_1m": proofs.get("1000000"),
        "audit_inclusion_proof_ms": proofs,
        "audit_consistency_proof_ms": {
            size: m["consistency_proof_ms"] for size, m in milestones.items()
        },
        "audit_bench_seconds": wall if wall is not None else data.get("total_s"),
        "audit_rerun": rerun,
    }


def table(results: dict[str, object]) -> None:
    out = sys.stdout.write
    out("\n== ixb bench ==\n")
    width = 36
    for name, value in results.items():
        if isinstance(value, int | float | str) or value is None:
            out(f"{name:<{width}}  {value}\n")
    out("\ne2e by concurrent senders:\n")
    out(
        f"{'senders':>8} {'sent':>6} {'recv':>6} {'msg/s':>8} {'p50 ms':>10} {'p99 ms':>10}"
        "  hub RSS MiB\n"
    )
    for lv in cast(list[dict[str, object]], results.get("e2e_levels", [])):
        out(
            f"{lv['senders']:>8} {lv['sent']:>6} {lv['received']:>6} {lv['msgs_per_s']:>8}"
            f" {lv['latency_p50_ms']!s:>10} {lv['latency_p99_ms']!s:>10}  {lv['hub_rss_mib']}\n"
        )
    out("\ndoc-verify by offered load (open loop):\n")
    out(f"{'offered/s':>9} {'sent':>6} {'done':>6} {'sent/s':>8} {'p50 ms':>10} {'p99 ms':>10}\n")
    for r in cast(list[dict[str, object]], results.get("doc_verify_sweep", [])):
        out(
            f"{r['offered_per_s']:>9} {r['sent']:>6} {r['completed']:>6}"
            f" {r['achieved_sent_per_s']:>8} {r['p50_ms']!s:>10} {r['p99_ms']!s:>10}\n"
        )
    for r in cast(list[dict[str, object]], results.get("doc_verify_overload", [])):
        out(
            f"{r['offered_per_s']:>9} {r['sent']:>6} {r['completed']:>6}"
            f" {r['achieved_sent_per_s']:>8} {r['p50_ms']!s:>10} {r['p99_ms']!s:>10}  (overload)\n"
        )
    person = cast(dict[str, object] | None, results.get("person_query_3_countries"))
    if person:
        out(
            f"\nperson query to {', '.join(cast(list[str], person['countries']))} at once,"
            f" {person['offered_per_s']}/s: {person['completed']} of {person['sent']} answered"
            f" ({person['refused_busy']} E_BUSY, {person['queued']} queued,"
            f" {person['send_errors']} errors), p50 {person['p50_ms']} ms,"
            f" p99 {person['p99_ms']} ms\n"
        )
    floor_table(results)
    scale.print_table(results)
    out("\ntargets:\n")
    for key, verdict in cast(dict[str, str], results.get("targets", {})).items():
        out(f"  {key:<22} {verdict}\n")
    targets.print_targets(results)


def floor_table(results: dict[str, object]) -> None:
    out = sys.stdout.write
    out("\nlookup floor by mode and offered load (open loop):\n")
    out(
        f"{'mode':<7} {'offered/s':>9} {'sent':>6} {'done':>6} {'p50 ms':>9} {'p99 ms':>9}"
        "  appends per commit THA / MYS\n"
    )
    for r in cast(list[dict[str, object]], results.get("lookup_floor_runs", [])):
        relays = cast(dict[str, dict[str, object]], r.get("relays") or {})
        per_commit = " / ".join(str(s.get("rows_per_commit", "-")) for s in relays.values())
        out(
            f"{r['mode']!s:<7} {r['offered_per_s']!s:>9} {r['sent']!s:>6} {r['completed']!s:>6}"
            f" {r['p50_ms']!s:>9} {r['p99_ms']!s:>9}  {per_commit}\n"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ixb benchmarks (make bench)")
    parser.add_argument(
        "--audit-entries",
        type=int,
        default=1_000_000,
        help="audit-log bench size (default 1M, about 150 s)",
    )
    parser.add_argument(
        "--skip-audit",
        action="store_true",
        help="reuse bench/audit_results.json instead of re-running the audit-log bench",
    )
    parser.add_argument("--doc-rate", type=float, default=doc_verify.MAIN_RATE)
    parser.add_argument(
        "--doc-seconds",
        type=float,
        default=doc_verify.MAIN_SECONDS,
        help="send window of the main document-check rate",
    )
    parser.add_argument(
        "--floor-seconds",
        type=float,
        default=lookup_floor.SECONDS,
        help="send window of each lookup-floor level",
    )
    parser.add_argument(
        "--only",
        choices=("lookup", "scale"),
        help="lookup: the lookup floor, the document checks and the person query alone"
        " (a few minutes), merged into the last bench/results.json, with the lookup targets;"
        " scale: THA clustered and THA's hub with two workers against one server and one"
        " worker (about 3 minutes), merged likewise",
    )
    return parser.parse_args(argv)


Step = Callable[[str], Callable[[], None]]


def lookups(results: dict[str, object], args: argparse.Namespace, step: Step, tmp: Path) -> None:
    """The lookup floor, then ixb's document checks and person query: the two sides of
    the lookup targets."""
    done = step("lookup floor: requester, two relays, responder (plain nats-py)")
    results.update(asyncio.run(lookup_floor.run(seconds=args.floor_seconds)))
    done()
    sweep = doc_verify.LOOKUP_SWEEP if args.only == "lookup" else doc_verify.SWEEP
    done = step(f"document checks, open loop, {args.doc_rate:g}/s main run")
    # the requester runs on the loop the agency's commands run on (transport/eventloop.py)
    results.update(
        eventloop.run(
            doc_verify.run(
                tmp / "doc", main_rate=args.doc_rate, main_seconds=args.doc_seconds, sweep=sweep
            )
        )
    )
    results["doc_verify_event_loop"] = eventloop.loop_name()
    done()
    done = step(
        f"person query to three countries at once, open loop, {person_query.RATE:g}/s"
        f" for {person_query.SECONDS:g} s"
    )
    results.update(eventloop.run(person_query.run(tmp / "person")))
    done()


def scaling(results: dict[str, object], step: Step, tmp: Path) -> None:
    done = step(
        "scale: THA on one server, as a 3-node cluster, and with 2 hub workers"
        f" (e2e at {'/'.join(map(str, scale.LEVELS))} senders, hub draining a backlog)"
    )
    results |= asyncio.run(scale.run(tmp / "scale"))
    done()


def everything(results: dict[str, object], args: argparse.Namespace, step: Step) -> None:
    done = step("crypto ratios")
    results |= crypto_ratios()
    done()
    done = step("hub worker on one core (no NATS)")
    hub = hub_core.run()
    results["hub_profile_top"] = hub.pop("hub_profile_top")
    results |= hub
    done()
    done = step("raw nats-py: JetStream publish, request/reply")
    results |= asyncio.run(raw_nats.run(args.doc_rate))
    done()
    with tempfile.TemporaryDirectory(prefix="ixb-bench-") as tmp:
        done = step("end to end, 1/4/16/64 senders")
        results |= asyncio.run(e2e.run(Path(tmp) / "e2e"))
        done()
        lookups(results, args, step, Path(tmp))
        scaling(results, step, Path(tmp))
    done = step("audit log")
    results |= audit(args.audit_entries, rerun=not args.skip_audit)
    done()
    raw = results["raw_jetstream_msgs_per_s"]
    assert isinstance(raw, float)
    results["e2e_ratio"] = round(float(results["e2e_msgs_per_s"]) / raw, 4)  # type: ignore[arg-type]
    results["hub_rss_note"] = (
        "VmRSS of each hub process (ixb hub run) after the 64-sender e2e level; max of THA, MYS"
    )
    results["rate_limit_note"] = (
        "hubs run with policy.max_per_minute and burst raised to 1e9 (default 600/min, burst"
        " 120 per agency would cap one sender at 10 msg/s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_client_logs()
    started = time.perf_counter()
    results: dict[str, object] = {}
    timings: dict[str, float] = {}

    def step(name: str) -> Callable[[], None]:
        t = time.perf_counter()
        sys.stdout.write(f"-- {name}\n")
        sys.stdout.flush()
        return lambda: timings.__setitem__(name, round(time.perf_counter() - t, 1))

    if args.only:
        if RESULTS.exists():
            results |= json.loads(RESULTS.read_text())
        with tempfile.TemporaryDirectory(prefix="ixb-bench-") as tmp:
            if args.only == "lookup":
                lookups(results, args, step, Path(tmp))
            else:
                scaling(results, step, Path(tmp))
        results["last_run"] = f"--only {args.only} (the other figures are from an earlier run)"
    else:
        results["last_run"] = "all"
        everything(results, args, step)
    results["targets"] = verdicts(results)
    results |= targets.lookup_targets(results)
    results["step_seconds"] = timings
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["machine"] = machine()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    # the plot shows the whole sweep: only a full run has it
    plotted = (
        None if args.only else plot.doc_verify_latency(results, HERE / "doc_verify_latency.png")
    )
    table(results)
    sys.stdout.write(f"\nwrote {RESULTS}" + (f" and {plotted}" if plotted else "") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
