"""A clustered country under fault: THA as three nats-servers with R3 streams.

Its own federation (THA clustered, MYS and MMR single servers), steady
traffic, then the node leading THA's ``INGRESS`` and THA's hub are killed at
once. Checked as every scenario is (:mod:`tests.faults.scenarios`): nothing
acknowledged lost, nothing handed over twice, every hub ready again, every
audit log verifying and reconciling, no witness alarm; and here also that
the stream did fail over (another node leads it) and that traffic was
acknowledged while the node was down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.faults.harness import Federation, Traffic, live_federation
from tests.faults.scenarios import CLUSTER_SCENARIOS, CLUSTERED, Scenario, assert_passed, run


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Federation, Traffic]]:
    base = Path(tmp_path_factory.mktemp("cluster"))
    async with live_federation(base, clusters=CLUSTERED) as running:
        yield running


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("scenario", CLUSTER_SCENARIOS, ids=[s.name for s in CLUSTER_SCENARIOS])
async def test_cluster_fault(live: tuple[Federation, Traffic], scenario: Scenario) -> None:
    fed, traffic = live
    assert len(fed.nodes["THA"]) == 3
    replicas = await fed.stream_replicas("THA")
    expected = {"IXB/INGRESS", "IXB/INBOX", "IXB/AUDIT", "MYS_LINK/OUT_MYS", "MYS_LINK/IN_MYS"}
    assert expected <= set(replicas), replicas
    assert set(replicas.values()) == {3}, replicas
    leader_before = await fed.stream_leader("THA", "INGRESS")
    assert_passed(scenario, await run(fed, traffic, scenario))
    # the stream was led elsewhere while its leader was dead (a failover, not a wait)
    assert fed.failovers["THA/INGRESS"] != leader_before.node.name
