"""``ixb followup …`` and ``ixb mla …``: follow-up decisions and MLA requests, as people act.

Follow-up: after a hit, the requester asks the owner for the data
(``followup request``); at the owner a named officer decides (``followup
decide``): approve or partially approve, releasing text under a handling code,
or refuse with a reason. Nothing is released any other way.

MLA: central authorities send requests (``mla request``) and move them
through the state machine (``mla status``); both sides see the history
(``mla show``) and what is open (``mla list``). A status the state machine or
the sender's side does not allow is refused here, before connecting.

State lives in :mod:`agency_client.casework`; received messages reach it from
the message store that ``ixb inbox`` fills.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agency_client.casework import (
    DECIDING,
    FOLLOWUP,
    MLA,
    NEW,
    OWNER,
    PENDING,
    REQUESTER,
    Case,
    Casework,
    Event,
    check_mla_sender,
    followup_is_open,
    mla_is_open,
)
from agency_client.commands import LocalState, _run_with_store, parse_since
from agency_client.keystore import passphrase
from agency_client.msgstore import MessageStore, open_store, store_path
from agency_client.profile import Profile, load_profile
from agency_client.sdk import AgencyClient, load_identity_for, load_previous_for
from protocols.errors import TransitionError, UnknownOutcomeError, UsageError
from protocols.fields import duration_text, utc_iso, utc_text
from protocols.handling import HandlingCode, Priority, answer_deadline_ms
from protocols.identifiers import format_message_id, parse_agency, parse_message_id
from protocols.limits import MAX_TEXT, MS_PER_DAY, MS_PER_HOUR
from protocols.messages import (
    Decision,
    FollowupDecision,
    FollowupRequest,
    MlaMeasure,
    MlaRequest,
    MlaStatus,
    MlaStatusCode,
    PersonResult,
    check_mla_transition,
)
from transport.cliargs import add_connect_timeout
from transport.cliout import add_json, emit
from transport.clock import wall_ms
from transport.files import read_bytes

DECISIONS = {
    "approve": Decision.APPROVED,
    "partial": Decision.PARTIALLY_APPROVED,
    "refuse": Decision.REFUSED,
}
RELEASE_HANDLING = (HandlingCode.H1, HandlingCode.H2, HandlingCode.H3)
DEFAULT_RELEASE_HANDLING = HandlingCode.H2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_followup(sub)
    _register_mla(sub)


def _leaf(  # noqa: PLR0917 - each leaf's words, in the order they are read
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    description: str,
    example: str,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=textwrap.fill(description, width=78),
        epilog="example: " + example,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", type=Path, help="agency profile (default: $IXB_PROFILE)")
    add_json(p)
    p.set_defaults(func=func)
    return p


def _text_option(
    p: argparse.ArgumentParser, name: str, what: str, *, required: bool, file: str | None = None
) -> None:
    """``--NAME TEXT`` or ``--NAME-file FILE`` (or ``--FILE``), one of them."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument(f"--{name}", help=what)
    group.add_argument(
        f"--{file or name + '-file'}",
        dest=name.replace("-", "_") + "_file",
        metavar="FILE",
        help=f"{what}, from FILE (UTF-8), or '-' for stdin",
    )


