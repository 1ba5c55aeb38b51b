"""Runs tell the truth and end cleanly: dry runs, timeouts with retries, the run lock."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from conftest import CHANNELS, DATE, RETCODE, TASKS, free_port
from test_operations import finish, make, write_dated_customers

from campaign_pipeline.tasks import RunCampaign, SendEmailCampaign

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
