"""Handling codes on declared forwards, and answer deadlines."""

from __future__ import annotations

import pytest

from protocols.errors import HandlingError
from protocols.handling import HandlingCode, Priority, answer_deadline_ms, check_forward
from protocols.limits import MS_PER_DAY, MS_PER_HOUR

H0, H1, H2, H3 = HandlingCode.H0, HandlingCode.H1, HandlingCode.H2, HandlingCode.H3
PARTIES = frozenset({"THA/DSI-ATHD", "MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"})


def forward(
    orig: HandlingCode,
    new: HandlingCode,
    to: list[str],
    *,
    orig_text: str | None = None,
    text: str | None = None,
) -> None:
    check_forward(
        original_handling=orig,
        original_restriction=orig_text,
        original_parties=PARTIES,
        handling=new,
        restriction=text,
        recipients=to,
    )


@pytest.mark.parametrize(
    ("orig", "new", "to", "ok"),
    [
        (H0, H0, ["IDN/POLRI"], True),
        (H0, H2, ["IDN/POLRI"], True),
        (H1, H0, ["IDN/POLRI"], False),  # loosening
        (H2, H2, ["MYS/RMP-ATIPSOM"], True),  # among the original parties
        (H2, H2, ["IDN/POLRI"], False),  # onward dissemination
        (H2, H2, ["MYS/RMP-ATIPSOM", "IDN/POLRI"], False),
        (H2, H1, ["MYS/RMP-ATIPSOM"], False),
        (H2, H3, ["MYS/RMP-ATIPSOM"], False),
    ],
)
def test_forward_rules(orig: HandlingCode, new: HandlingCode, to: list[str], ok: bool) -> None:
    text = "no court use" if new is H3 else None
    if ok:
        forward(orig, new, to, text=text)
    else:
        with pytest.raises(HandlingError):
            forward(orig, new, to, text=text)


def test_h3_restriction_sticks() -> None:
    forward(H3, H3, ["IDN/POLRI"], orig_text="no court use", text="no court use")
    forward(H0, H3, ["IDN/POLRI"], text="added restriction")
    with pytest.raises(HandlingError):
        forward(H3, H3, ["IDN/POLRI"], orig_text="no court use", text="other")
    with pytest.raises(HandlingError):
        forward(H3, H2, ["MYS/RMP-ATIPSOM"], orig_text="no court use")


def test_deadlines() -> None:
    assert answer_deadline_ms(1000, Priority.URGENT) == 1000 + 8 * MS_PER_HOUR
    assert answer_deadline_ms(0, Priority.HIGH) == 3 * MS_PER_DAY
    assert answer_deadline_ms(0, Priority.NORMAL) == 7 * MS_PER_DAY
