"""ICAO Doc 9303 machine readable zones: the lines at the foot of a passport page.

A border officer pastes the two or three lines; :func:`parse_mrz` either
returns a :class:`Mrz` whose every check digit, country code and date has been
verified, or raises a typed :class:`~protocols.errors.MrzError` that says
which line and which field is wrong. It never guesses: no OCR repair, no
lower-case folding, no skipping a bad check digit. An MRZ that does not check
out is a misread or a forgery, and either way a human must look at it.

The layouts are transcribed from Doc 9303 (8th edition): Part 3 (characters,
check digits, dates, three-letter codes), Part 4 (TD3 passports), Part 5
(TD1 cards), Part 6 (TD2 cards) and Part 7 (MRV-A and MRV-B visas).
``protocols/SPEC.md`` §MRZ has the field table; ``vectors/mrz.json`` has ICAO's
own specimens.

Pure: no I/O and no clock. The one rule that needs a date (which century a
two-digit birth year belongs to) takes ``today`` as an argument.

Error messages name the line and the field, never the holder's data: they end
up in rejection receipts and audit entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, Literal, NamedTuple

from protocols.countries import ISO3166_ALPHA3
from protocols.errors import MrzCheckDigitError, MrzCountryError, MrzDateError, MrzError
from protocols.limits import MAX_MRZ_LINES

MrzFormat = Literal["TD1", "TD2", "TD3", "MRVA", "MRVB"]
Sex = Literal["M", "F", "<"]

FILLER: Final = "<"
MRZ_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<")
"""Doc 9303-3 §4.3: the only characters an MRZ may hold."""

_MAX_RAW_LINE = 256
"""Refuse absurd input before scanning it; the longest MRZ line is 44."""

_WEIGHTS: Final = (7, 3, 1)

# Doc 9303-3 §5: the three-letter codes that are not (or no longer) in
# ISO 3166-1 alpha-3 but may stand for an issuing State or a nationality.
ICAO_EXTRA_CODES: dict[str, str] = {
    # Part A: codes not in ISO 3166-1.
    "D": "Germany",  # written D<< in the MRZ
    "GBD": "British Overseas Territories Citizen",
    "GBN": "British National (Overseas)",
    "GBO": "British Overseas Citizen",
    "GBP": "British Protected Person",
    "GBS": "British Subject",
    "RKS": "Kosovo",  # "operationally in use, although not reflected in ISO 3166-1"
    # Part B: reserved by the ISO 3166 maintenance agency.
    "EUE": "European Union",
    # Part C: United Nations travel documents.
    "UNO": "United Nations Organization or one of its officials",
    "UNA": "United Nations specialized agency or one of its officials",
    "UNK": "Resident of Kosovo with a travel document issued by UNMIK",
    # Part D: other issuing authorities.
    "XBA": "African Development Bank (ADB)",
    "XIM": "African Export-Import Bank (AFREXIM bank)",
    "XCC": "Caribbean Community or one of its emissaries (CARICOM)",
    "XCE": "Council of Europe",
    "XCO": "Common Market for Eastern and Southern Africa (COMESA)",
    "XEC": "Economic Community of West African States (ECOWAS)",
    "XPO": "International Criminal Police Organization (INTERPOL)",
    "XES": "Organization of Eastern Caribbean States (OECS)",
    "XMP": "Parliamentary Assembly of the Mediterranean (PAM)",
    "XOM": "Sovereign Military Order of Malta or one of its emissaries",
    "XDC": "Southern African Development Community (SADC)",
    # Part E: persons without a defined nationality.
    "XXA": "Stateless person (Article 1, 1954 Convention)",
    "XXB": "Refugee (Article 1, 1951 Convention as amended by the 1967 Protocol)",
    "XXC": "Refugee, other than under XXB",
    "XXX": "Person of unspecified nationality",
    # Part F: deprecated in ISO 3166, kept for documents issued before.
    "ANT": "Netherlands Antilles",
    "NTZ": "Neutral Zone",
    # Part G: specimen documents.
    "UTO": "Utopia (ICAO specimen State)",
    # Part H's IAO (ICAO itself) is left out on purpose: ICAO uses it only to
    # sign the CSCA master list, so no travel document can carry it.
}

MRZ_COUNTRY_CODES: frozenset[str] = ISO3166_ALPHA3 | frozenset(ICAO_EXTRA_CODES)
"""Every code accepted for the issuing State and the nationality (fillers stripped)."""


# --- check digits -------------------------------------------------------------


def _char_value(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - ord("0")
    if "A" <= ch <= "Z":
        return ord(ch) - ord("A") + 10
    if ch == FILLER:
        return 0
    raise MrzError(f"{ch!r} is not an MRZ character (A-Z, 0-9, <)")


def check_digit(field: str) -> int:
    """Doc 9303-3 §4.9: weights 7, 3, 1 repeated, modulus 10; '<' = 0, A = 10 … Z = 35.

    Raises :class:`MrzError` for a character outside the MRZ alphabet.
    """
    return sum(_char_value(ch) * _WEIGHTS[i % 3] for i, ch in enumerate(field)) % 10


def compute_check_digit(field: str) -> str:
    """The check digit as the character written into the MRZ (for builders)."""
    return str(check_digit(field))


# --- result -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mrz:
    """A parsed MRZ whose check digits, codes and dates have all been verified.

    Only :func:`parse_mrz` makes these. Text fields have their trailing
    fillers removed; names have '<' turned into spaces. ``*_raw`` dates are
    the six MRZ characters as printed, '<' included for unknown parts.
    """

    format: MrzFormat
    document_code: str
    issuing_state: str
    document_number: str
    nationality: str
    birth_date_raw: str
    birth_date: date | None
    sex: Sex
    expiry_date_raw: str
    expiry_date: date
    surname: str
    given_names: str
    optional_data_1: str
    optional_data_2: str | None
    name_may_be_truncated: bool
    """Doc 9303: a name field ending in a letter must be assumed truncated."""
    lines: tuple[str, ...]

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready fields (dates as ISO 8601), in MRZ order, for the CLI."""
        return {
            "format": self.format,
            "document_code": self.document_code,
            "issuing_state": self.issuing_state,
            "surname": self.surname,
            "given_names": self.given_names,
            "name_may_be_truncated": self.name_may_be_truncated,
            "document_number": self.document_number,
            "nationality": self.nationality,
            "birth_date_raw": self.birth_date_raw,
            "birth_date": None if self.birth_date is None else self.birth_date.isoformat(),
            "sex": self.sex,
            "expiry_date_raw": self.expiry_date_raw,
            "expiry_date": self.expiry_date.isoformat(),
            "optional_data_1": self.optional_data_1,
            "optional_data_2": self.optional_data_2,
            "lines": list(self.lines),
        }


