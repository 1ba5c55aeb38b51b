"""The report pages in headless Chromium, and campaign-report --html and --history.

The pages are opened from disk (file://) in the machine's Chromium through Playwright
(campaign_pipeline.testing.browser): their charts must draw, nothing may be logged to the
console or requested, and the numbers the page shows must be the report's. Screenshots are
kept in var/test-artifacts/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from campaign_pipeline.reporting import page
from campaign_pipeline.reporting.history import write_history
from campaign_pipeline.testing.browser import ARTIFACTS, open_page
from campaign_pipeline.testing.reports import synthetic_report, write_week

pytestmark = pytest.mark.e2e  # starts a browser
REPORT = str(Path(sys.executable).parent / "campaign-report")


def find(hooks: list[dict], **wanted: str) -> dict:
    """The one hooked element whose data-* are *wanted*; absent keys must be absent."""
    found = [
        h
        for h in hooks
        if all((h.get(k) == v) if v is not None else k not in h for k, v in wanted.items())
    ]
    assert len(found) == 1, (wanted, found)
    return found[0]


def shown(hook: dict) -> int:
    """The count an element shows, checked against its data-value."""
    assert hook["text"] == f"{int(hook['value']):,}", hook
    return int(hook["value"])


def test_a_full_report_draws_its_charts_and_shows_the_report_s_numbers(tmp_path):
    report = synthetic_report(bins=300, scale=200, samples=True)
    path = tmp_path / "report.html"
    path.write_text(page.render(report))

    with open_page(path) as shown_page:
        charts = shown_page.charts()
        hooks = shown_page.hooks()
        shown_page.screenshot("report.png")
        assert shown_page.console == [] and shown_page.errors == []
        assert shown_page.requests == [] and shown_page.failed == []

    for name, channel in report["channels"].items():
        assert charts[f"bars-{channel['task']}"] > 10
        assert charts[f"timeline-{channel['task']}"] > 5
        assert shown(find(hooks, channel=name, field="targeted")) == channel["targeted"]
        for status, n in channel["counts"].items():
            assert shown(find(hooks, channel=name, status=status, segment=None)) == n
        for segment, counts in channel["by_segment"].items():
            for status, n in counts.items():
                assert shown(find(hooks, channel=name, segment=segment, status=status)) == n
        for reason, n in channel["skipped_by_reason"].items():
            assert shown(find(hooks, channel=name, reason=reason)) == n
        for row in channel["failed_by_code"]:
            hook = find(hooks, channel=name, code=row["code"], http=str(row["status"]))
            assert shown(hook) == row["count"]
        assert shown(find(hooks, channel=name, field="rate_limited")) == channel["rate_limited"]
        assert (
            float(find(hooks, channel=name, field="ratio")["value"])
            == (channel["timeline"]["ratio"])
        )
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000


def test_a_week_of_history_shows_seven_rows_and_a_line_chart(tmp_path):
    reports = write_week(tmp_path / "demo", days=7)
    path = write_history(tmp_path / "demo")

    with open_page(path) as shown_page:
        rows = shown_page.evaluate("document.querySelectorAll('tr[data-date]').length")
        lines = shown_page.evaluate(
            "document.querySelectorAll('svg.chart[data-chart=history] path').length"
        )
        hooks = shown_page.hooks()
        links = shown_page.evaluate(
            "Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
        )
        shown_page.screenshot("history.png")
        assert shown_page.console == [] and shown_page.errors == [] and shown_page.requests == []

    assert rows == 7 and lines > 6
    for report in reports:
        for name, channel in report["channels"].items():
            hook = find(hooks, date=report["date"], channel=name, field="sent")
            assert shown(hook) == channel["counts"]["sent"]
    # each date's link is its own report.html, beside the history page
    assert links == [(tmp_path / "demo" / r["date"] / "report.html").as_uri() for r in reports]


def test_campaign_report_prints_the_report_and_writes_the_history(campaign):
    campaign.configure(campaign={"name": "weekly", "output_dir": str(campaign.root / "runs")})
    folder = campaign.root / "runs" / "weekly"
    write_week(folder, first="2026-11-23", days=3)

    def report(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [REPORT, *args], env=campaign.env(), capture_output=True, text=True, timeout=60
        )

    html = report("--html", "--date", "2026-11-25")
    assert (html.returncode, html.stdout) == (0, f"{folder / '2026-11-25' / 'report.html'}\n")
    summary = report("--date", "2026-11-25")
    assert summary.stdout.splitlines()[-1] == f"Report: {folder / '2026-11-25' / 'report.html'}"
    history = report("--history")
    assert (history.returncode, history.stdout) == (0, f"{folder / 'history.html'}\n")
    assert (folder / "history.json").exists()
    assert (folder / "history.html").read_text().count("<tr data-date=") == 3
    missing = report("--history", "--campaign", "nobody")
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"no campaign folder {campaign.root / 'runs' / 'nobody'}: no run of this campaign yet\n"
    )
