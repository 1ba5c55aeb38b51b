"""config/production.cfg.example, installed as docs/production.md says and run against the
sandbox (issue 19): absolute paths, every channel's production credentials (a SendGrid key,
a Twilio API key, an FCM service account), consent, and quiet hours in a daily run.

Only what cannot run here is changed in the copy: its folders move under the test's own,
the three providers' base URLs point at the sandbox and the mail server at an SMTP sink on
127.0.0.1. The rest (rates, senders, targeting, consent, schedule) is the example's own.
"""

from __future__ import annotations

import configparser
import datetime
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import REPO, free_port
from test_credentials import API_KEY
from test_cron import BIN
from test_notifications import inbox  # noqa: F401 - the SMTP fixture

from campaign_pipeline import settings_check
from campaign_pipeline.config import PathParameter

EXAMPLE = REPO / "config" / "production.cfg.example"
# where the example keeps things, each moved under the test's folder in the copy
ROOTS = ("/etc/campaign_pipeline", "/var/lib/campaign_pipeline", "/var/log/campaign_pipeline",
         "/data/exports")  # fmt: skip
PROVIDERS = {
    "email_api": "https://api.sendgrid.com",
    "sms_api": "https://api.twilio.com",
    "push_api": "https://fcm.googleapis.com",
}
# the variables the example's *_env keys name: every channel's production credential
CREDENTIALS = {
    "email_api": {"token_env": "EMAIL_API_TOKEN", "unsubscribe_key_env": "UNSUBSCRIBE_KEY"},
    "sms_api": {
        "account_sid_env": "SMS_API_ACCOUNT_SID",
        "api_key_sid_env": "SMS_API_KEY_SID",
        "api_key_secret_env": "SMS_API_KEY_SECRET",
    },  # fmt: skip
    "push_api": {"service_account_env": "GOOGLE_APPLICATION_CREDENTIALS"},
}
DATE = "2026-12-01"  # the example's [schedule] start_date: catchup has no earlier date
DEFERRED = 15  # campaign-run's exit code when quiet hours left recipients pending
# zones without daylight saving time, UTC-11 to UTC+14: one of them is near any hour now
FIXED_ZONES = ("Pacific/Pago_Pago", "Pacific/Honolulu", "Pacific/Gambier", "Pacific/Pitcairn",
               "America/Phoenix", "America/Regina", "America/Bogota", "America/Puerto_Rico",
               "America/Sao_Paulo", "America/Noronha", "Atlantic/Cape_Verde", "Africa/Abidjan",
               "Africa/Lagos", "Africa/Johannesburg", "Africa/Nairobi", "Asia/Dubai",
               "Asia/Karachi", "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai", "Asia/Tokyo",
               "Australia/Brisbane", "Pacific/Noumea", "Pacific/Tarawa", "Pacific/Fakaofo",
               "Pacific/Kiritimati")  # fmt: skip


def example() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # task sections are case-sensitive
    parser.read(EXAMPLE)
    return parser


# -- the example as it ships ---------------------------------------------------------------


def test_every_path_the_package_reads_is_set_and_absolute():
    """A relative path would be relative to wherever the file is copied; a path left out
    would fall back to the checkout's demo files (the sample suppression list)."""
    config = example()
    paths = {
        (section, key)
        for section, params in settings_check.sections(settings_check.package_classes()).items()
        for key, param in params.items()
        # a [campaign] key is also listed under its class's own name, which nobody writes
        if isinstance(param, PathParameter)
        and (param._config_path or {}).get("section", section) == section
    }
    assert ("consent", "store") in paths and ("campaign", "log_dir") in paths
    for section, key in sorted(paths):
        value = config.get(section, key, fallback=None)
        assert value and os.path.isabs(value), f"[{section}] {key} = {value!r}"
        assert value.startswith(ROOTS), f"[{section}] {key} = {value!r} is outside {ROOTS}"


def test_each_channel_names_its_production_credentials_and_real_provider():
    config = example()
    for section, keys in CREDENTIALS.items():
        assert config[section]["base_url"] == PROVIDERS[section]
        for key, variable in keys.items():
            assert config[section][key] == variable, f"[{section}] {key}"
    assert not config.has_option("push_api", "token_env"), "a static FCM token lasts an hour"
    header = EXAMPLE.read_text().split("\n[campaign]\n")[0]
    variables = [variable for keys in CREDENTIALS.values() for variable in keys.values()]
    assert all(variable in header for variable in variables), "the header lists them all"


