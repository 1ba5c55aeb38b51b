"""report.html from a report.json document: the charts, the numbers' hooks, nothing external."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

import pytest

from campaign_pipeline.reporting import charts, page
from campaign_pipeline.testing.reports import synthetic_report


class Hooks(HTMLParser):
    """Every element of a page with a data-value: its data-* attributes and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict] = []
        self.attributes: list[tuple[str, str]] = []
        self._open: list[dict] = []

    def handle_starttag(self, tag, attrs):  # noqa: ARG002 (any tag)
        self.attributes += [(name, value or "") for name, value in attrs]
        found = dict(attrs)
        if "data-value" in found:
            cell = {**found, "text": ""}
            self.cells.append(cell)
            self._open.append(cell)
        elif self._open:
            self._open.append({})

    def handle_endtag(self, tag):  # noqa: ARG002
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for cell in self._open:
            if "data-value" in cell:
                cell["text"] += data


def hooks(html: str) -> Hooks:
    parsed = Hooks()
    parsed.feed(html)
    return parsed


def cell(parsed: Hooks, **wanted) -> dict:
    """The one cell whose data-* attributes are *wanted* (data_status= for data-status)."""
    keys = {f"data-{k.replace('_', '-')}": v if v is None else str(v) for k, v in wanted.items()}
    found = [c for c in parsed.cells if all(c.get(k) == v for k, v in keys.items())]
    assert len(found) == 1, (wanted, found)
    return found[0]


def number_in(found: dict) -> int:
    assert found["text"].strip() == f"{int(found['data-value']):,}", found
    return int(found["data-value"])


@pytest.fixture(scope="module")
def with_samples() -> str:
    """The page of the synthetic report with samples, rendered once for the tests reading it."""
    return page.render(synthetic_report(samples=True))


@pytest.fixture(scope="module")
def without_samples() -> str:
    return page.render(synthetic_report())


def test_every_count_of_the_report_is_in_the_page_with_its_hook():
    report = synthetic_report(scale=1000)
    parsed = hooks(page.render(report))
    for name, channel in report["channels"].items():
        assert number_in(cell(parsed, channel=name, field="targeted")) == channel["targeted"]
        for status, n in channel["counts"].items():
            found = cell(parsed, channel=name, status=status, segment=None)
            assert number_in(found) == n
        for segment, counts in channel["by_segment"].items():
            for status, n in counts.items():
                assert number_in(cell(parsed, channel=name, segment=segment, status=status)) == n
        for reason, n in channel["skipped_by_reason"].items():
            assert number_in(cell(parsed, channel=name, reason=reason)) == n
        for source, n in channel["suppressed_by_source"].items():
            assert number_in(cell(parsed, channel=name, source=source)) == n
        for row in channel["failed_by_code"]:
            found = cell(parsed, channel=name, code=row["code"], http=row["status"])
            assert number_in(found) == row["count"]
        for field in ("retries", "rate_limited"):
            assert number_in(cell(parsed, channel=name, field=field)) == channel[field]
        ratio = cell(parsed, channel=name, field="ratio")
        assert float(ratio["data-value"]) == channel["timeline"]["ratio"]
        assert ratio["text"] == f"{channel['timeline']['ratio']:.1%}"
    for reason, n in report["rejected_by_reason"].items():
        assert number_in(cell(parsed, rejected_reason=reason)) == n
    assert number_in(cell(parsed, field="customer_file.rejected")) == 6000


def test_a_provider_code_s_meaning_is_shown_beside_it(without_samples):
    html = without_samples
    assert "recipient unsubscribed (replied STOP)" in html
    assert "<code>21610</code>" in html


def test_the_page_holds_no_script_and_no_url(with_samples):
    html = with_samples
    assert "<script" not in html.lower()
    for name, value in hooks(html).attributes:
        if name in ("href", "src", "xlink:href", "action", "srcset", "poster"):
            assert value.startswith("#"), (name, value)
    assert not re.search(r"url\(\s*['\"]?(?!#)", html), "a CSS url() other than an anchor"
    assert "@import" not in html and "http://www.w3.org" not in html


