"""Agency commands that talk to the hub: enroll, send, inbox, verify-doc, query, receipts, respond;
and show and export, which read the local message store (:mod:`agency_client.msgstore`).

Human output by default, ``--json`` for scripts; every failure is one line
and exit 2 (the dispatcher prints typed errors). Receipts seen, with who
signed each, and the recipients of alerts sent are kept in a small local state
file beside the profile, so ``ixb receipts MSG_ID`` works across runs and
checks each receipt against the message it names (SPEC §5 receipt).

Beside it, ``<CC>-<NAME>.handled`` remembers the messages already handled
(``ixb inbox`` shows each once, even when the hub's server redelivers it).
A send the hub never confirmed keeps its sealed envelope in the state file
and fails with one line naming the id and ``ixb send retry ID``, which
publishes the same envelope again: never duplicated. Every message received
is stored in the same file before it is acked (:func:`agency_client.msgstore.open_store`), so
reading never destroys: ``ixb inbox`` lists what is new, ``ixb show`` and
``ixb export`` read the store without connecting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import re
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import msgspec
import nats.errors
import structlog

from agency_client import enrol
from agency_client.docregistry import (
    DocumentRegistry,
    DocumentSource,
    SqliteRegistry,
    answer_check,
    default_registry_path,
    open_source,
)
from agency_client.docview import document_line, document_summary, split_lines
from agency_client.enckeys import open_key_file
from agency_client.federation_state import state_path
from agency_client.humanqueue import AUTOMATED, AnswerBook
from agency_client.keystore import passphrase
from agency_client.msgstore import MessageStore, StoredMessage, open_store, store_path
from agency_client.personindex import PersonResponder
from agency_client.profile import Profile, UnknownPolicy, load_profile
from agency_client.sdk import (
    MAX_SENT_RECORDS,
    AgencyClient,
    Incoming,
    Queued,
    Refused,
    SignedReceipt,
    load_identity_for,
    load_previous_for,
)
from protocols.envelope import Header, decode_envelope
from protocols.errors import (
    IoError,
    IxbError,
    UnknownOutcomeError,
    UnknownRecipientError,
    UsageError,
)
from protocols.fields import iso_times, utc_iso, utc_text
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import (
    Principal,
    format_message_id,
    parse_agency,
    parse_message_id,
    parse_principal,
)
from protocols.limits import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_ATTACHMENTS_TOTAL,
    MAX_TEXT,
)
from protocols.messages import (
    REPLY_TO,
    REQUEST_TYPES,
    Alert,
    AlertCategory,
    Attachment,
    DocPurpose,
    DocStatus,
    DocVerifyRequest,
    InfoGrade,
    PersonQuery,
    PersonResult,
    Receipt,
    ReceiptStatus,
    SourceGrade,
)
from protocols.mrz import ICAO_EXTRA_CODES, parse_mrz
from protocols.roles import Role
from protocols.victims import VICTIM_HANDLING, names_victim
from transport import eventloop
from transport.cliargs import (
    DEFAULT_CONNECT_TIMEOUT_S,
    add_connect_timeout,
    int_range,
    reconnects_for,
    seconds,
)
from transport.cliout import add_json, emit
from transport.clock import wall_ms
from transport.files import read_bytes

log = structlog.get_logger("ixb.agency")
ICAO_TO_ISO = {"D": "DEU"}
MAX_CONCURRENCY = 1024
MAX_SHOWN = 10_000
EXIT_REJECTED = 4
"""``ixb send --wait``: the message was rejected (the line names the code and the hub)."""
ANSWER_TIMEOUT_HELP = (
    "seconds to wait for the answer (default {default}); a rejection by a hub is shown at "
    "once, and the hub's NATS server is given at most "
    f"{DEFAULT_CONNECT_TIMEOUT_S:g} of them"
)
"""MRZ issuer codes that name an ISO country differently (ICAO 9303 Part 3)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def with_profile(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
        return add_json(p)

    agency = sub.add_parser("agency", help="agency setup and automated responders")
    agency_sub = agency.add_subparsers(dest="cmd", required=True)
    enrol.register_enroll(agency_sub)
    respond = with_profile(
        agency_sub.add_parser(
            "respond",
            help="answer document checks (from a registry) and person queries (from an "
            "index) automatically",
            description="Answer every document check the registry can decide and, with "
            "--index, every person query; the rest stay in the human queue (ixb queue list): "
            "person queries without --index, and with --unknown ask_human the checks the "
            "registry cannot decide. The registry: --registry, else the profile's [registry] "
            "source, else the SQLite file ixb registry load fills (if there is one).",
        )
    )
    source = respond.add_mutually_exclusive_group()
    source.add_argument(
        "--registry",
        metavar="SOURCE",
        help="sqlite:PATH, json:PATH or python:MODULE:FACTORY (a country's own system)",
    )
    source.add_argument(
        "--documents", type=Path, metavar="FILE", help="a JSON registry (as --registry json:FILE)"
    )
    respond.add_argument(
        "--unknown",
        choices=[p.value for p in UnknownPolicy],
        help="when the registry cannot decide: answer unknown, or leave the check for a "
        "person (default: the profile's [registry] unknown, else answer)",
    )
    respond.add_argument(
        "--index",
        type=Path,
        metavar="PATH",
        help="person index (ixb index load) answering person.query with hit or no hit",
    )
    respond.add_argument(
        "--concurrency",
        type=int_range(1, MAX_CONCURRENCY),
        default=32,
        help="checks answered at once, 1 to "
        f"{MAX_CONCURRENCY} (each waits mostly for its answer's ack; default 32)",
    )
    add_connect_timeout(respond)
    respond.set_defaults(func=cmd_respond)

    _register_messaging(sub, with_profile)
    _register_store(sub, with_profile)


def _register_store(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_profile: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    inbox = with_profile(
        sub.add_parser(
            "inbox",
            help="fetch what arrived into the local store and list what is new",
            description="Fetches new messages into this agency's local store (then "
            "acknowledges them on the hub) and lists those not listed before. Stored "
            "messages stay: ixb show ID, ixb inbox --all, ixb export.",
        )
    )
    inbox.add_argument(
        "--wait",
        type=seconds(allow_zero=True),
        default=2.0,
        metavar="SECONDS",
        help="seconds to wait for messages (default 2)",
    )
    inbox.add_argument(
        "--max",
        type=int_range(1, MAX_SHOWN),
        default=50,
        help=f"new messages listed, 1 to {MAX_SHOWN} (default 50)",
    )
    inbox.add_argument(
        "--no-read-receipt", action="store_true", help="do not tell the senders it was read"
    )
    inbox.add_argument("--all", action="store_true", help="list every stored message")
    inbox.add_argument(
        "--since",
        metavar="WHEN",
        help="stored messages received since WHEN (ISO 8601, UTC: 2026-11-01 or "
        "2026-11-01T08:00); implies --all",
    )
    add_connect_timeout(inbox)
    inbox.set_defaults(func=cmd_inbox)

    show = with_profile(
        sub.add_parser("show", help="a stored message, its receipts and its thread")
    )
    show.add_argument("msg_id")
    show.add_argument(
        "--save-attachments",
        type=Path,
        metavar="DIR",
        help="write its attachments into DIR (safe names; an existing file is never replaced)",
    )
    show.set_defaults(func=cmd_show)

    export = with_profile(
        sub.add_parser("export", help="stored messages as JSON (metadata and content) or CSV")
    )
    export.add_argument("--since", metavar="WHEN", help="received since WHEN (ISO 8601, UTC)")
    export.add_argument("--format", choices=["json", "csv"], default="json")
    export.add_argument("--out", type=Path, help="file to create (never overwritten)")
    export.set_defaults(func=cmd_export)


def _register_messaging(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_profile: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    send = sub.add_parser("send", help="send a message").add_subparsers(dest="cmd", required=True)
    alert = with_profile(
        send.add_parser(
            "alert",
            help="send an alert",
            description="Sign and encrypt an alert to each recipient; the hubs route it. "
            "The category and the source/information grading are the sender's call: required, "
            "and echoed in the 'sent' line.",
            epilog="example: ixb send alert --to MYS/RMP-ATIPSOM --title 'Boat sighted' "
            "--text '…' --category trafficking --source-grade B --info-grade 2 "
            "--handling H2 --priority urgent\n\n" + GRADING_HELP + "\n\n" + HANDLING_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    alert.add_argument(
        "--to",
        action="append",
        required=True,
        help="recipient agency, e.g. MYS/RMP-ATIPSOM (repeat)",
    )
    alert.add_argument("--title", required=True, help="one line the recipient sees first")
    text = alert.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the alert's text")
    text.add_argument(
        "--text-file", metavar="FILE", help="the text from FILE (UTF-8), or '-' for stdin"
    )
    alert.add_argument(
        "--category",
        choices=[c.value for c in AlertCategory],
        required=True,
        help="what the alert is about (required)",
    )
    alert.add_argument(
        "--source-grade",
        choices=[g.value for g in SourceGrade],
        required=True,
        help="how reliable the source is, A (no doubt) to C (mostly not reliable), "
        "X (cannot be assessed) (required)",
    )
    alert.add_argument(
        "--info-grade",
        choices=[g.value for g in InfoGrade],
        required=True,
        help="how accurate the information is, 1 (not in doubt) to 4 (cannot be "
        "corroborated) (required)",
    )
    alert.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="FILE",
        help=f"a file sealed with the alert (repeat; at most {MAX_ATTACHMENTS}, "
        f"{MAX_ATTACHMENT_BYTES // 1024} KiB each, {MAX_ATTACHMENTS_TOTAL // 1024} KiB in all)",
    )
    _header_options(alert)
    alert.add_argument(
        "--wait",
        nargs="?",
        const=ReceiptStatus.ACCEPTED.value,
        choices=[ReceiptStatus.ACCEPTED.value, ReceiptStatus.DELIVERED.value],
        help="wait until the message is accepted by our hub (the default of --wait) or "
        "delivered by every recipient's hub, or rejected; prints which (exit 4 on rejected)",
    )
    alert.add_argument(
        "--wait-timeout",
        type=seconds(),
        default=30.0,
        metavar="SECONDS",
        help="how long --wait waits (default 30)",
    )
    add_connect_timeout(alert)
    alert.set_defaults(func=cmd_send_alert)

    verify = with_profile(
        sub.add_parser(
            "verify-doc", help="ask the issuing state whether a travel document is valid"
        )
    )
    verify.description = (
        "Check the MRZ's digits here, echo the document (number, name, expiry; an expired one "
        "is flagged), then ask the issuing state's document authority and print its answer."
    )
    verify.epilog = (
        'example: ixb verify-doc --mrz LINE1 LINE2   (or --mrz "$(cat mrz.txt)": both lines '
        "pasted as one argument)"
    )
    verify.add_argument(
        "--mrz",
        nargs="+",
        required=True,
        metavar="LINE",
        help="the MRZ lines, or one argument holding them all (newline between)",
    )
    verify.add_argument("--checkpoint", help="border crossing point")
    verify.add_argument(
        "--timeout",
        type=seconds(),
        default=10.0,
        metavar="SECONDS",
        help=ANSWER_TIMEOUT_HELP.format(default=10),
    )
    verify.set_defaults(func=cmd_verify_doc)

    query = sub.add_parser("query", help="hit/no-hit queries").add_subparsers(
        dest="cmd", required=True
    )
    person = with_profile(
        query.add_parser(
            "person",
            help="does an agency hold anything? (hit with a reference, or no hit)",
            description=(
                "Ask one or more agencies at once whether they hold a record of a person."
                " Each answers hit (with its own reference, for a follow-up request) or no"
                " hit, never personal data; a query nobody answers in time waits for a"
                " person there and says when it is due. Needs a birth date or a document"
                " number besides the surname."
            ),
            epilog=(
                "example: ixb query person --to MMR/MOHA-ATTU --to MYS/RMP-ATIPSOM"
                " --surname EXAMPLE --birth-date 1990-01-31 --purpose 'trafficking"
                " investigation' --legal-basis 'ASEAN MLAT art. 1'"
            ),
        )
    )
    person.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="CC/AGENCY",
        help="the agency asked; repeat to ask several countries at once",
    )
    person.add_argument("--surname", required=True, help="family name, any script")
    person.add_argument("--given-names", help="given names, any order")
    person.add_argument("--birth-date", help="YYYY-MM-DD")
    person.add_argument("--nationality", metavar="CCC", help="ISO 3166-1 alpha-3, e.g. MMR")
    person.add_argument("--document-number", help="travel document number")
    person.add_argument(
        "--purpose", required=True, help="why you ask (recorded by the owner with the query)"
    )
    person.add_argument(
        "--legal-basis", required=True, help="the law or agreement the query rests on"
    )
    person.add_argument(
        "--timeout",
        type=seconds(),
        default=30.0,
        metavar="SECONDS",
        help=ANSWER_TIMEOUT_HELP.format(default=30),
    )
    person.set_defaults(func=cmd_query_person)

    retry = with_profile(
        send.add_parser("retry", help="send again, same id, a message whose outcome was unknown")
    )
    retry.add_argument("msg_id")
    add_connect_timeout(retry)
    retry.set_defaults(func=cmd_send_retry)

    receipts = with_profile(sub.add_parser("receipts", help="receipts for a message you sent"))
    receipts.add_argument("msg_id")
    receipts.add_argument(
        "--wait",
        type=seconds(allow_zero=True),
        default=2.0,
        metavar="SECONDS",
        help="seconds to wait for new receipts (default 2)",
    )
    add_connect_timeout(receipts)
    receipts.set_defaults(func=cmd_receipts)


SOURCE_MEANING = {
    SourceGrade.A: "no doubt of the source's authenticity, trustworthiness and competence",
    SourceGrade.B: "source mostly reliable",
    SourceGrade.C: "source mostly not reliable",
    SourceGrade.X: "source reliability cannot be assessed",
}
INFO_MEANING = {
    InfoGrade.KNOWN_TRUE: "accuracy not in doubt",
    InfoGrade.KNOWN_TO_SOURCE: "known personally to the source, not to the official passing it",
    InfoGrade.CORROBORATED: "not known personally to the source, corroborated elsewhere",
    InfoGrade.UNCORROBORATED: "not known personally to the source, cannot be corroborated",
}
GRADING_HELP = "grading (4x4):\n" + "\n".join(
    [f"  source {g.value}  {SOURCE_MEANING[g]}" for g in SourceGrade]
    + [f"  info {g.value}    {INFO_MEANING[g]}" for g in InfoGrade]
)
HANDLING_HELP = "handling codes (they travel with the information):\n" + "\n".join(
    f"  {h.value}  {h.meaning}" for h in HandlingCode
)


def _header_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--handling",
        choices=[h.value for h in HandlingCode],
        help="handling code, default H0 (law-enforcement use only), or H2 for an alert about "
        "a victim at risk, the only code it may travel under; H2 forbids onward "
        "dissemination, H3 needs --restriction",
    )
    p.add_argument("--restriction", help="H3 restriction text")
    p.add_argument(
        "--priority", choices=[x.value for x in Priority], default="normal", help="default normal"
    )
    p.add_argument("--case", help="case reference, e.g. THA-DSI-2026-0412")


# --- plumbing -------------------------------------------------------------------------


def _run(args: argparse.Namespace, body: Callable[[AgencyClient], Awaitable[int]]) -> int:
    """Connect, run ``body``; a send of unknown outcome is kept for ``ixb send retry``.

    The first connect gives up after ``--timeout`` seconds (for commands whose
    ``--timeout`` waits for an answer, after at most the default connect
    timeout), a lost connection after about as long (``reconnects_for``): either
    is one line, ``error ixb.E_IO: cannot reach nats://…: why``. Every receipt
    the client verified on the way (a request's rejection too) is kept in the
    local state, for ``ixb receipts ID``.
    """
    return _run_with_store(args, lambda client, _store: body(client))


def _run_with_store(
    args: argparse.Namespace, body: Callable[[AgencyClient, MessageStore], Awaitable[int]]
) -> int:
    """:func:`_run`, ``body`` also given the message store every received message goes to."""
    profile = load_profile(args.profile)
    secret = passphrase(confirm=False)
    key_file = open_key_file(profile, secret, wall_ms())
    previous = load_previous_for(profile, secret)
    timeout = getattr(args, "timeout", DEFAULT_CONNECT_TIMEOUT_S)
    connect_timeout = min(timeout, DEFAULT_CONNECT_TIMEOUT_S) if args.func in ANSWERING else timeout
    held = [key_file.state.identity, *([previous] if previous else [])]
    store = open_store(profile, held, wall_ms())

    async def main() -> int:
        client = await AgencyClient.connect(
            profile,
            key_file.state.identity,
            handled_path=LocalState.handled_path(profile),
            previous=previous,
            federation_state=state_path(
                Path(profile.base_dir), profile.principal.country, profile.principal.name
            ),
            key_file=key_file,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=reconnects_for(connect_timeout),
            log_connection=False,
        )
        client.keep = lambda item: _keep(store, item, client.clock())
        sent = SentLog(profile)
        client.on_sent = sent.add
        receipts = LocalState(profile)
        client.on_receipt = lambda signed: _keep_receipt(receipts, signed)
        try:
            await client.maintain_keys()  # the schedule: a command line keeps it too
            return await body(client, store)
        finally:
            sent.flush()
            receipts.close()
            await client.close()

    try:
        return eventloop.run(main())
    except UnknownOutcomeError as exc:
        raise _keep_for_retry(args, profile, exc) from None
    except BrokenPipeError:
        raise  # stdout closed (`ixb inbox | head`): not the connection
    except (nats.errors.Error, OSError) as exc:  # the connection went away mid-command
        detail = str(exc) or type(exc).__name__
        raise IoError(f"lost the connection to {profile.nats.url}: {detail}") from None
    finally:
        store.close()


def _keep(store: MessageStore, item: Incoming, now: int) -> None:
    store.keep(header=item.header, body=item.body, via=item.hubs, received_at=now)


SENT_LOG_BATCH = 256


class SentLog:
    """Requests sent and answers given in this run, into the local state in batches
    (a responder answering hundreds a second does not commit once per answer)."""

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._headers: list[Header] = []

    def add(self, header: Header) -> None:
        if header.type in REQUEST_TYPES or header.type in REPLY_TO:
            self._headers.append(header)
            if len(self._headers) >= SENT_LOG_BATCH:
                self.flush()

    def flush(self) -> None:
        if not self._headers:
            return
        state = LocalState(self._profile)
        try:
            state.record_headers(self._headers)
        finally:
            state.close()
        self._headers.clear()


def _keep_receipt(state: LocalState, signed: SignedReceipt) -> None:
    """A receipt the client just verified, into the local state at once (a responder runs
    for weeks: ``ixb receipts`` beside it must not wait for it to stop)."""
    try:
        state.record(signed)
    except (sqlite3.Error, OSError) as exc:  # the disk: the receipt stays in the client
        log.warning(
            "receipt_not_kept", msg_id=format_message_id(signed.receipt.for_id), error=str(exc)
        )


def _keep_for_retry(
    args: argparse.Namespace, profile: Profile, exc: UnknownOutcomeError
) -> UnknownOutcomeError:
    """Store the sealed envelope; the error the user sees names the command that retries it."""
    msg_id = format_message_id(exc.message_id)
    state = LocalState(profile)
    try:
        state.keep_unconfirmed(exc.sealed)
    finally:
        state.close()
    where = f" --profile {args.profile}" if args.profile else ""
    return UnknownOutcomeError(
        f"the hub did not confirm {msg_id}: it may or may not have been sent; do not send it"
        f" again as new, retry it (same id, never duplicated): ixb send retry{where} {msg_id}",
        message_id=exc.message_id,
        sealed=exc.sealed,
    )


class LocalState:
    """Receipts this agency has seen and whom it sent what, beside the profile (metadata only).

    Receipts are kept with their verified signer (``signed_receipts``; the
    unverified ``receipts`` table of earlier versions is no longer read).
    """

    def __init__(self, profile: Profile) -> None:
        path = (
            Path(profile.base_dir) / f"{profile.principal.country}-{profile.principal.name}.state"
        )
        self._db = sqlite3.connect(path)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS signed_receipts (for_id TEXT, status TEXT, signer TEXT,"
            " at INTEGER, code TEXT, detail TEXT, UNIQUE(for_id, status, signer));"
            "CREATE TABLE IF NOT EXISTS sent (id BLOB PRIMARY KEY, recipients TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS unconfirmed (id BLOB PRIMARY KEY, sealed BLOB NOT NULL);"
            # requests sent and answers given (metadata), and reminders, for `ixb overdue`
            "CREATE TABLE IF NOT EXISTS sent_headers (id BLOB PRIMARY KEY, type TEXT NOT NULL,"
            " recipients TEXT NOT NULL, created INTEGER NOT NULL, priority TEXT NOT NULL,"
            " in_reply_to BLOB);"
            "CREATE INDEX IF NOT EXISTS sent_headers_reply ON sent_headers (in_reply_to);"
            "CREATE TABLE IF NOT EXISTS reminders (for_id TEXT NOT NULL, signer TEXT NOT NULL,"
            " at INTEGER NOT NULL, due INTEGER NOT NULL, PRIMARY KEY (for_id, signer));"
        )

    @staticmethod
    def handled_path(profile: Profile) -> Path:
        """The SDK's record of handled messages (:mod:`agency_client.handled`)."""
        return (
            Path(profile.base_dir) / f"{profile.principal.country}-{profile.principal.name}.handled"
        )

    def keep_unconfirmed(self, sealed: bytes) -> None:
        """A sealed envelope (ciphertext) whose send was never confirmed, for ``send retry``."""
        header = decode_envelope(sealed).header
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO unconfirmed VALUES (?, ?)", (header.id, sealed)
            )
        self.record_sent(header.id, list(header.recipient_principals))

    def unconfirmed(self, msg_id: bytes) -> bytes | None:
        row = self._db.execute("SELECT sealed FROM unconfirmed WHERE id = ?", (msg_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def confirmed(self, msg_id: bytes) -> None:
        with self._db:
            self._db.execute("DELETE FROM unconfirmed WHERE id = ?", (msg_id,))

    def record(self, signed: SignedReceipt) -> None:
        r = signed.receipt
        with self._db:
            if r.status is ReceiptStatus.OVERDUE and r.due_ms is not None:
                self._db.execute(
                    "INSERT OR IGNORE INTO reminders VALUES (?, ?, ?, ?)",
                    (format_message_id(r.for_id), str(signed.signer), r.at_ms, r.due_ms),
                )
            self._db.executemany(
                "INSERT OR IGNORE INTO signed_receipts VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        format_message_id(i),
                        r.status.value,
                        str(signed.signer),
                        r.at_ms,
                        r.code,
                        r.detail,
                    )
                    for i in r.ids
                ],
            )

    def receipts(self, msg_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT status, signer, at, code, detail FROM signed_receipts WHERE for_id = ?"
            " ORDER BY at",
            (msg_id,),
        ).fetchall()
        names = ("status", "signer", "at", "code", "detail")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def record_sent(self, msg_id: bytes, recipients: list[Principal]) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO sent VALUES (?, ?)",
                (msg_id, json.dumps([str(p) for p in recipients])),
            )

    def record_headers(self, headers: Sequence[Header]) -> None:
        """Requests this agency sent and answers it gave (what ``ixb overdue`` reads)."""
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO sent_headers VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        h.id,
                        h.type,
                        json.dumps(list(h.recipients)),
                        h.created,
                        h.priority.value,
                        h.in_reply_to,
                    )
                    for h in headers
                    if h.type in REQUEST_TYPES or h.type in REPLY_TO
                ],
            )

    def sent_requests(self) -> list[tuple[bytes, str, list[str], int, str]]:
        """(id, type, recipients, created, priority) of requests this agency sent."""
        rows = self._db.execute(
            "SELECT id, type, recipients, created, priority FROM sent_headers ORDER BY created"
        ).fetchall()
        return [(bytes(i), t, json.loads(r), c, p) for i, t, r, c, p in rows if t in REQUEST_TYPES]

    def answers_given(self, request_id: bytes) -> list[tuple[str, list[str]]]:
        """(type, recipients) of what this agency sent naming ``request_id`` in ``in_reply_to``."""
        rows = self._db.execute(
            "SELECT type, recipients FROM sent_headers WHERE in_reply_to = ?", (request_id,)
        ).fetchall()
        return [(t, json.loads(r)) for t, r in rows]

    def reminders(self) -> dict[str, tuple[str, int, int]]:
        """Request id → (signer, reminded at, due) of each overdue reminder received."""
        rows = self._db.execute("SELECT for_id, signer, at, due FROM reminders").fetchall()
        return {f: (s, a, d) for f, s, a, d in rows}

    def load_sent(self, client: AgencyClient) -> None:
        """Hand the client the recipients of what this agency sent, to check receipts against."""
        rows = self._db.execute(
            "SELECT id, recipients FROM sent ORDER BY rowid DESC LIMIT ?", (MAX_SENT_RECORDS,)
        ).fetchall()
        for msg_id, recipients in reversed(rows):
            client.remember_sent(msg_id, [parse_principal(p) for p in json.loads(recipients)])

    def close(self) -> None:
        self._db.close()