def _register_followup(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "followup",
        help="follow-up requests after a hit, and the owner's decisions",
        description="After a hit, ask the owning agency for the data (request); at the owner "
        "a named officer decides (list, decide). Nothing is released without that decision.",
    ).add_subparsers(dest="cmd", required=True)

    request = _leaf(
        group,
        "request",
        "ask the owner of a hit for the data behind it",
        "Send a follow-up request to the agency that answered a person query with a hit. "
        "--hit names the stored hit (ixb inbox / ixb query person show its id): the owner, "
        "the reference and the case come from it.",
        "ixb followup request --hit 0b6f…  --legal-basis 'MLA treaty art. 4' "
        "--purpose 'trafficking investigation THA-DSI-2026-0412' --text 'identity and "
        "travel history of the subject'",
        cmd_followup_request,
    )
    request.add_argument("--hit", metavar="MSG_ID", help="the stored person.result hit")
    request.add_argument("--to", help="the owning agency, e.g. MYS/RMP-ATIPSOM")
    request.add_argument("--reference", help="the hit's reference")
    request.add_argument("--legal-basis", required=True, help="why you may ask (required)")
    request.add_argument("--purpose", required=True, help="what the data is for (required)")
    _text_option(request, "text", "what is asked for", required=True)
    request.add_argument(
        "--priority",
        choices=[p.value for p in Priority],
        default=Priority.NORMAL.value,
        help="urgent: answer within 8 h, high: 3 days, normal: 7 days (default normal)",
    )
    request.add_argument("--case", help="case reference (default: the hit's)")
    add_connect_timeout(request)

    listing = _leaf(
        group,
        "list",
        "follow-up requests waiting for a decision here (or --sent: your own)",
        "At the owner: the follow-up requests received and not yet decided, with who asked, "
        "when, for what purpose, on what legal basis and when the answer is due. Reads the "
        "local store: ixb inbox fetches what arrived.",
        "ixb followup list      ixb followup list --sent      ixb followup list --all",
        cmd_followup_list,
    )
    listing.add_argument(
        "--sent", action="store_true", help="the requests this agency sent, with their state"
    )
    listing.add_argument("--all", action="store_true", help="decided requests too")

    decide = _leaf(
        group,
        "decide",
        "decide a follow-up request, as a named officer",
        "Approve (release data under a handling code), partially approve (a reason is "
        "required) or refuse (a reason is required; nothing is released). A request is "
        f"decided once. The release travels under --handling (default "
        f"{DEFAULT_RELEASE_HANDLING.value}: no onward dissemination without consent).",
        "ixb followup decide 0b6f… approve --officer 'Insp. Aziz' --release-file release.txt "
        "--handling H2\n         ixb followup decide 0b6f… refuse --officer 'Insp. Aziz' "
        "--reason 'no legal basis for this purpose'",
        cmd_followup_decide,
    )
    decide.add_argument("request_id", metavar="ID", help="the follow-up request's id")
    decide.add_argument("decision", choices=list(DECISIONS))
    decide.add_argument("--officer", required=True, help="who decides (required)")
    decide.add_argument("--reason", help="required to refuse or partially approve")
    _text_option(decide, "release-text", "the data released", required=False, file="release-file")
    decide.add_argument(
        "--handling",
        choices=[h.value for h in RELEASE_HANDLING],
        help=f"handling code of the release (default {DEFAULT_RELEASE_HANDLING.value}); "
        "H3 needs --restriction",
    )
    decide.add_argument("--restriction", help="the H3 restriction text")
    add_connect_timeout(decide)


