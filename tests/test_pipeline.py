"""The hub's decisions without NATS: every branch of broker.pipeline, directly."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from broker.audit.log import AuditLog
from broker.auditing import HubAudit
from broker.config import HubConfig
from broker.pipeline import Accepted, Pipeline, Rejected, rejection_recipient
from broker.plan import Decided, plan_batch
from broker.ratelimit import RateLimiter
from broker.store import HubStore
from protocols import subjects
from protocols.directory import build_directory, entry_for, sign_directory
from protocols.envelope import add_hop, decode_envelope, seal_envelope
from protocols.errors import RateLimitedError
from protocols.examples import example_bodies
from protocols.federation import TrustAnchors
from protocols.handling import HandlingCode
from protocols.identifiers import Principal, hub_of, parse_agency
from protocols.keys import Identity
from protocols.limits import MS_PER_DAY
from protocols.roles import Role
from protocols.trusted import TrustedDirectories

NOW = 1_795_000_000_000
ROLES = {
    "THA/DSI-ATHD": [Role.TRAFFICKING_UNIT],
    "THA/IMMIGRATION": [Role.IMMIGRATION],
    "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT],
    "MMR/MOHA-ATTU": [Role.TRAFFICKING_UNIT],
}
IDS = {name: Identity.generate(parse_agency(name)) for name in ROLES}
HUBS = {c: Identity.generate(hub_of(c)) for c in ("THA", "MYS", "MMR")}
TRUST = TrustAnchors("test", {c: h.signing.public for c, h in HUBS.items()})
ALERT = example_bodies(0)["alert"]


def make_keys() -> TrustedDirectories:
    keys = TrustedDirectories(TRUST)
    for country, hub in HUBS.items():
        entries = [
            entry_for(i.public(), ROLES[n], 0, NOW + MS_PER_DAY)
            for n, i in IDS.items()
            if n.startswith(country)
        ]
        directory = build_directory(hub.principal, 1, NOW - 1000, MS_PER_DAY, entries)
        keys.update(country, sign_directory(directory, hub), NOW)
    return keys


def make_pipeline(tmp_path: Path, country: str = "THA", **policy: object) -> Pipeline:
    peers = [c for c in HUBS if c != country]
    config = msgspec.convert(
        {
            "hub": {
                "country": country,
                "key_file": "k",
                "state_dir": str(tmp_path),
                "federation_file": "f",
            },
            "nats": {"url": "nats://127.0.0.1:1", "user": "hub", "password": "p"},
            "links": {p: {"user": "u", "password": "p"} for p in peers},
            "policy": {"exchange": {p: ["alert", "receipt"] for p in peers}, **policy},
        },
        HubConfig,
    )
    store = HubStore(tmp_path / f"{country}.sqlite")
    limiter = RateLimiter(config.policy.max_per_minute, config.policy.burst)
    return Pipeline(config, HUBS[country], make_keys(), store, limiter)


def store_of(p: Pipeline) -> HubStore:
    assert isinstance(p.seen, HubStore)
    return p.seen


def seal(sender: str, to: list[str], body: object = ALERT, **kw: object) -> bytes:
    return seal_envelope(
        sender=IDS[sender],
        recipients=[IDS[r].public() for r in to],
        body=body,  # type: ignore[arg-type]
        now_ms=NOW,
        ttl_ms=MS_PER_DAY,
        **kw,  # type: ignore[arg-type]
    )


def code(outcome: Accepted | Rejected) -> str:
    assert isinstance(outcome, Rejected), outcome
    return outcome.error.code


def test_local_alert_is_routed_to_each_country(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    out = p.from_local(
        seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU", "THA/IMMIGRATION"]),
        "DSI-ATHD",
        NOW,
    )
    assert isinstance(out, Accepted) and not out.duplicate
    assert out.local == (parse_agency("THA/IMMIGRATION"),)
    assert out.peers == ("MMR", "MYS")
    assert [h.hub for h in out.envelope.hops] == ["THA/HUB"]


def test_directories_are_consulted_at_the_decisions_now(tmp_path: Path) -> None:
    """The pipeline's ``now_ms`` is the one time of the decision, for the directories too."""
    p = make_pipeline(tmp_path)
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    expired = NOW - 1000 + MS_PER_DAY  # the directories' expiry; the envelope lives until NOW + day
    out = p.from_local(data, "DSI-ATHD", expired)
    assert code(out) == "ixb.E_DIRECTORY"
    assert isinstance(p.from_local(data, "DSI-ATHD", expired - 1), Accepted)