def _when(ms: int) -> str:
    return utc_text(ms)


def _header_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "handling": HandlingCode(args.handling),
        "priority": Priority(args.priority),
        "restriction": args.restriction,
        "case_ref": args.case,
    }


# --- commands ---------------------------------------------------------------------------


def _text(args: argparse.Namespace) -> str:
    """``--text``, or the text of ``--text-file`` (``-``: stdin), at most MAX_TEXT bytes."""
    if args.text_file is None:
        return str(args.text)
    if args.text_file == "-":
        data = sys.stdin.buffer.read(MAX_TEXT + 1)
        if len(data) > MAX_TEXT:
            raise UsageError(f"--text-file -: more than {MAX_TEXT} bytes on stdin")
    else:
        data = read_bytes(Path(args.text_file), MAX_TEXT)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--text-file {args.text_file}: not UTF-8 text") from None


def _attachments(paths: list[str]) -> tuple[Attachment, ...]:
    """The ``--attach`` files, each within its limit and all within the total."""
    if len(paths) > MAX_ATTACHMENTS:
        raise UsageError(f"--attach: at most {MAX_ATTACHMENTS} files")
    out: list[Attachment] = []
    for name in paths:
        path = Path(name)
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_ATTACHMENT_BYTES + 1)
        except OSError as exc:
            raise IoError(f"--attach {name}: {exc.strerror or exc}") from None
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise UsageError(f"--attach {name}: larger than {MAX_ATTACHMENT_BYTES} bytes")
        if not data:
            raise UsageError(f"--attach {name}: empty")
        out.append(Attachment.of(path.name, data))
    total = sum(len(a.data) for a in out)
    if total > MAX_ATTACHMENTS_TOTAL:
        raise UsageError(
            f"--attach: {total} bytes in all, more than {MAX_ATTACHMENTS_TOTAL} per alert"
        )
    return tuple(out)


