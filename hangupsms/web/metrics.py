"""The figures `/healthz` and `/metrics` report, and their Prometheus text form."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hangupsms.models import MessageState

# Twilio answers a create in 0.2-1 s; a slow minute shows in the upper buckets.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Why the web server refuses a request (the `reason` of hangupsms_web_refused_total).
REFUSALS = ("unsigned", "bad_signature", "content_type", "too_large", "malformed",
            "incomplete", "unknown_link")


@dataclass(frozen=True, slots=True)
class Health:
    """What `/healthz` reports; healthy when every part is."""

    ami: Mapping[str, bool]  # PBX name -> logged in now
    database: bool  # a write transaction can start
    sender: bool  # the sender task runs

    @property
    def ok(self) -> bool:
        return self.database and self.sender and all(self.ami.values())


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The daemon's figures at one scrape (counters since start, gauges now)."""

    health: Health
    events: int
    events_dropped: int
    event_queue: int
    calls_recorded: int
    calls_live: int
    messages: Mapping[str, int]  # state -> count
    delivery: Mapping[str, int]  # delivered/undelivered/failed -> count
    clicks: int
    replies: Mapping[str, int]  # kind -> count
    guard_tripped: bool  # the fraud guard holds every send until `guard release`
    guard_trips: int  # times it tripped, ever (from the policy's event log)
    held: Mapping[str, int]  # held messages by what holds them: guard | coupon


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.snapshot
        if s is None:
            return
        ami = GaugeMetricFamily("hangupsms_ami_connected", "1 while logged in to the PBX",
                                labels=["pbx"])
        for pbx, connected in s.health.ami.items():
            ami.add_metric([pbx], int(connected))
        yield ami
        yield GaugeMetricFamily("hangupsms_up", "1 when /healthz is healthy", int(s.health.ok))
        yield CounterMetricFamily("hangupsms_ami_events", "AMI events handled", s.events)
        yield CounterMetricFamily("hangupsms_ami_events_dropped",
                                  "AMI events dropped because the queue was full",
                                  s.events_dropped)
        yield GaugeMetricFamily("hangupsms_event_queue_depth", "AMI events waiting",
                                s.event_queue)
        yield CounterMetricFamily("hangupsms_calls_recorded", "calls recorded since start",
                                  s.calls_recorded)
        yield GaugeMetricFamily("hangupsms_calls_live", "calls being followed", s.calls_live)
        yield _labelled(GaugeMetricFamily, "hangupsms_messages", "messages by state", "state",
                        {state.value: s.messages.get(state.value, 0) for state in MessageState})
        yield _labelled(GaugeMetricFamily, "hangupsms_outbox_depth",
                        "messages waiting to be sent or checked", "state",
                        {k: s.messages.get(k, 0) for k in ("pending", "sending", "checking")})
        yield _labelled(GaugeMetricFamily, "hangupsms_messages_delivery",
                        "sent messages by the carrier's final status", "delivery",
                        {k: s.delivery.get(k, 0) for k in ("delivered", "undelivered", "failed")})
        yield GaugeMetricFamily("hangupsms_link_clicks", "tracked link clicks recorded",
                                s.clicks)
        yield _labelled(GaugeMetricFamily, "hangupsms_replies", "inbound replies by kind",
                        "kind", s.replies)
        yield GaugeMetricFamily("hangupsms_guard_tripped",
                                "1 while the fraud guard holds every send", int(s.guard_tripped))
        yield CounterMetricFamily("hangupsms_guard_trips", "times the fraud guard tripped",
                                  s.guard_trips)
        yield _labelled(GaugeMetricFamily, "hangupsms_messages_held",
                        "held messages by what holds them", "reason",
                        {k: s.held.get(k, 0) for k in ("guard", "coupon")})


def _labelled(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, doc: str, label: str,
    values: Mapping[str, int],
) -> GaugeMetricFamily | CounterMetricFamily:
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class Metrics:
    """One registry per daemon (tests run many): the latency histogram and the snapshot."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "hangupsms_provider_latency_seconds", "time a provider took to answer a send",
            ["provider"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.refused = Counter(
            "hangupsms_web_refused", "web requests refused, by reason (see web.refused logs)",
            ["reason"], registry=self.registry)
        for reason in REFUSALS:  # each shows as 0 before its first refusal: rate() works
            self.refused.labels(reason)
        self._collector = _SnapshotCollector()
        self.registry.register(self._collector)

    def observe_latency(self, provider: str, seconds: float) -> None:
        self.latency.labels(provider).observe(seconds)

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def render(self, snapshot: Snapshot) -> bytes:
        self._collector.snapshot = snapshot
        return generate_latest(self.registry)
