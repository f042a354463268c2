"""Field types and the one engine that checks them: the rules every protocol struct obeys.

msgspec applies a field's ``Meta`` constraints (lengths, ranges, patterns)
when it decodes, but not when local code builds a struct. :func:`check_fields`
applies the same declarations to a built object, plus the text rules, so an
object that exists is valid whichever way it came to be. A struct opts in by
deriving from :class:`CheckedStruct` (or calling :func:`check_fields` from its
``__post_init__``) and adds its cross-field rules in ``_rules``.

Contract:

- every refusal is a :class:`~protocols.errors.SchemaError` (or a subclass)
  whose message names the field (``Subject.birth_date``), never its value:
  bodies carry personal data, and errors end up in receipts and audit entries;
- text never holds control characters or lone surrogates; only fields longer
  than :data:`~protocols.limits.MAX_SHORT_TEXT` may hold LF and TAB;
- a declared type this engine cannot check is a schema bug, raised as
  :class:`TypeError` when the struct is first checked.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Final, TypeAlias

import msgspec
import msgspec.inspect as mi

from protocols import wire
from protocols.errors import SchemaError
from protocols.identifiers import check_country
from protocols.limits import MAX_LIST, MAX_SHORT_TEXT, MAX_TEXT

# --- field types --------------------------------------------------------------

MAX_TIME_MS: Final = (1 << 48) - 1
"""Largest time value (ms since the epoch): the UUIDv7 timestamp range, year 10889."""

ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SHORT_TEXT)]
"""One line: names, labels, legal bases. No control characters."""
LongText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
"""Narrative text: may contain LF and TAB, no other control characters."""
TimeMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_MS)]


def utc_text(ms: int) -> str:
    """A wire time (ms since the epoch) as people read it: ``2026-11-30 01:52:12.023Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def utc_iso(ms: int) -> str:
    """A wire time for JSON output, ISO 8601 UTC with milliseconds: ``2026-11-30T01:52:12.023Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_times(value: object) -> object:
    """``value`` (a body as builtins) with every ``…_ms`` time as ISO 8601 UTC under its name
    without the suffix (``deadline_ms`` → ``deadline``), at any depth: what people and
    ``--json`` readers see, never raw milliseconds."""
    if isinstance(value, dict):
        out: dict[object, object] = {}
        for k, v in value.items():
            if isinstance(k, str) and k.endswith("_ms") and type(v) is int:
                out[k.removesuffix("_ms")] = utc_iso(v)
            else:
                out[k] = iso_times(v)
        return out
    if isinstance(value, list | tuple):
        return [iso_times(v) for v in value]
    return value


def duration_text(ms: int) -> str:
    """A length of time as people read it, two units at most: ``10 d``, ``7 h 58 min``, ``3 s``.

    The sign is ignored: callers say "ago" or "in".
    """
    seconds = abs(ms) // 1000
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d" + (f" {hours} h" if hours and days < 10 else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    if minutes:
        return f"{minutes} min" + (f" {secs} s" if secs and minutes < 10 else "")
    return f"{secs} s" if seconds else f"{abs(ms) % 1000} ms"


DateStr = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", max_length=10)]
"""A calendar date ``YYYY-MM-DD`` (checked to exist)."""
CountryStr = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", max_length=3)]
"""ISO 3166-1 alpha-3 (checked against the list), or an ICAO stateless code for nationality."""
ErrorCodeStr = Annotated[str, msgspec.Meta(pattern=r"^ixb\.E_[A-Z_]{1,40}$", max_length=46)]

_CONTROL_SHORT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_LONG = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


# --- value checks -----------------------------------------------------------------


def check_text(value: str, where: str, *, multiline: bool = False) -> None:
    """Refuse control characters (and lone surrogates) in text.

    Text ends up in terminals, web pages and log lines at the other end;
    only narrative fields may break lines.
    """
    pattern = _CONTROL_LONG if multiline else _CONTROL_SHORT
    if pattern.search(value):
        allowed = " (only LF and TAB are allowed)" if multiline else ""
        raise SchemaError(f"{where}: contains a control character{allowed}")


def check_date(value: str, where: str) -> date:
    """A ``YYYY-MM-DD`` string that names a real day (``fromisoformat`` alone takes more forms)."""
    try:
        if _DATE.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise SchemaError(f"{where}: not a calendar date YYYY-MM-DD")


def check_country_field(value: str, where: str) -> None:
    """:func:`~protocols.identifiers.check_country`, with the field named in the error."""
    try:
        check_country(value)
    except SchemaError as exc:
        raise type(exc)(f"{where}: {exc.detail}") from None


def check_unique(values: Sequence[enum.Enum], where: str) -> None:
    if len(set(values)) != len(values):
        raise SchemaError(f"{where}: lists an item twice")


# --- the engine: declared types to checks ------------------------------------------

Check: TypeAlias = Callable[[object], None]


def _checker(typ: mi.Type, where: str) -> Check:
    """A function that checks one value against the msgspec type it was declared with."""
    if isinstance(typ, mi.UnionType):
        (inner_type,) = [t for t in typ.types if not isinstance(t, mi.NoneType)]
        inner = _checker(inner_type, where)  # structs use only ``X | None`` unions

        def check_optional(value: object) -> None:
            if value is not None:
                inner(value)

        return check_optional
    if isinstance(typ, mi.StrType):
        return _str_checker(typ, where)
    if isinstance(typ, mi.IntType):
        low, high = typ.ge, typ.le

        def check_int(value: object) -> None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise SchemaError(f"{where}: expected an integer")
            if (low is not None and value < low) or (high is not None and value > high):
                raise SchemaError(f"{where}: out of range {low}..{high}")

        return check_int
    if isinstance(typ, mi.VarTupleType):
        item = _checker(typ.item_type, f"{where} item")
        fewest, most = typ.min_length or 0, typ.max_length or MAX_LIST

        def check_tuple(value: object) -> None:
            if not isinstance(value, tuple):
                raise SchemaError(f"{where}: expected a tuple")
            if not fewest <= len(value) <= most:
                raise SchemaError(f"{where}: needs {fewest}..{most} items")
            for each in value:
                item(each)

        return check_tuple
    if isinstance(typ, mi.BytesType):
        size = (typ.min_length or 0, typ.max_length)

        def check_bytes(value: object) -> None:
            if not isinstance(value, bytes):
                raise SchemaError(f"{where}: expected bytes")
            if len(value) < size[0] or (size[1] is not None and len(value) > size[1]):
                raise SchemaError(f"{where}: wrong length")

        return check_bytes
    if isinstance(typ, mi.EnumType | mi.StructType | mi.BoolType):
        # Nested structs checked themselves when they were built.
        cls = bool if isinstance(typ, mi.BoolType) else typ.cls

        def check_instance(value: object) -> None:
            if not isinstance(value, cls):
                raise SchemaError(f"{where}: expected {cls.__name__}")

        return check_instance
    raise TypeError(f"{where}: no check for wire type {type(typ).__name__}")  # schema bug


def _str_checker(typ: mi.StrType, where: str) -> Check:
    most = typ.max_length if typ.max_length is not None else MAX_TEXT
    pattern = None if typ.pattern is None else re.compile(typ.pattern)
    multiline = most > MAX_SHORT_TEXT

    def check_str(value: object) -> None:
        if not isinstance(value, str):
            raise SchemaError(f"{where}: expected a string")
        if len(value) > most:
            raise SchemaError(f"{where}: longer than {most} characters")
        if typ.min_length and not value.strip():
            raise SchemaError(f"{where}: must not be empty or blank")
        if pattern is not None and not pattern.fullmatch(value):
            raise SchemaError(f"{where}: does not match {pattern.pattern}")
        check_text(value, where, multiline=multiline)

    return check_str


_FIELD_CHECKS: dict[type, tuple[tuple[str, Check], ...]] = {}


def check_fields(obj: msgspec.Struct) -> None:
    """Apply every field's declared type and bounds to ``obj``, plus the text rules.

    msgspec enforces ``Meta`` constraints when decoding but not when local
    code builds a struct; running the same constraints here makes both paths
    equal. One helper for every struct, driven by the declarations; the
    checks of a class are built on its first use and kept.
    """
    cls = type(obj)
    checks = _FIELD_CHECKS.get(cls)
    if checks is None:
        info = mi.type_info(cls)
        if not isinstance(info, mi.StructType):  # only Structs call this
            raise TypeError(f"{cls.__name__} is not a Struct")
        label = getattr(cls, "TYPE", cls.__name__)
        checks = tuple((f.name, _checker(f.type, f"{label}.{f.encode_name}")) for f in info.fields)
        _FIELD_CHECKS[cls] = checks
    for name, check in checks:
        check(getattr(obj, name))


class CheckedStruct(wire.WireStruct, frozen=True):
    """A wire struct that validates itself on construction and on decoding."""

    def __post_init__(self) -> None:
        check_fields(self)
        self._rules()

    def _rules(self) -> None:
        """Cross-field rules of this type (none by default)."""