def test_publisher_must_be_the_signer(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    out = p.from_local(seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"]), "IMMIGRATION", NOW)
    assert code(out) == "ixb.E_UNAUTHORISED"
    assert rejection_recipient(out, country="THA", publisher="IMMIGRATION") == Principal(  # type: ignore[arg-type]
        "THA", "IMMIGRATION"
    )


def test_redelivery_is_a_duplicate_but_a_new_copy_is_a_replay(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    first = p.from_local(data, "DSI-ATHD", NOW)
    assert isinstance(first, Accepted)
    # not yet routed (crash before routing finished): redone, not refused
    again = p.from_local(data, "DSI-ATHD", NOW, redelivered=True)
    assert isinstance(again, Accepted) and not again.duplicate
    store_of(p).mark_routed((first.envelope.header.sender, first.envelope.header.id))
    dup = p.from_local(data, "DSI-ATHD", NOW, redelivered=True)
    assert isinstance(dup, Accepted) and dup.duplicate
    assert code(p.from_local(data, "DSI-ATHD", NOW)) == "ixb.E_REPLAY"


def test_peer_link_carries_only_its_own_countrys_senders_countersigned(tmp_path: Path) -> None:
    mys = make_pipeline(tmp_path, "MYS")
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    assert code(mys.from_peer(data, "THA", NOW)) == "ixb.E_SIGNATURE"  # no THA hop
    hopped = add_hop(decode_envelope(data), HUBS["THA"], NOW).to_bytes()
    assert code(mys.from_peer(hopped, "MMR", NOW)) == "ixb.E_UNAUTHORISED"
    out = mys.from_peer(hopped, "THA", NOW)
    assert isinstance(out, Accepted)
    assert out.local == (parse_agency("MYS/RMP-ATIPSOM"),) and out.peers == ()


def test_policy_refusals(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, exchange={"MYS": ["receipt"], "MMR": ["alert", "receipt"]})
    assert code(p.from_local(seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"]), "DSI-ATHD", NOW)) == (
        "ixb.E_UNAUTHORISED"
    )  # THA does not exchange alerts with MYS
    query = example_bodies(0)["person.query"]
    assert (
        code(p.from_local(seal("THA/IMMIGRATION", ["MMR/MOHA-ATTU"], query), "IMMIGRATION", NOW))
        == "ixb.E_UNAUTHORISED"
    )  # role
    stranger = Identity.generate(parse_agency("MMR/NOBODY"))
    data = seal_envelope(
        sender=IDS["THA/DSI-ATHD"],
        recipients=[stranger.public()],
        body=ALERT,
        now_ms=NOW,
        ttl_ms=MS_PER_DAY,
    )
    assert code(p.from_local(data, "DSI-ATHD", NOW)) == "ixb.E_UNKNOWN_RECIPIENT"


def test_rate_limit(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path, burst=2, max_per_minute=1)
    codes = [
        p.from_local(seal("THA/DSI-ATHD", ["MMR/MOHA-ATTU"]), "DSI-ATHD", NOW) for _ in range(3)
    ]
    assert isinstance(codes[0], Accepted) and isinstance(codes[1], Accepted)
    assert code(codes[2]) == "ixb.E_RATE_LIMITED"


def test_forward_rules_on_metadata(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    original = p.from_local(
        seal("THA/DSI-ATHD", ["MMR/MOHA-ATTU"], handling=HandlingCode.H2), "DSI-ATHD", NOW
    )
    assert isinstance(original, Accepted)
    oid = original.envelope.header.id
    onward = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"], handling=HandlingCode.H2, forward_of=oid)
    assert code(p.from_local(onward, "DSI-ATHD", NOW)) == "ixb.E_HANDLING"
    unknown = seal("THA/DSI-ATHD", ["MMR/MOHA-ATTU"], forward_of=b"\x09" * 16)
    assert code(p.from_local(unknown, "DSI-ATHD", NOW)) == "ixb.E_HANDLING"


def test_garbage_is_rejected_without_a_header_and_answered_only_locally(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    out = p.from_local(b"\x00garbage", "DSI-ATHD", NOW)
    assert code(out) == "ixb.E_MALFORMED"
    assert isinstance(out, Rejected) and out.header is None
    assert rejection_recipient(out, country="THA", publisher="DSI-ATHD") == parse_agency(
        "THA/DSI-ATHD"
    )
    mys = make_pipeline(tmp_path / "m", "MYS")
    from_peer = mys.from_peer(b"\x00garbage", "THA", NOW)
    assert isinstance(from_peer, Rejected)
    assert rejection_recipient(from_peer, country="MYS", publisher=None) is None


@pytest.mark.parametrize(
    ("flip", "answered"),
    [(10, False), (200, False), (-30, True)],
    ids=["header", "ciphertext", "hop-signature"],
)
def test_forgeries_over_a_link_are_not_answered(tmp_path: Path, flip: int, answered: bool) -> None:
    """Only a sender whose own signature verified hears back (a broken hop is not its doing)."""
    mys = make_pipeline(tmp_path, "MYS")
    data = bytearray(
        add_hop(
            decode_envelope(seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])), HUBS["THA"], NOW
        ).to_bytes()
    )
    data[flip] ^= 1
    out = mys.from_peer(bytes(data), "THA", NOW)
    assert isinstance(out, Rejected)
    expected = parse_agency("THA/DSI-ATHD") if answered else None
    assert rejection_recipient(out, country="MYS", publisher=None) == expected


def test_a_peer_hubs_own_receipt_needs_no_countersignature(tmp_path: Path) -> None:
    from protocols.messages import Receipt, ReceiptStatus

    tha = make_pipeline(tmp_path)
    receipt = Receipt(for_id=b"\x01" * 16, status=ReceiptStatus.DELIVERED, by="MYS/HUB", at_ms=NOW)
    data = seal_envelope(
        sender=HUBS["MYS"],
        recipients=[IDS["THA/DSI-ATHD"].public()],
        body=receipt,
        now_ms=NOW,
        ttl_ms=MS_PER_DAY,
        in_reply_to=b"\x01" * 16,
    )
    out = tha.from_peer(data, "MYS", NOW)
    assert isinstance(out, Accepted) and out.local == (parse_agency("THA/DSI-ATHD"),)
    assert code(tha.from_peer(data, "MMR", NOW)) == "ixb.E_UNAUTHORISED"


def test_open_requests_track_deadlines_and_answers(tmp_path: Path) -> None:
    from protocols.handling import Priority

    tha = make_pipeline(tmp_path, exchange={"MMR": ["person.query", "person.result", "receipt"]})
    query = example_bodies(0)["person.query"]
    asked = tha.from_local(
        seal("THA/DSI-ATHD", ["MMR/MOHA-ATTU"], query, priority=Priority.URGENT), "DSI-ATHD", NOW
    )
    other = tha.from_local(seal("THA/DSI-ATHD", ["MMR/MOHA-ATTU"], query), "DSI-ATHD", NOW)
    assert isinstance(asked, Accepted) and isinstance(other, Accepted)
    answer = seal_envelope(
        sender=IDS["MMR/MOHA-ATTU"],
        recipients=[IDS["THA/DSI-ATHD"].public()],
        body=example_bodies(0)["person.result"],
        now_ms=NOW,
        ttl_ms=MS_PER_DAY,
        in_reply_to=asked.envelope.header.id,
    )
    hopped = add_hop(decode_envelope(answer), HUBS["MMR"], NOW).to_bytes()
    assert isinstance(tha.from_peer(hopped, "MMR", NOW), Accepted)
    rows = {r.msg_id: r for r in store_of(tha).open_requests()}
    urgent = rows[asked.envelope.header.message_id]
    assert urgent.answered and urgent.due_ms == NOW + 8 * 3600 * 1000
    normal = rows[other.envelope.header.message_id]
    assert not normal.answered and normal.due_ms == NOW + 7 * MS_PER_DAY
    assert list(rows) == [urgent.msg_id, normal.msg_id]  # earliest deadline first


def test_a_request_the_destination_refused_is_closed_for_deadlines(tmp_path: Path) -> None:
    """MMR's hub refused it: its shared ``rejected`` entry closes the request here; a third
    country's entry about it does not."""
    from broker.store import PeerEntry
    from protocols.handling import Priority

    tha = make_pipeline(tmp_path, exchange={"MMR": ["person.query", "person.result", "receipt"]})
    query = example_bodies(0)["person.query"]
    asked = tha.from_local(
        seal("THA/DSI-ATHD", ["MMR/MOHA-ATTU"], query, priority=Priority.URGENT), "DSI-ATHD", NOW
    )
    assert isinstance(asked, Accepted)
    msg_id = asked.envelope.header.message_id
    store = store_of(tha)

    def row() -> tuple[bool, bool]:
        (r,) = [r for r in store.open_requests() if r.msg_id == msg_id]
        return r.refused, r.closed

    assert row() == (False, False)
    store.save_peer_entries("MYS", [PeerEntry(7, msg_id, "rejected", NOW, "THA", b"x")])
    assert row() == (False, False)  # MYS is not the addressee's country
    store.save_peer_entries("MMR", [PeerEntry(3, msg_id, "accepted", NOW, "THA", b"y")])
    assert row() == (False, False)
    store.save_peer_entries("MMR", [PeerEntry(4, msg_id, "rejected", NOW, "THA", b"z")])
    assert row() == (True, True)


def test_rate_limit_per_agency_override() -> None:
    """An automated registry gets its own bucket size; everyone else keeps the policy's."""
    limiter = RateLimiter(1, 2, overrides={"MYS/IMMIGRATION": (60_000, 5)})
    for _ in range(5):
        limiter.take("MYS/IMMIGRATION", NOW)
    with pytest.raises(RateLimitedError, match="60000"):
        limiter.take("MYS/IMMIGRATION", NOW)
    limiter.take("MYS/RMP-ATIPSOM", NOW)
    limiter.take("MYS/RMP-ATIPSOM", NOW)
    with pytest.raises(RateLimitedError, match=" 1 messages"):
        limiter.take("MYS/RMP-ATIPSOM", NOW)


def _squat(monkeypatch: pytest.MonkeyPatch, sender: str, to: list[str], message_id: bytes) -> bytes:
    """An envelope of ``sender`` that re-uses ``message_id`` (an id it learned from another)."""
    import protocols.envelope as envelope_module

    monkeypatch.setattr(envelope_module, "new_message_id", lambda *_: message_id)
    try:
        return seal(sender, to)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("squatter_first", [True, False])
def test_an_id_squatted_by_another_sender_does_not_censor_the_genuine_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, squatter_first: bool
) -> None:
    """MMR re-uses the id of a THA→MYS alert: MYS accepts both, each under its own sender."""
    mys = make_pipeline(tmp_path, "MYS")
    genuine = add_hop(
        decode_envelope(seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])), HUBS["THA"], NOW
    ).to_bytes()
    gid = decode_envelope(genuine).header.id
    squat = add_hop(
        decode_envelope(_squat(monkeypatch, "MMR/MOHA-ATTU", ["MYS/RMP-ATIPSOM"], gid)),
        HUBS["MMR"],
        NOW,
    ).to_bytes()
    assert decode_envelope(squat).header.id == gid
    order = (
        [(squat, "MMR"), (genuine, "THA")] if squatter_first else [(genuine, "THA"), (squat, "MMR")]
    )
    for data, via in order:
        out = mys.from_peer(data, via, NOW)
        assert isinstance(out, Accepted) and not out.duplicate, out
    store = store_of(mys)
    assert store.known("THA/DSI-ATHD", gid) is not None
    assert store.known("MMR/MOHA-ATTU", gid) is not None
    # the same sender re-using its own id for another envelope is still a replay
    again = add_hop(
        decode_envelope(_squat(monkeypatch, "MMR/MOHA-ATTU", ["MYS/RMP-ATIPSOM"], gid)),
        HUBS["MMR"],
        NOW,
    ).to_bytes()
    assert code(mys.from_peer(again, "MMR", NOW)) == "ixb.E_REPLAY"


def test_the_rate_limit_is_taken_before_any_decoding(tmp_path: Path) -> None:
    """200 expired envelopes with burst 2: two are checked and refused, the rest cost a token."""
    p = make_pipeline(tmp_path, max_per_minute=1, burst=2)
    expired = seal_envelope(
        sender=IDS["THA/DSI-ATHD"],
        recipients=[IDS["MYS/RMP-ATIPSOM"].public()],
        body=ALERT,
        now_ms=NOW,
        ttl_ms=60_000,
    )
    later = NOW + 120_000
    codes = [code(p.from_local(expired, "DSI-ATHD", later)) for _ in range(200)]
    assert codes[:2] == ["ixb.E_EXPIRED"] * 2
    assert set(codes[2:]) == {"ixb.E_RATE_LIMITED"}
    # garbage over the limit is not even parsed; a redelivery (already counted) is not limited
    assert code(p.from_local(b"\xc1", "DSI-ATHD", later)) == "ixb.E_RATE_LIMITED"
    assert code(p.from_local(b"\xc1", "DSI-ATHD", later, redelivered=True)) == "ixb.E_MALFORMED"
    # the limit is the publisher's own: another agency still gets through
    other = p.from_local(seal("THA/IMMIGRATION", ["MYS/RMP-ATIPSOM"]), "IMMIGRATION", NOW)
    assert not isinstance(other, Rejected) or other.error.code != "ixb.E_RATE_LIMITED"


def test_replay_is_checked_before_hops(tmp_path: Path) -> None:
    """SPEC §4.7: step 10 (replay) before step 11 (hops)."""
    tha = make_pipeline(tmp_path, "THA")
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    first = tha.from_local(data, "DSI-ATHD", NOW)
    assert isinstance(first, Accepted)
    store_of(tha).mark_routed((first.envelope.header.sender, first.envelope.header.id))
    forged_hop = add_hop(decode_envelope(data), HUBS["MMR"], NOW).to_bytes()  # no hop of ours
    assert code(tha.from_local(forged_hop, "DSI-ATHD", NOW)) == "ixb.E_REPLAY"


def test_a_second_copy_on_a_link_is_a_duplicate_not_a_replay(tmp_path: Path) -> None:
    """SPEC §8.1: a link stream may hold an envelope twice (sourcing after a server crash);
    the second copy of a routed envelope is dropped quietly, with no rejection receipt to a
    sender whose message was delivered. Another envelope under the same id stays a replay."""
    mys = make_pipeline(tmp_path, "MYS")
    data = add_hop(
        decode_envelope(seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])), HUBS["THA"], NOW
    ).to_bytes()
    first = mys.from_peer(data, "THA", NOW)
    assert isinstance(first, Accepted) and not first.duplicate
    # not routed yet (the first settle failed): the copy is routed again, same outcome
    again = mys.from_peer(data, "THA", NOW)
    assert isinstance(again, Accepted) and not again.duplicate
    store_of(mys).mark_routed((first.envelope.header.sender, first.envelope.header.id))
    copy = mys.from_peer(data, "THA", NOW)
    assert isinstance(copy, Accepted) and copy.duplicate and not copy.local
    # on the ingress, the same bytes in a new stream message are the sender's replay
    tha = make_pipeline(tmp_path / "tha", "THA")
    local = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    sent = tha.from_local(local, "DSI-ATHD", NOW)
    assert isinstance(sent, Accepted)
    store_of(tha).mark_routed((sent.envelope.header.sender, sent.envelope.header.id))
    assert code(tha.from_local(local, "DSI-ATHD", NOW)) == "ixb.E_REPLAY"
    # … unless it carries the Nats-Msg-Id a retry must carry: the sender's own retry,
    # stored twice because JetStream's de-duplication did not survive a server crash
    env = decode_envelope(local)
    retry_id = subjects.ingress_msg_id(env.header.message_id, env.digest)
    again = tha.from_local(local, "DSI-ATHD", NOW, nats_msg_id=retry_id)
    assert isinstance(again, Accepted) and again.duplicate and not again.peers
    other = f"{env.header.message_id}:{bytes(16).hex()}"
    assert code(tha.from_local(local, "DSI-ATHD", NOW, nats_msg_id=other)) == "ixb.E_REPLAY"


