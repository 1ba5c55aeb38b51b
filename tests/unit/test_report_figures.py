"""report.json's figures from hand-built ledgers, result files and previews; the task log."""

from __future__ import annotations

import contextlib
import datetime
import html
import json
import sqlite3
from pathlib import Path

import luigi
import pytest

from campaign_pipeline import reporting
from campaign_pipeline.ledger import RESULT_COLUMNS, Ledger
from campaign_pipeline.reporting import figures, timings
from campaign_pipeline.safecsv import write_rows

T0 = datetime.datetime(2026, 11, 25, 10, 0, 0, tzinfo=datetime.UTC)
# (customer_id, segment, recipient, status, error, seconds after T0 it was sent or None)
ROWS = [
    ("C1", "premium", "ann@example.com", "sent", "", 0.1),
    ("C2", "premium", "bob@example.com", "sent", "", 0.6),
    ("C3", "regular", "cy@example.com", "sent", "", 1.2),
    ("C4", "regular", "+12125550104", "failed",
     "sms provider answered 400 21610: Attempt to send to unsubscribed +12125550104", 1.3),
    ("C5", "new", "+12125550105", "failed",
     "sms provider answered 400 21610: Attempt to send to unsubscribed +12125550105", 1.4),
    ("C6", "new", "+12125550106", "failed", "sms provider answered 400 21211: bad To", 1.5),
    ("C7", "new", "dee@example.com", "failed",
     "not sent: template sms/spring_sale/body.txt: ZeroDivisionError: dee@example.com", 1.6),
    ("C8", "premium", "eve@example.com", "unknown", "ReadTimeout: no answer", 1.7),
    ("C9", "premium", "fay@example.com", "skipped", "suppressed: in config/suppressions.csv", None),
    ("C10", "regular", "gus@example.com", "skipped", "suppressed: sendgrid bounces 2026-11-20",
     None),
    ("C11", "regular", "", "skipped", "missing: no email", None),
    ("C12", "new", "ann@example.com", "skipped", "duplicate contact of C1", None),
    ("C13", "new", "hal@example.com", "pending", "", None),
]  # fmt: skip
CUSTOMER_DATA = ["example.com", "+1212555", "C1", "ZeroDivisionError", "Attempt to send"]


def run_folder(tmp_path: Path, date: str = "2026-11-25") -> Path:
    folder = tmp_path / "runs" / "demo" / date
    folder.mkdir(parents=True)
    return folder


def build_ledger(path: Path, rows=ROWS, notes: dict | None = None) -> None:
    """A ledger with the pipeline's schema holding exactly *rows*."""
    Ledger(str(path)).close()  # the schema, as the pipeline makes it
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for customer_id, segment, recipient, status, error, sent in rows:
            sent_at = "" if sent is None else moment(sent)
            db.execute(
                "INSERT INTO deliveries (customer_id, segment, recipient, status, error, sent_at,"
                " attempts) VALUES (?, ?, ?, ?, ?, ?, 1)",
                (customer_id, segment, recipient, status, error, sent_at),
            )
        for key, value in (notes or {}).items():
            db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))


