"""The fast fault scenarios, in ``make test``; ``make faults`` runs them all (README).

One federation of real processes for the module: each scenario runs on what
the previous ones left, as a country's hubs would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.faults.harness import Federation, Traffic, live_federation
from tests.faults.scenarios import SCENARIOS, Scenario, assert_passed, run

FAST = [s for s in SCENARIOS if s.fast]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Federation, Traffic]]:
    async with live_federation(Path(tmp_path_factory.mktemp("faults"))) as running:
        yield running


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", FAST, ids=[s.name for s in FAST])
async def test_fault(live: tuple[Federation, Traffic], scenario: Scenario) -> None:
    fed, traffic = live
    assert_passed(scenario, await run(fed, traffic, scenario))
