"""A person query to three countries at once, open loop: THA asks MYS, MMR and VNM.

THA/DSI-ATHD (a trafficking unit) asks the same ``person.query`` of one
anti-trafficking agency in each of three countries with
``AgencyClient.lookup_each``: three lookups on the synchronous path
(SPEC §14) at once. Each owner answers from its person index
(:mod:`agency_client.personindex`, a few hundred invented people) with
``ixb agency respond --index``, its own process, as in ``ixb demo``. The
queried person is held in MYS and MMR, not in VNM: two hits and a no-hit.

A query is started at its scheduled time, never waiting for earlier ones;
its latency runs from the scheduled time to the moment the requester holds
all three verified, decrypted answers. It counts as completed only when all
three are ``person.result``s with the expected hit or no-hit; a query with
any answer refused ``ixb.E_BUSY`` counts in ``refused_busy``, one with any
other typed error in ``send_errors`` (by code in ``error_codes``), one left
queued for a person in ``queued``.

The figure is unloaded (:data:`RATE` queries a second, three lookups each),
for the person-query target of :mod:`bench.targets`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agency_client.personindex import PersonIndex, index_path, index_stats, parse_export
from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, Incoming, LookupResult, Queued, load_identity_for
from bench.common import latency_figures, open_loop, quiet_client_logs, rss_mib
from bench.federation import PASSPHRASE, Bench, running
from ixb.deployment import Deployment
from protocols.errors import BusyError, IxbError
from protocols.identifiers import Principal, parse_agency
from protocols.keys import KdfProfile
from protocols.messages import PersonQuery, PersonResult
from protocols.roles import Role
from transport.clock import wall_ms

REQUESTER = "THA/DSI-ATHD"
HELD: dict[str, str | None] = {
    "MYS/RMP-ATIPSOM": "MYS-ATIPSOM-2026-000042",
    "MMR/MOHA-ATTU": "MMR-ATTU-2026-000112",
    "VNM/MPS-C03": None,
}
"""Each owner, and the reference it answers the query with (None: no hit)."""
OWNERS = tuple(HELD)
AGENCIES: dict[str, Sequence[Role]] = {
    REQUESTER: [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
    "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT],
    "MMR/MOHA-ATTU": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
    "VNM/MPS-C03": [Role.TRAFFICKING_UNIT, Role.INVESTIGATOR],
}
RATE = 20.0
"""Queries a second (each three lookups)."""
SECONDS = 10.0
WARMUP_RATE = 2.0
WARMUP_SECONDS = 1.0
PERSONS = 300
"""People in each owner's index (the queried one among them where it is held)."""
READY_TIMEOUT_S = 60.0

BIRTH_DATE = "1981-03-14"
QUERY = PersonQuery(
    surname="SAMPLE",
    given_names="NARONG",
    birth_date=BIRTH_DATE,
    nationality="THA",
    purpose="bench: trafficking in persons investigation",
    legal_basis="bench: invented persons, no legal basis needed",
)
SURNAMES = ("Aung", "Tan", "Nguyen", "Lim", "Win", "Tran", "Wong", "Kyaw", "Pham", "Rahman")
GIVEN_NAMES = ("Mya", "Siti", "Van An", "Thi Mai", "Hock Seng", "Nurul", "Zaw", "Min", "Hoa")
NATIONALITIES = ("THA", "MYS", "MMR", "VNM", "KHM", "LAO")


def persons_export(owner: str, count: int = PERSONS) -> str:
    """An owner's export (CSV, as ``ixb index load`` reads it): ``count`` invented people,
    the queried person among them if the owner holds it (same people for the same owner)."""
    rng = random.Random(owner)  # invented people, the same each run
    country = parse_agency(owner).country
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ("reference", "surname", "given_names", "birth_date", "nationality", "document_number")
    )
    rows = [
        (
            f"{country}-BENCH-{i:06d}",
            rng.choice(SURNAMES),
            rng.choice(GIVEN_NAMES),
            f"{rng.randint(1960, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            rng.choice(NATIONALITIES),
            f"{rng.choice('ABCM')}{rng.randint(1_000_000, 9_999_999)}" if i % 3 else "",
        )
        for i in range(count - (HELD[owner] is not None))
    ]
    reference = HELD[owner]
    if reference is not None:
        held = (reference, "Sample", "Narong", BIRTH_DATE, "THA", "")
        rows.insert(rng.randrange(len(rows) + 1), held)
    writer.writerows(rows)
    return out.getvalue()


def load_index(deployment: Deployment, owner: str) -> Path:
    """The owner's person index, loaded as ``ixb index load`` does; returns its path."""
    profile = load_profile(deployment.profile(owner))
    path = index_path(profile)
    rows = parse_export(persons_export(owner).encode(), "csv", f"{owner} bench export")
    index = PersonIndex(path, [load_identity_for(profile, PASSPHRASE)], create=True)
    try:
        index.load(rows, replace=True, now=wall_ms())
    finally:
        index.close()
    return path