# --- receipts are statements by their signer (SPEC §5 receipt) ---------------------------


def receipt_from(
    signer: Identity, to: str | list[str], for_id: bytes, status: str, *, via: str | None = None
) -> bytes:
    """A receipt envelope signed by ``signer`` about ``for_id``, hopped by ``via``'s hub."""
    from protocols.messages import Receipt, ReceiptStatus

    body = Receipt(
        for_id=for_id,
        status=ReceiptStatus(status),
        by="MYS/HUB" if status == "delivered" else str(signer.principal),
        at_ms=NOW,
    )
    data = seal_envelope(
        sender=signer,
        recipients=[IDS[t].public() for t in ([to] if isinstance(to, str) else to)],
        body=body,
        now_ms=NOW,
        ttl_ms=MS_PER_DAY,
        in_reply_to=for_id,
    )
    if via is None:
        return data
    return add_hop(decode_envelope(data), HUBS[via], NOW).to_bytes()


def tha_to_mys(p: Pipeline) -> bytes:
    """THA/DSI-ATHD's alert to MYS/RMP-ATIPSOM, accepted by ``p`` (THA's or MYS's hub)."""
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    if p.country == "THA":
        out = p.from_local(data, "DSI-ATHD", NOW)
    else:
        out = p.from_peer(add_hop(decode_envelope(data), HUBS["THA"], NOW).to_bytes(), "THA", NOW)
    assert isinstance(out, Accepted)
    return out.envelope.header.id


