"""Hypothesis strategies for valid message bodies of every type, cross-field rules included.

``bodies()`` draws any body; ``body_of("mla.status")`` draws one type.
"""

from __future__ import annotations

from typing import TypeVar

from hypothesis import strategies as st

from protocols.countries import ISO3166_ALPHA3
from protocols.errors import ERRORS_BY_CODE
from protocols.fields import MAX_TIME_MS
from protocols.limits import MAX_SHORT_TEXT
from protocols.messages import (
    DUE_STATUSES,
    MESSAGE_TYPES,
    MLA_TRANSITIONS,
    MRZ_SHAPES,
    STATELESS_CODES,
    Alert,
    AlertCategory,
    AnsweredBy,
    Attachment,
    Body,
    Decision,
    DocField,
    DocPurpose,
    DocStatus,
    DocType,
    DocumentRef,
    DocVerifyRequest,
    DocVerifyResponse,
    FollowupDecision,
    FollowupRequest,
    InfoGrade,
    MlaMeasure,
    MlaRequest,
    MlaStatus,
    MlaStatusCode,
    PersonQuery,
    PersonResult,
    Receipt,
    ReceiptStatus,
    Sex,
    SourceGrade,
    Subject,
    SubjectRole,
    TransportMode,
    Vessel,
    Waypoint,
)

T = TypeVar("T")

# Printable text: any character but controls (Cc) and lone surrogates (Cs).
_CHARS = st.characters(exclude_categories=("Cc", "Cs"))
_LONG_CHARS = st.one_of(_CHARS, st.sampled_from("\n\t"))


def _non_blank(text: str) -> bool:
    return bool(text.strip())


short_text = st.text(_CHARS, min_size=1, max_size=MAX_SHORT_TEXT).filter(_non_blank)
long_text = st.text(_LONG_CHARS, min_size=1, max_size=600).filter(_non_blank)
times = st.integers(min_value=0, max_value=MAX_TIME_MS)
dates = st.dates().map(lambda d: d.isoformat())
countries = st.sampled_from(sorted(ISO3166_ALPHA3))
nationalities = st.sampled_from(sorted(ISO3166_ALPHA3 | STATELESS_CODES))
doc_numbers = st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,39}", fullmatch=True)
references = st.from_regex(r"[A-Z0-9][A-Z0-9/-]{0,63}", fullmatch=True)
error_codes = st.one_of(
    st.sampled_from(sorted(ERRORS_BY_CODE)),
    st.from_regex(r"ixb\.E_[A-Z_]{1,40}", fullmatch=True),
)
principals = st.builds(
    "{}/{}".format,
    countries,
    st.from_regex(r"[A-Z0-9](?:[A-Z0-9-]{0,30}[A-Z0-9])?", fullmatch=True),
)


def optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.one_of(st.none(), strategy)


def few(strategy: st.SearchStrategy[T], min_size: int = 0) -> st.SearchStrategy[tuple[T, ...]]:
    return st.lists(strategy, min_size=min_size, max_size=3).map(tuple)


@st.composite
def imo_numbers(draw: st.DrawFn) -> str:
    digits = draw(st.from_regex(r"[0-9]{6}", fullmatch=True))
    check = sum(int(d) * w for d, w in zip(digits, range(7, 1, -1), strict=True)) % 10
    return f"{digits}{check}"


document_refs = st.builds(
    DocumentRef,
    doc_type=st.sampled_from(DocType),
    number=doc_numbers,
    issuing_state=optional(countries),
)


@st.composite
def subjects(draw: st.DrawFn) -> Subject:
    surname = draw(optional(short_text))
    given_names = draw(optional(short_text))
    documents = draw(few(document_refs))
    description = draw(optional(long_text))
    if not (surname or given_names or documents or description):
        surname = draw(short_text)
    return Subject(
        role=draw(st.sampled_from(SubjectRole)),
        surname=surname,
        given_names=given_names,
        birth_date=draw(optional(dates)),
        sex=draw(optional(st.sampled_from(Sex))),
        nationality=draw(optional(nationalities)),
        documents=documents,
        description=description,
    )


vessels = st.builds(
    Vessel,
    name=short_text,
    imo=optional(imo_numbers()),
    mmsi=optional(st.from_regex(r"[0-9]{9}", fullmatch=True)),
    flag_state=optional(countries),
    call_sign=optional(st.from_regex(r"[A-Z0-9]{2,12}", fullmatch=True)),
)


@st.composite
def waypoints(draw: st.DrawFn) -> Waypoint:
    arrival = draw(optional(times))
    departure = draw(optional(times if arrival is None else st.integers(arrival, MAX_TIME_MS)))
    return Waypoint(
        place=draw(short_text),
        country=draw(optional(countries)),
        arrival_ms=arrival,
        departure_ms=departure,
        mode=draw(optional(st.sampled_from(TransportMode))),
    )


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    text = draw(optional(long_text))
    subject_list = draw(few(subjects()))
    vessel_list = draw(few(vessels))
    route = draw(few(waypoints()))
    if text is None and not (subject_list or vessel_list or route):
        text = draw(long_text)
    return Alert(
        category=draw(st.sampled_from(AlertCategory)),
        title=draw(short_text),
        source_grade=draw(st.sampled_from(SourceGrade)),
        info_grade=draw(st.sampled_from(InfoGrade)),
        text=text,
        subjects=subject_list,
        vessels=vessel_list,
        route=route,
        valid_until_ms=draw(optional(times)),
        attachments=draw(
            st.lists(
                st.builds(Attachment.of, short_text, st.binary(min_size=1, max_size=64)),
                max_size=3,
            ).map(tuple)
        ),
    )


