"""A country's hub backed up, its state destroyed, restored: it resumes where it stopped.

Over real nats-servers and hubs: THA's hub refuses to be backed up while it runs; stopped,
``ixb hub backup`` copies its state; the state and key file are deleted; ``ixb hub restore``
refuses a tampered backup and another country's, then puts THA's back; the restarted hub
still refuses a replay of what it routed before, routes a new alert, its audit log verifies
and extends what MYS witnessed, and MYS's witness raises no alarm.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from broker.audit.log import AuditLog
from broker.audit.shipping import UNKNOWN_ACCEPTANCES_META
from broker.store import HubStore
from protocols.checkpoint import witness_name
from protocols.errors import AuditStreamError
from protocols.examples import example_bodies
from protocols.messages import ReceiptStatus
from tests.federation import Federation, run_ixb, running_federation
from transport.clock import wall_ms

SENDER, RECIPIENT = "THA/DSI-ATHD", "MYS/RMP-ATIPSOM"
WITNESS = witness_name("MYS")


async def _ixb(*args: str) -> dict[str, object]:
    done = await run_ixb(*args, "--json")
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


async def _witnessed_beyond(federation: Federation, size: int, timeout: float = 30.0) -> int:
    """Until MYS cosigned a THA checkpoint larger than ``size``; that size."""
    tha = federation.hubs["THA"].hub
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        cosigned = [s for w, s, _n, _a in tha.audit_log.cosignatures() if w == WITNESS]
        if cosigned and max(cosigned) > size:
            return max(cosigned)
        assert asyncio.get_running_loop().time() < deadline, f"MYS cosigned {cosigned}"
        await asyncio.sleep(0.2)


async def _refused_restores(
    federation: Federation, backup: Path, tampered: Path, state: Path
) -> None:
    """A tampered backup and another country's are refused, and nothing is written."""
    config = str(federation.deployment.hub_config("THA"))
    shutil.copytree(backup, tampered)
    hub_db = tampered / "state" / "hub.sqlite"
    hub_db.write_bytes(hub_db.read_bytes()[:-1] + b"\x00")
    refused = await run_ixb("hub", "restore", "--config", config, "--from", str(tampered))
    assert refused.returncode == 2 and "differs from the manifest" in refused.stderr
    assert not (state / "audit.sqlite").exists()
    mys_config = str(federation.deployment.hub_config("MYS"))
    other = await run_ixb("hub", "restore", "--config", mys_config, "--from", str(backup))
    assert other.returncode == 2 and "a backup of THA, not MYS" in other.stderr


async def test_a_hub_restored_from_its_backup_resumes_and_its_witnesses_stay_content(
    tmp_path: Path,
) -> None:
    async with running_federation(tmp_path) as federation:
        deployment = federation.deployment
        config = str(deployment.hub_config("THA"))
        sender = await federation.client(SENDER)
        alert = example_bodies(sender.clock())["alert"]
        first = await sender.send(alert, [RECIPIENT])
        await sender.wait_receipt(first, ReceiptStatus.DELIVERED, timeout=20)
        await _witnessed_beyond(federation, 0)

        busy = await run_ixb("hub", "backup", "--config", config, "--out", str(tmp_path / "b0"))
        assert busy.returncode == 2 and "needs the hub stopped" in busy.stderr, busy.stderr
        assert "Traceback" not in busy.stderr

        hub = federation.hubs["THA"].hub
        state = hub.config.path(hub.config.hub.state_dir)
        key = hub.config.path(hub.config.hub.key_file)
        await federation.stop_hub("THA")
        backup = tmp_path / "backup-THA"
        made = await _ixb("hub", "backup", "--config", config, "--out", str(backup))
        names = {f["name"] for f in made["files"]}  # type: ignore[union-attr]
        assert {"state/audit.sqlite", "state/hub.sqlite", f"key/{key.name}"} <= names
        assert any(n.startswith("trust/") for n in names)
        backed_up = int(made["audit_size"])  # type: ignore[call-overload]
        assert backed_up > 0
        assert (backup / "state" / "audit.sqlite").stat().st_mode & 0o077 == 0

        # the disk is lost: state, trust and the key file
        shutil.rmtree(state)
        key.unlink()

        await _refused_restores(federation, backup, tmp_path / "tampered", state)

        restored = await _ixb("hub", "restore", "--config", config, "--from", str(backup))
        assert restored["audit_size"] == backed_up
        assert key.exists()

        hub = await federation.start_hub("THA")
        # what it routed before the loss is still known: the same envelope again is a replay
        assert hub.store.known(SENDER, first) is not None
        second = await sender.send(alert, [RECIPIENT])
        await sender.wait_receipt(second, ReceiptStatus.DELIVERED, timeout=30)
        await _witnessed_beyond(federation, backed_up)
        log = AuditLog(state / "audit.sqlite")
        try:
            log.verify_storage()
            assert log.size > backed_up
        finally:
            log.close()
        assert federation.hubs["MYS"].hub.audit_log.alarms() == []


