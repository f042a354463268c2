"""The control plane without NATS: link items' bytes in, decisions out, writes applied after.

Two hubs' real audit logs and stores in a temp dir; checkpoints and
directories travel between them as the bytes the link would carry.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec
import pytest

from broker.audit.log import AuditLog
from broker.auditing import HubAudit
from broker.config import HubConfig
from broker.control import (
    KIND_CHECKPOINT,
    KIND_COSIGNATURE,
    KIND_DIRECTORY,
    KIND_FEDERATION,
    KIND_WITNESS_SIZE,
    ControlDecision,
    ControlPlane,
    Writes,
)
from broker.metrics import Metrics
from broker.store import HubStore
from broker.trust import adopt_federation
from protocols import subjects
from protocols.audit import AuditEvent, decode_witness_size, encode_publication, make_entry
from protocols.checkpoint import log_origin, witness_name
from protocols.directory import build_directory, sign_directory
from protocols.errors import IoError
from protocols.federation import (
    FederationFile,
    parse_federation_file,
    propose,
    render_federation_file,
    sign_version,
)
from protocols.identifiers import hub_of
from protocols.keys import Identity
from protocols.trusted import TrustedDirectories
from tests.test_pipeline import HUBS, NOW, TRUST

PEERS = {"THA": ["MYS"], "MYS": ["THA"]}


@dataclass
class Side:
    control: ControlPlane
    audit: HubAudit
    log: AuditLog
    store: HubStore
    keys: TrustedDirectories
    metrics: Metrics

    def events(self) -> list[str]:
        return [e.event for e in self.log.search(limit=100)]

    def apply(self, d: ControlDecision) -> None:
        if d.writes is not None:
            d.writes()


def side(tmp_path: Path, country: str, clock: Callable[[], int] = lambda: NOW) -> Side:
    config = msgspec.convert(
        {
            "hub": {
                "country": country,
                "key_file": "k",
                "state_dir": str(tmp_path / country),
                "federation_file": "f",
            },
            "nats": {"url": "nats://127.0.0.1:1", "user": "hub", "password": "p"},
            "links": {p: {"user": "u", "password": "p"} for p in PEERS[country]},
        },
        HubConfig,
    )
    (tmp_path / country).mkdir()
    log = AuditLog(tmp_path / country / "audit.sqlite")
    store = HubStore(tmp_path / country / "hub.sqlite")
    keys = TrustedDirectories(TRUST)
    identity = HUBS[country]
    audit = HubAudit(identity, log, store, TRUST, PEERS[country], clock)
    metrics = Metrics()
    control = ControlPlane(
        config=config,
        identity=identity,
        keys=keys,
        audit=audit,
        store=store,
        agency_keys={},
        metrics=metrics,
    )
    return Side(control, audit, log, store, keys, metrics)


def restarted(s: Side) -> Side:
    """The same hub after a clean restart: its log and store, nothing it held in memory."""
    audit = HubAudit(s.audit.identity, s.log, s.store, TRUST, s.audit.peers, s.audit.clock)
    return replace(s, audit=audit, control=replace_audit(s.control, audit), metrics=Metrics())


def replace_audit(control: ControlPlane, audit: HubAudit) -> ControlPlane:
    return ControlPlane(
        config=control.config,
        identity=control.identity,
        keys=control.keys,
        audit=audit,
        store=control.store,
        agency_keys={},
        metrics=Metrics(),
    )


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    tha, mys = side(tmp_path, "THA"), side(tmp_path, "MYS")
    yield tha, mys
    for s in (tha, mys):
        s.log.close()
        s.store.close()


def grow(s: Side, n: int, at: int = NOW) -> None:
    hub = str(s.audit.identity.principal)
    s.audit.record([make_entry(hub, at, AuditEvent.HUB_STARTED, detail=f"{i}") for i in range(n)])


def publication(s: Side, peer: str, *, acked: bool = True) -> bytes:
    """The next publication for ``peer``; ``acked=False``: JetStream stored it, the ack was lost."""
    s.audit.checkpoint()
    pub = s.audit.publication_for(peer)
    assert pub is not None
    if acked:
        s.audit.published(peer, pub)
    return encode_publication(pub)


def relayed(s: Side, peer: str, n: int, start: int = 0) -> None:
    """``n`` entries about messages relayed to ``peer``: what publications share with it."""
    hub = str(s.audit.identity.principal)
    s.audit.record(
        [
            make_entry(hub, NOW, AuditEvent.RELAYED, msg_id=bytes([i]) * 16, peer=peer)
            for i in range(start + 1, start + n + 1)
        ]
    )


def test_own_directory_goes_up_a_version_each_time_and_to_every_peer(
    two: tuple[Side, Side],
) -> None:
    tha, _ = two
    first = tha.control.own_directory(NOW)
    assert tha.keys.version("THA") == 1  # installed at once, before the writes run
    assert tha.store.directory_version("THA") is None
    tha.apply(first)
    assert tha.store.directory_version("THA") == 1
    second = tha.control.own_directory(NOW + 1)
    assert [(p.subject, p.dedup, p.peer, p.kind) for p in second.publishes] == [
        (subjects.cross_border("THA", "MYS"), "dir:THA:2", "MYS", KIND_DIRECTORY)
    ]
    tha.apply(second)
    assert tha.events() == ["directory_published", "directory_published"]


def test_a_peer_directory_counts_at_once_and_is_kept_by_its_writes(two: tuple[Side, Side]) -> None:
    tha, mys = two
    signed = mys.control.own_directory(NOW).publishes[0].data
    d = tha.control.decide("MYS", KIND_DIRECTORY, signed, NOW)
    assert tha.keys.version("MYS") == 1 and d.publishes == ()
    assert tha.store.directory_version("MYS") is None  # nothing durable yet
    tha.apply(d)
    assert tha.store.directory_version("MYS") == 1
    assert tha.events() == ["directory_installed"]
    again = tha.control.decide("MYS", KIND_DIRECTORY, signed, NOW)
    assert again == ControlDecision()  # the same version twice: nothing to do


def test_a_directory_signed_by_the_wrong_hub_is_refused_and_audited(two: tuple[Side, Side]) -> None:
    tha, _ = two
    impostor = Identity.generate(hub_of("MYS"))  # MYS/HUB's name, not its federation key
    forged = sign_directory(build_directory(hub_of("MYS"), 1, NOW, 3_600_000, []), impostor)
    d = tha.control.decide("MYS", KIND_DIRECTORY, forged, NOW)
    assert tha.keys.version("MYS") is None and d.publishes == ()
    tha.apply(d)
    (entry,) = tha.log.search(limit=10)
    assert entry.event == "directory_rejected" and entry.code == "ixb.E_SIGNATURE"
    assert (
        tha.metrics.counter_value(
            "ixb_directory_rejected_total", peer="MYS", code="ixb.E_SIGNATURE"
        )
        == 1
    )


def test_witnessing_cosigns_a_growing_log_and_the_cosignature_is_kept(
    two: tuple[Side, Side],
) -> None:
    tha, mys = two
    grow(mys, 3)
    d = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW)
    (cosig,) = d.publishes
    assert (cosig.kind, cosig.peer, cosig.dedup) == (KIND_COSIGNATURE, "MYS", "cosig:MYS:THA:3")
    assert tha.log.last_witnessed(log_origin("MYS")) is None  # decided, not yet written
    tha.apply(d)
    witnessed = tha.log.last_witnessed(log_origin("MYS"))
    assert witnessed is not None and witnessed[0] == 3
    assert tha.events() == ["checkpoint_cosigned"]
    grow(mys, 2)
    d2 = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW + 1)
    assert [p.dedup for p in d2.publishes] == ["cosig:MYS:THA:5"]
    tha.apply(d2)
    assert tha.events() == ["checkpoint_cosigned"]  # logged at most hourly per peer
    # the cosignature travels back and MYS keeps it
    back = mys.control.decide("THA", KIND_COSIGNATURE, d2.publishes[0].data, NOW + 2)
    assert mys.metrics.series("ixb_cosigned_size")[(("witness", "THA"),)] == 5
    mys.apply(back)
    assert [(who, size) for who, size, _n, _at in mys.log.cosignatures()][-1][1] == 5


def test_a_rewritten_log_raises_one_alarm_however_often_it_publishes(
    tmp_path: Path, two: tuple[Side, Side]
) -> None:
    tha, mys = two
    grow(mys, 3)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW))
    # MYS loses its log and starts again: same key, different history
    (tmp_path / "again").mkdir()
    liar = side(tmp_path / "again", "MYS")
    grow(liar, 4, at=NOW + 5)
    # it proves from 0: THA answers with the size it cosigned, and alarms at nothing yet
    conflict = tha.control.decide("MYS", KIND_CHECKPOINT, publication(liar, "THA"), NOW + 10)
    (answer,) = conflict.publishes
    assert answer.kind == KIND_WITNESS_SIZE and decode_witness_size(answer.data).size == 3
    liar.apply(liar.control.decide("THA", KIND_WITNESS_SIZE, answer.data, NOW + 11))
    assert liar.metrics.counter_value("ixb_witness_holds_other_log_total", witness="THA") == 1
    # from size 3 its log cannot be proved consistent with the one THA cosigned
    d = tha.control.decide("MYS", KIND_CHECKPOINT, publication(liar, "THA"), NOW + 12)
    assert d.publishes == ()
    assert tha.metrics.counter_value("ixb_witness_alarms_total", origin="MYS") == 1
    assert tha.log.alarms() == []  # decided, not yet written
    tha.apply(d)
    assert [origin for origin, _at, _d in tha.log.alarms()] == [log_origin("MYS")]
    assert tha.events() == ["witness_alarm", "checkpoint_cosigned"]  # newest first
    # it keeps publishing: counted, never a second alarm (which would grow THA's log)
    for n in range(5):
        grow(liar, 1, at=NOW + 20 + n)
        while True:  # its conflict answers go back to it, and it proves from 3 again
            d = tha.control.decide("MYS", KIND_CHECKPOINT, publication(liar, "THA"), NOW + 20)
            tha.apply(d)
            if not d.publishes:
                break
            liar.apply(liar.control.decide("THA", KIND_WITNESS_SIZE, d.publishes[0].data, NOW))
    assert len(tha.log.alarms()) == 1
    assert tha.events() == ["witness_alarm", "checkpoint_cosigned"]
    assert tha.log.alarm_repeats(log_origin("MYS"), 3) == 5
    assert tha.metrics.counter_value("ixb_witness_alarms_total", origin="MYS") == 1
    assert tha.metrics.counter_value("ixb_witness_alarm_repeats_total", origin="MYS") == 5
    assert tha.log.last_witnessed(log_origin("MYS"))[0] == 3  # type: ignore[index]
    liar.log.close()
    liar.store.close()


def test_two_roots_for_one_size_alarm_whatever_size_they_prove_from(
    tmp_path: Path, two: tuple[Side, Side]
) -> None:
    tha, mys = two
    grow(mys, 3)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW))
    (tmp_path / "again").mkdir()
    liar = side(tmp_path / "again", "MYS")
    grow(liar, 3, at=NOW + 5)
    forked = publication(liar, "THA")
    for _ in range(3):  # redelivered, or sent again: the same evidence alarms once
        d = tha.control.decide("MYS", KIND_CHECKPOINT, forked, NOW + 10)
        assert d.publishes == ()
        tha.apply(d)
    (alarm,) = tha.log.alarms()
    assert "two roots for size 3" in alarm[2]
    assert tha.events() == ["witness_alarm", "checkpoint_cosigned"]
    liar.log.close()
    liar.store.close()


def test_a_log_that_shrank_alarms_at_once(tmp_path: Path, two: tuple[Side, Side]) -> None:
    tha, mys = two
    grow(mys, 5)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW))
    (tmp_path / "again").mkdir()
    liar = side(tmp_path / "again", "MYS", clock=lambda: NOW + 60_000)
    grow(liar, 2, at=NOW + 60_000)  # signed later, and smaller: the log was reset
    d = tha.control.decide("MYS", KIND_CHECKPOINT, publication(liar, "THA"), NOW + 61_000)
    assert d.publishes == ()
    tha.apply(d)
    (alarm,) = tha.log.alarms()
    assert "signed size 2 after size 5" in alarm[2]
    liar.log.close()
    liar.store.close()


def test_a_restarted_origin_with_a_cosignature_in_flight_proves_again_without_alarm(
    two: tuple[Side, Side],
) -> None:
    tha, mys = two
    grow(mys, 3)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW))
    grow(mys, 2)
    d = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW + 1)
    tha.apply(d)  # THA cosigned size 5; MYS stops before that cosignature reaches it
    mys = restarted(mys)
    grow(mys, 2)  # hub_stopped, hub_started …
    first = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW + 2)
    (answer,) = first.publishes
    assert answer.kind == KIND_WITNESS_SIZE
    assert first.writes is None  # a conflict writes nothing: no alarm, no entry
    assert decode_witness_size(answer.data).size == 5
    mys.apply(mys.control.decide("THA", KIND_WITNESS_SIZE, answer.data, NOW + 3))
    pub = mys.audit.publication_for("THA")
    assert pub is not None and pub.old_size == 5
    again = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW + 4)
    (cosig,) = again.publishes
    assert cosig.dedup == "cosig:MYS:THA:7"
    tha.apply(again)
    # the cosignature in flight arrives late, then the new one: both kept, no alarm anywhere
    for p in (d.publishes[0], cosig):
        mys.apply(mys.control.decide("THA", KIND_COSIGNATURE, p.data, NOW + 5))
    assert tha.log.alarms() == [] and tha.events() == ["checkpoint_cosigned"]
    assert [size for w, size, _n, _a in mys.log.cosignatures() if w == witness_name("THA")] == [
        5,
        7,
    ]


def test_a_lost_publish_ack_gets_a_conflict_then_cosigning_and_every_entry_shared(
    two: tuple[Side, Side],
) -> None:
    tha, mys = two
    relayed(mys, "THA", 3)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW))
    relayed(mys, "THA", 2, start=3)
    # JetStream stored size 5 but its ack was lost: MYS still believes THA holds 3
    lost = publication(mys, "THA", acked=False)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, lost, NOW + 1))
    relayed(mys, "THA", 2, start=5)
    stale = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW + 2)
    (answer,) = stale.publishes
    assert decode_witness_size(answer.data).size == 5  # THA's size, not MYS's belief
    tha.apply(stale)
    assert tha.log.alarms() == []
    mys.apply(mys.control.decide("THA", KIND_WITNESS_SIZE, answer.data, NOW + 3))
    d = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW + 4)
    assert [p.kind for p in d.publishes] == [KIND_COSIGNATURE]
    tha.apply(d)
    assert tha.log.alarms() == [] and tha.events() == ["checkpoint_cosigned"]
    assert tha.log.last_witnessed(log_origin("MYS"))[0] == 7  # type: ignore[index]
    # every relayed entry reached THA, those of the refused publication included
    assert [e.index for e in tha.store.peer_entries("MYS")] == list(range(7))


def test_a_witness_size_from_another_link_is_refused_and_changes_nothing(
    two: tuple[Side, Side],
) -> None:
    tha, mys = two
    grow(mys, 3)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW))
    grow(mys, 2)
    conflict = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW + 1)
    assert [p.kind for p in conflict.publishes] == [KIND_COSIGNATURE]  # proved from 3: cosigned
    mys2 = restarted(mys)  # the cosignatures never reached it: it proves from 0
    answer = tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys2, "THA", acked=False), NOW)
    (p,) = answer.publishes
    assert p.kind == KIND_WITNESS_SIZE
    # THA's answer replayed on MMR's link: not MMR's cosignature, refused
    assert mys2.control.decide("MMR", KIND_WITNESS_SIZE, p.data, NOW + 3) == ControlDecision()
    pub = mys2.audit.publication_for("THA")
    assert pub is not None and pub.old_size == 0


def test_a_forged_checkpoint_is_refused_without_writes(two: tuple[Side, Side]) -> None:
    tha, mys = two
    grow(mys, 2)
    pub = publication(mys, "THA")
    d = tha.control.decide("MMR", KIND_CHECKPOINT, pub, NOW)  # MYS's log claimed by MMR's link
    assert d == ControlDecision()
    assert tha.metrics.series("ixb_witness_refused_total") == {
        (("code", "ixb.E_SIGNATURE"), ("origin", "MMR")): 1.0
    }
    assert tha.events() == []


def test_unknown_kind_does_nothing(two: tuple[Side, Side]) -> None:
    tha, _ = two
    assert tha.control.decide("MYS", "gossip", b"x", NOW) == ControlDecision()
    assert tha.events() == []


def refuse(db: Path, trigger: str) -> None:
    """Make SQLite refuse a write to ``db``, from another connection (as another process could)."""
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute(f"CREATE TRIGGER {trigger} BEGIN SELECT RAISE(ABORT, 'write refused'); END")


def allow(db: Path, trigger: str) -> None:
    name = trigger.split(maxsplit=1)[0]
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute(f"DROP TRIGGER {name}")


def test_writes_refused_halfway_resume_where_they_stopped(
    tmp_path: Path, two: tuple[Side, Side]
) -> None:
    """The directory's entry is recorded, its row refused: retried, the entry is not repeated."""
    tha, mys = two
    store_db = tmp_path / "THA" / "hub.sqlite"
    trigger = "no_directories BEFORE INSERT ON directories"
    signed = mys.control.own_directory(NOW).publishes[0].data
    d = tha.control.decide("MYS", KIND_DIRECTORY, signed, NOW)
    assert isinstance(d.writes, Writes)
    refuse(store_db, trigger)
    for _ in range(2):
        with pytest.raises(sqlite3.Error, match="write refused"):
            tha.apply(d)
    assert tha.events() == ["directory_installed"]  # the log first, once
    assert tha.store.directory_version("MYS") is None
    allow(store_db, trigger)
    tha.apply(d)
    assert tha.store.directory_version("MYS") == 1
    assert tha.events() == ["directory_installed"]
    tha.apply(d)  # done: nothing left to write
    assert tha.events() == ["directory_installed"]