def test_a_forged_delivery_from_a_third_countrys_agency_is_refused_and_its_signer_told(
    tmp_path: Path,
) -> None:
    """The finding: MMR/MOHA-ATTU signs {delivered, by: MYS/HUB} about a THA → MYS alert.
    Refused; the answer goes to the forger (its signature verified), never to THA/DSI-ATHD."""
    tha = make_pipeline(tmp_path)
    msg_id = tha_to_mys(tha)
    forged = receipt_from(IDS["MMR/MOHA-ATTU"], "THA/DSI-ATHD", msg_id, "delivered", via="MMR")
    out = tha.from_peer(forged, "MMR", NOW)
    assert code(out) == "ixb.E_UNAUTHORISED"
    answered = rejection_recipient(out, country="THA", publisher=None)  # type: ignore[arg-type]
    assert str(answered) == "MMR/MOHA-ATTU"
    # the recipient's own read receipt, through its hub, passes
    read = receipt_from(IDS["MYS/RMP-ATIPSOM"], "THA/DSI-ATHD", msg_id, "read", via="MYS")
    genuine = tha.from_peer(read, "MYS", NOW)
    assert isinstance(genuine, Accepted) and genuine.local == (parse_agency("THA/DSI-ATHD"),)


def test_a_third_countrys_hub_may_not_speak_of_the_message(tmp_path: Path) -> None:
    tha = make_pipeline(tmp_path)
    msg_id = tha_to_mys(tha)
    mmr_hub = receipt_from(HUBS["MMR"], "THA/DSI-ATHD", msg_id, "accepted")
    assert code(tha.from_peer(mmr_hub, "MMR", NOW)) == "ixb.E_UNAUTHORISED"
    mys_hub = receipt_from(HUBS["MYS"], "THA/DSI-ATHD", msg_id, "delivered")
    out = tha.from_peer(mys_hub, "MYS", NOW)  # the recipient's hub: genuine
    assert isinstance(out, Accepted) and out.local == (parse_agency("THA/DSI-ATHD"),)


