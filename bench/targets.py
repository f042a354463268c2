"""The lookup targets: ixb's document checks and person queries as ratios to the lookup floor.

Both sides come from the same run of ``make bench``: the floor from
:mod:`bench.lookup_floor` (``full`` mode), ixb's figures from
:mod:`bench.doc_verify` (document checks over the synchronous path, SPEC
§14; read by :func:`doc_check_figures`) and :mod:`bench.person_query` (a
person query to three countries at once; read by
:func:`person_query_figures`). Each measuring side produces the same
:class:`Figures` per offered rate.

Each target, from the issue "lookups answered in milliseconds":

- document check at 500/s: p50 and p99 each ≤ 1.3x the floor's at 500/s;
- document check at 100/s (unloaded): p50 ≤ 1.3x the floor's at 100/s;
- document check at 1,000/s: every check answered or refused at once with
  ``ixb.E_BUSY`` (answered + refused = sent), and answered p99 ≤ 1.5x the
  floor's at 1,000/s;
- person query to three countries at once, unloaded: p50 ≤ 1.3x the floor's
  single-country p50 at 100/s.

A figure that was not measured (or has no samples) is ``not measured``,
never a pass.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

UNLOADED = 100
LOADED = 500
OVERLOAD = 1000
RATIO = 1.3
OVERLOAD_RATIO = 1.5


@dataclass(frozen=True)
class Figures:
    """One open-loop run at one offered rate."""

    offered_per_s: float
    sent: int
    completed: int
    p50_ms: float | None
    p99_ms: float | None
    refused_busy: int = 0
    """Refused at once with ``ixb.E_BUSY`` (0 if the row does not say)."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Figures:
        return cls(
            offered_per_s=float(row["offered_per_s"]),
            sent=int(row["sent"]),
            completed=int(row["completed"]),
            p50_ms=row.get("p50_ms"),
            p99_ms=row.get("p99_ms"),
            refused_busy=int(row.get("refused_busy", 0)),
        )


@dataclass(frozen=True)
class Verdict:
    name: str
    what: str
    measured: float | None
    floor: float | None
    bound: float
    extra_ok: bool = True
    """A condition besides the ratio (every check answered or refused)."""
    extra_note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.measured is None or self.floor is None or self.floor <= 0:
            return None
        return round(self.measured / self.floor, 2)

    @property
    def outcome(self) -> str:
        if self.ratio is None:
            return "not measured"
        return "PASS" if self.ratio <= self.bound and self.extra_ok else "FAIL"

    def line(self) -> str:
        if self.ratio is None:
            figures = f"ixb {_fmt(self.measured)}, floor {_fmt(self.floor)}"
        else:
            figures = (
                f"{self.ratio:g}x (ixb {_fmt(self.measured)} / floor {_fmt(self.floor)}),"
                f" ≤ {self.bound:g}x wanted"
            )
        note = f"; {self.extra_note}" if self.extra_note else ""
        return f"{self.outcome:<12} {self.what}: {figures}{note}"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:g} ms"


def by_rate(rows: Sequence[Mapping[str, Any]]) -> dict[int, Figures]:
    """Open-loop rows keyed by offered rate (the last row of a rate wins)."""
    return {round(float(r["offered_per_s"])): Figures.from_row(r) for r in rows}


def floor_figures(results: Mapping[str, Any]) -> dict[int, Figures]:
    """The full floor (verify, countersign, awaited group commit per pass) by rate."""
    runs = results.get("lookup_floor_runs") or []
    return by_rate([r for r in runs if r.get("mode") == "full"])


def doc_check_figures(results: Mapping[str, Any]) -> dict[int, Figures]:
    """ixb's document checks by offered rate, from :mod:`bench.doc_verify`'s results.

    Lookups over the synchronous path (``client.lookup``): rows of
    ``offered_per_s``, ``sent``, ``completed``, ``p50_ms``, ``p99_ms`` and
    ``refused_busy`` at 100, 500 and 1,000/s.
    """
    rows = [*(results.get("doc_verify_sweep") or []), *(results.get("doc_verify_overload") or [])]
    return by_rate(rows)


