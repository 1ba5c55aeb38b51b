"""Settings, inputs and failures that no retry can heal: one clear line, at once, nothing sent.

The runs here use the shipped retry policy (retry_count 2, retry_delay 300 s, keep_alive,
max_keep_alive_idle_duration PT6M), so a run that waited for a retry or idled in keep_alive
would blow the subprocess timeout instead of ending within seconds.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import luigi
import pytest
from conftest import CHANNELS, REPO, RETCODE, free_port
from test_notifications import body, inbox  # noqa: F401 - the SMTP fixture
from test_operations import luigid, task_list  # noqa: F401 - luigid: config/luigid.cfg

from campaign_pipeline import settings_check
from campaign_pipeline.config import Bounded, email_api, input_file
from campaign_pipeline.exceptions import SettingsError
from campaign_pipeline.runner import scheduler_answers
from campaign_pipeline.sender import BURST_MARGIN

FAST = 60  # seconds: far below the 300 s retry_delay and the 6 min keep-alive idle time
USAGE_ERROR = 2
SCHEDULING_ERROR = 35


def shipped_retry_policy(campaign) -> None:
    """luigi.cfg's retry and keep-alive settings instead of conftest's fast ones."""
    campaign.configure(
        scheduler={"retry_count": 2, "retry_delay": 300},
        worker={"max_keep_alive_idle_duration": "PT6M"},
    )


def timed_run(campaign, *args, **kwargs):
    started = time.monotonic()
    done = campaign.run(*args, timeout=FAST, **kwargs)
    return done, time.monotonic() - started


def assert_nothing_sent(campaign) -> None:
    assert all(campaign.requests(c) == 0 for c in CHANNELS)


def error_lines(stderr: str) -> list[str]:
    """The problems the preflight logged, one per line."""
    return [line.split("setting: ", 1)[1] for line in stderr.splitlines() if "setting: " in line]


# Failures that cannot heal end the run at once, without a retry.


def without(campaign, variable: str) -> dict:
    """The run's environment without *variable*."""
    env = campaign.env()
    del env[variable]
    return env


def drop_push_token(campaign) -> dict:
    return {"env": without(campaign, "PUSH_API_TOKEN")}


def missing_template(_campaign) -> dict:
    return {"args": ("--SendSmsCampaign-template", "no_such_template")}


def misspelt_segment(campaign) -> dict:
    campaign.configure(SendPushNotification={"target_segments": ["premum"]})
    return {}


def no_project_id(campaign) -> dict:
    campaign.configure(push_api={"project_id": ""})
    return {}


def missing_column(campaign) -> dict:
    campaign.customers_path.write_text("customer_id,segment,email\nC1,new,a@example.com\n")
    return {}


# cause: (how to cause it, the message, the channels that must send nothing)
PERMANENT = {
    "missing credential": (
        drop_push_token,
        "environment variable PUSH_API_TOKEN is not set",
        ["push"],
    ),
    "missing template": (missing_template, "sms template 'no_such_template': no folder", ["sms"]),
    "unknown segment": (misspelt_segment, "'premum' is not one of [campaign] segments", CHANNELS),
    "missing column": (missing_column, "missing required column(s) phone, device_token", CHANNELS),
    "provider setting": (no_project_id, "[push_api] project_id is not set", ["push"]),
}


@pytest.mark.parametrize("cause", PERMANENT)
def test_a_permanent_failure_ends_the_run_at_once_and_is_not_retried(campaign, cause):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    make_it_fail, message, blocked = PERMANENT[cause]
    options = make_it_fail(campaign)

    done, seconds = timed_run(campaign, *options.get("args", ()), env=options.get("env"))

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert message in done.stderr
    assert "failed for good (not retried; fix the cause and rerun)" in done.stderr
    assert seconds < FAST
    assert all(campaign.requests(channel) == 0 for channel in blocked)


