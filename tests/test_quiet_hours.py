"""Quiet hours through the luigi CLI against the sandbox: a window that ends a few seconds
after the test starts, in the zone of the customers meant to be inside it (America/Adak);
the others are hours away from it (New York, Tokyo), whatever the time of day."""

from __future__ import annotations

import csv
import datetime
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from conftest import DATE, RETCODE, TASKS

from campaign_pipeline.consent.quiet import demo_window
from campaign_pipeline.sandbox import ChannelLimit

ADAK = ZoneInfo("America/Adak")  # +1 907 numbers map to Adak and Anchorage (an hour apart)
HEADER = "customer_id,first_name,segment,email,phone,device_token,timezone\n"
REPORT = str(Path(sys.executable).parent / "campaign-report")


def token(n: int) -> str:
    return f"devicetoken{n:03d}" + "x" * 40


CUSTOMERS = {
    # id: (phone, timezone)
    "Q1": ("+12125550101", "America/Adak"),  # the column wins over New York's number
    "Q2": ("+19075550102", ""),  # Adak and Anchorage: inside in Adak, so deferred
    "Q3": ("+19075550103", "Asia/Tokyo"),  # the column wins over the Alaskan number
    "Q4": ("+12125550104", ""),  # New York
    "Q5": ("+12125550105", "Mars/Olympus"),  # no zone: skipped where quiet hours apply
    "Q6": ("555", ""),  # no usable phone: push takes default_timezone (Adak)
}


def write_customers(campaign) -> None:
    rows = [
        f"{cid},Cust,premium,{cid.lower()}@example.com,{phone},{token(n)},{zone}\n"
        for n, (cid, (phone, zone)) in enumerate(CUSTOMERS.items(), 1)
    ]
    campaign.customers_path.write_text(HEADER + "".join(rows))


def quiet_until(campaign, seconds: float) -> float:
    """Set quiet hours that end *seconds* from now in Adak; return that moment."""
    window = demo_window("America/Adak", seconds)
    end = datetime.time.fromisoformat(window.split("-")[1])
    now = datetime.datetime.now(ADAK)
    moment = datetime.datetime.combine(now.date(), end, tzinfo=ADAK)
    if moment < now - datetime.timedelta(minutes=2):  # the window wraps midnight
        moment += datetime.timedelta(days=1)
    campaign.configure(
        consent={
            "quiet_hours": window,
            "quiet_hours_channels": ["sms", "push"],
            "default_timezone": "America/Adak",
        },
        SendSmsCampaign={"target_segments": ["premium"]},
        campaign={"progress_log_seconds": 0.5},
    )
    return moment.timestamp()


def by_id(campaign, channel: str) -> dict[str, dict]:
    with (campaign.folder / f"{channel}_results.csv").open(newline="") as handle:
        return {row["customer_id"]: row for row in csv.DictReader(handle)}


def received(campaign, channel: str) -> dict[str, float]:
    """When the sandbox took each customer's message (by the recipient in the results)."""
    customer = {r["recipient"]: cid for cid, r in by_id(campaign, channel).items()}
    return {
        customer[r["recipient"]]: r["received_at"]
        for r in campaign.sandbox.accepted()
        if r["channel"] == channel
    }


def test_inside_quiet_hours_waits_for_the_window_the_others_go_at_once(campaign):
    write_customers(campaign)
    campaign.start_sandbox()
    opens = quiet_until(campaign, 10)  # luigi takes 2-3 s to start sending, more under load

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    sms, push, email = by_id(campaign, "sms"), by_id(campaign, "push"), by_id(campaign, "email")
    assert {cid: r["status"] for cid, r in sms.items()} == {
        "Q1": "sent", "Q2": "sent", "Q3": "sent", "Q4": "sent", "Q5": "skipped", "Q6": "skipped",
    }  # fmt: skip
    assert sms["Q5"]["error"].startswith("invalid: timezone 'Mars/Olympus' is not an IANA")
    assert email["Q5"]["status"] == "sent"  # email does not observe quiet hours
    assert [cid for cid, r in sms.items() if r["deferred_until"]] == ["Q1", "Q2"]
    assert [cid for cid, r in push.items() if r["deferred_until"]] == ["Q1", "Q2", "Q6"]
    for channel, inside in (("sms", {"Q1", "Q2"}), ("push", {"Q1", "Q2", "Q6"})):
        times = received(campaign, channel)
        assert all(times[cid] >= opens for cid in inside), (channel, times, opens)
        assert all(times[cid] < opens for cid in set(times) - inside), (channel, times, opens)
    # while it waited, the progress line said how many and when
    waiting = [line for line in done.stderr.splitlines() if "deferred by quiet hours ·" in line]
    shown = datetime.datetime.fromtimestamp(opens, ADAK).strftime("%Y-%m-%d %H:%M:%S")
    for channel, sent, deferred in (("sms", "2 / 4", 2), ("push", "2 / 5", 3)):
        assert any(
            f"{channel} progress: {sent} sent · 0 failed" in line
            and f"{deferred} deferred by quiet hours · next window opens {shown} America/Adak"
            in line
            for line in waiting
        ), waiting
    report = subprocess.run(
        [REPORT, "--date", DATE], env=campaign.env(), capture_output=True, text=True
    )
    assert "sms deferred by quiet hours: 2, sent once their window opened (2 sent; " in (
        report.stdout
    ), report.stdout