@dataclass
class Run:
    rate: float
    seconds: float = 0.0
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    busy: int = 0
    queued: int = 0
    wrong: int = 0
    failed: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)
    hits: int = 0
    no_hits: int = 0

    def record(self, answers: Mapping[Principal, LookupResult | IxbError], latency: float) -> None:
        outcomes = list(answers.values())
        if any(isinstance(a, BusyError) for a in outcomes):
            self.busy += 1
            return
        errors = [a for a in outcomes if isinstance(a, IxbError)]
        if errors:
            self.failed += 1
            self.error_codes.update(e.code for e in errors)
            return
        if any(isinstance(a, Queued) for a in outcomes):
            self.queued += 1
            return
        got = {
            str(owner): a.body.reference
            for owner, a in answers.items()
            if isinstance(a, Incoming) and isinstance(a.body, PersonResult)
        }
        if got != HELD:
            self.wrong += 1
            return
        self.hits += sum(ref is not None for ref in got.values())
        self.no_hits += sum(ref is None for ref in got.values())
        self.latencies.append(latency)


async def one_rate(client: AgencyClient, rate: float, seconds: float) -> Run:
    run = Run(rate)

    async def fire(_i: int, scheduled: float) -> None:
        answers = await client.lookup_each(QUERY, OWNERS)
        run.record(answers, time.perf_counter() - scheduled)

    started = time.perf_counter()
    run.sent, tasks = await open_loop(rate, seconds, fire)
    await asyncio.gather(*tasks)  # each lookup ends by its own timeout at the latest
    run.seconds = time.perf_counter() - started
    return run


def summary(run: Run) -> dict[str, object]:
    """The row :func:`bench.targets.person_query_figures` reads, and what explains it."""
    return {
        "offered_per_s": run.rate,
        "lookups_per_s": run.rate * len(OWNERS),
        "seconds": round(run.seconds, 2),
        "countries": [parse_agency(owner).country for owner in OWNERS],
        "persons_per_index": PERSONS,
        "sent": run.sent,
        "completed": len(run.latencies),
        "refused_busy": run.busy,
        "queued": run.queued,
        "send_errors": run.failed,
        "error_codes": dict(run.error_codes),
        "wrong_answers": run.wrong,
        "hits": run.hits,
        "no_hits": run.no_hits,
        **latency_figures(run.latencies),
    }


async def _responders_up(client: AgencyClient, bench: Bench) -> None:
    """Until every owner answers a query: its responder subscribed (before, the owner's
    hub queues the query for a person, which would be no measure of the responder)."""
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while time.perf_counter() < deadline:
        bench.procs.check_alive()
        answers = await client.lookup_each(QUERY, OWNERS)
        if all(isinstance(a, Incoming) for a in answers.values()):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"not every owner answered a person query within {READY_TIMEOUT_S:g} s")


async def measure(
    base: Path,
    *,
    rate: float = RATE,
    seconds: float = SECONDS,
    kdf: KdfProfile = KdfProfile.MODERATE,
) -> dict[str, object]:
    """One run on a fresh four-country federation: warm-up, then ``rate`` for ``seconds``."""
    async with running(base, agencies=AGENCIES, kdf=kdf) as bench:
        deployment = bench.deployment
        indexes: dict[str, Path] = {}
        for owner in OWNERS:
            index = indexes[owner] = await asyncio.to_thread(load_index, deployment, owner)
            bench.procs.spawn(
                f"responder-{owner.replace('/', '-')}",
                *("agency", "respond", "--profile", str(deployment.profile(owner))),
                *("--index", str(index)),
            )
        client = await bench.client(REQUESTER)
        await _responders_up(client, bench)
        await one_rate(client, WARMUP_RATE, WARMUP_SECONDS)  # every cache warm
        row = summary(await one_rate(client, rate, seconds))
        row["hub_rss_mib"] = {c: rss_mib(bench.pid(f"hub-{c}")) for c in deployment.countries}
        row["queries_answered_per_index"] = {
            owner: index_stats(indexes[owner]).queries for owner in OWNERS
        }
    return row


async def run(base: Path, *, rate: float = RATE, seconds: float = SECONDS) -> dict[str, object]:
    """``make bench``'s person-query figure, as a key to merge into the results."""
    quiet_client_logs()
    row = await measure(base, rate=rate, seconds=seconds)
    print(f"  person query to 3 countries {rate:g}/s: {row}", flush=True)
    return {"person_query_3_countries": row}


if __name__ == "__main__":
    import tempfile

    from transport import eventloop

    with tempfile.TemporaryDirectory(prefix="ixb-bench-person-") as tmp:
        print(eventloop.run(run(Path(tmp))))