def test_consent_and_quiet_hours_are_set_for_a_daily_run():
    consent = example()["consent"]
    for key in ("suppressions", "store", "frequency_cap", "quiet_hours", "default_timezone",
                "max_wait_minutes"):  # fmt: skip
        assert consent.get(key), key
    assert int(consent["frequency_cap"]) > 0
    assert example()["schedule"].getboolean("catchup"), "windows after midnight are caught up"


def test_each_channel_names_its_template_and_segments():
    """Left out, the targeting would be luigi.cfg's, the demo's (push to premium only)."""
    config = example()
    for task in ("SendEmailCampaign", "SendSmsCampaign", "SendPushNotification"):
        assert config[task]["template"], task
        assert json.loads(config[task]["target_segments"]), task


# -- the example installed, against the sandbox --------------------------------------------


def zone_at(hour: int) -> str:
    """The fixed-offset zone whose local time now is nearest *hour*:00 (within an hour)."""

    def distance(zone: str) -> float:
        local = datetime.datetime.now(ZoneInfo(zone))
        minutes = (local.hour * 60 + local.minute - hour * 60) % 1440
        return min(minutes, 1440 - minutes)

    return min(FIXED_ZONES, key=distance)


def install(root: Path, sandbox_url: str, smtp_port: int) -> Path:
    """The example copied to root/etc/campaign_pipeline/production.cfg, its folders and
    servers moved as the module docstring says; return the copy's path."""
    config = example()
    moved = 0
    for section in config.sections():
        for key, value in config[section].items():
            if value.startswith(ROOTS):
                config[section][key] = str(root) + value
                moved += 1
    assert moved >= 7, "the example's paths were not found"
    for section in PROVIDERS:
        config[section]["base_url"] = sandbox_url
    config["smtp"].update(host="127.0.0.1", port=str(smtp_port), no_tls="true")
    path = root / "etc" / "campaign_pipeline" / "production.cfg"
    path.parent.mkdir(parents=True)
    with path.open("w") as handle:
        config.write(handle)
    return path


def customers(open_zone: str, quiet_zone: str) -> dict[str, tuple[str, str]]:
    """id: (segment, zone). The example texts premium and regular customers only."""
    return {
        "O1": ("premium", open_zone),
        "O2": ("regular", open_zone),
        "O3": ("new", open_zone),  # no SMS: not a target segment
        "S1": ("premium", open_zone),  # in the suppression file for email
        "Q1": ("premium", quiet_zone),  # SMS and push deferred
        "Q2": ("new", quiet_zone),  # push deferred
    }


def write_inputs(root: Path, rows: dict[str, tuple[str, str]], key: dict) -> dict[str, str]:
    """The day's export, the suppression file, the templates and the service account's key
    where the example expects them; return the key variable."""
    export = root / "data" / "exports" / f"customers-{DATE}.csv"
    export.parent.mkdir(parents=True)
    lines = ["customer_id,first_name,segment,email,phone,device_token,timezone"]
    for n, (cid, (segment, zone)) in enumerate(rows.items(), 1):
        lines.append(f"{cid},Cust,{segment},{cid.lower()}@example.com,+1212555{100 + n:04d},"
                     f"devicetoken{n:03d}{'x' * 40},{zone}")  # fmt: skip
    export.write_text("\n".join(lines) + "\n")
    etc = root / "etc" / "campaign_pipeline"
    (etc / "suppressions.csv").write_text("channel,contact,customer_id\nemail,s1@example.com,\n")
    shutil.copytree(REPO / "config" / "templates", etc / "templates")
    key_path = etc / "fcm-service-account.json"
    key_path.write_text(json.dumps(key))
    key_path.chmod(0o600)
    return {"GOOGLE_APPLICATION_CREDENTIALS": str(key_path)}


