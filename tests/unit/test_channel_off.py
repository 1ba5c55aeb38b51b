"""A channel that is off, as the summary and the report say it, from hand-built run folders."""

from __future__ import annotations

import contextlib
import datetime
import json

import luigi

from campaign_pipeline import runner
from campaign_pipeline.channels import named
from campaign_pipeline.report import summarise
from campaign_pipeline.reporting import figures, page

from .test_report_figures import build_ledger, run_folder, write_results

DATE = datetime.date(2026, 11, 25)
CHANNELS = ("sms", "push", "email")
SMS_OFF = "[SendSmsCampaign] enabled = false"
PUSH_OFF = "[SendPushNotification] target_segments = []"


@contextlib.contextmanager
def settings(values: dict[tuple[str, str], str]):
    config = luigi.configuration.get_config()
    had = {where: config.get(*where, None) for where in values}
    for (section, key), value in values.items():
        config.set(section, key, value)
    try:
        yield
    finally:
        for (section, key), value in had.items():
            if value is None:
                config.remove_option(section, key)
            else:
                config.set(section, key, value)


OFF = {("SendSmsCampaign", "enabled"): "false", ("SendPushNotification", "target_segments"): "[]"}


def email_sent(tmp_path):
    folder = run_folder(tmp_path)
    build_ledger(folder / "email_ledger.sqlite")
    write_results(folder / "email_ledger.sqlite", folder / "email_results.csv")
    return folder


def test_the_channel_task_says_why_it_is_off():
    with settings(OFF):
        sms, push, email = (named(c).task(date=DATE, campaign="demo") for c in CHANNELS)

        assert (sms.off_reason(), push.off_reason(), email.off_reason()) == (SMS_OFF, PUSH_OFF, "")
        assert sms.output().path.endswith("sms_off.json")
        assert email.output().path.endswith("email_results.csv")
        assert sms.task_id != named("sms").task(date=DATE, campaign="demo", enabled=True).task_id


def test_the_report_says_off_and_the_run_is_complete(tmp_path):
    folder = email_sent(tmp_path)
    with settings(OFF):
        report = figures.gather(folder)
        shown = page.render(report)

    assert report["status"]["state"] == "complete"
    states = {name: (c["state"], c.get("off")) for name, c in report["channels"].items()}
    assert states == {
        "email": ("complete", None),
        "sms": ("off", SMS_OFF),
        "push": ("off", PUSH_OFF),
    }
    assert f"Off for this campaign ({SMS_OFF})" in shown


def test_the_summary_says_off(tmp_path):
    folder = email_sent(tmp_path)
    with settings(OFF):
        text = summarise(folder, store=str(tmp_path / "none.sqlite"))

    assert f"sms       off ({SMS_OFF}): nothing sent" in text
    assert f"push      off ({PUSH_OFF}): nothing sent" in text
    assert "email_results.csv" in text


def test_a_channel_switched_off_after_it_sent_shows_that_run(tmp_path):
    folder = email_sent(tmp_path)
    build_ledger(folder / "sms_ledger.sqlite")  # a run of this date that stopped part-way
    with settings(OFF):
        text = summarise(folder, store=str(tmp_path / "none.sqlite"))
        sms = figures.gather(folder)["channels"]["sms"]

    assert f"sms is off now; {folder / 'sms_ledger.sqlite'} is of an earlier run" in text
    assert (sms["state"], sms["counts"]["sent"]) == ("off", 3)


def test_a_marker_left_by_a_run_told_off_on_its_command_line_says_off(tmp_path):
    """``--SendSmsCampaign-enabled false`` is a flag the summary's process never sees."""
    folder = email_sent(tmp_path)
    (folder / "sms_off.json").write_text(json.dumps({"channel": "sms", "off": SMS_OFF}))

    assert f"sms       off ({SMS_OFF})" in summarise(folder, store=str(tmp_path / "x.sqlite"))
    assert figures.gather(folder)["channels"]["sms"]["state"] == "off"
    build_ledger(folder / "sms_ledger.sqlite")  # switched on since: its results say so
    write_results(folder / "sms_ledger.sqlite", folder / "sms_results.csv")
    assert figures.gather(folder)["channels"]["sms"]["state"] == "complete"


def test_a_failed_channel_shortened_by_luigis_summary_is_named_in_full_with_its_error():
    """With ``enabled`` a channel task has parameters enough for luigi's summary to show it
    as ``SendSmsCampaign(...)``; campaign-run's summary names it from the log."""
    sms = named("sms").task(date=DATE, campaign="demo")
    output = f"""2026-11-25 06:00:01,000 ERROR luigi-interface: [pid 7] Worker Worker(salt=1, workers=3, host=h, username=u, pid=6) failed    {sms}
Traceback (most recent call last):
  File "x.py", line 1, in run
campaign_pipeline.exceptions.TemplateError: sms template 'x': no folder
===== Luigi Execution Summary =====

Scheduled 2 tasks of which:
* 1 failed:
    - 1 SendSmsCampaign(...)

===== Luigi Execution Summary =====
"""  # noqa: E501
    failures = runner.Failures()
    for line in output.splitlines(keepends=True):
        failures.feed(line)

    assert failures.summary() == [f"{sms} failed: TemplateError: sms template 'x': no folder"]
