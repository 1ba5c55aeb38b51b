"""Rate limits across processes: every process that sends through one provider account draws
from one token bucket, so a backfill and a second campaign together see no 429."""

from __future__ import annotations

import copy
import fcntl
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import luigi.configuration
import pytest
from conftest import CHANNELS, DATE, REPO, RETCODE, TASKS, Campaign, free_port, wait_for

from campaign_pipeline import sample_data
from campaign_pipeline.exceptions import BucketLockedError, PermanentError
from campaign_pipeline.ratelimit import FileStateStore, Throttle, bucket_path
from campaign_pipeline.sandbox import ChannelLimit

DATES = ["2026-11-23", "2026-11-24", DATE]
CONTACT = {"email": "email", "sms": "phone", "push": "device_token"}
ALL = ["premium", "regular", "new"]


def write_customers(path: Path, rows: int, seed: int, tag: str) -> list[dict]:
    """A customer file of its own: the recipients tell which run sent a message."""
    customers = list(sample_data.customers(rows, seed=seed, dirty=False))
    for customer in customers:
        customer["email"] = f"{tag}.{customer['email']}"
    with path.open("w", newline="") as handle:
        sample_data.write(handle, iter(customers))
    return customers


def second_campaign(campaign: Campaign) -> Campaign:
    """Another campaign on this machine, with the same sandbox and credentials, but its own
    name, customer file and output folder."""
    other = Campaign(campaign.root / "other", campaign.credentials, None)
    other.root.mkdir()
    other.sandbox = campaign.sandbox
    other.settings = copy.deepcopy(campaign.settings)
    other.configure(
        campaign={
            "name": "other",
            "input_path": str(other.customers_path),
            "output_dir": str(other.root / "runs"),
        }
    )
    return other


