"""``python -m bench.audit_bench``: the audit log at a million entries.

Appends ~300-byte entries in durable batches (one ``BEGIN IMMEDIATE … COMMIT``
each, WAL, ``synchronous=FULL``) into a temporary directory and, as the log
passes 10k, 100k and 1M entries, measures what an auditor waits for: the
median time to build an inclusion proof and a consistency proof (200 random
ones each), the root, a few searches, and the size on disk. Every tenth
proof is checked against :mod:`protocols.merkle`'s verifier, so a fast wrong
answer cannot pass. Appending stops at a time budget so the run stays bounded;
the report says how far it got. Writes ``bench/audit_results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from broker.audit.log import AuditLog
from broker.audit.records import AuditRecord
from broker.audit.search import AuditQuery
from protocols import merkle

RESULTS = Path(__file__).resolve().parent / "audit_results.json"
MILESTONES = (10_000, 100_000, 1_000_000)
PROOFS = 200
SEARCHES = 50
SINGLE_APPENDS = 500
APPEND_BUDGET_S = 210.0
ENTRY_BYTES = 300
T0_MS = 1_795_000_000_000

COUNTRIES = ("THA", "MYS", "MMR", "KHM", "LAO", "VNM", "IDN", "PHL")
AGENCIES = tuple(f"{c}/{name}" for c in COUNTRIES for name in ("POLICE", "IMM", "CUSTOMS", "FIU"))
EVENTS = (
    ("accepted", 30),
    ("forwarded", 20),
    ("delivered", 25),
    ("receipt", 15),
    ("rejected", 6),
    ("key_change", 1),
    ("audit_read", 3),
)
TYPES = ("alert", "request", "response", "receipt")
CODES = ("ixb.E_SIGNATURE", "ixb.E_REPLAY", "ixb.E_EXPIRED", "ixb.E_UNAUTHORISED")


class Workload:
    """Deterministic, hub-shaped records: UUIDv7 ids, a few agencies, some cases."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.events = [e for e, w in EVENTS for _ in range(w)]

    def record(self, i: int) -> AuditRecord:
        rng = self.rng
        at = T0_MS + i * 50  # 20 entries a second
        event = rng.choice(self.events)
        sender = rng.choice(AGENCIES)
        recipients = tuple(rng.sample(AGENCIES, rng.choice((1, 1, 2, 3))))
        mid = bytearray(at.to_bytes(6, "big") + rng.randbytes(10))
        mid[6] = 0x70 | (mid[6] & 0x0F)
        mid[8] = 0x80 | (mid[8] & 0x3F)
        msg_id = str(uuid.UUID(bytes=bytes(mid)))
        case_ref = f"CASE-{rng.randrange(20_000):05d}" if rng.random() < 0.4 else None
        head = f"{i}|{at}|{event}|{msg_id}|{sender}|{','.join(recipients)}|".encode()
        return AuditRecord(
            data=head + rng.randbytes(max(0, ENTRY_BYTES - len(head))),
            at_ms=at,
            event=event,
            msg_id=msg_id,
            type=rng.choice(TYPES),
            sender=sender,
            recipients=recipients,
            case_ref=case_ref,
            code=rng.choice(CODES) if event == "rejected" else None,
            peer=f"{recipients[0][:3]}/HUB",
        )


def median_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 4)


def db_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


def measure_proofs(log: AuditLog, size: int, rng: random.Random) -> dict[str, float]:
    root = log.root(size)
    indexes = [rng.randrange(size) for _ in range(PROOFS)]
    olds = [rng.randrange(1, size) for _ in range(PROOFS)]
    for k in range(0, PROOFS, 10):  # correctness, untimed
        i, old = indexes[k], olds[k]
        merkle.verify_inclusion(log.leaf(i), i, size, log.inclusion_proof(i, size), root)
        proof = log.consistency_proof(old, size)
        merkle.verify_consistency(old, size, log.root(old), root, proof)
    it_i, it_c = iter(indexes), iter(olds)
    return {
        "inclusion_proof_ms": median_ms(lambda: log.inclusion_proof(next(it_i), size), PROOFS),
        "consistency_proof_ms": median_ms(lambda: log.consistency_proof(next(it_c), size), PROOFS),
        "root_ms": median_ms(lambda: log.root(size), PROOFS),
    }


