"""/report from a running daemon over a seeded database, in a real headless Chromium.

Debian's chromium is driven by playwright. The screenshot goes to tests/artifacts/ (ignored
by git). Without /usr/bin/chromium the test is skipped, except under CI, which installs it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from hangupsms.config import TemplateConfig, load_config
from hangupsms.daemon import Daemon
from hangupsms.models import PlannedMessage
from hangupsms.render import Renderer
from hangupsms.replay import AmiReplayServer
from hangupsms.store import Store
from tests.lab import SECRET, USER, fake_twilio
from tests.outboxrig import _call
from tests.webrig import web_config

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
# Without the background-networking flags chromium's own connections fail on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DAY = 86_400
CUSTOMERS = ["+447700900101", "+447700900102", "+447700900103"]
AGENTS = [("agent1", "support"), ("agent2", "sales")]


async def _seed(db: Path, now: float) -> None:
    """Two weeks of calls: messages, receipts, clicks, ratings and opt-outs on most days."""
    renderer = Renderer({"t": TemplateConfig("t", "Thanks {{ customer_name }}")})
    store = await Store.open(db)
    try:
        for day in range(14):
            for index in range(1 + day % 4):
                number = CUSTOMERS[index % 3]
                call = _call(f"seed.{day}.{index}", number)
                planned = PlannedMessage("thanks", "customer", number, "twilio", "t",
                                         renderer.render("t", {"customer_name": "X"}))
                await store.record_call(call, number, [planned], now - day * DAY - index)
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT m.id, m.call_id, m.to_number, m.created_at FROM messages m"
                            " ORDER BY m.id").fetchall()
        for position, (message_id, call_id, number, created) in enumerate(rows):
            delivery = "undelivered" if position % 5 == 0 else "delivered"
            conn.execute("UPDATE messages SET state = 'sent', delivery = ?,"
                         " attempt_started_at = ? WHERE id = ?", (delivery, created, message_id))
            agent, queue = AGENTS[position % 2]
            if position % 3 != 2:
                conn.execute("INSERT INTO inbound (sid, from_number, to_number, body, kind,"
                             " received_at) VALUES (?,?,?,?,?,?)",
                             (f"SMseed{position}", number, "+447700900000", "5", "rating",
                              created + 60))
                conn.execute(
                    "INSERT INTO ratings (inbound_id, call_id, message_id, customer, agent_id,"
                    " queue, score, at) VALUES (?,?,?,?,?,?,?,?)",
                    (position, call_id, message_id, number, agent, queue,
                     5 if agent == "agent1" else 3, created + 60))
            if position % 3 == 0:
                conn.execute("INSERT INTO clicks (token, message_id, call_id, customer, tag, at)"
                             " VALUES (?,?,?,?,?,?)",
                             (f"t{position}", message_id, call_id, number, "", created + 30))
            if position % 7 == 0:
                conn.execute("INSERT INTO suppression_log (number, action, reason, source, at)"
                             " VALUES (?, 'add', 'replied STOP', 'sms', ?)", (number, created))


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    return CHROMIUM


async def test_report_page_renders_its_plots_in_chromium(tmp_path: Path, chromium: Path) -> None:
    from playwright.async_api import async_playwright

    await _seed(tmp_path / "h.db", time.time())
    async with fake_twilio() as twilio, AmiReplayServer([], username=USER, secret=SECRET) as ami:
        config = web_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url)
        daemon = Daemon(load_config(config))
        runner = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(30):
                await daemon.ready.wait()
            assert daemon.web is not None
            url = f"http://127.0.0.1:{daemon.web.port}/report?days=20"
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(chromium), args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 900, "height": 900})
                    answer = await page.goto(url)
                    assert answer is not None and answer.status == 200
                    charts = page.locator("svg.chart")
                    assert await charts.count() == 6
                    titles = [await charts.nth(i).get_attribute("aria-label") for i in range(6)]
                    assert titles[0] == "Messages per day"
                    volumes = charts.nth(0).locator("rect.bar")
                    assert await volumes.count() == 21  # 20 days back and today
                    heights = [float(await volumes.nth(i).get_attribute("height") or 0)
                               for i in range(21)]
                    assert sum(1 for h in heights if h > 0) == 14
                    box = await charts.nth(0).bounding_box()
                    assert box is not None and box["width"] > 300 and box["height"] > 100
                    rate = charts.nth(1).locator("polyline.line")
                    assert await rate.count() == 1
                    agents = charts.nth(4).locator("rect.bar")
                    assert [await agents.nth(i).get_attribute("data-value")
                            for i in range(await agents.count())] == ["5", "3"]
                    shot = ARTIFACTS / "report.png"
                    png = await page.screenshot(path=str(shot), full_page=True)
                    print(f"report screenshot: {shot}")
                    assert len(png) > 10_000
                finally:
                    await browser.close()
        finally:
            daemon.stop.set()
            await runner