def test_customer_data_is_escaped_and_shown_only_as_samples(with_samples, without_samples):
    html = with_samples
    assert "&lt;b&gt;not&lt;/b&gt;" in html and "<b>not</b>" not in html
    assert 'id="samples"' in html and "ana.silva.7@example.org" in html
    without = without_samples
    assert 'id="samples"' not in without and "@example.org" not in without


def test_each_chart_is_inline_svg_with_ids_of_its_own(without_samples):
    html = without_samples
    assert html.count('<svg class="chart"') == 6
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "an id is used twice in the page"
    for reference in re.findall(r'(?:url\(#|href="#)([^")]+)', html):
        assert reference in ids, f"#{reference} is not in the page"


def test_a_300_bin_timeline_and_a_big_campaign_s_page_stay_small():
    report = synthetic_report(scale=5000, bins=300)
    line = report["channels"]["email"]["timeline"]
    assert len(line["accepted"]) == 300
    svg = charts.timeline(report["channels"]["email"])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert len(svg.encode()) < 60_000
    assert len(page.render(report).encode()) < 400_000


def test_the_timeline_says_the_achieved_rate_against_the_limit():
    channel = synthetic_report()["channels"]["sms"]
    channel["timeline"].update(achieved_per_second=9.5, ratio=0.95, limit_per_second=10.0)
    svg = charts.timeline(channel)
    assert "achieved 9.5/s = 95% of the limit" in svg
    assert "limit 10/s" in svg


def test_skipped_is_split_by_reason_in_the_bars():
    channel = synthetic_report()["channels"]["email"]
    svg = charts.segment_bars(channel)
    for reason in channel["skipped_by_reason"]:
        assert f"skipped: {reason}" in svg
    channel["skipped_by_reason"] = {}
    assert "skipped: " not in charts.segment_bars(channel)


def test_a_dry_run_and_an_unfinished_run_render():
    report = synthetic_report()
    dry = copy.deepcopy(report)
    dry["dry_run"] = True
    for channel in dry["channels"].values():
        channel["state"] = "preview"
        channel["counts"] = {"would_send": 150, "failed": 1, "skipped": 9}
        channel["by_segment"] = {}
        channel["timeline"] = None
    html = page.render(dry)
    assert "dry run: nothing was sent" in html
    parsed = hooks(html)
    assert number_in(cell(parsed, channel="sms", status="would_send")) == 150
    assert html.count('<svg class="chart"') == 3  # no timeline: nothing was sent
    bare = {"schema": 1, "campaign": "demo", "date": "2026-11-25", "dry_run": False,
            "status": {"state": "incomplete", "detail": ""}, "channels": {}}  # fmt: skip
    assert "No channel has started yet." in page.render(bare)
    zeros = dict.fromkeys(("sent", "failed", "unknown", "skipped", "pending", "in_flight"), 0)
    bare["channels"]["sms"] = {"task": "SendSmsCampaign", "state": "not started", "targeted": 0,
                               "counts": zeros}  # fmt: skip
    bare["customer_file"] = {"path": None, "size_bytes": None, "records_read": 0}  # not loaded
    html = page.render(bare)
    assert "This channel has not started yet." in html and '<svg class="chart"' not in html
    assert "The customer file has not been loaded yet." in html


def test_the_status_and_the_failed_task_are_named():
    report = synthetic_report()
    detail = "SendSmsCampaign failed (RecipientsPendingError)"
    report["status"] = {"state": "failed", "detail": detail}
    report["tasks"][2].update(state="failed", error="RecipientsPendingError")
    html = page.render(report)
    assert 'class="badge failed" data-field="state">failed<' in html
    assert "SendSmsCampaign failed (RecipientsPendingError)" in html
    assert "failed (RecipientsPendingError)" in html