def test_only_a_recipient_may_send_a_read_receipt(tmp_path: Path) -> None:
    tha = make_pipeline(tmp_path)
    msg_id = tha_to_mys(tha)
    # THA/IMMIGRATION never received it; its own hub knows that
    stranger = receipt_from(IDS["THA/IMMIGRATION"], "THA/DSI-ATHD", msg_id, "read")
    assert code(tha.from_local(stranger, "IMMIGRATION", NOW)) == "ixb.E_UNAUTHORISED"
    mys = make_pipeline(tmp_path / "mys", "MYS")
    mys_id = tha_to_mys(mys)
    owner = receipt_from(IDS["MYS/RMP-ATIPSOM"], "THA/DSI-ATHD", mys_id, "read")
    at_mys = mys.from_local(owner, "RMP-ATIPSOM", NOW)
    assert isinstance(at_mys, Accepted) and at_mys.peers == ("THA",)
    # ... and it goes to the message's sender alone
    elsewhere = receipt_from(
        IDS["MYS/RMP-ATIPSOM"], ["THA/DSI-ATHD", "MMR/MOHA-ATTU"], mys_id, "read"
    )
    assert code(mys.from_local(elsewhere, "RMP-ATIPSOM", NOW)) == "ixb.E_UNAUTHORISED"