def cmd_send_alert(args: argparse.Namespace) -> int:
    body = Alert(
        category=AlertCategory(args.category),
        title=args.title,
        text=_text(args),
        attachments=_attachments(args.attach),
        source_grade=SourceGrade(args.source_grade),
        info_grade=InfoGrade(args.info_grade),
    )
    if args.handling is None:  # a victim's data goes only under H2 (SPEC §6)
        args.handling = VICTIM_HANDLING.value if names_victim(body) else HandlingCode.H0.value

    profile = load_profile(args.profile)

    async def go(client: AgencyClient) -> int:
        to = [parse_agency(a) for a in args.to]
        msg_id = await client.send(body, to, **_header_kwargs(args))
        state = LocalState(profile)
        try:
            state.record_sent(msg_id, to)
        finally:
            state.close()
        text = format_message_id(msg_id)
        files = "".join(
            f"\n  attached {a.name} ({len(a.data)} bytes, sha256 {a.sha256.hex()})"
            for a in body.attachments
        )
        chosen = (
            f"[{args.category}, graded {args.source_grade}{args.info_grade},"
            f" {args.handling}, {args.priority}]"
        )
        if args.wait is None or not args.json:  # --json --wait: one object, with the outcome
            emit(
                args,
                f"sent alert {text} to {', '.join(args.to)} {chosen}{files}",
                {
                    "id": text,
                    "to": args.to,
                    "category": args.category,
                    "source_grade": args.source_grade,
                    "info_grade": args.info_grade,
                    "handling": args.handling,
                    "priority": args.priority,
                    "attachments": [
                        {"name": a.name, "size": len(a.data), "sha256": a.sha256.hex()}
                        for a in body.attachments
                    ],
                },
            )
        if args.wait is None:
            return 0
        return await _wait_outcome(args, client, msg_id, ReceiptStatus(args.wait))

    return _run(args, go)


