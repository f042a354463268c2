"""The person-query benchmark (bench/person_query.py) and its target (bench/targets.py).

The benchmark runs for real (four countries' hubs, three owners' responders
answering from their person indexes) at a tiny rate for two seconds;
performance is not asserted, only that every query got its three answers
with the expected hits and no-hit, and that the row carries what the
target reads.
"""

from __future__ import annotations

from pathlib import Path

from agency_client.personindex import parse_export
from bench import person_query, targets
from protocols.keys import KdfProfile

RATE = 2.0
SECONDS = 2.0


async def test_every_query_gets_its_three_answers_and_the_target_reads_the_row(
    tmp_path: Path,
) -> None:
    row = await person_query.measure(
        tmp_path, rate=RATE, seconds=SECONDS, kdf=KdfProfile.INTERACTIVE
    )
    sent = int(RATE * SECONDS)
    assert row["sent"] == sent
    assert row["completed"] == sent, row
    assert row["refused_busy"] == row["queued"] == row["send_errors"] == 0, row
    assert row["wrong_answers"] == 0, row
    assert row["hits"] == 2 * sent  # MYS and MMR hold the person, VNM does not
    assert row["no_hits"] == sent
    assert row["countries"] == ["MYS", "MMR", "VNM"]
    answered = row["queries_answered_per_index"]
    assert isinstance(answered, dict)
    # each owner's responder answered from its index: the index recorded every query
    assert all(n >= sent for n in answered.values()), answered

    figures = targets.person_query_figures({"person_query_3_countries": row})
    assert figures is not None
    assert (figures.offered_per_s, figures.sent, figures.completed) == (RATE, sent, sent)
    assert isinstance(figures.p50_ms, float)
    assert isinstance(figures.p99_ms, float)
    assert figures.p50_ms <= figures.p99_ms
    floor = {"mode": "full", "offered_per_s": 100.0, "sent": 1, "completed": 1}
    judged = targets.lookup_targets(
        {
            "person_query_3_countries": row,
            "lookup_floor_runs": [{**floor, "p50_ms": figures.p50_ms, "p99_ms": 1.0}],
        }
    )
    assert judged["lookup_person_3_p50_ratio"] == 1.0


def test_each_owner_holds_the_queried_person_or_not() -> None:
    for owner, reference in person_query.HELD.items():
        rows = parse_export(person_query.persons_export(owner).encode(), "csv", owner)
        assert len(rows) == person_query.PERSONS
        held = [r for r in rows if r.surname == "Sample"]
        assert [r.reference for r in held] == ([reference] if reference else [])
        assert person_query.persons_export(owner) == person_query.persons_export(owner)