def test_a_third_partys_answer_does_not_close_a_request_the_owners_does(tmp_path: Path) -> None:
    types = ["person.query", "person.result", "receipt"]
    tha = make_pipeline(tmp_path, exchange={"MMR": types, "MYS": types})
    asked = tha.from_local(
        seal("THA/DSI-ATHD", ["MMR/MOHA-ATTU"], example_bodies(0)["person.query"]),
        "DSI-ATHD",
        NOW,
    )
    assert isinstance(asked, Accepted)
    request_id = asked.envelope.header.id

    def answer(sender: str) -> bytes:
        data = seal_envelope(
            sender=IDS[sender],
            recipients=[IDS["THA/DSI-ATHD"].public()],
            body=example_bodies(0)["person.result"],
            now_ms=NOW,
            ttl_ms=MS_PER_DAY,
            in_reply_to=request_id,
        )
        return add_hop(decode_envelope(data), HUBS[sender[:3]], NOW).to_bytes()

    def answered() -> bool:
        (row,) = store_of(tha).open_requests()
        return row.answered

    assert isinstance(tha.from_peer(answer("MYS/RMP-ATIPSOM"), "MYS", NOW), Accepted)
    assert not answered()  # a third party's answer is delivered, but closes nothing
    receipt = receipt_from(HUBS["MMR"], "THA/DSI-ATHD", request_id, "accepted")
    tha.from_peer(receipt, "MMR", NOW)
    assert not answered()  # nor does a receipt
    assert isinstance(tha.from_peer(answer("MMR/MOHA-ATTU"), "MMR", NOW), Accepted)
    assert answered()


