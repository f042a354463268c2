"""What a batch does, without NATS or disk: the pipeline over an in-memory seen-set, then the plan.

Table-driven: each case is a batch (what arrives, from where) and the plan
it must produce, summarised as plain data (subjects, de-duplication ids,
receipt statements, audit events, ids routed, decisions reported).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from broker.config import HubConfig
from broker.pipeline import KnownMessage, Pipeline
from broker.plan import (
    MAX_RECEIPT_IDS,
    BatchPlan,
    Decided,
    ReceiptStatement,
    plan_batch,
    seal_receipts,
)
from broker.ratelimit import RateLimiter
from protocols import subjects
from protocols.envelope import Header, add_hop, decode_envelope, open_envelope, verify_envelope
from protocols.errors import IxbError, UnknownRecipientError
from protocols.identifiers import Principal, parse_agency
from protocols.keys import PublicIdentity
from protocols.messages import Receipt, ReceiptStatus
from tests.test_pipeline import HUBS, IDS, NOW, make_keys, seal

DSI = "THA/DSI-ATHD"
IMM = "THA/IMMIGRATION"
RMP = "MYS/RMP-ATIPSOM"
ATTU = "MMR/MOHA-ATTU"


@dataclass
class MemorySeen:
    """The pipeline's seen-messages protocol in memory (what the SQLite store does durably)."""

    rows: dict[tuple[str, bytes], KnownMessage] = field(default_factory=dict)

    def known(self, sender: str, message_id: bytes) -> KnownMessage | None:
        return self.rows.get((sender, message_id))

    def original(self, message_id: bytes, party: str) -> KnownMessage | None:
        found = [k for (_s, i), k in self.rows.items() if i == message_id]
        mine = [k for k in found if party == k.sender or party in k.recipients]
        return (mine or found)[0] if found else None

    def remember(self, header: Header, digest: bytes) -> None:
        self.rows[(header.sender, header.id)] = KnownMessage(
            digest, header.sender, tuple(header.recipients), header.handling, None, routed=False
        )

    def mark_routed(self, sender: str, message_id: bytes) -> None:
        row = self.rows[(sender, message_id)]
        self.rows[(sender, message_id)] = KnownMessage(
            row.digest, row.sender, row.recipients, row.handling, row.restriction, routed=True
        )


def pipeline(country: str = "THA", *, burst: int | None = None) -> Pipeline:
    peers = [c for c in HUBS if c != country]
    config = msgspec.convert(
        {
            "hub": {
                "country": country,
                "key_file": "k",
                "state_dir": "/nonexistent",
                "federation_file": "f",
            },
            "nats": {"url": "nats://127.0.0.1:1", "user": "hub", "password": "p"},
            "links": {p: {"user": "u", "password": "p"} for p in peers},
            "policy": {"exchange": {p: ["alert", "receipt"] for p in peers}},
        },
        HubConfig,
    )
    limiter = RateLimiter(config.policy.max_per_minute, burst or config.policy.burst)
    return Pipeline(config, HUBS[country], make_keys(), MemorySeen(), limiter)


Arrival = tuple[bytes, str | None, str | None, bool]
"""(data, publisher on ingress, peer over a link, redelivered)."""


def decide(p: Pipeline, arrivals: list[Arrival]) -> list[Decided]:
    out = []
    for data, publisher, peer, redelivered in arrivals:
        if publisher is not None:
            outcome = p.from_local(data, publisher, NOW, redelivered=redelivered)
        else:
            assert peer is not None
            outcome = p.from_peer(data, peer, NOW, redelivered=redelivered)
        out.append(Decided(outcome, publisher, peer))
    return out


def summary(plan: BatchPlan, ids: dict[bytes, str]) -> dict[str, object]:
    """The plan as names: message ids replaced by m0, m1 … in arrival order."""

    def name(value: str) -> str:
        for raw, n in ids.items():
            value = value.replace(raw.hex(), n)
            value = value.replace(str(_uuid(raw)), n)
        return value

    return {
        "publishes": [(p.subject, name(p.dedup), sorted(p.works), p.peer) for p in plan.publishes],
        "receipts": [
            (str(r.to), r.status.value, r.code, [ids[i] for i in r.ids], sorted(r.works))
            for r in plan.receipts
        ],
        "events": [[e.event.value for e in m.entries] for m in plan.messages],
        "routed": [ids.get(m.routed[1]) if m.routed else None for m in plan.messages],
        "decisions": [m.report.decision for m in plan.messages],
    }


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def alert(sender: str, to: list[str]) -> bytes:
    return seal(sender, to)


