"""``make faults``: every fault scenario on one live federation; a table and a JSON report.

    python -m tests.faults [--fast] [--cluster] [--only NAME ...] [--out FILE] [--dir DIR]

``--cluster``: the clustered country's scenarios, on a federation where THA
runs three nats-servers with replicated streams and two hub processes (one
active, one standing by).

Exits 0 only if every scenario ended with nothing lost, nothing duplicated,
nothing invented, every hub ready, every audit log verified and reconciled,
and no witness alarm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path

import structlog

from tests.faults.harness import Federation, Traffic, dump_json
from tests.faults.scenarios import CLUSTER_SCENARIOS, CLUSTERED, SCENARIOS, Result, run

COLUMNS = (
    ("scenario", 20),
    ("sent", 6),
    ("acked", 6),
    ("delivered", 9),
    ("dupes", 5),
    ("lost", 5),
    ("refused", 7),
    ("unknown", 7),
    ("recovery", 9),
    ("result", 6),
)


def _row(r: Result) -> str:
    c = r.counts
    recovery = "never" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
    values = (
        r.name,
        c["sent"],
        c["acknowledged"],
        c["delivered"],
        c["duplicates"],
        c["lost"],
        c["refused"],
        c["unknown_resent"],
        recovery,
        "ok" if r.ok else "FAIL",
    )
    return "  ".join(f"{v!s:<{w}}" for v, (_n, w) in zip(values, COLUMNS, strict=True))


def _dump_tasks() -> None:
    """``kill -USR1``: where every task is waiting (for a run that seems stuck)."""
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=sys.stderr)


async def main_async(args: argparse.Namespace, base: Path) -> int:
    scenarios = CLUSTER_SCENARIOS if args.cluster else SCENARIOS
    chosen = [
        s for s in scenarios if (not args.fast or s.fast) and (not args.only or s.name in args.only)
    ]
    unknown = set(args.only or ()) - {s.name for s in scenarios}
    if unknown:
        sys.stderr.write(f"error: no scenario named {', '.join(sorted(unknown))}\n")
        return 2
    started = time.monotonic()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    clusters = CLUSTERED if args.cluster else None
    shape = f" ({', '.join(f'{c}: {n} nodes' for c, n in (clusters or {}).items())})"
    print(f"starting THA, MYS, MMR (servers, hubs, agencies){shape if clusters else ''} in {base}")
    fed = await Federation.start(base, clusters=clusters)
    traffic = Traffic(fed)
    traffic.start()
    results: list[Result] = []
    print("  ".join(f"{n:<{w}}" for n, w in COLUMNS), flush=True)
    try:
        for scenario in chosen:
            result = await run(fed, traffic, scenario)
            results.append(result)
            print(_row(result), flush=True)
            if result.measured:
                print(f"    measured: {json.dumps(result.measured)}", flush=True)
            for problem in result.problems:
                print(f"    {problem}", flush=True)
    finally:
        await traffic.close()
        unclean = await fed.stop()
    for line in unclean:
        print(f"  {line}")
    report = {
        "scenarios": [r.as_dict() for r in results],
        "seconds": round(time.monotonic() - started, 1),
        "ok": all(r.ok for r in results) and not unclean,
    }
    dump_json(args.out, report)
    passed = sum(r.ok for r in results)
    print(
        f"{passed}/{len(results)} scenarios passed in {report['seconds']} s;"
        f" report: {args.out}; logs: {base / 'logs'}"
    )
    return 0 if report["ok"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="only the scenarios of make test")
    parser.add_argument("--cluster", action="store_true", help="THA as a 3-node cluster")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these scenarios")
    parser.add_argument("--out", type=Path, default=Path("tests/faults/results.json"))
    parser.add_argument("--dir", type=Path, help="keep keys, state and logs here")
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(main_async(args, args.dir))
    with tempfile.TemporaryDirectory(prefix="ixb-faults-") as tmp:
        return asyncio.run(main_async(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
