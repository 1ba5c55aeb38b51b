"""Operating the pipeline: a real luigid, make daily/backfill, one run at a time, timeouts."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import CHANNELS, DATE, REPO, RETCODE, TASKS, free_port, wait_for

from campaign_pipeline.runner import scheduler_answers

ALL = ["premium", "regular", "new"]
ALREADY_RUNNING = 10
MAKE_FAILED = 2  # GNU make's own status when a recipe fails, whatever the recipe returned
ARTIFACTS = REPO / "var" / "test-artifacts"


@pytest.fixture
def luigid(tmp_path):
    """A real luigid with the repository's scheduler config, on a free loopback port."""
    port = free_port()
    logdir = tmp_path / "luigid"
    logdir.mkdir()
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(REPO / "config" / "luigid.cfg")}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "luigid"), "--address", "127.0.0.1",
         "--port", str(port), "--logdir", str(logdir), "--state-path",
         str(logdir / "state.pickle")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert scheduler_answers("127.0.0.1", port, wait=20), "luigid did not start"
    yield port
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)


def task_list(port: int, status: str) -> dict:
    query = urllib.parse.quote(json.dumps({"status": status, "upstream_status": ""}))
    url = f"http://127.0.0.1:{port}/api/task_list?data={query}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)["response"]


def make(campaign, *targets: str, scheduler_port: int, **variables: str):
    """`make TARGET` as cron runs it, with this test's config, log folder and scheduler."""
    args = [f"{k}={v}" for k, v in variables.items()]
    # the demo's day config in the test's folder: the checkout's var/demo.cfg is the user's
    demo = f"DEMO_CONFIG={campaign.root / 'demo.cfg'}"
    return subprocess.Popen(
        ["make", "-s", *targets, f"VENV={sys.prefix}", demo, *args],
        cwd=REPO,
        env=campaign.env(
            LOG_DIR=str(campaign.root / "log"),
            SCHEDULER_HOST="127.0.0.1",
            SCHEDULER_PORT=str(scheduler_port),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def target_everyone(campaign) -> None:
    campaign.configure(**{TASKS[c]: {"target_segments": ALL} for c in CHANNELS})


def test_central_scheduler_shows_live_progress_and_final_status(campaign, luigid):
    campaign.write_customers(rows=80)
    campaign.start_sandbox(latency_ms=100)
    target_everyone(campaign)
    for channel in CHANNELS:
        campaign.configure(**{f"{channel}_api": {"rate_per_second": 10, "burst": 5}})
    scheduler = ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)]
    command = [a for a in campaign.command(*scheduler) if a != "--local-scheduler"]
    running = subprocess.Popen(command, cwd=REPO, env=campaign.env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen: set[str] = set()

    def progress_shown() -> bool:
        for task in task_list(luigid, "RUNNING").values():
            if task["name"] in TASKS.values() and task.get("status_message"):
                seen.add(task["status_message"])
        return any(live.search(message) for message in seen)

    # the rate shows once the burst is answered and a span is long enough to measure it
    live = re.compile(r"/ 80 sent\n0 failed\n[\d.]+/s \(limit 10/s\)\nETA ")
    wait_for(progress_shown, timeout=30, what="a live status message with a rate and an ETA")
    _, errors = running.communicate(timeout=60)
    assert running.returncode == 0, errors[-3000:]

    done = {task["name"]: task for task in task_list(luigid, "DONE").values()}
    assert {"LoadSegments", "RunCampaign", *TASKS.values()} <= set(done)
    for name in TASKS.values():
        assert done[name]["progress_percentage"] == 100
        assert done[name]["status_message"] == "80 sent"
    assert done["LoadSegments"]["status_message"] == "80 read · 80 valid · 0 rejected"
    assert any(live.search(message) for message in seen), seen

    browser = shutil.which("chromium")
    assert browser, "chromium is needed for the visualiser check; `make test` installs it"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = f"http://127.0.0.1:{luigid}/static/visualiser/index.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={campaign.root / 'chromium'}", "--virtual-time-budget=8000",
             "--window-size=1400,1000"]  # fmt: skip
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=90)  # fmt: skip
    screenshot = ARTIFACTS / "visualiser.png"
    subprocess.run([browser, *flags, f"--screenshot={screenshot}", page], capture_output=True,
                   timeout=90)  # fmt: skip
    done_rows = [row for row in dom.stdout.split("<tr")[1:] if ">DONE<" in row.replace(" ", "")]
    for name in ("LoadSegments", "RunCampaign", *TASKS.values()):
        assert any(f">{name}<" in row for row in done_rows), f"{name} is not shown as done"
    run_folder = campaign.folder.relative_to(campaign.root / "runs").as_posix()
    report = f"http://127.0.0.1:8084/{run_folder}/report.html"  # luigi.cfg's [report] base_url
    for name in ("RunCampaign", "CampaignReport", *TASKS.values()):
        row = next(row for row in done_rows if f">{name}<" in row)
        assert f'target="_blank" href="{report}"' in row, f"{name} has no link to its report"
    assert screenshot.stat().st_size > 10_000


