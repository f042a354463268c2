"""The liaison pages over HTTP (aiohttp's test client): login, sessions, CSRF, every page.

The audit log is a real :class:`AuditLog` in ``tmp_path`` holding a realistic
exchange at the THA hub (see :func:`build_exchange`, also used by the browser
test); leaf bytes are real :class:`AuditEntry` encodings, checkpoints are
really signed and cosigned.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.audit.log import AuditLog
from broker.audit.records import AuditRecord
from broker.audit.search import AuditQuery
from broker.web.app import setup_liaison
from broker.web.auth import check_password, hash_password
from broker.web.format import utc
from broker.web.limits import LIMITS
from broker.web.site import LIAISON, SECURITY_HEADERS
from broker.web.view import (
    DeadlineRow,
    LiaisonContext,
    PeerStep,
    ReconcileReport,
    ReminderRow,
    UserRecord,
    WitnessRow,
)
from protocols.audit import (
    AUDIT_REPLY_VERSION,
    AUDIT_VERSION,
    AuditEntry,
    AuditEvent,
    encode_entry,
)
from protocols.checkpoint import (
    cosign,
    log_origin,
    new_checkpoint,
    sign_checkpoint,
    witness_name,
)
from protocols.export import verify_export
from protocols.federation import TrustAnchors
from protocols.handling import HandlingCode
from protocols.identifiers import format_message_id, new_message_id
from tests.conftest import NOW_MS, Parties

HUB = "THA/HUB"
CASE = "TIP-2026-0117"
PASSWORDS = {"alice": "correct horse battery", "bob": "staple of the embassy"}
MINUTE = 60_000


# --- a realistic exchange at the THA hub -------------------------------------------


@dataclass
class Exchange:
    """Message ids and leaf indexes of the scenario, for assertions."""

    alert: str = ""
    receipt: str = ""
    doc_request: str = ""
    doc_response: str = ""
    doc_read: str = ""
    rejected: str = ""
    query: str = ""
    checkpoint_size: int = 0
    indexes: dict[str, int] = field(default_factory=dict)


class _Writer:
    def __init__(self, audit: AuditLog, t0: int) -> None:
        self.audit = audit
        self.t = t0
        self.n = 0
        self.pending: list[AuditRecord] = []

    def mid(self) -> str:
        self.n += 1
        return format_message_id(new_message_id(self.t, hashlib.sha256(b"%d" % self.n).digest()))

    def add(self, event: AuditEvent, *, step_ms: int = 7_000, **fields: Any) -> int:
        self.t += step_ms
        msg_id = fields.pop("msg_id", None)
        reply_to = fields.pop("in_reply_to", None)
        entry = AuditEntry(
            v=AUDIT_VERSION if reply_to is None else AUDIT_REPLY_VERSION,
            hub=HUB,
            at=self.t,
            event=event,
            msg_id=bytes.fromhex(msg_id.replace("-", "")) if msg_id else None,
            in_reply_to=bytes.fromhex(reply_to.replace("-", "")) if reply_to else None,
            **fields,
        )
        record = AuditRecord(
            data=encode_entry(entry),
            at_ms=entry.at,
            event=entry.event.value,
            msg_id=entry.message_id,
            type=entry.type,
            sender=entry.sender,
            recipients=entry.recipients,
            case_ref=entry.case_ref,
            code=entry.code,
            peer=entry.peer,
            in_reply_to=entry.reply_to_id,
        )
        self.pending.append(record)
        return self.audit.size + len(self.pending) - 1

    def flush(self) -> None:
        """One durable transaction for the lot, as the hub appends in batches."""
        self.audit.append(self.pending)
        self.pending = []


def _payload(n: int) -> dict[str, Any]:
    return {"payload_hash": hashlib.sha256(b"payload %d" % n).digest(), "size": 1800 + 97 * n}


def build_exchange(audit: AuditLog, parties: Parties, t0: int, *, filler: int = 0) -> Exchange:
    """An afternoon at the THA hub: alerts, relays, receipts, document checks, a rejection."""
    w = _Writer(audit, t0)
    x = Exchange()
    w.add(AuditEvent.HUB_STARTED)
    w.add(AuditEvent.DIRECTORY_INSTALLED, peer="MYS", detail="MYS directory, 14 agencies")
    x.alert = w.mid()
    alert = {
        "msg_id": x.alert,
        "type": "alert",
        "sender": "THA/DSI-ATHD",
        "recipients": ("MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"),
        "handling": HandlingCode.H2,
        "case_ref": CASE,
        **_payload(1),
    }
    x.indexes["alert accepted"] = w.add(AuditEvent.ACCEPTED, **alert)
    x.indexes["alert relayed MYS"] = w.add(AuditEvent.RELAYED, peer="MYS", **alert)
    x.indexes["alert relayed MMR"] = w.add(AuditEvent.RELAYED, peer="MMR", **alert)
    x.receipt = w.mid()
    receipt = {
        "msg_id": x.receipt,
        "type": "receipt",
        "sender": "MYS/RMP-ATIPSOM",
        "recipients": ("THA/DSI-ATHD",),
        "handling": HandlingCode.H0,
        "case_ref": CASE,
        "in_reply_to": x.alert,
        **_payload(2),
    }
    w.add(AuditEvent.ACCEPTED, peer="MYS", step_ms=41_000, **receipt)
    w.add(AuditEvent.DELIVERED, **receipt)
    x.doc_request = w.mid()
    doc = {
        "msg_id": x.doc_request,
        "type": "doc.verify.request",
        "sender": "MYS/IMMIGRATION",
        "recipients": ("THA/IMMIGRATION",),
        "handling": HandlingCode.H0,
        **_payload(3),
    }
    w.add(AuditEvent.ACCEPTED, peer="MYS", **doc)
    w.add(AuditEvent.DELIVERED, **doc)
    x.doc_response = w.mid()
    answer = {
        "msg_id": x.doc_response,
        "type": "doc.verify.response",
        "sender": "THA/IMMIGRATION",
        "recipients": ("MYS/IMMIGRATION",),
        "handling": HandlingCode.H0,
        "in_reply_to": x.doc_request,
        **_payload(4),
    }
    x.doc_read = w.mid()
    read = {
        "msg_id": x.doc_read,
        "type": "receipt",
        "sender": "THA/IMMIGRATION",
        "recipients": ("MYS/IMMIGRATION",),
        "handling": HandlingCode.H0,
        "in_reply_to": x.doc_request,
        **_payload(7),
    }
    x.indexes["doc read"] = w.add(AuditEvent.ACCEPTED, step_ms=90, **read)
    w.add(AuditEvent.RELAYED, peer="MYS", step_ms=10, **read)
    w.add(AuditEvent.ACCEPTED, step_ms=80, **answer)
    w.add(AuditEvent.RELAYED, peer="MYS", step_ms=20, **answer)
    # a stranger's receipt for it: accepted (the hub no longer knew the message), never "read"
    w.add(
        AuditEvent.ACCEPTED,
        step_ms=500,
        msg_id=w.mid(),
        type="receipt",
        sender="MMR/MOHA-ATTU",
        recipients=("MYS/IMMIGRATION",),
        handling=HandlingCode.H0,
        in_reply_to=x.doc_request,
        peer="MMR",
        **_payload(8),
    )
    x.rejected = w.mid()
    x.indexes["rejected"] = w.add(
        AuditEvent.REJECTED,
        msg_id=x.rejected,
        type="alert",
        sender="MMR/MOHA-ATTU",
        recipients=("THA/DSI-ATHD",),
        handling=HandlingCode.H1,
        case_ref="MMR-ATTU-2026-88",
        peer="MMR",
        code="ixb.E_SIGNATURE",
        detail="header signature does not verify with the sender's directory key",
        **_payload(5),
    )
    x.query = w.mid()
    query = {
        "msg_id": x.query,
        "type": "person.query",
        "sender": "THA/DSI-ATHD",
        "recipients": ("MYS/RMP-ATIPSOM",),
        "handling": HandlingCode.H0,
        "case_ref": CASE,
        **_payload(6),
    }
    w.add(AuditEvent.ACCEPTED, **query)
    w.add(AuditEvent.RELAYED, peer="MYS", **query)
    w.add(AuditEvent.CHECKPOINT_COSIGNED, peer="MYS", detail="MYS log size 118")
    w.add(
        AuditEvent.WITNESS_ALARM,
        peer="MMR",
        code="ixb.E_FORK",
        detail="MMR checkpoint of size 240 does not extend the one of size 231",
    )
    w.add(AuditEvent.AUDIT_READ, actor="bob", detail="audit case_ref=TIP-2026-0117")
    for i in range(filler):
        mid = w.mid()
        w.add(
            AuditEvent.DELIVERED,
            step_ms=1_000,
            msg_id=mid,
            type="doc.verify.request",
            sender="KHM/IMMIGRATION",
            recipients=("THA/IMMIGRATION",),
            handling=HandlingCode.H0,
            **_payload(10 + i),
        )
    w.flush()
    # Signed checkpoint over all but the last two entries, cosigned by MYS.
    size = audit.size - 2
    x.checkpoint_size = size
    cp_at = w.t + 60_000
    note = sign_checkpoint(new_checkpoint("THA", size, audit.root(size), cp_at), parties[HUB])
    audit.save_checkpoint(size, audit.root(size), note, cp_at)
    cosigned = cosign(note, parties["MYS/HUB"], witness_name("MYS"), cp_at // 1000 + 2)
    audit.save_cosigned(size, witness_name("MYS"), cosigned, cp_at + 2_000)
    mys_root = hashlib.sha256(b"MYS log at 118").digest()
    mys_note = sign_checkpoint(
        new_checkpoint("MYS", 118, mys_root, cp_at - 5_000), parties["MYS/HUB"]
    )
    audit.save_witnessed(log_origin("MYS"), 118, mys_root, mys_note, cp_at - 4_000)
    audit.save_alarm(
        log_origin("MMR"),
        cp_at - 30_000,
        "checkpoint of size 240 is not consistent with the one of size 231 (split view)",
        b"evidence",
    )
    return x


def witness_rows(audit: AuditLog, now: int) -> list[WitnessRow]:
    cp = audit.latest_checkpoint()
    assert cp is not None
    return [
        WitnessRow("MYS", "they witness us", cp[0], cp[1].hex(), now - 30_000, "cosigned", False),
        WitnessRow("MYS", "we witness them", 118, "ab" * 32, now - 50_000, "consistent", False),
        WitnessRow("MMR", "they witness us", None, None, None, "no cosignature yet", False),
        WitnessRow(
            "MMR",
            "we witness them",
            240,
            "cd" * 32,
            now - 60_000,
            "size 240 does not extend size 231: split view",
            True,
        ),
    ]


def deadline_rows(x: Exchange, now: int) -> list[DeadlineRow]:
    return [
        DeadlineRow(
            x.doc_request,
            "doc.verify.request",
            "MYS/IMMIGRATION",
            ("THA/IMMIGRATION",),
            "urgent",
            now - 9 * 3600_000,
            now - 3600_000,
            False,
        ),
        DeadlineRow(
            x.query,
            "person.query",
            "THA/DSI-ATHD",
            ("MYS/RMP-ATIPSOM",),
            "high",
            now - 3600_000,
            now + 2 * 86_400_000,
            False,
        ),
        DeadlineRow(
            x.alert,
            "alert",
            "THA/DSI-ATHD",
            ("MYS/RMP-ATIPSOM",),
            "normal",
            now - 86_400_000,
            now + 86_400_000,
            True,
        ),
    ]


# --- fixtures -------------------------------------------------------------------------


@dataclass
class Clock:
    now: int = NOW_MS

    def __call__(self) -> int:
        return self.now


@dataclass
class Reads:
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: bool = False

    def __call__(self, actor: str, what: str) -> None:
        if self.fail:
            raise OSError("audit log is read-only")
        self.calls.append((actor, what))


@pytest.fixture(scope="session")
def user_records() -> dict[str, UserRecord]:
    return {
        "alice": UserRecord("alice", "liaison", hash_password(PASSWORDS["alice"])),
        "bob": UserRecord("bob", "auditor", hash_password(PASSWORDS["bob"])),
    }


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.sqlite")
    yield log
    log.close()


@pytest.fixture
def exchange(audit: AuditLog, parties: Parties) -> Exchange:
    return build_exchange(audit, parties, NOW_MS - 3 * 3600_000, filler=120)


async def _reconcile(peer: str, since_ms: int) -> ReconcileReport:
    return ReconcileReport(
        peer=peer,
        since_ms=since_ms,
        only_here=[],
        only_there=[("0193a1b2-0000-7000-8000-000000000001", "relayed", NOW_MS - 7_200_000)],
        different=[("0193a1b2-0000-7000-8000-000000000002", "handling H2", "handling H0")],
        matched=41,
    )


@pytest.fixture
def ctx(audit: AuditLog, exchange: Exchange, user_records: dict[str, UserRecord]) -> LiaisonContext:
    clock = Clock()
    return LiaisonContext(
        hub_id="THA",
        audit=audit,
        users=dict(user_records),
        clock=clock,
        record_read=Reads(),
        witness_status=lambda: witness_rows(audit, clock.now),
        deadlines=lambda now: deadline_rows(exchange, now),
        reconcile=_reconcile,
        peers=("MYS", "MMR"),
    )


async def _client(ctx: LiaisonContext) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    setup_liaison(app, ctx)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(
    ctx: LiaisonContext,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    c = await _client(ctx)
    yield c
    await c.close()


Client = TestClient[web.Request, web.Application]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _csrf(client: Client, path: str) -> str:
    resp = await client.get(path)
    assert resp.status == 200, path
    m = _CSRF.search(await resp.text())
    assert m is not None
    return m.group(1)


async def _login(client: Client, name: str = "alice", password: str | None = None) -> int:
    token = await _csrf(client, "/login")
    resp = await client.post(
        "/login",
        data={"csrf": token, "name": name, "password": password or PASSWORDS[name], "next": ""},
        allow_redirects=False,
    )
    return resp.status


def _session_cookie(client: Client) -> str | None:
    for c in client.session.cookie_jar:
        if c.key == "ixb_session":
            return c.value
    return None


PAGES = (
    "/audit",
    "/audit/witness",
    "/audit/deadlines",
    "/audit/reconcile",
    "/audit/reconcile?peer=MYS",
    "/audit/proof/3",
)


# --- passwords ------------------------------------------------------------------------


def test_passwords(user_records: dict[str, UserRecord]) -> None:
    h = user_records["alice"].password_hash
    assert h.startswith("$argon2id$")
    assert check_password(h, PASSWORDS["alice"])
    assert not check_password(h, PASSWORDS["bob"])
    for bad in ("", "garbage", h[:-4], h.replace("argon2id", "argon2i"), "é" * 300, "\0"):
        assert check_password(bad, PASSWORDS["alice"]) is False


# --- anonymous ------------------------------------------------------------------------


async def test_anonymous_is_sent_to_login(client: Client, exchange: Exchange) -> None:
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/audit"
    for path in (*PAGES, f"/audit/message/{exchange.alert}"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 302, path
        assert resp.headers["Location"].startswith("/login?next=/audit"), path
    assert (await client.post("/logout", data={"csrf": "x"})).status == 403
    assert client.app is not None
    assert not client.app[LIAISON].auth.sessions


async def test_wrong_password_and_unknown_user_are_refused(client: Client) -> None:
    assert await _login(client, "alice", "wrong") == 401
    assert await _login(client, "mallory", "anything") == 401
    assert await _login(client, "bob", PASSWORDS["alice"]) == 401
    assert _session_cookie(client) is None
    resp = await client.get("/audit", allow_redirects=False)
    assert resp.status == 302
    resp = await client.get("/login")
    assert "Wrong name or password" not in await resp.text()


# --- logged in ------------------------------------------------------------------------


async def test_every_page_after_login_and_every_read_is_recorded(
    client: Client, ctx: LiaisonContext, exchange: Exchange
) -> None:
    assert await _login(client, "bob") == 303
    reads = ctx.record_read
    assert isinstance(reads, Reads)
    paths = (*PAGES, f"/audit/message/{exchange.alert}", f"/audit?case_ref={CASE}")
    for path in paths:
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 200, path
        assert resp.content_type == "text/html"
        body = await resp.text()
        assert "<script" not in body
        assert "bob" in body
    assert [actor for actor, _ in reads.calls] == ["bob"] * len(paths)
    whats = [what for _, what in reads.calls]
    assert whats[0] == "audit"
    assert "reconcile peer=MYS window=7d" in whats
    assert f"trail {exchange.alert}" in whats
    assert f"audit case_ref={CASE}" in whats
    assert "proof 3" in whats


async def test_login_goes_back_to_the_page_asked_for_but_never_off_site(client: Client) -> None:
    asked = f"/audit?case_ref={CASE}&type=alert"
    resp = await client.get(asked, allow_redirects=True)
    assert resp.url.path == "/login"
    m = re.search(r'name="next" value="([^"]+)"', await resp.text())
    assert m is not None
    assert m.group(1).replace("&amp;", "&") == asked
    for nxt, want in (
        (asked, asked),
        ("https://evil.example/", "/audit"),
        ("//evil.example/audit", "/audit"),
        ("/auditorium", "/audit"),
    ):
        token = await _csrf(client, "/login")  # one pre-login cookie per login
        resp = await client.post(
            "/login",
            data={
                "csrf": token,
                "name": "alice",
                "password": PASSWORDS["alice"],
                "next": nxt,
            },
            allow_redirects=False,
        )
        assert resp.status == 303
        assert resp.headers["Location"] == want


async def test_a_page_whose_read_cannot_be_recorded_is_not_shown(
    client: Client, ctx: LiaisonContext, exchange: Exchange
) -> None:
    assert await _login(client) == 303
    assert isinstance(ctx.record_read, Reads)
    ctx.record_read.fail = True
    resp = await client.get(f"/audit/message/{exchange.alert}")
    assert resp.status == 500
    assert exchange.alert not in await resp.text()


# --- CSRF and cookies -----------------------------------------------------------------


async def test_login_form_needs_its_csrf_token_and_cookie(
    client: Client, ctx: LiaisonContext
) -> None:
    form = {"name": "alice", "password": PASSWORDS["alice"]}
    assert (await client.post("/login", data=form, allow_redirects=False)).status == 403
    token = await _csrf(client, "/login")
    bad = {**form, "csrf": token[:-2] + "00"}
    assert (await client.post("/login", data=bad, allow_redirects=False)).status == 403
    # A token without the pre-login cookie it is bound to (another browser's) is refused.
    other = await _client(ctx)
    try:
        resp = await other.post("/login", data={**form, "csrf": token}, allow_redirects=False)
        assert resp.status == 403
    finally:
        await other.close()
    assert _session_cookie(client) is None
    resp = await client.post("/login", data={**form, "csrf": token}, allow_redirects=False)
    assert resp.status == 303


async def test_logout_needs_the_session_csrf_token(client: Client) -> None:
    assert await _login(client) == 303
    assert (await client.post("/logout", allow_redirects=False)).status == 403
    resp = await client.post("/logout", data={"csrf": "forged"}, allow_redirects=False)
    assert resp.status == 403
    assert (await client.get("/audit", allow_redirects=False)).status == 200
    token = await _csrf(client, "/audit")
    resp = await client.post("/logout", data={"csrf": token}, allow_redirects=False)
    assert resp.status == 303


async def test_session_cookie_flags(client: Client, ctx: LiaisonContext) -> None:
    token = await _csrf(client, "/login")
    resp = await client.post(
        "/login",
        data={"csrf": token, "name": "alice", "password": PASSWORDS["alice"]},
        allow_redirects=False,
    )
    cookies = resp.headers.getall("Set-Cookie")
    session = next(c for c in cookies if c.startswith("ixb_session="))
    attrs = {a.strip().lower() for a in session.split(";")[1:]}
    assert "httponly" in attrs
    assert "samesite=strict" in attrs
    assert "path=/" in attrs
    assert "secure" not in attrs
    value = session.split(";")[0].split("=", 1)[1]
    assert len(value) >= 43  # 32 random bytes, URL-safe base64

    ctx.secure_cookies = True
    secure = await _client(ctx)
    try:
        resp = await secure.get("/login")
        prelogin = resp.headers["Set-Cookie"]
        assert "Secure" in prelogin
        assert "HttpOnly" in prelogin
        assert "SameSite=Strict" in prelogin
    finally:
        await secure.close()


async def test_logout_ends_the_session_on_the_server(client: Client) -> None:
    assert await _login(client) == 303
    old = _session_cookie(client)
    assert old is not None
    token = await _csrf(client, "/audit")
    assert (await client.post("/logout", data={"csrf": token}, allow_redirects=False)).status == 303
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"ixb_session": old})
    resp = await client.get("/audit", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/login")


async def test_login_rotates_the_session_id(client: Client) -> None:
    assert await _login(client) == 303
    first = _session_cookie(client)
    assert await _login(client, "bob") == 303
    second = _session_cookie(client)
    assert first and second and first != second
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"ixb_session": first})
    assert (await client.get("/audit", allow_redirects=False)).status == 302


async def test_sessions_expire_when_idle_and_after_eight_hours(
    client: Client, ctx: LiaisonContext
) -> None:
    clock = ctx.clock
    assert isinstance(clock, Clock)
    assert await _login(client) == 303
    clock.now += 29 * MINUTE
    assert (await client.get("/audit", allow_redirects=False)).status == 200
    clock.now += 31 * MINUTE
    assert (await client.get("/audit", allow_redirects=False)).status == 302

    assert await _login(client) == 303
    for _ in range(8 * 3):
        clock.now += 20 * MINUTE
        status = (await client.get("/audit/deadlines", allow_redirects=False)).status
    assert status == 302


async def test_a_user_removed_or_changed_loses_access(
    client: Client, ctx: LiaisonContext, user_records: dict[str, UserRecord]
) -> None:
    users = ctx.users
    assert isinstance(users, dict)
    assert await _login(client) == 303
    users["alice"] = replace(users["alice"], role="agency")  # type: ignore[arg-type]
    assert (await client.get("/audit", allow_redirects=False)).status == 302
    assert await _login(client) == 401  # a role that is not liaison/auditor cannot log in

    users["alice"] = user_records["alice"]
    assert await _login(client) == 303
    users["alice"] = replace(users["alice"], password_hash=hash_password("new password"))
    assert (await client.get("/audit", allow_redirects=False)).status == 302

    assert await _login(client, "bob") == 303
    del users["bob"]
    assert (await client.get("/audit", allow_redirects=False)).status == 302


async def _login_from(base: str, address: str, name: str, password: str) -> tuple[int, str | None]:
    """A login from another local address (127.0.0.0/8): a different client to the hub."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    jar = aiohttp.CookieJar(unsafe=True)  # cookies from an IP address host
    async with aiohttp.ClientSession(base, connector=connector, cookie_jar=jar) as session:
        async with session.get("/login") as resp:
            m = _CSRF.search(await resp.text())
            assert m is not None
        async with session.post(
            "/login",
            data={"csrf": m.group(1), "name": name, "password": password, "next": ""},
            allow_redirects=False,
        ) as resp:
            return resp.status, resp.headers.get("Retry-After")


