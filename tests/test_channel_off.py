"""A channel can be off for a campaign: ``enabled = false`` in its task section, or an empty
``target_segments``. It needs no template and no credentials, sends nothing, completes, and
the summary, the report and the visualiser say "off"."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, TASKS
from test_operations import luigid, task_list  # noqa: F401 (luigid is a fixture)

from campaign_pipeline.channels import named

EVERYONE = ["premium", "regular", "new"]


def email_only(campaign, tmp_path: Path, sms: dict | None = None) -> dict[str, str]:
    """A campaign whose SMS is ``enabled = false`` (or *sms*) and push targets nobody, with
    no sms or push template and no Twilio or FCM credential: the environment it runs in."""
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "config" / "templates" / "email", templates / "email")
    campaign.write_customers(rows=20)
    campaign.start_sandbox()
    campaign.configure(
        campaign={"templates_dir": str(templates)},
        SendEmailCampaign={"target_segments": EVERYONE},
        SendSmsCampaign=sms or {"enabled": "false", "target_segments": EVERYONE},
        SendPushNotification={"target_segments": []},
    )
    unset = {*named("sms").credential_variables(), *named("push").credential_variables()}
    env = campaign.env()
    return {key: value for key, value in env.items() if key not in unset}


def summary(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "campaign-report"), "--date", "2026-11-25", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_an_email_only_campaign_needs_no_sms_or_push_template_or_credential(
    campaign,
    tmp_path,
    luigid,  # noqa: F811
):
    env = email_only(campaign, tmp_path)
    scheduler = ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)]
    command = [a for a in campaign.command(*scheduler) if a != "--local-scheduler"]

    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    assert {r["status"] for r in campaign.results("email")} == {"sent"}
    assert campaign.requests("sms") == campaign.requests("push") == 0
    assert not (campaign.folder / "sms_results.csv").exists()
    assert not (campaign.folder / "push_results.csv").exists()
    sms_off = "[SendSmsCampaign] enabled = false"
    push_off = "[SendPushNotification] target_segments = []"
    assert f"sms: off ({sms_off}): nothing sent" in done.stderr
    # the visualiser
    shown = {task["name"]: task for task in task_list(luigid, "DONE").values()}
    assert shown[TASKS["sms"]]["status_message"] == f"off ({sms_off}): nothing sent"
    assert shown[TASKS["push"]]["status_message"] == f"off ({push_off}): nothing sent"
    assert shown[TASKS["sms"]]["progress_percentage"] == 100
    assert "RunCampaign" in shown
    # the run report
    report = json.loads((campaign.folder / "report.json").read_text())
    assert report["status"]["state"] == "complete"
    assert {n: c["state"] for n, c in report["channels"].items()} == {
        "email": "complete", "sms": "off", "push": "off"
    }  # fmt: skip
    assert report["channels"]["sms"]["off"] == sms_off
    page = (campaign.folder / "report.html").read_text()
    assert page.count("Off for this campaign") == 2
    # the run summary
    text = summary(env)
    assert f"sms       off ({sms_off}): nothing sent" in text
    assert f"push      off ({push_off}): nothing sent" in text

    again = campaign.run(env=env)  # complete: nothing new, still no credential asked for

    assert again.returncode == 0, again.stderr[-3000:]
    assert campaign.requests("sms") == campaign.requests("push") == 0
    assert set(campaign.accepted("email").values()) == {1}


def test_a_channel_switched_on_later_the_same_date_sends(campaign, tmp_path):
    off_env = email_only(campaign, tmp_path)
    first = campaign.run(env=off_env)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(REPO / "config" / "templates" / "sms", tmp_path / "templates" / "sms")
    campaign.configure(SendSmsCampaign={"enabled": "true"})

    later = campaign.run()  # with the SMS credentials

    assert later.returncode == 0, later.stderr[-3000:]
    sms = campaign.results("sms")
    assert sms and {r["status"] for r in sms} == {"sent"}
    assert set(campaign.accepted("sms").values()) == {1}
    assert set(campaign.accepted("email").values()) == {1}  # email was not sent again
    report = json.loads((campaign.folder / "report.json").read_text())
    assert report["channels"]["sms"]["state"] == "complete"
    assert report["channels"]["push"]["state"] == "off"
    assert "sms       off" not in summary(campaign.env())


def test_a_dry_run_of_an_email_only_campaign_says_off(campaign, tmp_path):
    env = email_only(campaign, tmp_path)

    done = campaign.run("--dry-run", env=env)

    assert done.returncode == 0, done.stderr[-3000:]
    assert campaign.requests("email") == campaign.requests("sms") == 0
    report = json.loads((campaign.folder / "dry-run" / "report.json").read_text())
    assert {n: c["state"] for n, c in report["channels"].items()} == {
        "email": "preview", "sms": "off", "push": "off"
    }  # fmt: skip
    assert "sms       off ([SendSmsCampaign] enabled = false)" in summary(env, "--dry-run")


def test_channels_without_target_segments_are_off(campaign, tmp_path):
    """The issue's campaign: SMS and push with ``target_segments = []``, no template and no
    credential of theirs (before: both failed the run, exit 30)."""
    env = email_only(campaign, tmp_path, sms={"target_segments": []})

    done = campaign.run(env=env)

    assert done.returncode == 0, done.stderr[-3000:]
    assert {r["status"] for r in campaign.results("email")} == {"sent"}
    assert campaign.requests("sms") == campaign.requests("push") == 0
    text = summary(env)
    assert "sms       off ([SendSmsCampaign] target_segments = []): nothing sent" in text


def test_every_channel_off_is_a_settings_error_not_a_silent_success(campaign, tmp_path):
    """Email off too: the campaign would send nothing and end as a success (exit 0, which
    cron reports as fine); the settings check names the three settings instead."""
    env = email_only(campaign, tmp_path)
    campaign.configure(SendEmailCampaign={"enabled": "false"})

    done = campaign.run(env=env)

    assert done.returncode == 30, done.stderr[-3000:]
    [line, *_] = [text for text in done.stderr.splitlines() if "every channel is off" in text]
    assert line.endswith("): this campaign would send nothing; switch one on"), line
    for reason in ("[SendEmailCampaign] enabled = false", "[SendSmsCampaign] enabled = false",
                   "[SendPushNotification] target_segments = []"):  # fmt: skip
        assert reason in line
    assert sum(campaign.requests(channel) for channel in ("email", "sms", "push")) == 0
