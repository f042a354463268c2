"""The receipts an agency client keeps in memory: one statement once, and a bound."""

from __future__ import annotations

from agency_client.sdk import SignedReceipt, keep_receipt
from protocols.identifiers import parse_principal
from protocols.messages import Receipt, ReceiptStatus


def signed(status: ReceiptStatus, signer: str = "THA/HUB", at: int = 1) -> SignedReceipt:
    receipt = Receipt(for_id=b"\x01" * 16, status=status, by=signer, at_ms=at)
    return SignedReceipt(receipt, parse_principal(signer), ())


def test_one_statement_is_kept_once_whatever_its_time() -> None:
    receipts: dict[str, list[SignedReceipt]] = {}
    assert keep_receipt(receipts, "m", signed(ReceiptStatus.ACCEPTED, at=1))
    assert not keep_receipt(receipts, "m", signed(ReceiptStatus.ACCEPTED, at=2))
    assert keep_receipt(receipts, "m", signed(ReceiptStatus.DELIVERED))
    assert keep_receipt(receipts, "m", signed(ReceiptStatus.ACCEPTED, signer="MYS/HUB"))
    assert [r.status for r in receipts["m"]] == [
        ReceiptStatus.ACCEPTED,
        ReceiptStatus.DELIVERED,
        ReceiptStatus.ACCEPTED,
    ]


def test_the_oldest_messages_receipts_go_past_the_bound() -> None:
    receipts: dict[str, list[SignedReceipt]] = {}
    for i in range(10):
        keep_receipt(receipts, f"m{i}", signed(ReceiptStatus.ACCEPTED), limit=4)
    assert list(receipts) == ["m6", "m7", "m8", "m9"]
    keep_receipt(receipts, "m6", signed(ReceiptStatus.DELIVERED), limit=4)  # not new: stays
    assert list(receipts) == ["m6", "m7", "m8", "m9"] and len(receipts["m6"]) == 2
