"""The report's charts, drawn by matplotlib as SVG strings to inline in the page.

Each function takes a part of the report.json document (already aggregated: a chart never
sees a recipient row, so a million recipients draw as fast as a hundred) and returns an
``<svg ...>...</svg>`` string without the XML prolog. Text stays text
(``svg.fonttype = "none"``): the file is small and its numbers can be searched. The figures
are made with :class:`matplotlib.figure.Figure` and the SVG canvas directly, so no global
backend is chosen and nothing is left open in pyplot's figure registry.
"""

from __future__ import annotations

import functools
import io
import re
from datetime import datetime, timedelta

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

# Each status's colour, in stacking order; a dry run's "would_send" stands where "sent" does.
STATUS_COLOURS = {
    "sent": "#2e7d32",
    "would_send": "#66bb6a",
    "failed": "#c62828",
    "unknown": "#ef6c00",
    "pending": "#9e9e9e",
    "in_flight": "#bdbdbd",
    "skipped": "#5c6bc0",
}
# Skipped rows split by kind of reason (consent outcomes and contact problems), in shades.
# (none is the plain "skipped" colour, which stands for skipped rows the data does not split)
SKIP_COLOURS = ["#283593", "#3949ab", "#7986cb", "#9fa8da", "#c5cae9", "#1a237e", "#8e99f3"]
CHANNEL_COLOURS = ["#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e"]
LIMIT_COLOUR = "#c62828"
STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888888",
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "legend.frameon": False,
}


