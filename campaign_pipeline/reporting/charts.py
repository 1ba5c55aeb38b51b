"""The report's charts, drawn here as SVG strings to inline in the page.

Each function takes a part of the report.json document (already aggregated: a chart never
sees a recipient row, so a million recipients draw as fast as a hundred) and returns an
``<svg ...>...</svg>`` string without the XML prolog. Text stays ``<text>``: the numbers can
be searched and read by a screen reader, and each chart has a ``<title>``. The size is a
``viewBox``, so the page's CSS scales a chart to its width.

Why not a plotting library: matplotlib was tried first. A run writes its report whenever a
task ends, so every luigi run paid about 0.3 s to import matplotlib and 0.4 s
to draw the six charts; over the ~300 reports the test suite writes that took ``make test``
from 4 min to 6 min 10 s on 2 cores (tests/test_errors.py, test_delivery.py and
test_stops.py: 53 s without a report, 68 s with matplotlib's charts, 56 s with the charts
left out). Three kinds of chart (stacked bars, a step line, lines) are a few rectangles,
paths and labels, drawn here in about a millisecond each, with no dependency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

# Each status's colour, in stacking order; a dry run's "would_send" stands where "sent" does.
# The Okabe-Ito palette (Okabe & Ito, "Color Universal Design", 2008), told apart with each
# kind of colour blindness; greys (told apart by lightness) for what is not an outcome yet,
# and for skipped rows no reason splits.
STATUS_COLOURS = {
    "sent": "#009E73",  # bluish green
    "would_send": "#009E73",
    "failed": "#D55E00",  # vermillion
    "unknown": "#E69F00",  # orange
    "pending": "#999999",
    "in_flight": "#CCCCCC",
    "skipped": "#555555",
}
# Skipped rows split by kind of reason (suppressed, frequency cap, missing, invalid,
# duplicate contact), each in an Okabe-Ito colour no status has; a kind beyond these stays
# in the plain skipped grey, labelled "other reasons": a colour used twice, or a shade of
# one, would tell two reasons apart for nobody.
SKIP_COLOURS = ["#0072B2", "#56B4E9", "#CC79A7", "#F0E442", "#000000"]
CHANNEL_COLOURS = ["#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e"]
LIMIT_COLOUR = "#c62828"
TIMELINE_COLOUR = "#1565c0"
AXIS_COLOUR = "#888888"
INK = "#1f2933"
# sizes in viewBox units; the page shows a chart 520 to 760 pixels wide
WIDTH = 640
FONT = 12  # tick labels, axis labels, legend
TITLE_FONT = 13
CHAR = 0.6  # a character's width in ems, a little more than a sans-serif font's average


def nice_ticks(high: float, count: int = 6, *, integer: bool = False) -> list[float]:
    """Ticks from 0 up to the first one at or above *high*, at most *count* steps of 1, 2 or
    5 times a power of ten (``nice_ticks(295)`` is 0, 50, ... 300): labels a reader takes in
    at a glance. *integer* keeps the step whole, for counts of recipients."""
    high = max(float(high), 1e-9)
    step = nice_step(high / max(count, 1))
    if integer:
        step = max(step, 1.0)
    steps = math.ceil(high / step - 1e-9)
    return [_tidy(i * step) for i in range(steps + 1)]


def nice_step(rough: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least *rough*."""
    power = 10.0 ** math.floor(math.log10(rough))
    for factor in (1, 2, 5, 10):
        if factor * power >= rough * (1 - 1e-9):
            return _tidy(factor * power)
    return _tidy(10 * power)  # pragma: no cover (10 always fits)


def _tidy(value: float) -> float:
    """0.30000000000000004 as 0.3: ticks are printed."""
    return float(f"{value:.12g}")


def _fitted_ticks(
    high: float, length: float, *, integer: bool = False, across: bool = True, most: int = 6
) -> list[float]:
    """The most ticks (at most *most* steps) whose labels fit along an axis *length* long:
    side by side on an x axis (*across*), a line of text apart on a y axis."""
    for count in range(most, 0, -1):
        ticks = nice_ticks(high, count, integer=integer)
        room = max(_width(_tick(t)) for t in ticks) + 8 if across else FONT * 1.6
        if len(ticks) < 2 or length / (len(ticks) - 1) >= room:
            break
    return ticks