def test_a_permanent_failure_in_the_workers_own_process_also_ends_the_run(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)

    # one worker and no timeout: luigi runs each task in its own process, not a forked one
    done, seconds = timed_run(campaign, "--workers", "1", "--SendSmsCampaign-template", "nope")

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert "SendSmsCampaign failed for good" in done.stderr
    assert seconds < FAST
    assert campaign.requests("sms") == 0


def test_a_permanent_failure_mail_says_fix_and_rerun_not_will_retry(campaign, inbox):  # noqa: F811
    campaign.write_customers(rows=5)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(
        email={"method": "smtp", "sender": "pipeline@example.com"},
        smtp={"host": "127.0.0.1", "port": inbox.port, "no_tls": "true"},
        notifications={"owner": "ops@example.com", "email_on_retry": "true"},
    )

    done, _ = timed_run(campaign, "--SendEmailCampaign-template", "no_such_template")

    assert done.returncode == RETCODE["task_failed"]
    assert [m["Subject"] for m in inbox.messages] == [
        f"[campaign_pipeline] campaign test {campaign.folder.name}: SendEmailCampaign FAILED"
    ]
    text = body(inbox.messages[0])
    assert "Next:     fix and rerun" in text and "a retry cannot help" in text
    assert "will retry" not in text


# With a central scheduler: nothing disabled, and the fixed rerun runs.


def start_luigid(folder: Path, config: Path) -> tuple[int, subprocess.Popen]:
    port = free_port()
    folder.mkdir()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "luigid"), "--address", "127.0.0.1",
         "--port", str(port), "--logdir", str(folder), "--state-path",
         str(folder / "state.pickle")],
        cwd=REPO, env={**os.environ, "LUIGI_CONFIG_PATH": str(config)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert scheduler_answers("127.0.0.1", port, wait=20), "luigid did not start"
    return port, process


@pytest.fixture
def quick_luigid(tmp_path):
    """A real luigid whose retries come after 1 s (retry_count 2, as shipped)."""
    config = tmp_path / "luigid-quick.cfg"
    config.write_text("[scheduler]\nretry_count = 2\nretry_delay = 1\nprune_on_get_work = true\n")
    port, process = start_luigid(tmp_path / "luigid", config)
    yield port
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)


def central_run(campaign, port: int, *args: str, env: dict | None = None):
    scheduler = ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)]
    command = [a for a in campaign.command(*args, *scheduler) if a != "--local-scheduler"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env or campaign.env(), capture_output=True,
                          text=True, timeout=FAST)  # fmt: skip
    return done, time.monotonic() - started


def test_permanent_failures_leave_nothing_disabled_in_luigid_and_the_fixed_rerun_runs(
    campaign,
    luigid,  # noqa: F811 - the fixture
):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    no_credential = without(campaign, "SMS_API_AUTH_TOKEN")

    # twice in a row, within luigid's disable_window: retry_count 2 would disable the task
    for _ in range(2):
        done, seconds = central_run(campaign, luigid, env=no_credential)
        assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
        assert seconds < FAST
        assert task_list(luigid, "DISABLED") == {}
        assert "SendSmsCampaign" in str(task_list(luigid, "FAILED"))
    fixed, _ = central_run(campaign, luigid)  # the same tasks, the credential back

    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert {r["status"] for r in campaign.results("sms")} == {"sent"}


def test_after_a_permanent_failure_transient_failures_still_get_two_attempts(
    campaign, quick_luigid
):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    campaign.configure(scheduler={"retry_count": 2, "retry_delay": 1})
    failed, _ = central_run(campaign, quick_luigid, env=without(campaign, "SMS_API_AUTH_TOKEN"))
    assert failed.returncode == RETCODE["task_failed"], failed.stderr[-3000:]
    assert "SendSmsCampaign" in str(task_list(quick_luigid, "FAILED"))
    campaign.configure(sms_api={"base_url": f"http://127.0.0.1:{free_port()}"})  # refused

    done, _ = central_run(campaign, quick_luigid)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert done.stderr.count("failed    SendSmsCampaign(") == 2, "one luigi retry, as shipped"
    assert "SendSmsCampaign" in str(task_list(quick_luigid, "DISABLED"))


