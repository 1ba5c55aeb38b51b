"""Runs tell the truth and end cleanly: dry runs, timeouts with retries, the run lock."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import CHANNELS, DATE, REPO, RETCODE, TASKS, free_port, wait_for
from luigi.cmdline_parser import CmdlineParser
from test_operations import ALREADY_RUNNING, finish, make, write_dated_customers

from campaign_pipeline import RunCampaign, SendEmailCampaign, SendSmsCampaign

ALL = ["premium", "regular", "new"]


def target_everyone(campaign) -> None:
    campaign.configure(**{TASKS[c]: {"target_segments": ALL} for c in CHANNELS})


def ledger_statuses(campaign, channel: str) -> dict[str, int]:
    with sqlite3.connect(campaign.folder / f"{channel}_ledger.sqlite") as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"))


def slow_channels_with_a_retry(campaign, rows: int) -> None:
    """Each channel sends one request at a time, 0.3 s each; a 4 s timeout; one retry 1 s
    after a failure."""
    campaign.write_customers(rows=rows)
    campaign.start_sandbox(latency_ms=300)
    target_everyone(campaign)
    for channel in CHANNELS:
        campaign.configure(**{f"{channel}_api": {"concurrency": 1}})
    campaign.configure(
        campaign={"timeout_seconds": 4},
        scheduler={"retry_count": 2, "retry_delay": 1},
    )


def test_a_timed_out_attempt_fails_alone_and_a_retry_that_completes_is_a_success(campaign):
    slow_channels_with_a_retry(campaign, rows=20)  # 6 s per channel: two attempts

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    assert "there were failed tasks but they all succeeded in a retry" in done.stderr
    for channel in CHANNELS:
        assert done.stderr.count(f"{channel} channel stopped: timed out after 4 s") == 1
        assert done.stderr.count(f"running   {TASKS[channel]}(") == 2
        assert ledger_statuses(campaign, channel) == {"sent": 20}
        assert set(campaign.accepted(channel).values()) == {1}
        assert len(campaign.accepted(channel)) == 20


def test_a_retry_runs_under_its_own_timeout(campaign):
    slow_channels_with_a_retry(campaign, rows=60)  # 18 s per channel: longer than both

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    for channel in CHANNELS:
        assert f"done      {TASKS[channel]}(" not in done.stderr, "a retry ran unwatched"
        assert done.stderr.count(f"{channel} channel stopped: timed out after 4 s") == 2
        assert not (campaign.folder / f"{channel}_results.csv").exists()
        statuses = ledger_statuses(campaign, channel)
        assert set(statuses) == {"sent", "pending"}, "nothing in flight, nothing failed"
        assert statuses["sent"] == sum(campaign.accepted(channel).values())
        assert set(campaign.accepted(channel).values()) == {1}


def test_a_dry_run_with_depends_on_past_sends_nothing_and_names_the_date_not_complete(campaign):
    dates = ["2026-11-22", "2026-11-23", "2026-11-24", DATE]
    write_dated_customers(campaign, dates)
    campaign.start_sandbox()
    campaign.configure(schedule={"start_date": dates[0], "depends_on_past": "true"})
    previews = campaign.folder / "dry-run"
    note = "[schedule] depends_on_past: the campaign of 2026-11-24 is not complete"

    code, output = finish(make(campaign, "preview", scheduler_port=free_port(), DATE=DATE))

    assert code == 0, output[-3000:]
    assert [campaign.requests(channel) for channel in CHANNELS] == [0, 0, 0]
    assert not list((campaign.root / "runs" / "test").glob("*/*_results.csv"))
    for channel in CHANNELS:
        preview = json.loads((previews / f"{channel}_preview.json").read_text())
        assert preview["depends_on_past"]["previous_date"] == "2026-11-24"
        assert preview["depends_on_past"]["note"].startswith(note)
    assert f"Note: {note}" in output, output[-3000:]

    assert campaign.run(date="2026-11-24").returncode == 0  # runs 11-22 and 11-23 first
    sent = [campaign.requests(channel) for channel in CHANNELS]
    shutil.rmtree(previews)
    code, output = finish(make(campaign, "preview", scheduler_port=free_port(), DATE=DATE))

    assert code == 0, output[-3000:]
    assert [campaign.requests(channel) for channel in CHANNELS] == sent
    assert "depends_on_past" not in json.loads((previews / "email_preview.json").read_text())
    assert "Note:" not in output


def test_a_dry_run_cannot_require_a_real_run():
    class LeakyPreview(RunCampaign):
        def requires(self):
            return [SendEmailCampaign(date=self.date, campaign=self.campaign)]

    with pytest.raises(RuntimeError, match="requires real runs, which send"):
        LeakyPreview(campaign="demo", dry_run=True).deps()
    assert LeakyPreview(campaign="demo", dry_run=False).deps()


def test_resend_unknown_changes_what_a_run_does_not_which_task_it_is():
    """Like gokart's ``rerun``: the flag is no part of what the task produces, so no part of
    its id; it still works on the command line, on the channel or through RunCampaign and
    its CampaignReport (the test above shows it resends the unknown rows)."""
    date = datetime.date.fromisoformat(DATE)
    plain = SendEmailCampaign(date=date)
    with CmdlineParser.global_instance(["SendEmailCampaign", "--date", DATE, "--resend-unknown"]):
        flagged = CmdlineParser.get_instance().get_task_obj()
    with CmdlineParser.global_instance(
        ["RunCampaign", "--date", DATE, "--SendEmailCampaign-resend-unknown"]
    ):
        (report,) = RunCampaign(date=date).requires()  # the channels through the report
        required = {type(task): task for task in report.requires()}

    assert flagged.resend_unknown and not plain.resend_unknown
    assert flagged.task_id == plain.task_id
    assert required[SendEmailCampaign].resend_unknown
    assert required[SendEmailCampaign].task_id == plain.task_id
    assert not required[SendSmsCampaign].resend_unknown, "the flag is per channel"


def campaign_run(campaign, *args: str) -> subprocess.Popen:
    """`campaign-run ...` as cron runs it (what `make daily` runs), with this test's config."""
    command = [str(Path(sys.executable).parent / "campaign-run"), "--scheduler-port",
               str(free_port()), "--log-dir", str(campaign.root / "log"), *args]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=campaign.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def sending_slowly(campaign) -> tuple[subprocess.Popen, psutil.Process]:
    """Start `campaign-run daily`; once the sandbox sees requests, return its luigi."""
    campaign.write_customers(rows=40)
    campaign.start_sandbox(latency_ms=5000)  # requests in flight take 5 s to be answered
    target_everyone(campaign)
    for channel in CHANNELS:  # ...and are waited for
        campaign.configure(**{f"{channel}_api": {"timeout_seconds": 30}})
    wrapper = campaign_run(campaign, "daily", "--date", DATE)
    sending = lambda: all(campaign.requests(channel) for channel in CHANNELS)  # noqa: E731
    wait_for(sending, 60, "every channel to send")
    (luigi,) = psutil.Process(wrapper.pid).children()
    return wrapper, luigi