def moment(seconds: float) -> str:
    """T0 and *seconds*, as the ledger writes sent_at."""
    return (T0 + datetime.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def write_results(ledger: Path, results: Path) -> None:
    ledger_rows = Ledger(str(ledger))
    try:
        with results.open("w", newline="") as handle:
            write_rows(handle, RESULT_COLUMNS, ledger_rows.rows())
    finally:
        ledger_rows.close()


@contextlib.contextmanager
def setting(section: str, key: str, value: str):
    config = luigi.configuration.get_config()
    had = config.get(section, key, None)
    config.set(section, key, value)
    try:
        yield
    finally:
        if had is None:
            config.remove_option(section, key)
        else:
            config.set(section, key, had)


def test_a_ledger_gives_counts_segments_and_reasons_without_customer_data(tmp_path):
    folder = run_folder(tmp_path)
    build_ledger(folder / "sms_ledger.sqlite", notes={"send_stats": '{"retries": 4, '
                                                      '"rate_limited": 3}'})  # fmt: skip
    write_results(folder / "sms_ledger.sqlite", folder / "sms_results.csv")

    report = figures.gather(folder)

    sms = report["channels"]["sms"]
    assert (sms["state"], sms["source"], sms["targeted"]) == ("complete", "sms_ledger.sqlite", 13)
    assert sms["counts"] == {"sent": 3, "failed": 4, "unknown": 1, "skipped": 4, "pending": 1,
                             "in_flight": 0}  # fmt: skip
    assert list(sms["by_segment"]) == ["premium", "regular", "new"], "[campaign] segments' order"
    assert sms["by_segment"]["new"] == {"targeted": 5, "sent": 0, "failed": 3, "unknown": 0,
                                        "skipped": 1, "pending": 1, "in_flight": 0}  # fmt: skip
    assert sms["skipped_by_reason"] == {"suppressed": 2, "missing": 1, "duplicate contact": 1}
    assert sms["suppressed_by_source"] == {"file": 1, "sendgrid bounces": 1}
    assert sms["failed_by_code"] == [
        {"status": 400, "code": "21610", "meaning": "recipient unsubscribed (replied STOP)",
         "action": "failed", "count": 2},
        {"status": 400, "code": "21211", "meaning": "invalid To number", "action": "failed",
         "count": 1},
    ]  # fmt: skip
    assert sms["failed_by_reason"] == {"not sent": 1}
    assert (sms["retries"], sms["rate_limited"]) == (4, 3)
    assert sms["samples"] == []
    assert report["channels"]["email"]["state"] == "not started"
    assert report["status"]["state"] == "incomplete"
    assert report["inputs"] == {"sms_results.csv": [
        (folder / "sms_results.csv").stat().st_size,
        (folder / "sms_results.csv").stat().st_mtime_ns]}  # fmt: skip
    text = json.dumps(report)
    assert not [data for data in CUSTOMER_DATA if data in text]
    assert not any(key.endswith("_env") for c in report["channels"].values() for key in c["config"])


def test_include_samples_shows_failed_unknown_and_skipped_rows_up_to_samples(tmp_path):
    folder = run_folder(tmp_path)
    build_ledger(folder / "sms_ledger.sqlite")

    with setting("report", "samples", "3"):
        report = figures.gather(folder, include_samples=True)

    assert report["channels"]["sms"]["samples"] == [
        {"customer_id": "C4", "segment": "regular", "recipient": "+12125550104",
         "status": "failed", "error": ROWS[3][4]},
        {"customer_id": "C5", "segment": "new", "recipient": "+12125550105",
         "status": "failed", "error": ROWS[4][4]},
        {"customer_id": "C6", "segment": "new", "recipient": "+12125550106",
         "status": "failed", "error": ROWS[5][4]},
    ]  # fmt: skip


def test_a_signed_token_in_a_sample_error_is_masked(tmp_path):
    """A ledger written before errors were masked for signed tokens: its samples are masked
    in the report all the same."""
    folder = run_folder(tmp_path)
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJzYUBwLmlhbSJ9.c2lnbmF0dXJlLW9mLXRoZS1ncmFudA"
    error = f"push channel stopped: the token endpoint refused (<pre>assertion={jwt}</pre>)"
    build_ledger(folder / "push_ledger.sqlite", [("C1", "new", "tok", "failed", error, 0.1)])

    (sample,) = figures.gather(folder, include_samples=True)["channels"]["push"]["samples"]

    assert (
        sample["error"]
        == "push channel stopped: the token endpoint refused (<pre>assertion=***</pre>)"
    )


def test_a_result_file_without_its_ledger_gives_the_same_figures(tmp_path):
    folder = run_folder(tmp_path)
    rows = [*ROWS, ("=1+2", "new", "@x", "failed", "email provider answered 400: bad", 2.0)]
    build_ledger(folder / "email_ledger.sqlite", rows)
    write_results(folder / "email_ledger.sqlite", folder / "email_results.csv")
    from_ledger = figures.gather(folder, include_samples=True)["channels"]["email"]

    (folder / "email_ledger.sqlite").unlink()
    from_file = figures.gather(folder, include_samples=True)["channels"]["email"]

    assert from_file.pop("source") == "email_results.csv"
    assert from_ledger.pop("source") == "email_ledger.sqlite"
    assert from_file == from_ledger
    assert {"status": 400, "code": "", "meaning": "bad address or message body",
            "action": "failed", "count": 1} in from_file["failed_by_code"]  # fmt: skip
    assert from_file["samples"][-1]["customer_id"] == "=1+2", "safecsv's quote taken off"


def test_the_timeline_bins_sent_rows_by_sent_at_in_at_most_300_bins(tmp_path):
    folder = run_folder(tmp_path)
    build_ledger(folder / "push_ledger.sqlite")

    timeline = figures.gather(folder)["channels"]["push"]["timeline"]

    assert timeline["bin_seconds"] == 1
    assert timeline["start"] == "2026-11-25T10:00:00.000+00:00"
    assert timeline["accepted"] == [2, 1], "sent rows only: 0.1 s and 0.6 s, then 1.2 s"
    assert timeline["first_sent"] == "2026-11-25T10:00:00.100+00:00"
    assert timeline["last_sent"] == "2026-11-25T10:00:01.200+00:00"
    assert timeline["limit_per_second"] == 2.0, "[push_api] rate_per_second of luigi.cfg"
    # 1.1 s from first to last: too short to measure a rate
    assert timeline["measured"] is False
    assert (timeline["achieved_per_second"], timeline["peak_per_second"]) == (None, None)
    assert timeline["ratio"] is None

    spread = [(f"S{n}", "new", f"s{n}", "sent", "", n * 37.0) for n in range(100)]  # ~1 hour
    (folder / "push_ledger.sqlite").unlink()
    build_ledger(folder / "push_ledger.sqlite", spread)
    timeline = figures.gather(folder)["channels"]["push"]["timeline"]
    assert timeline["bin_seconds"] == 15
    assert len(timeline["accepted"]) == 245 <= figures.MAX_BINS  # 3663 s / 15, + 1
    assert sum(timeline["accepted"]) == 100
    assert timeline["measured"] is True
    assert timeline["achieved_per_second"] == pytest.approx(99 / 3663, abs=0.001)
    assert timeline["ratio"] == pytest.approx(99 / 3663 / 2.0, abs=0.0001)


def test_a_send_too_short_to_measure_has_no_rate_nor_share_of_the_limit(tmp_path):
    folder = run_folder(tmp_path)
    burst = [(f"B{n}", "new", f"b{n}", "sent", "", n * 0.01) for n in range(5)]  # in 40 ms
    build_ledger(folder / "push_ledger.sqlite", burst)

    timeline = figures.gather(folder)["channels"]["push"]["timeline"]

    assert timeline["accepted"] == [5]
    assert timeline["measured"] is False, "not 4 / 0.04 s = 100/s, nor 250 % of the limit"
    assert (timeline["achieved_per_second"], timeline["ratio"]) == (None, None)

    seconds = figures.MEASURABLE_SECONDS
    even = [(f"E{n}", "new", f"e{n}", "sent", "", n * seconds / 10) for n in range(11)]
    (folder / "push_ledger.sqlite").unlink()
    build_ledger(folder / "push_ledger.sqlite", even)
    timeline = figures.gather(folder)["channels"]["push"]["timeline"]
    assert timeline["measured"] is True
    assert timeline["achieved_per_second"] == pytest.approx(10 / seconds, abs=0.001)


@pytest.mark.parametrize(
    ("span", "width"),
    [(0, 1), (299.9, 1), (300, 2), (3600, 15), (86400 * 30, 21600), (86400 * 400, 86400 * 2)],
)
def test_bin_width_keeps_to_300_bins(span, width):
    assert figures.bin_width(span) == width
    assert span // width + 1 <= figures.MAX_BINS


def test_nothing_sent_has_no_timeline(tmp_path):
    folder = run_folder(tmp_path)
    build_ledger(folder / "email_ledger.sqlite", [r for r in ROWS if r[3] != "sent"])

    assert figures.gather(folder)["channels"]["email"]["timeline"] is None


def test_a_dry_run_reports_its_previews(tmp_path):
    folder = run_folder(tmp_path) / "dry-run"
    folder.mkdir()
    preview = {
        "counts": {
            "by_status": {"would_send": 5, "failed": 1, "skipped": 2},
            "skipped_by_reason": {"suppressed": 1, "invalid": 1},
            "suppressed_by_source": {"file": 1},
            "by_segment": {"new": {"would_send": 2, "skipped": 1},
                           "premium": {"would_send": 3, "failed": 1, "skipped": 1}},
        },
        "not_sent": [{"customer_id": "C9", "segment": "premium", "status": "failed",
                      "reason": "not sent: template ... ann@example.com"}],
    }  # fmt: skip
    (folder / "sms_preview.json").write_text(json.dumps(preview))

    report = figures.gather(folder, dry_run=True)

    sms = report["channels"]["sms"]
    assert (report["dry_run"], report["campaign"], report["date"]) == (True, "demo", "2026-11-25")
    assert (sms["state"], sms["source"], sms["targeted"]) == ("preview", "sms_preview.json", 8)
    assert sms["counts"] == {"would_send": 5, "failed": 1, "skipped": 2}
    assert list(sms["by_segment"]) == ["premium", "new"]
    assert sms["by_segment"]["new"] == {"targeted": 3, "would_send": 2, "failed": 0, "skipped": 1}
    assert sms["skipped_by_reason"] == {"suppressed": 1, "invalid": 1}
    assert sms["failed_by_reason"] == {"not sent": 1}
    assert sms["timeline"] is None
    assert "ann@example.com" not in json.dumps(report)
    assert list(report["inputs"]) == ["sms_preview.json"]
    assert report["channels"]["email"]["state"] == "not started"
    with_samples = figures.gather(folder, dry_run=True, include_samples=True)
    assert with_samples["channels"]["sms"]["samples"][0]["customer_id"] == "C9"


def test_provider_urls_lose_their_credentials_and_query():
    assert (
        figures.clean_url("https://user:pa55@api.example.com:8443/v3/?key=secret#x")
        == "https://api.example.com:8443/v3/"
    )
    assert figures.clean_url("http://127.0.0.1:8765") == "http://127.0.0.1:8765"


def test_the_task_log_gives_each_tasks_latest_attempt(tmp_path):
    timings.record(tmp_path, "LoadSegments", "L1", "start")
    timings.record(tmp_path, "LoadSegments", "L1", "success")
    timings.record(tmp_path, "SendSmsCampaign", "S1", "start")
    timings.record(tmp_path, "SendSmsCampaign", "S1", "failure", "RecipientsPendingError")
    timings.record(tmp_path, "SendSmsCampaign", "S1", "start")  # luigi's retry
    timings.record(tmp_path, "SendPushNotification", "P1", "failure", "RuntimeError")
    with (tmp_path / timings.TASK_LOG).open("a") as handle:
        handle.write('{"at": "2026-11-25T10:00')  # cut short by a crash

    tasks = timings.read(tmp_path)

    assert [(t["task"], t["state"], t["error"]) for t in tasks] == [
        ("LoadSegments", "done", ""),
        ("SendSmsCampaign", "running", ""),
        ("SendPushNotification", "failed", "RuntimeError"),
    ]
    assert tasks[0]["seconds"] >= 0 and tasks[0]["started"] <= tasks[0]["ended"]
    assert (tasks[1]["ended"], tasks[1]["seconds"]) == ("", None)
    assert (tasks[2]["started"], tasks[2]["seconds"]) == ("", None), "failed before it started"
    assert timings.read(tmp_path / "nowhere") == []


def test_write_replaces_both_files_and_report_url_follows_base_url(tmp_path):
    folder = run_folder(tmp_path)
    build_ledger(folder / "email_ledger.sqlite")

    message = "environment variable EMAIL_API_TOKEN is not set (named by [email_api] token_env)"
    timings.record(folder, "SendEmailCampaign", "E1", "failure", "MissingSecretError", message)

    page = reporting.write(folder)

    assert page == folder / reporting.REPORT_HTML and page.read_text().startswith("<!doctype")
    written = json.loads((folder / reporting.REPORT_JSON).read_text())
    detail = f"SendEmailCampaign failed (MissingSecretError): {message}"
    assert written["status"] == {"state": "failed", "detail": detail}
    assert f'data-field="detail">{html.escape(detail)}<' in page.read_text(), "one source"
    temporary = [p.name for p in folder.iterdir() if p.name.startswith(".report.")]
    assert temporary == [reporting.REPORT_LOCK], "no temporary file left"
    with setting("report", "base_url", ""):
        assert reporting.report_url(folder) == (folder / "report.html").resolve().as_uri()
    with (
        setting("report", "base_url", "http://127.0.0.1:8084/"),
        setting("campaign", "output_dir", str(tmp_path / "runs")),
    ):
        url = reporting.report_url(folder)
    assert url == "http://127.0.0.1:8084/demo/2026-11-25/report.html"


def test_a_channel_whose_task_failed_at_start_up_says_failed_and_why(tmp_path):
    """Not "not started": the section of a channel stopped by a missing credential names it;
    a later attempt that succeeded supersedes the failure."""
    folder = run_folder(tmp_path)
    message = "environment variable SMS_API_AUTH_TOKEN is not set (named by [sms_api] ...)"
    timings.record(folder, "SendSmsCampaign", "S1", "failure", "MissingSecretError", message)
    timings.record(folder, "SendPushNotification", "P1", "failure", "MissingSecretError", "x")
    timings.record(folder, "SendPushNotification", "P2", "start")
    timings.record(folder, "SendPushNotification", "P2", "success")

    page = reporting.write(folder).read_text()

    channels = json.loads((folder / reporting.REPORT_JSON).read_text())["channels"]
    failure = f"SendSmsCampaign failed (MissingSecretError): {message}"
    assert (channels["sms"]["state"], channels["sms"]["failure"]) == ("failed", failure)
    assert channels["push"]["state"] == "not started" and "failure" not in channels["push"]
    assert channels["email"]["state"] == "not started"
    assert f'data-channel="sms" data-field="failure">{html.escape(failure)}<' in page
    assert "Nothing was sent: the task failed (above)." in page


def test_recipients_deferred_by_quiet_hours_are_deferred_not_failed(tmp_path):
    """A run that exits 15 (deferred) failed nothing: the report says deferred, and until
    when, in the status, the channel's section and report.json alike."""
    folder = run_folder(tmp_path)
    build_ledger(folder / "sms_ledger.sqlite")
    until = "sms: 3 deferred until 2026-11-26 08:00:00 Asia/Tokyo (2026-11-25T23:00:00.000+00:00)"
    timings.record(folder, "SendSmsCampaign", "S1", "failure", "RecipientsDeferredError", until)

    page = reporting.write(folder).read_text()

    written = json.loads((folder / reporting.REPORT_JSON).read_text())
    assert written["status"] == {"state": "deferred", "detail": until}
    sms = written["channels"]["sms"]
    assert (sms["state"], sms["deferred"]) == ("deferred", until) and "failure" not in sms
    assert f'data-channel="sms" data-field="deferred">{html.escape(until)}<' in page

    message = "sms channel stopped: ..."  # a real failure besides: the run failed
    timings.record(folder, "SendEmailCampaign", "E1", "failure", "ChannelStoppedError", message)
    written = json.loads(reporting.write(folder).with_suffix(".json").read_text())
    assert written["status"]["state"] == "failed"
    assert written["status"]["detail"].endswith(f"(ChannelStoppedError): {message}")
