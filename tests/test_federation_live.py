"""A new federation version taken into use live, and a hub key rotated end to end.

Three real hubs on real nats-servers under continuous traffic: MYS gets a new
hub key in version 2 (signed by MYS's old key and THA's), every operator runs
``ixb federation install`` (no restart), then MYS restarts with its new key.
Nothing sent is lost or refused, MYS's new directories and checkpoints verify
at THA and MMR, what MYS signed before the switch still verifies, and no
witness raises an alarm (SPEC §12, Key validity across versions).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections import Counter
from pathlib import Path

import pytest

from agency_client.sdk import AgencyClient, Refused
from broker.audit.search import AuditQuery
from protocols.audit import AuditEvent, decode_entry
from protocols.checkpoint import (
    log_origin,
    verify_checkpoint,
    verify_checkpoint_by_any,
    witness_name,
)
from protocols.directory import verify_directory
from protocols.errors import IxbError, SignatureError
from protocols.examples import example_bodies
from protocols.federation import (
    FederationFile,
    TrustAnchors,
    history,
    parse_federation_file,
    propose,
    render_federation_file,
    sign_version,
)
from protocols.identifiers import hub_of
from protocols.keys import (
    Identity,
    KeyAlg,
    SigningKeyPair,
    key_id,
    open_keyfile,
    read_nats_public,
)
from protocols.messages import Receipt
from tests.federation import PASSPHRASE, Federation, run_ixb, running_federation
from tests.test_audit_federation import until
from tests.test_cli import assert_one_line_error

FLOWS = (
    ("THA/DSI-ATHD", "MYS/RMP-ATIPSOM"),
    ("MYS/RMP-ATIPSOM", "THA/DSI-ATHD"),
    ("MMR/MOHA-ATTU", "MYS/RMP-ATIPSOM"),
    ("MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"),
)


class Traffic:
    """Alerts on every flow every ``period`` seconds; every arrival and refusal counted."""

    def __init__(self, clients: dict[str, AgencyClient], period: float = 0.15) -> None:
        self.clients = clients
        self.period = period
        self.sent: dict[bytes, str] = {}
        self.arrived: Counter[bytes] = Counter()
        self.refused: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._send()))
        self._tasks += [asyncio.create_task(self._read(c)) for c in self.clients.values()]

    async def _send(self) -> None:
        body = example_bodies(0)["alert"]
        while not self._stop.is_set():
            for sender, to in FLOWS:
                msg_id = await self.clients[sender].send(body, [to])
                self.sent[msg_id] = f"{sender}→{to}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.period)

    async def _read(self, client: AgencyClient) -> None:
        while True:
            for item in await client.fetch(timeout=0.5):
                if isinstance(item, Refused):
                    self.refused.append(f"{client.principal}: {item.error.code} {item.error}")
                    continue
                await item.ack()
                if not isinstance(item.body, Receipt):
                    self.arrived[item.header.id] += 1

    async def stop_sending(self) -> None:
        self._stop.set()
        await self._tasks[0]

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def anchors(fed: FederationFile) -> TrustAnchors:
    return TrustAnchors(fed.name, fed.trust.hubs)


def policy_changes(fed: Federation, country: str) -> list[tuple[str | None, str]]:
    log = fed.hubs[country].hub.audit_log
    out = []
    for stored in log.search(AuditQuery(event=AuditEvent.POLICY_CHANGED.value)):
        entry = decode_entry(stored.data)
        out.append((entry.actor, entry.detail or ""))
    return out


async def test_hub_key_rotation_live_under_traffic(tmp_path: Path) -> None:  # noqa: PLR0915
    async with running_federation(tmp_path / "fed") as fed:
        dep = fed.deployment
        v1_path = dep.base / "federation.toml"
        v1 = parse_federation_file(v1_path.read_text())
        clients = {a: await fed.client(a) for a in ("THA/DSI-ATHD", "MYS/RMP-ATIPSOM",
                                                    "MMR/MOHA-ATTU")}  # fmt: skip
        traffic = Traffic(clients)
        traffic.start()
        try:
            await until(lambda: len(traffic.arrived) >= 8, timeout=30)

            # MYS's operator makes a new hub key; version 2 carries it
            new_key = tmp_path / "MYS-HUB-new.key"
            # (its NATS logins carried over: the server knows their public nkeys)
            old_key = dep.key_file(hub_of("MYS"))
            made = await run_ixb("keys", "new", "--hub", "MYS/HUB", "--out", str(new_key),
                                 "--kdf", "interactive", "--nats-from", str(old_key))  # fmt: skip
            assert made.returncode == 0, made.stderr
            assert read_nats_public(new_key.read_bytes()) == read_nats_public(old_key.read_bytes())
            foreign = await run_ixb("keys", "new", "--hub", "MYS/HUB", "--out",
                                    str(tmp_path / "x.key"), "--kdf", "interactive",
                                    "--nats-from", str(dep.key_file(hub_of("THA"))))  # fmt: skip
            assert_one_line_error(foreign, "ixb.E_USAGE")
            new_mys = open_keyfile(new_key.read_bytes(), PASSPHRASE)
            v2 = propose(v1, keys={"MYS": new_mys.signing.public})
            for country in ("MYS", "THA"):  # MYS signs with its old key: the one v1 lists
                key = dep.key_file(hub_of(country)).read_bytes()
                v2 = sign_version(v2, open_keyfile(key, PASSPHRASE))
            v2_path = tmp_path / "federation-v2.toml"
            v2_path.write_text(render_federation_file(v2))

            # refusals first, one line each, nothing installed
            not_enough = tmp_path / "v2-one-signature.toml"
            only_mys = sign_version(
                propose(v1, keys={"MYS": new_mys.signing.public}),
                open_keyfile(dep.key_file(hub_of("MYS")).read_bytes(), PASSPHRASE),
            )
            not_enough.write_text(render_federation_file(only_mys))
            tha_config = str(dep.hub_config("THA"))
            assert_one_line_error(
                await run_ixb("federation", "install", str(not_enough), "--config", tha_config),
                "ixb.E_SIGNATURE",
            )
            skipped = tmp_path / "v3.toml"
            skipped.write_text(render_federation_file(propose(v2, threshold=3)))
            assert_one_line_error(
                await run_ixb("federation", "install", str(skipped), "--config", tha_config),
                "ixb.E_CONFIG",
            )

            # every operator installs version 2 into the running hub
            loop = asyncio.get_running_loop()
            for country in ("THA", "MMR", "MYS"):
                done = await run_ixb(
                    "federation", "install", str(v2_path), "--config", str(dep.hub_config(country))
                )
                assert done.returncode == 0, done.stderr
                assert "installed version 2" in done.stdout
                assert "change the key of MYS/HUB" in done.stdout
            installed_at = loop.time()
            for country in ("THA", "MMR", "MYS"):
                hub = fed.hubs[country].hub
                await until(
                    lambda hub=hub: hub.federation is not None and hub.federation.version == 2
                )
                assert hub.keys.trust.hubs["MYS"] == new_mys.signing.public
                changes = policy_changes(fed, country)
                assert any(
                    actor is not None and actor.startswith("cli:")
                    and detail == f"federation v1 {v1.digest()} → federation v2 {v2.digest()}"
                    for actor, detail in changes
                ), changes  # fmt: skip
                # MYS's directory, signed with its old key, is still trusted (grace)
                assert hub.keys.version("MYS") is not None
            print(f"\nin use at all hubs {loop.time() - installed_at:.2f} s after the last install")
            assert_one_line_error(
                await run_ixb("federation", "install", str(v1_path), "--config", tha_config),
                "ixb.E_ROLLBACK",
            )
            mys_hub = fed.hubs["MYS"].hub
            old_checkpoint = mys_hub.audit_log.latest_checkpoint()
            assert old_checkpoint is not None
            old_note = old_checkpoint[2]
            sent_before = len(traffic.sent)
            await until(lambda: len(traffic.sent) > sent_before + 8, timeout=30)

            # MYS switches to its new key: a restart with the new key file, under traffic
            key_file = dep.key_file(hub_of("MYS"))
            shutil.copy(key_file, tmp_path / "MYS-HUB-old.key")
            down_at = loop.time()
            await fed.stop_hub("MYS")
            key_file.write_bytes(new_key.read_bytes())
            sent_while_down = len(traffic.sent)
            await asyncio.sleep(1.0)
            assert len(traffic.sent) > sent_while_down  # agencies kept sending
            mys_hub = await fed.start_hub("MYS")
            print(f"MYS down {loop.time() - down_at:.2f} s for the key switch")
            assert mys_hub.identity.signing.public == new_mys.signing.public
            assert mys_hub.federation is not None and mys_hub.federation.version == 2
            sent_after = len(traffic.sent)
            await until(lambda: len(traffic.sent) > sent_after + 8, timeout=30)
            await traffic.stop_sending()

            # nothing lost, nothing refused, nothing twice
            with contextlib.suppress(AssertionError):
                await until(lambda: set(traffic.sent) <= set(traffic.arrived), timeout=60)
            missing = Counter(f for m, f in traffic.sent.items() if m not in traffic.arrived)
            assert not missing, (missing, len(traffic.sent), traffic.refused)
            assert not traffic.refused, traffic.refused
            assert max(traffic.arrived.values()) == 1
            print(f"{len(traffic.sent)} messages sent, all arrived once, none refused")

            # MYS's new directory, signed with the new key only, is the one THA and MMR trust
            strict = anchors(v2)
            mys_version = mys_hub.keys.version("MYS")
            for country in ("THA", "MMR"):
                hub = fed.hubs[country].hub
                await until(lambda hub=hub: hub.keys.version("MYS") == mys_version)
                signed = hub.keys.signed("MYS")
                assert signed is not None
                verify_directory(signed, strict, mys_hub.clock(), current_version=None)
            # MYS's new checkpoints are witnessed by THA and MMR with the new key, no alarm
            latest = mys_hub.audit_log.latest_checkpoint()
            assert latest is not None
            verify_checkpoint(latest[2], new_mys.signing.public, log_origin("MYS"))

            def cosigned_after_switch(witness: str) -> bool:
                return any(
                    who == witness_name(witness) and size > old_checkpoint[0]
                    for who, size, _note, _at in mys_hub.audit_log.cosignatures()
                )

            for country in ("THA", "MMR"):
                await until(lambda country=country: cosigned_after_switch(country), timeout=30)
                witnessed = fed.hubs[country].hub.audit_log.last_witnessed(log_origin("MYS"))
                assert witnessed is not None
                verify_checkpoint(witnessed[2], new_mys.signing.public, log_origin("MYS"))
            for country in ("THA", "MMR", "MYS"):
                alarms = fed.hubs[country].hub.audit_log.search(
                    AuditQuery(event=AuditEvent.WITNESS_ALARM.value)
                )
                assert not alarms, country

            # the logs reconcile across the key change: what THA and MMR relayed to MYS and
            # what MYS shared in checkpoints signed with either key match, both ways
            for country in ("THA", "MMR"):
                hub = fed.hubs[country].hub
                await until(
                    lambda hub=hub: hub.audit.reconcile("MYS", grace_ms=0).clean, timeout=30
                )
                assert hub.audit.reconcile("MYS", grace_ms=0).matched >= len(traffic.sent) // 4
                await until(
                    lambda country=country: mys_hub.audit.reconcile(country, grace_ms=0).clean,
                    timeout=30,
                )
            # what MYS signed before the switch verifies with the versions' history,
            # and not with version 2's keys alone
            both = history([v1, v2])
            verify_checkpoint_by_any(old_note, both.hub_keys_ever("MYS"), log_origin("MYS"))
            with pytest.raises(SignatureError):
                verify_checkpoint_by_any(old_note, strict.hub_keys_ever("MYS"), log_origin("MYS"))
            # and agencies learned version 2 from their hub
            for client in clients.values():
                assert client.federation is not None and client.federation.version == 2

            # a file put into trust_dir by other means than `install`, not signed by the
            # threshold of version 2: the running hub keeps version 2
            tha = fed.hubs["THA"].hub
            forged = propose(v2, threshold=1)
            (tha.config.trust_path / "federation.toml").write_text(render_federation_file(forged))
            await asyncio.sleep(1.5)
            assert tha.federation is not None and tha.federation.same_version(v2)
            assert tha.keys.trust.hubs == v2.trust.hubs
            assert tha.metrics.counter_value(
                "ixb_federation_install_refused_total", code="ixb.E_SIGNATURE"
            )
            assert "ixb_federation_version 2.0" in tha.metrics.render()
            assert tha.health()["federation"] == 2
        finally:
            await traffic.close()


def test_the_old_key_counts_only_during_its_grace() -> None:
    """Rule 1a: a hub key replaced by a later version verifies until its grace ends."""
    old = Identity(hub_of("MYS"), SigningKeyPair(b"\x01" * 32), None)
    new = Identity(hub_of("MYS"), SigningKeyPair(b"\x02" * 32), None)
    tha = Identity(hub_of("THA"), SigningKeyPair(b"\x03" * 32), None)
    v1 = TrustAnchors("f", {"MYS": old.signing.public, "THA": tha.signing.public})
    v2 = TrustAnchors("f", {"MYS": new.signing.public, "THA": tha.signing.public})
    trust = v2.with_retired(v1, until_ms=1000)
    old_kid = key_id(KeyAlg.ED25519, old.signing.public)
    assert trust.signer(old_kid, 999) == ("MYS", old.signing.public)
    assert trust.signer(old_kid, 1000) is None
    assert trust.hub_keys_at("MYS", 999) == (new.signing.public, old.signing.public)
    assert trust.hub_keys_at("MYS", 1000) == (new.signing.public,)
    assert trust.hub_keys_ever("MYS") == (new.signing.public, old.signing.public)
    # a member removed loses its key at once
    v3 = TrustAnchors("f", {"THA": tha.signing.public})
    assert v3.with_retired(v2, until_ms=1000).retired == ()
    with pytest.raises(IxbError):
        history([parse_federation_file(render_federation_file(FederationFile(v1))),
                 parse_federation_file(render_federation_file(FederationFile(v2, 3)))])  # fmt: skip


def test_install_records_the_grace_and_a_stale_config_is_not_a_rollback(tmp_path: Path) -> None:
    """What `install` leaves in trust_dir is what a restarted hub uses: grace included."""
    from broker.trust import adopt_federation, anchors_in_force, install_federation

    old = Identity(hub_of("MYS"), SigningKeyPair(b"\x01" * 32), None)
    new = Identity(hub_of("MYS"), SigningKeyPair(b"\x02" * 32), None)
    tha = Identity(hub_of("THA"), SigningKeyPair(b"\x03" * 32), None)
    v1 = FederationFile(
        TrustAnchors("f", {"MYS": old.signing.public, "THA": tha.signing.public}), 1, 2
    )
    v2 = sign_version(sign_version(propose(v1, keys={"MYS": new.signing.public}), old), tha)
    trust_dir, src = tmp_path / "trust", tmp_path / "federation.toml"
    adopt_federation(trust_dir, render_federation_file(v1), src)
    held, succession = install_federation(
        trust_dir, render_federation_file(v2), src, actor="cli:op", at_ms=1000, grace_ms=500
    )
    assert held == v2 and succession.signers == ("MYS", "THA")
    trust = anchors_in_force(trust_dir, v2)
    assert trust.hub_keys_at("MYS", 1499) == (new.signing.public, old.signing.public)
    assert trust.hub_keys_at("MYS", 1500) == (new.signing.public,)
    # the hub restarts with its configured file still at version 1: it keeps version 2
    assert adopt_federation(trust_dir, render_federation_file(v1), src) == v2
    # a version 1 it never held is a rollback all the same
    other = FederationFile(TrustAnchors("f", {"THA": tha.signing.public}), 1, 1)
    with pytest.raises(IxbError) as err:
        adopt_federation(trust_dir, render_federation_file(other), src)
    assert err.value.code == "ixb.E_ROLLBACK"
    # install again: nothing changes; install an older one: refused
    assert install_federation(
        trust_dir, render_federation_file(v2), src, actor="cli:op", at_ms=2000
    )[1].redelivery
    with pytest.raises(IxbError) as err:
        install_federation(trust_dir, render_federation_file(v1), src, actor="x", at_ms=3000)
    assert err.value.code == "ixb.E_ROLLBACK"


def test_an_agency_holds_what_its_hub_offered_and_its_stale_file_is_not_a_rollback(
    tmp_path: Path,
) -> None:
    from agency_client.federation_state import adopt_federation as agency_adopt
    from agency_client.federation_state import learn_federation

    old = Identity(hub_of("MYS"), SigningKeyPair(b"\x01" * 32), None)
    new = Identity(hub_of("MYS"), SigningKeyPair(b"\x02" * 32), None)
    tha = Identity(hub_of("THA"), SigningKeyPair(b"\x03" * 32), None)
    v1 = FederationFile(
        TrustAnchors("f", {"MYS": old.signing.public, "THA": tha.signing.public}), 1, 2
    )
    v2 = sign_version(sign_version(propose(v1, keys={"MYS": new.signing.public}), old), tha)
    state, src = tmp_path / "THA-X.federation", tmp_path / "federation.toml"
    assert agency_adopt(state, render_federation_file(v1), src) == v1
    assert learn_federation(state, v1, b"") is None  # a hub that does not answer
    assert learn_federation(state, v1, render_federation_file(v1).encode()) is None
    assert learn_federation(state, v1, render_federation_file(v2).encode()) == v2
    # the next command starts with the profile's file still at version 1: version 2 holds
    assert agency_adopt(state, render_federation_file(v1), src) == v2
    # a hub offering a version the threshold did not sign: refused, version 2 stays
    forged = propose(v2, threshold=1)
    with pytest.raises(IxbError) as err:
        learn_federation(state, v2, render_federation_file(forged).encode())
    assert err.value.code == "ixb.E_SIGNATURE"
    assert agency_adopt(state, render_federation_file(v2), src) == v2


def test_install_refusals_before_a_first_start_and_a_grace_out_of_range(tmp_path: Path) -> None:
    from ixb.deployment import create_deployment
    from protocols.keys import KdfProfile
    from protocols.roles import Role
    from tests.test_cli import ixb

    dep = create_deployment(
        tmp_path / "dep",
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT], "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
        kdf=KdfProfile.INTERACTIVE,
    )
    config, fed = str(dep.hub_config("THA")), str(dep.base / "federation.toml")
    # the hub never started: it holds no version to check the file against
    assert_one_line_error(ixb("federation", "install", fed, "--config", config), "ixb.E_CONFIG")
    assert_one_line_error(
        ixb("federation", "install", fed, "--config", config, "--grace-hours", "25"),
        "ixb.E_USAGE",
    )