async def test_a_guesser_is_slowed_and_the_officer_still_logs_in_elsewhere(
    client: Client, ctx: LiaisonContext
) -> None:
    clock = ctx.clock
    assert isinstance(clock, Clock)
    base = str(client.make_url("/")).rstrip("/")
    attacker = "127.0.0.1"
    for _ in range(2):  # the first failures cost nothing
        assert (await _login_from(base, attacker, "alice", "guess"))[0] == 401
    assert (await _login_from(base, attacker, "alice", "guess"))[0] == 401
    # Now the guesser waits before the next try, and the password is not even checked.
    status, retry = await _login_from(base, attacker, "alice", PASSWORDS["alice"])
    assert (status, retry) == (429, "1")
    clock.now += 1_000
    assert (await _login_from(base, attacker, "alice", "guess"))[0] == 401
    status, retry = await _login_from(base, attacker, "alice", "guess")
    assert (status, retry) == (429, "2")  # doubled
    # The officer, from another address, is not locked out by any of it.
    assert (await _login_from(base, "127.0.0.2", "alice", PASSWORDS["alice"]))[0] == 303
    # Nor are other names from the guesser's address, under its own limit.
    assert (await _login_from(base, attacker, "bob", PASSWORDS["bob"]))[0] == 303


async def test_one_address_is_limited_over_all_names(client: Client, ctx: LiaisonContext) -> None:
    assert client.app is not None
    throttle = client.app[LIAISON].auth.throttle
    for i in range(throttle.limits.max_client_failures):
        throttle.failed(f"name{i}", "127.0.0.1", NOW_MS)
    resp_status = await _login(client, "bob")
    assert resp_status == 429
    body_status = await _login_from(
        str(client.make_url("/")).rstrip("/"), "127.0.0.3", "bob", PASSWORDS["bob"]
    )
    assert body_status[0] == 303
    clock = ctx.clock
    assert isinstance(clock, Clock)
    clock.now += 15 * MINUTE
    assert await _login(client, "bob") == 303


