"""Runs tell the truth and end cleanly: dry runs, timeouts with retries, the run lock."""

from __future__ import annotations

import sqlite3

from conftest import CHANNELS, RETCODE, TASKS

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