async def _wait_outcome(
    args: argparse.Namespace, client: AgencyClient, msg_id: bytes, until: ReceiptStatus
) -> int:
    """``--wait``: one line (or JSON object) saying accepted / delivered / rejected."""
    text = format_message_id(msg_id)
    receipts = await client.wait_outcome(msg_id, until, timeout=args.wait_timeout)
    rejected = receipts[0].status is ReceiptStatus.REJECTED
    outcome = ReceiptStatus.REJECTED if rejected else until
    signers = ", ".join(sorted(str(r.signer) for r in receipts))
    data: dict[str, Any] = {"id": text, "outcome": outcome.value, "signed_by": signers}
    human = f"{outcome.value} {text} (signed by {signers})"
    if rejected:
        r = receipts[0].receipt
        data |= {"code": r.code, "detail": r.detail}
        human = f"rejected {text}: {r.code} {r.detail or ''} (signed by {signers})".rstrip()
    emit(args, human, data)
    return EXIT_REJECTED if rejected else 0


def cmd_send_retry(args: argparse.Namespace) -> int:
    msg_id = parse_message_id(args.msg_id)
    text = format_message_id(msg_id)
    profile = load_profile(args.profile)
    state = LocalState(profile)
    try:
        sealed = state.unconfirmed(msg_id)
    finally:
        state.close()
    if sealed is None:
        raise UsageError(f"no unconfirmed send {text} in this agency's state")

    async def go(client: AgencyClient) -> int:
        already = await client.resend(sealed)
        state = LocalState(profile)
        try:
            state.confirmed(msg_id)
        finally:
            state.close()
        human = f"{text} {'was already stored' if already else 'sent'}: the hub has it once"
        emit(args, human, {"id": text, "already_stored": already})
        return 0

    return _run(args, go)


