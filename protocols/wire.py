"""Canonical MessagePack: the one encoder and strict decoder every structure uses.

ixb signs bytes, not objects, and MessagePack has many encodings of the same
value. To leave no room for parser differentials (duplicate keys, long forms
of small integers, reordered keys), every structure has exactly one valid
encoding: msgspec's encoding of the typed ``Struct`` (fields in declaration
order, absent optional fields omitted, shortest forms). A decoder re-encodes
what it parsed and refuses input that is not byte-identical.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from protocols.errors import MalformedError, NonCanonicalError, SchemaError

T = TypeVar("T")


class WireStruct(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    kw_only=True,
):
    """Base for every wire structure: immutable, strict, canonical."""


_ENCODER = msgspec.msgpack.Encoder()


# One Decoder per type: msgspec remembers what it learned of a Struct class, but
# rebuilds it on every decode(type=...) of a type such as Annotated[list[X], ...].
# The types are the fixed set this package declares, so the map stays small.
_DECODERS: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def _decoder(typ: Any) -> msgspec.msgpack.Decoder[Any]:
    decoder = _DECODERS.get(typ)
    if decoder is None:
        decoder = _DECODERS[typ] = msgspec.msgpack.Decoder(typ)
    return decoder


def encode(obj: Any) -> bytes:
    """The canonical bytes of a wire structure."""
    return _ENCODER.encode(obj)


def decode(data: bytes, typ: type[T], what: str) -> T:
    """Parse ``data`` as ``typ`` or raise a typed error; never anything else.

    ``what`` names the structure in error messages ("header", "alert body" …).
    """
    try:
        obj: T = _decoder(typ).decode(data)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"{what}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        raise MalformedError(f"{what}: not valid MessagePack ({exc})") from None
    # __post_init__ checks raise IxbError subclasses directly; they pass through.
    if _ENCODER.encode(obj) != data:
        raise NonCanonicalError(f"{what}: not in canonical encoding")
    return obj