async def _refused_before_the_rebuild(federation: Federation, state: Path, size: int) -> None:
    """Started as it is, the hub would fork what MYS cosigned: it refuses, naming the way
    out, and records nothing."""
    with pytest.raises(AuditStreamError, match="ixb audit rebuild"):
        await federation.start_hub("THA")
    federation.hubs.pop("THA")
    untouched = AuditLog(state / "audit.sqlite")
    try:
        assert untouched.size == size
    finally:
        untouched.close()


def _replays_looked_up_in_the_log(state: Path) -> None:
    """After the rebuild, the hub looks up what its store never knew in the log."""
    store = HubStore(state / "hub.sqlite")
    try:
        until = store.meta(UNKNOWN_ACCEPTANCES_META)
        assert until is not None and int(until) > wall_ms() + 30 * 86_400_000
    finally:
        store.close()


async def test_an_older_backup_restored_is_rebuilt_from_the_stream_and_no_witness_alarms(
    tmp_path: Path,
) -> None:
    """The backup is older than what MYS cosigned since: restored alone, THA's log would be
    shorter than a checkpoint MYS holds, and its next checkpoints a fork. ``ixb audit
    rebuild`` appends what THA's hub had copied into the AUDIT stream (every cosigned
    checkpoint is within it), and the restarted hub's checkpoints extend what MYS cosigned."""
    async with running_federation(tmp_path) as federation:
        config = str(federation.deployment.hub_config("THA"))
        sender = await federation.client(SENDER)
        alert = example_bodies(sender.clock())["alert"]
        first = await sender.send(alert, [RECIPIENT])
        await sender.wait_receipt(first, ReceiptStatus.DELIVERED, timeout=20)
        await _witnessed_beyond(federation, 0)
        hub = federation.hubs["THA"].hub
        state = hub.config.path(hub.config.hub.state_dir)

        await federation.stop_hub("THA")
        backup = tmp_path / "backup-old"
        made = await _ixb("hub", "backup", "--config", config, "--out", str(backup))
        backed_up = int(made["audit_size"])  # type: ignore[call-overload]

        await federation.start_hub("THA")
        for _ in range(3):
            more = await sender.send(alert, [RECIPIENT])
            await sender.wait_receipt(more, ReceiptStatus.DELIVERED, timeout=30)
        cosigned = await _witnessed_beyond(federation, backed_up)
        await federation.stop_hub("THA")

        shutil.rmtree(state)
        restored = await _ixb("hub", "restore", "--config", config, "--from", str(backup))
        assert restored["audit_size"] == backed_up < cosigned
        await _refused_before_the_rebuild(federation, state, backed_up)
        rebuilt = await _ixb("audit", "rebuild", "--config", config)
        assert rebuilt["before"] == backed_up and rebuilt["appended"] > 0
        assert rebuilt["size"] >= cosigned, rebuilt
        again = await _ixb("audit", "rebuild", "--config", config)
        assert again["appended"] == 0 and again["size"] == rebuilt["size"]
        _replays_looked_up_in_the_log(state)

        await federation.start_hub("THA")
        last = await sender.send(alert, [RECIPIENT])
        await sender.wait_receipt(last, ReceiptStatus.DELIVERED, timeout=30)
        await _witnessed_beyond(federation, int(rebuilt["size"]))  # type: ignore[call-overload]
        assert federation.hubs["MYS"].hub.audit_log.alarms() == []
        log = AuditLog(state / "audit.sqlite")
        try:
            log.verify_storage()
        finally:
            log.close()


async def test_rebuild_refuses_while_the_hub_runs(
    tmp_path: Path,
) -> None:
    async with running_federation(tmp_path) as federation:
        config = str(federation.deployment.hub_config("THA"))
        busy = await run_ixb("audit", "rebuild", "--config", config)
        assert busy.returncode == 2 and "needs the hub stopped" in busy.stderr, busy.stderr
        assert "Traceback" not in busy.stderr