async def test_a_throttled_login_says_how_long_to_wait(client: Client) -> None:
    for _ in range(3):
        assert await _login(client, "alice", "guess") == 401
    token = await _csrf(client, "/login")
    resp = await client.post(
        "/login",
        data={"csrf": token, "name": "alice", "password": PASSWORDS["alice"], "next": ""},
        allow_redirects=False,
    )
    assert resp.status == 429
    assert "Try again in 1 second." in await resp.text()
    assert "15 minutes" not in await resp.text()


async def test_security_headers_on_every_response(client: Client, exchange: Exchange) -> None:
    responses = [
        await client.get("/login"),
        await client.get("/static/liaison.css"),
        await client.get("/audit", allow_redirects=False),
        await client.post("/logout"),
        await client.get("/nowhere"),
    ]
    assert await _login(client) == 303
    responses += [
        await client.get("/audit"),
        await client.get(f"/audit/message/{exchange.alert}"),
        await client.get("/audit/message/not-a-uuid"),
        await client.get("/audit/proof/999999"),
    ]
    assert [r.status for r in responses] == [200, 200, 302, 403, 404, 200, 200, 404, 404]
    for r in responses:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (r.url, name)
    css = await responses[1].text()
    assert responses[1].content_type == "text/css"
    assert "@media print" in css


