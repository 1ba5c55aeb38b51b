"""A fresh clone, any customer file with the five required columns, any working folder: the
two commands work without anything beside the repository."""

from __future__ import annotations

import configparser
import csv
import datetime
import json
import subprocess
import sys

import jinja2
import pytest
from conftest import CHANNELS, REPO, SPECS

from campaign_pipeline import channels
from campaign_pipeline.exceptions import TemplateError
from campaign_pipeline.templates import MessageTemplate

SHARED_SPECS = REPO.parent / "shared" / "provider-specs"
FIVE = ["customer_id", "segment", "email", "phone", "device_token"]
ALL = ["premium", "regular", "new"]


# -- the contract tests run from the committed subset of the providers' specs ---------------


def test_contract_tests_read_the_committed_spec_subset():
    assert SPECS == REPO / "tests" / "specs"
    lists = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
    for channel, paths in {
        "email": [
            "/v3/mail/send",
            *[f"/v3/suppression/{name}" for name in lists],  # read before sending
            "/v3/asm/groups/{group_id}/suppressions",
        ],
        "sms": ["/2010-04-01/Accounts/{AccountSid}/Messages.json"],
        "push": ["/v1/projects/{project_id}/messages:send"],
    }.items():
        spec = json.loads((SPECS / f"{channel}.json").read_text())
        assert list(spec["paths"]) == paths
        text = json.dumps(spec)
        assert '"summary"' not in text and '"x-' not in text


@pytest.mark.skipif(
    not SHARED_SPECS.is_dir(),
    reason=f"no official provider specs at {SHARED_SPECS} to compare the committed subset with",
)
@pytest.mark.e2e
def test_committed_spec_subset_is_what_the_script_makes_from_the_official_specs():
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "specs" / "make_subset.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# -- the shipped templates render on a file with only the required columns -----------------


def test_demo_campaign_sends_on_all_channels_from_a_five_column_file(campaign):
    customers = campaign.write_customers(rows=10)
    with campaign.customers_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIVE, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(customers)
    campaign.start_sandbox()
    campaign.configure(
        **{task: {"target_segments": ALL}
           for task in ("SendEmailCampaign", "SendSmsCampaign", "SendPushNotification")}
    )  # fmt: skip

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    for channel in CHANNELS:
        rows = campaign.results(channel)
        assert [r["status"] for r in rows] == ["sent"] * 10, (channel, rows[:2])
        assert campaign.requests(channel) == 10
    messages = [m for m in campaign.sandbox.accepted() if m["channel"] == "email"]
    assert "Hi there," in json.dumps(messages[0])


def template(tmp_path, text: str) -> MessageTemplate:
    folder = tmp_path / "sms" / "t"
    folder.mkdir(parents=True)
    (folder / "body.txt").write_text(text)
    return MessageTemplate(str(tmp_path), "sms", "t", channels.named("sms").parts)


@pytest.mark.parametrize(
    "text",
    [
        '{{ first_name | default("there") }} {{ segment }}',
        '{{ first_name | d("there", true) }} {{ segment }}',
        "{% if first_name is defined %}hi{% endif %} {{ segment }}",
        '{% for s in [segment] %}{{ s }} {{ first_name|default("x") }}{% endfor %}',
    ],
)
def test_a_variable_guarded_by_default_or_defined_is_optional(tmp_path, text):
    body = template(tmp_path, text)

    body.check({"segment"})

    assert "new" in body.render({"segment": "new"})["body.txt"]


@pytest.mark.parametrize(
    "text",
    [
        '{{ first_name | default("there") }}, {{ first_name }}',  # guarded once, not twice
        '{{ first_name | upper | default("x") }}',  # upper runs on the undefined name first
        "{% if first_name is defined %}{{ segment }}{% endif %}{{ first_name }}",
    ],
)
def test_a_variable_used_unguarded_anywhere_must_be_a_column(tmp_path, text):
    body = template(tmp_path, text)

    with pytest.raises(TemplateError, match="uses first_name, which no customer has"):
        body.check({"segment"})
    with pytest.raises(jinja2.UndefinedError):
        body.env.get_template("body.txt").render(segment="new")


def test_shipped_templates_check_on_the_five_required_columns():
    for channel in channels.registered():
        folder = str(REPO / "config" / "templates")
        shipped = MessageTemplate(folder, channel.name, "spring_sale", channel.parts)
        shipped.check({*FIVE, "campaign", "date"})
        parts = shipped.render(dict.fromkeys([*FIVE, "campaign", "date"], "x"))
        assert all(parts.values())


# -- the package's defaults apply wherever luigi runs ---------------------------------------


def no_luigi_config(campaign, **extra: str) -> dict[str, str]:
    env = campaign.env(**extra)
    if "LUIGI_CONFIG_PATH" not in extra:
        del env["LUIGI_CONFIG_PATH"]
    return env


def push_task(target_segments: list[str]) -> str:
    """The id of the demo's push task of 2026-11-25 with *target_segments*."""
    push = channels.PUSH.task(
        date=datetime.date(2026, 11, 25),
        campaign="demo",
        target_segments=target_segments,
        template="spring_sale",
    )
    return push.task_id


def test_a_run_from_another_folder_keeps_the_package_defaults(campaign, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = campaign.run(cwd=elsewhere, env=no_luigi_config(campaign))

    # [retcode]: exit 20 for the missing data/sample/customers.csv (relative to the folder)
    assert done.returncode == 20, done.stderr[-3000:]
    assert "customer file data/sample/customers.csv does not exist" in done.stderr
    assert " INFO luigi-interface: " in done.stderr and "DEBUG" not in done.stderr
    assert "Running Worker with 3 processes" in done.stderr
    # luigi's summary shortens the channel tasks to (...): their ids show their parameters
    assert f"task   {push_task(['premium'])}   has status" in done.stderr
    sms = channels.SMS.task(
        date=datetime.date(2026, 11, 25),
        campaign="demo",
        target_segments=["premium", "new"],
        template="spring_sale",
    )
    assert f"task   {sms.task_id}   has status" in done.stderr


def test_the_folder_luigi_cfg_and_luigi_config_path_still_override_key_by_key(campaign, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "luigi.cfg").write_text("[core]\nworkers = 2\n[retcode]\nmissing_data = 21\n")
    override = tmp_path / "override-elsewhere.cfg"
    override.write_text(
        '[retcode]\nmissing_data = 22\n[SendPushNotification]\ntarget_segments = ["new"]\n'
    )

    done = campaign.run(
        cwd=elsewhere, env=no_luigi_config(campaign, LUIGI_CONFIG_PATH=str(override))
    )

    assert done.returncode == 22, done.stderr[-3000:]
    assert "Running Worker with 2 processes" in done.stderr
    assert f"task   {push_task(['new'])}   has status" in done.stderr
    assert " INFO luigi-interface: " in done.stderr and "DEBUG" not in done.stderr


def read_cfg(path) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return {(s, k): v for s in parser.sections() for k, v in parser[s].items()}


def test_the_packaged_defaults_are_the_values_of_the_shipped_luigi_cfg():
    """Two copies of the defaults: a key changed or added in one must be in the other."""
    packaged = read_cfg(REPO / "campaign_pipeline" / "defaults.cfg")
    shipped = read_cfg(REPO / "luigi.cfg")
    shipped.pop(("campaign", "templates_dir"))  # packaged: defaults.PACKAGE_PATHS
    shipped.pop(("consent", "suppressions"))  # the same

    assert packaged == shipped
