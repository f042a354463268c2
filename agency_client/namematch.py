"""The normal forms a person index matches on, and the keys built from them.

Pure functions (no I/O): the same code normalises a row when it is loaded and
a query when it arrives, so the two meet only if their normal forms are
equal. The rule for a hit, and its trade-offs, are in
docs/operations/person-index.md.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from anyascii import anyascii

_NOT_ALNUM = re.compile(r"[^A-Z0-9]+")
_DROPPED = re.compile(r"['`\u2019\u02bc]")
"""Apostrophes join their neighbours: O'Brien is OBRIEN, never O BRIEN."""
_PARTIAL_DATE = re.compile(r"^([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?$")

YEAR, MONTH, DAY = 4, 7, 10
"""A birth date's precision: the length of its normal form (``1981``, ``1981-03``,
``1981-03-14``)."""


def name_tokens(text: str) -> tuple[str, ...]:
    """``text`` as upper-case ASCII words: diacritics removed, other scripts transliterated
    (anyascii), apostrophes dropped, any other punctuation, hyphen or MRZ filler a space.

    Idempotent: the tokens, joined by spaces, normalise to themselves.
    """
    ascii_text = anyascii(unicodedata.normalize("NFKC", text)).upper()
    return tuple(_NOT_ALNUM.sub(" ", _DROPPED.sub("", ascii_text)).split())


def normal_name(text: str) -> str:
    """:func:`name_tokens` joined by single spaces."""
    return " ".join(name_tokens(text))


def name_keys(surname: str, given_names: str | None) -> frozenset[str]:
    """The forms under which a person's name is matched, whatever the order it is written in.

    - ``t:`` the words, sorted: surname and given names in either order, or all of
      them in one field ("NGUYEN Van An" = "Van An Nguyen");
    - ``c:`` the letters run together, surname first and given names first: a name
      whose parts are written joined ("WangXiaoMing" = "WANG / XIAO MING").

    Two names match when their sets of keys meet.
    """
    surname_t = name_tokens(surname)
    given_t = name_tokens(given_names) if given_names else ()
    words = surname_t + given_t
    if not words:
        return frozenset()
    return frozenset(
        {
            "t:" + " ".join(sorted(words)),
            "c:" + "".join(surname_t + given_t),
            "c:" + "".join(given_t + surname_t),
        }
    )


def normal_document(text: str) -> str:
    """A document number as an MRZ holds it: upper case, no spaces, hyphens or fillers."""
    return _NOT_ALNUM.sub("", anyascii(text).upper())


def normal_nationality(text: str) -> str | None:
    """Three letters, upper case; None if ``text`` is not that."""
    value = text.strip().upper()
    return value if re.fullmatch(r"[A-Z]{3}", value) else None


def normal_birth_date(text: str) -> str | None:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` naming a real year, month or day; an unknown
    part written as ``00`` (``1981-00-00``, ``1981-03-00``) is dropped. None if invalid."""
    m = _PARTIAL_DATE.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day = m.group(1), m.group(2), m.group(3)
    if day == "00":
        day = None
    if month == "00":
        if day is not None:
            return None  # a day without its month
        month = None
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    if int(year) < 1:
        return None
    return "-".join(p for p in (year, month, day) if p is not None)


def birth_date_forms(full: str) -> dict[int, str]:
    """A full ``YYYY-MM-DD`` date as each precision a row may hold: {4: '1981', 7: ...}."""
    return {YEAR: full[:YEAR], MONTH: full[:MONTH], DAY: full[:DAY]}


@dataclass(frozen=True, slots=True)
class NormalQuery:
    """A person query's terms in their normal forms (never stored: only keyed hashes are)."""

    names: frozenset[str]
    birth_date: str | None
    nationality: str | None
    document: str | None

    def fingerprint_text(self) -> str:
        """One canonical text for the whole query: the same person asked the same way
        gives the same text (hashed, it links repeated queries without revealing them)."""
        name = min((k for k in self.names if k.startswith("t:")), default="")
        parts = (name, self.birth_date or "", self.nationality or "", self.document or "")
        return "\x1f".join(parts)


def normal_query(
    surname: str,
    given_names: str | None,
    birth_date: str | None,
    nationality: str | None,
    document_number: str | None,
) -> NormalQuery:
    """A query's terms as normal forms; a term that normalises to nothing is absent."""
    document = normal_document(document_number) if document_number else ""
    return NormalQuery(
        names=name_keys(surname, given_names),
        birth_date=normal_birth_date(birth_date) if birth_date else None,
        nationality=normal_nationality(nationality) if nationality else None,
        document=document or None,
    )