# --- what the pages show --------------------------------------------------------------


def _indexes(body: str) -> list[int]:
    return [int(i) for i in re.findall(r'<td class="num">(\d+)</td>', body)]


async def test_exchange_log_pages_newest_first_with_keyset_links(
    client: Client, audit: AuditLog
) -> None:
    assert await _login(client) == 303
    seen: list[int] = []
    path = "/audit?agency=KHM/IMMIGRATION&all=1"
    pages = 0
    while path:
        body = await (await client.get(path)).text()
        rows = _indexes(body)
        assert 0 < len(rows) <= 50
        seen += rows
        pages += 1
        m = re.search(r'<a href="([^"]+)" rel="next">', body)
        path = m.group(1).replace("&amp;", "&") if m else ""
    assert pages == 3
    assert len(seen) == 120
    assert seen == sorted(seen, reverse=True)
    assert seen[0] == audit.size - 1
    # The unfiltered log starts at the newest entry, and shows the log size.
    body = await (await client.get("/audit?all=1")).text()
    assert _indexes(body)[0] == audit.size - 1
    assert f"{audit.size:,} entries" in body


async def test_search_filters(client: Client, exchange: Exchange) -> None:
    assert await _login(client) == 303

    async def rows(query: str) -> list[int]:
        resp = await client.get("/audit?all=1&" + query)
        assert resp.status == 200, query
        return _indexes(await resp.text())

    assert len(await rows(f"case_ref={CASE}")) == 7
    assert await rows(f"msg_id={exchange.alert.upper()}") == [
        exchange.indexes["alert relayed MMR"],
        exchange.indexes["alert relayed MYS"],
        exchange.indexes["alert accepted"],
    ]
    assert await rows("code=ixb.E_SIGNATURE") == [exchange.indexes["rejected"]]
    assert await rows("event=rejected&country=mmr") == [exchange.indexes["rejected"]]
    assert len(await rows("country=MMR&type=alert")) == 4  # to MMR, and from MMR
    assert len(await rows("agency=THA/DSI-ATHD&event=relayed")) == 3
    assert await rows("from=2000-01-01&to=2000-01-02") == []
    assert len(await rows("from=2026-11-18&to=2026-11-18&type=alert")) == 4
    for bad in (
        "from=yesterday",
        "msg_id=12345",
        "before=-1",
        "after=x",
        "before=3&after=2",
        "period=2d",
        "all=yes",
        "case_ref=" + "x" * 500,
    ):
        assert (await client.get("/audit?" + bad)).status == 400, bad


