"""Typed bodies of every message type: what travels encrypted inside an envelope's ``ct``.

The header's ``type`` string selects the body class (:data:`MESSAGE_TYPES`);
:func:`decode_body` is the only way body bytes become objects. Every body is
a frozen, canonical :class:`~protocols.fields.CheckedStruct` that checks
itself on construction, so an object that exists is valid, whether it was
decoded from a peer or built by local code: field types and bounds
(:mod:`protocols.fields`), the text rules, and each type's cross-field rules
(``_rules``, next to the fields they relate).

Error messages name fields, never their values: bodies carry personal data
and errors end up in receipts and audit entries, which hold metadata only.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import date
from types import MappingProxyType
from typing import Annotated, ClassVar, Final, TypeAlias

import msgspec

from protocols import wire
from protocols.errors import MrzError, SchemaError, TransitionError
from protocols.fields import (
    CheckedStruct,
    CountryStr,
    DateStr,
    ErrorCodeStr,
    LongText,
    ShortText,
    TimeMs,
    check_country_field,
    check_date,
    check_unique,
)
from protocols.identifiers import MessageIdBytes, PrincipalStr, parse_principal
from protocols.limits import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_ATTACHMENTS_TOTAL,
    MAX_LIST,
    MAX_MRZ_LINES,
    MAX_SHORT_TEXT,
)
from protocols.mrz import Mrz, parse_mrz

# --- field types of message bodies ----------------------------------------------

MAX_REFERENCE_CHARS: Final = 64
MAX_DOC_NUMBER_CHARS: Final = 40
MRZ_SHAPES: Final = frozenset({(3, 30), (2, 36), (2, 44)})
"""(lines, characters per line) of ICAO 9303 TD1, TD2/MRV-B and TD3/MRV-A."""
MRZ_MAX_LINE: Final = 44

DocNumberStr = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Z0-9][A-Z0-9-]{0,39}$", max_length=MAX_DOC_NUMBER_CHARS),
]
"""A document number, normalised: upper case, no spaces, no MRZ filler."""
ReferenceStr = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Z0-9][A-Z0-9/-]{0,63}$", max_length=MAX_REFERENCE_CHARS),
]
"""An opaque hit reference: its grammar leaves no room for names or dates in prose."""
ImoStr = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{7}$", max_length=7)]
MmsiStr = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{9}$", max_length=9)]
CallSignStr = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{2,12}$", max_length=12)]
MrzLine = Annotated[str, msgspec.Meta(max_length=MRZ_MAX_LINE)]

# ICAO 9303 Part 3 codes for persons without a nationality; trafficking victims
# are often stateless, so a subject's nationality may be one of these.
STATELESS_CODES: Final = frozenset({"XXA", "XXB", "XXC", "XXX"})

_MRZ_CHARS = re.compile(r"[A-Z0-9<]+")
_IMO = re.compile(r"[0-9]{7}")


def check_imo(value: str, where: str) -> None:
    """IMO ship number: the 7th digit is sum(digit_i * (7 - i)) mod 10 over the first six."""
    if not _IMO.fullmatch(value):
        raise SchemaError(f"{where}: an IMO number has 7 digits")
    total = sum(
        int(digit) * weight for digit, weight in zip(value[:6], range(7, 1, -1), strict=True)
    )
    if total % 10 != int(value[6]):
        raise SchemaError(f"{where}: IMO number check digit is wrong")


def _check_nationality(value: str, where: str) -> None:
    if value not in STATELESS_CODES:
        check_country_field(value, where)


# --- enums ------------------------------------------------------------------------


class AlertCategory(enum.StrEnum):
    TRAFFICKING = "trafficking"
    SMUGGLING = "smuggling"
    VESSEL = "vessel"
    MISSING_PERSON = "missing_person"
    CHILD_SEX_OFFENDER_TRAVEL = "child_sex_offender_travel"
    VICTIM_AT_RISK = "victim_at_risk"
    DOCUMENT_FRAUD = "document_fraud"
    OTHER = "other"


class SourceGrade(enum.StrEnum):
    """Reliability of the source (Europol 4x4)."""

    A = "A"  # no doubt of authenticity, trustworthiness and competence
    B = "B"  # mostly reliable
    C = "C"  # mostly not reliable
    X = "X"  # reliability cannot be assessed


class InfoGrade(enum.StrEnum):
    """Accuracy of the information (Europol 4x4)."""

    KNOWN_TRUE = "1"  # accuracy not in doubt
    KNOWN_TO_SOURCE = "2"  # known personally to the source, not to the official
    CORROBORATED = "3"  # not known personally to the source, corroborated elsewhere
    UNCORROBORATED = "4"  # not known personally to the source, cannot be corroborated


class SubjectRole(enum.StrEnum):
    SUSPECT = "suspect"
    VICTIM = "victim"
    WITNESS = "witness"
    ASSOCIATE = "associate"
    UNKNOWN = "unknown"


class Sex(enum.StrEnum):
    MALE = "M"
    FEMALE = "F"
    UNSPECIFIED = "X"  # ICAO 9303 "X"
    UNKNOWN = "unknown"


class DocType(enum.StrEnum):
    PASSPORT = "passport"
    ID_CARD = "id_card"
    VISA = "visa"
    RESIDENCE_PERMIT = "residence_permit"
    SEAFARER_ID = "seafarer_id"
    TRAVEL_DOCUMENT = "travel_document"  # refugee / stateless travel documents
    OTHER = "other"


class TransportMode(enum.StrEnum):
    AIR = "air"
    SEA = "sea"
    LAND = "land"
    RAIL = "rail"
    OTHER = "other"


class DocPurpose(enum.StrEnum):
    BORDER_CHECK = "border_check"
    VISA_APPLICATION = "visa_application"
    INVESTIGATION = "investigation"
    OTHER = "other"


class DocStatus(enum.StrEnum):
    VALID = "valid"
    NOT_ISSUED = "not_issued"
    REVOKED = "revoked"
    REPORTED_LOST = "reported_lost"
    REPORTED_STOLEN = "reported_stolen"
    DATA_MISMATCH = "data_mismatch"
    UNKNOWN = "unknown"


class DocField(enum.StrEnum):
    DOCUMENT_NUMBER = "document_number"
    SURNAME = "surname"
    GIVEN_NAMES = "given_names"
    BIRTH_DATE = "birth_date"
    EXPIRY_DATE = "expiry_date"
    NATIONALITY = "nationality"
    SEX = "sex"


class AnsweredBy(enum.StrEnum):
    AUTOMATED = "automated"
    HUMAN = "human"


class Decision(enum.StrEnum):
    APPROVED = "approved"
    PARTIALLY_APPROVED = "partially_approved"
    REFUSED = "refused"


class MlaMeasure(enum.StrEnum):
    OBTAIN_DOCUMENTS = "obtain_documents"
    BANK_RECORDS = "bank_records"
    WITNESS_TESTIMONY = "witness_testimony"
    SEARCH_AND_SEIZURE = "search_and_seizure"
    FREEZE_ASSETS = "freeze_assets"
    SERVICE_OF_DOCUMENTS = "service_of_documents"
    IDENTIFY_PERSONS = "identify_persons"
    TELECOM_DATA = "telecom_data"
    OTHER = "other"


class MlaStatusCode(enum.StrEnum):
    RECEIVED = "received"
    ACKNOWLEDGED = "acknowledged"
    IN_EXECUTION = "in_execution"
    EXECUTED = "executed"
    PARTIALLY_EXECUTED = "partially_executed"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


class ReceiptStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    RELAYED = "relayed"
    DELIVERED = "delivered"
    READ = "read"
    REJECTED = "rejected"
    OVERDUE = "overdue"  # a reminder: the request's answer is past due (SPEC §5, §6)
    QUEUED = "queued"
    """A lookup no automated responder answered in time: delivered to the owner's inbox,
    to be answered by a person by ``due_ms`` (SPEC §14)."""


DUE_STATUSES: Final = frozenset({ReceiptStatus.OVERDUE, ReceiptStatus.QUEUED})
"""The receipt statuses that carry ``due_ms``."""


# --- parts ------------------------------------------------------------------------


class DocumentRef(CheckedStruct, frozen=True):
    """A travel or identity document held by a subject."""

    doc_type: DocType
    number: DocNumberStr
    issuing_state: CountryStr | None = None

    def _rules(self) -> None:
        if self.issuing_state is not None:
            check_country_field(self.issuing_state, "DocumentRef.issuing_state")


class Subject(CheckedStruct, frozen=True):
    """A person in an alert or a released follow-up.

    Every identity field is optional because victims at risk are often not
    yet identified; a subject must still name or describe somebody.
    """

    role: SubjectRole
    surname: ShortText | None = None
    given_names: ShortText | None = None
    birth_date: DateStr | None = None
    sex: Sex | None = None
    nationality: CountryStr | None = None
    documents: Annotated[tuple[DocumentRef, ...], msgspec.Meta(max_length=MAX_LIST)] = ()
    description: LongText | None = None

    def _rules(self) -> None:
        if self.birth_date is not None:
            check_date(self.birth_date, "Subject.birth_date")
        if self.nationality is not None:
            _check_nationality(self.nationality, "Subject.nationality")
        if (
            self.surname is None
            and self.given_names is None
            and self.description is None
            and not self.documents
        ):
            raise SchemaError(
                "Subject: needs at least one of surname, given_names, documents, description"
            )


class Vessel(CheckedStruct, frozen=True):
    name: ShortText
    imo: ImoStr | None = None
    mmsi: MmsiStr | None = None
    flag_state: CountryStr | None = None
    call_sign: CallSignStr | None = None

    def _rules(self) -> None:
        if self.imo is not None:
            check_imo(self.imo, "Vessel.imo")
        if self.flag_state is not None:
            check_country_field(self.flag_state, "Vessel.flag_state")


class Waypoint(CheckedStruct, frozen=True):
    place: ShortText
    country: CountryStr | None = None
    arrival_ms: TimeMs | None = None
    departure_ms: TimeMs | None = None
    mode: TransportMode | None = None

    def _rules(self) -> None:
        if self.country is not None:
            check_country_field(self.country, "Waypoint.country")
        if (
            self.arrival_ms is not None
            and self.departure_ms is not None
            and self.departure_ms < self.arrival_ms
        ):
            raise SchemaError("Waypoint: departure_ms is before arrival_ms")


class Attachment(CheckedStruct, frozen=True):
    """A file sealed with the message. ``name`` is the sender's: a receiver never uses
    it as a path as it stands. ``sha256`` names the bytes outside ixb too."""

    name: ShortText
    data: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_ATTACHMENT_BYTES)]
    sha256: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]

    def _rules(self) -> None:
        if hashlib.sha256(self.data).digest() != self.sha256:
            raise SchemaError("Attachment: sha256 does not match data")

    @classmethod
    def of(cls, name: str, data: bytes) -> Attachment:
        return cls(name=name, data=data, sha256=hashlib.sha256(data).digest())


# --- bodies -----------------------------------------------------------------------


class Alert(CheckedStruct, frozen=True):
    TYPE: ClassVar[str] = "alert"

    category: AlertCategory
    title: ShortText
    source_grade: SourceGrade
    info_grade: InfoGrade
    text: LongText | None = None
    subjects: Annotated[tuple[Subject, ...], msgspec.Meta(max_length=MAX_LIST)] = ()
    vessels: Annotated[tuple[Vessel, ...], msgspec.Meta(max_length=MAX_LIST)] = ()
    route: Annotated[tuple[Waypoint, ...], msgspec.Meta(max_length=MAX_LIST)] = ()
    valid_until_ms: TimeMs | None = None
    attachments: Annotated[tuple[Attachment, ...], msgspec.Meta(max_length=MAX_ATTACHMENTS)] = ()

    def _rules(self) -> None:
        if self.text is None and not (self.subjects or self.vessels or self.route):
            raise SchemaError("alert: needs text, subjects, vessels or a route")
        if sum(len(a.data) for a in self.attachments) > MAX_ATTACHMENTS_TOTAL:
            raise SchemaError(f"alert: attachments over {MAX_ATTACHMENTS_TOTAL} bytes in all")


class DocVerifyRequest(CheckedStruct, frozen=True):
    """Is this document genuine and valid? Keyed by its machine-readable zone.

    Construction checks only the MRZ's shape; check digits and dates need
    today's date, so senders and responders call :func:`validate_doc_request`.
    """

    TYPE: ClassVar[str] = "doc.verify.request"

    mrz: Annotated[tuple[MrzLine, ...], msgspec.Meta(min_length=2, max_length=MAX_MRZ_LINES)]
    purpose: DocPurpose
    checkpoint: ShortText | None = None

    def _rules(self) -> None:
        for line in self.mrz:
            if not _MRZ_CHARS.fullmatch(line):
                raise MrzError("doc.verify.request: MRZ lines hold only A-Z, 0-9 and '<'")
        shape = (len(self.mrz), len(self.mrz[0]))
        if shape not in MRZ_SHAPES or any(len(line) != shape[1] for line in self.mrz):
            raise MrzError(
                "doc.verify.request: MRZ must be 3 lines of 30 (TD1), "
                "2 of 36 (TD2) or 2 of 44 (TD3) characters"
            )


def validate_doc_request(request: DocVerifyRequest, today: date) -> Mrz:
    """Parse the request's MRZ with its check digits; :class:`MrzError` on failure.

    Senders call it before sending, responders before answering. ``today``
    resolves two-digit birth years and is passed in (``protocols`` reads no clock).
    """
    return parse_mrz(request.mrz, today=today)


class DocVerifyResponse(CheckedStruct, frozen=True):
    TYPE: ClassVar[str] = "doc.verify.response"

    status: DocStatus
    answered_by: AnsweredBy
    mismatched_fields: Annotated[tuple[DocField, ...], msgspec.Meta(max_length=len(DocField))] = ()
    officer: ShortText | None = None
    note: ShortText | None = None

    def _rules(self) -> None:
        check_unique(self.mismatched_fields, "doc.verify.response: mismatched_fields")
        if (self.status is DocStatus.DATA_MISMATCH) != bool(self.mismatched_fields):
            raise SchemaError(
                "doc.verify.response: mismatched_fields is required for data_mismatch "
                "and forbidden for every other status"
            )
        if (self.answered_by is AnsweredBy.HUMAN) != (self.officer is not None):
            raise SchemaError(
                "doc.verify.response: officer is required for a human answer "
                "and forbidden for an automated one"
            )


class PersonQuery(CheckedStruct, frozen=True):
    """Do you hold anything on this person? Answered by hit / no-hit only."""

    TYPE: ClassVar[str] = "person.query"

    surname: ShortText
    purpose: ShortText
    legal_basis: ShortText
    given_names: ShortText | None = None
    birth_date: DateStr | None = None
    nationality: CountryStr | None = None
    document_number: DocNumberStr | None = None

    def _rules(self) -> None:
        if self.birth_date is not None:
            check_date(self.birth_date, "person.query: birth_date")
        if self.nationality is not None:
            _check_nationality(self.nationality, "person.query: nationality")
        if self.birth_date is None and self.document_number is None:
            raise SchemaError("person.query: needs birth_date or document_number")


class PersonResult(CheckedStruct, frozen=True):
    """Hit or no hit, and on a hit an opaque reference: never personal data (Prüm model)."""

    TYPE: ClassVar[str] = "person.result"

    hit: bool
    reference: ReferenceStr | None = None

    def _rules(self) -> None:
        if self.hit != (self.reference is not None):
            raise SchemaError(
                "person.result: reference is required on a hit and forbidden otherwise"
            )


class FollowupRequest(CheckedStruct, frozen=True):
    TYPE: ClassVar[str] = "followup.request"

    reference: ReferenceStr
    legal_basis: ShortText
    purpose: ShortText
    requested: LongText


class FollowupDecision(CheckedStruct, frozen=True):
    """The data owner's decision; always a named human, since a machine cannot release data."""

    TYPE: ClassVar[str] = "followup.decision"

    decision: Decision
    decided_by: ShortText
    reason: ShortText | None = None
    released: LongText | None = None
    subjects: Annotated[tuple[Subject, ...], msgspec.Meta(max_length=MAX_LIST)] = ()

    def _rules(self) -> None:
        if self.decision is not Decision.APPROVED and self.reason is None:
            raise SchemaError(f"followup.decision: reason is required when {self.decision}")
        if self.decision is Decision.REFUSED and (self.released is not None or self.subjects):
            raise SchemaError("followup.decision: a refusal releases no data")


