"""A campaign across its dates: history.json and history.html in ``{output_dir}/{campaign}/``.

One entry per date folder, oldest first, from its report.json (a date folder without one is
gathered on the fly by :func:`.figures.gather`): sent, failed, unknown and skipped per
channel and the failure rate, so a daily campaign's trend is one page, with a link to each
date's own report.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from markupsafe import Markup

from ..ledger import utc_now
from . import REPORT_HTML, REPORT_JSON, _replace, charts
from .page import environment, percent

HISTORY_HTML = "history.html"
HISTORY_JSON = "history.json"
COUNTED = ("targeted", "sent", "failed", "unknown", "skipped")


def gather_history(campaign_folder: Path) -> dict:
    """The history document of the campaign whose run folders are in *campaign_folder*."""
    dates = []
    for folder in sorted(campaign_folder.iterdir()):
        if folder.is_dir() and _is_date(folder.name):
            dates.append(_entry(folder, _report(folder)))
    return {
        "campaign": campaign_folder.name,
        "generated_at": utc_now(),
        "dates": dates,
    }


def _is_date(name: str) -> bool:
    try:
        datetime.date.fromisoformat(name)
    except ValueError:
        return False
    return len(name) == 10  # 2026-11-25, not 20261125


def _report(folder: Path) -> dict:
    """The date's report.json, or the same document gathered now when it has none."""
    path = folder / REPORT_JSON
    if path.exists():
        return json.loads(path.read_text())
    from .figures import gather  # the data side of the report, only when needed

    return gather(folder)


def _entry(folder: Path, report: dict) -> dict:
    channels = {}
    for name, part in (report.get("channels") or {}).items():
        counts = part.get("counts") or {}
        numbers = {key: counts.get(key, 0) for key in COUNTED[1:]}
        channels[name] = {"targeted": part.get("targeted", 0), **numbers}
        channels[name]["failure_rate"] = failure_rate(numbers)
    html = folder / REPORT_HTML
    return {
        "date": folder.name,
        # relative to the history page; "" when the date has no report.html yet
        "report": f"{folder.name}/{REPORT_HTML}" if html.exists() else "",
        "status": (report.get("status") or {}).get("state", "incomplete"),
        "channels": channels,
    }


def failure_rate(counts: dict) -> float | None:
    """(failed + unknown) / (sent + failed + unknown); None when nothing was attempted (no
    rate, not 0 %: the page says n/a)."""
    bad = counts.get("failed", 0) + counts.get("unknown", 0)
    attempted = counts.get("sent", 0) + bad
    return round(bad / attempted, 4) if attempted else None


def render_history(history: dict) -> str:
    """history.html of a history document."""
    channels: list[str] = []
    for entry in history["dates"]:
        channels += [name for name in entry["channels"] if name not in channels]
    return (
        environment()
        .get_template("history.html")
        .render(
            history=history,
            channels=channels,
            chart=Markup(charts.history_lines(history)) if history["dates"] else "",
            percent=percent,
        )
    )


def write_history(campaign_folder: Path) -> Path:
    """Write history.json and history.html in *campaign_folder*; return the page's path."""
    history = gather_history(campaign_folder)
    _replace(campaign_folder / HISTORY_JSON, json.dumps(history, indent=2) + "\n")
    page = campaign_folder / HISTORY_HTML
    _replace(page, render_history(history))
    return page