async def test_values_from_the_log_are_escaped(
    client: Client, audit: AuditLog, parties: Parties
) -> None:
    w = _Writer(audit, NOW_MS)
    mid = w.mid()
    w.add(
        AuditEvent.REJECTED,
        msg_id=mid,
        type="alert",
        sender="MMR/MOHA-ATTU",
        recipients=("THA/DSI-ATHD",),
        case_ref="<script>alert(1)</script>",
        peer="MMR",
        code="ixb.E_SCHEMA",
        detail='"><img src=x onerror=alert(2)>',
    )
    w.flush()
    assert await _login(client) == 303
    for path in ("/audit?case_ref=%3Cscript%3Ealert(1)%3C/script%3E", f"/audit/message/{mid}"):
        body = await (await client.get(path)).text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        assert "<script>" not in body
        assert "<img" not in body
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in body


async def test_a_case_ref_with_markup_is_escaped_on_every_page_that_shows_it(
    client: Client, ctx: LiaisonContext, audit: AuditLog, exchange: Exchange
) -> None:
    """Peer-supplied values reach the templates as text: in cells, attributes and options."""
    evil = "<script>alert('x')</script>"
    w = _Writer(audit, NOW_MS)
    mid = w.mid()
    w.add(
        AuditEvent.ACCEPTED,
        msg_id=mid,
        type="alert",
        sender="MMR/MOHA-ATTU",
        recipients=("THA/DSI-ATHD",),
        case_ref=evil,
        peer="MMR",
        detail=evil,
    )
    w.flush()
    ctx.witness_status = lambda: [WitnessRow("MMR", "we witness them", 1, None, NOW_MS, evil, True)]
    ctx.deadlines = lambda now: [
        DeadlineRow(mid, evil, evil, (evil,), evil, now - 1, now + 1, False)
    ]
    assert await _login(client) == 303
    escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
    for path in (
        "/audit",
        "/audit?case_ref=" + evil,  # echoed into the search form's value attribute
        f"/audit/message/{mid}",
        "/audit/witness",
        "/audit/deadlines",
        "/login?next=/audit?case_ref=" + evil,
    ):
        resp = await client.get(path)
        assert resp.status == 200, path
        body = await resp.text()
        assert "<script" not in body, path
        assert escaped in body, path


async def test_trail_and_inclusion_proof(
    client: Client, audit: AuditLog, exchange: Exchange
) -> None:
    assert await _login(client) == 303
    body = await (await client.get(f"/audit/message/{exchange.alert}")).text()
    trail = body.split("What this hub did with it")[1].split("Read and answered")[0]
    events = re.findall(r'class="ev ev-(\w+)"', trail)
    assert events == ["accepted", "relayed", "relayed"]
    answers = body.split("Read and answered")[1].split("What the peer hubs shared")[0]
    assert re.findall(r'class="ev ev-(\w+)">\w+</span></td><td>([A-Z/-]+)<', answers) == [
        ("read", "MYS/RMP-ATIPSOM")
    ]
    assert exchange.receipt in answers
    assert "H2" in body
    assert "MYS/RMP-ATIPSOM, MMR/MOHA-ATTU" in re.sub(r"<[^>]+>", "", body)
    assert "no onward dissemination" in body  # what H2 means, spelled out
    assert hashlib.sha256(b"payload 1").hexdigest() in body
    assert exchange.receipt in body  # the receipt, tied to the alert by its case ref
    assert (
        'href="/audit/proof/{}">inclusion proof'.format(exchange.indexes["alert accepted"]) in body
    )

    index = exchange.indexes["alert accepted"]
    body = await (await client.get(f"/audit/proof/{index}")).text()
    assert "Verified" in body
    assert audit.root(exchange.checkpoint_size).hex() in body
    assert "signed checkpoint" in body
    for h in audit.inclusion_proof(index, exchange.checkpoint_size):
        assert h.hex() in body
    assert "— ixb.MYS.witness" in body  # the note with its cosignature

    newest = audit.size - 1
    body = await (await client.get(f"/audit/proof/{newest}")).text()
    assert "Verified" in body
    assert "newer than the latest signed checkpoint" in body


async def test_unknown_message_has_an_empty_trail(client: Client) -> None:
    assert await _login(client) == 303
    mid = "0193a1b2-0000-7000-8000-0000000000ff"
    body = await (await client.get(f"/audit/message/{mid}")).text()
    assert "has no entry for message" in body


async def test_witness_page_shows_checkpoint_cosignatures_and_alarms(
    client: Client, audit: AuditLog, exchange: Exchange
) -> None:
    assert await _login(client) == 303
    body = await (await client.get("/audit/witness")).text()
    assert 'class="alarm"' in body
    assert "Tampering alarm" in body
    assert "not consistent with the one of size 231" in body
    assert "split view" in body
    assert audit.root(exchange.checkpoint_size).hex() in body
    assert "not cosigned (yet)" in body  # MMR
    assert re.search(r"<td>MYS</td><td>cosigned</td>", body)
    assert "alarm-row" in body
    # Every page carries the banner while an alarm stands.
    assert "Tampering alarm" in await (await client.get("/audit/deadlines")).text()


async def test_no_alarm_no_banner(client: Client, ctx: LiaisonContext, tmp_path: Path) -> None:
    quiet = AuditLog(tmp_path / "quiet.sqlite")
    try:
        ctx.audit = quiet
        ctx.witness_status = list
        assert await _login(client) == 303
        for path in ("/audit", "/audit/witness"):
            body = await (await client.get(path)).text()
            assert "Tampering alarm" not in body
        assert "has not signed a checkpoint yet" in body
    finally:
        quiet.close()


async def test_an_alarm_row_alone_raises_the_banner_on_the_witness_page(
    client: Client, ctx: LiaisonContext, tmp_path: Path
) -> None:
    quiet = AuditLog(tmp_path / "quiet.sqlite")
    try:
        ctx.audit = quiet
        ctx.witness_status = lambda: [
            WitnessRow("MMR", "we witness them", 9, "00" * 32, NOW_MS, "log reset to size 9", True)
        ]
        assert await _login(client) == 303
        body = await (await client.get("/audit/witness")).text()
        assert "Tampering alarm" in body
        assert "log reset to size 9" in body
    finally:
        quiet.close()


