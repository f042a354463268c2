"""Shared fixtures: a small federation of real key pairs (no mocks of crypto)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import structlog

from protocols.identifiers import Principal, hub_of, parse_agency
from protocols.keys import Identity, KeyRing, PublicIdentity

NOW_MS = 1_795_000_000_000  # 2026-11-18, fixed so tests never read the clock


@pytest.fixture(autouse=True)
def _process_state_as_it_was() -> Iterator[None]:
    """Each test sees structlog's configuration and the ``IXB_*`` environment as they were
    before it: a command or benchmark run in-process that changes them (log levels, the
    passphrase of its own key files) must not change what later tests see."""
    saved = structlog.get_config()
    environ = {k: v for k, v in os.environ.items() if k.startswith("IXB_")}
    yield
    structlog.configure(**saved)
    for key in [k for k in os.environ if k.startswith("IXB_")]:
        del os.environ[key]
    os.environ.update(environ)


@dataclass(frozen=True)
class Parties:
    ids: dict[str, Identity]
    ring: KeyRing

    def __getitem__(self, name: str) -> Identity:
        return self.ids[name]

    def pub(self, name: str) -> PublicIdentity:
        return self.ids[name].public()


def make_parties() -> Parties:
    names = [
        "THA/DSI-ATHD",
        "THA/IMMIGRATION",
        "MYS/IMMIGRATION",
        "MYS/RMP-ATIPSOM",
        "MMR/MOHA-ATTU",
        "THA/HUB",
        "MYS/HUB",
    ]
    ids: dict[str, Identity] = {}
    for name in names:
        p: Principal = hub_of(name[:3]) if name.endswith("/HUB") else parse_agency(name)
        ids[name] = Identity.generate(p)
    ring = KeyRing({i.principal: i.public() for i in ids.values()})
    return Parties(ids, ring)


@pytest.fixture(scope="session")
def parties() -> Parties:
    return make_parties()
