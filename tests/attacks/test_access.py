"""Reaching around the hub: another agency's subjects, a foreign link account injecting into
a country's internal subjects (SPEC §8: NATS permissions refuse, nothing is stored), and the
liaison web pages (login required, no path traversal, values from the wire escaped)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import aiohttp
import nats.errors
import pytest
import pytest_asyncio
from yarl import URL

from protocols import subjects
from protocols.envelope import decode_envelope
from protocols.errors import IxbError
from protocols.identifiers import format_message_id, parse_agency
from tests.attacks.kit import (
    ALERT,
    DSI,
    IMM,
    LIAISON_PASSWORD,
    RMP,
    Bench,
    bench,
    drain_until,
    forge,
    header_fields,
    id_of,
    nats_conn,
    publish_raw,
    refused_at,
    rejection,
    still_serving,
)
from tests.nats_fixtures import Conn
from transport.streams import HUB_CONSUMER, INBOX_STREAM, INGRESS_STREAM, in_stream, out_stream

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def b(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bench]:
    base = tmp_path_factory.mktemp("attacks-access")
    async with bench(base, liaison_password=LIAISON_PASSWORD) as running:
        yield running


async def _last_seq(b: Bench, country: str, stream: str) -> int:
    creds = b.fed.deployment.plan.hub_credentials(country)
    conn = await nats_conn(b.fed, country, creds)
    try:
        return (await conn.nc.jetstream().stream_info(stream)).state.last_seq
    finally:
        await conn.nc.close()


async def _refused_publishes(conn: Conn, forbidden: list[str]) -> None:
    js = conn.nc.jetstream()
    for subject in forbidden:
        with pytest.raises(nats.errors.Error):  # a timeout, or no responders: no ack
            await js.publish(subject, b"forged", headers={"Nats-Msg-Id": subject}, timeout=0.3)
        await conn.wait_error(f'permissions violation for publish to "{subject}"')


async def _nothing_for_dsi(b: Bench) -> None:
    """DSI's inbox holds nothing but RMP's next genuine alert (no forged bytes, no refusals)."""
    probe = await b[RMP].send(ALERT, [DSI])
    assert await drain_until(b[DSI], probe) == [format_message_id(probe)]


async def test_agency_cannot_publish_or_read_on_another_agencys_subjects(b: Bench) -> None:
    auth = b.fed.deployment.plan.agency_credentials("THA", "DSI-ATHD")
    ingress = await _last_seq(b, "THA", INGRESS_STREAM)
    conn = await nats_conn(b.fed, "THA", auth, inbox_prefix=subjects.reply_prefix("DSI-ATHD"))
    try:
        imm = parse_agency(IMM)
        await _refused_publishes(
            conn,
            [
                subjects.ingress(imm),  # publishing as IMMIGRATION
                subjects.inbox(imm),  # writing into another's inbox
                subjects.inbox(parse_agency(DSI)),  # or one's own, as if the hub
                subjects.cross_border("THA", "MYS"),  # or straight onto a link
                f"$JS.API.STREAM.PURGE.{INBOX_STREAM}",
            ],
        )
        # reading: IMMIGRATION's durable consumer, its inbox subject, its reply inbox
        js = conn.nc.jetstream()
        other = await js.pull_subscribe_bind(durable="IMMIGRATION", stream=INBOX_STREAM)
        with pytest.raises(nats.errors.TimeoutError):
            await other.fetch(1, timeout=0.5)
        await conn.wait_error(f'"$js.api.consumer.msg.next.{INBOX_STREAM}.immigration"')
        for subject in (subjects.inbox(imm), "_INBOX_IMMIGRATION.>", ">"):
            await conn.nc.subscribe(subject)
            await conn.wait_error(f'permissions violation for subscription to "{subject}"')
    finally:
        await conn.nc.close()
    assert await _last_seq(b, "THA", INGRESS_STREAM) == ingress  # nothing stored
    await still_serving(b)


async def test_foreign_link_account_cannot_inject_into_internal_subjects(b: Bench) -> None:
    """MYS's hub user in its THA link account (what a compromised MYS controls) publishes on
    THA's internal subjects and calls THA's JetStream API across the leaf: the leaf's
    permissions drop all of it (no stream acknowledges, no API answers), nothing is stored
    in THA and nothing reaches THA's agencies. A MYS agency's subjects live in another
    account, which the link account cannot see at all."""
    creds = b.fed.deployment.plan.link_credentials("MYS", "THA")
    tha_ingress = await _last_seq(b, "THA", INGRESS_STREAM)
    mys_ingress = await _last_seq(b, "MYS", INGRESS_STREAM)
    conn = await nats_conn(b.fed, "MYS", creds)
    try:
        js = conn.nc.jetstream()
        for subject in (
            subjects.ingress(parse_agency(DSI)),  # THA's ingress, over the leaf
            subjects.inbox(parse_agency(DSI)),  # THA's inboxes
            subjects.cross_border("THA", "MYS"),  # THA's own outgoing link subject
            subjects.ingress(parse_agency(RMP)),  # its own country's agency subjects
        ):
            with pytest.raises(nats.errors.Error):  # no stream acknowledges it
                await js.publish(subject, b"forged", headers={"Nats-Msg-Id": subject}, timeout=0.5)
        api = "$JS.THA.API"
        for subject in (
            f"{api}.STREAM.PURGE.{out_stream('MYS')}",
            f"{api}.STREAM.MSG.DELETE.{out_stream('MYS')}",
            f"{api}.CONSUMER.MSG.NEXT.{in_stream('MYS')}.{HUB_CONSUMER}",
            f"{api}.CONSUMER.DELETE.{in_stream('MYS')}.{HUB_CONSUMER}",
            subjects.directory_request("THA"),
        ):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await conn.nc.request(subject, b"{}", timeout=0.5)
        # the read-only API it may use answers from THA's link account, where the
        # country's own streams do not exist
        reply = await conn.nc.request(f"{api}.STREAM.INFO.{INGRESS_STREAM}", b"", timeout=2)
        assert json.loads(reply.data)["error"]["code"] == 404
    finally:
        await conn.nc.close()
    assert await _last_seq(b, "THA", INGRESS_STREAM) == tha_ingress
    assert await _last_seq(b, "MYS", INGRESS_STREAM) == mys_ingress
    await _nothing_for_dsi(b)
    await still_serving(b)


# --- the liaison pages ---------------------------------------------------------------------

PAGES = ("/audit", "/audit/witness", "/audit/deadlines", "/audit/reconcile?peer=MYS")
TRAVERSALS = (
    "/audit/../../etc/passwd",
    "/audit/%2e%2e/%2e%2e/etc/passwd",
    "/audit/..%2f..%2fetc%2fpasswd",
    "/audit/message/..%2f..%2f..%2fetc%2fpasswd",
    "/audit/message/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/audit/proof/..%2f..%2fetc%2fpasswd",
    "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/audit/message/%252e%252e%252fetc%252fpasswd",
)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def decode_fails(data: bytes) -> bool:
    try:
        decode_envelope(data)
    except IxbError:
        return True
    return False


def _base(b: Bench) -> str:
    port = b.fed.hubs["THA"].service.http_port
    assert port is not None
    return f"http://127.0.0.1:{port}"


async def _login(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(f"{base}/login") as resp:
        assert resp.status == 200
        m = _CSRF.search(await resp.text())
    assert m is not None
    form = {"csrf": m.group(1), "name": "liaison", "password": LIAISON_PASSWORD, "next": ""}
    async with http.post(f"{base}/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with http.get(URL(url, encoded=True), allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location", ""), await resp.text()


async def test_liaison_pages_need_a_login_and_resist_traversal(b: Bench) -> None:
    base = _base(b)
    msg_id = await b[DSI].send(ALERT, [RMP])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for path in (*PAGES, f"/audit/message/{format_message_id(msg_id)}", "/audit/proof/0"):
            status, location, _ = await _get(http, base + path)
            assert status == 302 and location.startswith("/login?next=/audit"), path
        for path in TRAVERSALS:  # anonymous: a login redirect or not found, never a file
            status, location, body = await _get(http, base + path)
            assert status in (302, 400, 404), (path, status)
            assert status != 302 or location.startswith("/login"), (path, location)
            assert "root:" not in body, path
        await _login(http, base)
        for path in TRAVERSALS:  # logged in: still nothing outside the pages
            status, _, body = await _get(http, base + path)
            assert status in (302, 400, 404), (path, status)
            assert "root:" not in body, path
        status, _, body = await _get(http, base + "/audit")
        assert status == 200 and "liaison" in body
    assert await drain_until(b[RMP], msg_id) == [format_message_id(msg_id)]
    await still_serving(b)


async def test_script_in_a_case_reference_is_refused_and_escaped_on_the_pages(b: Bench) -> None:
    """A case reference is a reference (SPEC §4.2: no markup can pass its grammar): a header
    carrying a script is refused, and what the pages show of it — the search echoed back,
    the refusal's detail quoting the input — is escaped."""
    evil = "<script>alert('x')</script>"
    dsi = b[DSI]
    header = header_fields(dsi.identity, [RMP], dsi.clock(), case_ref=evil)
    data = forge(dsi, header)
    msg_id = id_of(data, header["id"])  # type: ignore[arg-type]  # the header does not parse
    assert decode_fails(data)
    assert await publish_raw(dsi, data, msg_id)
    assert (await rejection(dsi, msg_id, by="THA/HUB")).receipt.code == "ixb.E_SCHEMA"
    await refused_at(b, "THA", msg_id, "ixb.E_SCHEMA")
    base = _base(b)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, base)
        search = "/audit?case_ref=%3Cscript%3Ealert('x')%3C%2Fscript%3E"  # echoed in the form
        for path in ("/audit", search, f"/audit/message/{format_message_id(msg_id)}"):
            status, _, body = await _get(http, base + path)
            assert status == 200, path
            assert "<script" not in body, path
            assert "alert(&#39;x&#39;)" in body or "script" not in body, path
        _, _, body = await _get(
            http, base + "/audit?case_ref=%3Cscript%3Ealert('x')%3C%2Fscript%3E"
        )
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in body
    await still_serving(b)