def _styled(draw):
    """Run *draw* under the report's matplotlib style, leaving the caller's rcParams alone."""

    @functools.wraps(draw)
    def styled(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return styled


@_styled
def segment_bars(channel: dict) -> str:
    """A horizontal stacked bar per segment (and one for all segments) of a channel's
    recipients by status; skipped is split by kind of reason where the data has it."""
    statuses = [s for s in STATUS_COLOURS if s in channel.get("counts", {})]
    reasons = _top_reasons(channel.get("skipped_by_reason", {}))
    rows = [("all segments", channel.get("counts", {}), channel.get("skipped_by_reason", {}))]
    for segment, counts in channel.get("by_segment", {}).items():
        rows.append((segment, counts, counts.get("skipped_by_reason")))
    handles = [_patch(STATUS_COLOURS[s], s.replace("_", " ")) for s in statuses]
    if reasons:
        if all(by for _, counts, by in rows if counts.get("skipped")):
            handles = [h for h in handles if h.get_label() != "skipped"]
        handles += [_patch(colour, f"skipped: {r}") for r, colour in reasons.items()]
    # heights in inches: the bars, the x axis with its label, the legend's rows below it
    columns = min(len(handles), 4) or 1
    bars, axis, legend = 0.3 * len(rows) + 0.15, 0.5, 0.2 * -(-len(handles) // columns) + 0.1
    height = bars + axis + legend + 0.1
    figure = Figure(figsize=(6.4, height))
    axes = figure.add_axes((0.2, (axis + legend) / height, 0.76, bars / height))
    labels = []
    for y, (label, counts, skipped_by) in enumerate(reversed(rows)):
        labels.append(label)
        left = 0
        for status in statuses:
            value = counts.get(status, 0) or 0
            if status == "skipped" and skipped_by and reasons:
                left = _split_skipped(axes, y, left, value, skipped_by, reasons)
                continue
            if value:
                axes.barh(y, value, left=left, color=STATUS_COLOURS[status], height=0.6)
            left += value
    axes.set_yticks(range(len(labels)), labels)
    axes.tick_params(axis="y", length=0)
    axes.set_xlabel("recipients")
    axes.xaxis.get_major_locator().set_params(integer=True)
    if handles:
        figure.legend(
            handles=handles,
            loc="lower left",
            ncols=columns,
            fontsize=8,
            bbox_to_anchor=(0.02, 0.02),
            handlelength=1,
        )
    return _svg(figure, f"bars-{channel.get('task', '')}")


def _top_reasons(skipped_by: dict) -> dict[str, str]:
    """The kinds of skip reason in the data, most frequent first, each with its colour."""
    ordered = sorted((r for r, n in skipped_by.items() if n), key=lambda r: -skipped_by[r])
    return {reason: SKIP_COLOURS[i % len(SKIP_COLOURS)] for i, reason in enumerate(ordered)}


def _split_skipped(axes, y: int, left: float, value: int, by: dict, reasons: dict) -> float:
    """Draw one bar's skipped part as one piece per reason; what the reasons do not cover
    (the data split another way) stays one plain skipped piece."""
    covered = 0
    for reason, colour in reasons.items():
        n = by.get(reason, 0) or 0
        if n:
            axes.barh(y, n, left=left + covered, color=colour, height=0.6)
            covered += n
    if value > covered:
        rest = value - covered
        axes.barh(y, rest, left=left + covered, color=STATUS_COLOURS["skipped"], height=0.6)
    return left + max(value, covered)


@_styled
def timeline(channel: dict) -> str:
    """Messages the provider accepted per second over the send, against the configured
    limit, with the achieved rate as a ratio of it in the title (after the channel's
    ``name``, when the dict has one)."""
    line = channel.get("timeline") or {}
    accepted = line.get("accepted") or []
    step = float(line.get("bin_seconds") or 1)
    figure = Figure(figsize=(6.4, 2.6))
    axes = figure.add_axes((0.1, 0.18, 0.88, 0.68))
    rates = [n / step for n in accepted]
    unit, scale = ("minutes", 60.0) if step * len(rates) > 600 else ("seconds", 1.0)
    edges = [i * step / scale for i in range(len(rates) + 1)]
    if rates:
        # one path for all the bins, however many: a few kilobytes at 300 bins
        axes.stairs(rates, edges, fill=True, color="#1565c0", alpha=0.35, linewidth=0)
        axes.stairs(rates, edges, color="#1565c0", linewidth=1, label="accepted per second")
    limit = line.get("limit_per_second")
    if limit:
        axes.axhline(limit, color=LIMIT_COLOUR, linestyle="--", linewidth=1.2)
        axes.annotate(
            f"limit {_number(limit)}/s",
            (0, limit),
            xytext=(2, 3),
            textcoords="offset points",
            color=LIMIT_COLOUR,
            fontsize=8,
        )
    axes.set_ylim(0, max([*rates, limit or 0, 1]) * 1.15)
    axes.set_xlim(0, edges[-1] if rates else 1)
    axes.set_xlabel(f"{unit} after {_clock(line.get('start'))}")
    axes.set_ylabel("accepted / s")
    axes.set_title(f"{channel.get('name', '')}  {_timeline_title(line)}".strip(), loc="left")
    return _svg(figure, f"timeline-{channel.get('task', '')}")


def _timeline_title(line: dict) -> str:
    achieved = line.get("achieved_per_second")
    if achieved is None:
        return "nothing was sent"
    ratio = line.get("ratio")
    of_limit = f" = {ratio:.0%} of the limit" if ratio is not None else ""
    return f"achieved {_number(achieved)}/s{of_limit}"


@_styled
def history_lines(history: dict) -> str:
    """Sent per channel per date (top) and the failure rate per channel per date (bottom)."""
    dates = [entry["date"] for entry in history.get("dates", [])]
    channels: list[str] = []
    for entry in history.get("dates", []):
        channels += [name for name in entry.get("channels", {}) if name not in channels]
    figure = Figure(figsize=(7.2, 4.2))
    sent_axes = figure.add_axes((0.1, 0.47, 0.7, 0.45))
    rate_axes = figure.add_axes((0.1, 0.1, 0.7, 0.28), sharex=sent_axes)
    x = list(range(len(dates)))
    highest = 1.0
    for i, name in enumerate(channels):
        colour = CHANNEL_COLOURS[i % len(CHANNEL_COLOURS)]
        found = [entry.get("channels", {}).get(name) for entry in history.get("dates", [])]
        sent = [c.get("sent", 0) if c else None for c in found]
        rate = [100 * c.get("failure_rate", 0) if c else None for c in found]
        sent_axes.plot(x, _gaps(sent), marker="o", markersize=3, color=colour, label=name)
        rate_axes.plot(x, _gaps(rate), marker="o", markersize=3, color=colour)
        highest = max([highest, *(r for r in rate if r is not None)])
    sent_axes.set_title("sent per date", loc="left")
    sent_axes.set_ylim(bottom=0)
    sent_axes.yaxis.get_major_locator().set_params(integer=True)
    sent_axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    rate_axes.set_title("failure rate per date (failed + unknown, % of attempted)", loc="left")
    rate_axes.set_ylim(0, highest * 1.2)
    rate_axes.yaxis.set_major_formatter("{x:g}%")
    rate_axes.set_xticks(x, [d[5:] if len(dates) > 1 else d for d in dates])
    sent_axes.tick_params(labelbottom=False)
    return _svg(figure, "history")


def _gaps(values: list) -> list[float]:
    """None (a date without the channel) as a gap in the line."""
    return [float("nan") if v is None else v for v in values]


def _patch(colour: str, label: str):
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


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


_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_STYLE = re.compile(r"<style type=\"text/css\">.*?</style>\s*", re.S)
_NAMESPACES = re.compile(r'\sxmlns(?::xlink)?="[^"]*"')
_ID = re.compile(r'\sid="([^"]+)"')
_REFERENCE = re.compile(r'(?:url\(#|href="#)([^")]+)')


def _svg(figure: Figure, name: str) -> str:
    """The figure as an inline ``<svg>``: no prolog, metadata or global style, only the ids
    something refers to (made unique per chart by salting matplotlib's id hash, as several
    charts share one page), and a size the page's CSS can scale."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": name}):
        FigureCanvasSVG(figure)
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = _PROLOG.sub("", buffer.getvalue(), count=1)
    text = _STYLE.sub("", _METADATA.sub("", text))
    # inline in HTML an <svg> needs no namespace declarations, and plain href is SVG 2: the
    # page then holds no URL at all, not even a namespace name
    text = _NAMESPACES.sub("", text).replace("xlink:href=", "href=")
    used = set(_REFERENCE.findall(text))
    text = _ID.sub(lambda m: m.group(0) if m.group(1) in used else "", text)
    return text.replace("<svg ", f'<svg class="chart" data-chart="{name}" ', 1).strip()
