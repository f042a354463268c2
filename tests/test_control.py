"""The control plane without NATS: link items' bytes in, decisions out, writes applied after.

Two hubs' real audit logs and stores in a temp dir; checkpoints and
directories travel between them as the bytes the link would carry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
    ControlDecision,
    ControlPlane,
)
from broker.metrics import Metrics
from broker.store import HubStore
from protocols import subjects
from protocols.audit import AuditEvent, encode_publication, make_entry
from protocols.checkpoint import log_origin
from protocols.directory import build_directory, sign_directory
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


def side(tmp_path: Path, country: str) -> Side:
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
    audit = HubAudit(identity, log, store, TRUST, PEERS[country], lambda: NOW)
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


def publication(s: Side, peer: str) -> bytes:
    made = s.audit.checkpoint()
    assert made is not None
    pub = s.audit.publication_for(peer)
    assert pub is not None
    s.audit.published(peer, pub)
    return encode_publication(pub)


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


def test_a_rewritten_log_raises_an_alarm_and_gets_no_cosignature(
    tmp_path: Path, two: tuple[Side, Side]
) -> None:
    tha, mys = two
    grow(mys, 3)
    tha.apply(tha.control.decide("MYS", KIND_CHECKPOINT, publication(mys, "THA"), NOW))
    # MYS loses its log and starts again: same key, different history
    (tmp_path / "again").mkdir()
    liar = side(tmp_path / "again", "MYS")
    grow(liar, 4, at=NOW + 5)
    d = tha.control.decide("MYS", KIND_CHECKPOINT, publication(liar, "THA"), NOW + 10)
    assert d.publishes == ()
    assert tha.metrics.counter_value("ixb_witness_alarms_total", origin="MYS") == 1
    assert tha.log.alarms() == []  # decided, not yet written
    tha.apply(d)
    assert [origin for origin, _at, _d in tha.log.alarms()] == [log_origin("MYS")]
    assert tha.events() == ["witness_alarm", "checkpoint_cosigned"]  # newest first
    liar.log.close()
    liar.store.close()


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
