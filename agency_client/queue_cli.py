"""``ixb queue``: document checks and person queries that wait for a person at the owner.

``list`` fetches what arrived into the local store (unless ``--offline``)
and lists the requests not yet answered, with when each is due (the
header's priority: urgent 8 h, high 3 days, normal 7 days). ``answer``
sends one person's answer over the durable path, once: a second answer to
the same request is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agency_client.commands import LocalState, _run_with_store
from agency_client.humanqueue import AnswerBook, QueueEntry
from agency_client.msgstore import MessageStore, StoredMessage, open_store, store_path
from agency_client.profile import Profile, load_profile
from agency_client.sdk import AgencyClient, Refused, SignedReceipt
from protocols.errors import IxbError, SchemaError, UnknownOutcomeError, UsageError
from protocols.fields import utc_iso, utc_text
from protocols.handling import Priority
from protocols.identifiers import format_message_id, parse_agency, parse_message_id
from protocols.messages import (
    AnsweredBy,
    Body,
    DocField,
    DocStatus,
    DocVerifyRequest,
    DocVerifyResponse,
    PersonQuery,
    PersonResult,
    Receipt,
)
from transport.cliargs import add_connect_timeout, seconds
from transport.cliout import add_json, emit
from transport.clock import wall_ms

HUMAN_STATUSES = [s.value for s in DocStatus]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = sub.add_parser(
        "queue", help="requests waiting for a person's answer (document checks, person queries)"
    ).add_subparsers(dest="cmd", required=True)

    def with_profile(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
        return add_json(p)

    listing = with_profile(
        queue.add_parser(
            "list",
            help="requests received and not answered yet, with when each is due",
            description="Fetches what arrived into the local store (like ixb inbox, without "
            "read receipts), then lists every document check and person query not answered "
            "yet: id, from, type, received, and when it is due (urgent 8 h, high 3 days, "
            "normal 7 days after it was sent).",
        )
    )
    listing.add_argument(
        "--wait",
        type=seconds(allow_zero=True),
        default=1.0,
        metavar="SECONDS",
        help="seconds to wait for new messages (default 1)",
    )
    listing.add_argument(
        "--offline", action="store_true", help="list the local store only: do not connect"
    )
    add_connect_timeout(listing)
    listing.set_defaults(func=cmd_queue_list)

    answer = with_profile(
        queue.add_parser(
            "answer",
            help="answer a queued request (once)",
            epilog="examples:\n"
            "  ixb queue answer ID --status revoked --note 'cancelled 2026-10-02'\n"
            "  ixb queue answer ID --status data_mismatch --mismatch birth_date sex\n"
            "  ixb queue answer ID --hit MYS-RMP-2024-000417\n"
            "  ixb queue answer ID --no-hit",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    answer.add_argument("msg_id", metavar="ID")
    answer.add_argument("--status", choices=HUMAN_STATUSES, help="a document check's answer")
    answer.add_argument(
        "--mismatch",
        nargs="+",
        default=[],
        choices=[f.value for f in DocField],
        metavar="FIELD",
        help="with --status data_mismatch: the fields that differ "
        f"({', '.join(f.value for f in DocField)})",
    )
    answer.add_argument("--note", help="a short note sent with a document check's answer")
    hit = answer.add_mutually_exclusive_group()
    hit.add_argument("--hit", metavar="REF", help="a person query's hit, with its reference")
    hit.add_argument("--no-hit", action="store_true", help="a person query's no hit")
    answer.add_argument("--officer", help="who answers (default: the profile's [queue] officer)")
    add_connect_timeout(answer)
    answer.set_defaults(func=cmd_queue_answer)


def _entry_line(entry: QueueEntry, now: int) -> str:
    m = entry.message
    return (
        f"{m.id}  {m.type:<18}  from {m.sender}  received {utc_text(m.received_at)}"
        f"  [{m.priority}] {entry.due_text(now)}"
    )


def _listing(args: argparse.Namespace, profile: Profile, store: MessageStore) -> int:
    now = wall_ms()
    book = AnswerBook(store_path(profile))
    try:
        entries = book.queued(store)
    finally:
        book.close()
    human = "\n".join(_entry_line(e, now) for e in entries) or "queue empty"
    emit(args, human, {"queue": [e.to_json(now) for e in entries]})
    return 0


def cmd_queue_list(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    if args.offline:
        store = open_store(profile, [], wall_ms())  # metadata is all a listing needs
        try:
            return _listing(args, profile, store)
        finally:
            store.close()

    async def go(client: AgencyClient, store: MessageStore) -> int:
        state = LocalState(profile)
        state.load_sent(client)
        try:
            async for item in client.inbox(idle_timeout=args.wait):
                if isinstance(item, Refused):
                    continue  # ixb inbox reports refusals; they never reach the store
                if isinstance(item.body, Receipt):
                    state.record(SignedReceipt(item.body, item.sender, item.hubs))
                await item.ack()  # stored first (the client's keep), then acknowledged
        finally:
            state.close()
        return _listing(args, profile, store)

    return _run_with_store(args, go)


def _answer_body(args: argparse.Namespace, request: StoredMessage, officer: str | None) -> Body:
    try:
        return _build_answer(args, request, officer)
    except SchemaError as exc:  # the arguments do not make a valid answer: the user's to fix
        raise UsageError(exc.detail) from None


def _build_answer(args: argparse.Namespace, request: StoredMessage, officer: str | None) -> Body:
    if request.type == DocVerifyRequest.TYPE:
        if args.hit is not None or args.no_hit:
            raise UsageError(f"{request.id} is a document check: answer it with --status")
        if args.status is None:
            raise UsageError(f"{request.id} is a document check: say --status")
        if officer is None:
            raise UsageError("name the officer: --officer NAME, or [queue] officer in the profile")
        return DocVerifyResponse(
            status=DocStatus(args.status),
            answered_by=AnsweredBy.HUMAN,
            checked_ms=wall_ms(),
            mismatched_fields=tuple(DocField(f) for f in dict.fromkeys(args.mismatch)),
            officer=officer,
            note=args.note,
        )
    if request.type == PersonQuery.TYPE:
        if args.status is not None or args.mismatch or args.note is not None:
            raise UsageError(
                f"{request.id} is a person query: answer it with --hit REF or --no-hit"
            )
        if args.hit is None and not args.no_hit:
            raise UsageError(f"{request.id} is a person query: say --hit REF or --no-hit")
        return PersonResult(hit=args.hit is not None, reference=args.hit)
    raise UsageError(f"{request.id} is a {request.type}, not a request the queue answers")


def cmd_queue_answer(args: argparse.Namespace) -> int:
    msg_id = format_message_id(parse_message_id(args.msg_id))
    profile = load_profile(args.profile)
    officer = args.officer or profile.queue.officer
    meta = open_store(profile, [], wall_ms())  # who sent it and how urgent: no key needed
    try:
        found = meta.get(msg_id)
    finally:
        meta.close()
    if not found:
        raise UsageError(f"no stored message {msg_id} (ixb queue list fetches what arrived)")
    request = found[0]
    body = _answer_body(args, request, officer)  # the arguments fit, before anything is sent
    by = officer or "person"
    book = AnswerBook(store_path(profile))
    book.claim(request.sender, request.id, by, wall_ms())  # a second answer stops here

    async def go(client: AgencyClient) -> int:
        answer_id = await client.send(
            body,
            [parse_agency(request.sender)],
            in_reply_to=parse_message_id(request.id),
            case_ref=request.case_ref,
            priority=Priority(request.priority),
        )
        book.sent(request.sender, request.id, format_message_id(answer_id))
        shown: dict[str, Any] = {
            "id": request.id,
            "to": request.sender,
            "type": body.TYPE,
            "answer_id": format_message_id(answer_id),
            "by": by,
            "answered": utc_iso(wall_ms()),
        }
        if isinstance(body, DocVerifyResponse):
            shown["status"] = body.status.value
            shown["mismatched_fields"] = [f.value for f in body.mismatched_fields]
            what = body.status.value
        else:
            assert isinstance(body, PersonResult)  # noqa: S101 - _answer_body's two kinds
            shown["hit"] = body.hit
            shown["reference"] = body.reference
            what = f"hit {body.reference}" if body.hit else "no hit"
        emit(
            args,
            f"answered {request.id} from {request.sender}: {what} "
            f"(by {by}; answer {shown['answer_id']})",
            shown,
        )
        return 0

    try:
        return _run_with_store(args, lambda client, _store: go(client))
    except UnknownOutcomeError:
        raise  # it may have been sent: the claim stays, ixb send retry sends the same answer
    except (IxbError, OSError):
        book.release(request.sender, request.id)  # certainly not sent: back in the queue
        raise
    finally:
        book.close()