def lock_is_free(campaign) -> bool:
    with (campaign.root / "runs" / "test" / ".run.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def another_date(campaign) -> tuple[int, str]:
    """A run that luigi's own lock lets through (another command line): only ours stops it."""
    second = campaign_run(campaign, "daily", "--date", "2026-11-24")
    output, _ = second.communicate(timeout=60)
    return second.returncode, output


def test_sigterm_to_campaign_run_stops_luigi_cleanly_and_the_lock_outlives_the_wrapper(campaign):
    wrapper, luigi = sending_slowly(campaign)

    wrapper.send_signal(signal.SIGTERM)
    code, output = another_date(campaign)

    assert luigi.is_running(), "luigi ended before the second run was refused: no proof"
    assert code == ALREADY_RUNNING, output[-3000:]
    assert "campaign test is already running" in output
    code, output = finish(wrapper)
    assert not luigi.is_running()
    assert code == RETCODE["task_failed"], output[-3000:]
    assert f"=== exit {code} (task_failed), stopped by SIGTERM" in output
    assert "email channel stopped: terminated by signal 15" in output
    assert lock_is_free(campaign)
    for channel in CHANNELS:
        statuses = ledger_statuses(campaign, channel)
        assert "in_flight" not in statuses, "the requests in flight were recorded"
        assert statuses["sent"] == sum(campaign.accepted(channel).values()) < 40
        assert set(campaign.accepted(channel).values()) == {1}


def test_the_run_lock_stays_held_while_luigi_runs_after_the_wrapper_is_killed(campaign):
    wrapper, luigi = sending_slowly(campaign)

    wrapper.send_signal(signal.SIGKILL)
    wrapper.wait(timeout=10)
    wrapper.stdout.close()  # not communicate(): luigi, still running, may hold the pipe too
    code, output = another_date(campaign)

    try:
        assert luigi.is_running()
        assert code == ALREADY_RUNNING, output[-3000:]
        assert not lock_is_free(campaign)
    finally:
        os.killpg(luigi.pid, signal.SIGKILL)  # luigi runs in a session of its own
        luigi.wait(timeout=10)
    wait_for(lambda: lock_is_free(campaign), 10, "the last process of the run to end")