class MlaRequest(CheckedStruct, frozen=True):
    TYPE: ClassVar[str] = "mla.request"

    legal_basis: ShortText
    requesting_authority: ShortText
    case_summary: LongText
    measures: Annotated[
        tuple[MlaMeasure, ...], msgspec.Meta(min_length=1, max_length=len(MlaMeasure))
    ]
    contact: ShortText
    deadline_ms: TimeMs | None = None

    def _rules(self) -> None:
        check_unique(self.measures, "mla.request: measures")


_S = MlaStatusCode
MLA_TRANSITIONS: Final[Mapping[MlaStatusCode | None, frozenset[MlaStatusCode]]] = MappingProxyType(
    {
        None: frozenset({_S.RECEIVED}),
        _S.RECEIVED: frozenset({_S.ACKNOWLEDGED, _S.REFUSED, _S.WITHDRAWN}),
        _S.ACKNOWLEDGED: frozenset({_S.IN_EXECUTION, _S.REFUSED, _S.WITHDRAWN}),
        _S.IN_EXECUTION: frozenset({_S.EXECUTED, _S.PARTIALLY_EXECUTED, _S.REFUSED, _S.WITHDRAWN}),
        _S.EXECUTED: frozenset(),
        _S.PARTIALLY_EXECUTED: frozenset(),
        _S.REFUSED: frozenset(),
        _S.WITHDRAWN: frozenset(),
    }
)
"""Status → the statuses that may follow it; ``None`` is "no status yet"."""