def _stored(m: StoredMessage) -> dict[str, Any]:
    """A stored message as ``ixb inbox``/``show``/``export`` print it."""
    return {
        "id": m.id,
        "type": m.type,
        "from": m.sender,
        "handling": m.handling,
        "restriction": m.restriction,
        "priority": m.priority,
        "case_ref": m.case_ref,
        "created": utc_iso(m.created),
        "received_at": utc_iso(m.received_at),
        "in_reply_to": m.in_reply_to,
        "via": list(m.via),
        "content": m.content,
        "body": _summarised(m.body),
    }


def _summarised(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """The body as printed: attachments by name, size and SHA-256 (``--save-attachments``
    writes their bytes), times as ISO 8601 UTC (:func:`~protocols.fields.iso_times`)."""
    if body is None:
        return None
    if body.get("attachments"):
        files = [msgspec.convert(a, Attachment) for a in body["attachments"]]
        listed = [{"name": a.name, "size": len(a.data), "sha256": a.sha256.hex()} for a in files]
        body = {**body, "attachments": listed}
    return cast("dict[str, Any]", iso_times(body))


SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
MAX_SAVED_NAME = 100


def safe_file_name(name: str) -> str:
    """A sender's file name as a plain name in the chosen directory: its last component,
    ``[A-Za-z0-9._-]`` only, no leading dot (never ``..``, never hidden)."""
    last = re.split(r"[/\\]", name)[-1]
    cleaned = SAFE_NAME.sub("_", last).lstrip(".")[:MAX_SAVED_NAME]
    return cleaned or "attachment"


def save_attachments(body: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    """Write each attachment (its SHA-256 checked again) into ``directory``, never over
    an existing file: ``name``, ``name-1``, … ; what was written where."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IoError(f"--save-attachments {directory}: {exc.strerror or exc}") from None
    saved = []
    for raw in body.get("attachments") or ():
        attachment = msgspec.convert(raw, Attachment)  # checks data against sha256
        stem, dot, ext = safe_file_name(attachment.name).partition(".")
        for n in range(1000):
            target = directory / (f"{stem}{'-' + str(n) if n else ''}{dot}{ext}")
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise IoError(f"cannot create {target}: {exc.strerror or exc}") from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(attachment.data)
            break
        else:
            raise IoError(f"{directory}: too many files named like {attachment.name!r}")
        saved.append(
            {"name": attachment.name, "path": str(target), "sha256": attachment.sha256.hex()}
        )
    return saved


_CONTENT_NOTE = {
    "expired": "content dropped (past its type's retention, profile [store])",
    "locked": "content sealed: it opens with this agency's key file only",
}


def _print_stored(d: dict[str, Any], indent: str = "") -> None:
    restriction = f" ({d['restriction']})" if d["restriction"] else ""
    case = f"  case {d['case_ref']}" if d["case_ref"] else ""
    sys.stdout.write(
        f"{indent}{d['created']}  {d['type']}  from {d['from']}  [{d['handling']}{restriction}"
        f" {d['priority']}]  id {d['id']}{case}\n"
    )
    if d["body"] is None:
        sys.stdout.write(f"{indent}    ({_CONTENT_NOTE[d['content']]})\n")
        return
    for key, value in d["body"].items():
        sys.stdout.write(f"{indent}    {key}: {value}\n")


def parse_since(text: str) -> int:
    """An ISO 8601 date or date-time (UTC unless it names an offset), in ms."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since {text!r}: not an ISO 8601 date or time (2026-11-01, 2026-11-01T08:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def cmd_inbox(args: argparse.Namespace) -> int:
    if args.max < 1:
        raise UsageError(f"--max {args.max}: at least 1")
    since = None if args.since is None else parse_since(args.since)
    profile = load_profile(args.profile)

    async def go(client: AgencyClient, store: MessageStore) -> int:
        state = LocalState(profile)
        state.load_sent(client)
        refused: list[dict[str, Any]] = []
        fetched = 0
        try:
            async for item in client.inbox(idle_timeout=args.wait):
                if isinstance(item, Refused):
                    refused.append(
                        {
                            "refused": item.error.code,
                            "id": item.message_id,
                            "detail": item.error.detail,
                        }
                    )
                    continue
                if isinstance(item.body, Receipt):
                    state.record(SignedReceipt(item.body, item.sender, item.hubs))
                else:
                    fetched += 1
                await item.ack()  # stored first (the client's keep), then acknowledged
                if fetched >= args.max:
                    break
        finally:
            state.close()
        if args.all or since is not None:
            listed = store.since(since or 0)
        else:
            listed = store.unseen(args.max)
        if not args.no_read_receipt:
            await _read_receipts(client, [m for m in listed if not m.seen])
        store.mark_seen(listed)
        if args.json:
            emit(args, "", {"messages": [_stored(m) for m in listed], "refused": refused})
            return 0
        shown = [*refused, *(_stored(m) for m in listed)]
        if not shown:
            sys.stdout.write("inbox empty\n" if not args.all else "no stored messages\n")
        for d in shown:
            if "refused" in d:
                sys.stdout.write(f"REFUSED {d['id'] or '-'}: {d['refused']} {d['detail']}\n")
                continue
            _print_stored(d)
        return 0

    return _run_with_store(args, go)


async def _read_receipts(client: AgencyClient, shown: Sequence[StoredMessage]) -> None:
    """Tell each sender its message was read: once, when ``ixb inbox`` first lists it.

    Listing, not fetching, is the read: another process of this agency (``ixb agency
    respond``, ``ixb queue list``) may have fetched it into the store first. A receipt
    that cannot be sent (its sender revoked since) is logged, not an error: the listing
    stands.
    """
    for m in shown:
        try:
            await client.send_read(parse_message_id(m.id), parse_principal(m.sender))
        except IxbError as exc:
            log.warning("read_receipt_not_sent", msg_id=m.id, code=exc.code)


def _local_store(profile: Profile) -> MessageStore:
    """The store for reading without connecting: content opens if the key file is there."""
    key_path = profile.path(profile.agency.key_file)
    if not key_path.exists():
        return open_store(profile, [], wall_ms())  # metadata only
    secret = passphrase(confirm=False)
    identities = [load_identity_for(profile, secret)]
    previous = load_previous_for(profile, secret)
    return open_store(profile, identities + ([previous] if previous else []), wall_ms())


def cmd_show(args: argparse.Namespace) -> int:
    msg_id = format_message_id(parse_message_id(args.msg_id))
    profile = load_profile(args.profile)
    store = _local_store(profile)
    try:
        found = store.get(msg_id)
        if not found:
            raise UsageError(f"no stored message {msg_id} (ixb inbox fetches what arrived)")
        message = found[0]
        thread = store.thread(message)
    finally:
        store.close()
    state = LocalState(profile)
    try:
        receipts = state.receipts(msg_id)
    finally:
        state.close()
    shown = {
        **_stored(message),
        "receipts": [{**r, "at": utc_iso(r["at"])} for r in receipts],
        "thread": [_stored(m) for m in thread],
    }
    if args.save_attachments is not None:
        if message.body is None:
            raise UsageError(f"{msg_id}: its content is not readable here ({message.content})")
        shown["saved"] = save_attachments(message.body, args.save_attachments)
    if args.json:
        emit(args, "", shown)
        return 0
    _print_stored(shown)
    sys.stdout.write(f"  received {shown['received_at']} via {', '.join(shown['via'])}\n")
    if shown["in_reply_to"]:
        sys.stdout.write(f"  in reply to {shown['in_reply_to']}\n")
    for r in shown["receipts"]:
        sys.stdout.write(f"  receipt {r['at']}  {r['status']} signed by {r['signer']}\n")
    for f in shown.get("saved", ()):
        sys.stdout.write(f"  saved {f['name']} as {f['path']} (sha256 {f['sha256']}, checked)\n")
    if thread:
        sys.stdout.write(f"  thread ({len(thread)} more):\n")
    for d in shown["thread"]:
        _print_stored(d, indent="    ")
    return 0


EXPORT_CSV_COLUMNS = (
    "id",
    "type",
    "from",
    "created",
    "received_at",
    "case_ref",
    "in_reply_to",
    "handling",
    "restriction",
    "priority",
    "via",
    "content",
    "text",
)


def _csv_text(body: dict[str, Any] | None) -> str:
    if body is None:
        return ""
    text = body.get("text")
    return text if isinstance(text, str) else json.dumps(body, ensure_ascii=False)


def cmd_export(args: argparse.Namespace) -> int:
    since = 0 if args.since is None else parse_since(args.since)
    profile = load_profile(args.profile)
    store = _local_store(profile)
    try:
        rows = [_stored(m) for m in store.since(since)]
    finally:
        store.close()
    if args.out is None and args.json:  # the rows are the one JSON object
        if args.format != "json":
            raise UsageError("--json with --format csv: give --out FILE for the CSV")
        emit(args, "", {"messages": rows})
        return 0
    if args.format == "json":
        data = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(EXPORT_CSV_COLUMNS)
        for r in rows:
            flat = {**r, "via": " ".join(r["via"]), "text": _csv_text(r["body"])}
            writer.writerow(["" if flat[c] is None else flat[c] for c in EXPORT_CSV_COLUMNS])
        data = buf.getvalue()
    if args.out is None:
        sys.stdout.write(data)
        return 0
    try:  # never over an existing file; readable by its owner only
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"--out {args.out}: exists; not overwritten") from None
    except OSError as exc:
        raise IoError(f"cannot create {args.out}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(data)
    emit(
        args,
        f"exported {len(rows)} messages to {args.out}",
        {"file": str(args.out), "format": args.format, "messages": len(rows)},
    )
    return 0


def _document_authority(client: AgencyClient, issuing_state: str) -> Principal:
    country = ICAO_TO_ISO.get(issuing_state, issuing_state)
    if issuing_state in ICAO_EXTRA_CODES and country == issuing_state:
        raise UnknownRecipientError(f"{issuing_state} is not a state in the federation")
    now = client.clock()
    for agency in client.keys.agencies(country) if client.keys.version(country) else ():
        if Role.DOCUMENT_AUTHORITY in client.keys.roles(agency, now):
            return agency
    raise UnknownRecipientError(f"no document authority of {country} in the federation")


ANSWERING: tuple[Callable[[argparse.Namespace], int], ...] = ()
"""Commands whose ``--timeout`` waits for an answer (set below)."""


def cmd_verify_doc(args: argparse.Namespace) -> int:
    today = datetime.now(UTC).date()
    mrz = parse_mrz(split_lines(args.mrz), today=today)  # check digits before sending
    request = DocVerifyRequest(
        mrz=tuple(mrz.lines), purpose=DocPurpose.BORDER_CHECK, checkpoint=args.checkpoint
    )

    async def go(client: AgencyClient) -> int:
        authority = _document_authority(client, mrz.issuing_state)
        # the synchronous path (SPEC §14): answered in milliseconds, or queued for a person
        answer = await client.lookup(
            request, authority, timeout=args.timeout, priority=Priority.URGENT
        )
        summary = document_summary(mrz, today)
        if isinstance(answer, Queued):
            human = f"{document_line(mrz, today)}\n{authority}: {answer.describe(client.clock())}"
            emit(args, human, {"authority": str(authority), **_queued(answer), **summary})
            return 0
        body = msgspec.to_builtins(answer.body)
        fields = ", ".join(body.get("mismatched_fields", []))
        human = f"{authority}: {body['status']}" + (f" ({fields})" if fields else "")
        if body.get("note"):
            human += f" — {body['note']}"
        if "checked_ms" in body:
            body["checked"] = utc_iso(body.pop("checked_ms"))
        if body.get("officer"):  # a person answered, maybe hours later: say who and when
            human += f" (checked {body.get('checked', '-')} by {body['officer']})"
        human = f"{document_line(mrz, today)}\n{human}"
        emit(args, human, {"authority": str(authority), **body, **summary})
        return 0

    return _run(args, go)


def _queued(q: Queued) -> dict[str, object]:
    return {
        "state": "queued",
        "request_id": format_message_id(q.message_id),
        "owner": str(q.owner),  # where it waits for a person
        "by": str(q.by),
        "due": utc_iso(q.due_ms),
    }


def cmd_query_person(args: argparse.Namespace) -> int:
    query = PersonQuery(
        surname=args.surname,
        given_names=args.given_names,
        birth_date=args.birth_date,
        nationality=args.nationality,
        document_number=args.document_number,
        purpose=args.purpose,
        legal_basis=args.legal_basis,
    )

    async def go(client: AgencyClient) -> int:
        # every country at once, each over the synchronous path (SPEC §14)
        answers = await client.lookup_each(query, args.to, timeout=args.timeout)
        results: list[dict[str, object]] = []
        lines: list[str] = []
        for to, answer in answers.items():
            if isinstance(answer, IxbError):
                results.append({"agency": str(to), "error": answer.code, "detail": answer.detail})
                lines.append(f"{to}: {answer.one_line()}")
            elif isinstance(answer, Queued):
                results.append({"agency": str(to), **_queued(answer)})
                lines.append(f"{to}: {answer.describe(client.clock())}")
            elif isinstance(answer.body, PersonResult):
                hit = answer.body.hit
                results.append(
                    {
                        "agency": str(to),
                        "hit": hit,
                        "reference": answer.body.reference,
                        "answer_id": answer.message_id,
                    }
                )
                ref = answer.body.reference
                lines.append(f"{to}: {'HIT, reference ' + str(ref) if hit else 'no hit'}")
            else:
                raise UnknownRecipientError(f"{to} answered with {answer.header.type}")
        failed = [a for a in answers.values() if isinstance(a, IxbError)]
        if failed and len(failed) == len(answers):
            if not args.json:  # each agency's line; with --json the error is the one object
                sys.stdout.write("\n".join(lines) + "\n")
            raise failed[0]
        emit(args, "\n".join(lines), {"results": results})
        return 0

    return _run(args, go)


ANSWERING = (cmd_verify_doc, cmd_query_person)


async def take_receipts(client: AgencyClient, state: LocalState, wait: float) -> None:
    """Record the receipts waiting in the inbox; anything else stays there for ``ixb inbox``.

    A receipt its signer may not make is refused by the client, never recorded."""
    for item in await client.fetch(timeout=wait):
        if isinstance(item, Incoming) and isinstance(item.body, Receipt):
            state.record(SignedReceipt(item.body, item.sender, item.hubs))
            await item.ack()
        elif isinstance(item, Incoming):
            await item.leave()


def cmd_receipts(args: argparse.Namespace) -> int:
    msg_id = format_message_id(parse_message_id(args.msg_id))
    profile = load_profile(args.profile)

    async def go(client: AgencyClient) -> int:
        state = LocalState(profile)
        state.load_sent(client)
        try:
            await take_receipts(client, state, args.wait)
            rows = state.receipts(msg_id)
        finally:
            state.close()
        human = (
            "\n".join(
                f"{_when(r['at'])}  {r['status']:<9} signed by {r['signer']}"
                + (f"  {r['code']}: {r['detail']}" if r["code"] else "")
                + (f"  ({r['detail']})" if r["detail"] and not r["code"] else "")
                for r in rows
            )
            or f"no receipts for {msg_id} yet"
        )
        emit(args, human, {"id": msg_id, "receipts": [{**r, "at": utc_iso(r["at"])} for r in rows]})
        return 0

    return _run(args, go)


def respond_source(args: argparse.Namespace, profile: Profile) -> DocumentSource | None:
    """``--registry``/``--documents``, else the profile's source, else the embedded SQLite
    file if ``ixb registry load`` made one (None: this responder answers no document check)."""
    base = Path(profile.base_dir)
    if args.documents is not None:
        return DocumentRegistry.load(args.documents)
    spec = args.registry or profile.registry.source
    if spec is not None:
        return open_source(spec, base)
    p = profile.principal
    default = default_registry_path(base, p.country, p.name)
    return SqliteRegistry(default) if default.exists() else None


async def start_serving(
    client: AgencyClient,
    handlers: Mapping[str, Callable[[AgencyClient, Incoming], Awaitable[None]]],
    stop: asyncio.Event,
    concurrency: int,
) -> asyncio.Task[None]:
    """``client.serve`` started; returns once the hub can reach it (a lookup from then on
    is answered, not queued), or raises what ended it before that."""
    ready = asyncio.Event()
    serving = asyncio.create_task(
        client.serve(handlers, stop, concurrency=concurrency, ready=ready)
    )
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if serving.done():
        serving.result()  # its error, if it failed before it was ready
    return serving


def cmd_respond(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    registry = respond_source(args, profile)
    if registry is None and args.index is None:
        raise UsageError(
            "agency respond: give --registry (or load one: ixb registry load FILE), --index or both"
        )
    ask_human = UnknownPolicy(args.unknown or profile.registry.unknown) is UnknownPolicy.ASK_HUMAN
    book = AnswerBook(store_path(profile))

    async def answer(client: AgencyClient, item: Incoming) -> None:
        if not isinstance(item.body, DocVerifyRequest) or registry is None:
            return
        now = client.clock()
        today = datetime.fromtimestamp(now / 1000, UTC).date()
        response = answer_check(registry, item.body, today=today, now_ms=now)
        if response.status is DocStatus.UNKNOWN and ask_human:
            log.info("queued_for_person", msg_id=item.message_id, type=item.header.type)
            return
        answer_id = await client.reply(item, response, priority=Priority.URGENT)
        if item._msg is not None:
            # from the inbox, so kept in the store: recorded as answered, or the queue would
            # list it (a lookup answered on the synchronous path is never stored: no write)
            book.record(
                item.header.sender, item.message_id, AUTOMATED, format_message_id(answer_id), now
            )

    async def for_a_person(_client: AgencyClient, item: Incoming) -> None:
        log.info("queued_for_person", msg_id=item.message_id, type=item.header.type)

    handlers: dict[str, Callable[[AgencyClient, Incoming], Awaitable[None]]] = {
        DocVerifyRequest.TYPE: for_a_person if registry is None else answer,
        PersonQuery.TYPE: for_a_person,
    }

    async def go(client: AgencyClient) -> int:
        responder = None if args.index is None else PersonResponder(client, args.index)
        if responder is not None:
            handlers[PersonQuery.TYPE] = responder
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        answering = [t for t, h in handlers.items() if h is not for_a_person]
        queued = [t for t, h in handlers.items() if h is for_a_person]
        if ask_human and registry is not None:
            queued.append(f"{DocVerifyRequest.TYPE} (unknown)")
        what = {"doc.verify.request": "document checks", "person.query": "person queries"}
        serving = await start_serving(client, handlers, stop, args.concurrency)
        emit(
            args,
            f"{client.principal}: answering {' and '.join(what[t] for t in answering)}"
            + (f"; waiting for a person (ixb queue list): {', '.join(queued)}" if queued else ""),
            {
                "agency": str(client.principal),
                "answering": answering,
                "queued_for_a_person": queued,
            },
        )
        sys.stdout.flush()  # said once the hub can reach us: a lookup from now on is answered
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        finally:
            if responder is not None:
                responder.close()
        return 0

    try:
        return _run(args, go)
    finally:
        book.close()