async def test_reconcile_page(client: Client, ctx: LiaisonContext) -> None:
    assert await _login(client) == 303
    body = await (await client.get("/audit/reconcile?peer=MYS")).text()
    assert "<strong>41</strong> matched" in body
    assert "<strong>1</strong> only in MYS" in body
    assert "0193a1b2-0000-7000-8000-000000000001" in body
    assert "handling H2" in body
    assert (await client.get("/audit/reconcile?peer=FRA")).status == 400

    async def broken(peer: str, since_ms: int) -> ReconcileReport:
        raise TimeoutError

    ctx.reconcile = broken
    assert (await client.get("/audit/reconcile?peer=MYS")).status == 502


async def test_without_reconcile_there_is_no_reconcile_page(ctx: LiaisonContext) -> None:
    ctx.reconcile = None
    c = await _client(ctx)
    try:
        assert await _login(c) == 303
        assert (await c.get("/audit/reconcile")).status == 404
        assert "/audit/reconcile" not in await (await c.get("/audit/witness")).text()
    finally:
        await c.close()


async def test_deadlines_overdue_first(client: Client, exchange: Exchange) -> None:
    assert await _login(client) == 303
    body = await (await client.get("/audit/deadlines")).text()
    assert "Overdue: 1" in body
    assert "Open: 1" in body
    assert body.index(exchange.doc_request) < body.index(exchange.query)
    assert "overdue by 1 h 0 min" in body
    assert "due in 2 d 0 h" in body


async def test_deadlines_list_the_reminders_sent(
    client: Client, ctx: LiaisonContext, exchange: Exchange
) -> None:
    assert await _login(client) == 303
    assert "Reminders sent: 0" in await (await client.get("/audit/deadlines")).text()
    reminder = ReminderRow(
        exchange.doc_request, "THA/IMMIGRATION", "THA/IMMIGRATION", NOW_MS, NOW_MS - 1
    )
    ctx.reminders = lambda: [reminder]
    body = await (await client.get("/audit/deadlines")).text()
    part = body[body.index("Reminders sent: 1") :]
    assert exchange.doc_request in part
    assert utc(NOW_MS) in part


async def test_an_acknowledged_mla_request_is_not_answered(
    client: Client, ctx: LiaisonContext, exchange: Exchange
) -> None:
    mla, answered = "0193a1b2-0000-7000-8000-0000000000a1", "0193a1b2-0000-7000-8000-0000000000a2"

    def rows(now: int) -> list[DeadlineRow]:
        return [
            # Its owner sent an mla.status (perhaps "acknowledged"): the request is not done.
            DeadlineRow(
                mla, "mla.request", "THA/AGO", ("MYS/AGC",), "normal", now - 1, now + 1, True
            ),
            DeadlineRow(
                answered,
                "person.query",
                "THA/DSI-ATHD",
                ("MYS/RMP",),
                "high",
                now - 9,
                now - 5,
                True,
            ),
        ]

    ctx.deadlines = rows
    assert await _login(client) == 303
    body = await (await client.get("/audit/deadlines")).text()
    open_part = body[body.index("Open: 1") : body.index("<h2>Answered or refused</h2>")]
    assert mla in open_part
    assert "status reported" in open_part
    answered_part = body[body.index("<h2>Answered or refused</h2>") :]
    assert answered in answered_part
    assert mla not in answered_part


# --- the exchange register ------------------------------------------------------------

_HEADS = re.compile(r'<tr class="[^"]*" data-head="(\d+)">')
_NEXT = re.compile(r'<a href="([^"]+)" rel="next">')
_PREV = re.compile(r'<a href="([^"]+)" rel="prev">')


def peer_steps_of(audit: AuditLog, x: Exchange) -> Callable[[Sequence[str]], list[PeerStep]]:
    """What MYS and MMR shared about the afternoon's messages."""

    def at(msg_id: str) -> int:
        return audit.search(AuditQuery(msg_id=msg_id), limit=10)[-1].at_ms

    def steps(ids: Sequence[str]) -> list[PeerStep]:
        shared = [
            PeerStep("MYS", 501, x.alert, "accepted", at(x.alert) + 900),
            PeerStep("MYS", 502, x.alert, "delivered", at(x.alert) + 1_400),
            PeerStep("MMR", 88, x.alert, "rejected", at(x.alert) + 1_100, "ixb.E_UNAUTHORISED"),
            PeerStep("MYS", 530, x.query, "delivered", at(x.query) + 2_000),
            PeerStep("MYS", 511, x.receipt, "accepted", at(x.receipt) - 600),  # the read, sent
        ]
        return [s for s in shared if s.msg_id in ids]

    return steps


@pytest.fixture
async def register(
    ctx: LiaisonContext, audit: AuditLog, exchange: Exchange
) -> AsyncIterator[Client]:
    ctx.peer_steps = peer_steps_of(audit, exchange)
    c = await _client(ctx)
    assert await _login(c) == 303
    yield c
    await c.close()


async def test_the_register_is_one_row_per_message_across_both_hubs(
    register: Client, exchange: Exchange, ctx: LiaisonContext
) -> None:
    body = await (await register.get(f"/audit?case_ref={CASE}")).text()
    # The alert (3 entries here, 3 shared), the query; the receipt and the read are hidden.
    assert body.count("data-head=") == 2
    assert body.index(exchange.query) < body.index(exchange.alert)  # newest first
    assert exchange.receipt not in body
    assert "ev-audit_read" not in body
    alert = body[body.index(f'data-head="{exchange.indexes["alert relayed MMR"]}"') :]
    alert = alert[: alert.index("</tr>")]
    assert "rejected by MMR (ixb.E_UNAUTHORISED)" in alert  # the peer's refusal shows first
    for hub, event in (("THA", "accepted"), ("MYS", "delivered"), ("MMR", "rejected")):
        assert re.search(rf'<span class="hub">{hub}</span> <span class="ev ev-{event}">', alert)
    assert "to MYS" in alert
    assert "to MMR" in alert
    query = body[body.index(exchange.query) :]
    assert "delivered at MYS" in query[: query.index("</tr>")]
    # The toggle shows every entry, receipts and reads included, and back.
    m = re.search(r'<a class="toggle" href="([^"]+)">Show every log entry</a>', body)
    assert m is not None
    every = await (await register.get(m.group(1).replace("&amp;", "&"))).text()
    assert len(_indexes(every)) == 7
    assert exchange.receipt in every
    assert "Show the register (one row per message)" in every
    # The rejection's reason is in the register's steps, escaped.
    body = await (await register.get("/audit?country=MMR&event=rejected")).text()
    assert "ixb.E_SIGNATURE: header signature does not verify" in body