def segment_bars(channel: dict) -> str:
    """A horizontal stacked bar per segment (and one for all segments) of a channel's
    recipients by status; skipped is split by kind of reason where the data has it."""
    counts = channel.get("counts") or {}
    statuses = [s for s in STATUS_COLOURS if s in counts]
    reasons = _top_reasons(channel.get("skipped_by_reason") or {})
    rows = [("all segments", counts, channel.get("skipped_by_reason") or {})]
    for segment, by in (channel.get("by_segment") or {}).items():
        rows.append((segment, by, by.get("skipped_by_reason")))
    legend = [(STATUS_COLOURS[s], s.replace("_", " ")) for s in statuses]
    if reasons:
        split = all(by for _, row, by in rows if row.get("skipped"))
        cut = {r for r, n in (channel.get("skipped_by_reason") or {}).items() if n} - set(reasons)
        plain = {
            (True, True): "skipped: other reasons",
            (True, False): "skipped: other reasons, or not split by reason",
            (False, True): "",  # every skipped row has its reason's colour
            (False, False): "skipped",
        }[bool(cut), split]
        legend = [(c, plain if label == "skipped" else label) for c, label in legend]
        legend = [entry for entry in legend if entry[1]]
        legend += [(colour, f"skipped: {reason}") for reason, colour in reasons.items()]

    left = 16 + max(_width(label) for label, _, _ in rows)
    plot = WIDTH - left - 24
    highest = max(sum(row.get(s, 0) or 0 for s in statuses) for _, row, _ in rows)
    ticks = _fitted_ticks(highest or 1, plot, integer=True)
    scale = plot / ticks[-1]
    top, pitch, bar = 8, 30, 20
    bottom = top + pitch * len(rows)
    shapes = []
    for i, (label, row, skipped_by) in enumerate(rows):
        y = top + i * pitch + (pitch - bar) / 2
        shapes.append(_text(left - 8, y + bar / 2 + FONT * 0.35, label, anchor="end"))
        x = 0.0
        for status, colour, value in _pieces(row, statuses, skipped_by, reasons):
            if value:
                tip = f"{label}: {value:,} {status.replace('_', ' ')}"
                shapes.append(_rect(left + x * scale, y, value * scale, bar, colour, tip))
            x += value
    shapes += _x_axis(ticks, left, scale, bottom, "recipients")
    legend_top = bottom + 48
    drawn, height = _legend(legend, 16, legend_top, WIDTH - 32)
    shapes += drawn
    name = f"bars-{channel.get('task', '')}"
    title = f"{channel.get('task', '')}: recipients by status, all segments and each segment"
    return _svg(name, title, WIDTH, legend_top + height + 6, shapes)


def _pieces(row: dict, statuses: list[str], skipped_by: dict | None, reasons: dict):
    """(status, colour, count) of one bar in stacking order; skipped as one piece per reason
    where the row has them, what the reasons do not cover as one plain skipped piece."""
    for status in statuses:
        value = row.get(status, 0) or 0
        if status != "skipped" or not (skipped_by and reasons):
            yield status, STATUS_COLOURS[status], value
            continue
        covered = 0
        for reason, colour in reasons.items():
            n = skipped_by.get(reason, 0) or 0
            covered += n
            yield f"skipped ({reason})", colour, n
        if value > covered:
            yield "skipped", STATUS_COLOURS["skipped"], value - covered


def _top_reasons(skipped_by: dict) -> dict[str, str]:
    """The kinds of skip reason in the data, most frequent first, each with its colour."""
    ordered = sorted((r for r, n in skipped_by.items() if n), key=lambda r: -skipped_by[r])
    return dict(zip(ordered, SKIP_COLOURS, strict=False))