# --- layouts ------------------------------------------------------------------


class _Span(NamedTuple):
    """Characters ``start:end`` (0-based, end excluded) of line ``line`` (0-based)."""

    line: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each field sits, per the data structure tables of Parts 4 to 7."""

    format: MrzFormat
    name: _Span
    document_number: _Span
    document_number_cd: _Span
    nationality: _Span
    birth_date: _Span
    birth_date_cd: _Span
    sex: _Span
    expiry_date: _Span
    expiry_date_cd: _Span
    optional_1: _Span
    optional_1_cd: _Span | None = None  # TD3 personal number only
    optional_2: _Span | None = None  # TD1 only
    composite: tuple[_Span, ...] = ()  # the characters the composite covers
    composite_cd: _Span | None = None  # none on visas
    long_document_number: bool = False  # Part 5/6 note j (TD1, TD2)


def _two_line(fmt: MrzFormat, length: int, *, composite: bool) -> _Layout:
    """TD2, TD3, MRV-A and MRV-B share one lower-line layout up to position 28."""
    last = length - 1 if composite else length
    is_td3 = fmt == "TD3"
    return _Layout(
        format=fmt,
        name=_Span(0, 5, length),
        document_number=_Span(1, 0, 9),
        document_number_cd=_Span(1, 9, 10),
        nationality=_Span(1, 10, 13),
        birth_date=_Span(1, 13, 19),
        birth_date_cd=_Span(1, 19, 20),
        sex=_Span(1, 20, 21),
        expiry_date=_Span(1, 21, 27),
        expiry_date_cd=_Span(1, 27, 28),
        optional_1=_Span(1, 28, last - 1 if is_td3 else last),
        optional_1_cd=_Span(1, last - 1, last) if is_td3 else None,
        composite=(_Span(1, 0, 10), _Span(1, 13, 20), _Span(1, 21, last)) if composite else (),
        composite_cd=_Span(1, last, last + 1) if composite else None,
        long_document_number=fmt == "TD2",
    )


_TD1 = _Layout(
    format="TD1",
    document_number=_Span(0, 5, 14),
    document_number_cd=_Span(0, 14, 15),
    optional_1=_Span(0, 15, 30),
    birth_date=_Span(1, 0, 6),
    birth_date_cd=_Span(1, 6, 7),
    sex=_Span(1, 7, 8),
    expiry_date=_Span(1, 8, 14),
    expiry_date_cd=_Span(1, 14, 15),
    nationality=_Span(1, 15, 18),
    optional_2=_Span(1, 18, 29),
    composite=(_Span(0, 5, 30), _Span(1, 0, 7), _Span(1, 8, 15), _Span(1, 18, 29)),
    composite_cd=_Span(1, 29, 30),
    name=_Span(2, 0, 30),
    long_document_number=True,
)
_TD2 = _two_line("TD2", 36, composite=True)
_TD3 = _two_line("TD3", 44, composite=True)
_MRVA = _two_line("MRVA", 44, composite=False)
_MRVB = _two_line("MRVB", 36, composite=False)


# --- parsing ------------------------------------------------------------------


class _Reader:
    """The checked lines of one MRZ and the format they were found to be."""

    def __init__(self, lines: tuple[str, ...], layout: _Layout) -> None:
        self.lines = lines
        self.layout = layout

    def get(self, span: _Span) -> str:
        return self.lines[span.line][span.start : span.end]

    def where(self, span: _Span) -> str:
        return f"{self.layout.format} line {span.line + 1}"

    def fail_check(self, span: _Span, what: str, found: str, expected: int) -> MrzCheckDigitError:
        shown = found if found.isdigit() else repr(found)
        return MrzCheckDigitError(
            f"{self.where(span)}: {what} check digit is {shown}, expected {expected}"
        )

    def verify(self, data: str, cd_span: _Span, what: str) -> None:
        found = self.get(cd_span)
        expected = check_digit(data)
        if found != str(expected):
            raise self.fail_check(cd_span, what, found, expected)


def parse_mrz(lines: Sequence[str], *, today: date) -> Mrz:
    """Parse and verify an MRZ given as its lines, or raise an :class:`MrzError`.

    Surrounding whitespace on each line is ignored; nothing else is forgiven.
    ``today`` decides the century of the birth date (see :func:`_birth_date`).
    For any sequence of any strings this returns or raises an ``MrzError``
    subclass, nothing else.
    """
    if isinstance(today, datetime):
        # A caller's bug, not bad input: which day it is at the border is theirs to say.
        raise TypeError("today must be a date, not a datetime")
    checked = _checked_lines(lines)
    layout = _detect(checked)
    r = _Reader(checked, layout)

    document_code = _document_code(r)
    document_number, optional_1 = _document_number(r)
    _verify_check_digits(r)
    if not document_number:
        raise MrzError(f"{r.where(layout.document_number)}: document number is empty")
    issuing_state = _country(r, _Span(0, 2, 5), "issuing State")
    nationality = _country(r, layout.nationality, "nationality")
    birth_raw = r.get(layout.birth_date)
    birth = _birth_date(r, birth_raw, today)
    expiry_raw = r.get(layout.expiry_date)
    expiry = _expiry_date(r, expiry_raw)
    sex = _sex(r)
    surname, given_names, truncated = _name(r)
    optional_2 = None if layout.optional_2 is None else r.get(layout.optional_2).rstrip(FILLER)
    return Mrz(
        format=layout.format,
        document_code=document_code,
        issuing_state=issuing_state,
        document_number=document_number,
        nationality=nationality,
        birth_date_raw=birth_raw,
        birth_date=birth,
        sex=sex,
        expiry_date_raw=expiry_raw,
        expiry_date=expiry,
        surname=surname,
        given_names=given_names,
        optional_data_1=optional_1,
        optional_data_2=optional_2,
        name_may_be_truncated=truncated,
        lines=checked,
    )


def _checked_lines(lines: Sequence[str]) -> tuple[str, ...]:
    if isinstance(lines, str):
        raise MrzError("an MRZ is given as a sequence of lines, not one string")
    raw = tuple(lines)
    if not 2 <= len(raw) <= MAX_MRZ_LINES:
        raise MrzError(f"an MRZ has 2 or 3 lines, got {len(raw)}")
    out: list[str] = []
    for n, item in enumerate(raw, start=1):
        if not isinstance(item, str):
            raise MrzError(f"line {n} is not text")
        if len(item) > _MAX_RAW_LINE:
            raise MrzError(f"line {n} is {len(item)} characters long; an MRZ line has 44 at most")
        line = item.strip()
        for col, ch in enumerate(line, start=1):
            if ch not in MRZ_ALPHABET:
                raise MrzError(
                    f"line {n}, column {col}: {ch!r} is not an MRZ character (A-Z, 0-9, <)"
                )
        out.append(line)
    return tuple(out)


def _detect(lines: tuple[str, ...]) -> _Layout:
    """Doc 9303-3 §4.10: the shape gives the size; the first character, the kind."""
    lengths = [len(line) for line in lines]
    if len(lines) == 3:
        for n, length in enumerate(lengths, start=1):
            if length != 30:
                raise MrzError(
                    f"a 3-line MRZ (TD1) has 30 characters per line; line {n} has {length}"
                )
        if lines[0][0] not in "ACI":
            raise MrzError(f"TD1 line 1: document code starts with {lines[0][0]!r}, not A, C or I")
        return _TD1
    if lengths[0] != lengths[1]:
        raise MrzError(
            f"the two lines of an MRZ have the same length; got {lengths[0]} and {lengths[1]}"
        )
    first = lines[0][:1]
    if lengths[0] == 44:
        if first == "P":
            return _TD3
        if first == "V":
            return _MRVA
        raise MrzError(
            f"a 2-line MRZ of 44 characters starts with P (passport) or V (visa), not {first!r}"
        )
    if lengths[0] == 36:
        if first == "V":
            return _MRVB
        if first and first in "ACI":
            return _TD2
        raise MrzError(
            f"a 2-line MRZ of 36 characters starts with A, C, I (TD2) or V (visa), not {first!r}"
        )
    raise MrzError(f"a 2-line MRZ has 36 or 44 characters per line, got {lengths[0]}")


def _document_code(r: _Reader) -> str:
    """Parts 4 to 7: first letter by format; second at the issuer's discretion, with limits."""
    span = _Span(0, 0, 2)
    code = r.get(span)
    second = code[1]
    if not ("A" <= second <= "Z" or second == FILLER):
        raise MrzError(f"{r.where(span)}: document code has {second!r} in position 2")
    fmt = r.layout.format
    if fmt in ("TD1", "TD2"):
        if second == "V":
            raise MrzError(f"{r.where(span)}: document code {code} is reserved (V is for visas)")
        # Part 5 note k: no AI, AC only for crew member certificates.
        # Part 6 note k: no AC.
        if code == "AI" or (fmt == "TD2" and code == "AC"):
            raise MrzError(f"{r.where(span)}: document code {code} is not allowed on a {fmt}")
    return code.rstrip(FILLER)