def _register_mla(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "mla",
        help="mutual legal assistance requests between central authorities",
        description="Send MLA requests, move them through their states and follow them. "
        "The requested authority sets received, acknowledged, in_execution, executed, "
        "partially_executed or refused; the requesting authority may only withdraw.",
    ).add_subparsers(dest="cmd", required=True)

    request = _leaf(
        group,
        "request",
        "send an MLA request to another central authority",
        "Send a mutual legal assistance request. --urgency sets the answer deadline "
        "(urgent 8 h, high 3 days, normal 7 days) unless --deadline names one.",
        "ixb mla request --to MYS/AGC --legal-basis 'ASEAN MLAT art. 1' --measure bank_records "
        "--measure witness_testimony --summary-file case.txt --contact 'DSI desk +66 2 …' "
        "--urgency high",
        cmd_mla_request,
    )
    request.add_argument("--to", required=True, help="the requested central authority")
    request.add_argument("--legal-basis", required=True, help="treaty or law (required)")
    request.add_argument(
        "--measure",
        action="append",
        required=True,
        choices=[m.value for m in MlaMeasure],
        help="a measure requested (repeat)",
    )
    _text_option(request, "summary", "the case summary", required=True)
    request.add_argument("--contact", required=True, help="who to contact about it (required)")
    request.add_argument(
        "--authority", help="the requesting authority's name (default: this agency's id)"
    )
    when = request.add_mutually_exclusive_group()
    when.add_argument(
        "--urgency",
        choices=[p.value for p in Priority],
        help="urgent: 8 h, high: 3 days, normal: 7 days (default normal)",
    )
    when.add_argument("--deadline", metavar="WHEN", help="answer due by WHEN (ISO 8601, UTC)")
    request.add_argument("--case", help="case reference, e.g. THA-OAG-MLA-2026-031")
    add_connect_timeout(request)

    status = _leaf(
        group,
        "status",
        "move an MLA request to its next state (tells the other side)",
        "The requested authority moves a request received → acknowledged → in_execution → "
        "executed or partially_executed, or refuses it (--reason required) while it is open; "
        "the requesting authority may withdraw it while it is open. Anything else is "
        "refused here, before anything is sent.",
        "ixb mla status 5d1c… acknowledged --note 'assigned to prosecutor Lim'",
        cmd_mla_status,
    )
    status.add_argument("request_id", metavar="ID", help="the MLA request's id")
    status.add_argument("status", choices=[s.value for s in MlaStatusCode])
    status.add_argument("--note", help="a note for the other side")
    status.add_argument("--reason", help="why (required to refuse)")
    add_connect_timeout(status)

    listing = _leaf(
        group,
        "list",
        "MLA requests sent and received, with state and age",
        "Every MLA request this authority sent or received: state, age, due time and how many "
        "received statuses were flagged. Reads the local store (ixb inbox fetches).",
        "ixb mla list --open",
        cmd_mla_list,
    )
    listing.add_argument("--open", action="store_true", help="only those not yet final")

    show = _leaf(
        group,
        "show",
        "an MLA request and its history of states",
        "The request and every state it went through, with when and who; a received status "
        "the state machine does not allow is shown FLAGGED and was not applied.",
        "ixb mla show 5d1c…",
        cmd_mla_show,
    )
    show.add_argument("request_id", metavar="ID", help="the MLA request's id")


# --- plumbing ----------------------------------------------------------------------------


def _read_text(args: argparse.Namespace, name: str) -> str | None:
    """``--NAME`` or the file of its file option (``-``: stdin), at most MAX_TEXT bytes."""
    attr = name.replace("-", "_")
    text: str | None = getattr(args, attr)
    path: str | None = getattr(args, attr + "_file")
    if path is None:
        return text
    if path == "-":
        data = sys.stdin.buffer.read(MAX_TEXT + 1)
        if len(data) > MAX_TEXT:
            raise UsageError(f"--{name} from stdin: more than {MAX_TEXT} bytes")
    else:
        data = read_bytes(Path(path), MAX_TEXT)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


@contextmanager
def _local(profile: Profile) -> Iterator[Casework]:
    """The casework state, synced with the message store (the key file opens both)."""
    secret = passphrase(confirm=False)
    identities = [load_identity_for(profile, secret)]
    previous = load_previous_for(profile, secret)
    identities += [previous] if previous else []
    store = open_store(profile, identities, wall_ms())
    casework = Casework(store_path(profile), identities)
    try:
        casework.sync(store)
        yield casework
    finally:
        casework.close()
        store.close()


@contextmanager
def _synced(client: AgencyClient, store: MessageStore, profile: Profile) -> Iterator[Casework]:
    casework = Casework(store_path(profile), [client.identity])
    try:
        casework.sync(store)
        yield casework
    finally:
        casework.close()


def _metadata_only(profile: Profile) -> Casework:
    """The casework state without keys: states and sides, for checks before connecting."""
    return Casework(store_path(profile), [])


def _record_sent(profile: Profile, msg_id: bytes, to: str) -> None:
    state = LocalState(profile)
    try:
        state.record_sent(msg_id, [parse_agency(to)])
    finally:
        state.close()


async def _sent(send: Awaitable[bytes], record: Callable[[bytes], None]) -> bytes:
    """Await ``send`` and ``record`` the message id. A send of unknown outcome is recorded
    too: its sealed envelope is kept, and ``ixb send retry`` sends that very message."""
    try:
        msg_id = await send
    except UnknownOutcomeError as exc:
        record(exc.message_id)
        raise
    record(msg_id)
    return msg_id