def check_mla_transition(old: MlaStatusCode | None, new: MlaStatusCode) -> None:
    """Raise :class:`TransitionError` unless an MLA request may go from ``old`` to ``new``."""
    allowed = MLA_TRANSITIONS[old]
    if new in allowed:
        return
    if old is None:
        raise TransitionError(f"MLA status: the first status must be received, not {new}")
    if not allowed:
        raise TransitionError(f"MLA status: {old} is final, it cannot become {new}")
    raise TransitionError(
        f"MLA status: {old} cannot become {new} (allowed: {', '.join(sorted(allowed))})"
    )


def apply_mla_status(
    history: Sequence[MlaStatusCode], new: MlaStatusCode
) -> tuple[MlaStatusCode, ...]:
    """The status history after ``new``, or :class:`TransitionError`; ``history`` is not changed."""
    check_mla_transition(history[-1] if history else None, new)
    return (*history, new)


class MlaStatus(CheckedStruct, frozen=True):
    TYPE: ClassVar[str] = "mla.status"

    status: MlaStatusCode
    previous: MlaStatusCode | None = None
    note: LongText | None = None
    reason: ShortText | None = None

    def _rules(self) -> None:
        if self.previous is not None:
            check_mla_transition(self.previous, self.status)
        if self.status is MlaStatusCode.REFUSED and self.reason is None:
            raise SchemaError("mla.status: reason is required when refused")


