"""history.json and history.html of a campaign across its dates."""

from __future__ import annotations

import json

import pytest

from campaign_pipeline.reporting.history import failure_rate, gather_history, write_history
from campaign_pipeline.testing.reports import write_week


def test_a_week_of_reports_is_one_entry_per_date_oldest_first(tmp_path):
    folder = tmp_path / "demo"
    reports = write_week(folder, pages=False)
    (folder / "not-a-date").mkdir()
    (folder / "2026-11-22" / "dry-run").mkdir()
    history = gather_history(folder)
    assert history["campaign"] == "demo"
    assert [entry["date"] for entry in history["dates"]] == [r["date"] for r in reports]
    for entry, report in zip(history["dates"], reports, strict=True):
        assert entry["report"] == f"{report['date']}/report.html"
        assert entry["status"] == "complete"
        for name, channel in report["channels"].items():
            counts = channel["counts"]
            found = entry["channels"][name]
            assert found["sent"] == counts["sent"] and found["skipped"] == counts["skipped"]
            assert found["targeted"] == channel["targeted"]
            bad = counts["failed"] + counts["unknown"]
            assert found["failure_rate"] == round(bad / (counts["sent"] + bad), 4)


def test_the_failure_rate_is_none_when_nothing_was_attempted():
    assert failure_rate({"sent": 0, "failed": 0, "unknown": 0, "skipped": 5}) is None
    assert failure_rate({"sent": 6, "failed": 1, "unknown": 1}) == 0.25


def test_write_history_writes_the_page_and_the_json_beside_the_dates(tmp_path):
    folder = tmp_path / "demo"
    write_week(folder, days=3, pages=False)
    (folder / "2026-11-20" / "report.html").unlink()
    page = write_history(folder)
    assert page == folder / "history.html"
    history = json.loads((folder / "history.json").read_text())
    assert len(history["dates"]) == 3 and history["dates"][1]["report"] == ""
    html = page.read_text()
    assert html.count("<tr data-date=") == 3
    assert '<a href="2026-11-19/report.html">' in html and "no report yet" in html
    assert html.count('<svg class="chart"') == 1 and "<script" not in html
    sent = history["dates"][0]["channels"]["sms"]["sent"]
    assert f'data-channel="sms" data-field="sent" data-value="{sent}"' in html
    assert not list(folder.glob(".history.*")), "a temporary file is left"


def test_a_campaign_without_dates_has_an_empty_history(tmp_path):
    (tmp_path / "demo").mkdir()
    page = write_history(tmp_path / "demo")
    assert "no run folder yet" in page.read_text()


def test_campaign_report_names_a_campaign_name_it_cannot_use_in_one_line(capsys):
    from campaign_pipeline import report

    with pytest.raises(SystemExit) as stopped:
        report.main(["--history", "--campaign", "../elsewhere"])

    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        "campaign-report: error: campaign name '../elsewhere' must be letters, digits, '.', '_' "
        "or '-'"
    )


def test_a_channel_with_nothing_attempted_has_no_failure_rate_on_the_page(tmp_path):
    folder = tmp_path / "demo"
    write_week(folder, days=2, pages=False)
    written = folder / "2026-11-20" / "report.json"
    report = json.loads(written.read_text())
    zeros = dict.fromkeys(("sent", "failed", "unknown", "pending", "in_flight"), 0)
    report["channels"]["sms"]["counts"] = {**zeros, "skipped": 5}
    written.write_text(json.dumps(report))

    html = write_history(folder).read_text()

    rate = '<td class="n" data-date="2026-11-20" data-channel="sms" data-field="failure_rate"'
    assert f'{rate} data-value="">n/a</td>' in html
    assert json.loads((folder / "history.json").read_text())["dates"][1]["channels"]["sms"][
        "failure_rate"] is None  # fmt: skip