def _case_id(text: str) -> str:
    return format_message_id(parse_message_id(text))


def _due_text(due: int | None, now: int, is_open: bool) -> str:
    if due is None or not is_open:
        return ""
    if due < now:
        return f"OVERDUE by {duration_text(now - due)}"
    return f"due in {duration_text(due - now)}"


def _case_data(case: Case, now: int, history: list[Event] | None = None) -> dict[str, Any]:
    is_open = followup_is_open(case.state) if case.kind == FOLLOWUP else mla_is_open(case.state)
    data: dict[str, Any] = {
        "id": case.id,
        "kind": case.kind,
        "direction": "sent" if case.side == REQUESTER else "received",
        "peer": case.peer,
        "state": case.state,
        "open": is_open,
        "created": utc_iso(case.created),
        "updated": utc_iso(case.updated),
        "age_s": max(0, now - case.created) // 1000,
        "due": None if case.due is None else utc_iso(case.due),
        "overdue": bool(is_open and case.due is not None and case.due < now),
        "priority": case.priority,
        "case_ref": case.case_ref,
        **{k: v for k, v in case.details.items() if k != "deadline_ms"},
    }
    if history is not None:
        data["history"] = [_event_data(e) for e in history]
        data["flagged"] = sum(1 for e in history if e.flagged)
    return data


def _event_data(e: Event) -> dict[str, Any]:
    return {
        "at": utc_iso(e.at),
        "state": e.state,
        "by": e.by,
        "msg_id": e.msg_id,
        "flagged": e.flagged,
        **e.details,
    }


def _event_line(e: Event) -> str:
    extra = "".join(f"  {k}: {v}" for k, v in e.details.items())
    line = f"  {utc_text(e.at)}  {e.state:<18} by {e.by}{extra}"
    return line + (f"\n      FLAGGED, not applied: {e.flagged}" if e.flagged else "")


# --- follow-up ---------------------------------------------------------------------------------