def _document_number(r: _Reader) -> tuple[str, str]:
    """The document number and optional data 1, following a long number's overflow.

    Part 5/6 note j (TD1, TD2 only): a number longer than 9 characters puts
    its first 9 in the number field and '<' in the check digit position; the
    rest, then the check digit (over all of it), then '<', open the optional
    data field. TD3 passport numbers and visa numbers have no such rule.
    """
    layout = r.layout
    number = r.get(layout.document_number)
    optional = r.get(layout.optional_1)
    if not (layout.long_document_number and r.get(layout.document_number_cd) == FILLER):
        r.verify(number, layout.document_number_cd, "document number")
        return number.rstrip(FILLER), optional.rstrip(FILLER)
    span = layout.optional_1
    end = optional.find(FILLER)
    if end < 2:
        raise MrzError(
            f"{r.where(span)}: document number check digit is '<' but the optional data "
            "does not continue a long document number"
        )
    rest, found = optional[: end - 1], optional[end - 1]
    full = number + rest
    expected = check_digit(full)
    if found != str(expected):
        raise r.fail_check(span, "long document number", found, expected)
    return full, optional[end + 1 :].rstrip(FILLER)


def _verify_check_digits(r: _Reader) -> None:
    layout = r.layout
    r.verify(r.get(layout.birth_date), layout.birth_date_cd, "date of birth")
    r.verify(r.get(layout.expiry_date), layout.expiry_date_cd, "date of expiry")
    if layout.optional_1_cd is not None:
        data = r.get(layout.optional_1)
        # Part 4: an unused personal number may have '<' or 0 as check digit.
        if not (r.get(layout.optional_1_cd) == FILLER and data == FILLER * len(data)):
            r.verify(data, layout.optional_1_cd, "personal number")
    if layout.composite_cd is not None:
        data = "".join(r.get(span) for span in layout.composite)
        r.verify(data, layout.composite_cd, "composite")