async def test_the_register_pages_older_then_newer_and_shows_each_message_once(
    register: Client, exchange: Exchange
) -> None:
    path: str | None = "/audit?agency=KHM/IMMIGRATION"
    pages: list[list[int]] = []
    last = ""
    while path:
        last = path
        body = await (await register.get(path)).text()
        heads = [int(h) for h in _HEADS.findall(body)]
        assert 0 < len(heads) <= 50
        assert heads == sorted(heads, reverse=True)
        pages.append(heads)
        m = _NEXT.search(body)
        path = m.group(1).replace("&amp;", "&") if m else None
    assert [len(p) for p in pages] == [50, 50, 20]
    seen = [h for p in pages for h in p]
    assert len(seen) == len(set(seen)) == 120
    # And back, newer page by newer page, to the same pages.
    back: list[list[int]] = []
    path = last
    while path:
        body = await (await register.get(path)).text()
        back.append([int(h) for h in _HEADS.findall(body)])
        m = _PREV.search(body)
        path = m.group(1).replace("&amp;", "&") if m else None
    assert back[::-1] == pages
    assert 'rel="prev"' not in await (await register.get("/audit?agency=KHM/IMMIGRATION")).text()


async def test_a_message_is_on_the_page_of_its_newest_entry(
    register: Client, audit: AuditLog, exchange: Exchange
) -> None:
    """Its older entries, further down the log, do not list it again on an older page."""
    w = _Writer(audit, NOW_MS)
    for _ in range(3):
        w.add(
            AuditEvent.DELIVERED,
            msg_id=exchange.alert,
            type="alert",
            sender="THA/DSI-ATHD",
            recipients=("THA/IMMIGRATION",),
        )
    w.flush()
    heads: list[int] = []
    path: str | None = "/audit"
    while path:
        body = await (await register.get(path)).text()
        heads += [int(h) for h in _HEADS.findall(body)]
        m = _NEXT.search(body)
        path = m.group(1).replace("&amp;", "&") if m else None
    assert audit.size - 1 in heads
    assert exchange.indexes["alert accepted"] not in heads
    assert len(heads) == len(set(heads))


async def test_prefix_search_and_the_last_7_days(
    register: Client, exchange: Exchange, ctx: LiaisonContext
) -> None:
    async def heads(query: str) -> int:
        resp = await register.get("/audit?" + query)
        assert resp.status == 200, query
        return (await resp.text()).count("data-head=")

    assert await heads("q=TIP-2026") == 2  # case refs that start so
    assert await heads("q=mmr-attu") == 1  # in any case
    assert await heads("q=" + exchange.rejected[:28]) == 1  # a message id's first characters
    assert await heads("q=" + exchange.alert.upper()) == 1  # a whole id: the indexed search
    assert await heads("q=ZZZ") == 0
    assert await heads("period=7d&q=TIP-2026") == 2
    clock = ctx.clock
    assert isinstance(clock, Clock)
    clock.now += 8 * 86_400_000
    assert await _login(register) == 303  # the session did not outlive 8 days
    assert await heads("period=7d&q=TIP-2026") == 0
    assert await heads("period=30d&q=TIP-2026") == 2


async def test_a_search_exports_as_csv_and_the_export_is_recorded(
    register: Client, exchange: Exchange, ctx: LiaisonContext, audit: AuditLog
) -> None:
    w = _Writer(audit, NOW_MS)
    w.add(
        AuditEvent.ACCEPTED,
        msg_id=w.mid(),
        type="alert",
        sender="THA/DSI-ATHD",
        recipients=("MYS/RMP-ATIPSOM",),
        case_ref="=HYPERLINK(1)",
    )
    w.flush()
    resp = await register.get(f"/audit/export.csv?case_ref={CASE}")
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="ixb-THA-register-')
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0][:3] == ["msg_id", "type", "sender"]
    assert [r[0] for r in rows[1:]] == [exchange.query, exchange.alert]
    assert rows[2][7] == "rejected by MMR (ixb.E_UNAUTHORISED)"
    assert "MYS delivered" in rows[2][8]
    reads = ctx.record_read
    assert isinstance(reads, Reads)
    assert reads.calls[-1] == ("alice", f"export csv rows=2 case_ref={CASE}")
    every = await register.get(f"/audit/export.csv?case_ref={CASE}&all=1")
    assert len(list(csv.reader(io.StringIO(await every.text())))) == 1 + 7
    risky = await (await register.get("/audit/export.csv?q=%3DHYPER")).text()
    assert "'=HYPERLINK(1)" in risky  # a spreadsheet shows it, never runs it
    anonymous = await _client(ctx)
    try:
        resp = await anonymous.get("/audit/export.csv", allow_redirects=False)
        assert resp.status == 302
    finally:
        await anonymous.close()