def campaign_run(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """The crontab's command, from a folder that is neither the checkout nor the config's."""
    return subprocess.run(
        [str(BIN / "campaign-run"), "--scheduler-port", str(free_port()), "daily", "--date", DATE],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def sent(sandbox) -> dict[str, list[str]]:
    """The customer ids each channel's messages went to (the recipient's digits or name)."""
    found: dict[str, list[str]] = {}
    for record in sandbox.accepted():
        found.setdefault(record["channel"], []).append(record["recipient"])
    return {channel: sorted(recipients) for channel, recipients in found.items()}


@pytest.mark.e2e
def test_the_installed_example_runs_a_daily_campaign_with_quiet_hours(
    campaign,
    inbox,  # noqa: F811
    tmp_path,
):
    root = tmp_path / "host"
    sandbox = campaign.serve(API_KEY)  # the limits of luigi.cfg, which the example keeps
    open_zone, quiet_zone = zone_at(14), zone_at(3)
    rows = customers(open_zone, quiet_zone)
    config = install(root, sandbox.base_url, inbox.port)
    key_env = write_inputs(root, rows, sandbox.new_service_account("shop-firebase"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI")}
    env.update(campaign.credentials, **API_KEY, **key_env, LUIGI_CONFIG_PATH=str(config),
               TMPDIR=str(tmp_path))  # fmt: skip
    for unused in ("SMS_API_AUTH_TOKEN", "PUSH_API_TOKEN"):  # the example needs neither
        del env[unused]
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()

    done = campaign_run(env, elsewhere)

    [log] = (root / "var" / "log" / "campaign_pipeline").glob("campaign-*.log")
    assert done.returncode == DEFERRED, done.stdout + done.stderr + log.read_text()[-3000:]
    [line] = done.stdout.splitlines()
    assert line.startswith("campaign-run: "), line
    assert "push: 2 deferred until " in line and "sms: 1 deferred until " in line, line
    assert line.endswith(f"; exit 15; log: {log}"), line
    phone = {cid: f"+1212555{100 + n:04d}" for n, cid in enumerate(rows, 1)}
    device = {cid: f"devicetoken{n:03d}{'x' * 40}" for n, cid in enumerate(rows, 1)}
    assert sent(sandbox) == {
        "email": sorted(f"{cid.lower()}@example.com" for cid in ("O1", "O2", "O3", "Q1", "Q2")),
        "sms": sorted(phone[cid] for cid in ("O1", "O2", "S1")),
        "push": sorted(device[cid] for cid in ("O1", "O2", "O3", "S1")),
    }
    assert all(stats["rate_limited"] == 0 for stats in sandbox.stats().values())
    assert not inbox.messages, "deferring is not a failure to mail"
    report = json.loads((root / "var/lib/campaign_pipeline/campaigns/spring_sale_2026" / DATE
                         / "report.json").read_text())  # fmt: skip
    assert report["status"]["state"] == "deferred", report["status"]
    assert {name: part["state"] for name, part in report["channels"].items()} == {
        "email": "complete", "sms": "deferred", "push": "deferred"
    }  # fmt: skip

    # every file in the example's folders, none in the folder cron started in
    var = root / "var" / "lib" / "campaign_pipeline"
    run_dir = var / "campaigns" / "spring_sale_2026" / DATE
    assert (run_dir / "report.html").is_file() and (var / "consent.sqlite").is_file()
    assert list((var / "rate-limits").iterdir())
    assert list(elsewhere.iterdir()) == []
    files_line = next(text for text in log.read_text().splitlines() if "files: " in text)
    for path in (root / "data", run_dir.parents[1], root / "etc", var / "consent.sqlite"):
        assert str(path) in files_line, files_line
    with sqlite3.connect(run_dir / "sms_ledger.sqlite") as ledger:
        waiting = ledger.execute(
            "SELECT customer_id, error FROM deliveries WHERE status = 'pending'"
        ).fetchall()
    assert [cid for cid, _ in waiting] == ["Q1"]
    assert waiting[0][1].startswith("deferred: quiet hours until ") and quiet_zone in waiting[0][1]

    # the next hourly run, still inside the window: nothing new is sent, the same line
    before = sandbox.accepted()
    again = campaign_run(env, elsewhere)

    assert again.returncode == DEFERRED, again.stdout + again.stderr
    assert "sms: 1 deferred until " in again.stdout and "push: 2 deferred until " in again.stdout
    assert sandbox.accepted() == before


def test_the_guide_is_on_the_readmes_first_screen_and_names_files_that_exist():
    first_screen = "\n".join((REPO / "README.md").read_text().splitlines()[:25])
    assert "](docs/production.md)" in first_screen
    guide = (REPO / "docs" / "production.md").read_text()
    named = set(re.findall(r"`((?:config|tests|docs)/[\w./-]+\.\w+)`", guide))
    assert "config/production.cfg.example" in named and "config/crontab.example" in named
    assert [name for name in sorted(named) if not (REPO / name).is_file()] == []
