"""The document owner's side, as typed, across two countries over real NATS: the registry
loaded from an export, the automated responder, and the human queue when nobody automated
answers (the CLI as separate processes, the federation's servers and hubs real)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agency_client.commands import LocalState
from agency_client.docregistry import DocumentRecord, write_csv
from agency_client.profile import load_profile
from agency_client.sdk import Incoming
from protocols.handling import Priority
from protocols.identifiers import format_message_id
from protocols.messages import DocPurpose, DocStatus, DocVerifyRequest, PersonQuery, ReceiptStatus
from protocols.mrz import build_td3
from tests.federation import PASSPHRASE, Federation, run_ixb, running_federation

OWNER = "MYS/IMMIGRATION"
ASKER = "THA/IMMIGRATION"
EXPORT = [
    DocumentRecord(
        "A12345678", "MYS", "SAMPLE", "SITI AMINAH", "1990-01-01", "2031-01-01", "MYS", "F"
    ),
    DocumentRecord(
        "A87654321",
        "MYS",
        "EXAMPLE",
        "AHMAD",
        "1985-06-15",
        "2030-06-15",
        "MYS",
        "M",
        DocStatus.REPORTED_STOLEN,
    ),
    DocumentRecord(
        "A55555555",
        "MYS",
        "REVIEW",
        "NUR",
        "1995-05-05",
        "2032-05-05",
        "MYS",
        "F",
        DocStatus.UNKNOWN,
    ),
]


def mrz(
    number: str, surname: str, given: str, *, birth: str, sex: str, expiry: str
) -> tuple[str, str]:
    return build_td3(
        issuing_state="MYS",
        surname=surname,
        given_names=given,
        document_number=number,
        nationality="MYS",
        birth_date=birth,
        sex=sex,
        expiry_date=expiry,
    )


VALID = mrz("A12345678", "SAMPLE", "SITI AMINAH", birth="900101", sex="F", expiry="310101")
STOLEN = mrz("A87654321", "EXAMPLE", "AHMAD", birth="850615", sex="M", expiry="300615")
MISMATCH = mrz("A12345678", "SAMPLE", "SITI AMINAH", birth="900102", sex="M", expiry="310101")
UNDER_REVIEW = mrz("A55555555", "REVIEW", "NUR", birth="950505", sex="F", expiry="320505")


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


async def ixb(fed: Federation, agency: str, *args: str) -> Any:
    return await run_ixb(*args, IXB_PROFILE=str(fed.deployment.profile(agency)))


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return str(result.stdout)


def one_line_error(result: Any, code: str) -> str:
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error {code}: "), result.stderr
    return str(lines[0])


@contextlib.asynccontextmanager
async def responder(fed: Federation, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ixb agency respond ARGS`` for the owner, until the block ends (SIGTERM)."""
    env = {
        **os.environ,
        "IXB_PASSPHRASE": PASSPHRASE,
        "IXB_PROFILE": str(fed.deployment.profile(OWNER)),
        "IXB_LOG_LEVEL": "info",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ixb",
        "agency",
        "respond",
        "--json",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        started = await asyncio.wait_for(proc.stdout.read(1), timeout=60)
        assert started == b"{", await proc.stderr.read() if proc.stderr else b""
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def queued_ids(fed: Federation, want: set[str], seconds: float = 40) -> list[dict[str, Any]]:
    """``ixb queue list --json`` until every id in ``want`` is listed."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        listed = json.loads(ok(await ixb(fed, OWNER, "queue", "list", "--json", "--wait", "1")))
        rows: list[dict[str, Any]] = listed["queue"]
        if want <= {r["id"] for r in rows}:
            return rows
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.5)


async def answer_in_inbox(fed: Federation, agency: str, request_id: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 40
    while True:
        got = json.loads(ok(await ixb(fed, agency, "inbox", "--all", "--json", "--wait", "1")))
        for m in got["messages"]:
            if m["in_reply_to"] == request_id:
                return dict(m)
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.5)


async def test_registry_load_respond_and_verify_across_two_countries(
    fed: Federation, tmp_path: Path
) -> None:
    export = tmp_path / "mys-passports.csv"
    export.write_text(write_csv(EXPORT), encoding="utf-8")
    loaded = json.loads(ok(await ixb(fed, OWNER, "registry", "load", str(export), "--json")))
    assert (loaded["loaded"], loaded["total"]) == (3, 3)
    db = Path(loaded["registry"])
    assert (
        db.name == "MYS-IMMIGRATION.documents.sqlite"
        and (await asyncio.to_thread(db.stat)).st_mode & 0o077 == 0
    )

    # a bad row refuses the whole file, naming its line; nothing of it is loaded
    bad = tmp_path / "bad.csv"
    bad.write_text(
        write_csv(
            [
                *EXPORT[:1],
                DocumentRecord("B1", "MYS", "X", "Y", "1990-01-01", "2030-01-01", "MYS", "F"),
            ]
        )
        + "B2,MYS,X,Y,1990-13-01,2030-01-01,MYS,F,valid\n",
        encoding="utf-8",
    )
    line = one_line_error(await ixb(fed, OWNER, "registry", "load", str(bad)), "ixb.E_USAGE")
    assert "bad.csv line 4: birth_date" in line
    stats = json.loads(ok(await ixb(fed, OWNER, "registry", "stats", "--json")))
    assert stats["documents"] == 3 and stats["by_status"]["reported_stolen"] == 1
    shown = json.loads(ok(await ixb(fed, OWNER, "registry", "show", "a87654321", "--json")))
    assert shown["documents"][0]["status"] == "reported_stolen"

    async with responder(fed, "--registry", f"sqlite:{db}"):
        answers = {}
        for name, lines in (("valid", VALID), ("stolen", STOLEN), ("mismatch", MISMATCH)):
            result = await ixb(
                fed, ASKER, "verify-doc", "--json", "--timeout", "60", "--mrz", *lines
            )
            answers[name] = json.loads(ok(result))
    assert answers["valid"]["status"] == "valid"
    assert answers["stolen"]["status"] == "reported_stolen"
    assert answers["mismatch"]["status"] == "data_mismatch"
    assert answers["mismatch"]["mismatched_fields"] == ["birth_date", "sex"]
    for a in answers.values():
        assert a["authority"] == OWNER and a["answered_by"] == "automated"
        assert a["checked"].endswith("Z") and "checked_ms" not in a

    # nothing was answered by hand: the automated answers left nothing queued
    assert (
        json.loads(ok(await ixb(fed, OWNER, "queue", "list", "--offline", "--json")))["queue"] == []
    )


async def test_a_bad_check_digit_is_refused_before_anything_leaves(fed: Federation) -> None:
    line1, line2 = VALID
    broken = line2[:9] + str((int(line2[9]) + 1) % 10) + line2[10:]
    audit = fed.hubs["THA"].hub.audit_log
    before = audit.size
    result = await ixb(fed, ASKER, "verify-doc", "--mrz", line1, broken)
    assert one_line_error(result, "ixb.E_MRZ_CHECK")
    await asyncio.sleep(1.0)
    assert audit.size == before  # the hub never saw a message


async def test_responder_offline_then_a_person_answers_from_the_queue(fed: Federation) -> None:
    asker = await fed.client(ASKER)
    check = DocVerifyRequest(mrz=STOLEN, purpose=DocPurpose.BORDER_CHECK, checkpoint="EXAMPLE")
    check_id = format_message_id(
        await asker.send(check, [OWNER], priority=Priority.URGENT, case_ref="THA-IMM-1")
    )

    # the officer's own command, on the synchronous path: nobody answers, so it is queued
    waiting = await ixb(fed, ASKER, "verify-doc", "--mrz", *VALID)
    assert f"{OWNER}: queued at {OWNER}, due in 7 h" in ok(waiting)
    waiting_json = json.loads(ok(await ixb(fed, ASKER, "verify-doc", "--json", "--mrz", *VALID)))
    assert waiting_json["state"] == "queued" and waiting_json["owner"] == OWNER
    sync_id = waiting_json["request_id"]

    rows = await queued_ids(fed, {check_id, sync_id})
    (row,) = [r for r in rows if r["id"] == check_id]
    assert (row["from"], row["type"], row["priority"]) == (ASKER, "doc.verify.request", "urgent")
    hours = row["due_in_ms"] / 3_600_000
    assert 7.5 < hours <= 8 and row["due"].endswith("Z") and row["overdue"] is False
    human = ok(await ixb(fed, OWNER, "queue", "list", "--offline"))
    assert check_id in human and "due in 7 h" in human

    unnamed = await ixb(
        fed, OWNER, "queue", "answer", check_id, "--status", "data_mismatch", "--officer", "X"
    )
    assert "mismatched_fields is required" in one_line_error(unnamed, "ixb.E_USAGE")
    answered = json.loads(
        ok(
            await ixb(
                fed,
                OWNER,
                "queue",
                "answer",
                check_id,
                "--status",
                "revoked",
                "--note",
                "EXAMPLE cancelled by the issuing office",
                "--officer",
                "EXAMPLE Insp. Aziz",
                "--json",
            )
        )
    )
    assert answered["status"] == "revoked" and answered["by"] == "EXAMPLE Insp. Aziz"
    again = await ixb(
        fed, OWNER, "queue", "answer", check_id, "--status", "valid", "--officer", "X"
    )
    assert "answered already" in one_line_error(again, "ixb.E_USAGE")
    left = json.loads(ok(await ixb(fed, OWNER, "queue", "list", "--offline", "--json")))["queue"]
    assert len(left) == 2 and sync_id in {r["id"] for r in left}  # both verify-doc runs
    for r in left:
        ok(await ixb(fed, OWNER, "queue", "answer", r["id"], "--status", "valid", "--officer", "Y"))
    assert (
        json.loads(ok(await ixb(fed, OWNER, "queue", "list", "--offline", "--json")))["queue"] == []
    )

    got = await answer_in_inbox(fed, ASKER, check_id)
    assert got["id"] == answered["answer_id"] and got["from"] == OWNER
    assert got["case_ref"] == "THA-IMM-1" and got["priority"] == "urgent"
    body = got["body"]
    assert (body["status"], body["answered_by"], body["officer"]) == (
        "revoked",
        "human",
        "EXAMPLE Insp. Aziz",
    )
    shown = json.loads(ok(await ixb(fed, ASKER, "show", got["id"], "--json")))
    assert shown["in_reply_to"] == check_id
    later = await answer_in_inbox(fed, ASKER, sync_id)
    assert (later["body"]["status"], later["body"]["officer"]) == ("valid", "Y")


async def test_a_person_query_waits_for_a_person_who_answers_hit_or_no_hit(
    fed: Federation,
) -> None:
    investigator = await fed.client("THA/DSI-ATHD")
    query = PersonQuery(
        surname="EXAMPLE", birth_date="1985-06-15", purpose="EXAMPLE", legal_basis="EXAMPLE"
    )
    query_id = format_message_id(await investigator.send(query, ["MYS/RMP-ATIPSOM"]))
    # no responder at the trafficking unit: its queue holds the query
    unit = "MYS/RMP-ATIPSOM"
    deadline = asyncio.get_running_loop().time() + 40
    while True:
        listed = json.loads(ok(await ixb(fed, unit, "queue", "list", "--json", "--wait", "1")))
        if query_id in {r["id"] for r in listed["queue"]}:
            break
        assert asyncio.get_running_loop().time() < deadline, listed
    wrong = await ixb(fed, unit, "queue", "answer", query_id, "--status", "valid")
    assert "person query" in one_line_error(wrong, "ixb.E_USAGE")
    prose = await ixb(fed, unit, "queue", "answer", query_id, "--hit", "Ahmad, born 1985")
    one_line_error(prose, "ixb.E_USAGE")  # a reference, never personal data
    ok(await ixb(fed, unit, "queue", "answer", query_id, "--hit", "MYS-RMP-2026-000417"))
    result = await answer_in_inbox(fed, "THA/DSI-ATHD", query_id)
    assert result["body"] == {"hit": True, "reference": "MYS-RMP-2026-000417"}


async def test_the_responder_leaves_what_the_registry_cannot_decide_to_a_person(
    fed: Federation, tmp_path: Path
) -> None:
    export = tmp_path / "mys.json"
    export.write_text(json.dumps(msgspec.to_builtins(EXPORT)), encoding="utf-8")
    ok(await ixb(fed, OWNER, "registry", "load", str(export)))
    asker = await fed.client(ASKER)
    async with responder(fed, "--unknown", "ask_human") as proc:
        review_id = format_message_id(
            await asker.send(
                DocVerifyRequest(mrz=UNDER_REVIEW, purpose=DocPurpose.BORDER_CHECK),
                [OWNER],
                priority=Priority.URGENT,
            )
        )
        valid = DocVerifyRequest(mrz=VALID, purpose=DocPurpose.BORDER_CHECK)
        answered = await asker.request(valid, [OWNER], timeout=60, priority=Priority.URGENT)
        rows = await queued_ids(fed, {review_id})
        assert [r["id"] for r in rows] == [review_id]  # the valid one was answered, not queued
    assert answered.body.status is DocStatus.VALID  # type: ignore[union-attr]
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    (line,) = [ln for ln in log.splitlines() if "queued_for_person" in ln]
    assert f"msg_id='{review_id}'" in line and "REVIEW" not in log and "A55555555" not in log


async def test_inbox_sends_the_read_receipt_for_what_the_responder_fetched(
    fed: Federation, tmp_path: Path
) -> None:
    """The responder takes the agency's inbox; the officer's first ``ixb inbox`` listing of
    a message is still the read the sender hears of."""
    export = tmp_path / "mys.json"
    export.write_text(json.dumps(msgspec.to_builtins(EXPORT)), encoding="utf-8")
    ok(await ixb(fed, OWNER, "registry", "load", str(export)))
    asker = await fed.client(ASKER)
    async with responder(fed, "--unknown", "ask_human"):
        request = DocVerifyRequest(mrz=UNDER_REVIEW, purpose=DocPurpose.BORDER_CHECK)
        sent = await asker.send(request, [OWNER], priority=Priority.URGENT)
        review_id = format_message_id(sent)
        deadline = asyncio.get_running_loop().time() + 40
        while True:  # fetched and stored by the responder's process (--offline: not this one)
            listed = json.loads(ok(await ixb(fed, OWNER, "queue", "list", "--offline", "--json")))
            if review_id in {r["id"] for r in listed["queue"]}:
                break
            assert asyncio.get_running_loop().time() < deadline, listed
            await asyncio.sleep(0.3)
        listed = json.loads(ok(await ixb(fed, OWNER, "inbox", "--json", "--wait", "0.5")))
        assert review_id in {m["id"] for m in listed["messages"]}
        read = await asker.wait_receipt(sent, ReceiptStatus.READ, timeout=30)
        assert str(read.signer) == OWNER


async def test_a_query_every_hub_refuses_prints_one_json_object(fed: Federation) -> None:
    refused = await ixb(
        fed, ASKER, "query", "person", "--json", "--to", "MYS/RMP-ATIPSOM",
        "--surname", "EXAMPLE", "--birth-date", "1985-06-15",
        "--purpose", "EXAMPLE", "--legal-basis", "EXAMPLE",
    )  # fmt: skip
    one_line_error(refused, "ixb.E_UNAUTHORISED")  # an immigration desk asks about a person
    assert json.loads(refused.stdout)["error"]["code"] == "ixb.E_UNAUTHORISED"  # one object


async def test_overdue_open_lists_what_is_open_on_both_sides_until_answered(
    fed: Federation,
) -> None:
    asker, owner = "THA/DSI-ATHD", "MYS/RMP-ATIPSOM"
    asked = json.loads(
        ok(
            await ixb(
                fed, asker, "query", "person", "--json", "--to", owner,
                "--surname", "EXAMPLE", "--birth-date", "1985-06-15",
                "--purpose", "EXAMPLE", "--legal-basis", "EXAMPLE",
            )
        )
    )  # fmt: skip
    (result,) = asked["results"]
    assert result["state"] == "queued"  # no responder at the unit: a person answers
    query_id = result["request_id"]

    plain = await ixb(fed, asker, "overdue", "--json")
    assert "open" not in json.loads(ok(plain))
    assert ok(await ixb(fed, asker, "overdue")).strip() == "nothing overdue"
    mine = json.loads(ok(await ixb(fed, asker, "overdue", "--open", "--json")))
    assert mine["asked"] == [] and mine["asked_of_me"] == []
    (row,) = mine["open"]
    assert (row["id"], row["type"], row["direction"]) == (query_id, "person.query", "asked")
    assert row["counterpart"] == [owner] and row["due_in_ms"] > 0 and row["due_in"].endswith("h")
    text = ok(await ixb(fed, asker, "overdue", "--open"))
    assert text.startswith("nothing overdue\nopen, not yet due (1):\n")
    assert f"{query_id}  person.query to {owner} [normal] due " in text and ": due in " in text

    deadline = asyncio.get_running_loop().time() + 40
    while True:  # the owner's queue takes it in; its overdue lists it as asked of it
        theirs = json.loads(ok(await ixb(fed, owner, "overdue", "--open", "--json")))
        if any(r["id"] == query_id for r in theirs["open"]):
            break
        ok(await ixb(fed, owner, "queue", "list", "--wait", "1"))
        assert asyncio.get_running_loop().time() < deadline, theirs
    assert [r["direction"] for r in theirs["open"]] == ["asked_of_me"]
    ok(await ixb(fed, owner, "queue", "answer", query_id, "--no-hit"))
    await answer_in_inbox(fed, asker, query_id)
    answered = json.loads(ok(await ixb(fed, asker, "overdue", "--open", "--json")))
    assert answered["open"] == []
    after = json.loads(ok(await ixb(fed, owner, "overdue", "--open", "--json")))
    assert after["open"] == []
    hub = await run_ixb("overdue", "--open", "--config", str(fed.deployment.hub_config("THA")))
    assert "--open is for agencies" in one_line_error(hub, "ixb.E_USAGE")


async def test_inbox_lists_a_message_whose_sender_was_revoked_since(fed: Federation) -> None:
    """Its read receipt cannot go (the sender is revoked): logged, and the listing stands."""
    asker = await fed.client(ASKER)
    request = DocVerifyRequest(mrz=UNDER_REVIEW, purpose=DocPurpose.BORDER_CHECK)
    review_id = format_message_id(await asker.send(request, [OWNER], priority=Priority.URGENT))
    await queued_ids(fed, {review_id})  # stored at the owner, not yet listed by ixb inbox
    config = str(fed.deployment.hub_config("THA"))
    ok(await run_ixb("hub", "agency", "revoke", ASKER, "--reason", "EXAMPLE", "--config", config))
    deadline = asyncio.get_running_loop().time() + 20
    while True:  # MYS's hub holds the revocation
        now = asyncio.get_running_loop().time()
        if fed.hubs["MYS"].hub.keys.entry(fed.principal(ASKER)).revoked is not None:
            break
        assert now < deadline
        await asyncio.sleep(0.1)
    listed = await ixb(fed, OWNER, "inbox", "--json", "--wait", "0.5")
    assert review_id in {m["id"] for m in json.loads(ok(listed))["messages"]}
    assert "read_receipt_not_sent" in listed.stderr and review_id in listed.stderr
    assert "Traceback" not in listed.stderr


async def test_a_running_responder_keeps_the_receipts_for_its_answers_at_once(
    fed: Federation, tmp_path: Path
) -> None:
    """The responder takes its agency's inbox, receipts about its own answers included: each
    is in the agency's local state as soon as it is verified, not when the responder stops,
    so ``ixb receipts`` and ``ixb overdue`` beside it see them."""
    export = tmp_path / "mys.json"
    export.write_text(json.dumps(msgspec.to_builtins(EXPORT)), encoding="utf-8")
    ok(await ixb(fed, OWNER, "registry", "load", str(export)))
    asker = await fed.client(ASKER)
    profile = load_profile(fed.deployment.profile(OWNER))
    async with responder(fed):
        # over the durable path: its answer is receipted by both hubs, to the responder
        request = DocVerifyRequest(mrz=VALID, purpose=DocPurpose.BORDER_CHECK)
        sent = await asker.send(request, [OWNER], priority=Priority.URGENT)
        answer_id = ""
        deadline = asyncio.get_running_loop().time() + 40
        while not answer_id:
            for item in await asker.fetch(timeout=0.5):
                if isinstance(item, Incoming):
                    await item.ack()
                    if item.header.in_reply_to == sent and item.header.type != "receipt":
                        answer_id = item.message_id
            assert asyncio.get_running_loop().time() < deadline, "no answer"
        while True:  # read the state file directly: nothing here takes the inbox
            state = LocalState(profile)
            try:
                kept = {(r["status"], r["signer"]) for r in state.receipts(answer_id)}
            finally:
                state.close()
            if ("delivered", "THA/HUB") in kept:
                break
            assert asyncio.get_running_loop().time() < deadline, kept
            await asyncio.sleep(0.3)
        assert ("accepted", "MYS/HUB") in kept
