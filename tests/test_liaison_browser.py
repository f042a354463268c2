"""The liaison pages in a real headless Chromium (Debian's, driven by Playwright).

What an officer does: log in, read the exchange register (one row per
message, with the peers' shared steps), toggle to every log entry, search by
case reference and by prefix, page older and newer, export a search as CSV,
open a message's trail and its inclusion proof (cosignatures shown, the
proof downloaded), see the tampering alarm. The app runs on a real socket
(127.0.0.1, random port) over a real audit log. Screenshots for the README
and docs are written to ``docs/``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from broker.audit.log import AuditLog
from broker.web.app import setup_liaison
from broker.web.limits import LIMITS, WebLimits
from broker.web.view import LiaisonContext, UserRecord
from tests.conftest import NOW_MS, Parties
from tests.test_liaison_http import (
    CASE,
    PASSWORDS,
    Clock,
    Exchange,
    Reads,
    _reconcile,
    build_exchange,
    deadline_rows,
    peer_steps_of,
    user_records,  # noqa: F401 - the session fixture, shared
    witness_rows,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
async def site(
    tmp_path: Path,
    parties: Parties,
    user_records: dict[str, UserRecord],  # noqa: F811
) -> AsyncIterator[tuple[str, LiaisonContext, Exchange]]:
    audit = AuditLog(tmp_path / "audit.sqlite")
    exchange = build_exchange(audit, parties, NOW_MS - 3 * 3600_000, filler=12)
    clock = Clock()
    ctx = LiaisonContext(
        hub_id="THA",
        audit=audit,
        users=user_records,
        clock=clock,
        record_read=Reads(),
        witness_status=lambda: witness_rows(audit, clock.now),
        deadlines=lambda now: deadline_rows(exchange, now),
        reconcile=_reconcile,
        peers=("MYS", "MMR"),
    )
    app = web.Application()
    setup_liaison(app, ctx)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}", ctx, exchange
    finally:
        await runner.cleanup()
        audit.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium (make test does)")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
            locale="en-GB",
            timezone_id="UTC",
        )
        try:
            yield context
        finally:
            await context.close()


def _watch_csp(page: Page) -> list[str]:
    """Anything our own CSP refused (an inline style, a script) is logged to the console."""
    errors: list[str] = []
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return errors


async def test_officer_logs_in_searches_opens_a_trail_and_sees_the_alarm(
    site: tuple[str, LiaisonContext, Exchange], browser: BrowserContext
) -> None:
    base, ctx, exchange = site
    page = browser.pages[0] if browser.pages else await browser.new_page()
    errors = _watch_csp(page)
    await _log_in(page, browser, base)
    await _search_and_open_the_trail(page, ctx, exchange)
    await _see_the_alarm_and_log_out(page, base)
    assert errors == []
    reads = ctx.record_read
    assert isinstance(reads, Reads)
    assert {actor for actor, _ in reads.calls} == {"alice"}
    assert f"audit case_ref={CASE}" in [what for _, what in reads.calls]


async def _log_in(page: Page, browser: BrowserContext, base: str) -> None:
    """Anonymous: sent to the login form; a wrong password first, then the right one."""
    await page.goto(base + "/audit")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.get_by_label("Name").fill("alice")
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
    await page.get_by_label("Name").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(base + "/audit")
    await expect(page.get_by_role("heading", name="Exchange register")).to_be_visible()

    cookies = {c["name"]: c for c in await browser.cookies()}
    assert cookies["ixb_session"]["httpOnly"] is True
    assert cookies["ixb_session"]["sameSite"] == "Strict"
    assert "ixb_prelogin" not in cookies


async def _search_and_open_the_trail(page: Page, ctx: LiaisonContext, exchange: Exchange) -> None:
    await page.get_by_label("Case ref", exact=True).fill(CASE)
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"case_ref=TIP-2026-0117"))
    await expect(page.locator("table.register tbody tr")).to_have_count(2)  # alert, query
    # Every entry of the case, the receipt and the hub's events among them.
    await page.get_by_role("link", name="Show every log entry").click()
    await expect(page).to_have_url(re.compile(r"all=1"))
    rows = page.locator("table.log tbody tr")
    await expect(rows).to_have_count(7)
    await expect(page.locator("table.log")).to_contain_text("THA/DSI-ATHD")
    DOCS.mkdir(exist_ok=True)
    await page.screenshot(path=str(DOCS / "liaison-audit.png"), full_page=True)

    # Open the alert's trail from the results.
    await page.locator(f'a.mid:text-is("{exchange.alert}")').first.click()
    await expect(page.get_by_role("heading", name="Message trail")).to_be_visible()
    trail = page.locator("table.trail tbody tr")
    await expect(trail).to_have_count(3)
    await expect(trail.nth(0)).to_contain_text("accepted")
    await expect(trail.nth(1)).to_contain_text("relayed")
    await expect(page.locator("dl.facts")).to_contain_text("H2")
    await page.screenshot(path=str(DOCS / "liaison-trail.png"), full_page=True)

    # Its inclusion proof against the signed checkpoint.
    await trail.nth(0).get_by_role("link", name="inclusion proof").click()
    await expect(page.get_by_role("heading", name="Inclusion proof")).to_be_visible()
    await expect(page.locator("p.ok")).to_contain_text("Verified")
    root = ctx.audit.root(exchange.checkpoint_size).hex()
    await expect(page.locator("dl.facts")).to_contain_text(root)


async def _see_the_alarm_and_log_out(page: Page, base: str) -> None:
    """The witness page: the tampering alarm cannot be missed. Then log out."""
    await page.get_by_role("link", name="Witnesses").click()
    banner = page.locator("section.alarm")
    await expect(banner).to_be_visible()
    await expect(banner.locator("h2")).to_have_text(re.compile("tampering alarm", re.IGNORECASE))
    await expect(banner).to_contain_text("split view")
    await expect(page.locator("tr.alarm-row")).to_contain_text("MMR")
    await page.screenshot(path=str(DOCS / "liaison-witness.png"), full_page=True)

    # Log out: back to the login form, and the pages are closed again.
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(base + "/login")
    await page.goto(base + "/audit/witness")
    await expect(page).to_have_url(re.compile(r"/login\?next="))


# --- the exchange register ------------------------------------------------------------


async def _serve(ctx: LiaisonContext, limits: WebLimits) -> tuple[str, web.AppRunner]:
    app = web.Application()
    setup_liaison(app, ctx, limits=limits)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}", runner


async def _logged_in(browser: BrowserContext, base: str) -> Page:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await page.goto(base + "/audit")
    await page.get_by_label("Name").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(base + "/audit")
    return page


async def test_the_register_shows_each_message_once_with_both_hubs_and_a_toggle(
    site: tuple[str, LiaisonContext, Exchange], browser: BrowserContext
) -> None:
    base, ctx, exchange = site
    ctx.peer_steps = peer_steps_of(ctx.audit, exchange)  # type: ignore[arg-type]
    page = await _logged_in(browser, base)
    errors = _watch_csp(page)
    register = page.locator("table.register tbody tr")
    # 12 document checks, the query, the rejection, the answer, the request, the alert.
    await expect(register).to_have_count(17)
    await expect(page.locator("table.register")).not_to_contain_text("audit_read")
    await expect(page.locator("table.register")).not_to_contain_text(exchange.receipt)
    alert = register.filter(has_text=exchange.alert)
    await expect(alert).to_have_count(1)
    await expect(alert.locator("td.status")).to_have_text("rejected by MMR (ixb.E_UNAUTHORISED)")
    # 3 here, 3 shared by peers, and the recipient's read receipt as each hub recorded it
    await expect(alert.locator("ol.steps li")).to_have_count(8)
    await expect(alert.locator("ol.steps")).to_contain_text("MYS delivered")
    await expect(alert.locator("ol.steps")).to_contain_text("THA read by MYS/RMP-ATIPSOM")
    await expect(alert.locator("ol.steps")).to_contain_text("MYS read by MYS/RMP-ATIPSOM")
    query = register.filter(has_text=exchange.query)
    await expect(query.locator("td.status")).to_have_text("delivered at MYS")
    # Read beats delivered: who read the document check, and who answered it, when.
    doc = register.filter(has_text=exchange.doc_request)
    await expect(doc.locator("td.status")).to_have_text(
        re.compile(
            r"^read by THA/IMMIGRATION at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; "
            r"answered by THA/IMMIGRATION \(doc\.verify\.response\) at .* UTC$"
        )
    )
    await expect(doc).not_to_contain_text("MMR/MOHA-ATTU")  # a stranger's receipt
    # The traffic with one peer, as the README shows it.
    await page.get_by_label("Country").fill("MYS")
    await page.get_by_role("button", name="Search").click()
    await expect(register).to_have_count(4)
    DOCS.mkdir(exist_ok=True)
    await page.set_viewport_size({"width": 1400, "height": 900})
    await page.screenshot(path=str(DOCS / "liaison-register.png"), full_page=True)
    await page.goto(base + "/audit")
    # The toggle: every entry, audit reads and receipts included; and back.
    await page.get_by_role("link", name="Show every log entry").click()
    await expect(page.get_by_role("heading", name="Every log entry")).to_be_visible()
    await expect(page.locator("table.log")).to_contain_text("audit_read")
    await expect(page.locator("table.log")).to_contain_text(exchange.receipt)
    await page.get_by_role("link", name="Show the register (one row per message)").click()
    await expect(register).to_have_count(17)
    # Prefix search: the first characters of a case ref.
    await page.get_by_label("Message id or case ref starts with").fill("tip-2026")
    await page.get_by_label("Period").select_option("7d")
    await page.get_by_role("button", name="Search").click()
    await expect(register).to_have_count(2)
    assert errors == []


async def test_the_register_pages_older_and_newer(
    site: tuple[str, LiaisonContext, Exchange], browser: BrowserContext
) -> None:
    _, ctx, _ = site
    base, runner = await _serve(ctx, replace(LIMITS, page_size=5))
    try:
        page = await _logged_in(browser, base)
        rows = page.locator("table.register tbody tr")
        pages: list[list[str | None]] = []
        while True:
            await expect(rows.first).to_be_visible()
            pages.append([await r.get_attribute("data-head") for r in await rows.all()])
            older = page.get_by_role("link", name="Older →")
            if not await older.count():
                break
            await older.click()
        assert [len(p) for p in pages] == [5, 5, 5, 2]
        heads = [int(h or -1) for p in pages for h in p]
        assert heads == sorted(heads, reverse=True)
        assert len(set(heads)) == 17
        await expect(page.get_by_role("link", name="← Newer")).to_be_visible()
        back: list[list[str | None]] = []
        while True:
            back.append([await r.get_attribute("data-head") for r in await rows.all()])
            newer = page.get_by_role("link", name="← Newer")
            if not await newer.count():
                break
            await newer.click()
            await expect(rows.first).to_be_visible()
        assert back[::-1] == pages
    finally:
        await runner.cleanup()


async def test_a_search_downloads_as_csv(
    site: tuple[str, LiaisonContext, Exchange], browser: BrowserContext
) -> None:
    base, ctx, exchange = site
    page = await _logged_in(browser, base)
    await page.get_by_label("Case ref", exact=True).fill(CASE)
    await page.get_by_role("button", name="Search").click()
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Export this search (CSV)").click()
    download = await info.value
    assert re.fullmatch(r"ixb-THA-register-\d{8}T\d{6}Z\.csv", download.suggested_filename)
    path = await download.path()
    text = await asyncio.to_thread(Path.read_text, path, "utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "msg_id"
    assert [r[0] for r in rows[1:]] == [exchange.query, exchange.alert]
    reads = ctx.record_read
    assert isinstance(reads, Reads)
    assert ("alice", f"export csv rows=2 case_ref={CASE}") in reads.calls


async def test_the_proof_page_shows_cosignatures_and_how_to_verify(
    site: tuple[str, LiaisonContext, Exchange], browser: BrowserContext
) -> None:
    base, _, exchange = site
    page = await _logged_in(browser, base)
    await page.goto(base + f"/audit/proof/{exchange.indexes['alert accepted']}")
    await expect(page.locator("p.ok")).to_contain_text("Verified")
    cosig = page.locator("table.cosig tbody tr")
    await expect(cosig.filter(has_text="MYS")).to_contain_text("✔ cosigned")
    await expect(cosig.filter(has_text="MMR")).to_contain_text("not cosigned (yet)")
    name = f"ixb-THA-leaf-{exchange.indexes['alert accepted']}"
    await expect(page.locator("pre.command")).to_contain_text(
        f"ixb audit verify {name} --federation federation.toml"
    )
    async with page.expect_download() as info:
        await page.get_by_role("link", name=f"Download {name}.zip").click()
    download = await info.value
    assert download.suggested_filename == f"{name}.zip"
    with zipfile.ZipFile(await download.path()) as z:
        assert sorted(z.namelist()) == [
            f"{name}/checkpoint.note",
            f"{name}/entries.jsonl",
            f"{name}/manifest.json",
        ]
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.screenshot(path=str(DOCS / "liaison-proof.png"), full_page=True)
