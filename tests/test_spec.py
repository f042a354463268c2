"""SPEC.md is what implementers read: it must cover what the code emits."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import msgspec

import protocols
from broker.plan import message_dedup, valid_msg_id
from protocols.envelope import decode_envelope
from protocols.errors import ERRORS_BY_CODE
from protocols.messages import MESSAGE_TYPES

SPEC = (Path(protocols.__file__).parent / "SPEC.md").read_text()


def test_spec_lists_every_error_code() -> None:
    missing = [code for code in ERRORS_BY_CODE if f"`{code}`" not in SPEC]
    assert not missing, f"SPEC.md lacks {missing}"


def test_spec_describes_every_message_type() -> None:
    missing = [t for t in MESSAGE_TYPES if f"### `{t}`" not in SPEC]
    assert not missing, f"SPEC.md has no section for {missing}"


def test_every_file_the_spec_names_exists() -> None:
    """Reference implementations, tests and vectors named in SPEC.md are where it says."""
    root = Path(protocols.__file__).parent.parent
    named = set(re.findall(r"\b((?:protocols|tests)/[\w/]+\.(?:py|json))\b", SPEC))
    assert "protocols/messages.py" in named
    missing = sorted(n for n in named if not (root / n).is_file())
    assert not missing, f"SPEC.md names {missing}"


def _section(title: str) -> str:
    start = SPEC.index(title)
    end = SPEC.find("\n## ", start)
    return SPEC[start : end if end != -1 else len(SPEC)]


def _rejected_receipts(
    data: bytes, publisher: str | None, via: str | None, nats_id: str | None
) -> list[tuple[str, str | None, list[str]]]:
    from broker.plan import plan_batch
    from tests.test_plan import HUBS, NOW, decide, pipeline

    p = pipeline("THA")
    decided = [
        dataclasses.replace(d, nats_msg_id=nats_id)
        for d in decide(p, [(data, publisher, via, False)])
    ]
    plan = plan_batch(decided, hub=HUBS["THA"].principal, now=NOW)
    return [(str(st.to), st.code, [i.hex() for i in st.ids]) for st in plan.receipts]


def test_section_8_specifies_nats_msg_id_as_the_hub_uses_it() -> None:
    """§8.1: the sender's value, and the receipt naming a payload that does not parse by it."""
    text = _section("### 8.1 `Nats-Msg-Id`")
    assert "lower-case hyphenated UUID" in text and "nil UUID" in text
    garbage = b"\x81\xa1x\x01"
    mid = "0195f0a0-1e2b-7c3d-8e4f-0123456789ab"
    assert mid in text
    # named by the Nats-Msg-Id (any spelling of the UUID), else by the nil UUID
    for spelling in (mid, mid.upper(), mid.replace("-", ""), f"{mid}:THA/DSI-ATHD"):
        assert _rejected_receipts(garbage, "DSI-ATHD", None, valid_msg_id(spelling)) == [
            ("THA/DSI-ATHD", "ixb.E_MALFORMED", [mid.replace("-", "")])
        ]
    assert valid_msg_id("retry-7") is None
    assert _rejected_receipts(garbage, "DSI-ATHD", None, None) == [
        ("THA/DSI-ATHD", "ixb.E_MALFORMED", ["00" * 16])
    ]


def test_section_8_lists_the_nats_msg_id_of_every_hub_publish() -> None:
    text = _section("### 8.1 `Nats-Msg-Id`")
    forms = ("`<message id>:<sender>:<NAME>`", "`<message id>:<sender>`", "`rcpt:`")
    assert all(f in text for f in (*forms, "`dir:<CC>:<version>`"))
    assert message_dedup("0195f0a0-1e2b-7c3d-8e4f-0123456789ab", "THA/A") == (
        "0195f0a0-1e2b-7c3d-8e4f-0123456789ab:THA/A"
    )
    sources = {
        "broker/plan.py": ['f"{dedup}:{a.name}"', '"rcpt:" + receipt_digest(st)'],
        "broker/control.py": [
            'f"dir:{self.country}:{version}"',
            'f"cosig:{peer}:{self.country}',
            'f"wsize:{peer}:{self.country}:{decision.size}:{old_size}:{size}"',
        ],
        "broker/hub.py": [
            'f"ckpt:{self.country}:{peer}:{cp.size}:{cp.root[:8].hex()}:{publication.old_size}"'
        ],
    }
    root = Path(protocols.__file__).parent.parent
    for path, forms in sources.items():  # the spec's table is still what the hub does
        code = (root / path).read_text()
        assert all(f in code for f in forms), path
    assert "`ckpt:<CC>:<DEST>:<size>:" in text and ":<old_size>`" in text
    assert "`cosig:<origin country>:<CC>:<size>`" in text and "`wsize:" in text


def test_section_9_states_the_receipt_policy_the_hub_follows() -> None:
    """§9.1 replaces "every refusal is a signed receipt" with who is answered, and why not."""
    text = _section("### 9.1 Which refusals are answered with a receipt")
    assert "Over NATS a refusal is a signed `receipt`" not in SPEC
    for phrase in (
        "a hub's receipts are never answered",
        "the publisher `CC/NAME`, always",
        "nobody",
    ):
        assert phrase in text
    garbage = b"\x81\xa1x\x01"
    assert _rejected_receipts(garbage, None, "MYS", None) == []  # link, unverified: nobody
    assert _rejected_receipts(garbage, "DSI-ATHD", None, None) != []  # ingress: publisher
    from broker.pipeline import Rejected, rejection_recipient
    from protocols.errors import SchemaError, SignatureError
    from tests.test_plan import FROM_MYS

    header = decode_envelope(FROM_MYS).header
    receipt_header = msgspec.structs.replace(header, type="receipt", in_reply_to=bytes(16))
    hub_receipt = msgspec.structs.replace(receipt_header, sender="MYS/HUB")
    for publisher in ("DSI-ATHD", None):
        refused = Rejected(SchemaError("x"), hub_receipt, verified=True)
        assert rejection_recipient(refused, country="THA", publisher=publisher) is None
    # an agency's (read) receipt is answered like anything else it sends
    read = Rejected(SchemaError("x"), receipt_header, verified=True)
    assert str(rejection_recipient(read, country="THA", publisher=None)) == header.sender
    assert str(rejection_recipient(read, country="THA", publisher="DSI-ATHD")) == "THA/DSI-ATHD"
    verified = Rejected(SchemaError("x"), header, verified=True)
    forged = Rejected(SignatureError("x"), header, verified=False)
    assert str(rejection_recipient(verified, country="THA", publisher=None)) == header.sender
    assert rejection_recipient(forged, country="THA", publisher=None) is None
    assert str(rejection_recipient(forged, country="THA", publisher="DSI-ATHD")) == "THA/DSI-ATHD"
