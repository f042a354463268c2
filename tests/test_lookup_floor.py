"""The lookup floor (bench/lookup_floor.py, floor_roles.py) and the targets (bench/targets.py).

The floor runs for real (two leaf-linked nats-servers, four role processes)
at a tiny rate for a second; performance is not asserted, only that every
lookup came back, every relay pass was recorded, and the results carry
their keys.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bench import lookup_floor
from bench.floor_roles import SIG_BYTES, WARMUP_REQUESTS, GroupCommitter, Signer
from bench.targets import Figures, lookup_targets, lookup_verdicts

RATE = 20.0


async def test_the_floor_answers_every_lookup_and_records_every_pass(tmp_path: Path) -> None:
    results = await lookup_floor.run(
        levels=(("full", RATE), ("direct", RATE)), seconds=1.0, base=tmp_path
    )
    for key in (
        "lookup_floor_20_p50_ms",
        "lookup_floor_20_p99_ms",
        "lookup_floor_20_sent",
        "lookup_floor_20_completed",
        "lookup_floor_direct_20_p50_ms",
        "lookup_floor_direct_20_p99_ms",
    ):
        assert key in results, key
    runs = results["lookup_floor_runs"]
    assert isinstance(runs, list)
    assert [r["mode"] for r in runs] == ["full", "direct"]
    for run in runs:
        assert run["sent"] == RATE * 1.0
        assert run["completed"] == run["sent"], run
        assert run["failed"] == run["wrong"] == 0
        assert isinstance(run["p50_ms"], float)
    full = runs[0]
    lookups = full["sent"] + WARMUP_REQUESTS
    for name in ("relay-THA", "relay-MYS"):
        relay = full["relays"][name]
        assert relay["bad_signatures"] == 0
        assert relay["rows"] == 2 * lookups  # the request's pass and the answer's
        with sqlite3.connect(tmp_path / f"full-{RATE:g}" / f"{name}.sqlite") as db:
            (rows,) = db.execute("SELECT count(*) FROM passes").fetchone()
        assert rows == 2 * lookups


async def test_the_group_committer_puts_many_appends_in_one_commit(tmp_path: Path) -> None:
    committer = GroupCommitter(tmp_path / "log.sqlite")
    await committer.start()
    try:
        await asyncio.gather(
            *(committer.append((bytes([i]), "request", i, b"d", b"s")) for i in range(200))
        )
    finally:
        await committer.close()
    assert committer.rows == 200
    assert committer.commits < 200
    with sqlite3.connect(tmp_path / "log.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT count(*) FROM passes").fetchone() == (200,)


def test_a_countersignature_verifies_and_a_changed_byte_does_not() -> None:
    seed, public = lookup_floor._keypair()
    other_seed, other_public = lookup_floor._keypair()
    signed = Signer(seed).countersign(b"x" * 1024)
    assert len(signed) == 1024 + SIG_BYTES
    assert Signer.verify(signed, public)
    assert not Signer.verify(signed, other_public)
    assert not Signer.verify(b"y" + signed[1:], public)
    twice = Signer(other_seed).countersign(signed)
    assert Signer.verify(twice, other_public)
    assert Signer.verify(twice[:-SIG_BYTES], public)


def _figs(rate: int, p50: float | None, p99: float | None, **kw: int) -> Figures:
    sent = kw.pop("sent", 100)
    return Figures(rate, sent, kw.pop("completed", sent), p50, p99, **kw)


FLOOR = {100: _figs(100, 7.0, 12.0), 500: _figs(500, 22.0, 38.0), 1000: _figs(1000, 40.0, 80.0)}


def test_targets_pass_within_their_ratio_and_fail_beyond() -> None:
    doc = {
        100: _figs(100, 9.0, 15.0),  # 1.29x
        500: _figs(500, 29.0, 50.0),  # p50 1.32x: FAIL; p99 1.32x: FAIL
        1000: _figs(1000, 50.0, 119.0, sent=1000, completed=600, refused_busy=400),  # 1.49x
    }
    verdicts = {v.name: v for v in lookup_verdicts(doc, _figs(100, 9.1, 20.0), FLOOR)}
    assert verdicts["doc_100_p50"].outcome == "PASS"
    assert verdicts["doc_500_p50"].outcome == "FAIL"
    assert verdicts["doc_500_p99"].outcome == "FAIL"
    assert verdicts["doc_1000_p99"].outcome == "PASS"
    assert verdicts["person_3_p50"].outcome == "PASS"
    assert verdicts["doc_500_p50"].ratio == 1.32


def test_overload_fails_when_a_check_is_neither_answered_nor_refused() -> None:
    doc = {1000: _figs(1000, 50.0, 60.0, sent=1000, completed=600, refused_busy=399)}
    (verdict,) = [v for v in lookup_verdicts(doc, None, FLOOR) if v.name == "doc_1000_p99"]
    assert verdict.ratio == 0.75
    assert verdict.outcome == "FAIL"
    assert "600 answered + 399 refused" in verdict.line()


def test_what_was_not_measured_is_never_a_pass() -> None:
    verdicts = lookup_verdicts({}, None, FLOOR)
    assert {v.outcome for v in verdicts} == {"not measured"}
    no_floor = lookup_verdicts({500: _figs(500, 1.0, 1.0)}, None, {})
    assert {v.outcome for v in no_floor} == {"not measured"}


def test_the_targets_read_doc_verify_and_the_floor_from_one_results_dict() -> None:
    results = {
        "doc_verify_sweep": [
            {
                "offered_per_s": 100.0,
                "sent": 500,
                "completed": 500,
                "p50_ms": 390.0,
                "p99_ms": 727.0,
            }
        ],
        "lookup_floor_runs": [
            {"mode": "bare", "offered_per_s": 100.0, "sent": 9, "completed": 9, "p50_ms": 1.0},
            {"mode": "full", "offered_per_s": 100.0, "sent": 9, "completed": 9, "p50_ms": 7.8},
        ],
    }
    out = lookup_targets(results)
    assert out["lookup_doc_100_p50_ratio"] == 50.0
    lines = out["lookup_targets"]
    assert isinstance(lines, dict)
    assert lines["doc_100_p50"].startswith("FAIL")
    assert lines["doc_500_p50"].startswith("not measured")


def test_a_fast_p50_bought_by_refusing_part_of_the_load_is_not_a_pass() -> None:
    doc = {500: _figs(500, 20.0, 30.0, sent=1000, completed=450, refused_busy=550)}
    verdicts = {v.name: v for v in lookup_verdicts(doc, None, FLOOR)}
    for name in ("doc_500_p50", "doc_500_p99"):
        assert verdicts[name].ratio is not None and verdicts[name].ratio <= 1.3
        assert verdicts[name].outcome == "FAIL"
        assert "450 of 1000 answered" in verdicts[name].line()