def _country(r: _Reader, span: _Span, what: str) -> str:
    code = r.get(span).rstrip(FILLER)
    if code not in MRZ_COUNTRY_CODES:
        raise MrzCountryError(f"{r.where(span)}: {what} {code!r} is not an ICAO 9303 code")
    return code


_DatePart = int | None


def _date_parts(
    r: _Reader, span: _Span, raw: str, what: str, *, unknown_ok: bool
) -> tuple[_DatePart, _DatePart, _DatePart]:
    """YY, MM, DD as numbers, None for a part filled with '<' (unknown)."""
    parts: list[_DatePart] = []
    for i, label in ((0, "year"), (2, "month"), (4, "day")):
        pair = raw[i : i + 2]
        if pair.isdigit():  # isdigit() is safe: the alphabet is ASCII
            parts.append(int(pair))
        elif unknown_ok and pair == FILLER * 2:
            parts.append(None)
        else:
            raise MrzDateError(f"{r.where(span)}: {what} {label} is not two digits")
    yy, month, day = parts
    if month is not None and not 1 <= month <= 12:
        raise MrzDateError(f"{r.where(span)}: {what} has month {month}")
    if day is not None and not 1 <= day <= 31:
        raise MrzDateError(f"{r.where(span)}: {what} has day {day}")
    return yy, month, day


