"""Delivery guarantees: retries, rate limits, stops, permanent errors, crashes and resumes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHANNELS, DATE, RETCODE, TASKS, kill_group, wait_for

from campaign_pipeline.sandbox import ChannelLimit

ALL = ["premium", "regular", "new"]


def target_everyone(campaign) -> None:
    campaign.configure(**{TASKS[c]: {"target_segments": ALL} for c in CHANNELS})


def test_5xx_is_retried_after_the_delay_and_sent_once(campaign):
    campaign.write_customers(rows=30)
    campaign.start_sandbox(fail_first=1)  # every recipient's first request gets a 503
    target_everyone(campaign)

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    for channel in CHANNELS:
        rows = campaign.results(channel)
        assert [r["status"] for r in rows] == ["sent"] * 30
        assert {r["attempts"] for r in rows} == {"2"}
        assert set(campaign.accepted(channel).values()) == {1}
        assert campaign.sandbox.stats()[channel]["statuses"]["503"] == 30


def test_a_read_timeout_is_retried_and_sent_once_with_retry_unanswered(campaign):
    campaign.write_customers(rows=12)
    campaign.start_sandbox(hang_first=1, hang_seconds=5)  # hangs, then 503, never accepted
    target_everyone(campaign)
    for channel in CHANNELS:
        campaign.configure(
            **{
                f"{channel}_api": {
                    "timeout_seconds": 0.3,
                    "concurrency": 6,
                    "retry_unanswered": "true",
                }
            }
        )

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    for channel in CHANNELS:
        rows = campaign.results(channel)
        assert [(r["status"], r["attempts"]) for r in rows] == [("sent", "2")] * 12
        assert set(campaign.accepted(channel).values()) == {1}


def report_counts(campaign) -> dict[str, dict[str, int]]:
    """Each channel's counts by status as ``campaign-report`` prints them."""
    report = subprocess.run(
        [str(Path(sys.executable).parent / "campaign-report"), "--date", DATE],
        env=campaign.env(), capture_output=True, text=True,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    header = next(line.split() for line in lines if line.startswith("channel "))
    return {
        words[0]: dict(zip(header[1:-1], map(int, words[1 : len(header) - 1]), strict=True))
        for line in lines
        if (words := line.split()) and words[0] in CHANNELS
    }


def test_a_read_timeout_is_unknown_counted_and_resent_only_with_resend_unknown(campaign):
    """The provider may have taken a request it did not answer: by default it is never sent
    twice (was: sent again, a duplicate when the provider had taken it)."""
    campaign.write_customers(rows=6)
    campaign.start_sandbox(hang_first=1, hang_seconds=5)  # hangs, then 503, never accepted
    target_everyone(campaign)
    for channel in CHANNELS:
        campaign.configure(**{f"{channel}_api": {"timeout_seconds": 0.3}})

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((campaign.folder / "report.json").read_text())
    printed = report_counts(campaign)
    for channel in CHANNELS:
        rows = campaign.results(channel)
        assert [(r["status"], r["attempts"]) for r in rows] == [("unknown", "1")] * 6
        assert all(r["error"].startswith("ReadTimeout") for r in rows)
        # a second request would have been accepted: only the first of each hangs
        assert not campaign.accepted(channel), "one request each, never a second"
        assert report["channels"][channel]["counts"]["unknown"] == 6
        assert (printed[channel]["sent"], printed[channel]["unknown"]) == (0, 6)

    assert campaign.run().returncode == 0
    assert not any(campaign.accepted(channel) for channel in CHANNELS), "a rerun sends none"

    for channel in CHANNELS:
        (campaign.folder / f"{channel}_results.csv").unlink()
    resent = campaign.run(*(f"--{TASKS[channel]}-resend-unknown" for channel in CHANNELS))

    assert resent.returncode == 0, resent.stderr[-3000:]
    for channel in CHANNELS:
        assert [r["status"] for r in campaign.results(channel)] == ["sent"] * 6
        assert set(campaign.accepted(channel).values()) == {1}


def test_transient_failures_left_after_retries_fail_the_task_and_the_next_run_resends_them(
    campaign,
):
    campaign.write_customers(rows=20)
    campaign.start_sandbox(fail_first=2)  # two 503s per recipient; two attempts per run
    target_everyone(campaign)

    first = campaign.run()

    assert first.returncode == RETCODE["task_failed"]
    assert "20 recipient(s) still failing transiently after 2 attempt(s)" in first.stderr
    assert not (campaign.folder / "email_results.csv").exists()
    assert campaign.sandbox.stats()["email"]["accepted"] == 0

    second = campaign.run()

    assert second.returncode == 0, second.stderr[-3000:]
    for channel in CHANNELS:
        rows = campaign.results(channel)
        assert [(r["status"], r["attempts"]) for r in rows] == [("sent", "3")] * 20
        assert set(campaign.accepted(channel).values()) == {1}


def test_luigi_retries_a_failed_channel_within_the_same_run(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox(fail_first=2)
    target_everyone(campaign)
    campaign.configure(scheduler={"retry_count": 2, "retry_delay": 0.5})

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    assert "still failing transiently" in done.stderr, "the first attempt of each channel failed"
    for channel in CHANNELS:
        assert [r["status"] for r in campaign.results(channel)] == ["sent"] * 10
        assert set(campaign.accepted(channel).values()) == {1}


def test_429_waits_as_told_and_does_not_use_up_an_attempt(campaign):
    campaign.write_customers(rows=40)
    # The provider allows 20/s with a burst of 4; the client is told 200/s with a burst of 50.
    campaign.start_sandbox(limits={c: ChannelLimit(20, 4) for c in CHANNELS})
    target_everyone(campaign)
    for channel in CHANNELS:
        campaign.configure(**{f"{channel}_api": {"retry_attempts": 1, "concurrency": 4}})

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    for channel in CHANNELS:
        assert campaign.sandbox.stats()[channel]["rate_limited"] > 0
        assert [r["status"] for r in campaign.results(channel)] == ["sent"] * 40
        assert set(campaign.accepted(channel).values()) == {1}


def test_401_stops_the_channel_at_once_and_names_the_variable(campaign):
    campaign.write_customers(rows=50)
    campaign.start_sandbox()
    target_everyone(campaign)
    wrong = "wrong-token-0123456789abcdef"

    done = campaign.run(env=campaign.env(EMAIL_API_TOKEN=wrong))

    assert done.returncode == RETCODE["task_failed"]
    assert "email channel stopped: email provider answered 401" in done.stderr
    assert "$EMAIL_API_TOKEN" in done.stderr
    assert wrong not in done.stderr + done.stdout
    stats = campaign.sandbox.stats()["email"]
    assert stats["requests"] <= 8, "one request per sending thread at most, no retry storm"
    assert stats["accepted"] == 0
    assert not (campaign.folder / "email_results.csv").exists()
    for channel in ("sms", "push"):  # the other channels are not held back
        assert [r["status"] for r in campaign.results(channel)] == ["sent"] * 50


def test_permanent_errors_are_recorded_with_the_reason_and_not_retried(campaign):
    campaign.customers_path.write_text(
        "customer_id,first_name,segment,email,phone,device_token\n"
        "P1,Ann,premium,bounce.p1@example.com,+15005550001,unregistered" + "x" * 40 + "\n"
        "P2,Bo,premium,bo@example.com,+15005550004,invalid" + "y" * 40 + "\n"
        "P3,Cy,premium,cy@example.com,+15005550009,valid" + "z" * 40 + "\n"
    )
    campaign.start_sandbox()

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    outcome = {
        c: [(r["customer_id"], r["status"], r["attempts"], r["error"]) for r in campaign.results(c)]
        for c in CHANNELS
    }
    assert outcome["email"][0][:3] == ("P1", "failed", "1")
    assert "400" in outcome["email"][0][3] and "valid address" in outcome["email"][0][3]
    assert [(c, s, a) for c, s, a, _ in outcome["sms"]] == [
        ("P1", "failed", "1"),
        ("P2", "failed", "1"),
        ("P3", "failed", "1"),
    ]
    assert [e.split(":")[0] for *_, e in outcome["sms"]] == [
        "sms provider answered 400 21211",
        "sms provider answered 400 21610",
        "sms provider answered 400 21614",
    ]
    assert [(s, e.split(":")[0]) for _, s, _, e in outcome["push"]] == [
        ("failed", "push provider answered 404 UNREGISTERED"),
        ("failed", "push provider answered 400 INVALID_ARGUMENT"),
        ("sent", ""),
    ]
    assert campaign.requests("sms") == 3 and campaign.requests("push") == 3


def ledger_statuses(campaign, channel: str) -> dict[str, int]:
    with sqlite3.connect(campaign.folder / f"{channel}_ledger.sqlite") as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"))


def crash_mid_send(campaign, rows: int, email_batch: int = 1) -> None:
    """Start the campaign and SIGKILL its whole process tree while every channel is sending."""
    campaign.write_customers(rows=rows)
    campaign.start_sandbox(latency_ms=300)
    target_everyone(campaign)
    for channel in CHANNELS:
        campaign.configure(**{f"{channel}_api": {"concurrency": 4}})
    campaign.configure(email_api={"batch_size": email_batch, "rate_per_second": 10, "burst": 3})
    running = campaign.start()
    wait_for(
        lambda: all(campaign.sandbox.stats()[c]["accepted"] >= 12 for c in CHANNELS),
        timeout=60,
        what="every channel to be sending",
    )
    kill_group(running)
    for channel in CHANNELS:
        assert campaign.sandbox.stats()[channel]["accepted"] < rows, "killed too late"


@pytest.mark.parametrize("email_batch", [1, 5])
def test_sigkill_mid_send_then_rerun_sends_every_recipient_exactly_once(campaign, email_batch):
    crash_mid_send(campaign, rows=90, email_batch=email_batch)
    in_flight = sum(ledger_statuses(campaign, c).get("in_flight", 0) for c in CHANNELS)
    assert in_flight > 0, "the kill should catch requests in flight"

    rerun = campaign.run()

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    unknown = 0
    for channel in CHANNELS:
        rows = campaign.results(channel)
        accepted = campaign.accepted(channel)
        assert len(rows) == 90
        assert set(accepted.values()) == {1}, "nobody received a message twice"
        assert {r["status"] for r in rows} <= {"sent", "unknown"}
        for row in rows:
            if row["status"] == "unknown":
                assert "in flight when an earlier run stopped" in row["error"]
                unknown += 1
        sent = {r["recipient"].lstrip("'") for r in rows if r["status"] == "sent"}
        maybe = {r["recipient"].lstrip("'") for r in rows if r["status"] == "unknown"}
        # everybody sent received one; an unknown one did if the kill came after its bytes
        # left, not if it came between the claim and the send
        assert sent <= set(accepted) <= sent | maybe
        assert len(sent | maybe) == 90
    assert unknown == in_flight


def test_resend_unknown_sends_the_in_flight_ones_again(campaign):
    crash_mid_send(campaign, rows=60)
    in_flight = ledger_statuses(campaign, "email").get("in_flight", 0)
    assert in_flight > 0

    rerun = campaign.run("--SendEmailCampaign-resend-unknown")

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [r["status"] for r in campaign.results("email")] == ["sent"] * 60
    accepted = campaign.accepted("email")
    assert sorted(accepted.values()).count(2) == in_flight, "exactly the unknown ones went twice"
    assert set(campaign.accepted("sms").values()) == {1}, "the flag is per channel"


def lose_ledgers(campaign) -> None:
    """Delete every channel's ledger (with its WAL, its lock file) and the result files not
    yet written when a run dies: as if the run folder were lost or cleaned up."""
    for path in campaign.folder.glob("*_ledger.sqlite*"):
        path.unlink()
    for path in campaign.folder.glob("*_results.csv"):
        path.unlink()


def test_a_lost_ledger_resends_nobody_the_consent_store_records_a_message_to(campaign):
    campaign.write_customers(rows=30)
    campaign.start_sandbox()
    campaign.configure(SendEmailCampaign={"target_segments": ["premium"]})
    first = campaign.run(task="SendEmailCampaign")
    assert first.returncode == 0, first.stderr[-3000:]
    premium = {r["customer_id"] for r in campaign.results("email") if r["status"] == "sent"}
    assert premium, "the file should have premium customers"
    lose_ledgers(campaign)
    campaign.configure(SendEmailCampaign={"target_segments": ALL})

    rerun = campaign.run(task="SendEmailCampaign")

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    accepted = campaign.accepted("email")
    assert set(accepted.values()) == {1}, "nobody received a message twice"
    assert len(accepted) == 30, "the customers never sent to were sent to"
    rows = campaign.results("email")
    store = campaign.root / "consent.sqlite"
    for row in rows:
        if row["customer_id"] in premium:
            assert row["status"] == "unknown"
            assert row["error"].startswith(
                f"the ledger was made anew, but the consent store {store} records a message"
            )
        else:
            assert (row["status"], row["error"]) == ("sent", "")
    assert "1" not in {r["attempts"] for r in rows if r["customer_id"] in premium}, (
        "no request for them in this run"
    )
    assert f"consent store {store} records messages of this campaign" in rerun.stderr

    # A complete channel does not run again: without its result file it resumes its ledger.
    (campaign.folder / "email_results.csv").unlink()
    again = campaign.run("--SendEmailCampaign-resend-unknown", task="SendEmailCampaign")

    assert again.returncode == 0, again.stderr[-3000:]
    assert {r["status"] for r in campaign.results("email")} == {"sent"}
    twice = {r for r, n in campaign.accepted("email").items() if n == 2}
    assert len(twice) == len(premium), "--resend-unknown sends exactly those again"


def test_a_ledger_lost_mid_run_then_killed_sends_nobody_twice(campaign):
    crash_mid_send(campaign, rows=90, email_batch=5)
    lose_ledgers(campaign)

    rerun = campaign.run()

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    store = campaign.root / "consent.sqlite"
    for channel in CHANNELS:
        assert set(campaign.accepted(channel).values()) == {1}, "nobody received one twice"
        rows = campaign.results(channel)
        assert len(rows) == 90 and {r["status"] for r in rows} <= {"sent", "unknown"}
        assert all(
            f"consent store {store} records a message" in r["error"]
            for r in rows
            if r["status"] == "unknown"
        )
