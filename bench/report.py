"""The issue's targets checked against the figures; the table `python -m bench` prints."""

from __future__ import annotations

from typing import Any

RSS_LIMIT_MB = 80.0
RSS_FLAT_MB = 2.0  # growth allowed from the first memory checkpoint to the last


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def verdicts(results: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 7 with the measured value; sections not run are left out."""
    checks = {
        "ingest_events_per_second": (_get(results, "ingest", "hangupsms", "events_per_second"),
                                     ">=", 150_000),
        "ingest_ratio_vs_panoramisk": (_get(results, "ingest", "ratio_vs_panoramisk"),
                                       ">=", 2.7),
        "endtoend_calls_per_second": (_get(results, "endtoend", "calls_per_second"),
                                      ">=", 300),
        "p99_ms_at_50_calls_per_second": (
            _get(results, "latency", "steady_50", "latency_ms", "p99"), "<=", 300),
        "peak_rss_mb": (_get(results, "memory", "peak_rss_mb"), "<=", RSS_LIMIT_MB),
        "rss_growth_mb": (_get(results, "memory", "rss_growth_mb_after_first_checkpoint"),
                          "<=", RSS_FLAT_MB),
    }
    out: dict[str, Any] = {}
    for name, (value, op, target) in checks.items():
        if value is not None:
            met = value >= target if op == ">=" else value <= target
            out[name] = {"value": value, "target": f"{op} {target}", "met": bool(met)}
    return out


def _latency(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    ms = figures["latency_ms"]
    kept = "" if figures.get("kept_up", True) else " (fell behind)"
    return f"{ms['p50']:.0f} / {ms['p99']:.0f} / {ms['max']:.0f} ms{kept}"


def _rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    ingest = results.get("ingest")
    if ingest:
        ours, theirs = ingest["hangupsms"], ingest["panoramisk"]
        rows += [
            (f"ingest events/s, hangupsms ({ingest['events']} events)",
             f"{ours['events_per_second']:,}"),
            ("ingest events/s, bare panoramisk", f"{theirs['events_per_second']:,}"),
            ("ingest ratio hangupsms / panoramisk (wall; CPU)",
             f"{ingest['ratio_vs_panoramisk']} ; {ingest['cpu_ratio_vs_panoramisk']}"),
            ("ingest CPU us/event, hangupsms / panoramisk",
             f"{ours['cpu_us_per_event']} / {theirs['cpu_us_per_event']}"),
        ]
    for name, figures in (results.get("ingest_filtered") or {}).items():
        rows.append((f"ingest calls/s with '{name}' eventfilter (none: "
                     f"{ingest['hangupsms']['calls_per_second'] if ingest else '-'})",
                     f"{figures['hangupsms']['calls_per_second']}"))
    labels = (("endtoend", "end to end"), ("endtoend_filtered", "end to end, minimal filter"))
    for key, label in labels:
        figures = results.get(key)
        if figures:
            rows.append((f"{label}: calls/s ({figures['calls']} calls blasted)",
                         f"{figures['calls_per_second']}"))
            rows.append((f"{label}: CPU ms/call (of it in the event loop)",
                         f"{figures['cpu_ms_per_call']} ({figures['loop_cpu_ms_per_call']})"))
    latency = results.get("latency") or {}
    if latency:
        rows.append(("latency p50 / p99 / max at 50 calls/s", _latency(latency.get("steady_50"))))
        at_max = latency.get("at_max")
        rate = f"{at_max['rate']:.0f}" if at_max else "-"
        rows.append((f"latency p50 / p99 / max at {rate} calls/s", _latency(at_max)))
    mem = results.get("memory")
    if mem:
        first = mem["checkpoints"][0]
        rows += [
            (f"tracker RSS at {first['calls']:,} / {mem['calls']:,} calls",
             f"{first['rss_mb']} / {mem['checkpoints'][-1]['rss_mb']} MB"),
            ("tracker peak RSS (baseline)", f"{mem['peak_rss_mb']} ({mem['baseline_rss_mb']}) MB"),
            ("tracker us/event, ms/call",
             f"{mem['tracker_us_per_event']}, {mem['tracker_ms_per_call']}"),
        ]
    stage = results.get("stages")
    if stage:
        rows += [
            ("plan (rules, render, number check) ms/call", f"{stage['plan_ms_per_call']}"),
            ("outbox ms: record_call / claim of 20 / finish",
             f"{stage['record_call_ms']} / {stage['claim_due_ms_per_batch_of_20']} / "
             f"{stage['finish_ms_per_message']}"),
        ]
    return rows


def table(report: dict[str, Any]) -> str:
    """A plain-text table: the figures, then each target met or not."""
    box = report["machine"]
    lines = [f"{report['mode']} run, {report['finished']}: {box['nproc']} x {box['cpu']}, "
             f"Python {box['python']}, load {box['load_average']}"]
    rows = _rows(report["results"])
    width = max((len(label) for label, _ in rows), default=10)
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    for name, verdict in report["targets"].items():
        mark = "met" if verdict["met"] else "NOT met"
        lines.append(f"  target {name}: {verdict['value']} ({verdict['target']}) {mark}")
    return "\n".join(lines)
