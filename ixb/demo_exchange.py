"""The demo's exchange of every message type, each step the command a person types.

Every step is an ``ixb`` command in its own process, run with the profile of
the agency acting: the officer who sends an alert, the recipients reading it,
the border officer checking a passport, the issuing state's officer answering
what its registry cannot decide, the analyst asking about a person, the
owner's officer deciding a follow-up, the central authorities moving an MLA
request. The automated services (MYS's document responder, MMR's person-index
responder) are ``ixb agency respond`` processes of their own. Only forwarding
a received alert has no command; that one refusal uses the SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agency_client.docregistry import DocumentRecord
from agency_client.sdk import due_phrase
from ixb.demo_script import Ran, Script, expect_rejection
from protocols.examples import example_bodies
from protocols.fields import duration_text
from protocols.handling import HandlingCode
from protocols.identifiers import parse_message_id
from protocols.messages import Alert, DocStatus
from protocols.mrz import build_td3
from transport.clock import wall_ms

CASE = "THA-DSI-2026-0412"
MLA_CASE = "THA-OAG-MLA-2026-031"
ALERT_TO = ("MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU")
MMR_REF = "MMR-ATTU-2026-000112"
"""The hit reference MMR's anti-trafficking unit answers the demo's person query with."""
PERSONS_EXPORT = f"""reference,surname,given_names,birth_date,nationality,document_number
{MMR_REF},Sample,Narong,1981-03-14,THA,
MMR-ATTU-2026-000113,Nguyễn,Văn An,1990-04,VNM,C1234567
MMR-ATTU-2026-000114,EXAMPLE,Aung Aung,1985,MMR,MA123456
"""
"""MMR's person index (invented persons): the demo's query hits the first row."""
MYS_OFFICER = "Insp. EXAMPLE-AZIZ, MYS immigration"
MMR_OFFICER = "Insp. EXAMPLE-OFFICER, badge 0000"


@dataclass(frozen=True)
class Specimen:
    """An invented MYS passport: its registry record and its MRZ."""

    number: str
    surname: str
    given_names: str
    birth_date: str
    sex: str
    expiry_date: str
    status: DocStatus = DocStatus.VALID

    @property
    def undecided(self) -> bool:
        """What MYS's responder leaves to a person (``--unknown ask_human``)."""
        return self.status is DocStatus.UNKNOWN

    def record(self) -> DocumentRecord:
        return DocumentRecord(
            document_number=self.number,
            issuing_state="MYS",
            surname=self.surname,
            given_names=self.given_names,
            birth_date=self.birth_date,
            expiry_date=self.expiry_date,
            nationality="MYS",
            sex=self.sex,
            status=self.status,
        )

    def mrz(self) -> tuple[str, str]:
        return build_td3(
            issuing_state="MYS",
            surname=self.surname,
            given_names=self.given_names,
            document_number=self.number,
            nationality="MYS",
            birth_date=self.birth_date[2:].replace("-", ""),
            sex=self.sex,
            expiry_date=self.expiry_date[2:].replace("-", ""),
        )


SPECIMENS = {
    "valid": Specimen("A12345678", "SAMPLE", "SITI AMINAH", "1990-01-01", "F", "2031-01-01"),
    "reported stolen": Specimen(
        "A87654321", "EXAMPLE", "AHMAD", "1985-06-15", "M", "2030-06-15",
        DocStatus.REPORTED_STOLEN,
    ),
    # status unknown: the responder leaves these to a person (the second stays in the queue)
    "under review": Specimen(
        "A24681357", "SPECIMEN", "NUR", "1992-03-12", "F", "2032-03-12", DocStatus.UNKNOWN
    ),
    "under review too": Specimen(
        "A13572468", "SPECIMEN", "FARID", "1988-07-05", "M", "2033-07-05", DocStatus.UNKNOWN
    ),
}  # fmt: skip
"""MYS's passport registry export, by what the registry says of each."""
REGISTRY = [specimen.record() for specimen in SPECIMENS.values()]
VALID_PASSPORT = SPECIMENS["valid"].mrz()
STOLEN_PASSPORT = SPECIMENS["reported stolen"].mrz()
UNDECIDED_PASSPORT = SPECIMENS["under review"].mrz()
WAITING_PASSPORT = SPECIMENS["under review too"].mrz()
BAD_CHECK_DIGIT = (
    VALID_PASSPORT[0],
    VALID_PASSPORT[1][:9] + str((int(VALID_PASSPORT[1][9]) + 1) % 10) + VALID_PASSPORT[1][10:],
)
"""The valid passport with its document number's check digit mistyped."""


