"""Names of countries, agencies, hubs and messages, with their strict grammars.

Identifiers also become NATS subject tokens (``ixb.THA.inbox.DSI-ATHD``), so
the grammar excludes everything NATS treats specially (``.``, ``*``, ``>``,
white space) by construction: upper-case letters, digits and inner hyphens.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Annotated

import msgspec

from protocols.countries import ISO3166_ALPHA3
from protocols.errors import IdentifierError
from protocols.limits import MAX_ID_CHARS

HUB_NAME = "HUB"
MESSAGE_ID_BYTES = 16

_NAME = r"[A-Z0-9](?:[A-Z0-9-]{0,30}[A-Z0-9])?"
_COUNTRY_RE = re.compile(r"[A-Z]{3}")
_NAME_RE = re.compile(_NAME)
PRINCIPAL_PATTERN = rf"^[A-Z]{{3}}/{_NAME}$"
_PRINCIPAL_RE = re.compile(PRINCIPAL_PATTERN)

PrincipalStr = Annotated[str, msgspec.Meta(pattern=PRINCIPAL_PATTERN, max_length=MAX_ID_CHARS)]
"""Wire type of an agency or hub id; country validity is checked by :func:`parse_principal`."""

MessageIdBytes = Annotated[
    bytes, msgspec.Meta(min_length=MESSAGE_ID_BYTES, max_length=MESSAGE_ID_BYTES)
]


def check_country(code: str) -> str:
    """Return ``code`` if it is an ISO 3166-1 alpha-3 country code, else raise.

    ICAO's extra travel-document codes (``XXA``, ``UTO``, ``D``) are not
    participants of the federation and are refused here; :mod:`protocols.mrz`
    accepts them inside an MRZ.
    """
    if not _COUNTRY_RE.fullmatch(code) or code not in ISO3166_ALPHA3:
        raise IdentifierError(f"{code!r} is not an ISO 3166-1 alpha-3 country code")
    return code


@dataclass(frozen=True, slots=True, order=True)
class Principal:
    """An agency (``THA/DSI-ATHD``) or a hub (``THA/HUB``): who signs messages."""

    country: str
    name: str

    def __post_init__(self) -> None:
        check_country(self.country)
        if not _NAME_RE.fullmatch(self.name):
            raise IdentifierError(
                f"{self.name!r} is not a valid name: 1-32 of A-Z 0-9 and inner '-'"
            )

    @property
    def is_hub(self) -> bool:
        return self.name == HUB_NAME

    def __str__(self) -> str:
        return f"{self.country}/{self.name}"


@functools.lru_cache(maxsize=4096)
def parse_principal(text: str) -> Principal:
    """Parse ``CC/NAME``; the only way text becomes a :class:`Principal`.

    Cached: a hub parses the same few hundred senders and recipients for
    every message (a refused text raises each time, it is never cached).
    """
    if len(text) > MAX_ID_CHARS or not _PRINCIPAL_RE.fullmatch(text):
        raise IdentifierError(f"{text[:MAX_ID_CHARS]!r} is not an id of the form CC/NAME")
    country, name = text.split("/", 1)
    return Principal(country, name)


def parse_agency(text: str) -> Principal:
    """Parse an agency id; ``CC/HUB`` is reserved for hubs and refused."""
    principal = parse_principal(text)
    if principal.is_hub:
        raise IdentifierError(f"{text!r} names a hub, not an agency")
    return principal


def parse_hub(text: str) -> Principal:
    principal = parse_principal(text)
    if not principal.is_hub:
        raise IdentifierError(f"{text!r} is not a hub id (CC/HUB)")
    return principal


def hub_of(country: str) -> Principal:
    return Principal(country, HUB_NAME)


def new_message_id(now_ms: int, rand: bytes) -> bytes:
    """A UUIDv7 (RFC 9562): 48-bit ms timestamp, version, variant, 74 random bits.

    Time-ordered ids keep JetStream de-duplication windows and audit indexes
    local. ``rand`` must be at least 10 bytes from a CSPRNG (the caller reads
    it, so this module stays free of I/O).
    """
    if not 0 <= now_ms < 1 << 48:
        raise IdentifierError("timestamp out of range for UUIDv7")
    if len(rand) < 10:
        raise IdentifierError("UUIDv7 needs 10 random bytes")
    raw = bytearray(now_ms.to_bytes(6, "big") + rand[:10])
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    return bytes(raw)


def format_message_id(mid: bytes) -> str:
    """Canonical text form (lower-case UUID), used in logs, CLI and receipts."""
    if len(mid) != MESSAGE_ID_BYTES:
        raise IdentifierError("message id must be 16 bytes")
    h = mid.hex()  # what str(uuid.UUID(bytes=mid)) gives, at a fifth of the cost
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_message_id(text: str) -> bytes:
    try:
        value = uuid.UUID(text.strip())
    except ValueError:
        raise IdentifierError(f"{text[:64]!r} is not a message id (UUID)") from None
    return value.bytes
