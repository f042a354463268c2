"""The adaptive lookup limit against a simulated hub: overload waits stay short, nothing
is refused below capacity."""

from __future__ import annotations

import heapq
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.limit import AdaptiveLimit


def simulate(
    offered_per_s: float, capacity_per_s: float, base_ms: float, seconds: float, ceiling: int = 64
) -> tuple[AdaptiveLimit, list[float], int]:
    """A hub whose CPU serves ``capacity_per_s`` lookups a second, one at a time, each also
    waiting ``base_ms`` elsewhere (network, responder). Returns the limit, the times the
    admitted lookups took in the last second, and how many were refused."""
    limit = AdaptiveLimit(ceiling)
    service = 1000 / capacity_per_s
    gap = 1000 / offered_per_s
    in_flight, refused, cpu_free = 0, 0, 0.0
    ends: list[tuple[float, float, int]] = []  # (end, arrival, in flight at arrival)
    took: list[tuple[float, float]] = []
    t = 0.0
    while t < seconds * 1000:
        while ends and ends[0][0] <= t:
            end, arrived, was = heapq.heappop(ends)
            in_flight -= 1
            limit.sample(end - arrived, was, int(end))
            took.append((end, end - arrived))
        if in_flight >= limit.current:
            refused += 1
        else:
            in_flight += 1
            cpu_free = max(cpu_free, t) + service
            heapq.heappush(ends, (cpu_free + base_ms, t, in_flight))
        t += gap
    last = [d for end, d in took if end > (seconds - 1) * 1000]
    return limit, last, refused


def test_under_capacity_nothing_is_refused_and_the_limit_stays_open() -> None:
    limit, took, refused = simulate(100, 200, base_ms=10, seconds=10)
    assert refused == 0
    assert limit.current == 64
    assert statistics.median(took) < 20


def test_overload_keeps_waits_near_the_unloaded_time_instead_of_ceiling_over_throughput() -> None:
    # a fixed limit of 64 at 200/s would hold each lookup ~320 ms
    limit, took, refused = simulate(500, 200, base_ms=10, seconds=10)
    unloaded = 10 + 1000 / 200
    assert statistics.median(took) < 4 * unloaded, statistics.median(took)
    assert limit.current < 16
    assert refused > 0
    # and the hub stays busy: the limit did not starve it (about 200/s still answered)
    assert len(took) >= 0.9 * 200


@settings(max_examples=40, deadline=None)
@given(
    samples=st.lists(
        st.tuples(st.floats(0, 10_000), st.integers(0, 500), st.integers(0, 10_000)),
        max_size=300,
    ),
    ceiling=st.integers(1, 200),
)
def test_the_limit_stays_between_its_bounds(
    samples: list[tuple[float, int, int]], ceiling: int
) -> None:
    limit = AdaptiveLimit(ceiling)
    now = 0
    for took, in_flight, step in samples:
        now += step
        limit.sample(took, in_flight, now)
        assert min(limit.floor, ceiling) <= limit.current <= ceiling


@pytest.mark.parametrize("ceiling", [1, 3])
def test_a_tiny_ceiling_is_kept(ceiling: int) -> None:
    limit, _took, _refused = simulate(500, 200, base_ms=10, seconds=3, ceiling=ceiling)
    assert limit.current <= ceiling
