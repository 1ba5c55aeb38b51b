"""Each run folder's report.json (and report.html), from real runs against the sandbox with
faults: checked against the result files and the ledgers of the same run."""

from __future__ import annotations

import csv
import html
import json
import re
import sqlite3
from collections import Counter

from conftest import CHANNELS, RETCODE, TASKS

from campaign_pipeline.ledger import skip_kind
from campaign_pipeline.sandbox import ChannelLimit, ErrorRule

ALL = ["premium", "regular", "new"]
STATUSES = ("sent", "failed", "unknown", "skipped", "pending", "in_flight")
ANSWER = re.compile(r"^\w+ provider answered (\d{3})(?: (\S+))?:")


def report_of(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


def faulty_run(campaign):
    """A run where every status shows: each recipient's first request hangs past the
    client's timeout (email and SMS are set to send again: retries; push records it unknown,
    as by default), SMS
    numbers ending in 1 or 2 are refused with two codes, push meets a strict rate limit
    (429s, sent again), and the first customer's address is in the suppression file."""
    customers = campaign.write_customers(rows=20, dirty=True, seed=5)
    suppressions = campaign.root / "suppressions.csv"
    suppressions.write_text(f"channel,contact,customer_id\nemail,{customers[0]['email']},\n")
    campaign.start_sandbox(
        hang_first=1,
        hang_seconds=2,
        limits={"push": ChannelLimit(20, 4)},
        error_rules=[ErrorRule("sms", "1$", 400, "21610"), ErrorRule("sms", "2$", 400, "21211")],
        echo_credentials=True,
    )
    campaign.configure(**{TASKS[c]: {"target_segments": ALL} for c in CHANNELS})
    # seven push recipients at once meet a bucket of four: three wait out a 429
    campaign.configure(SendPushNotification={"target_segments": ["premium", "new"]})
    for channel in CHANNELS:
        campaign.configure(**{f"{channel}_api": {"timeout_seconds": 0.3, "concurrency": 8}})
    for channel in ("email", "sms"):
        campaign.configure(**{f"{channel}_api": {"retry_unanswered": "true"}})
    campaign.configure(consent={"suppressions": str(suppressions)})
    return campaign.run()


def ledger_stats(folder, channel: str) -> dict:
    with sqlite3.connect(folder / f"{channel}_ledger.sqlite") as db:
        found = db.execute("SELECT value FROM meta WHERE key = 'send_stats'").fetchone()
    return json.loads(found[0])


def test_the_report_of_a_faulty_run_matches_its_result_files_and_ledgers(campaign, credentials):
    done = faulty_run(campaign)

    assert done.returncode == 0, done.stderr[-3000:]
    report = report_of(campaign.folder)
    assert report["status"] == {"state": "complete", "detail": "every task done"}
    assert (report["campaign"], report["date"], report["dry_run"]) == ("test", "2026-11-25", False)
    seen = Counter()
    for channel in CHANNELS:
        rows = campaign.results(channel)
        shown = report["channels"][channel]
        counts = Counter(r["status"] for r in rows)
        assert shown["counts"] == {s: counts[s] for s in STATUSES}, channel
        assert shown["targeted"] == len(rows)
        for segment in {r["segment"] for r in rows}:
            mine = Counter(r["status"] for r in rows if r["segment"] == segment)
            expected = {"targeted": mine.total(), **{s: mine[s] for s in STATUSES}}
            assert shown["by_segment"][segment] == expected, (channel, segment)
        skipped = Counter(skip_kind(r["error"]) for r in rows if r["status"] == "skipped")
        assert shown["skipped_by_reason"] == dict(skipped)
        codes = Counter(ANSWER.match(r["error"]).groups() for r in rows if r["status"] == "failed")
        assert {(str(e["status"]), e["code"] or None): e["count"] for e in shown["failed_by_code"]
                } == dict(codes)  # fmt: skip
        if counts["sent"]:
            assert sum(shown["timeline"]["accepted"]) == counts["sent"], channel
        else:
            assert shown["timeline"] is None, channel
        assert (shown["retries"], shown["rate_limited"]) == tuple(
            ledger_stats(campaign.folder, channel).get(k, 0) for k in ("retries", "rate_limited")
        )
        assert shown["state"] == "complete" and shown["source"] == f"{channel}_ledger.sqlite"
        assert shown["samples"] == []
        seen.update(counts)
    assert all(seen[s] for s in ("sent", "failed", "unknown", "skipped")), seen
    sms = report["channels"]["sms"]
    assert {e["code"] for e in sms["failed_by_code"]} == {"21610", "21211"}
    assert sms["failed_by_code"][0]["meaning"] in {"recipient unsubscribed (replied STOP)",
                                                   "invalid To number"}  # fmt: skip
    # each email and SMS recipient's first request hung and was sent again once, no 429
    for channel in ("email", "sms"):
        shown = report["channels"][channel]
        answered = sum(shown["counts"][s] for s in ("sent", "failed"))
        assert (shown["retries"], shown["rate_limited"]) == (answered, 0), channel
    # each push recipient's request was refused 429 until a token came, then hung: unknown
    push = report["channels"]["push"]
    assert push["rate_limited"] == campaign.sandbox.stats()["push"]["rate_limited"] > 0
    assert push["retries"] == push["rate_limited"]
    assert push["counts"]["unknown"] == len(campaign.results("push"))
    assert report["channels"]["email"]["timeline"]["limit_per_second"] == 1000.0
    tasks = {t["task"]: t for t in report["tasks"]}
    assert set(tasks) == {"LoadSegments", *TASKS.values()}
    assert all(t["state"] == "done" and t["seconds"] >= 0 and t["ended"] for t in tasks.values())
    assert report["inputs"] == {
        f"{c}_results.csv": [(campaign.folder / f"{c}_results.csv").stat().st_size,
                             (campaign.folder / f"{c}_results.csv").stat().st_mtime_ns]
        for c in CHANNELS
    }  # fmt: skip
    assert report["customer_file"]["path"] == str(campaign.customers_path)
    assert report["customer_file"]["size_bytes"] == campaign.customers_path.stat().st_size

    # nothing secret, and no customer's contact or id, in either file
    written = (campaign.folder / "report.json").read_text()
    written += (campaign.folder / "report.html").read_text()
    assert not [name for name, value in credentials.items() if value in written]
    emails = [
        c["email"]
        for c in csv.DictReader(campaign.customers_path.read_text().splitlines())
        if c["email"]
    ]
    contacts = [r["recipient"] for c in CHANNELS for r in campaign.results(c) if r["recipient"]]
    assert not [e for e in emails + contacts if e.strip() and e.strip() in written]
    assert "C00000" not in written, "no customer id"

    # with [report] include_samples, the report shows some failed, unknown and skipped rows
    campaign.configure(report={"include_samples": "true", "samples": 5})
    (campaign.folder / "report.json").unlink()
    again = campaign.run()

    assert again.returncode == 0, again.stderr[-3000:]
    for channel in CHANNELS:
        samples = report_of(campaign.folder)["channels"][channel]["samples"]
        not_sent = [r for r in campaign.results(channel) if r["status"] != "sent"][:5]
        assert samples == [
            {key: row[key] for key in ("customer_id", "segment", "recipient", "status", "error")}
            for row in not_sent
        ], channel
    assert any(report_of(campaign.folder)["channels"][c]["samples"] for c in CHANNELS)
    written = (campaign.folder / "report.json").read_text()
    assert not [name for name, value in credentials.items() if value in written]


def test_a_dry_run_reports_its_previews_in_the_dry_run_folder(campaign):
    campaign.write_customers(rows=20, dirty=True)
    campaign.start_sandbox()

    done = campaign.run("--dry-run")

    assert done.returncode == 0, done.stderr[-3000:]
    assert not (campaign.folder / "report.json").exists()
    report = report_of(campaign.folder / "dry-run")
    assert report["dry_run"] is True and report["status"]["state"] == "complete"
    for channel in CHANNELS:
        preview = json.loads((campaign.folder / "dry-run" / f"{channel}_preview.json").read_text())
        shown = report["channels"][channel]
        assert shown["state"] == "preview"
        by_status = preview["counts"]["by_status"]
        assert shown["counts"] == {s: by_status.get(s, 0) for s in ("would_send", "failed",
                                                                      "skipped")}  # fmt: skip
        assert shown["targeted"] == sum(by_status.values())
        assert shown["timeline"] is None
    assert set(report["inputs"]) == {f"{c}_preview.json" for c in CHANNELS}
    assert campaign.requests("email") == 0

    # every dry run renders the previews again, and its report with them
    first = report["generated_at"]
    assert campaign.run("--dry-run").returncode == 0
    assert report_of(campaign.folder / "dry-run")["generated_at"] > first


def test_a_failed_channel_leaves_a_report_saying_so_and_the_fixed_rerun_completes_it(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox(error_rules=[ErrorRule("sms", ".", 401, "20003")])
    campaign.configure(sms_api={"concurrency": 1})

    failed = campaign.run()

    assert failed.returncode == RETCODE["task_failed"]
    report = report_of(campaign.folder)
    assert report["status"]["state"] == "failed"
    # the error's one line says what to fix: here, the credentials the provider refused
    detail = report["status"]["detail"]
    assert detail.startswith("SendSmsCampaign failed (ChannelStoppedError): sms channel stopped")
    assert "SMS_API_AUTH_TOKEN" in detail
    assert report["channels"]["sms"]["state"] == "failed", "its ledger, and its task failed"
    assert report["channels"]["sms"]["failure"] == detail
    assert report["channels"]["sms"]["counts"]["pending"] > 0
    tasks = {t["task"]: t for t in report["tasks"]}
    assert (tasks["SendSmsCampaign"]["state"], tasks["SendSmsCampaign"]["error"]) == (
        "failed",
        "ChannelStoppedError",
    )
    assert "CampaignReport" not in (campaign.folder / "task_log.jsonl").read_text(), (
        "the report task did not run: the failure handler wrote the report"
    )

    campaign.start_sandbox()  # the fault is gone
    fixed = campaign.run()

    assert fixed.returncode == 0, fixed.stderr[-3000:]
    report = report_of(campaign.folder)
    assert report["status"]["state"] == "complete"
    assert report["channels"]["sms"]["counts"]["sent"] == len(campaign.results("sms"))
    assert {t["task"]: t["state"] for t in report["tasks"]}["SendSmsCampaign"] == "done"


def test_the_report_follows_an_edited_customer_file_and_stays_while_nothing_changed(campaign):
    customers = campaign.write_customers(rows=12)
    campaign.start_sandbox()
    campaign.configure(SendEmailCampaign={"target_segments": ALL})
    assert campaign.run().returncode == 0
    first = report_of(campaign.folder)
    assert first["channels"]["email"]["targeted"] == 12

    unchanged = campaign.run()

    assert unchanged.returncode == 0
    assert report_of(campaign.folder)["generated_at"] == first["generated_at"], "complete"

    campaign.write_customers(rows=15)  # the same 12 customers and three more
    assert [c["customer_id"] for c in customers] == [
        r["customer_id"] for r in campaign.results("email")
    ]
    edited = campaign.run()

    assert edited.returncode == 0, edited.stderr[-3000:]
    report = report_of(campaign.folder)
    assert report["generated_at"] > first["generated_at"]
    assert report["channels"]["email"]["targeted"] == 15 == len(campaign.results("email"))
    assert report["customer_file"]["sha256"] != first["customer_file"]["sha256"]
    assert report["inputs"] != first["inputs"]


def test_a_report_base_url_that_is_not_http_is_one_line_and_nothing_is_sent(campaign):
    campaign.write_customers(rows=5)
    campaign.start_sandbox()
    campaign.configure(report={"base_url": "ftp://reports.example.com/"})

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    problems = {line.split("setting: ", 1)[1] for line in done.stderr.splitlines()
                if "setting: " in line}  # fmt: skip
    assert problems == {
        "[report] base_url = ftp://reports.example.com/: must be an http:// or https:// URL "
        "serving [campaign] output_dir, e.g. http://127.0.0.1:8084, or empty for file:// links"
    }
    assert all(campaign.requests(channel) == 0 for channel in CHANNELS)


def page_values(folder, channel: str) -> dict[str, int]:
    """The channel's status counts as report.html shows them (its data-value hooks)."""
    page = (folder / "report.html").read_text()
    hooks = re.findall(rf'data-channel="{channel}" data-status="(\w+)" data-value="(\d+)"', page)
    return {status: int(n) for status, n in hooks}


def test_after_channels_fail_for_a_credential_the_last_report_matches_the_files(campaign):
    """SMS and push stop at start-up (their credentials are not exported) while email goes on
    and sends: the report is rewritten as each task ends, so the one left matches the result
    files, and the page and the JSON alike name the variables to export."""
    campaign.write_customers(rows=30)
    campaign.start_sandbox()
    campaign.configure(**{TASKS[c]: {"target_segments": ALL} for c in CHANNELS})
    env = campaign.env()
    missing = {"sms": "SMS_API_AUTH_TOKEN", "push": "PUSH_API_TOKEN"}
    for variable in missing.values():
        del env[variable]

    done = campaign.run(env=env)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    report = report_of(campaign.folder)
    rows = campaign.results("email")
    counts = Counter(r["status"] for r in rows)
    assert counts["sent"] > 0
    email = report["channels"]["email"]
    assert email["counts"] == {s: counts[s] for s in STATUSES}
    assert email["state"] == "complete" and email["targeted"] == len(rows)
    shown = page_values(campaign.folder, "email")
    assert {s: shown[s] for s in STATUSES} == {s: counts[s] for s in STATUSES}
    assert report["status"]["state"] == "failed"
    page = (campaign.folder / "report.html").read_text()
    detail = re.search(r'data-field="detail">([^<]*)<', page)[1]
    assert html.unescape(detail) == report["status"]["detail"], "one status, page and JSON"
    for channel, variable in missing.items():
        assert f"{TASKS[channel]} failed (MissingSecretError)" in report["status"]["detail"]
        assert variable in report["status"]["detail"], channel
        assert variable in page
        # and the channel's own section says it failed and why, not "not started"
        part = report["channels"][channel]
        assert part["state"] == "failed" and variable in part["failure"], part
        section = re.search(rf'data-channel="{channel}" data-field="failure">([^<]*)<', page)
        assert html.unescape(section[1]) == part["failure"]
    tasks = {t["task"]: t for t in report["tasks"]}
    assert tasks[TASKS["email"]]["state"] == "done"
    assert "SMS_API_AUTH_TOKEN" in tasks[TASKS["sms"]]["message"]
    written = (campaign.folder / "report.json").read_text() + page
    assert not [name for name, value in campaign.credentials.items() if value in written]
