"""`GET /report` and `hangupsms report --html`: one self-contained HTML page of figures."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape, unescape
from zoneinfo import ZoneInfo

from aiohttp import web

from hangupsms.reportdata import ReportData, Satisfaction, report_data
from hangupsms.store import Store
from hangupsms.web.charts import bar_chart, line_chart
from hangupsms.web.context import CONTEXT

DEFAULT_DAYS = 30
MAX_DAYS = 366
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:60em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em}
td.n,th.n{text-align:right}figure{margin:0 0 1em 0}figcaption{font-weight:600}
"""


async def build_report(store: Store, timezone: str, *, days: int, now: float) -> str:
    data = await report_data(store, now - days * 86_400, now, timezone)
    return render_report(data, timezone)


def render_report(data: ReportData, timezone: str) -> str:
    tz = ZoneInfo(timezone)
    labels = [row.day for row in data.days]
    span = (f"{datetime.fromtimestamp(data.since, tz):%Y-%m-%d} to "
            f"{datetime.fromtimestamp(data.until, tz):%Y-%m-%d} ({escape(timezone)})")
    charts = [
        bar_chart("Messages per day", labels, [r.messages for r in data.days]),
        line_chart("Delivery rate per day", labels, [r.delivery_rate for r in data.days]),
        bar_chart("Link clicks per day", labels, [r.clicks for r in data.days],
                  colour="#b5651d"),
        bar_chart("Opt-outs per day", labels, [r.opt_outs for r in data.days],
                  colour="#a33"),
        bar_chart("CSAT by agent (average of 1-5)", [s.name for s in data.by_agent],
                  [s.average for s in data.by_agent], colour="#6a5acd", maximum=5,
                  value_format="{:.1f}"),
        bar_chart("CSAT by queue (average of 1-5)", [s.name for s in data.by_queue],
                  [s.average for s in data.by_queue], colour="#6a5acd", maximum=5,
                  value_format="{:.1f}"),
    ]
    figures = "".join(
        f"<figure><figcaption>{escape(_caption(chart))}</figcaption>{chart}</figure>"
        for chart in charts)
    daily = _table(
        ("day", "messages", "sent", "delivered", "not delivered", "delivery rate", "clicks",
         "opt-outs", "ratings"),
        [(r.day, r.messages, r.sent, r.delivered, r.not_delivered,
          "" if r.delivery_rate is None else f"{r.delivery_rate:.0%}", r.clicks, r.opt_outs,
          r.ratings) for r in data.days if r.messages or r.clicks or r.opt_outs or r.ratings],
    )
    states = _table(("state", "messages"), sorted(data.states.items()))
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>hangupsms report</title>"
        f"<style>{_STYLE}</style></head><body><h1>hangupsms report</h1>"
        f"<p>{span}</p>{figures}"
        f"<h2>Per day</h2>{daily}<h2>Messages by state</h2>{states}"
        f"<h2>CSAT by agent</h2>{_csat(data.by_agent)}"
        f"<h2>CSAT by queue</h2>{_csat(data.by_queue)}</body></html>"
    )


def _caption(chart: str) -> str:
    """The chart's own title (its aria-label), shown above it."""
    start = chart.index('aria-label="') + len('aria-label="')
    return unescape(chart[start:chart.index('"', start)])


def _csat(rows: Sequence[Satisfaction]) -> str:
    return _table(("name", "ratings", "average"),
                  [(s.name, s.ratings, f"{s.average:.2f}") for s in rows])


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{v}</td>' if isinstance(v, int | float)
            else f"<td>{escape(str(v))}</td>"
            for v in row) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


async def page(request: web.Request) -> web.Response:
    """The last `?days=` (default 30) days; figures only, never a phone number."""
    context = request.app[CONTEXT]
    raw = request.query.get("days", "")
    days = 0
    if raw.isascii() and raw.isdigit():  # ASCII digits only: "²".isdigit() too
        # int() of thousands of digits raises; four are more than MAX_DAYS already.
        days = MAX_DAYS if len(raw.lstrip("0")) > 4 else int(raw)
    days = min(days, MAX_DAYS) if days > 0 else DEFAULT_DAYS
    html = await build_report(context.store, context.timezone, days=days, now=context.clock())
    return web.Response(text=html, content_type="text/html")