def _birth_date(r: _Reader, raw: str, today: date) -> date | None:
    """Century rule: the latest of 19YY or 20YY that is not after ``today``.

    A date of birth has only two year digits, so it is read as the most recent
    date not in the future: 20YY if that is on or before ``today``, else 19YY.
    (A holder aged 100 or more reads as a baby; the VIZ settles that.) Doc
    9303-3 §4.8 lets unknown parts be '<'; then the raw value is all there is.
    """
    span = r.layout.birth_date
    yy, month, day = _date_parts(r, span, raw, "date of birth", unknown_ok=True)
    if yy is None or month is None or day is None:
        return None
    for century in (2000, 1900):
        try:
            candidate = date(century + yy, month, day)
        except ValueError:
            continue
        if candidate <= today:
            return candidate
    raise MrzDateError(f"{r.where(span)}: date of birth is not a real date before today")


def _expiry_date(r: _Reader, raw: str) -> date:
    """Century rule: always 20YY (documents that expired before 2000 are long void)."""
    span = r.layout.expiry_date
    yy, month, day = _date_parts(r, span, raw, "date of expiry", unknown_ok=False)
    if yy is None or month is None or day is None:  # unreachable: unknown_ok=False
        raise MrzDateError(f"{r.where(span)}: date of expiry is not known")
    try:
        return date(2000 + yy, month, day)
    except ValueError:
        raise MrzDateError(f"{r.where(span)}: date of expiry is not a real date") from None


