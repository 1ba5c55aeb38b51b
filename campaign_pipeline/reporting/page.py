"""report.html: one self-contained page per run folder, rendered from its report.json document.

The page is for the operator and the marketer who asked for the campaign: what was targeted,
sent, skipped and why, which provider errors came back, how fast the providers were driven,
and what the run read and was configured with. Everything it needs is inline: CSS, and the
charts as SVG (:mod:`.charts`); it has no script and no URL, so it opens from disk, from a
mail attachment or behind the report server alike. Every number a test compares carries a
stable hook, e.g. ``<td data-channel="email" data-status="sent" data-value="280">280</td>``.
"""

from __future__ import annotations

from typing import Any

import jinja2
from markupsafe import Markup, escape

from . import charts, figures

# What each status means, in the marketer's words; the order is the table's.
STATUS_MEANINGS = {
    "sent": "the provider accepted the message",
    "would_send": "a dry run: would be sent (nothing was sent)",
    "failed": "refused by the provider for this recipient, or the message could not be built",
    "unknown": "no answer came: it may have been delivered, so it is not sent again",
    "skipped": "never sent: no usable contact, suppressed, over the frequency cap, a duplicate",
    "pending": "not sent yet: the run stopped before it",
    "in_flight": "being sent when the run stopped",
}
# What a share shows when there is nothing to divide, and a rate a send too short to measure.
NOT_APPLICABLE = "n/a"
TOO_SHORT = "too short to measure"
STATE_MEANINGS = {
    "complete": "every task finished",
    "incomplete": "some tasks have not finished yet",
    "failed": "a task failed: see the tasks at the end of the page",
    "deferred": "some recipients wait for their quiet hours to end: a later run sends them",
}


def environment() -> jinja2.Environment:
    """The templates of this package, HTML-escaped by default."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("campaign_pipeline.reporting", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.ChainableUndefined,  # a key a report lacks shows empty
    )
    env.filters.update(number=number, percent=percent, size=size, seconds=seconds, path=path)
    return env


def render(report: dict) -> str:
    """The whole report.html of *report* (a report.json document)."""
    channels = [_channel(name, part) for name, part in report.get("channels", {}).items()]
    return (
        environment()
        .get_template("report.html")
        .render(
            report=report,
            status=report.get("status") or {"state": "incomplete", "detail": ""},
            channels=channels,
            customer_file=report.get("customer_file") or {},
            tasks=report.get("tasks") or [],
            settings=report.get("settings") or {},
            meanings=STATUS_MEANINGS,
            state_meanings=STATE_MEANINGS,
            has_samples=any(channel["samples"] for channel in channels),
            colours=charts.STATUS_COLOURS,
            percent=percent,
            too_short=TOO_SHORT,
            measurable_seconds=figures.MEASURABLE_SECONDS,
        )
    )


def _channel(name: str, part: dict) -> dict[str, Any]:
    """One channel's view: its statuses in table order and its two charts."""
    counts = part.get("counts") or {}
    statuses = [s for s in STATUS_MEANINGS if s in counts]
    statuses += [s for s in counts if s not in statuses]
    attempted = sum(counts.get(s, 0) for s in ("sent", "failed", "unknown"))
    line = part.get("timeline")
    return {
        **part,
        "name": name,
        "statuses": statuses,
        "counts": counts,
        "by_segment": part.get("by_segment") or {},
        "attempted": attempted,
        # no chart of zeros: a channel that has not started says so in words
        "bars": Markup(charts.segment_bars(part)) if any(counts.values()) else "",
        "timeline_svg": Markup(charts.timeline({**part, "name": name})) if line else "",
        "timeline": line or {},
        "samples": part.get("samples") or [],
    }


def _missing(value: Any) -> bool:
    """None, or a key the report lacks (an older or unfinished run's report)."""
    return value is None or isinstance(value, jinja2.Undefined)


def number(value: Any) -> str:
    """``1,234`` for a count, ``9.7`` for a rate, yes or no; anything else as it is."""
    if _missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}".rstrip("0")
    return str(value)


def percent(part: float | None, whole: float | None = None) -> str:
    """``95.1%`` of a ratio, or of part/whole; ``n/a`` when there is nothing to divide (a
    whole of 0: no 0.0 % of nothing), "" when there is no part."""
    if _missing(part):
        return ""
    if whole is not None:
        if _missing(whole) or not whole:
            return NOT_APPLICABLE
        part = part / whole
    return f"{part:.1%}"


def path(value: Any) -> Markup:
    """A file's path, escaped, with a line-break opportunity after each ``/``: a long path
    wraps at its separators (CSS ``code.path`` breaks no word)."""
    if _missing(value):
        return Markup("")
    return Markup("/<wbr>").join(escape(part) for part in str(value).split("/"))


def size(value: int | None) -> str:
    """``41.2 kB`` of a byte count."""
    if _missing(value):
        return ""
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1000
    return str(value)


def seconds(value: float | None) -> str:
    """``3.2 s`` or ``2 min 05 s``."""
    if _missing(value):
        return ""
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest:02d} s"