class Receipt(CheckedStruct, frozen=True):
    """Signed proof that a hub or agency accepted, relayed, delivered, read or rejected a message,
    or a hub's reminder that a request is overdue.

    ``code`` is the stable error code of a rejection (:mod:`protocols.errors`);
    ``due_ms`` the due time an ``overdue`` reminder or a ``queued`` lookup states (only they).
    ``also`` names further messages the same statement holds for: a hub
    acknowledges every message of a sender it handled in one batch with one
    signed receipt per status (SPEC §5), instead of one envelope per message.
    """

    TYPE: ClassVar[str] = "receipt"

    for_id: MessageIdBytes
    status: ReceiptStatus
    by: PrincipalStr
    at_ms: TimeMs
    code: ErrorCodeStr | None = None
    detail: ShortText | None = None
    also: Annotated[tuple[MessageIdBytes, ...], msgspec.Meta(max_length=MAX_LIST - 1)] = ()
    due_ms: TimeMs | None = None
    """When the answer is due: a queued lookup's deadline (SPEC §14), or the due time an
    overdue reminder used (SPEC §5, §6). Present with these two statuses only."""

    def _rules(self) -> None:
        parse_principal(self.by)
        if (self.status is ReceiptStatus.REJECTED) != (self.code is not None):
            raise SchemaError("receipt: code is required when rejected and forbidden otherwise")
        if (self.status in DUE_STATUSES) != (self.due_ms is not None):
            raise SchemaError(
                "receipt: due_ms is required when overdue or queued and forbidden otherwise"
            )
        if len(set(self.ids)) != len(self.ids):
            raise SchemaError("receipt: a message id appears twice in for_id and also")

    @property
    def ids(self) -> tuple[bytes, ...]:
        """Every message this receipt is about: ``for_id`` first."""
        return (self.for_id, *self.also)