def measure_searches(log: AuditLog, size: int) -> dict[str, float]:
    rng = random.Random(7)
    samples = [log.entries(i, i + 1)[0] for i in (rng.randrange(size) for _ in range(SEARCHES))]
    cases = [s for s in samples if s.case_ref]
    hour = 3_600_000
    queries: dict[str, Callable[[int], object]] = {
        "msg_id": lambda k: log.search(AuditQuery(msg_id=samples[k].msg_id)),
        "case_ref": lambda k: log.search(AuditQuery(case_ref=cases[k % len(cases)].case_ref)),
        "agency_page": lambda k: log.search(AuditQuery(agency=AGENCIES[k % len(AGENCIES)])),
        "country_page": lambda k: log.search(AuditQuery(country=COUNTRIES[k % len(COUNTRIES)])),
        "event_rejected_page": lambda k: log.search(AuditQuery(event="rejected")),
        "agency_and_code_page": lambda k: log.search(
            AuditQuery(agency=AGENCIES[k % len(AGENCIES)], code=CODES[k % len(CODES)])
        ),
        "country_and_type_page": lambda k: log.search(
            AuditQuery(country=COUNTRIES[k % len(COUNTRIES)], type=TYPES[k % len(TYPES)])
        ),
        "country_and_type_count": lambda k: log.count(
            AuditQuery(country=COUNTRIES[k % len(COUNTRIES)], type=TYPES[k % len(TYPES)])
        ),
        "one_hour_window_page": lambda k: log.search(
            AuditQuery(since_ms=samples[k].at_ms, until_ms=samples[k].at_ms + hour)
        ),
        "deep_page_agency": lambda k: log.search(
            AuditQuery(agency=AGENCIES[k % len(AGENCIES)], before_index=samples[k].index)
        ),
    }
    return {name: median_ms(_cycling(q), SEARCHES) for name, q in queries.items()}


def _cycling(query: Callable[[int], object]) -> Callable[[], object]:
    """``query`` called with 0, 1, 2 …: a different sample each time."""
    counter = iter(range(1 << 30))
    return lambda: query(next(counter))


def run(entries: int, batch: int) -> dict[str, object]:
    work = Workload(seed=1)
    rng = random.Random(2)
    results: dict[str, object] = {"target_entries": entries, "batch": batch}
    milestones: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="ixb-audit-bench-") as tmp:
        directory = Path(tmp)
        log = AuditLog(directory / "audit.db")
        append_s = generate_s = 0.0
        started = time.perf_counter()
        n = 0
        targets = [m for m in MILESTONES if m <= entries] or [entries]
        if targets[-1] != entries:
            targets.append(entries)
        for target in targets:
            while n < target:
                t = time.perf_counter()
                records = [work.record(i) for i in range(n, min(n + batch, target))]
                generate_s += time.perf_counter() - t
                t = time.perf_counter()
                log.append(records)
                append_s += time.perf_counter() - t
                n += len(records)
                if time.perf_counter() - started > APPEND_BUDGET_S:
                    break
            stats: dict[str, object] = {
                "appends_per_s_so_far": round(n / append_s),
                "db_bytes": db_bytes(directory),
                **measure_proofs(log, n, rng),
            }
            if n >= 100_000 or target == targets[-1]:
                stats["search_ms"] = measure_searches(log, n)
            milestones[str(n)] = stats
            sys.stdout.write(f"  {n:>9,} entries: {json.dumps(stats)}\n")
            sys.stdout.flush()
            if n < target:
                results["stopped_early"] = f"append budget of {APPEND_BUDGET_S:.0f} s reached"
                break
        t = time.perf_counter()
        log.verify_storage()
        verify_s = time.perf_counter() - t
        # What one hub decision costs: a transaction of one entry, as the hub acks.
        singles = [work.record(i) for i in range(n, n + SINGLE_APPENDS)]
        t = time.perf_counter()
        for record in singles:
            log.append([record])
        single_per_s = SINGLE_APPENDS / (time.perf_counter() - t)
        log.close()
        results.update(
            {
                "entries": n,
                "entry_bytes": ENTRY_BYTES,
                "durable_appends_per_s": round(n / append_s),
                "append_s": round(append_s, 1),
                "transactions": -(-n // batch),
                "generate_records_s": round(generate_s, 1),
                "verify_storage_s": round(verify_s, 1),
                "single_entry_appends_per_s": round(single_per_s),
                "db_bytes": db_bytes(directory),
                "milestones": milestones,
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=MILESTONES[-1])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run(args.entries, args.batch)
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["machine"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "sqlite": __import__("sqlite3").sqlite_version,
    }
    table(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


def table(results: dict[str, object]) -> None:
    out = sys.stdout.write
    out(
        f"\n{results['entries']:,} entries of ~{ENTRY_BYTES} B in batches of {results['batch']}:"
        f" {results['durable_appends_per_s']:,} durable appends/s"
        f" ({results['append_s']} s); one entry per transaction:"
        f" {results['single_entry_appends_per_s']:,}/s;"
        f" verify_storage {results['verify_storage_s']} s,"
        f" total {results['total_s']} s\n\n"
    )
    milestones = results["milestones"]
    assert isinstance(milestones, dict)
    head = ("entries", "inclusion ms", "consistency ms", "root ms", "DB MB")
    out("{:>10}  {:>12}  {:>14}  {:>8}  {:>8}\n".format(*head))
    for size, m in milestones.items():
        out(
            f"{int(size):>10,}  {m['inclusion_proof_ms']:>12}  {m['consistency_proof_ms']:>14}"
            f"  {m['root_ms']:>8}  {m['db_bytes'] / 1e6:>8.1f}\n"
        )
    last = list(milestones.values())[-1]
    if "search_ms" in last:
        out(f"\nsearch at {results['entries']:,} entries (median ms; pages of 100, counts):\n")
        for name, ms in last["search_ms"].items():
            out(f"  {name:<24} {ms}\n")


if __name__ == "__main__":
    sys.exit(main())
