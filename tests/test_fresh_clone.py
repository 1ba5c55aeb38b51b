"""A fresh clone, any customer file with the five required columns, any working folder: the
two commands work without anything beside the repository."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import jinja2
import pytest
from conftest import REPO, SPECS

from campaign_pipeline.templates import MessageTemplate, TemplateError

SHARED_SPECS = REPO.parent / "shared" / "provider-specs"
FIVE = ["customer_id", "segment", "email", "phone", "device_token"]
ALL = ["premium", "regular", "new"]


# -- the contract tests run from the committed subset of the providers' specs ---------------


def test_contract_tests_read_the_committed_spec_subset():
    assert SPECS == REPO / "tests" / "specs"
    for channel, path in {
        "email": "/v3/mail/send",
        "sms": "/2010-04-01/Accounts/{AccountSid}/Messages.json",
        "push": "/v1/projects/{project_id}/messages:send",
    }.items():
        spec = json.loads((SPECS / f"{channel}.json").read_text())
        assert list(spec["paths"]) == [path]
        text = json.dumps(spec)
        assert '"summary"' not in text and '"x-' not in text


@pytest.mark.skipif(
    not SHARED_SPECS.is_dir(),
    reason=f"no official provider specs at {SHARED_SPECS} to compare the committed subset with",
)
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
    for channel in ("email", "sms", "push"):
        rows = campaign.results(channel)
        assert [r["status"] for r in rows] == ["sent"] * 10, (channel, rows[:2])
        assert campaign.requests(channel) == 10
    messages = [m for m in campaign.sandbox.accepted() if m["channel"] == "email"]
    assert "Hi there," in json.dumps(messages[0])


def template(tmp_path, text: str) -> MessageTemplate:
    folder = tmp_path / "sms" / "t"
    folder.mkdir(parents=True)
    (folder / "body.txt").write_text(text)
    return MessageTemplate(str(tmp_path), "sms", "t")


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
    for channel in ("email", "sms", "push"):
        shipped = MessageTemplate(str(REPO / "config" / "templates"), channel, "spring_sale")
        shipped.check({*FIVE, "campaign", "date"})
        parts = shipped.render(dict.fromkeys([*FIVE, "campaign", "date"], "x"))
        assert all(parts.values())
