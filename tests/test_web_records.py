"""Retention deletes what the web side recorded about the calls it deletes."""

from __future__ import annotations

from pathlib import Path

from hangupsms.config import TemplateConfig
from hangupsms.models import PlannedMessage
from hangupsms.render import Renderer
from hangupsms.replies import Inbound, Receipt, apply_inbound, apply_receipt
from hangupsms.settings import WebConfig
from hangupsms.store import Store
from hangupsms.tracking import follow
from tests.outboxrig import _call

NUMBER = "+447700900123"
TABLES = ("links", "clicks", "receipts", "inbound", "ratings")


async def test_purge_takes_receipts_replies_links_and_clicks_with_the_call(
    tmp_path: Path,
) -> None:
    renderer = Renderer({"t": TemplateConfig("t", "Rate us: {{ link('https://a.example') }}")},
                        public_url="https://x.example")
    web = WebConfig(public_url="https://x.example", survey_rules=("survey",))
    store = await Store.open(tmp_path / "h.db")
    try:
        body = renderer.render("t", {})
        planned = PlannedMessage("survey", "customer", NUMBER, "twilio", "t", body)
        old, new = _call("1.1", NUMBER), _call("1.2", NUMBER)
        await store.record_call(old, NUMBER, [planned], 100.0)
        await store.execute_outside_transaction(
            "UPDATE messages SET state = 'sent', provider_id = 'SM1', attempt_started_at = 100")
        assert await follow(store, body.links[0].token, 110.0) is not None
        await apply_receipt(store, Receipt(None, "SM1", "delivered", None), 120.0)
        await apply_inbound(store, Inbound("SMin", NUMBER, "+4400", "5"), NUMBER, web, 130.0)
        # A newer call keeps its own records.
        await store.record_call(new, NUMBER, [PlannedMessage(
            "survey", "customer", NUMBER, "twilio", "t", renderer.render("t", {}))], 10_000.0)
        counts = {t: (await store.rows(f"SELECT COUNT(*) FROM {t}"))[0][0] for t in TABLES}  # noqa: S608
        assert counts == {"links": 2, "clicks": 1, "receipts": 1, "inbound": 1, "ratings": 1}
        assert await store.purge_before(old.ended_at + 1) == (1, 1)
        counts = {t: (await store.rows(f"SELECT COUNT(*) FROM {t}"))[0][0] for t in TABLES}  # noqa: S608
        assert counts == {"links": 1, "clicks": 0, "receipts": 0, "inbound": 0, "ratings": 0}
    finally:
        await store.close()
