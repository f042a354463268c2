"""How the CLI echoes a travel document back: number, name, expiry, and whether it has expired.

``ixb mrz check`` and ``ixb verify-doc`` both say which document they read,
so an officer sees at once that the MRZ typed is the one in hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from protocols.mrz import Mrz

_KINDS = {"P": "passport", "V": "visa", "I": "identity card", "A": "identity card", "C": "card"}


def split_lines(args: Sequence[str]) -> list[str]:
    """MRZ lines from arguments: two (or three) arguments, or one pasted with newlines."""
    return [line for arg in args for line in arg.splitlines() if line.strip()]


def _days_text(days: int) -> str:
    days = abs(days)
    if days >= 2 * 365:
        return f"{days // 365} y"
    return f"{days} d"


def document_summary(mrz: Mrz, today: date) -> dict[str, Any]:
    """The document's identity and expiry (ISO dates), as JSON."""
    days = (mrz.expiry_date - today).days
    return {
        "document": _KINDS.get(mrz.document_code[:1], "document"),
        "document_number": mrz.document_number,
        "issuing_state": mrz.issuing_state,
        "name": f"{mrz.surname}, {mrz.given_names}".strip(", "),
        "expiry_date": mrz.expiry_date.isoformat(),
        "expired": days < 0,
    }


def document_line(mrz: Mrz, today: date) -> str:
    """One line, e.g. ``passport L898902C3 (UTO) ERIKSSON, ANNA MARIA, EXPIRED 2012-04-15``."""
    doc = document_summary(mrz, today)
    days = (mrz.expiry_date - today).days
    if days < 0:
        expiry = f"EXPIRED {doc['expiry_date']} ({_days_text(days)} ago)"
    elif days == 0:
        expiry = f"expires today {doc['expiry_date']}"
    else:
        expiry = f"expires {doc['expiry_date']} (in {_days_text(days)})"
    return (
        f"{doc['document']} {doc['document_number']} ({doc['issuing_state']})"
        f" {doc['name']}, {expiry}"
    )