async def exchange(s: Script) -> None:
    await alert(s)
    await document_checks(s)
    hit_id = await person_query(s)
    await followup(s, hit_id)
    await mla(s)
    await overdue(s)
    await refusals(s)


def _due_in(iso: object) -> str:
    """``due in 7 h 59 min`` (as the commands say it) for an ISO 8601 UTC time one printed."""
    if not isinstance(iso, str):
        return "due ?"
    return due_phrase(int(datetime.fromisoformat(iso).timestamp() * 1000), wall_ms())


def _of(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


# --- alert -----------------------------------------------------------------------------


async def _listed(
    s: Script,
    agency: str,
    args: tuple[str, ...],
    *,
    key: str,
    ids: Sequence[str],
    line: Callable[[dict[str, Any]], str],
    what: str,
) -> list[dict[str, Any]]:
    """``ixb ARGS --json`` at ``agency`` until its list under ``key`` holds ``ids``; shown,
    and checked to hold them (``what``)."""
    listing = await s.cmd_until(agency, args, lambda d: {e["id"] for e in _of(d, key)} >= set(ids))
    rows = _of(listing.json(), key)
    s.show(listing, *(line(e) for e in rows))
    s.check({e["id"] for e in rows} >= set(ids), what)
    return rows


async def alert(s: Script) -> None:
    example = example_bodies(wall_ms())["alert"]
    assert isinstance(example, Alert)  # noqa: S101 - the examples' own type
    title = example.title
    s.say(f"ALERT  THA/DSI-ATHD → {', '.join(ALERT_TO)}  [H2, urgent]")
    sent = await s.cmd(
        "THA/DSI-ATHD",
        "send", "alert", *(x for a in ALERT_TO for x in ("--to", a)),
        "--title", title, "--text", example.text or title,
        "--category", "trafficking", "--source-grade", "B", "--info-grade", "2",
        "--handling", "H2", "--priority", "urgent", "--case", CASE,
        "--wait", "delivered",
    )  # fmt: skip
    data = sent.json()
    s.alert_id = str(data.get("id", ""))
    s.show(
        sent, f"{data.get('outcome', sent.error)} {s.alert_id}: signed by {data.get('signed_by')}"
    )
    s.check(sent.ok and data.get("outcome") == "delivered", "alert delivered to every recipient")

    # each recipient reads it on its own machine (MMR's responder may have fetched it first)
    reads = await asyncio.gather(
        *(s.inbox_until(agency, lambda m: m.get("id") == s.alert_id) for agency in ALERT_TO)
    )
    for agency, (ran, got) in zip(ALERT_TO, reads, strict=True):
        body = (got[0].get("body") or {}) if got else {}
        via = " → ".join(got[0]["via"]) if got else ""
        s.show(
            ran,
            f"alert from THA/DSI-ATHD via {via}: verified, decrypted; read receipt sent"
            if got
            else f"no alert: {s.missing(ran)}",
        )
        s.check(bool(got) and body.get("title") == title, f"alert read at {agency}")

    def all_read(d: dict[str, Any]) -> bool:
        return {r["signer"] for r in _of(d, "receipts") if r["status"] == "read"} >= set(ALERT_TO)

    receipts = await s.cmd_until("THA/DSI-ATHD", ("receipts", s.alert_id, "--wait", "1"), all_read)
    by_status: dict[str, list[str]] = {}
    for r in _of(receipts.json(), "receipts"):
        by_status.setdefault(r["status"], []).append(r["signer"])
    s.show(
        receipts,
        *(f"{st:<9} signed by {', '.join(sorted(by))}" for st, by in by_status.items()),
    )
    for status in ("accepted", "relayed", "delivered", "read"):
        s.check(status in by_status, f"alert {status} receipt")
    s.check(all_read(receipts.json()), "read receipts from both recipients")


# --- document checks ---------------------------------------------------------------------


async def document_checks(s: Script) -> None:
    s.say(
        "DOC CHECKS  THA/IMMIGRATION → MYS/IMMIGRATION: its registry answers at once,"
        " a person what the registry cannot decide"
    )

    def verify(mrz: Sequence[str], checkpoint: str) -> Any:
        return s.cmd("THA/IMMIGRATION", "verify-doc", "--mrz", *mrz, "--checkpoint", checkpoint)

    valid, stolen, undecided, waiting, bad = await asyncio.gather(
        verify(VALID_PASSPORT, "SADAO"),
        verify(STOLEN_PASSPORT, "SADAO"),
        verify(UNDECIDED_PASSPORT, "SADAO"),
        verify(WAITING_PASSPORT, "BKK-AIRPORT"),
        verify(BAD_CHECK_DIGIT, "SADAO"),
    )
    for label, ran, expected in (
        ("valid passport", valid, "valid"),
        ("stolen passport", stolen, "reported_stolen"),
    ):
        d = ran.json()
        s.show(ran, f"{label}: answer: {d.get('status', ran.error)} ({d.get('answered_by')})")
        s.check(ran.ok and d.get("status") == expected, f"doc check {label}")
    queued: list[str] = []
    for label, ran in (("record under review", undecided), ("another one", waiting)):
        d = ran.json()
        where = f"queued at {d.get('owner')}, {_due_in(d.get('due'))}"
        s.show(ran, f"{label}: {where if d.get('state') == 'queued' else ran.error}")
        s.check(ran.ok and d.get("state") == "queued", f"doc check {label} queued for a person")
        queued.append(str(d.get("request_id")))
    s.show(bad, f"a mistyped check digit: refused here, nothing sent: {bad.error}")
    code = bad.error_code() or ""
    s.check(not bad.ok and code.startswith("ixb.E_MRZ"), "a bad check digit refused locally")

    # MYS's officer lists what waits for a person and answers the first
    await _listed(
        s,
        "MYS/IMMIGRATION",
        ("queue", "list"),
        key="queue",
        ids=queued,
        line=lambda e: (
            f"{e['id']}  {e['type']} from {e['from']} [{e['priority']}] {_due_in(e['due'])}"
        ),
        what="both checks in MYS's human queue",
    )
    answered = await s.cmd(
        "MYS/IMMIGRATION",
        "queue", "answer", queued[0], "--status", "valid", "--officer", MYS_OFFICER,
        "--note", "record confirmed with the issuing office",
    )  # fmt: skip
    a = answered.json()
    s.show(
        answered,
        f"answered {a.get('status', answered.error)} by {a.get('by')}; sent to {a.get('to')}",
    )
    s.expect_ok(answered, "queue answer at MYS/IMMIGRATION")
    ran, got = await s.inbox_until(
        "THA/IMMIGRATION",
        lambda m: m.get("type") == "doc.verify.response" and m.get("in_reply_to") == queued[0],
    )
    body = (got[0].get("body") or {}) if got else {}
    s.show(
        ran,
        f"THA/IMMIGRATION reads MYS's answer: {body.get('status')} "
        f"({body.get('answered_by')}, by {body.get('officer')})"
        if got
        else f"no answer: {s.missing(ran)}",
        f"the other check waits in MYS/IMMIGRATION's queue: {queued[1]}",
    )
    s.check(body.get("status") == "valid" and body.get("officer") == MYS_OFFICER, "person's answer")


# --- person query ----------------------------------------------------------------------------

QUERY = (
    "--purpose", "EXAMPLE: trafficking in persons investigation",
    "--legal-basis", "EXAMPLE: Anti-Trafficking in Persons Act B.E. 2551, section 27",
)  # fmt: skip


async def person_query(s: Script) -> str:
    """The hit's answer id (THA's stored ``person.result``), for the follow-up."""
    s.say("PERSON QUERY  THA/DSI-ATHD → MMR/MOHA-ATTU and MYS/RMP-ATIPSOM at once (hit/no-hit)")
    held, unknown = await asyncio.gather(
        s.cmd(
            "THA/DSI-ATHD",
            "query", "person", "--to", "MMR/MOHA-ATTU", "--to", "MYS/RMP-ATIPSOM",
            "--surname", "SAMPLE", "--given-names", "NARONG", "--birth-date", "1981-03-14",
            *QUERY,
        ),
        s.cmd(
            "THA/DSI-ATHD",
            "query", "person", "--to", "MMR/MOHA-ATTU",
            "--surname", "NOBODY", "--given-names", "KNOWN", "--birth-date", "1981-03-14",
            *QUERY,
        ),
    )  # fmt: skip
    results = {r.get("agency"): r for r in _of(held.json(), "results")}
    mmr, mys = results.get("MMR/MOHA-ATTU", {}), results.get("MYS/RMP-ATIPSOM", {})
    s.show(
        held,
        f"a person MMR holds: HIT, reference {mmr.get('reference')}"
        if mmr.get("hit")
        else f"MMR/MOHA-ATTU: {mmr or held.error}",
        f"MYS/RMP-ATIPSOM (no automated index): queued at {mys.get('owner')},"
        f" {_due_in(mys.get('due'))}"
        if mys.get("state") == "queued"
        else f"MYS/RMP-ATIPSOM: {mys or held.error}",
    )
    s.check(mmr.get("hit") is True and mmr.get("reference") == MMR_REF, "MMR's hit")
    s.check(mys.get("state") == "queued", "the query waits for a person at MYS")
    none = _of(unknown.json(), "results")
    s.show(
        unknown,
        "a person it does not: no hit"
        if none and none[0].get("hit") is False
        else f"a person it does not: {none or unknown.error}",
    )
    s.check(bool(none) and none[0].get("hit") is False, "MMR's no hit")

    listed = await s.cmd("MMR/MOHA-ATTU", "index", "queries")
    queries = _of(listed.json(), "queries")
    s.show(
        listed,
        f"MMR's record: {len(queries)} queries by "
        f"{', '.join(sorted({q['requester'] for q in queries}))}, each with its time, purpose"
        " and legal basis; the terms only as keyed hashes",
    )
    s.check(sorted(q["hit"] for q in queries) == [False, True], "MMR's record of the queries")
    return str(mmr.get("answer_id", ""))


# --- follow-up ---------------------------------------------------------------------------------


async def followup(s: Script, hit_id: str) -> None:
    s.say(
        "FOLLOW-UP  THA/DSI-ATHD asks MMR/MOHA-ATTU for the data behind the hit;"
        " a named officer decides"
    )

    def request(purpose: str, basis: str, text: str) -> Any:
        return s.cmd(
            "THA/DSI-ATHD",
            "followup", "request", "--hit", hit_id, "--legal-basis", basis,
            "--purpose", purpose, "--text", text, "--case", CASE,
        )  # fmt: skip

    approve, refuse = await asyncio.gather(
        request(
            "EXAMPLE: identify the recruiter's contacts in Kedah",
            "EXAMPLE: ASEAN MLAT 2004, police-to-police cooperation",
            "Known addresses, phone numbers and vehicles held on the person.",
        ),
        request(
            "EXAMPLE: background check for a job application",
            "EXAMPLE: none given",
            "Everything held on the person.",
        ),
    )
    ids = [str(r.json().get("id")) for r in (approve, refuse)]
    for ran in (approve, refuse):
        d = ran.json()
        s.show(
            ran,
            f"sent {d.get('id', ran.error)} (reference {d.get('reference')}),"
            f" {_due_in(d.get('due'))}",
        )
        s.expect_ok(ran, "followup request")

    await _listed(
        s,
        "MMR/MOHA-ATTU",
        ("followup", "list"),
        key="requests",
        ids=ids,
        line=lambda r: (
            f"{r['id']} from {r['peer']}: purpose {r.get('purpose')!r}, {_due_in(r.get('due'))}"
        ),
        what="both follow-ups waiting at MMR",
    )
    decided = await asyncio.gather(
        s.cmd(
            "MMR/MOHA-ATTU",
            "followup", "decide", ids[0], "approve", "--officer", MMR_OFFICER,
            "--release-text", "EXAMPLE: last known address Jalan Contoh 1, Alor Setar.",
            "--handling", "H2",
        ),
        s.cmd(
            "MMR/MOHA-ATTU",
            "followup", "decide", ids[1], "refuse", "--officer", MMR_OFFICER,
            "--reason", "no legal basis for this purpose",
        ),
    )  # fmt: skip
    for ran in decided:
        d = ran.json()
        s.show(
            ran, f"{d.get('decision', ran.error)} by {d.get('decided_by')} [{d.get('handling')}]"
        )
        s.expect_ok(ran, "followup decide")

    ran, got = await s.inbox_until(
        "THA/DSI-ATHD",
        lambda m: m.get("type") == "followup.decision" and m.get("in_reply_to") in ids,
        count=2,
    )
    lines = []
    for m in sorted(got, key=lambda m: ids.index(m["in_reply_to"])):
        b = m.get("body") or {}
        why = f": {b.get('reason')}" if b.get("reason") else f", released under {m.get('handling')}"
        lines.append(f"decision: {b.get('decision')} by {b.get('decided_by')}{why}")
    s.show(ran, *(lines or [f"no decision: {s.missing(ran)}"]))
    sent = await s.cmd("THA/DSI-ATHD", "followup", "list", "--sent")
    states = {r["id"]: r["state"] for r in _of(sent.json(), "sent")}
    s.show(sent, ", ".join(f"{i} {states.get(i)}" for i in ids))
    s.check([states.get(i) for i in ids] == ["approved", "refused"], "THA sees both decisions")


# --- MLA -----------------------------------------------------------------------------------------


async def mla(s: Script) -> None:
    s.say("MLA REQUEST  THA/OAG → MYS/AGC; MYS/AGC moves it through its states")
    sent = await s.cmd(
        "THA/OAG",
        "mla", "request", "--to", "MYS/AGC",
        "--legal-basis", "ASEAN Treaty on Mutual Legal Assistance in Criminal Matters (2004)",
        "--measure", "bank_records", "--measure", "freeze_assets",
        "--summary", "EXAMPLE - fictional case. Recruitment of fishing crew by deception.",
        "--contact", "central.authority@example.invalid", "--urgency", "high",
        "--case", MLA_CASE,
    )  # fmt: skip
    d = sent.json()
    case = str(d.get("id", ""))
    s.show(
        sent,
        f"sent {case or sent.error} ({', '.join(d.get('measures', []))}; {_due_in(d.get('due'))})",
    )
    s.expect_ok(sent, "mla request")
    ran, got = await s.inbox_until("MYS/AGC", lambda m: m.get("id") == case)
    s.show(
        ran,
        f"mla.request from {got[0]['from']} [{got[0]['priority']}]"
        if got
        else f"no request: {s.missing(ran)}",
    )
    s.check(bool(got), "MYS/AGC received the MLA request")

    async def status(code: str, *extra: str) -> Ran:
        ran = await s.cmd("MYS/AGC", "mla", "status", case, code, *extra)
        d = ran.json()
        outcome = (
            f"{d.get('previous') or 'new'} → {d['status']}"
            if ran.ok
            else f"refused here: {ran.error}"
        )
        s.show(ran, outcome)
        return ran

    s.expect_ok(await status("received"), "mla status received")
    illegal = await status("executed")
    s.check(illegal.error_code() == "ixb.E_TRANSITION", "received → executed refused locally")
    s.expect_ok(
        await status("acknowledged", "--note", "assigned to the financial unit"), "acknowledged"
    )
    s.expect_ok(await status("in_execution"), "mla status in_execution")

    ran, got = await s.inbox_until(
        "THA/OAG", lambda m: m.get("type") == "mla.status" and m.get("in_reply_to") == case, count=3
    )
    statuses = [f"mla.status {(m.get('body') or {}).get('status')} from {m['from']}" for m in got]
    s.show(ran, *statuses, *([] if len(got) == 3 else [f"not all three: {s.missing(ran)}"]))
    s.check(len(got) == 3, "THA/OAG received the three statuses")
    lists = await asyncio.gather(*(s.cmd(a, "mla", "list") for a in ("THA/OAG", "MYS/AGC")))
    for ran in lists:
        rows = [r for r in _of(ran.json(), "requests") if r["id"] == case]
        r = rows[0] if rows else {}
        way = "sent to" if r.get("direction") == "sent" else "from"
        s.show(
            ran,
            f"{case} {way} {r.get('peer')}: {r.get('state')},"
            f" age {duration_text(1000 * r.get('age_s', 0))},"
            f" {_due_in(r.get('due'))}",
        )
        s.check(r.get("state") == "in_execution", "the MLA case in execution at both sides")


# --- overdue --------------------------------------------------------------------------------------


async def overdue(s: Script) -> None:
    s.say(
        "OVERDUE  what THA waits for: nothing is overdue yet;"
        " the open requests with when they are due"
    )
    agencies = ("THA/DSI-ATHD", "THA/IMMIGRATION")
    runs = await asyncio.gather(*(s.cmd(a, "overdue", "--open") for a in agencies))
    for agency, ran in zip(agencies, runs, strict=True):
        d = ran.json()
        late = _of(d, "asked") + _of(d, "asked_of_me")
        still = _of(d, "open")
        s.show(
            ran,
            f"{len(late)} overdue; open:"
            + "".join(
                f" {r['type']} to {', '.join(r['counterpart'])} due in {r['due_in']};"
                for r in still
            ).rstrip(";"),
        )
        s.check(ran.ok and bool(still), f"{agency}'s open requests listed")


# --- refusals -------------------------------------------------------------------------------------


async def refusals(s: Script) -> None:
    s.say("REFUSALS (each answered with a signed rejection receipt, or refused before sealing)")
    # ixb send has no way to forward a received alert: forwarding is the SDK's send(forward_of=…)
    mys = await s.client("MYS/RMP-ATIPSOM")
    bad = await mys.send(
        example_bodies(wall_ms())["alert"],
        ["MYS/IMMIGRATION"],
        handling=HandlingCode.H2,
        forward_of=parse_message_id(s.alert_id),
    )
    await expect_rejection(
        s, "MYS/RMP-ATIPSOM", bad, "ixb.E_HANDLING", "H2 alert forwarded to MYS/IMMIGRATION (SDK)"
    )
    desk = await s.cmd(
        "THA/IMMIGRATION",
        "query", "person", "--to", "MMR/MOHA-ATTU", "--surname", "SAMPLE",
        "--birth-date", "1981-03-14", *QUERY,
    )  # fmt: skip
    s.show(desk, f"person query from an immigration desk: {desk.error}")
    s.check(desk.error_code() == "ixb.E_UNAUTHORISED", "person query from immigration refused")
    victim = await s.cmd(
        "THA/DSI-ATHD",
        "send", "alert", "--to", "MYS/RMP-ATIPSOM", "--title", "EXAMPLE: girl of 16 at risk",
        "--text", "EXAMPLE - fictional victim.", "--category", "victim_at_risk",
        "--source-grade", "B", "--info-grade", "2", "--handling", "H0",
    )  # fmt: skip
    s.show(victim, f"alert naming a victim under H0: never sealed by THA/DSI-ATHD: {victim.error}")
    s.check(victim.error_code() == "ixb.E_HANDLING", "victim alert under H0 refused by the sender")