def hopped(data: bytes, country: str) -> bytes:
    return add_hop(decode_envelope(data), HUBS[country], NOW).to_bytes()


@dataclass
class Case:
    country: str
    arrivals: Callable[[Pipeline], list[Arrival]]
    expected: dict[str, object]


A = alert(DSI, [RMP])
B = alert(DSI, [RMP])
LOCAL = alert(DSI, [IMM])
TO_BOTH = alert(DSI, [RMP, ATTU, IMM])
FROM_MYS = hopped(alert(RMP, [DSI]), "MYS")


def _routed(p: Pipeline, data: bytes) -> bytes:
    """``data`` as accepted and routed by ``p`` in an earlier batch."""
    p.from_local(data, "DSI-ATHD", NOW)
    seen = p.seen
    assert isinstance(seen, MemorySeen)
    header = decode_envelope(data).header
    seen.mark_routed(header.sender, header.id)
    return data


def _redelivered_after_routing(p: Pipeline) -> list[Arrival]:
    return [(_routed(p, A), "DSI-ATHD", None, True)]


CASES: dict[str, Case] = {
    "alert to a peer: relayed, accepted + relayed receipts": Case(
        "THA",
        lambda p: [(A, "DSI-ATHD", None, False)],
        {
            "publishes": [(subjects.cross_border("THA", "MYS"), "m0:THA/DSI-ATHD", [0], "MYS")],
            "receipts": [
                (DSI, "accepted", None, ["m0"], [0]),
                (DSI, "relayed", None, ["m0"], [0]),
            ],
            "events": [["accepted", "relayed"]],
            "routed": ["m0"],
            "decisions": ["accepted"],
        },
    ),
    "alert to a local agency: inbox, accepted + delivered receipts": Case(
        "THA",
        lambda p: [(LOCAL, "DSI-ATHD", None, False)],
        {
            "publishes": [
                (subjects.inbox(parse_agency(IMM)), "m0:THA/DSI-ATHD:IMMIGRATION", [0], None)
            ],
            "receipts": [
                (DSI, "accepted", None, ["m0"], [0]),
                (DSI, "delivered", None, ["m0"], [0]),
            ],
            "events": [["accepted", "delivered"]],
            "routed": ["m0"],
            "decisions": ["accepted"],
        },
    ),
    "one alert, three countries: one publish per destination, one relayed statement": Case(
        "THA",
        lambda p: [(TO_BOTH, "DSI-ATHD", None, False)],
        {
            "publishes": [
                (subjects.inbox(parse_agency(IMM)), "m0:THA/DSI-ATHD:IMMIGRATION", [0], None),
                (subjects.cross_border("THA", "MMR"), "m0:THA/DSI-ATHD", [0], "MMR"),
                (subjects.cross_border("THA", "MYS"), "m0:THA/DSI-ATHD", [0], "MYS"),
            ],
            "receipts": [
                (DSI, "accepted", None, ["m0"], [0]),
                (DSI, "relayed", None, ["m0"], [0]),
                (DSI, "delivered", None, ["m0"], [0]),
            ],
            "events": [["accepted", "delivered", "relayed", "relayed"]],
            "routed": ["m0"],
            "decisions": ["accepted"],
        },
    ),
    "two alerts of one sender: one receipt per statement naming both": Case(
        "THA",
        lambda p: [(A, "DSI-ATHD", None, False), (B, "DSI-ATHD", None, False)],
        {
            "publishes": [
                (subjects.cross_border("THA", "MYS"), "m0:THA/DSI-ATHD", [0], "MYS"),
                (subjects.cross_border("THA", "MYS"), "m1:THA/DSI-ATHD", [1], "MYS"),
            ],
            "receipts": [
                (DSI, "accepted", None, ["m0", "m1"], [0, 1]),
                (DSI, "relayed", None, ["m0", "m1"], [0, 1]),
            ],
            "events": [["accepted", "relayed"], ["accepted", "relayed"]],
            "routed": ["m0", "m1"],
            "decisions": ["accepted", "accepted"],
        },
    ),
    "redelivered after routing: a duplicate, nothing published or receipted": Case(
        "THA",
        _redelivered_after_routing,
        {
            "publishes": [],
            "receipts": [],
            "events": [["duplicate"]],
            "routed": [None],
            "decisions": ["duplicate"],
        },
    ),
    "signed by another agency than the publisher: refused, the publisher hears why": Case(
        "THA",
        lambda p: [(A, "IMMIGRATION", None, False)],
        {
            "publishes": [],
            "receipts": [(IMM, "rejected", "ixb.E_UNAUTHORISED", ["m0"], [0])],
            "events": [["rejected"]],
            "routed": [None],
            "decisions": ["rejected"],
        },
    ),
    "a new copy of a routed message: a replay, refused with a receipt": Case(
        "THA",
        lambda p: [(_routed(p, A), "DSI-ATHD", None, False)],
        {
            "publishes": [],
            "receipts": [(DSI, "rejected", "ixb.E_REPLAY", ["m0"], [0])],
            "events": [["rejected"]],
            "routed": [None],
            "decisions": ["rejected"],
        },
    ),
    "the same envelope twice in one batch: routed twice, one receipt item for both": Case(
        "THA",
        lambda p: [(A, "DSI-ATHD", None, False), (A, "DSI-ATHD", None, False)],
        {
            # not yet routed when the second copy is decided: redone, never refused
            "publishes": [
                (subjects.cross_border("THA", "MYS"), "m0:THA/DSI-ATHD", [0], "MYS"),
                (subjects.cross_border("THA", "MYS"), "m0:THA/DSI-ATHD", [1], "MYS"),
            ],
            "receipts": [
                (DSI, "accepted", None, ["m0"], [0, 1]),
                (DSI, "relayed", None, ["m0"], [0, 1]),
            ],
            "events": [["accepted", "relayed"], ["accepted", "relayed"]],
            "routed": ["m0", "m0"],
            "decisions": ["accepted", "accepted"],
        },
    ),
    "from a peer: delivered locally, a delivered receipt goes back over the link": Case(
        "THA",
        lambda p: [(FROM_MYS, None, "MYS", False)],
        {
            "publishes": [
                (subjects.inbox(parse_agency(DSI)), "m0:MYS/RMP-ATIPSOM:DSI-ATHD", [0], None)
            ],
            "receipts": [(RMP, "delivered", None, ["m0"], [0])],
            "events": [["accepted", "delivered"]],
            "routed": ["m0"],
            "decisions": ["accepted"],
        },
    ),
    "from a peer without its hub's countersignature: refused, verified sender told": Case(
        "THA",
        lambda p: [(alert(RMP, [DSI]), None, "MYS", False)],
        {
            "publishes": [],
            "receipts": [(RMP, "rejected", "ixb.E_SIGNATURE", ["m0"], [0])],
            "events": [["rejected"]],
            "routed": [None],
            "decisions": ["rejected"],
        },
    ),
    "garbage over a link: refused, nobody to tell": Case(
        "THA",
        lambda p: [(b"\x81\xa1x\x01", None, "MYS", False)],
        {
            "publishes": [],
            "receipts": [],
            "events": [["rejected"]],
            "routed": [None],
            "decisions": ["rejected"],
        },
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_plan(name: str) -> None:
    case = CASES[name]
    p = pipeline(case.country)
    arrivals = case.arrivals(p)
    decided = decide(p, arrivals)
    plan = plan_batch(decided, hub=HUBS[case.country].principal, now=NOW)
    ids: dict[bytes, str] = {}
    for data, *_ in arrivals:
        with contextlib.suppress(IxbError):  # garbage has no id
            ids.setdefault(decode_envelope(data).header.id, f"m{len(ids)}")
    assert summary(plan, ids) == case.expected
    for m in plan.messages:
        assert all(e.at == NOW and e.hub == f"{case.country}/HUB" for e in m.entries)


def test_plan_is_data_and_deterministic() -> None:
    p = pipeline()
    decided = decide(p, [(A, "DSI-ATHD", None, False), (LOCAL, "DSI-ATHD", None, False)])
    first = plan_batch(decided, hub=HUBS["THA"].principal, now=NOW)
    assert first == plan_batch(decided, hub=HUBS["THA"].principal, now=NOW)


def test_receipt_statements_split_at_the_id_limit() -> None:
    n = MAX_RECEIPT_IDS + 3
    p = pipeline(burst=n)
    arrivals: list[Arrival] = [(alert(DSI, [RMP]), "DSI-ATHD", None, False) for _ in range(n)]
    plan = plan_batch(decide(p, arrivals), hub=HUBS["THA"].principal, now=NOW)
    accepted = [r for r in plan.receipts if r.status is ReceiptStatus.ACCEPTED]
    assert [len(r.ids) for r in accepted] == [MAX_RECEIPT_IDS, 3]
    assert accepted[0].works == frozenset(range(MAX_RECEIPT_IDS))
    assert accepted[1].works == frozenset(range(MAX_RECEIPT_IDS, n))


def _keys(
    p: Pipeline, local: dict[Principal, PublicIdentity]
) -> Callable[[Principal, int], PublicIdentity]:
    def lookup(to: Principal, now: int) -> PublicIdentity:
        return local[to] if to in local else p.keys.encryption_key(to, now)

    return lookup


def test_sealed_receipts_open_for_their_recipient_only() -> None:
    p = pipeline()
    decided = decide(p, [(A, "DSI-ATHD", None, False), (B, "DSI-ATHD", None, False)])
    plan = plan_batch(decided, hub=HUBS["THA"].principal, now=NOW)
    local = {parse_agency(DSI): IDS[DSI].public(), parse_agency(IMM): IDS[IMM].public()}
    sealed = seal_receipts(
        plan.receipts,
        identity=HUBS["THA"],
        encryption_key=_keys(p, local),
        links=frozenset({"MYS", "MMR"}),
        now=NOW,
    )
    assert sealed.unroutable == ()
    assert [pub.subject for pub in sealed.publishes] == [subjects.inbox(parse_agency(DSI))] * 2
    statuses = []
    for pub in sealed.publishes:
        env = decode_envelope(pub.data)
        body = open_envelope(verify_envelope(env, p.keys, NOW), IDS[DSI]).body
        assert isinstance(body, Receipt) and body.by == "THA/HUB" and body.at_ms == NOW
        assert (body.for_id, *body.also) == tuple(decode_envelope(d).header.id for d in (A, B))
        statuses.append(body.status)
        assert pub.entry is not None and pub.entry.event.value == "delivered"
        assert pub.works == frozenset({0, 1})
    assert statuses == [ReceiptStatus.ACCEPTED, ReceiptStatus.RELAYED]
    # a re-sealed receipt (after a crash) keeps its de-duplication id; the bytes differ (nonces)
    again = seal_receipts(
        plan.receipts,
        identity=HUBS["THA"],
        encryption_key=_keys(p, local),
        links=frozenset({"MYS", "MMR"}),
        now=NOW,
    )
    assert [x.dedup for x in again.publishes] == [x.dedup for x in sealed.publishes]
    assert again.publishes[0].data != sealed.publishes[0].data


def test_receipts_without_route_or_key_are_reported_not_sealed() -> None:
    p = pipeline()
    to_peer = ReceiptStatement(
        parse_agency(RMP), ReceiptStatus.DELIVERED, None, None, (b"\x01" * 16,), frozenset({0})
    )
    unknown = ReceiptStatement(
        Principal("THA", "NOBODY"), ReceiptStatus.ACCEPTED, None, None, (b"\x02" * 16,), frozenset()
    )

    def nobody(to: Principal, now: int) -> PublicIdentity:
        if to.name == "NOBODY":
            raise UnknownRecipientError("no such agency")
        return p.keys.encryption_key(to, now)

    sealed = seal_receipts(
        [to_peer, unknown], identity=HUBS["THA"], encryption_key=nobody, links=frozenset(), now=NOW
    )
    assert sealed.publishes == ()
    assert [(st.to.name, code) for st, code in sealed.unroutable] == [
        ("RMP-ATIPSOM", "no_link"),
        ("NOBODY", "ixb.E_UNKNOWN_RECIPIENT"),
    ]
    linked = seal_receipts(
        [to_peer], identity=HUBS["THA"], encryption_key=nobody, links=frozenset({"MYS"}), now=NOW
    )
    (pub,) = linked.publishes
    assert (pub.subject, pub.peer) == (subjects.cross_border("THA", "MYS"), "MYS")
    assert pub.entry is not None and pub.entry.event.value == "relayed"


def test_pipeline_reads_no_store_only_the_seen_protocol(tmp_path: Path) -> None:
    """The decisions need nothing but the seen-messages protocol: no SQLite file appears."""
    p = pipeline()
    decide(p, [(A, "DSI-ATHD", None, False)])
    seen = p.seen
    assert isinstance(seen, MemorySeen) and len(seen.rows) == 1
    assert not Path("/nonexistent").exists()