@st.composite
def doc_verify_requests(draw: st.DrawFn) -> DocVerifyRequest:
    count, width = draw(st.sampled_from(sorted(MRZ_SHAPES)))
    line = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<", min_size=width, max_size=width)
    return DocVerifyRequest(
        mrz=tuple(draw(line) for _ in range(count)),
        purpose=draw(st.sampled_from(DocPurpose)),
        checkpoint=draw(optional(short_text)),
    )


@st.composite
def doc_verify_responses(draw: st.DrawFn) -> DocVerifyResponse:
    status = draw(st.sampled_from(DocStatus))
    answered_by = draw(st.sampled_from(AnsweredBy))
    mismatched: tuple[DocField, ...] = ()
    if status is DocStatus.DATA_MISMATCH:
        mismatched = tuple(draw(st.lists(st.sampled_from(DocField), min_size=1, unique=True)))
    return DocVerifyResponse(
        status=status,
        answered_by=answered_by,
        mismatched_fields=mismatched,
        officer=draw(short_text) if answered_by is AnsweredBy.HUMAN else None,
        note=draw(optional(short_text)),
    )


@st.composite
def person_queries(draw: st.DrawFn) -> PersonQuery:
    birth_date = draw(optional(dates))
    document_number = draw(optional(doc_numbers) if birth_date else doc_numbers)
    return PersonQuery(
        surname=draw(short_text),
        purpose=draw(short_text),
        legal_basis=draw(short_text),
        given_names=draw(optional(short_text)),
        birth_date=birth_date,
        nationality=draw(optional(nationalities)),
        document_number=document_number,
    )


person_results = st.one_of(
    st.just(PersonResult(hit=False)),
    st.builds(PersonResult, hit=st.just(True), reference=references),
)

followup_requests = st.builds(
    FollowupRequest,
    reference=references,
    legal_basis=short_text,
    purpose=short_text,
    requested=long_text,
)


@st.composite
def followup_decisions(draw: st.DrawFn) -> FollowupDecision:
    decision = draw(st.sampled_from(Decision))
    refused = decision is Decision.REFUSED
    return FollowupDecision(
        decision=decision,
        decided_by=draw(short_text),
        reason=draw(optional(short_text) if decision is Decision.APPROVED else short_text),
        released=None if refused else draw(optional(long_text)),
        subjects=() if refused else draw(few(subjects())),
    )


mla_requests = st.builds(
    MlaRequest,
    legal_basis=short_text,
    requesting_authority=short_text,
    case_summary=long_text,
    measures=st.lists(st.sampled_from(MlaMeasure), min_size=1, unique=True).map(tuple),
    contact=short_text,
    deadline_ms=optional(times),
)


@st.composite
def mla_statuses(draw: st.DrawFn) -> MlaStatus:
    status = draw(st.sampled_from(MlaStatusCode))
    before = [old for old, new in MLA_TRANSITIONS.items() if old is not None and status in new]
    previous = draw(st.sampled_from([None, *before]))
    refused = status is MlaStatusCode.REFUSED
    return MlaStatus(
        status=status,
        previous=previous,
        note=draw(optional(long_text)),
        reason=draw(short_text if refused else optional(short_text)),
    )


@st.composite
def receipts(draw: st.DrawFn) -> Receipt:
    status = draw(st.sampled_from(ReceiptStatus))
    ids = draw(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=8, unique=True))
    return Receipt(
        for_id=ids[0],
        also=tuple(ids[1:]),
        status=status,
        by=draw(principals),
        at_ms=draw(times),
        code=draw(error_codes) if status is ReceiptStatus.REJECTED else None,
        detail=draw(optional(short_text)),
        due_ms=draw(times) if status in DUE_STATUSES else None,
    )


_BY_TYPE: dict[str, st.SearchStrategy[Body]] = {
    Alert.TYPE: alerts(),
    DocVerifyRequest.TYPE: doc_verify_requests(),
    DocVerifyResponse.TYPE: doc_verify_responses(),
    PersonQuery.TYPE: person_queries(),
    PersonResult.TYPE: person_results,
    FollowupRequest.TYPE: followup_requests,
    FollowupDecision.TYPE: followup_decisions(),
    MlaRequest.TYPE: mla_requests,
    MlaStatus.TYPE: mla_statuses(),
    Receipt.TYPE: receipts(),
}
assert set(_BY_TYPE) == set(MESSAGE_TYPES), "a message type has no strategy"


def body_of(type_name: str) -> st.SearchStrategy[Body]:
    """Valid bodies of one message type."""
    return _BY_TYPE[type_name]


def bodies() -> st.SearchStrategy[Body]:
    """Valid bodies of every message type."""
    return st.one_of(*_BY_TYPE.values())
