"""The report pages in headless Chromium, and campaign-report --html and --history.

The pages are opened from disk (file://) in the machine's Chromium through Playwright
(campaign_pipeline.testing.browser): their charts must draw, nothing may be logged to the
console or requested, and the numbers the page shows must be the report's. Screenshots are
kept in var/test-artifacts/.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import CHANNELS, REPO, TASKS

from campaign_pipeline.ledger import skip_kind
from campaign_pipeline.reporting import page
from campaign_pipeline.reporting.history import write_history
from campaign_pipeline.sandbox import ErrorRule
from campaign_pipeline.testing import free_port
from campaign_pipeline.testing.browser import ARTIFACTS, open_page
from campaign_pipeline.testing.reports import synthetic_report, write_week

pytestmark = pytest.mark.e2e  # starts a browser
REPORT = str(Path(sys.executable).parent / "campaign-report")


def find(hooks: list[dict], **wanted: str) -> dict:
    """The one hooked element whose data-* are *wanted* (rejected_reason= for
    data-rejected-reason); a key given None must be absent."""
    wanted = {key.replace("_", "-"): value for key, value in wanted.items()}
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
    reports = write_week(tmp_path / "demo", days=7, pages=False)
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
    write_week(folder, first="2026-11-23", days=3, pages=False)

    def report(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [REPORT, *args], env=campaign.env(**env), capture_output=True, text=True, timeout=60
        )

    page_path = folder / "2026-11-25" / "report.html"
    # --open hands the page to the browser webbrowser finds: $BROWSER, here one that echoes
    html = report("--html", "--open", "--date", "2026-11-25", BROWSER="echo")
    assert (html.returncode, html.stdout) == (0, f"{page_path}\n{page_path.as_uri()}\n")
    (folder / "2026-11-24" / "report.html").unlink()  # a run folder without its page
    written = report("--html", "--date", "2026-11-24")
    assert written.stdout == f"{folder / '2026-11-24' / 'report.html'}\n", written.stderr
    assert 'data-field="campaign">weekly<' in (folder / "2026-11-24" / "report.html").read_text()
    summary = report("--date", "2026-11-25")
    assert summary.stdout.splitlines()[-1] == f"Report: {folder / '2026-11-25' / 'report.html'}"
    (folder / "2026-11-23" / "report.json").unlink()  # gathered on the fly: nothing ran there
    history = report("--history")
    assert (history.returncode, history.stdout) == (0, f"{folder / 'history.html'}\n")
    dates = json.loads((folder / "history.json").read_text())["dates"]
    assert [(d["date"], d["status"]) for d in dates] == [
        ("2026-11-23", "incomplete"),
        ("2026-11-24", "incomplete"),  # its report was written above, from no result file
        ("2026-11-25", "complete"),
    ]
    assert (folder / "history.html").read_text().count("<tr data-date=") == 3
    missing = report("--history", "--campaign", "nobody")
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"no campaign folder {campaign.root / 'runs' / 'nobody'}: no run of this campaign yet\n"
    )


# -- a real run --------------------------------------------------------------------------------

HEADER = "customer_id,first_name,segment,email,phone,device_token\n"
SEGMENTS = ("premium", "regular", "new")


def write_faulty_customers(campaign, rows: int = 30) -> None:
    """*rows* customers across the segments, with a missing, an invalid and a shared e-mail
    address (skipped) and a row of an unknown segment (rejected)."""
    emails = {7: "", 8: "not-an-address", 9: "row10@example.com"}
    lines = [
        f"R{n},Row,{SEGMENTS[n % 3]},{emails.get(n, f'row{n}@example.com')},"
        f"+1212555{n:04d},rowtoken{n:04d}{'x' * 40}\n"
        for n in range(rows)
    ]
    lines.append("R99,Row,nobody,row99@example.com,+12125550099,\n")
    campaign.customers_path.write_text(HEADER + "".join(lines))


# A few refusals for good (failed, with and without a provider code) and answers that clear
# after one try (a 429 and a 500): retried, then sent. The sandbox also leaves a share of the
# requests unanswered, at random (unknown): the test counts the result files, and asks only
# for what cannot all be lost to that (one of six refusals answered, one request unanswered).
FAULTS = [
    ErrorRule("email", r"^row1@", 400),
    ErrorRule("email", r"^row11@", 400),
    ErrorRule("sms", r"0002$", 400, "21610"),
    ErrorRule("sms", r"0003$", 400, "21211"),
    ErrorRule("push", r"^rowtoken0004", 404, "UNREGISTERED"),
    ErrorRule("push", r"^rowtoken0012", 404, "UNREGISTERED"),
    ErrorRule("email", r"^row5@", 429, times=1),
    ErrorRule("sms", r"0006$", 500, times=1),
]


def tally(rows: list[dict]) -> dict:
    """What the page must show of one channel, counted from its result file."""
    by_segment: dict[str, Counter] = {}
    codes, reasons = Counter(), Counter()
    for row in rows:
        by_segment.setdefault(row["segment"], Counter())[row["status"]] += 1
        if row["status"] == "skipped":
            reasons[skip_kind(row["error"])] += 1
        answered = re.match(r"\w+ provider answered (\d+)(?: (\w+))?:", row["error"])
        if row["status"] == "failed" and answered:
            codes[(answered.group(1), answered.group(2) or "")] += 1
    statuses = Counter(row["status"] for row in rows)
    return {"statuses": statuses, "segments": by_segment, "codes": codes, "reasons": reasons}


def test_the_report_of_a_run_with_faults_shows_the_result_files_numbers(campaign):
    write_faulty_customers(campaign)
    sandbox = campaign.start_sandbox(error_rules=FAULTS, hang_rate=0.1, hang_seconds=1, seed=7)
    for channel in CHANNELS:  # an answer that does not come is unknown, not retried
        campaign.configure(
            **{f"{channel}_api": {"timeout_seconds": 0.3, "retry_unanswered": "false"}}
        )

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    path = campaign.folder / "report.html"
    with open_page(path) as shown_page:
        charts = shown_page.charts()
        hooks = shown_page.hooks()
        shown_page.screenshot("report-run.png")
        assert shown_page.console == [] and shown_page.errors == []
        assert shown_page.requests == [] and shown_page.failed == []
    seen, codes = set(), set()
    for channel in CHANNELS:
        counted = tally(campaign.results(channel))
        seen |= set(counted["statuses"])
        codes |= set(counted["codes"])
        task = TASKS[channel]
        assert charts[f"bars-{task}"] > 10 and charts[f"timeline-{task}"] > 5
        rows = counted["statuses"].total()
        assert shown(find(hooks, channel=channel, field="targeted")) == rows
        for status in ("sent", "failed", "unknown", "skipped", "pending", "in_flight"):
            hook = find(hooks, channel=channel, status=status, segment=None)
            assert shown(hook) == counted["statuses"][status], (channel, status)
        for segment, statuses in counted["segments"].items():
            for status, n in statuses.items():
                assert shown(find(hooks, channel=channel, segment=segment, status=status)) == n
        for reason, n in counted["reasons"].items():
            assert shown(find(hooks, channel=channel, reason=reason)) == n
        for (http, code), n in counted["codes"].items():
            assert shown(find(hooks, channel=channel, http=http, code=code)) == n
        assert len([h for h in hooks if h.get("channel") == channel and "code" in h]) == len(
            counted["codes"]
        )
        answered_429 = sandbox.stats()[channel]["statuses"].get("429", 0)
        assert shown(find(hooks, channel=channel, field="rate_limited")) == answered_429
    assert seen >= {"sent", "failed", "unknown", "skipped"} and codes
    assert shown(find(hooks, rejected_reason="unknown_segment")) == 1


def test_a_week_of_daily_runs_has_a_history_page_with_a_row_per_date(campaign):
    dates = [f"2026-11-{day}" for day in range(19, 26)]
    for n, date in enumerate(dates):  # a customer file per date, a few rows more each day
        campaign.write_customers(rows=4 + n)
        campaign.customers_path.rename(campaign.root / f"customers-{date}.csv")
    campaign.start_sandbox()
    campaign.configure(
        schedule={"start_date": dates[0]},
        campaign={"input_path": str(campaign.root / "customers-{date}.csv")},
    )
    week = subprocess.run(
        [str(Path(sys.executable).parent / "campaign-run"), "backfill", "--start", dates[0],
         "--end", dates[-1]],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=campaign.env(LOG_DIR=str(campaign.root / "log"), SCHEDULER_PORT=str(free_port())),
    )  # fmt: skip
    assert week.returncode == 0, week.stdout[-3000:] + week.stderr[-3000:]

    history = subprocess.run(
        [REPORT, "--history"], env=campaign.env(), capture_output=True, text=True, timeout=60
    )
    page_path = campaign.root / "runs" / "test" / "history.html"
    assert (history.returncode, history.stdout) == (0, f"{page_path}\n"), history.stderr
    with open_page(page_path) as shown_page:
        rows = shown_page.evaluate(
            "Array.from(document.querySelectorAll('tr[data-date]')).map(r => r.dataset.date)"
        )
        lines = shown_page.evaluate(
            "document.querySelectorAll('svg.chart[data-chart=history] path').length"
        )
        hooks = shown_page.hooks()
        shown_page.screenshot("history-run.png")
        assert shown_page.console == [] and shown_page.errors == [] and shown_page.requests == []
    assert rows == dates and lines > 6
    sent = [find(hooks, date=date, channel="email", field="sent")["value"] for date in dates]
    assert len(set(sent)) > 1, "each date's own numbers, not one date's seven times"
    for date in dates:
        for channel in CHANNELS:
            rows = campaign.root / "runs" / "test" / date / f"{channel}_results.csv"
            with rows.open(newline="") as handle:
                sent = sum(r["status"] == "sent" for r in csv.DictReader(handle))
            assert shown(find(hooks, date=date, channel=channel, field="sent")) == sent