# Okabe & Ito's palette, told apart with each kind of colour blindness.
OKABE_ITO = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}


def test_a_send_too_short_to_measure_shows_no_rate():
    report = synthetic_report()
    line = report["channels"]["email"]["timeline"]
    line.update(measured=False, achieved_per_second=None, peak_per_second=None, ratio=None)
    line["accepted"] = [280]

    html = page.render(report)

    section = html.split('id="channel-email"')[1].split('id="channel-sms"')[0]
    assert "too short to measure" in section
    assert 'data-field="ratio"' not in section and 'data-field="peak_per_second"' not in section
    assert "of the limit" not in section, "the chart's title gives no share of the limit"
    assert cell(hooks(html), channel="email", field="rate")["text"] == "too short to measure"
    assert 'data-channel="sms" data-field="ratio"' in html, "a measured send keeps its rate"


def test_each_skip_reason_has_a_distinct_colour_blind_safe_colour():
    channel = synthetic_report()["channels"]["email"]
    svg = charts.segment_bars(channel)

    legend = dict(re.findall(r'fill="(#[0-9A-Fa-f]{6})"/><text [^>]*>([^<]+)</text>', svg))
    reasons = {label: colour for colour, label in legend.items() if label.startswith("skipped:")}
    assert len(reasons) == len(channel["skipped_by_reason"]) == 5
    colours = [c.upper() for c in reasons.values()]
    assert len(set(colours)) == len(colours), "no two reasons share a colour"
    assert set(colours) <= OKABE_ITO
    status = {s: c.upper() for s, c in charts.STATUS_COLOURS.items() if s != "would_send"}
    assert not set(colours) & set(status.values()), "no reason looks like a status"
    assert len(set(status.values())) == len(status)
    # a sixth kind stays in the plain skipped colour, named as such
    channel["skipped_by_reason"] = {**channel["skipped_by_reason"], "not targeted": 1}
    assert "skipped: other reasons" in charts.segment_bars(channel)


def test_file_names_wrap_at_their_separators_never_inside_a_word():
    report = synthetic_report()
    report["customer_file"]["path"] = "/srv/campaigns/customer_exports_november/customers.csv"

    html = page.render(report)

    shown = re.search(r'<code class="path" data-field="customer_file.path">(.*?)</code>', html)[1]
    assert shown == "/<wbr>srv/<wbr>campaigns/<wbr>customer_exports_november/<wbr>customers.csv"
    assert '<code class="path">data/<wbr>sample/<wbr>suppressions.csv</code>' in html
    css = re.search(r"<style>(.*?)</style>", html, re.S)[1]
    rules = dict(re.findall(r"([^{}]+)\{([^}]*)\}", css))
    code = [body for selector, body in rules.items() if re.search(r"\bcode\b", selector)]
    assert code and not any("break-all" in body for body in code), "no mid-word break"


def test_quiet_hours_are_shown_with_their_time_zone():
    html = page.render(synthetic_report())

    row = re.search(r'data-setting="quiet_hours">(.*?)</td>', html, re.S)[1]
    assert "21:00-08:00" in row and "local time" in row and "America/New_York" in row


def test_nothing_to_divide_is_n_a_not_zero_percent():
    report = synthetic_report()
    zeros = dict.fromkeys(("sent", "failed", "unknown", "skipped", "pending", "in_flight"), 0)
    report["channels"]["sms"].update(targeted=0, counts=zeros, by_segment={}, timeline=None)

    html = page.render(report)

    tile = re.search(r'data-tile="sms">(.*?)</div>\s*</div>', html, re.S)[1]
    assert "(n/a)" in tile and "0.0%" not in tile
    section = html.split('id="channel-sms"')[1].split('id="channel-push"')[0]
    assert "0.0%" not in section and "n/a" in section