def test_an_acceptance_in_the_audit_log_is_routed_though_the_store_lost_the_mark(
    tmp_path: Path,
) -> None:
    """The routed mark is written after the audit entries; when its write failed, the
    redelivered message is found in the log and gets the mark alone (no entry again)."""
    config = make_pipeline(tmp_path / "a").config
    store = HubStore(tmp_path / "hub.sqlite")
    log = AuditLog(tmp_path / "audit.sqlite")
    audit = HubAudit(HUBS["THA"], log, store, TRUST, ["MYS", "MMR"], lambda: NOW)
    p = Pipeline(config, HUBS["THA"], make_keys(), store, recorded=audit)
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    first = p.from_local(data, "DSI-ATHD", NOW)
    assert isinstance(first, Accepted)
    header = first.envelope.header
    plan = plan_batch([Decided(first, "DSI-ATHD", None)], hub=HUBS["THA"].principal, now=NOW)
    # not recorded yet (the audit commit failed): decided again, routed again
    again = p.from_local(data, "DSI-ATHD", NOW, redelivered=True)
    assert isinstance(again, Accepted) and not again.unmarked and again.peers == ("MYS",)
    # recorded, and the store's routed mark failed to be written
    audit.record(plan.messages[0].entries)
    assert audit.recorded(header.sender, header.id)
    assert not audit.recorded("THA/IMMIGRATION", header.id)  # ids are unique per sender
    resumed = p.from_local(data, "DSI-ATHD", NOW, redelivered=True)
    assert isinstance(resumed, Accepted) and resumed.unmarked and not resumed.duplicate
    assert (resumed.local, resumed.peers) == ((), ())
    finished = plan_batch([Decided(resumed, "DSI-ATHD", None)], hub=HUBS["THA"].principal, now=NOW)
    (finish,) = finished.messages
    assert finish.entries == () and finish.routed == (header.sender, header.id)
    assert finish.report.decision == "accepted"
    assert finished.publishes == () and finished.receipts == ()
    # a new copy of an envelope the log says was routed is a replay, as for a marked one
    assert code(p.from_local(data, "DSI-ATHD", NOW)) == "ixb.E_REPLAY"
    store.mark_routed((header.sender, header.id))
    dup = p.from_local(data, "DSI-ATHD", NOW, redelivered=True)
    assert isinstance(dup, Accepted) and dup.duplicate and not dup.unmarked
    store.close()
    log.close()


