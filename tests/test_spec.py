"""SPEC.md is what implementers read: it must cover what the code emits."""

from __future__ import annotations

from pathlib import Path

import protocols
from protocols.errors import ERRORS_BY_CODE
from protocols.messages import MESSAGE_TYPES

SPEC = (Path(protocols.__file__).parent / "SPEC.md").read_text()


def test_spec_lists_every_error_code() -> None:
    missing = [code for code in ERRORS_BY_CODE if f"`{code}`" not in SPEC]
    assert not missing, f"SPEC.md lacks {missing}"


def test_spec_describes_every_message_type() -> None:
    missing = [t for t in MESSAGE_TYPES if f"### `{t}`" not in SPEC]
    assert not missing, f"SPEC.md has no section for {missing}"
