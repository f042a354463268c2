"""The liaison pages in a real headless Chromium (Debian's, driven by Playwright).

What an officer does: log in, search by case reference, open a message's
trail and its inclusion proof, see the tampering alarm. The app runs on a
real socket (127.0.0.1, random port) over a real audit log. Screenshots for
the README are written to ``docs/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from broker.audit.log import AuditLog
from broker.web.app import setup_liaison
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
    await page.get_by_label("Case ref").fill(CASE)
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"case_ref=TIP-2026-0117"))
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
