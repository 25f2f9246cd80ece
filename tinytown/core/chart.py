"""The status page's chart: queue depth and live agents over the last hours, as an inline SVG
drawn on the server (no JavaScript). Pure: samples in, markup out.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_COLOUR = "#d9480f"
AGENTS_COLOUR = "#1971c2"
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 34, 8, 10, 22


@dataclass(frozen=True)
class Sample:
    at_ms: int  # when it was taken (Redis clock)
    queued: int  # tasks waiting for a worker
    in_flight: int  # tasks a worker holds
    live_agents: int  # workers alive by their heartbeat


def _x(at_ms: int, start_ms: int, span_ms: int, width: int) -> float:
    inner = width - MARGIN_LEFT - MARGIN_RIGHT
    return MARGIN_LEFT + inner * (at_ms - start_ms) / span_ms


def _y(value: int, top: int, height: int) -> float:
    inner = height - MARGIN_TOP - MARGIN_BOTTOM
    return MARGIN_TOP + inner * (1 - value / top)


def _line(points: list[tuple[float, float]], colour: str, label: str) -> str:
    if not points:
        return ""
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (
        f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2" '
        f'stroke-linejoin="round"><title>{label}</title></polyline>'
    )


def _held(points: list[tuple[float, float]], right: float) -> list[tuple[float, float]]:
    """Steps, not slopes: each value holds until the next sample, and the last one until now
    (townhall skips the samples of quiet intervals, in which nothing shown changed)."""
    out: list[tuple[float, float]] = []
    for x, y in points:
        if out:
            out.append((x, out[-1][1]))
        out.append((x, y))
    if out and out[-1][0] < right:
        out.append((right, out[-1][1]))
    return out


def chart_svg(
    samples: list[Sample], *, now_ms: int, hours: int = 6, width: int = 600, height: int = 160
) -> str:
    """Two lines over the last ``hours``: tasks queued (waiting for a worker) and live agents,
    on one scale from 0 to the largest value seen (at least 1), each value held until the
    next sample."""
    span_ms = hours * 3600 * 1000
    start_ms = now_ms - span_ms
    shown = sorted((s for s in samples if start_ms <= s.at_ms <= now_ms), key=lambda s: s.at_ms)
    top = max([1] + [max(s.queued, s.live_agents) for s in shown])
    queue = [(_x(s.at_ms, start_ms, span_ms, width), _y(s.queued, top, height)) for s in shown]
    agents = [
        (_x(s.at_ms, start_ms, span_ms, width), _y(s.live_agents, top, height)) for s in shown
    ]
    right = _x(now_ms, start_ms, span_ms, width)
    queue, agents = _held(queue, right), _held(agents, right)
    bottom = height - MARGIN_BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="queue depth and live agents, last {hours} hours" '
        f'class="chart">',
        f'<line x1="{MARGIN_LEFT}" y1="{bottom}" x2="{width - MARGIN_RIGHT}" y2="{bottom}" '
        'stroke="#adb5bd"/>',
        f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{bottom}" '
        'stroke="#adb5bd"/>',
        f'<text x="{MARGIN_LEFT - 4}" y="{MARGIN_TOP + 4}" text-anchor="end">{top}</text>',
        f'<text x="{MARGIN_LEFT - 4}" y="{bottom}" text-anchor="end">0</text>',
        f'<text x="{MARGIN_LEFT}" y="{height - 6}">-{hours}h</text>',
        f'<text x="{width - MARGIN_RIGHT}" y="{height - 6}" text-anchor="end">now</text>',
        _line(queue, QUEUE_COLOUR, "tasks queued"),
        _line(agents, AGENTS_COLOUR, "live agents"),
    ]
    if not shown:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">'
            "no samples yet</text>"
        )
    parts.append("</svg>")
    return "".join(p for p in parts if p)
