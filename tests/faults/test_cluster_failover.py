"""A clustered country under fault: THA as three nats-servers with R3 streams.

Its own federation (THA clustered with two hub processes, MYS and MMR single
servers), steady traffic, then the node leading THA's ``INGRESS`` and THA's
active hub process are killed at once: brought back after 2 s
(``cluster-failover``), or left dead for 20 s so the standby takes over by
itself (``standby-takeover``). Checked as every scenario is
(:mod:`tests.faults.scenarios`): nothing acknowledged lost, nothing handed
over twice, every hub ready again (THA: one process active, the other
standing by), every audit log verifying (the standby's too, a prefix of the
active one's) and reconciling, no witness alarm; and here also that the
stream did fail over (another node leads it) and, for the takeover, that the
standby waited for the lease to lapse and is the active process at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from broker.lease import LEASE_TTL_S
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
    assert [h.instance for h in fed.processes("THA")] == ["a", "b"]
    leader_before = await fed.stream_leader("THA", "INGRESS")
    result = await run(fed, traffic, scenario)
    assert_passed(scenario, result)
    # the stream was led elsewhere while its leader was dead (a failover, not a wait)
    assert fed.failovers["THA/INGRESS"] != leader_before.node.name
    if scenario.name == "standby-takeover":
        # not before the lease could lapse (renewed every 2 s, 10 s TTL), not after the
        # killed process came back
        took = result.measured["takeover_s"]
        assert isinstance(took, float) and LEASE_TTL_S * 0.8 - 1 <= took < 20, result.measured
        assert result.measured["active"] != result.measured["killed"]["hub"]  # type: ignore[index]
