"""wire.decode with its cached decoders answers exactly as a fresh msgspec decode would."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import wire
from protocols.envelope import Header, HopClaim, SealedKeys
from protocols.errors import IxbError

TYPES: list[object] = [Header, SealedKeys, HopClaim, list[int]]

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=20)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _reference(data: bytes, typ: object) -> object:
    """The uncached decode and canonical check, or the name of the error class raised."""
    try:
        obj = msgspec.msgpack.decode(data, type=typ)
    except msgspec.ValidationError:
        try:  # malformed input is E_MALFORMED whatever else is wrong with it
            msgspec.msgpack.decode(data)
        except msgspec.DecodeError:
            return "MalformedError"
        return "SchemaError"
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, MemoryError):
        return "MalformedError"
    except IxbError as exc:
        return type(exc).__name__
    return obj if msgspec.msgpack.encode(obj) == data else "NonCanonicalError"


@settings(max_examples=300, deadline=None)
@given(value=values, typ=st.sampled_from(TYPES))
def test_cached_decoders_agree_with_fresh_decodes(value: object, typ: type[object]) -> None:
    data = msgspec.msgpack.encode(value)
    try:
        got: object = wire.decode(data, typ, "x")
    except IxbError as exc:
        got = type(exc).__name__
    assert got == _reference(data, typ)


def test_each_type_keeps_its_own_decoder() -> None:
    data = wire.encode([1, 2])
    assert wire.decode(data, list[int], "ints") == [1, 2]
    with pytest.raises(IxbError):
        wire.decode(data, HopClaim, "claim")
    assert wire.decode(data, list[int], "ints") == [1, 2]