async def test_the_proof_page_shows_cosignatures_and_its_download_verifies(
    register: Client, parties: Parties, ctx: LiaisonContext
) -> None:
    body = await (await register.get("/audit/proof/3")).text()
    cosig = body[body.index('<table class="log cosig">') :]
    cosig = cosig[: cosig.index("</table>")]
    assert re.search(r"<td>MYS</td><td>✔ cosigned</td>", cosig)
    assert re.search(r"<td>MMR</td><td>not cosigned \(yet\)</td>", cosig)
    assert "cosigned by MYS" in body
    assert "ixb audit verify ixb-THA-leaf-3 --federation federation.toml" in body
    resp = await register.get("/audit/proof/3/export.zip")
    assert resp.status == 200
    assert resp.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await resp.read())) as z:
        files = {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
    trust = TrustAnchors(
        "ixb-test",
        {"THA": parties[HUB].signing.public, "MYS": parties["MYS/HUB"].signing.public},
    )
    got = verify_export(
        files["manifest.json"], files["checkpoint.note"], files["entries.jsonl"], trust
    )
    assert [i for i, _ in got.entries] == [3]
    assert list(got.witnesses) == ["MYS"]
    reads = ctx.record_read
    assert isinstance(reads, Reads)
    assert reads.calls[-1] == ("alice", "proof export 3")
    # A leaf no signed checkpoint covers yet has a proof page, but nothing to download.
    newest = ctx.audit.size - 1
    assert (await register.get(f"/audit/proof/{newest}")).status == 200
    assert (await register.get(f"/audit/proof/{newest}/export.zip")).status == 404


async def test_errors_are_pages_of_the_site(client: Client, ctx: LiaisonContext) -> None:
    resp = await client.get("/no/such/page")
    assert resp.status == 404
    assert resp.content_type == "text/html"
    body = await resp.text()
    assert "<h1>Not found</h1>" in body
    assert '<link rel="stylesheet" href="/static/liaison.css">' in body
    assert '<a href="/login">Log in</a>' in body
    assert resp.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert await _login(client) == 303
    for path, status, text in (
        ("/audit/message/not-an-id", 404, "Not a message id."),
        ("/audit/proof/99999999", 404, "This hub&#39;s log has no leaf #99999999."),
        ("/nothing", 404, "Not found"),
    ):
        resp = await client.get(path)
        assert resp.status == status, path
        body = await resp.text()
        assert text in body, path
        assert "Exchange register" in body  # the navigation of a logged-in reader
        assert "Log out" in body
    resp = await client.post("/audit")
    assert resp.status == 405
    assert "Method not allowed" in await resp.text()
    assert "GET" in resp.headers["Allow"]


async def test_the_reconcile_window_is_chosen(client: Client, ctx: LiaisonContext) -> None:
    asked: list[int] = []

    async def compare(peer: str, since_ms: int) -> ReconcileReport:
        asked.append(since_ms)
        return await _reconcile(peer, since_ms)

    ctx.reconcile = compare
    assert await _login(client) == 303
    body = await (await client.get("/audit/reconcile?peer=MYS")).text()
    assert asked[-1] == NOW_MS - 7 * 86_400_000  # by default the last 7 days, not since 1970
    assert '<option value="7d" selected>' in body
    body = await (await client.get("/audit/reconcile?peer=MYS&window=30d")).text()
    assert asked[-1] == NOW_MS - 30 * 86_400_000
    assert '<option value="30d" selected>' in body
    body = await (await client.get("/audit/reconcile?peer=MYS&window=all")).text()
    assert asked[-1] == 0
    assert "over all time" in body
    assert (await client.get("/audit/reconcile?peer=MYS&window=2y")).status == 400
    assert len(asked) == 3
    reads = ctx.record_read
    assert isinstance(reads, Reads)
    assert ("alice", "reconcile peer=MYS window=30d") in reads.calls


async def test_an_actor_is_shown_with_a_space_before_by(client: Client, exchange: Exchange) -> None:
    assert await _login(client) == 303
    body = await (await client.get("/audit?all=1&event=audit_read")).text()
    assert "audit case_ref=TIP-2026-0117 by bob" in body
    assert "auditby" not in body


async def _login_via(client: Client, forwarded: str, name: str, password: str) -> int:
    token = await _csrf(client, "/login")
    resp = await client.post(
        "/login",
        data={"csrf": token, "name": name, "password": password, "next": ""},
        headers={"X-Forwarded-For": forwarded},
        allow_redirects=False,
    )
    return resp.status


async def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled(
    ctx: LiaisonContext,
) -> None:
    ctx.trusted_proxies = frozenset({"127.0.0.1"})
    c = await _client(ctx)
    try:
        for _ in range(3):
            assert await _login_via(c, "203.0.113.9", "alice", "guess") == 401
        assert await _login_via(c, "203.0.113.9", "alice", PASSWORDS["alice"]) == 429
        # A forged hop left of the real one changes nothing: the proxy appended the real one.
        forged = "198.51.100.1, 203.0.113.9"
        assert await _login_via(c, forged, "alice", PASSWORDS["alice"]) == 429
        # The officer, behind the same proxy from another address, logs in.
        assert await _login_via(c, "198.51.100.7", "alice", PASSWORDS["alice"]) == 303
    finally:
        await c.close()


async def test_without_a_trusted_proxy_forwarded_headers_are_ignored(client: Client) -> None:
    for i in range(3):
        assert await _login_via(client, f"203.0.113.{i}", "alice", "guess") == 401
    # The guesser cannot escape its back-off by claiming another address.
    assert await _login_via(client, "198.51.100.7", "alice", PASSWORDS["alice"]) == 429


async def test_a_long_prefix_search_stops_at_its_bound_and_goes_on_older(
    ctx: LiaisonContext, audit: AuditLog, exchange: Exchange
) -> None:
    app = web.Application()
    setup_liaison(app, ctx, limits=replace(LIMITS, register_scan=40))
    c = TestClient(TestServer(app))
    await c.start_server()
    try:
        assert await _login(c) == 303
        path: str | None = "/audit?q=TIP-2026"
        found: list[str] = []
        stops = 0
        last = ""
        while path:
            last = path
            body = await (await c.get(path)).text()
            found += [m for m in (exchange.alert, exchange.query) if m in body]
            stops += "This page stopped reading at entry" in body
            m = _NEXT.search(body)
            path = m.group(1).replace("&amp;", "&") if m else None
        assert stops >= audit.size // 40 - 1  # each page read at most 40 entries
        assert sorted(found) == sorted([exchange.alert, exchange.query])  # none lost, none twice
        # And back towards the newest, in bounded steps too.
        back: list[str] = []
        path = last
        while path:
            body = await (await c.get(path)).text()
            back += [m for m in (exchange.alert, exchange.query) if m in body]
            m = _PREV.search(body)
            path = m.group(1).replace("&amp;", "&") if m else None
        assert sorted(back) == sorted(found)
    finally:
        await c.close()


async def test_the_trail_shows_what_the_peers_shared(register: Client, exchange: Exchange) -> None:
    body = await (await register.get(f"/audit/message/{exchange.alert}")).text()
    shared = body.split("What the peer hubs shared about it")[1].split("Other entries in case")[0]
    rows = re.findall(r"<tr[^>]*><td>(\w+)</td>.*?class=\"ev ev-(\w+)\"", shared, re.S)
    assert rows == [("MYS", "accepted"), ("MMR", "rejected"), ("MYS", "delivered")]
    assert "ixb.E_UNAUTHORISED" in shared
    body = await (await register.get(f"/audit/message/{exchange.doc_request}")).text()
    assert "No peer has shared an entry about this message yet" in body


async def test_the_register_shows_who_read_and_answered_a_message(
    register: Client, exchange: Exchange, audit: AuditLog
) -> None:
    """Receipts and replies are linked by their entries' in_reply_to (SPEC §13.1)."""
    body = await (await register.get(f"/audit?msg_id={exchange.doc_request}")).text()
    assert body.count("data-head=") == 1
    doc = body[body.index(f'<a class="mid" href="/audit/message/{exchange.doc_request}"') :]
    doc = doc[: doc.index("</tr>")]
    read_at = utc(
        audit.entries(exchange.indexes["doc read"], exchange.indexes["doc read"] + 1)[0].at_ms
    )
    status = re.search(r'<td class="status"><strong>([^<]*)</strong>', doc)
    assert status is not None
    assert status.group(1) == (
        f"read by THA/IMMIGRATION at {read_at} UTC; "
        f"answered by THA/IMMIGRATION (doc.verify.response) at {status.group(1)[-23:-4]} UTC"
    )
    assert re.search(
        r'<span class="ev ev-read">read</span> <span class="extra">by THA/IMMIGRATION', doc
    )
    assert "MMR/MOHA-ATTU" not in doc  # a stranger's receipt is no read
    # Refusals rank above reads; the alert's read shows in its steps, here and at MYS.
    body = await (await register.get(f"/audit?case_ref={CASE}")).text()
    alert = body[body.index(f'data-head="{exchange.indexes["alert relayed MMR"]}"') :]
    alert = alert[: alert.index("</tr>")]
    assert "<strong>rejected by MMR (ixb.E_UNAUTHORISED)</strong>" in alert
    for hub in ("THA", "MYS"):
        assert re.search(
            rf'<span class="hub">{hub}</span> <span class="ev ev-read">read</span> '
            r'<span class="extra">by MYS/RMP-ATIPSOM</span>',
            alert,
        ), hub
    csv = await (await register.get(f"/audit/export.csv?msg_id={exchange.doc_request}")).text()
    assert f"read by THA/IMMIGRATION at {read_at} UTC" in csv