def test_after_a_rebuild_an_acceptance_only_the_log_holds_is_a_replay_until_it_expires(
    tmp_path: Path,
) -> None:
    """An older backup restored and its log rebuilt from the AUDIT stream: the log holds
    acceptances the store never knew. Until ``unknown_acceptances_until`` the pipeline
    looks there: a new copy is a replay, our redelivery is finished; after it (every such
    envelope expired) it does not look, and without the window it never did."""
    config = make_pipeline(tmp_path / "a").config
    log = AuditLog(tmp_path / "audit.sqlite")
    old_store = HubStore(tmp_path / "hub.sqlite")
    audit = HubAudit(HUBS["THA"], log, old_store, TRUST, ["MYS", "MMR"], lambda: NOW)
    before = Pipeline(config, HUBS["THA"], make_keys(), old_store, recorded=audit)
    data = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM"])
    first = before.from_local(data, "DSI-ATHD", NOW)
    assert isinstance(first, Accepted)
    plan = plan_batch([Decided(first, "DSI-ATHD", None)], hub=HUBS["THA"].principal, now=NOW)
    audit.record(plan.messages[0].entries)
    # the restored store predates it
    restored = HubStore(tmp_path / "restored.sqlite")
    window = NOW + 60_000
    after = Pipeline(
        config, HUBS["THA"], make_keys(), restored, recorded=audit, unknown_acceptances_until=window
    )
    assert code(after.from_local(data, "DSI-ATHD", NOW)) == "ixb.E_REPLAY"
    done = after.from_local(data, "DSI-ATHD", NOW, redelivered=True)
    assert isinstance(done, Accepted) and done.duplicate and (done.local, done.peers) == ((), ())
    blind = Pipeline(config, HUBS["THA"], make_keys(), restored, recorded=audit)
    assert isinstance(blind.from_local(data, "DSI-ATHD", NOW), Accepted)  # what the window fixes
    for s in (old_store, restored):
        s.close()
    log.close()