def test_a_timeout_while_deferred_leaves_them_pending_and_the_next_run_sends_them(campaign):
    write_customers(campaign)
    campaign.start_sandbox()
    opens = quiet_until(campaign, 10)
    campaign.configure(campaign={"timeout_seconds": 4})

    stopped = campaign.run()

    assert stopped.returncode == RETCODE["task_failed"], stopped.stderr[-3000:]
    assert time.time() < opens  # stopped, not waited
    assert "2 recipient(s) stay pending for the next run, 2 of them deferred by quiet hours" in (
        stopped.stderr
    )
    assert "the next window opens " in stopped.stderr and "America/Adak" in stopped.stderr
    assert set(campaign.accepted("sms")) == {"+19075550103", "+12125550104"}  # Q3, Q4

    campaign.configure(campaign={"timeout_seconds": 0})
    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    numbers = ("+12125550101", "+19075550102", "+19075550103", "+12125550104")
    assert campaign.accepted("sms") == dict.fromkeys(numbers, 1)
    assert all(t >= opens for cid, t in received(campaign, "sms").items() if cid in {"Q1", "Q2"})


def test_a_dry_run_counts_who_would_be_deferred_and_when_their_window_opens(campaign):
    write_customers(campaign)
    campaign.start_sandbox()
    quiet_until(campaign, 600)

    done = campaign.run("--dry-run")

    assert done.returncode == 0, done.stderr[-3000:]
    preview = json.loads((campaign.folder / "dry-run" / "sms_preview.json").read_text())
    counts = preview["counts"]["quiet_hours"]
    assert counts["deferred"] == 2
    [window] = counts["windows"]
    assert window["recipients"] == 2 and window["opens"].endswith("America/Adak")
    assert preview["counts"]["by_status"] == {"would_send": 4, "skipped": 2}
    assert (
        "quiet_hours"
        not in json.loads((campaign.folder / "dry-run" / "email_preview.json").read_text())[
            "counts"
        ]
    )
    report = subprocess.run(
        [REPORT, "--dry-run", "--date", DATE], env=campaign.env(), capture_output=True, text=True
    )
    assert "sms deferred by quiet hours if sent now: 2 (2 until " in report.stdout, report.stdout
    assert "push deferred by quiet hours if sent now: 3 (3 until " in report.stdout


def test_quiet_hours_settings_are_checked_before_anything_is_sent(campaign):
    write_customers(campaign)
    campaign.start_sandbox()
    campaign.configure(
        consent={
            "quiet_hours": "9pm-8am",
            "quiet_hours_channels": ["sms", "psh"],
            "default_timezone": "Europe/Berln",
        }
    )

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert "setting: [consent] quiet_hours = 9pm-8am: '9pm-8am' is not a window: write " in (
        done.stderr
    )
    assert (
        "setting: [consent] quiet_hours_channels: 'psh' is not a channel; did you mean push?"
        in (done.stderr)
    )
    assert (
        "setting: [consent] default_timezone = Europe/Berln: 'Europe/Berln' is not an IANA time "
        "zone name; did you mean Europe/Berlin?" in done.stderr
    )
    assert campaign.requests("sms") == 0


def test_a_customer_file_without_a_timezone_column_is_timed_by_the_phone_numbers(campaign):
    """Most customer files have no timezone column: every recipient is still a row of the
    ledger, timed by their number (was: none of them, and a channel done with 0 recipients)."""
    campaign.customers_path.write_text(
        "customer_id,first_name,segment,email,phone,device_token\n"
        + "".join(
            f"N{n},Cust,premium,n{n}@example.com,+1212555{n:04d},{token(n)}\n" for n in (1, 2)
        )
    )
    campaign.start_sandbox()
    campaign.configure(consent={"quiet_hours": "", "quiet_hours_channels": ["sms"]})
    quiet_until(campaign, 3)  # Adak's window: New York's numbers are outside it

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    assert {cid: row["status"] for cid, row in by_id(campaign, "sms").items()} == {
        "N1": "sent",
        "N2": "sent",
    }
    assert campaign.accepted("sms") == {"+12125550001": 1, "+12125550002": 1}


