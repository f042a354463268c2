"""One example body per message type, for the demo, the test vectors and the docs.

Every person, vessel, document number and reference here is invented; titles
and narratives say "EXAMPLE" so a copy that leaks into a real system is
recognisable at a glance. The document check uses ICAO's own specimen
passport (Utopia, ``ERIKSSON ANNA MARIA``) from Doc 9303 Part 4.
"""

from __future__ import annotations

import msgspec

from protocols.identifiers import new_message_id
from protocols.limits import MS_PER_DAY, MS_PER_HOUR
from protocols.messages import (
    Alert,
    AlertCategory,
    AnsweredBy,
    Attachment,
    Body,
    Decision,
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

SPECIMEN_TD3_MRZ = (
    "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
    "L898902C36UTO7408122F1204159ZE184226B<<<<<10",
)
"""ICAO Doc 9303 Part 4 specimen passport of the fictional State of Utopia."""

EXAMPLE_REFERENCE = "MYS-RMP-2024-000417"
"""An invented hit reference, shared by the person.result and followup examples."""


EXAMPLE_VICTIM = Subject(
    role=SubjectRole.VICTIM,
    given_names="AYE AYE",
    sex=Sex.FEMALE,
    nationality="XXA",
    description="About 16 years old; seen boarding the vessel without documents.",
)
"""An invented victim. A body naming one travels only under H2 (SPEC §6), so the example
alert, sent under every handling code by the demo and the tests, names none; add this
subject to it (:func:`example_victim_alert`) to exercise the victims' rule."""


def example_victim_alert(now_ms: int) -> Alert:
    """The example alert with :data:`EXAMPLE_VICTIM` among its subjects."""
    alert = example_bodies(now_ms)[Alert.TYPE]
    assert isinstance(alert, Alert)  # noqa: S101 - example_bodies maps each type to its class
    return msgspec.structs.replace(alert, subjects=(*alert.subjects, EXAMPLE_VICTIM))


def example_bodies(now_ms: int) -> dict[str, Body]:
    """Header type → a valid example body, with times relative to ``now_ms``."""
    suspect = Subject(
        role=SubjectRole.SUSPECT,
        surname="SAMPLE",
        given_names="NARONG",
        birth_date="1981-03-14",
        sex=Sex.MALE,
        nationality="THA",
        documents=(
            DocumentRef(doc_type=DocType.PASSPORT, number="AA0000001", issuing_state="THA"),
        ),
        description="Recruiter; offers fishing-crew jobs at Pattani pier.\nUses two phones.",
    )
    vessel = Vessel(
        name="EXAMPLE STAR 7",
        imo="1234567",
        mmsi="567000001",
        flag_state="THA",
        call_sign="HSXX7",
    )
    route = (
        Waypoint(
            place="Pattani fishing pier",
            country="THA",
            departure_ms=max(0, now_ms - 2 * MS_PER_DAY),
            mode=TransportMode.SEA,
        ),
        Waypoint(
            place="Kuala Kedah jetty",
            country="MYS",
            arrival_ms=now_ms + 6 * MS_PER_HOUR,
            mode=TransportMode.SEA,
        ),
    )
    return {
        Alert.TYPE: Alert(
            category=AlertCategory.TRAFFICKING,
            title="EXAMPLE: minor suspected aboard fishing vessel bound for Kedah",
            source_grade=SourceGrade.B,
            info_grade=InfoGrade.KNOWN_TO_SOURCE,
            text=(
                "EXAMPLE ALERT - fictional data.\n"
                "A witness saw a girl of about 16 board EXAMPLE STAR 7 with the recruiter.\n"
                "Please check the vessel on arrival and inform DSI-ATHD."
            ),
            subjects=(suspect,),
            vessels=(vessel,),
            route=route,
            valid_until_ms=now_ms + 7 * MS_PER_DAY,
            attachments=(
                Attachment.of(
                    "EXAMPLE-vessel-sighting.txt",
                    b"EXAMPLE - fictional. EXAMPLE STAR 7 left Pattani pier at 04:10.\n",
                ),
            ),
        ),
        DocVerifyRequest.TYPE: DocVerifyRequest(
            mrz=SPECIMEN_TD3_MRZ,
            purpose=DocPurpose.BORDER_CHECK,
            checkpoint="Sadao checkpoint, lane 4 (EXAMPLE)",
        ),
        DocVerifyResponse.TYPE: DocVerifyResponse(
            status=DocStatus.REPORTED_STOLEN,
            answered_by=AnsweredBy.AUTOMATED,
            checked_ms=now_ms,
            note="EXAMPLE: reported stolen; seize the document",
        ),
        PersonQuery.TYPE: PersonQuery(
            surname="SAMPLE",
            given_names="NARONG",
            birth_date="1981-03-14",
            nationality="THA",
            purpose="EXAMPLE: trafficking in persons investigation",
            legal_basis="EXAMPLE: Anti-Trafficking in Persons Act B.E. 2551, section 27",
        ),
        PersonResult.TYPE: PersonResult(hit=True, reference=EXAMPLE_REFERENCE),
        FollowupRequest.TYPE: FollowupRequest(
            reference=EXAMPLE_REFERENCE,
            legal_basis="EXAMPLE: ASEAN MLAT 2004, police-to-police cooperation",
            purpose="EXAMPLE: identify the recruiter's contacts in Kedah",
            requested="Known addresses, phone numbers and vehicles held on the person.",
        ),
        FollowupDecision.TYPE: FollowupDecision(
            decision=Decision.PARTIALLY_APPROVED,
            decided_by="Insp. EXAMPLE-OFFICER, badge 0000",
            reason="Vehicle data withheld: part of an ongoing operation",
            released="EXAMPLE: last known address Jalan Contoh 1, Alor Setar.",
        ),
        MlaRequest.TYPE: MlaRequest(
            legal_basis="ASEAN Treaty on Mutual Legal Assistance in Criminal Matters (2004)",
            requesting_authority="EXAMPLE Central Authority, Office of the Attorney General",
            case_summary=(
                "EXAMPLE - fictional case.\n"
                "Recruitment of fishing crew by deception; proceeds paid into an account "
                "held in the requested State."
            ),
            measures=(MlaMeasure.BANK_RECORDS, MlaMeasure.FREEZE_ASSETS),
            contact="central.authority@example.invalid",
            deadline_ms=now_ms + 30 * MS_PER_DAY,
        ),
        MlaStatus.TYPE: MlaStatus(
            status=MlaStatusCode.ACKNOWLEDGED,
            previous=MlaStatusCode.RECEIVED,
            note="EXAMPLE: assigned to the financial investigation unit.",
        ),
        Receipt.TYPE: Receipt(
            for_id=new_message_id(max(0, now_ms - 1000), bytes(10)),
            status=ReceiptStatus.DELIVERED,
            by="MYS/HUB",
            at_ms=now_ms,
        ),
    }
