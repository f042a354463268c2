"""A witness that lost its state says so, cosigns nothing, and trusts again only after a repin.

Real nats-servers and hubs (tests/federation.py); the witness's state is lost
the way it is in life: its audit database is deleted while its trust
directory (the pins, kept apart) stays.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.audit.search import AuditQuery
from protocols.audit import decode_entry
from protocols.checkpoint import log_origin, witness_name
from protocols.errors import WitnessStateError
from tests.federation import Federation, run_ixb, running_federation
from tests.test_audit_federation import exchange, until


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path / "fed") as federation:
        yield federation


def witnessed(fed: Federation, witness: str, origin: str) -> int:
    last = fed.hubs[witness].hub.audit_log.last_witnessed(log_origin(origin))
    return 0 if last is None else last[0]


async def test_witness_state_lost_alarms_until_repinned(fed: Federation) -> None:
    await exchange(fed)
    await until(lambda: witnessed(fed, "MYS", "THA") > 0)
    pin_file = fed.deployment.base / "trust" / "MYS" / "witness-THA.json"
    await until(pin_file.exists)
    pin = json.loads(pin_file.read_text())
    assert pin["peer"] == "THA" and pin["repin_by"] is None
    assert pin["key"].startswith("ed25519:")

    # a clean restart, state kept: no alarm, cosigning goes on
    await fed.stop_hub("MYS")
    await fed.start_hub("MYS")
    before = witnessed(fed, "MYS", "THA")
    await exchange(fed)
    await until(lambda: witnessed(fed, "MYS", "THA") > before)
    assert fed.hubs["MYS"].hub.audit_log.alarms() == []

    # the witness loses its state: its audit database is gone, its pins are not. Its own
    # log comes back from its AUDIT stream (the hub refuses to start on an empty log the
    # stream has outgrown); what it witnessed of THA lived only in that database
    await fed.stop_hub("MYS")
    state = fed.deployment.base / "state" / "MYS"
    for suffix in ("", "-wal", "-shm"):
        (state / f"audit.sqlite{suffix}").unlink(missing_ok=True)
    config = str(fed.deployment.hub_config("MYS"))
    rebuilt = await run_ixb("audit", "rebuild", "--config", config, "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["before"] == 0 < json.loads(rebuilt.stdout)["appended"]
    await fed.start_hub("MYS")
    mys = fed.hubs["MYS"].hub
    await exchange(fed)  # THA's log grows: a checkpoint for MYS to witness
    await until(lambda: any(o == log_origin("THA") for o, _at, _d in mys.audit_log.alarms()))
    alarm = next(d for o, _at, d in mys.audit_log.alarms() if o == log_origin("THA"))
    assert "lost its record" in alarm and "repin" in alarm
    entries = [
        decode_entry(e.data) for e in mys.audit_log.search(AuditQuery(event="witness_alarm"))
    ]
    assert any(e.peer == "THA" and e.code == WitnessStateError.code for e in entries)
    assert mys.metrics.counter_value("ixb_witness_alarms_total", origin="THA") >= 1
    await exchange(fed)
    await asyncio.sleep(2.5)
    assert witnessed(fed, "MYS", "THA") == 0  # nothing cosigned for THA
    # one alarm, however often THA publishes
    entries = [
        decode_entry(e.data) for e in mys.audit_log.search(AuditQuery(event="witness_alarm"))
    ]
    assert sum(e.peer == "THA" for e in entries) == 1

    # the operator checks with THA, then repins: recorded, then THA is cosigned again
    done = await run_ixb(
        "audit", "witness", "repin", "--peer", "THA", "--config", config,
        "--operator", "duty officer A. Rahman",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "repinned ixb.THA by duty officer A. Rahman" in done.stdout
    changed = [
        decode_entry(e.data) for e in mys.audit_log.search(AuditQuery(event="policy_changed"))
    ]
    assert any(e.actor == "duty officer A. Rahman" and e.peer == "THA" for e in changed)
    await exchange(fed)
    await until(lambda: witnessed(fed, "MYS", "THA") > 0, timeout=30)
    tha = fed.hubs["THA"].hub
    size = witnessed(fed, "MYS", "THA")
    await until(
        lambda: any(
            w == witness_name("MYS") and s >= size for w, s, *_ in tha.audit_log.cosignatures()
        )
    )
    assert json.loads(pin_file.read_text())["repin_by"] is None  # pinned again

    # a repin where nothing was lost is refused, one line
    again = await run_ixb("audit", "witness", "repin", "--peer", "THA", "--config", config)
    assert again.returncode == 2
    assert again.stderr.startswith("error ixb.E_USAGE: ") and "nothing to repin" in again.stderr
    assert again.stderr.count("\n") == 1