def test_quiet_hours_that_begin_while_a_429_is_waited_out_defer_that_recipient(campaign):
    """The provider answers 429 with Retry-After 10 s; quiet hours begin during that wait.
    The request is not sent when the wait ends (was: sent inside the window) but deferred,
    and sent once the window has ended, by the same run."""
    numbers = ("+12125550301", "+12125550302")
    campaign.customers_path.write_text(
        HEADER
        + "".join(
            f"W{n},Cust,premium,w{n}@example.com,{phone},{token(n)},UTC\n"
            for n, phone in enumerate(numbers, 1)
        )
    )
    # one request per 10 s: the second, sent right after the first, is answered 429
    # with Retry-After: 10
    campaign.start_sandbox(limits={"sms": ChannelLimit(0.1, 1)})
    begins = int(time.time()) + 10  # the first request leaves before (luigi takes 2-3 s)
    ends = begins + 11  # and its 429 is waited out inside
    window = "-".join(
        datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S")
        for t in (begins, ends)
    )
    campaign.configure(
        consent={"quiet_hours": window, "quiet_hours_channels": ["sms"]},
        SendSmsCampaign={"target_segments": ["premium"]},
        sms_api={"concurrency": 1},
    )

    done = campaign.run(task=TASKS["sms"])

    assert done.returncode == 0, done.stderr[-3000:]
    times = received(campaign, "sms")
    assert times["W1"] < begins, "the first request left before the window: no proof"
    assert campaign.sandbox.stats()["sms"]["rate_limited"] == 1
    assert times["W2"] >= ends, (times, begins, ends)
    assert campaign.accepted("sms") == dict.fromkeys(numbers, 1)
    results = by_id(campaign, "sms")
    assert [cid for cid, row in results.items() if row["deferred_until"]] == ["W2"]
    assert {row["status"] for row in results.values()} == {"sent"}


CAMPAIGN_RUN = str(Path(sys.executable).parent / "campaign-run")


def campaign_run_daily(campaign) -> subprocess.CompletedProcess:
    """`campaign-run daily` as cron runs it (no terminal), with this test's config."""
    command = [CAMPAIGN_RUN, "--scheduler-port", "1", "--log-dir", str(campaign.root / "log"),
               "daily", "--date", DATE]  # fmt: skip
    return subprocess.run(command, env=campaign.env(), capture_output=True, text=True, timeout=120)


def test_a_window_later_than_max_wait_ends_the_run_deferred_and_a_later_run_sends_them(campaign):
    write_customers(campaign)
    campaign.start_sandbox()
    opens = quiet_until(campaign, 2 * 3600)  # hours away, as for a customer in Guam
    campaign.configure(consent={"max_wait_minutes": 0.05})  # 3 s

    deferred = campaign_run_daily(campaign)

    assert deferred.returncode == 15, deferred.stdout[-3000:]
    shown = datetime.datetime.fromtimestamp(opens, ADAK).strftime("%Y-%m-%d %H:%M:%S")
    (line,) = deferred.stdout.splitlines()  # one line, for cron's mail
    assert line.startswith(f"campaign-run: push: 3 deferred until {shown} America/Adak (")
    assert f"; sms: 2 deferred until {shown} America/Adak (" in line
    assert line.endswith(
        "; exit 15; log: " + str(campaign.root / "log" / f"campaign-{datetime.date.today()}.log")
    )
    assert time.time() < opens  # ended, not waited
    assert set(campaign.accepted("sms")) == {"+19075550103", "+12125550104"}  # Q3, Q4
    with sqlite3.connect(campaign.folder / "sms_ledger.sqlite") as db:
        pending = dict(db.execute("SELECT customer_id, deferred_until FROM deliveries "
                                  "WHERE status = 'pending'").fetchall())  # fmt: skip
    until = datetime.datetime.fromtimestamp(opens, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert sorted(pending) == ["Q1", "Q2"] and all(v.startswith(until) for v in pending.values())

    again = campaign_run_daily(campaign)  # still inside the window: deferred again, not sent
    assert again.returncode == 15, again.stdout[-3000:]
    assert set(campaign.accepted("sms")) == {"+19075550103", "+12125550104"}

    campaign.configure(consent={"quiet_hours": demo_window("America/Adak", -30)})  # now open
    done = campaign_run_daily(campaign)

    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout == ""
    numbers = ("+12125550101", "+19075550102", "+19075550103", "+12125550104")
    assert campaign.accepted("sms") == dict.fromkeys(numbers, 1)  # each once, over three runs
    assert {cid for cid, r in by_id(campaign, "push").items() if r["status"] == "sent"} >= {
        "Q1",
        "Q2",
        "Q6",
    }
    assert by_id(campaign, "sms")["Q1"]["deferred_until"].startswith(until)


def test_the_cron_schedule_runs_again_after_a_deferral_the_same_day():
    """A run deferred past max_wait_minutes exits 15; the shipped schedule must come back."""
    text = (Path(__file__).parents[1] / "config" / "crontab.example").read_text()
    (entry,) = [line for line in text.splitlines() if line[:1].isdigit()]
    minute, hour, *_ = entry.split()
    assert minute.isdigit() and "-" in hour, entry  # every hour of a range, not once a day
    assert "max_wait_minutes" in text and "15" in text
