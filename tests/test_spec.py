"""SPEC.md is what implementers read: it must cover what the code emits."""

from __future__ import annotations

import re
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


def test_every_file_the_spec_names_exists() -> None:
    """Reference implementations, tests and vectors named in SPEC.md are where it says."""
    root = Path(protocols.__file__).parent.parent
    named = set(re.findall(r"\b((?:protocols|tests)/[\w/]+\.(?:py|json))\b", SPEC))
    assert "protocols/messages.py" in named
    missing = sorted(n for n in named if not (root / n).is_file())
    assert not missing, f"SPEC.md names {missing}"