# A missing customer file: exit 20 at once, or wait for it when told to.


def test_a_missing_customer_file_ends_the_run_at_once_naming_it(campaign):
    campaign.start_sandbox()
    shipped_retry_policy(campaign)

    done, seconds = timed_run(campaign)

    assert done.returncode == RETCODE["missing_data"], done.stderr[-3000:]
    assert seconds < FAST
    assert f"customer file {campaign.customers_path} does not exist" in done.stderr
    assert_nothing_sent(campaign)


def test_a_late_customer_file_is_waited_for_when_configured(campaign):
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(campaign={"wait_for_input_minutes": 0.5})
    running = subprocess.Popen(campaign.command(), cwd=REPO, env=campaign.env(),
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen = []
    for line in running.stderr:
        seen.append(line)
        if "waiting up to 0.5 minute(s) for the customer file" in line:
            campaign.write_customers(rows=10)
            break

    _, rest = running.communicate(timeout=FAST)

    assert running.returncode == 0, "".join(seen) + rest[-3000:]
    assert f"customer file {campaign.customers_path} arrived" in rest
    assert {r["status"] for r in campaign.results("email")} == {"sent"}


def test_a_customer_file_that_never_arrives_ends_the_wait_with_missing_data(campaign):
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(campaign={"wait_for_input_minutes": 0.02})

    done, seconds = timed_run(campaign)

    assert done.returncode == RETCODE["missing_data"], done.stderr[-3000:]
    assert "does not exist after waiting 0.02 minute(s)" in done.stderr
    assert 1.2 <= seconds < FAST
    assert_nothing_sent(campaign)


def test_a_missing_file_with_luigid_leaves_the_next_run_free(campaign, luigid):  # noqa: F811
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    missing, seconds = central_run(campaign, luigid)
    assert missing.returncode == RETCODE["missing_data"], missing.stderr[-3000:]
    assert seconds < FAST
    campaign.write_customers(rows=10)

    done, _ = central_run(campaign, luigid)

    assert done.returncode == 0, done.stderr[-3000:]
    assert task_list(luigid, "DISABLED") == {}
    assert {r["status"] for r in campaign.results("push")} == {"sent"}


# Unreadable inputs and output folders: one line naming the path and the problem.


def without_root_privileges(command: list[str]) -> list[str]:
    """*command* run so that file permissions apply: root would read and write anything."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("running as root without util-linux setpriv: permissions cannot be tested")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]


def run_unprivileged(campaign) -> subprocess.CompletedProcess:
    command = without_root_privileges(campaign.command())
    return subprocess.run(command, cwd=REPO, env=campaign.env(), capture_output=True, text=True,
                          timeout=FAST)  # fmt: skip


def test_a_customer_file_that_is_a_folder_is_named(campaign):
    campaign.customers_path.mkdir()
    campaign.start_sandbox()
    shipped_retry_policy(campaign)

    done, _ = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert f"customer file {campaign.customers_path}: is a folder, not a file" in done.stderr
    assert_nothing_sent(campaign)


def test_a_customer_file_without_read_permission_is_named(campaign):
    campaign.write_customers(rows=10)
    campaign.customers_path.chmod(0)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)

    done = run_unprivileged(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert f"customer file {campaign.customers_path}: no permission to read it" in done.stderr
    assert_nothing_sent(campaign)


def test_an_output_folder_that_is_not_writable_is_named(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    runs = campaign.root / "runs"
    runs.mkdir()
    runs.chmod(0o555)

    done = run_unprivileged(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert f"cannot write the run folder {campaign.folder}: no permission to write in {runs}" in (
        done.stderr
    )
    assert "FileNotFoundError" not in done.stderr
    assert_nothing_sent(campaign)


def test_an_output_folder_below_a_file_is_named(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    blocker = campaign.root / "runs"
    blocker.write_text("not a folder")

    done, _ = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert f"cannot write the run folder {campaign.folder}: {blocker} is a file, not a folder" in (
        done.stderr
    )
    assert_nothing_sent(campaign)


def test_paths_starting_with_a_tilde_are_in_the_home_folder_as_a_shell_has_it(campaign):
    home, elsewhere = campaign.root / "home", campaign.root / "elsewhere"
    elsewhere.mkdir()
    campaign.customers_path = home / "customers.csv"
    home.mkdir()
    campaign.write_customers(rows=6)
    shutil.copytree(REPO / "config" / "templates", home / "templates")
    (home / "suppressions.csv").write_text("channel,contact,customer_id\n")
    campaign.start_sandbox()
    campaign.configure(
        campaign={"input_path": "~/customers.csv", "output_dir": "~/runs",
                  "templates_dir": "~/templates"},
        consent={"suppressions": "~/suppressions.csv"},
        rate_limits={"bucket_dir": "~/buckets"},
    )  # fmt: skip

    done = campaign.run("--consent-store", "~/consent.sqlite", cwd=elsewhere,
                        env=campaign.env(HOME=str(home)))  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert list(elsewhere.iterdir()) == [], "nothing in a folder named ~ of the current one"
    folder = home / "runs" / campaign.name / campaign.folder.name
    for channel in CHANNELS:
        with (folder / f"{channel}_results.csv").open() as handle:
            assert "sent" in handle.read()
    assert (home / "consent.sqlite").is_file() and (home / "buckets").is_dir()


def test_an_unsubscribe_mailto_that_is_not_an_address_is_named(campaign):
    campaign.write_customers(rows=5)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(email_api={"unsubscribe_mailto": "unsubscribe"})

    done, _ = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert (
        "[email_api] unsubscribe_mailto = 'unsubscribe': not an email address (An email "
        "address must have an @-sign.)" in done.stderr
    )
    # the campaign's way out: checked with every setting, so no channel sends meanwhile
    assert {channel: campaign.requests(channel) for channel in campaign.channels} == {
        channel: 0 for channel in campaign.channels
    }


def another_programs_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('Ann')")
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for leftover in path.parent.glob(f"{path.name}-*"):
        leftover.unlink()


def not_a_database(path: Path) -> None:
    path.write_text("id,name\n1,Ann\n" * 100)


@pytest.mark.parametrize(
    "make, problem",
    [
        (another_programs_database, "an SQLite database of another program (its tables "
         "include users)"),
        (not_a_database, "not an SQLite database"),
    ],
)  # fmt: skip
def test_a_consent_store_of_another_program_is_refused_without_changing_a_byte(
    campaign, make, problem
):
    campaign.write_customers(rows=5)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    store = campaign.root / "stores" / "theirs.db"
    store.parent.mkdir()
    make(store)
    os.utime(store, ns=(1_000_000_000, 1_000_000_000))
    before = store.read_bytes()
    campaign.configure(consent={"store": str(store)})

    done, _ = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert f"consent store {store} ([consent] store): {problem}; left as it is" in done.stderr
    assert_nothing_sent(campaign)
    assert store.read_bytes() == before
    assert store.stat().st_mtime_ns == 1_000_000_000
    assert list(store.parent.iterdir()) == [store], "no journal, WAL or shared-memory file"


# Settings that parse but cannot work, unknown keys and sections, misspelt segments.


def test_settings_that_cannot_work_are_named_before_anything_is_sent(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(
        campaign={"timeout_seconds": -1, "default_region": "us"},
        email_api={"rate_per_second": 0, "batch_size": 1001, "retry_delay_seconds": -1},
        sms_api={"burst": 2, "timeout_seconds": 0},
        push_api={"concurrency": 0, "retry_attempts": 0},  # concurrency 0 used to hang
        consent={"frequency_cap": -1, "frequency_window_days": 0},
    )

    done, seconds = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert seconds < FAST
    assert sorted(error_lines(done.stderr)) == [
        "[campaign] default_region = us: not a region phonenumbers knows; "
        "write a two-letter ISO 3166 code in capitals, did you mean US?",
        "[campaign] timeout_seconds = -1.0: must be 0 to 2,592,000 seconds (30 days; 0: no limit)",
        "[consent] frequency_cap = -1: must be 0 to 1,000,000 messages per contact (0: no cap)",
        "[consent] frequency_window_days = 0: must be 1 to 3,660 days (ten years)",
        "[email_api] batch_size = 1001: must be 1 to 1,000 recipients per request",
        "[email_api] rate_per_second = 0.0: must be above 0 and at most 1,000,000 requests per "
        "second",
        "[email_api] retry_delay_seconds = -1.0: must be 0 to 86,400 seconds",
        "[push_api] concurrency = 0: must be 1 to 256 sending threads",
        "[push_api] retry_attempts = 0: must be 1 to 100 attempts, the first one included",
        "[sms_api] burst = 2: must be above 2 and at most 1,000,000 requests (the client keeps "
        "2 back)",
        "[sms_api] timeout_seconds = 0.0: must be above 0 and at most 3,600 seconds",
    ]
    assert_nothing_sent(campaign)


def test_numbers_beyond_any_sensible_range_are_named_before_anything_is_sent(campaign):
    """1e308 requests per second used to overflow in the token bucket after other channels
    had started sending; a window of millions of days, in the frequency cap's date sums."""
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(
        campaign={"wait_for_input_minutes": 1e12, "progress_log_seconds": "inf"},
        email_api={"rate_per_second": 1e308, "asm_group_id": 2**40},
        sms_api={"retry_delay_seconds": "nan", "concurrency": 100_000},
        push_api={"burst": 10**9, "timeout_seconds": 1e9},
        consent={"frequency_cap": 5, "frequency_window_days": 10_000_000},
        report={"samples": 10**9},
    )

    done, seconds = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert seconds < FAST
    assert sorted(error_lines(done.stderr)) == [
        "[campaign] progress_log_seconds = inf: must be 0 to 86,400 seconds (a day; 0: no "
        "progress lines)",
        "[campaign] wait_for_input_minutes = 1000000000000.0: must be 0 to 10,080 minutes (a "
        "week; 0: no wait)",
        "[consent] frequency_window_days = 10000000: must be 1 to 3,660 days (ten years)",
        "[email_api] asm_group_id = 1099511627776: must be 0 to 2,147,483,647 (0: none, else "
        "a SendGrid unsubscribe group id)",
        "[email_api] rate_per_second = 1e+308: must be above 0 and at most 1,000,000 requests "
        "per second",
        "[push_api] burst = 1000000000: must be above 2 and at most 1,000,000 requests (the "
        "client keeps 2 back)",
        "[push_api] timeout_seconds = 1000000000.0: must be above 0 and at most 3,600 seconds",
        "[report] samples = 1000000000: must be 0 to 10,000 recipients per channel",
        "[sms_api] concurrency = 100000: must be 1 to 256 sending threads",
        "[sms_api] retry_delay_seconds = nan: must be 0 to 86,400 seconds",
    ]
    assert_nothing_sent(campaign)


def test_unknown_keys_and_sections_are_named_with_the_closest_known_one(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(
        SendEmailCampaign={"target_segment": ["premium"]},
        sms_api={"rate_per_secnd": 1},
        SendSMSCampaign={"target_segments": ["new"]},
        campaign={"Segments": ["premium"]},
    )

    done, seconds = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert sorted(error_lines(done.stderr)) == [
        "[SendEmailCampaign] target_segment: unknown key, luigi would ignore it; "
        "did you mean target_segments?",
        "[SendSMSCampaign]: unknown section, luigi would ignore it; "
        "did you mean [SendSmsCampaign]?",
        "[campaign] Segments: unknown key, luigi would ignore it; did you mean segments?",
        "[sms_api] rate_per_secnd: unknown key, luigi would ignore it; "
        "did you mean rate_per_second?",
    ]  # and nothing about luigi's own [core], [worker], [scheduler], [retcode] sections
    assert_nothing_sent(campaign)


def test_a_value_that_cannot_be_read_is_named(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(push_api={"burst": "ten"})

    done, _ = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert error_lines(done.stderr) == [
        "[push_api] burst: cannot read the value (invalid literal for int() with base 10: "
        "'ten'); write a whole number"
    ]
    assert_nothing_sent(campaign)


def test_a_flag_value_that_cannot_be_read_is_named_by_its_flag(campaign):
    """A [consent] key given on the command line: luigi parses it when the section is first
    read and names no key; the line names the flag and the value."""
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)

    done, _ = timed_run(campaign, "--consent-frequency-cap", "abc")

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert set(error_lines(done.stderr)) == {
        "--consent-frequency-cap 'abc': cannot read the value (invalid literal for int() with "
        "base 10: 'abc'); write a whole number"
    }
    assert_nothing_sent(campaign)


def test_a_task_setting_that_cannot_be_read_stops_the_scheduling_naming_it(campaign):
    """The task that needs the broken one stays pending: the run ends all the same, rather
    than idle in keep_alive for 6 minutes."""
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(SendSmsCampaign={"target_segments": "premium, new"})

    done, _ = timed_run(campaign)

    assert done.returncode == SCHEDULING_ERROR, done.stderr[-3000:]
    assert error_lines(done.stderr) == [
        "[SendSmsCampaign] target_segments: cannot read the value (Expecting value: line 1 "
        'column 1 (char 0)); write a JSON list such as ["premium", "new"]'
    ]
    assert_nothing_sent(campaign)


def test_a_misspelt_target_segment_is_fatal_naming_the_closest_segment(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    campaign.configure(SendSmsCampaign={"target_segments": ["Premium", "regullar"]})

    done, _ = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert error_lines(done.stderr) == [
        "[SendSmsCampaign] target_segments: 'regullar' is not one of [campaign] segments "
        "(premium, regular, new); did you mean regular?"
    ]  # 'Premium' is fine: segments are matched case-insensitively
    assert_nothing_sent(campaign)


@pytest.mark.parametrize(
    "input_path, problem",
    [
        ("customers-{day}.csv", "unknown placeholder {day}"),
        ("customers-{date:d}.csv", "Unknown format code 'd' for object of type 'str'"),
    ],
)
def test_an_input_path_with_a_bad_placeholder_is_named(campaign, input_path, problem):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    shipped_retry_policy(campaign)
    campaign.configure(campaign={"input_path": str(campaign.root / input_path)})

    done, _ = timed_run(campaign)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert f"[campaign] input_path = '{campaign.root / input_path}': {problem}" in done.stderr
    assert "the only placeholder is {date}" in done.stderr
    assert_nothing_sent(campaign)


@pytest.mark.parametrize("date", ["2026-13-45", "tomorrow"])
def test_an_invalid_date_is_one_line_and_a_non_zero_exit(campaign, date):
    campaign.start_sandbox()

    done, _ = timed_run(campaign, date=date)

    assert done.returncode == USAGE_ERROR
    assert done.stderr.splitlines()[-1] == (
        f"luigi: error: argument --date: {date!r} is not a date: write YYYY-MM-DD, e.g. 2026-11-25"
    )
    assert "Traceback" not in done.stderr


# The checker itself.


def parsed(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # as luigi's: keys and sections are case-sensitive
    parser.read_string(text)
    return parser


@pytest.mark.parametrize("name", ["luigi.cfg", "config/demo.cfg", "config/production.cfg.example"])
def test_the_shipped_configurations_have_no_unknown_keys(name):
    assert settings_check.unknown_keys(parsed((REPO / name).read_text())) == []


def test_sections_and_keys_come_from_the_classes():
    known = settings_check.sections(settings_check.package_classes())

    assert {"name", "input_path", "wait_for_input_minutes"} <= set(known["campaign"])
    assert {"target_segments", "template", "resend_unknown", "date"} <= set(
        known["SendSmsCampaign"]
    )
    assert {"batch_size", "rate_per_second", "retry_unanswered"} <= set(known["email_api"])
    assert "batch_size" not in known["sms_api"]
    assert not {"CampaignTask", "ChannelTask", "provider_section", "core", "worker"} & set(known)


def test_luigis_help_says_what_every_key_means():
    undescribed = [
        f"{cls.get_task_family()}.{name}"
        for cls in settings_check.package_classes()
        for name, param in cls.get_params()
        if not param.description
    ]
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "luigi"), "--module", "campaign_pipeline", "--help-all"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )

    assert undescribed == []
    words = " ".join(shown.stdout.split())  # as argparse wrapped them
    assert "--sms-api-burst SMS_API_BURST Requests the provider lets through at once" in words
    assert "--pipeline-templates-dir PIPELINE_TEMPLATES_DIR Folder of the message" in words


def test_luigis_own_and_unrelated_sections_are_left_alone():
    config = parsed(
        "[core]\nworkers = 3\n[worker]\nkeep_alive = true\n[scheduler]\nretry_count = 2\n"
        "[schedular]\nx = 1\n[email]\nmethod = smtp\n[smtp]\nhost = h\n[hdfs]\nclient = x\n"
        "[ChannelTask]\ntemplate = x\n[sms-api]\nburst = 3\n"
    )

    assert settings_check.unknown_keys(config) == [
        "[ChannelTask]: no task reads this section (it names a base class); set its keys in "
        "the sections of the tasks, e.g. [SendEmailCampaign]",
        "[sms-api]: unknown section, luigi would ignore it; did you mean [sms_api]?",
    ]  # [schedular] is closer to luigi's [scheduler] than to [schedule]


def test_every_numeric_setting_declares_its_range_beside_it():
    numeric = [
        (cls.get_task_family(), name, param)
        for cls in settings_check.package_classes()
        for name, param in cls.get_params()
        if isinstance(param, (luigi.IntParameter, luigi.FloatParameter))
    ]

    assert len(numeric) > 20
    assert [(section, name) for section, name, p in numeric if not isinstance(p, Bounded)] == []
    assert all(p.allowed.allows(p._default) for _, _, p in numeric), "the defaults are allowed"


@pytest.mark.parametrize(
    "key, value, ok",
    [
        ("burst", BURST_MARGIN, False),
        ("burst", BURST_MARGIN + 1, True),
        ("rate_per_second", float("nan"), False),
        ("rate_per_second", float("inf"), False),
        ("batch_size", 1000, True),
        ("batch_size", 0, False),
        ("retry_delay_seconds", 0, True),
        ("rate_per_second", 1e308, False),
        ("retry_delay_seconds", 86_400 * 365, False),
    ],
)
def test_provider_ranges(key, value, ok):
    assert dict(email_api.get_params())[key].allowed.allows(value) is ok


def test_input_file_fills_in_the_date_or_names_the_problem():
    date = datetime.date(2026, 11, 25)

    assert input_file("/in/customers-{date}.csv", date) == "/in/customers-2026-11-25.csv"
    assert input_file("/in/{{x}}-{date}.csv", date) == "/in/{x}-2026-11-25.csv"
    with pytest.raises(SettingsError, match=r"unknown placeholder \{\}"):
        input_file("/in/{}.csv", date)
    with pytest.raises(SettingsError, match="expected '}' before end of string"):
        input_file("/in/{date.csv", date)
