"""A bounded fuzz of the hub's ingress: whatever bytes arrive, on an agency's ingress or over
a link, :class:`~broker.pipeline.Pipeline` ends in ``Accepted`` or ``Rejected`` with a code
of SPEC §9 — never another exception (§4.7: "a decoder MUST NOT fail in any other way").
No NATS: the pipeline over the in-memory seen-set of ``tests/test_plan.py``."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.pipeline import Accepted, Outcome, Pipeline, Rejected
from protocols.envelope import add_hop, decode_envelope
from tests.test_pipeline import HUBS, NOW, seal
from tests.test_plan import pipeline

SPEC = (Path(__file__).parents[2] / "protocols" / "SPEC.md").read_text("utf-8")
_S9 = SPEC[SPEC.index("## 9. Error codes") : SPEC.index("### 9.1")]
CODES = frozenset(re.findall(r"^\| `(ixb\.E_[A-Z_]+)` \| (?:peer|policy) \|", _S9, re.M))
"""The peer and policy codes of §9's table: what refusing an input may say (local codes
would mean the hub itself failed)."""

LOCAL = seal("THA/DSI-ATHD", ["MYS/RMP-ATIPSOM", "THA/IMMIGRATION"])
PEER = add_hop(decode_envelope(seal("MYS/RMP-ATIPSOM", ["THA/DSI-ATHD"])), HUBS["MYS"], NOW)
PEER_BYTES = PEER.to_bytes()
FUZZ = settings(
    max_examples=300,
    deadline=timedelta(milliseconds=500),
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_code_list_is_the_specs() -> None:
    assert len(CODES) >= 25
    assert {"ixb.E_MALFORMED", "ixb.E_REPLAY", "ixb.E_UNAUTHORISED"} <= CODES
    assert "ixb.E_INTERNAL" not in CODES


def _fresh() -> Pipeline:
    return pipeline("THA", burst=1_000_000)  # the rate limit is not what is fuzzed


def _check(outcome: Outcome) -> Outcome:
    assert isinstance(outcome, Accepted | Rejected), outcome
    if isinstance(outcome, Rejected):
        assert outcome.error.code in CODES, (outcome.error.code, outcome.error.detail)
    return outcome


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few edits: bits flipped, bytes set, a range cut, bytes inserted."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xC1, 0xDC, 0xDD, 0xDE, 0xDF, 0xC6, 0xFF]))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:]
    return bytes(data)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_refused_with_a_spec_code(data: bytes) -> None:
    p = _fresh()
    for outcome in (p.from_local(data, "DSI-ATHD", NOW), p.from_peer(data, "MYS", NOW)):
        assert isinstance(_check(outcome), Rejected)


@FUZZ
@given(data=mutated(LOCAL))
def test_mutated_envelopes_on_the_ingress(data: bytes) -> None:
    p = _fresh()
    outcome = _check(p.from_local(data, "DSI-ATHD", NOW))
    if isinstance(outcome, Accepted):  # only when the mutation left the signed bytes intact
        assert outcome.envelope.digest == decode_envelope(LOCAL).digest
    _check(p.from_local(data, "DSI-ATHD", NOW, redelivered=True))


@FUZZ
@given(data=mutated(PEER_BYTES))
def test_mutated_envelopes_over_a_link(data: bytes) -> None:
    p = _fresh()
    outcome = _check(p.from_peer(data, "MYS", NOW))
    if isinstance(outcome, Accepted):
        assert outcome.envelope.digest == PEER.digest


@settings(max_examples=300, deadline=timedelta(milliseconds=500))
@given(bit=st.integers(0, len(LOCAL) * 8 - 1))
def test_no_single_flipped_bit_gets_through(bit: int) -> None:
    data = bytearray(LOCAL)
    data[bit // 8] ^= 1 << (bit % 8)
    outcome = _check(_fresh().from_local(bytes(data), "DSI-ATHD", NOW))
    assert isinstance(outcome, Rejected)  # never accepted: every byte is signed or structure


def test_the_unmutated_envelopes_are_accepted() -> None:
    """The fuzz starts from inputs the pipeline accepts, so mutations are what it tests."""
    p = _fresh()
    assert isinstance(p.from_local(LOCAL, "DSI-ATHD", NOW), Accepted)
    assert isinstance(p.from_peer(PEER_BYTES, "MYS", NOW), Accepted)