def contended(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The periods in which at least two of *spans* were under way at once."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    periods, active, since = [], 0, 0.0
    for moment, step in edges:
        active += step
        if active == 2 and step == 1:
            since = moment
        elif active == 1 and step == -1:
            periods.append((since, moment))
    return periods


def test_a_backfill_and_a_second_campaign_together_stay_within_each_provider_limit(campaign):
    limit = ChannelLimit(10, 4)
    campaign.start_sandbox(limits={c: limit for c in CHANNELS}, latency_ms=20)
    campaign.configure(
        # every date's channel tasks at once (with 3 workers, which channels overlap depends
        # on the order luigi picks them), so that four processes send on each channel
        core={"workers": 9},
        campaign={"input_path": str(campaign.root / "customers-{date}.csv")},
        schedule={"start_date": DATES[0]},
        **{TASKS[c]: {"target_segments": ALL} for c in CHANNELS},
        **{f"{c}_api": {"rate_per_second": 10, "burst": 4, "concurrency": 4} for c in CHANNELS},
    )
    other = second_campaign(campaign)
    runs = {day: campaign.root / f"customers-{day}.csv" for day in DATES}
    runs["other"] = other.customers_path
    customers = {
        # enough to send for seconds each (12 s in all at the limit), so that the runs overlap
        # for seconds however their start-ups are staggered
        run: write_customers(path, rows=60 if run == "other" else 20, seed=n, tag=f"r{n}")
        for n, (run, path) in enumerate(runs.items())
    }
    logs = campaign.root / "backfill.log", campaign.root / "other.log"

    with logs[0].open("w") as backfill_log, logs[1].open("w") as other_log:  # the children's
        backfill = subprocess.Popen(
            [str(Path(sys.executable).parent / "campaign-run"), "--scheduler-host", "127.0.0.1",
             "--scheduler-port", str(free_port()), "--log-dir", str(campaign.root / "log"),
             "backfill", "--start", DATES[0], "--end", DATES[-1]],
            cwd=REPO, env=campaign.env(), stdout=backfill_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        second = subprocess.Popen(
            other.command(), cwd=REPO, env=other.env(), stdout=subprocess.DEVNULL,
            stderr=other_log,
        )  # fmt: skip
    assert backfill.wait(timeout=90) == 0, logs[0].read_text()[-3000:]
    assert second.wait(timeout=90) == 0, logs[1].read_text()[-3000:]

    for channel in CHANNELS:
        stats = campaign.sandbox.stats()[channel]
        assert stats["rate_limited"] == 0, (channel, stats)
        assert stats["accepted"] == 3 * 20 + 60
        run_of = {c[CONTACT[channel]]: run for run, rows in customers.items() for c in rows}
        arrivals = {run: [] for run in runs}
        for record in campaign.sandbox.accepted():
            if record["channel"] == channel:
                arrivals[run_of[record["recipient"]]].append(record["received_at"])
        # Each run's channel task always has recipients waiting for a token from its first
        # message to its last: while two of them send, the provider must see its limit.
        periods = contended([(min(times), max(times)) for times in arrivals.values()])
        seconds = sum(end - start for start, end in periods)
        assert seconds >= 2, f"{channel}: the runs hardly sent at the same time: {periods}"
        every = [t for times in arrivals.values() for t in times]
        inside = sum(start <= t <= end for t in every for start, end in periods)
        rate = (inside - len(periods)) / seconds
        assert rate >= 0.9 * limit.rate_per_second, (channel, round(rate, 2), periods)


# -- the bucket file, between real processes ------------------------------------------------

TAKER = """
import sys, time
from pathlib import Path
from campaign_pipeline.ratelimit import FileStateStore, Throttle
throttle = Throttle(float(sys.argv[2]), int(sys.argv[3]), FileStateStore(Path(sys.argv[1])))
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(sys.argv[4])):
    throttle.take()
    print(time.monotonic(), flush=True)
"""

HOLDER = """
import signal, sys
from pathlib import Path
from campaign_pipeline.ratelimit import FileStateStore
with FileStateStore(Path(sys.argv[1])).locked():
    print("held", flush=True)
    signal.pause()
"""


def python(script: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.e2e
def test_two_processes_drawing_from_one_bucket_file_share_its_rate(tmp_path):
    rate, burst, each = 20, 4, 15
    takers = [python(TAKER, tmp_path / "sms.bucket", rate, burst, each) for _ in range(2)]
    for taker in takers:
        assert taker.stdout.readline() == "ready\n"
    takers[0].stdin.write("go\n")
    takers[0].stdin.flush()
    head = float(takers[0].stdout.readline())  # the first is taking tokens...
    asked = time.monotonic()
    takers[1].stdin.write("go\n")  # ...when the second asks for its own
    takers[1].stdin.flush()
    first, second = ([float(t) for t in p.stdout.read().split()] for p in takers)
    first.insert(0, head)
    for taker in takers:
        taker.communicate(timeout=30)  # closes its pipes
        assert taker.returncode == 0

    assert len(first) == len(second) == each
    assert asked < first[-1], "the second asked while the first was taking"
    # Which process wins a token is not fair (the second may wait until the first is done);
    # what is shared is the rate: a bucket of its own would have given the second its burst.
    merged = sorted(first + second)
    reserve = burst - 2  # BURST_MARGIN
    for i, start in enumerate(merged):  # a token bucket, whichever process took the tokens
        for j in range(i, len(merged)):
            assert j - i + 1 <= reserve + rate * (merged[j] - start) + 1, (i, j)
    pace = (len(merged) - reserve) / (merged[-1] - merged[0])
    assert pace == pytest.approx(rate, rel=0.1), "together at the rate, not each at it"


@pytest.mark.e2e
def test_a_process_killed_while_holding_the_bucket_does_not_block_the_others(tmp_path):
    path = tmp_path / "push.bucket"
    holder = python(HOLDER, path)
    assert holder.stdout.readline() == "held\n"
    with path.open("rb") as probe:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)

        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=10)

        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel dropped the lock
        fcntl.flock(probe, fcntl.LOCK_UN)
    Throttle(10, 4, FileStateStore(path)).take()


def test_a_state_from_before_a_reboot_does_not_stall_the_bucket(tmp_path):
    path = tmp_path / "email.bucket"
    path.write_bytes(struct.pack("<q", 2**62))  # far ahead of this boot's monotonic clock
    started = time.monotonic()
    Throttle(10, 4, FileStateStore(path)).take()
    assert time.monotonic() - started < 1


# -- which bucket a channel uses ---------------------------------------------------------------


@pytest.fixture
def bucket_dir_setting():
    """Set ``[rate_limits] bucket_dir`` in this process's luigi config, then restore it."""
    config = luigi.configuration.get_config()
    before = config.get("rate_limits", "bucket_dir", "")

    def set_to(value: str) -> None:
        config.set("rate_limits", "bucket_dir", value)

    yield set_to
    set_to(before)


def test_the_bucket_is_named_for_the_provider_account_and_never_shows_a_secret(
    tmp_path, bucket_dir_setting
):
    bucket_dir_setting(str(tmp_path / "buckets"))
    token = "SG.secret-" + "x" * 40

    path = bucket_path("email", "https://api.sendgrid.com", token)

    assert path.parent == tmp_path / "buckets" and path.parent.is_dir()
    assert path == bucket_path("email", "https://api.sendgrid.com/", token)
    assert token not in path.name and "sendgrid" not in path.name
    others = {
        bucket_path("email", "https://api.sendgrid.com", token + "2"),  # another account
        bucket_path("email", "http://127.0.0.1:8766", token),  # another sandbox
        bucket_path("push", "https://api.sendgrid.com", token),
    }
    assert path not in others and len(others) == 3


def test_by_default_buckets_live_in_a_folder_of_this_users_not_in_a_run_folder(
    tmp_path, bucket_dir_setting, monkeypatch
):
    bucket_dir_setting("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    path = bucket_path("sms", "https://api.twilio.com", "AC" + "0" * 32)

    folder = tmp_path / f"campaign_pipeline-rate-limits-{os.getuid()}"
    assert path.parent == folder
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_default_folder_that_is_not_this_users_own_is_refused(
    tmp_path, bucket_dir_setting, monkeypatch
):
    bucket_dir_setting("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    elsewhere = tmp_path / "planted"
    elsewhere.mkdir()
    (tmp_path / f"campaign_pipeline-rate-limits-{os.getuid()}").symlink_to(elsewhere)

    with pytest.raises(PermanentError, match=r"^\[rate_limits\] bucket_dir: the default"):
        bucket_path("sms", "https://api.twilio.com", "AC" + "0" * 32)


# -- a process frozen while it holds the bucket file --------------------------------------------


@pytest.fixture
def runs():
    """`campaign-run` processes a test started; SIGTERM to those still running at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for run in started:
        if run.poll() is None:
            run.terminate()
            run.communicate(timeout=60)


@pytest.fixture
def freeze(runs):  # noqa: ARG001 - the holders are let go first, then the runs ended
    """Start a process that takes a bucket file's lock, then SIGSTOP it (as a paused container
    or a hung filesystem would leave it); SIGCONT and SIGKILL it at the end."""
    holders: list[subprocess.Popen] = []

    def frozen_holder(path: Path) -> subprocess.Popen:
        holder = python(HOLDER, path)
        holders.append(holder)
        assert holder.stdout.readline() == "held\n"
        holder.send_signal(signal.SIGSTOP)
        return holder

    yield frozen_holder
    for holder in holders:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.communicate(timeout=10)


@pytest.mark.e2e
def test_a_taker_gives_up_on_a_bucket_held_by_a_frozen_process_or_when_stopped(tmp_path, freeze):
    path = tmp_path / "sms.bucket"
    freeze(path)
    store = FileStateStore(path, timeout=0.5)

    started = time.monotonic()
    with pytest.raises(BucketLockedError) as locked:
        Throttle(10, 4, store).take()

    assert 0.5 <= time.monotonic() - started < 5
    assert str(locked.value).startswith(f"the rate-limit bucket file {path} stayed locked for ")
    assert "[rate_limits] lock_timeout_seconds" in str(locked.value)
    assert f"fuser -v {path}" in str(locked.value)

    stopped = threading.Event()
    waiting = FileStateStore(path, timeout=600, stopped=stopped)
    threading.Timer(0.2, stopped.set).start()
    started = time.monotonic()
    with pytest.raises(BucketLockedError, match="^stopped while waiting for "):
        Throttle(10, 4, waiting).take()
    assert time.monotonic() - started < 5, "a stop ends the wait, not the timeout"


def campaign_run(campaign: Campaign) -> subprocess.Popen:
    """`campaign-run daily` (what cron runs), its output piped."""
    command = [str(Path(sys.executable).parent / "campaign-run"), "--scheduler-port",
               str(free_port()), "--log-dir", str(campaign.root / "log"), "daily",
               "--date", DATE]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=campaign.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def sms_ledger(campaign: Campaign) -> dict[str, int]:
    with sqlite3.connect(campaign.folder / "sms_ledger.sqlite") as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"))


def freeze_sms_bucket_mid_send(campaign: Campaign, freeze, runs, lock_timeout: float):
    """Start a run whose SMS go out at 4/s; once two are out, freeze a process holding the
    SMS bucket file; return the run once no SMS has gone out for a second (its senders
    wait for the file), and the file."""
    campaign.write_customers(rows=30)
    campaign.start_sandbox()
    campaign.configure(
        rate_limits={"lock_timeout_seconds": lock_timeout},
        **{TASKS[c]: {"target_segments": ALL} for c in CHANNELS},
        sms_api={"rate_per_second": 4, "burst": 3, "concurrency": 2},
    )
    run = campaign_run(campaign)
    runs.append(run)
    wait_for(lambda: len(campaign.accepted("sms")) >= 2, 60, "two SMS to go out")
    [path] = (campaign.root / "rate-limits").glob("sms-*.bucket")
    freeze(path)

    def stalled() -> bool:
        times = [r["received_at"] for r in campaign.sandbox.accepted() if r["channel"] == "sms"]
        return time.time() - max(times) > 1

    wait_for(stalled, 30, "the SMS senders to wait for the bucket file")
    return run, path


def test_a_frozen_process_holding_the_bucket_stops_the_channel_with_one_line(
    campaign, freeze, runs
):
    """Was: every sender of the account waited for ever."""
    run, path = freeze_sms_bucket_mid_send(campaign, freeze, runs, lock_timeout=2)

    output, _ = run.communicate(timeout=60)

    assert run.returncode == RETCODE["task_failed"], output[-3000:]
    sent = len(campaign.accepted("sms"))
    assert (
        f"sms channel stopped: the rate-limit bucket file {path} stayed locked for 2 s "
        "([rate_limits] lock_timeout_seconds): a process holding it is frozen"
    ) in output, output[-3000:]
    assert f"{30 - sent} recipient(s) stay pending for the next run" in output
    assert sms_ledger(campaign) == {"sent": sent, "pending": 30 - sent}
    for channel in ("email", "push"):
        assert len(campaign.accepted(channel)) == 30


def test_sigterm_ends_a_run_whose_senders_wait_for_a_frozen_bucket_holder(campaign, freeze, runs):
    """Was: the senders waited in flock for ever, so the stopped run never ended."""
    run, _ = freeze_sms_bucket_mid_send(campaign, freeze, runs, lock_timeout=600)

    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=30)

    assert run.returncode == RETCODE["task_failed"], output[-3000:]
    assert "=== exit 30 (task_failed), stopped by SIGTERM" in output
    assert "sms channel stopped: terminated by signal 15" in output
    ledger = sms_ledger(campaign)
    assert "in_flight" not in ledger and ledger["sent"] == len(campaign.accepted("sms"))