def _sex(r: _Reader) -> Sex:
    span = r.layout.sex
    value = r.get(span)
    if value == "M":
        return "M"
    if value == "F":
        return "F"
    if value == FILLER:
        return "<"
    if value == "X":
        # Parts 4-7: unspecified sex is X in the visual zone but '<' in the MRZ.
        raise MrzError(f"{r.where(span)}: sex is X; the MRZ writes unspecified sex as '<'")
    raise MrzError(f"{r.where(span)}: sex is {value!r}, not M, F or <")


def _name(r: _Reader) -> tuple[str, str, bool]:
    """Doc 9303-3 §4.6: primary identifier, '<<', secondary identifier, '<' between parts."""
    span = r.layout.name
    field = r.get(span)
    for col, ch in enumerate(field, start=span.start + 1):
        if ch.isdigit():
            raise MrzError(f"{r.where(span)}, column {col}: a name has no digits")
    primary, _, secondary = field.partition(FILLER * 2)
    surname = " ".join(part for part in primary.split(FILLER) if part)
    given = " ".join(part for part in secondary.split(FILLER) if part)
    if not surname:
        raise MrzError(f"{r.where(span)}: name has no primary identifier")
    return surname, given, field[-1] != FILLER


def build_td3(
    *,
    issuing_state: str,
    surname: str,
    given_names: str,
    document_number: str,
    nationality: str,
    birth_date: str,
    sex: str,
    expiry_date: str,
    optional_data: str = "",
    document_code: str = "P",
) -> tuple[str, str]:
    """The two lines of a passport MRZ (TD3) with every check digit computed.

    Fields are already in MRZ form (upper case, dates ``YYMMDD``); used by
    issuing-state registries, the demo and tests. :func:`parse_mrz` checks the
    result like any other MRZ.
    """

    def pad(text: str, width: int) -> str:
        return (text + FILLER * width)[:width]

    name = pad(surname.replace(" ", FILLER) + "<<" + given_names.replace(" ", FILLER), 39)
    line1 = pad(document_code, 2) + pad(issuing_state, 3) + name
    number = pad(document_number, 9)
    optional = pad(optional_data, 14)
    opt_cd = compute_check_digit(optional) if optional_data else FILLER
    body = (
        number
        + compute_check_digit(number)
        + pad(nationality, 3)
        + birth_date
        + compute_check_digit(birth_date)
        + sex
        + expiry_date
        + compute_check_digit(expiry_date)
        + optional
        + opt_cd
    )
    composite = body[0:10] + body[13:20] + body[21:43]
    return line1, body + compute_check_digit(composite)