def test_make_scheduler_then_daily_uses_it_and_logs(campaign, tmp_path):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    port, report_port = free_port(), free_port()
    servers = {
        "LUIGID_DIR": str(tmp_path / "luigid"),
        "CAMPAIGN_DATA": str(campaign.root / "runs"),
        "REPORT_PORT": str(report_port),
    }
    (campaign.root / "runs" / "test").mkdir(parents=True)
    (campaign.root / "runs" / "test" / "history.html").write_text("<p>history</p>")

    code, output = finish(make(campaign, "scheduler", scheduler_port=port, **servers))
    assert code == 0, output
    assert f"visualiser: http://127.0.0.1:{port}/static/visualiser/index.html" in output
    assert f"reports: http://127.0.0.1:{report_port}/\n" in output
    try:
        assert report_page(report_port, "/test/history.html") == (200, "<p>history</p>")
        code, output = finish(make(campaign, "daily", scheduler_port=port, DATE=DATE))
        assert (code, output) == (0, ""), output[-3000:]  # a success prints nothing
        assert "DailyCampaign" in {task["name"] for task in task_list(port, "DONE").values()}
        assert report_page(report_port, f"/test/{DATE}/email_results.csv")[0] == 404
        again = finish(make(campaign, "scheduler", scheduler_port=port, **servers))
        assert again[0] == 0 and "report server already running (pid " in again[1], again
    finally:
        stop = finish(make(campaign, "scheduler-stop", scheduler_port=port, **servers))
    assert stop == (0, "luigid stopped\nreport server stopped\n")
    wait_for(lambda: not scheduler_answers("127.0.0.1", port), 20, "luigid to stop")
    wait_for(lambda: report_page(report_port, "/") is None, 20, "the report server to stop")
    assert not (tmp_path / "luigid" / "report-server.pid").exists()
    logs = list((campaign.root / "log").glob("campaign-*.log"))
    assert len(logs) == 1 and "This progress looks :)" in logs[0].read_text()
    assert f"on central scheduler http://127.0.0.1:{port}" in logs[0].read_text()


