"""The fast fault scenarios, in ``make test``; ``make faults`` runs them all (README).

One federation of real processes for the module: each scenario runs on what
the previous ones left, as a country's hubs would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.faults.harness import Federation, Traffic
from tests.faults.scenarios import SCENARIOS, Scenario, run

FAST = [s for s in SCENARIOS if s.fast]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Federation, Traffic]]:
    fed = await Federation.start(Path(tmp_path_factory.mktemp("faults")))
    traffic = Traffic(fed)
    traffic.start()
    try:
        yield fed, traffic
    finally:
        await traffic.close()
        unclean = await fed.stop()
    assert not unclean, unclean


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", FAST, ids=[s.name for s in FAST])
async def test_fault(live: tuple[Federation, Traffic], scenario: Scenario) -> None:
    fed, traffic = live
    result = await run(fed, traffic, scenario)
    c = result.counts
    assert result.ok, f"{scenario.what}: {c} recovery={result.recovery_s} {result.problems}"
    # what each scenario must have exercised, beyond "nothing went wrong"
    assert c["acknowledged"] > 0 and c["delivered"] >= c["acknowledged"] - c["refused"]
    assert result.recovery_s is not None
