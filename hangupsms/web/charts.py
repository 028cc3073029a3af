"""Small inline SVG charts, drawn on the server: no JavaScript, no CDN, works offline."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 640, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 14, 40


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *,
              colour: str = "#3b6ea5", maximum: float | None = None,
              value_format: str = "{:g}") -> str:
    """Vertical bars, one per label; `maximum` fixes the scale (1.0 for a rate)."""
    top = maximum if maximum is not None else max([*values, 1])
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    step = plot_w / max(len(values), 1)
    parts = [_frame(title, top, value_format)]
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = 0.0 if top <= 0 else plot_h * min(value, top) / top
        x = _LEFT + index * step + step * 0.1
        y = _TOP + plot_h - h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{step * 0.8:.1f}" '
            f'height="{h:.1f}" fill="{colour}" data-value="{value:g}">'
            f"<title>{escape(label)}: {escape(value_format.format(value))}</title></rect>")
    parts.append(_x_labels(labels, step))
    return _svg(title, parts)


def line_chart(title: str, labels: Sequence[str], values: Sequence[float | None], *,
               colour: str = "#2e8b57", maximum: float = 1.0,
               value_format: str = "{:.0%}") -> str:
    """A line through the known points (None leaves a gap), on a fixed scale."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    step = plot_w / max(len(values), 1)
    parts = [_frame(title, maximum, value_format)]
    points: list[str] = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value is None:
            continue
        x = _LEFT + index * step + step / 2
        y = _TOP + plot_h - plot_h * min(value, maximum) / maximum
        points.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                     f"<title>{escape(label)}: {escape(value_format.format(value))}</title>"
                     "</circle>")
    if len(points) > 1:
        parts.insert(1, f'<polyline class="line" fill="none" stroke="{colour}" '
                        f'stroke-width="2" points="{" ".join(points)}"/>')
    parts.append(_x_labels(labels, step))
    return _svg(title, parts)


def _frame(title: str, top: float, value_format: str) -> str:
    bottom = HEIGHT - _BOTTOM
    return (
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="#999"/>'
        f'<line x1="{_LEFT}" y1="{bottom}" x2="{WIDTH - _RIGHT}" y2="{bottom}" stroke="#999"/>'
        f'<text x="{_LEFT - 4}" y="{_TOP + 4}" text-anchor="end" font-size="10">'
        f"{escape(value_format.format(top))}</text>"
        f'<text x="{_LEFT - 4}" y="{bottom}" text-anchor="end" font-size="10">0</text>'
    )


def _x_labels(labels: Sequence[str], step: float) -> str:
    # At most about ten labels fit; the others stay in each bar's tooltip.
    every = max(1, len(labels) // 10)
    return "".join(
        f'<text x="{_LEFT + i * step + step / 2:.1f}" y="{HEIGHT - _BOTTOM + 14}" '
        f'text-anchor="middle" font-size="10">{escape(label[5:] if len(label) == 10 else label)}'
        "</text>"
        for i, label in enumerate(labels) if i % every == 0
    )


def _svg(title: str, parts: list[str]) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(parts)}</svg>"
    )