def test_make_scheduler_says_the_report_port_is_in_use(campaign, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        report_port = taken.getsockname()[1]
        servers = {"LUIGID_DIR": str(tmp_path / "luigid"), "REPORT_PORT": str(report_port),
                   "CAMPAIGN_DATA": str(campaign.root / "runs")}  # fmt: skip
        port = free_port()
        try:
            code, output = finish(make(campaign, "scheduler", scheduler_port=port, **servers))
        finally:
            finish(make(campaign, "scheduler-stop", scheduler_port=port, **servers))

    assert code == MAKE_FAILED
    assert (
        f"report server did not start: report server: port {report_port} on 127.0.0.1 is in use;"
        " stop what uses it or choose another port (--port, make REPORT_PORT=...)"
    ) in output.splitlines(), output
    assert "reports: http" not in output


def report_page(port: int, path: str) -> tuple[int, str] | None:
    """(status, body) of the report server's answer to GET *path*; None when nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (urllib.error.URLError, ConnectionError):  # refused, or reset while it stops
        return None


def test_make_daily_falls_back_to_the_local_scheduler_and_exits_non_zero_on_failure(campaign):
    campaign.start_sandbox()  # no customer file: missing data

    code, output = finish(make(campaign, "daily", scheduler_port=free_port(), DATE=DATE))

    assert code == MAKE_FAILED
    assert "on local scheduler (no luigid answered)" in output
    log = next((campaign.root / "log").glob("campaign-*.log")).read_text()
    assert f"=== exit {RETCODE['missing_data']} (missing_data)" in log


def test_second_daily_run_exits_at_once_while_the_first_is_sending(campaign):
    campaign.write_customers(rows=40)
    campaign.start_sandbox(latency_ms=200)
    target_everyone(campaign)
    for channel in CHANNELS:  # about 4 s of sending
        campaign.configure(**{f"{channel}_api": {"rate_per_second": 10, "burst": 3}})
    port = free_port()
    first = make(campaign, "daily", scheduler_port=port, DATE=DATE)
    wait_for(lambda: campaign.sandbox.stats()["email"]["accepted"] > 0, 60, "the first run")

    code, output = finish(make(campaign, "daily", scheduler_port=port, DATE=DATE), timeout=30)
    direct = subprocess.run(
        [str(Path(sys.executable).parent / "campaign-run"), "--scheduler-port", str(port),
         "--log-dir", str(campaign.root / "log"), "daily", "--date", "2026-11-24"],
        cwd=REPO, env=campaign.env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert code == MAKE_FAILED and f"already running; exit {ALREADY_RUNNING}" in output
    assert direct.returncode == ALREADY_RUNNING, direct.stdout[-3000:]
    assert first.poll() is None, "the first run should still be sending"
    assert finish(first)[0] == 0
    for channel in CHANNELS:
        assert set(campaign.accepted(channel).values()) == {1}
        assert len(campaign.accepted(channel)) == 40


def write_dated_customers(campaign, dates: list[str]) -> None:
    campaign.write_customers(rows=6)
    for day in dates:
        shutil.copy(campaign.customers_path, campaign.root / f"customers-{day}.csv")
    campaign.configure(campaign={"input_path": str(campaign.root / "customers-{date}.csv")})


def complete_dates(campaign) -> list[str]:
    folders = (campaign.root / "runs" / "test").glob("*/push_results.csv")
    return sorted(p.parent.name for p in folders)


def test_backfill_runs_every_date_even_older_than_100_days(campaign):
    dates = ["2026-02-01", "2026-02-02", "2026-02-03"]
    write_dated_customers(campaign, dates)
    campaign.start_sandbox()
    campaign.configure(schedule={"start_date": "2026-01-15"})

    code, output = finish(
        make(campaign, "backfill", scheduler_port=free_port(), START=dates[0], END=dates[-1])
    )

    assert code == 0, output[-3000:]
    assert complete_dates(campaign) == dates
    assert campaign.sandbox.stats()["email"]["accepted"] == 3 * 6


def test_backfill_outside_the_schedule_is_refused(campaign):
    campaign.start_sandbox()
    campaign.configure(schedule={"start_date": "2026-02-01", "end_date": "2026-02-28"})

    code, output = finish(
        make(campaign, "backfill", scheduler_port=free_port(), START="2026-01-30", END="2026-02-02")
    )

    assert code == 2
    assert "2026-01-30 outside the campaign's schedule" in output
    assert not (campaign.root / "runs").exists()


def test_daily_with_catchup_runs_the_missed_dates(campaign):
    dates = ["2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24", DATE]
    write_dated_customers(campaign, dates)
    campaign.start_sandbox()
    campaign.configure(schedule={"start_date": "2026-11-21"})
    assert campaign.run(date="2026-11-22").returncode == 0
    campaign.configure(schedule={"start_date": "2026-11-21", "catchup": "true"})

    code, output = finish(make(campaign, "daily", scheduler_port=free_port(), DATE=DATE))

    assert code == 0, output[-3000:]
    assert complete_dates(campaign) == dates[1:], "11-21 is before the last complete date"


def test_depends_on_past_requires_the_previous_date(campaign):
    dates = ["2026-11-24", DATE]
    write_dated_customers(campaign, dates)
    campaign.start_sandbox()
    campaign.configure(schedule={"start_date": "2026-11-24", "depends_on_past": "true"})

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    assert complete_dates(campaign) == dates


def test_worker_timeout_stops_a_task_cleanly_and_the_ledger_keeps_what_was_sent(campaign):
    campaign.write_customers(rows=120)
    campaign.start_sandbox(latency_ms=300)
    target_everyone(campaign)
    campaign.configure(campaign={"timeout_seconds": 2})

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"]
    assert "timed out after 2" in done.stderr
    for channel in CHANNELS:
        with sqlite3.connect(campaign.folder / f"{channel}_ledger.sqlite") as db:
            statuses = dict(db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"))
        assert "in_flight" not in statuses, "requests in flight were recorded before exiting"
        assert statuses.get("sent", 0) == sum(campaign.accepted(channel).values())
        assert 0 < statuses["sent"] < 120

    campaign.configure(campaign={"timeout_seconds": 0})
    rerun = campaign.run()

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for channel in CHANNELS:
        assert set(campaign.accepted(channel).values()) == {1}
        assert len(campaign.accepted(channel)) == 120


def test_dates_in_the_future_of_the_schedule_are_not_run(campaign):
    campaign.start_sandbox()
    campaign.configure(schedule={"end_date": "2026-11-01"})

    code, output = finish(make(campaign, "daily", scheduler_port=free_port(), DATE=DATE))

    assert (code, output) == (0, "")
    log = next((campaign.root / "log").glob("campaign-*.log")).read_text()
    assert "nothing to run: 2026-11-25 outside the campaign's schedule" in log
    assert datetime.date.fromisoformat(DATE) > datetime.date(2026, 11, 1)


def test_a_channel_being_sent_by_another_process_is_left_alone(campaign):
    """Two hand-typed luigi commands cannot send one channel of one date at the same time."""
    from campaign_pipeline.ledger import Ledger

    campaign.write_customers(rows=5)
    campaign.start_sandbox()
    campaign.folder.mkdir(parents=True)
    held = Ledger(str(campaign.folder / "email_ledger.sqlite"))  # as another process would
    try:
        done = campaign.run(task="SendEmailCampaign")
    finally:
        held.close()

    assert done.returncode == RETCODE["task_failed"]
    assert "email_ledger.sqlite is in use by another run of this channel" in done.stderr
    assert campaign.requests("email") == 0