def person_query_figures(results: Mapping[str, Any]) -> Figures | None:
    """A person query to three countries at once, unloaded; None if not measured.

    :mod:`bench.person_query` writes ``person_query_3_countries``: one row as
    above, its latency to the moment all three answers are held.
    """
    row = results.get("person_query_3_countries")
    return Figures.from_row(row) if row else None


def lookup_verdicts(
    doc: Mapping[int, Figures], person: Figures | None, floor: Mapping[int, Figures]
) -> list[Verdict]:
    def p(figs: Mapping[int, Figures], rate: int, which: str) -> float | None:
        f = figs.get(rate)
        return None if f is None else getattr(f, which)

    over = doc.get(OVERLOAD)
    settled = over is not None and over.completed + over.refused_busy == over.sent
    over_note = (
        "not run"
        if over is None
        else f"{over.completed} answered + {over.refused_busy} refused (E_BUSY) of {over.sent}"
    )

    def all_answered(rate: int) -> tuple[bool, str]:
        # a latency bound at a rate means answering that rate: refusing part of it (E_BUSY)
        # to keep the answered ones fast is not a pass
        f = doc.get(rate)
        if f is None:
            return False, "not run"
        return f.completed == f.sent, f"{f.completed} of {f.sent} answered"

    loaded_ok, loaded_note = all_answered(LOADED)
    unloaded_ok, unloaded_note = all_answered(UNLOADED)
    return [
        Verdict(
            "doc_500_p50",
            f"doc check {LOADED}/s p50, all answered",
            p(doc, LOADED, "p50_ms"),
            p(floor, LOADED, "p50_ms"),
            RATIO,
            extra_ok=loaded_ok,
            extra_note=loaded_note,
        ),
        Verdict(
            "doc_500_p99",
            f"doc check {LOADED}/s p99, all answered",
            p(doc, LOADED, "p99_ms"),
            p(floor, LOADED, "p99_ms"),
            RATIO,
            extra_ok=loaded_ok,
            extra_note=loaded_note,
        ),
        Verdict(
            "doc_100_p50",
            f"doc check {UNLOADED}/s p50, all answered",
            p(doc, UNLOADED, "p50_ms"),
            p(floor, UNLOADED, "p50_ms"),
            RATIO,
            extra_ok=unloaded_ok,
            extra_note=unloaded_note,
        ),
        Verdict(
            "doc_1000_p99",
            f"doc check {OVERLOAD}/s answered p99, all answered or E_BUSY",
            p(doc, OVERLOAD, "p99_ms"),
            p(floor, OVERLOAD, "p99_ms"),
            OVERLOAD_RATIO,
            extra_ok=settled,
            extra_note=over_note,
        ),
        Verdict(
            "person_3_p50",
            f"person query to 3 countries p50 (floor: 1 country, {UNLOADED}/s)",
            None if person is None else person.p50_ms,
            p(floor, UNLOADED, "p50_ms"),
            RATIO,
        ),
    ]


def lookup_targets(results: Mapping[str, Any]) -> dict[str, object]:
    """Every lookup target judged on ``results``, as keys to merge into them."""
    verdicts = lookup_verdicts(
        doc_check_figures(results), person_query_figures(results), floor_figures(results)
    )
    out: dict[str, object] = {f"lookup_{v.name}_ratio": v.ratio for v in verdicts}
    out["lookup_targets"] = {v.name: v.line() for v in verdicts}
    return out


def print_targets(results: Mapping[str, Any], out: Any = None) -> None:
    write = (out or sys.stdout).write
    write("\nlookup targets (ratio to the floor of the same run):\n")
    for line in (results.get("lookup_targets") or {}).values():
        write(f"  {line}\n")