def cmd_followup_request(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    text = _read_text(args, "text") or ""
    if args.hit is None and (args.to is None or args.reference is None):
        raise UsageError("followup request: give --hit MSG_ID, or both --to and --reference")
    hit_id = None if args.hit is None else parse_message_id(args.hit)
    if args.reference is not None:  # checked before connecting
        FollowupRequest(
            reference=args.reference,
            legal_basis=args.legal_basis,
            purpose=args.purpose,
            requested=text,
        )

    async def go(client: AgencyClient, store: MessageStore) -> int:
        to, reference, case_ref = args.to, args.reference, args.case
        if hit_id is not None:
            hits = [
                m
                for m in store.get(format_message_id(hit_id))
                if m.type == PersonResult.TYPE and m.body is not None and m.body.get("hit")
            ]
            if not hits:
                raise UsageError(f"--hit {args.hit}: no stored hit with that id (ixb inbox)")
            hit, hit_body = hits[0], hits[0].body or {}
            if to is not None and parse_agency(to) != parse_agency(hit.sender):
                raise UsageError(f"--to {to}: the hit came from {hit.sender}")
            to, reference = hit.sender, reference or hit_body["reference"]
            case_ref = case_ref or hit.case_ref
        body = FollowupRequest(
            reference=reference, legal_basis=args.legal_basis, purpose=args.purpose, requested=text
        )
        priority = Priority(args.priority)
        now = client.clock()
        due = answer_deadline_ms(now, priority)
        peer = str(parse_agency(to))

        def opened(msg_id: bytes) -> None:
            case_id = format_message_id(msg_id)
            with _synced(client, store, profile) as casework:
                casework.open_case(
                    kind=FOLLOWUP,
                    case_id=case_id,
                    side=REQUESTER,
                    peer=peer,
                    created=now,
                    due=due,
                    state=PENDING,
                    by=str(client.principal),
                    case_ref=case_ref,
                    priority=priority.value,
                    details={
                        "reference": reference,
                        "legal_basis": args.legal_basis,
                        "purpose": args.purpose,
                    },
                    msg_key=f"{client.principal} {case_id}",
                )

        send = client.send(body, [to], priority=priority, case_ref=case_ref, in_reply_to=hit_id)
        msg_id = await _sent(send, opened)
        _record_sent(profile, msg_id, to)
        case_id = format_message_id(msg_id)
        emit(
            args,
            f"sent follow-up request {case_id} to {to} (reference {reference}, "
            f"answer due {utc_text(due)})",
            {
                "id": case_id,
                "to": to,
                "reference": reference,
                "due": utc_iso(due),
                "case_ref": case_ref,
                "state": PENDING,
            },
        )
        return 0

    return _run_with_store(args, go)


def cmd_followup_list(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    now = wall_ms()
    with _local(profile) as casework:
        side = REQUESTER if args.sent else OWNER
        cases = [
            c
            for c in casework.cases(FOLLOWUP, side)
            if args.sent or args.all or followup_is_open(c.state)
        ]
        rows = [_case_data(c, now, casework.history(FOLLOWUP, c.id)) for c in cases]
    key = "sent" if args.sent else "requests"
    lines = []
    for case, r in zip(cases, rows, strict=True):
        who = f"to {r['peer']}" if args.sent else f"from {r['peer']}"
        state = r["state"].replace("_", " ")
        decided = [e for e in r["history"] if e["state"] not in (PENDING, DECIDING)]
        if decided and not decided[-1]["flagged"]:
            state += f" by {decided[-1]['by']}"
        due = _due_text(case.due, now, r["open"])
        lines.append(f"{r['id']}  {who}  {utc_text(case.created)}  [{state}]  {due}".rstrip())
        lines.append(
            f"    purpose: {r.get('purpose', '?')}; legal basis: {r.get('legal_basis', '?')};"
            f" reference: {r.get('reference', '?')}"
        )
    empty = "no follow-up requests sent" if args.sent else "no follow-up requests waiting"
    emit(args, "\n".join(lines) or empty, {key: rows})
    return 0


def _decision(args: argparse.Namespace) -> tuple[FollowupDecision, HandlingCode, str | None]:
    """The decision as typed, refused here (before connecting) when it is not complete."""
    decision = DECISIONS[args.decision]
    release = _read_text(args, "release-text")
    if decision is Decision.REFUSED:
        if release is not None or args.handling is not None:
            raise UsageError("followup decide refuse: a refusal releases nothing (no --release-*)")
        if not args.reason:
            raise UsageError("followup decide refuse: --reason is required")
        handling = HandlingCode.H0
    else:
        if not release:
            raise UsageError(
                f"followup decide {args.decision}: --release-text or --release-file is required"
            )
        if decision is Decision.PARTIALLY_APPROVED and not args.reason:
            raise UsageError("followup decide partial: --reason is required (what is withheld)")
        handling = HandlingCode(args.handling or DEFAULT_RELEASE_HANDLING)
    if (handling is HandlingCode.H3) != bool(args.restriction):
        raise UsageError("--restriction goes with --handling H3, and H3 needs it")
    body = FollowupDecision(
        decision=decision, decided_by=args.officer, reason=args.reason, released=release
    )
    return body, handling, args.restriction


def cmd_followup_decide(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    case_id = _case_id(args.request_id)
    body, handling, restriction = _decision(args)
    early = _metadata_only(profile)
    try:
        known = early.case(FOLLOWUP, case_id)
        if known is not None and known.side == OWNER and known.state != PENDING:
            early.claim_decision(case_id)  # raises: decided already, with by whom
    finally:
        early.close()

    async def go(client: AgencyClient, store: MessageStore) -> int:
        with _synced(client, store, profile) as casework:
            case = casework.claim_decision(case_id)

            def decided(msg_id: bytes) -> None:
                casework.record(
                    FOLLOWUP,
                    case_id,
                    at=client.clock(),
                    state=body.decision.value,
                    by=args.officer,
                    msg_id=format_message_id(msg_id),
                    sender=str(client.principal),
                    expected=DECIDING,
                    details={"reason": body.reason} if body.reason else {},
                )

            try:
                msg_id = await client.send(
                    body,
                    [case.peer],
                    in_reply_to=parse_message_id(case_id),
                    case_ref=case.case_ref,
                    handling=handling,
                    restriction=restriction,
                )
            except UnknownOutcomeError as exc:  # sealed, kept for `ixb send retry`: decided
                decided(exc.message_id)
                raise
            except BaseException:
                casework.unclaim(case_id)  # nothing went: it can be decided again
                raise
            _record_sent(profile, msg_id, case.peer)
            decided(msg_id)
        released = "" if body.released is None else f", released under {handling.value}"
        emit(
            args,
            f"follow-up {case_id}: {body.decision.value} by {args.officer}{released}; "
            f"decision {format_message_id(msg_id)} sent to {case.peer}",
            {
                "id": case_id,
                "decision": body.decision.value,
                "decided_by": args.officer,
                "handling": handling.value,
                "released": body.released is not None,
                "decision_id": format_message_id(msg_id),
                "to": case.peer,
            },
        )
        return 0

    return _run_with_store(args, go)


# --- MLA ------------------------------------------------------------------------------------


def _mla_priority(args: argparse.Namespace, now: int) -> tuple[Priority, int]:
    """The header priority and the deadline: from --urgency, or the tier --deadline falls in."""
    if args.deadline is None:
        priority = Priority(args.urgency or Priority.NORMAL.value)
        return priority, answer_deadline_ms(now, priority)
    try:
        deadline = parse_since(args.deadline)
    except UsageError:
        raise UsageError(
            f"--deadline {args.deadline!r}: not an ISO 8601 date or time (2026-12-24T18:00)"
        ) from None
    if deadline <= now:
        raise UsageError(f"--deadline {args.deadline}: in the past")
    left = deadline - now
    if left <= 8 * MS_PER_HOUR:
        return Priority.URGENT, deadline
    return (Priority.HIGH if left <= 3 * MS_PER_DAY else Priority.NORMAL), deadline


def cmd_mla_request(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    to = str(parse_agency(args.to))
    summary = _read_text(args, "summary") or ""
    priority, deadline = _mla_priority(args, wall_ms())
    body = MlaRequest(
        legal_basis=args.legal_basis,
        requesting_authority=args.authority or str(profile.principal),
        case_summary=summary,
        measures=tuple(MlaMeasure(m) for m in dict.fromkeys(args.measure)),
        contact=args.contact,
        deadline_ms=deadline,
    )

    async def go(client: AgencyClient, store: MessageStore) -> int:
        now = client.clock()

        def opened(msg_id: bytes) -> None:
            case_id = format_message_id(msg_id)
            with _synced(client, store, profile) as casework:
                casework.open_case(
                    kind=MLA,
                    case_id=case_id,
                    side=REQUESTER,
                    peer=to,
                    created=now,
                    due=deadline,
                    state=NEW,
                    by=str(client.principal),
                    case_ref=args.case,
                    priority=priority.value,
                    details={
                        "legal_basis": body.legal_basis,
                        "requesting_authority": body.requesting_authority,
                        "measures": [m.value for m in body.measures],
                        "contact": body.contact,
                    },
                    msg_key=f"{client.principal} {case_id}",
                )

        send = client.send(body, [to], priority=priority, case_ref=args.case)
        msg_id = await _sent(send, opened)
        _record_sent(profile, msg_id, to)
        case_id = format_message_id(msg_id)
        emit(
            args,
            f"sent MLA request {case_id} to {to} ({', '.join(args.measure)}; {priority.value},"
            f" due {utc_text(deadline)})",
            {
                "id": case_id,
                "to": to,
                "priority": priority.value,
                "due": utc_iso(deadline),
                "measures": [m.value for m in body.measures],
                "state": NEW,
            },
        )
        return 0

    return _run_with_store(args, go)


def _check_status(case: Case | None, case_id: str, new: MlaStatusCode) -> MlaStatusCode | None:
    """The current state of ``case`` if ``new`` may follow it from this side; else the error."""
    if case is None:
        raise TransitionError(
            f"no MLA request {case_id} here (ixb inbox fetches what arrived; ixb mla list)"
        )
    check_mla_sender(case.side, new)
    current = None if case.state == NEW else MlaStatusCode(case.state)
    check_mla_transition(current, new)
    return current


def cmd_mla_status(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    case_id = _case_id(args.request_id)
    new = MlaStatusCode(args.status)
    if new is MlaStatusCode.REFUSED and not args.reason:
        raise UsageError("mla status refused: --reason is required")
    early = _metadata_only(profile)
    try:  # refused before connecting when the state here says so (synced again before sending)
        known = early.case(MLA, case_id)
        if known is not None:
            _check_status(known, case_id, new)
    finally:
        early.close()

    async def go(client: AgencyClient, store: MessageStore) -> int:
        with _synced(client, store, profile) as casework:
            case = casework.case(MLA, case_id)
            current = _check_status(case, case_id, new)
            assert case is not None  # noqa: S101 - _check_status raised otherwise
            body = MlaStatus(status=new, previous=current, note=args.note, reason=args.reason)
            details = {k: v for k, v in (("note", args.note), ("reason", args.reason)) if v}

            def moved(msg_id: bytes) -> None:
                casework.record(
                    MLA,
                    case_id,
                    at=client.clock(),
                    state=new.value,
                    by=str(client.principal),
                    msg_id=format_message_id(msg_id),
                    sender=str(client.principal),
                    expected=case.state,
                    details=details,
                )

            send = client.send(
                body, [case.peer], in_reply_to=parse_message_id(case_id), case_ref=case.case_ref
            )
            msg_id = await _sent(send, moved)
            _record_sent(profile, msg_id, case.peer)
        was = current.value if current else NEW
        emit(
            args,
            f"MLA request {case_id}: {was} → {new.value}, told {case.peer}",
            {
                "id": case_id,
                "previous": current.value if current else None,
                "status": new.value,
                "status_id": format_message_id(msg_id),
                "to": case.peer,
            },
        )
        return 0

    return _run_with_store(args, go)


def cmd_mla_list(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    now = wall_ms()
    with _local(profile) as casework:
        cases = [c for c in casework.cases(MLA) if not args.open or mla_is_open(c.state)]
        rows = [_case_data(c, now, casework.history(MLA, c.id)) for c in cases]
    lines = []
    for case, r in zip(cases, rows, strict=True):
        way = f"sent to {r['peer']}" if r["direction"] == "sent" else f"from {r['peer']}"
        flagged = f"  [{r['flagged']} flagged]" if r["flagged"] else ""
        due = _due_text(case.due, now, r["open"])
        lines.append(
            f"{r['id']}  {way}  {r['state']:<18} age {duration_text(r['age_s'] * 1000)}"
            f"  {due}{flagged}".rstrip()
        )
    empty = "no open MLA requests" if args.open else "no MLA requests"
    emit(args, "\n".join(lines) or empty, {"requests": rows})
    return 0


def cmd_mla_show(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    case_id = _case_id(args.request_id)
    now = wall_ms()
    with _local(profile) as casework:
        case = casework.case(MLA, case_id)
        if case is None:
            raise UsageError(f"no MLA request {case_id} here (ixb inbox fetches what arrived)")
        history = casework.history(MLA, case_id)
    data = _case_data(case, now, history)
    way = f"sent to {case.peer}" if case.side == REQUESTER else f"received from {case.peer}"
    due = _due_text(case.due, now, data["open"])
    head = [
        f"MLA request {case_id}  {way}  state {case.state}  {due}".rstrip(),
        f"  legal basis: {data.get('legal_basis', '?')}; measures: "
        f"{', '.join(data.get('measures', [])) or '?'}; contact: {data.get('contact', '?')}",
        "  history:",
    ]
    emit(args, "\n".join(head + [_event_line(e) for e in history]), data)
    return 0