def test_an_alarm_is_recorded_before_it_is_kept(tmp_path: Path, two: tuple[Side, Side]) -> None:
    """A crash between the two writes raises the alarm again; it never loses its entry."""
    tha, mys = two
    grow(mys, 3)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW))
    (tmp_path / "again").mkdir()
    liar = side(tmp_path / "again", "MYS")
    grow(liar, 3, at=NOW + 5)  # other entries, same size: another root
    d = tha.control.decide("MYS", KIND_CHECKPOINT, publication(liar, "THA"), NOW + 10)
    refuse(tmp_path / "THA" / "audit.sqlite", "no_alarms BEFORE INSERT ON alarms")
    with pytest.raises(IoError, match="write refused"):
        tha.apply(d)
    assert tha.events()[0] == "witness_alarm" and tha.log.alarms() == []
    liar.log.close()
    liar.store.close()


def test_a_peers_federation_version_is_kept_only_if_it_verifies(tmp_path: Path) -> None:
    """Newer and signed by the threshold of ours: kept for the operator; otherwise refused."""
    tha = side(tmp_path, "THA")
    trust_dir = tha.control.config.trust_path
    v1 = FederationFile(TRUST)
    adopt_federation(trust_dir, render_federation_file(v1), tmp_path / "f")
    assert tha.control.own_federation()[0].kind == KIND_FEDERATION
    v2 = propose(v1, threshold=1)
    under = render_federation_file(sign_version(v2, HUBS["MYS"])).encode()
    signed = sign_version(sign_version(v2, HUBS["MYS"]), HUBS["MMR"])
    tha.apply(tha.control.decide("MYS", KIND_FEDERATION, under, NOW))
    assert not (trust_dir / "federation-offered-v2.toml").exists()
    assert tha.metrics.counter_value("ixb_federation_offers_total", peer="MYS", result="refused")
    tha.apply(tha.control.decide("MYS", KIND_FEDERATION, b"\xff", NOW))
    offer = render_federation_file(signed).encode()
    tha.apply(tha.control.decide("MYS", KIND_FEDERATION, offer, NOW))
    kept = parse_federation_file((trust_dir / "federation-offered-v2.toml").read_text())
    assert kept == signed
    # what it holds is unchanged: installing is the operator's act
    assert parse_federation_file((trust_dir / "federation.toml").read_text()) == v1