def timeline(channel: dict) -> str:
    """Messages the provider accepted per second over the send, against the configured
    limit, with the achieved rate as a ratio of it in the title (after the channel's
    ``name``, when the dict has one)."""
    line = channel.get("timeline") or {}
    accepted = line.get("accepted") or []
    step = float(line.get("bin_seconds") or 1)
    rates = [n / step for n in accepted]
    unit, per = ("minutes", 60.0) if step * len(rates) > 600 else ("seconds", 1.0)
    span = step * len(rates) / per or 1.0
    limit = line.get("limit_per_second")
    left, top, right, height = 56, 34, WIDTH - 16, 260
    bottom = height - 44
    # the axis ends where the send does, so a tick beyond it is left out: allow more steps
    x_ticks = [t for t in _fitted_ticks(span, right - left, most=10) if t <= span * (1 + 1e-9)]
    y_ticks = _fitted_ticks(max([*rates, limit or 0, 1]) * 1.15, bottom - top, across=False)

    def x(seconds: float) -> float:
        return left + seconds / per / span * (right - left)

    def y(rate: float) -> float:
        return bottom - rate / y_ticks[-1] * (bottom - top)

    title = f"{channel.get('name', '')}  {_timeline_title(line)}".strip()
    shapes = [_text(left, 18, title, size=TITLE_FONT, weight="bold")]
    shapes += _y_axis(y_ticks, left, right, y, "accepted / s", top, bottom)
    if rates:
        # one path for all the bins, however many: a few kilobytes at 300 bins
        outline = [f"M{_n(x(0))},{_n(bottom)}"]
        for i, rate in enumerate(rates):
            outline.append(f"V{_n(y(rate))}H{_n(x((i + 1) * step))}")
        outline.append(f"V{_n(bottom)}")
        d = "".join(outline)
        shapes.append(f'<path d="{d}Z" fill="{TIMELINE_COLOUR}" fill-opacity="0.35"/>')
        shapes.append(f'<path d="{d}" fill="none" stroke="{TIMELINE_COLOUR}"/>')
    if limit:
        at = _n(y(limit))
        shapes.append(
            f'<line x1="{left}" x2="{right}" y1="{at}" y2="{at}" stroke="{LIMIT_COLOUR}" '
            'stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        label = f"limit {_number(limit)}/s"
        shapes.append(_text(left + 4, y(limit) - 5, label, size=FONT - 1, fill=LIMIT_COLOUR))
    shapes += _x_axis(x_ticks, left, (right - left) / span, bottom, "")
    label = f"{unit} after {_clock(line.get('start'))}"
    shapes.append(_text((left + right) / 2, bottom + 38, label, anchor="middle"))
    return _svg(f"timeline-{channel.get('task', '')}", title, WIDTH, height, shapes)


def _timeline_title(line: dict) -> str:
    if not line.get("accepted"):
        return "nothing was sent"
    achieved = line.get("achieved_per_second")
    if achieved is None:
        return "rate: too short to measure"
    ratio = line.get("ratio")
    of_limit = f" = {ratio:.0%} of the limit" if ratio is not None else ""
    return f"achieved {_number(achieved)}/s{of_limit}"


def history_lines(history: dict) -> str:
    """Sent per channel per date (top) and the failure rate per channel per date (bottom),
    a line per channel with a marker per date, the channels' legend on the right."""
    entries = history.get("dates", [])
    dates = [entry["date"] for entry in entries]
    channels: list[str] = []
    for entry in entries:
        channels += [name for name in entry.get("channels", {}) if name not in channels]
    found = {name: [e.get("channels", {}).get(name) for e in entries] for name in channels}
    sent = {name: [c.get("sent", 0) if c else None for c in cs] for name, cs in found.items()}
    rate = {
        name: [
            100 * c["failure_rate"] if c and c.get("failure_rate") is not None else None for c in cs
        ]
        for name, cs in found.items()
    }
    legend_width = 36 + max([_width(name) for name in channels] or [0])
    left, right = 64, WIDTH + 80 - legend_width - 16
    height = 430
    panels = [
        ("sent per date", sent, 34, 214, True, ""),
        ("failure rate per date (failed + unknown, % of attempted)", rate, 262, 390, False, "%"),
    ]
    spacing = (right - left) / max(len(dates), 1)

    def x(i: int) -> float:
        return left + spacing * (i + 0.5)

    shapes = []
    for title, series, top, bottom, integer, unit in panels:
        values = [v for vs in series.values() for v in vs if v is not None]
        highest = max(values or [0])
        high = highest or 1 if integer else max(highest, 1.0) * 1.2
        ticks = _fitted_ticks(high, bottom - top, integer=integer, across=False)

        def y(value: float, top=top, bottom=bottom, ticks=ticks) -> float:
            return bottom - value / ticks[-1] * (bottom - top)

        shapes.append(_text(left, top - 12, title, size=TITLE_FONT, weight="bold"))
        shapes += _y_axis(ticks, left, right, y, "", top, bottom, unit=unit)
        for i, name in enumerate(channels):
            colour = CHANNEL_COLOURS[i % len(CHANNEL_COLOURS)]
            points = [(x(j), y(v)) for j, v in enumerate(series[name]) if v is not None]
            shapes.append(_line(series[name], x, y, colour))
            shapes.append(_markers(points, colour))
    shapes += _date_labels(dates, x, spacing, panels[-1][3])  # under the lower panel only
    for i, name in enumerate(channels):
        colour = CHANNEL_COLOURS[i % len(CHANNEL_COLOURS)]
        at = 40 + i * 20
        shapes.append(
            f'<path d="M{right + 16},{at}h20" stroke="{colour}" stroke-width="2" fill="none"/>'
        )
        shapes.append(_markers([(right + 26, at)], colour))
        shapes.append(_text(right + 42, at + FONT * 0.35, name))
    title = "sent and failure rate per channel per date"
    return _svg("history", title, WIDTH + 80, height, shapes)


def _line(values: list, x, y, colour: str) -> str:
    """One channel's line; a date without the channel is a gap in it."""
    d, pen_up = [], True
    for i, value in enumerate(values):
        if value is None:
            pen_up = True
            continue
        d.append(f"{'M' if pen_up else 'L'}{_n(x(i))},{_n(y(value))}")
        pen_up = False
    return f'<path d="{"".join(d)}" fill="none" stroke="{colour}" stroke-width="2"/>'


def _markers(points: Iterable[tuple[float, float]], colour: str, r: float = 3.5) -> str:
    """A dot at each point, all in one path."""
    d = "".join(
        f"M{_n(px - r)},{_n(py)}a{r},{r} 0 1,0 {2 * r},0a{r},{r} 0 1,0 {-2 * r},0"
        for px, py in points
    )
    return f'<path d="{d}" fill="{colour}"/>'


def _date_labels(dates: list[str], x, spacing: float, bottom: float) -> list[str]:
    """Each date under its point (month-day when there are several), every n-th one when
    they would not fit side by side."""
    labels = [d[5:] if len(dates) > 1 else d for d in dates]
    every = math.ceil((max(map(_width, labels or [""])) + 8) / max(spacing, 1))
    return [
        _text(x(i), bottom + 18, label, anchor="middle")
        for i, label in enumerate(labels)
        if i % every == 0
    ]


# --- the parts every chart is made of


def _x_axis(ticks: list, left: float, scale: float, bottom: float, label: str) -> list[str]:
    """The x axis at *bottom*: its line, a tick mark and label per tick, its label."""
    right = left + ticks[-1] * scale
    shapes = [_path(f"M{_n(left)},{_n(bottom)}H{_n(right)}")]
    marks = "".join(f"M{_n(left + t * scale)},{_n(bottom)}v4" for t in ticks)
    shapes.append(_path(marks))
    for tick in ticks:
        shapes.append(_text(left + tick * scale, bottom + 17, _tick(tick), anchor="middle"))
    if label:
        shapes.append(_text(left + (right - left) / 2, bottom + 36, label, anchor="middle"))
    return shapes


def _y_axis(ticks, left, right, y, label, top, bottom, unit: str = "") -> list[str]:
    """The y axis at *left*: its line, light grid lines, a label per tick, its label."""
    shapes = [_path(f"M{_n(left)},{_n(top)}V{_n(bottom)}H{_n(right)}")]
    grid = "".join(f"M{_n(left)},{_n(y(t))}H{_n(right)}" for t in ticks[1:])
    if grid:
        shapes.append(f'<path d="{grid}" stroke="#e4e7eb" fill="none"/>')
    for tick in ticks:
        shapes.append(_text(left - 6, y(tick) + FONT * 0.35, _tick(tick) + unit, anchor="end"))
    if label:
        middle = _n((top + bottom) / 2)
        shapes.append(
            f'<text transform="translate(14,{middle}) rotate(-90)" text-anchor="middle" '
            f'fill="{INK}">{escape(label)}</text>'
        )
    return shapes


def _legend(entries: list[tuple[str, str]], left: float, top: float, width: float):
    """Swatches with their labels in up to 4 columns, filled column by column as wide as
    their longest label; returns the shapes and the height they take."""
    if not entries:
        return [], 0
    for columns in (4, 3, 2, 1):
        rows = -(-len(entries) // columns)
        groups = [entries[c * rows : (c + 1) * rows] for c in range(columns)]
        widths = [22 + max(_width(label, FONT - 1) for _, label in g) for g in groups if g]
        if sum(widths) + 16 * (len(widths) - 1) <= width:
            break
    shapes, x = [], left
    for group, column_width in zip(groups, widths, strict=False):
        for row, (colour, label) in enumerate(group):
            at = top + row * 18
            shapes.append(
                f'<rect x="{_n(x)}" y="{_n(at)}" width="11" height="11" fill="{colour}"/>'
            )
            shapes.append(_text(x + 17, at + 10, label, size=FONT - 1))
        x += column_width + 16
    return shapes, rows * 18


def _svg(name: str, title: str, width: float, height: float, shapes: list[str]) -> str:
    """The chart as an inline ``<svg>``: no prolog and no namespace (inline in HTML an
    ``<svg>`` needs none, and the page then holds no URL at all), an id of its own for its
    title, a viewBox so it scales to the page."""
    ident = f"{name}-title"
    return (
        f'<svg class="chart" data-chart={quoteattr(name)} viewBox="0 0 {_n(width)} {_n(height)}" '
        f'width="{_n(width)}" height="{_n(height)}" role="img" aria-labelledby={quoteattr(ident)} '
        f'font-size="{FONT}">'
        f"<title id={quoteattr(ident)}>{escape(title)}</title>" + "".join(shapes) + "</svg>"
    )


def _text(x, y, text: str, *, anchor: str = "start", size: int = FONT, fill: str = INK,
          weight: str = "") -> str:  # fmt: skip
    extra = f' font-weight="{weight}"' if weight else ""
    extra += f' font-size="{size}"' if size != FONT else ""
    extra += f' text-anchor="{anchor}"' if anchor != "start" else ""
    return f'<text x="{_n(x)}" y="{_n(y)}" fill="{fill}"{extra}>{escape(text)}</text>'


def _rect(x, y, width, height, colour: str, tip: str) -> str:
    return (
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(width)}" height="{_n(height)}" '
        f'fill="{colour}"><title>{escape(tip)}</title></rect>'
    )


def _path(d: str) -> str:
    return f'<path d="{d}" stroke="{AXIS_COLOUR}" fill="none"/>'


def _n(value: float) -> str:
    """A coordinate with at most one decimal: the file stays small."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _width(text: str, size: int = FONT) -> float:
    """About how wide *text* is drawn (no font metrics here: a generous average)."""
    return len(text) * size * CHAR


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,g}"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"


def _clock(start: str | None) -> str:
    """``10:00:00 UTC`` from the timeline's ISO start, or "the start"."""
    if not start:
        return "the start"
    try:
        moment = datetime.fromisoformat(start)
    except ValueError:
        return start
    offset = moment.utcoffset() or timedelta(0)
    zone = "UTC" if offset == timedelta(0) else moment.strftime("UTC%z")
    return f"{moment:%H:%M:%S} {zone}"