# --- registry -----------------------------------------------------------------------

Body: TypeAlias = (
    Alert
    | DocVerifyRequest
    | DocVerifyResponse
    | PersonQuery
    | PersonResult
    | FollowupRequest
    | FollowupDecision
    | MlaRequest
    | MlaStatus
    | Receipt
)

MESSAGE_TYPES: Final[Mapping[str, type[Body]]] = MappingProxyType(
    {
        cls.TYPE: cls
        for cls in (
            Alert,
            DocVerifyRequest,
            DocVerifyResponse,
            PersonQuery,
            PersonResult,
            FollowupRequest,
            FollowupDecision,
            MlaRequest,
            MlaStatus,
            Receipt,
        )
    }
)
"""Header ``type`` → body class."""

REPLY_TO: Final[Mapping[str, str]] = MappingProxyType(
    {
        DocVerifyResponse.TYPE: DocVerifyRequest.TYPE,
        PersonResult.TYPE: PersonQuery.TYPE,
        FollowupDecision.TYPE: FollowupRequest.TYPE,
        MlaStatus.TYPE: MlaRequest.TYPE,
    }
)
"""Answer type → the request type it answers (``in_reply_to``). Receipts answer any type."""

REQUEST_TYPES: Final[frozenset[str]] = frozenset(REPLY_TO.values())
"""Types that expect an answer, so carry a deadline."""


def encode_body(body: Body) -> bytes:
    """The canonical bytes of a body (what gets encrypted)."""
    return wire.encode(body)


def decode_body(type_name: str, data: bytes) -> Body:
    """Parse a decrypted body of header type ``type_name``, or raise an :class:`IxbError`."""
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        raise SchemaError(f"unknown message type {type_name[:MAX_SHORT_TEXT]!r}")
    return wire.decode(data, cls, f"{type_name} body")
