"""An issuing state's document registry and the automated answer to a document check.

The document authority of a country runs ``ixb agency respond`` with its
registry: every ``doc.verify.request`` for a document it issued is answered
in milliseconds, with no human in the loop, and without disclosing anything
the asking officer did not already hold (status and which fields differ).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import msgspec

from protocols.errors import ConfigError, IxbError
from protocols.messages import (
    AnsweredBy,
    DocField,
    DocStatus,
    DocVerifyRequest,
    DocVerifyResponse,
    validate_doc_request,
)
from protocols.mrz import Mrz
from transport.files import read_bytes

MAX_REGISTRY_BYTES = 64 * 1024 * 1024


class DocumentRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    document_number: str
    issuing_state: str
    surname: str
    given_names: str
    birth_date: str
    expiry_date: str
    nationality: str
    sex: str
    status: DocStatus = DocStatus.VALID


@dataclass(frozen=True)
class DocumentRegistry:
    records: dict[tuple[str, str], DocumentRecord]

    @classmethod
    def load(cls, path: Path) -> DocumentRegistry:
        data = read_bytes(path, MAX_REGISTRY_BYTES)
        try:
            rows = msgspec.json.decode(data, type=list[DocumentRecord])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"document registry {path}: {exc}") from None
        return cls({(r.issuing_state, r.document_number): r for r in rows})

    @staticmethod
    def dump(records: list[DocumentRecord]) -> str:
        return json.dumps(msgspec.to_builtins(records), indent=1) + "\n"

    def answer(self, request: DocVerifyRequest, today: date) -> DocVerifyResponse:
        """The automated answer; an unreadable MRZ is answered ``unknown`` with the reason."""
        try:
            mrz = validate_doc_request(request, today)
        except IxbError as exc:
            return DocVerifyResponse(
                status=DocStatus.UNKNOWN, answered_by=AnsweredBy.AUTOMATED, note=exc.code
            )
        record = self.records.get((mrz.issuing_state, mrz.document_number))
        if record is None:
            return DocVerifyResponse(status=DocStatus.NOT_ISSUED, answered_by=AnsweredBy.AUTOMATED)
        if record.status is not DocStatus.VALID:
            return DocVerifyResponse(status=record.status, answered_by=AnsweredBy.AUTOMATED)
        mismatched = _mismatches(record, mrz)
        if mismatched:
            return DocVerifyResponse(
                status=DocStatus.DATA_MISMATCH,
                answered_by=AnsweredBy.AUTOMATED,
                mismatched_fields=tuple(mismatched),
            )
        note = "document expired" if mrz.expiry_date < today else None
        return DocVerifyResponse(
            status=DocStatus.VALID, answered_by=AnsweredBy.AUTOMATED, note=note
        )


def _mismatches(record: DocumentRecord, mrz: Mrz) -> list[DocField]:
    out: list[DocField] = []
    if record.surname.upper() != mrz.surname and not (
        mrz.name_may_be_truncated and record.surname.upper().startswith(mrz.surname)
    ):
        out.append(DocField.SURNAME)
    if not record.given_names.upper().startswith(mrz.given_names):
        out.append(DocField.GIVEN_NAMES)
    if mrz.birth_date is not None and record.birth_date != mrz.birth_date.isoformat():
        out.append(DocField.BIRTH_DATE)
    if record.expiry_date != mrz.expiry_date.isoformat():
        out.append(DocField.EXPIRY_DATE)
    if record.nationality != mrz.nationality:
        out.append(DocField.NATIONALITY)
    if record.sex != mrz.sex:
        out.append(DocField.SEX)
    return out
