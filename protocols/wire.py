"""Canonical MessagePack: the one encoder and strict decoder every structure uses.

ixb signs bytes, not objects, and MessagePack has many encodings of the same
value. To leave no room for parser differentials (duplicate keys, long forms
of small integers, reordered keys), every structure has exactly one valid
encoding (SPEC §1.1): the typed ``Struct``'s fields in declaration order,
absent optional fields omitted, every integer, string, binary, array and map
header in its shortest form. msgspec writes all of that but one: it sizes a
struct's map header by the number of fields the struct *declares*, so a
struct of 16 or more fields gets a ``map16`` header even when fewer are
present. :func:`encode` rewrites those headers to the shortest form. A decoder
re-encodes what it parsed and refuses input that is not byte-identical.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from protocols.errors import IxbError, MalformedError, NonCanonicalError, SchemaError

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


_FIXMAP_MAX = 15
_MAP16 = 0xDE
_NO_FIX, _TOP_FIX, _DEEP_FIX = 0, 1, 2
_FIXES: dict[type, int] = {}


def _wide(t: msgspec.inspect.Type) -> bool:
    return (
        isinstance(t, msgspec.inspect.StructType)
        and not t.array_like
        and len(t.fields) > _FIXMAP_MAX
    )


def _nested_types(t: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    if isinstance(t, msgspec.inspect.StructType):
        return [f.type for f in t.fields]
    if isinstance(t, msgspec.inspect.UnionType):
        return list(t.types)
    if isinstance(t, msgspec.inspect.TupleType):
        return list(t.item_types)
    if isinstance(t, msgspec.inspect.CollectionType):
        return [t.item_type]
    if isinstance(t, msgspec.inspect.DictType):
        return [t.key_type, t.value_type]
    return []


def _fix_for(cls: type) -> int:
    """How :func:`encode` must correct msgspec's encoding of a ``cls`` instance (cached)."""
    fix = _FIXES.get(cls)
    if fix is None:
        top = msgspec.inspect.type_info(cls)
        todo, deep = _nested_types(top), False
        seen: set[int] = set()
        while todo and not deep:
            t = todo.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            deep = _wide(t)
            todo.extend(_nested_types(t))
        fix = _FIXES[cls] = _DEEP_FIX if deep else _TOP_FIX if _wide(top) else _NO_FIX
    return fix


def encode(obj: Any) -> bytes:
    """The canonical bytes of a wire structure: every header in its shortest form (§1.1)."""
    data = _ENCODER.encode(obj)
    if isinstance(obj, list | tuple):  # keys, hop lists: the elements' structs decide
        fix = _DEEP_FIX if any(_fix_for(type(x)) != _NO_FIX for x in obj) else _NO_FIX
    else:
        fix = _fix_for(type(obj))
    if fix == _TOP_FIX and data[0] == _MAP16 and data[1] == 0 and data[2] <= _FIXMAP_MAX:
        return bytes((0x80 | data[2],)) + data[3:]
    if fix == _DEEP_FIX:
        # Untyped MessagePack round trip: same values and key order, shortest headers.
        return _ENCODER.encode(msgspec.msgpack.decode(data))
    return data


def decode(data: bytes, typ: type[T], what: str) -> T:
    """Parse ``data`` as ``typ`` or raise a typed error; never anything else.

    ``what`` names the structure in error messages ("header", "alert body" …).

    Codes in order of precedence (SPEC §4.7 step 4): input that is not one
    well-formed MessagePack value is ``E_MALFORMED`` whatever else is wrong
    with it; then a field of the wrong type or length, or an unknown or
    missing field, is ``E_SCHEMA``; then the struct's own checks
    (``__post_init__``: ``E_IDENTIFIER``, ``E_SCHEMA`` …) raise their codes;
    only a value that passes all of them can be ``E_NONCANONICAL``.
    """
    try:
        obj: T = _decoder(typ).decode(data)
    except msgspec.ValidationError as exc:
        _check_well_formed(data, what)
        raise SchemaError(f"{what}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        raise MalformedError(f"{what}: not valid MessagePack ({exc})") from None
    except IxbError:
        # __post_init__ checks raise IxbError subclasses; msgspec may run them before
        # it reaches trailing or truncated bytes.
        _check_well_formed(data, what)
        raise
    if encode(obj) != data:
        raise NonCanonicalError(f"{what}: not in canonical encoding")
    return obj


def _check_well_formed(data: bytes, what: str) -> None:
    """Raise ``E_MALFORMED`` unless ``data`` is exactly one well-formed MessagePack value."""
    try:
        msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        raise MalformedError(f"{what}: not valid MessagePack ({exc})") from None
