"""The audit log across borders: witnessed, reconcilable, exportable, and a rewrite caught."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.audit.search import AuditQuery
from protocols.checkpoint import log_origin, witness_name
from protocols.examples import example_bodies
from protocols.identifiers import format_message_id
from protocols.messages import ReceiptStatus
from tests.federation import Federation, run_ixb, running_federation
from tests.test_cli_json import assert_times_iso
from transport.connect import connect
from transport.streams import AUDIT_STREAM


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path / "fed") as federation:
        yield federation


async def until(check: object, timeout: float = 20.0) -> None:
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def exchange(fed: Federation) -> bytes:
    sender = await fed.client("THA/DSI-ATHD")
    msg_id = await sender.send(example_bodies(0)["alert"], ["MYS/RMP-ATIPSOM"])
    await sender.wait_receipt(msg_id, ReceiptStatus.DELIVERED)
    return msg_id


async def test_checkpoints_are_cosigned_and_logs_reconcile(fed: Federation, tmp_path: Path) -> None:
    msg_id = format_message_id(await exchange(fed))
    tha, mys = fed.hubs["THA"].hub, fed.hubs["MYS"].hub
    # MYS witnessed THA's log up to its current size and THA holds MYS's cosignature
    await until(
        lambda: (
            (mys.audit_log.last_witnessed(log_origin("THA")) or (0,))[0]
            >= (tha.audit_log.latest_checkpoint() or (1,))[0]
            > 0
        )
    )
    await until(lambda: any(w == witness_name("MYS") for w, *_ in tha.audit_log.cosignatures()))
    await until(lambda: tha.audit.reconcile("MYS", grace_ms=0).matched >= 2)
    report = tha.audit.reconcile("MYS", grace_ms=0)
    assert report.clean, report
    # MYS sees the same once THA's next checkpoint has brought it THA's side
    await until(lambda: mys.audit.reconcile("THA", grace_ms=0).clean)
    assert mys.audit.reconcile("THA", grace_ms=0).matched >= 2

    # idle hubs stop logging each other: a cosigning is not logged every time (else each
    # witness entry would make a checkpoint for the other to witness, once a second forever)
    def latest_cosigned() -> bool:
        latest = tha.audit_log.latest_checkpoint()
        return latest is not None and any(
            w == witness_name("MYS") for w, *_ in tha.audit_log.cosignatures(latest[0])
        )

    await until(latest_cosigned)
    await asyncio.sleep(2.5)
    await until(latest_cosigned)
    sizes = (tha.audit_log.size, mys.audit_log.size)
    await asyncio.sleep(3.0)
    assert (tha.audit_log.size, mys.audit_log.size) == sizes

    config = str(fed.deployment.hub_config("THA"))
    export = tmp_path / "export"
    done = await run_ixb("audit", "export", "--config", config, "--out", str(export))
    assert done.returncode == 0, done.stderr
    federation = str(fed.deployment.base / "federation.toml")
    ok = await run_ixb("audit", "verify", str(export), "--federation", federation)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout and "cosigned by" in ok.stdout and "MYS" in ok.stdout
    verified = await run_ixb("audit", "verify", str(export), "--federation", federation, "--json")
    assert verified.returncode == 0, verified.stderr
    summary = json.loads(verified.stdout)
    assert summary["valid"] is True and summary["witnessed_by"] and summary["time"]
    assert_times_iso(summary)
    # the export was itself recorded in the log
    assert tha.audit_log.search(AuditQuery(event="audit_export"), limit=5)
    # and ``ixb audit search`` / ``show`` find entries by the same kind of query
    found = await run_ixb(
        "audit", "search", "--config", config, "--event", "audit_export", "--json"
    )
    assert found.returncode == 0, found.stderr
    assert [r["event"] for r in json.loads(found.stdout)["entries"]] == ["audit_export"]
    shown = await run_ixb("audit", "show", msg_id, "--config", config, "--json")
    assert shown.returncode == 0, shown.stderr
    assert_times_iso(json.loads(found.stdout))
    trail = json.loads(shown.stdout)["trail"]
    assert_times_iso(json.loads(shown.stdout))
    assert "accepted" in {r["event"] for r in trail}
    assert {r["msg_id"] for r in trail} == {msg_id}

    lines = (export / "entries.jsonl").read_bytes().splitlines()
    for name, edit in {
        "altered": lambda ls: [ls[0].replace(b'"leaf": "', b'"leaf": "AA'), *ls[1:]],
        "deleted": lambda ls: ls[1:],
        "reordered": lambda ls: [ls[1], ls[0], *ls[2:]],
    }.items():
        bad = tmp_path / name
        bad.mkdir()
        for f in ("manifest.json", "checkpoint.note"):
            (bad / f).write_bytes((export / f).read_bytes())
        (bad / "entries.jsonl").write_bytes(b"\n".join(edit(lines)) + b"\n")
        refused = await run_ixb("audit", "verify", str(bad), "--federation", federation)
        assert refused.returncode == 2, (name, refused.stdout)
        assert refused.stderr.startswith("error ixb.E_"), refused.stderr


async def test_a_hub_that_rewrites_its_log_is_caught_by_its_witness(fed: Federation) -> None:
    await exchange(fed)
    tha, mys = fed.hubs["THA"].hub, fed.hubs["MYS"].hub
    await until(lambda: (mys.audit_log.last_witnessed(log_origin("THA")) or (0,))[0] > 0)
    await fed.stop_hub("THA")
    # THA's operator rewrites history: drops the log, and its copy in THA's own NATS (a
    # hub whose log the AUDIT stream has outgrown refuses to start), and starts afresh
    state = fed.deployment.base / "state" / "THA"
    for suffix in ("", "-wal", "-shm"):
        (state / f"audit.sqlite{suffix}").unlink(missing_ok=True)
    plan = fed.deployment.plan
    nc = await connect(
        plan.client_url("THA"),
        auth=plan.hub_credentials("THA"),
        name="operator",
        ca_file=plan.client_ca_file("THA"),
    )
    try:
        await nc.jetstream().purge_stream(AUDIT_STREAM)
    finally:
        await nc.close()
    await fed.start_hub("THA")
    await until(mys.audit_log.alarms, timeout=30)
    origin, _at, detail = mys.audit_log.alarms()[0]
    assert origin == log_origin("THA") and "rewritten" in detail
    assert mys.audit_log.search(AuditQuery(event="witness_alarm"), limit=5)
    assert mys.metrics.counter_value("ixb_witness_alarms_total", origin="THA") >= 1
    assert tha is not fed.hubs["THA"].hub


def test_tampering_with_stored_entries_is_detected(tmp_path: Path) -> None:
    from broker.audit.log import AuditLog
    from broker.audit.records import AuditRecord

    log = AuditLog(tmp_path / "a.sqlite")
    log.append([AuditRecord(data=bytes([i]) * 40, at_ms=i, event="accepted") for i in range(9)])
    log.verify_storage()
    log.close()
    db = sqlite3.connect(tmp_path / "a.sqlite")
    db.execute("UPDATE entries SET data = ? WHERE idx = 4", (b"x" * 40,))
    db.commit()
    db.close()
    log = AuditLog(tmp_path / "a.sqlite")
    from protocols.errors import MerkleProofError

    with pytest.raises(MerkleProofError):
        log.verify_storage()
    log.close()
