"""Unsubscribe and STOP in the messages, through the luigi CLI against the sandbox: the
email headers and links of each recipient, the fatal configuration without a way out, the
SMS opt-out line, and what a dry run says the SMS will cost."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

from conftest import REPO, RETCODE

from campaign_pipeline import smstext
from campaign_pipeline.unsubscribe import verify_unsubscribe_token

ALL = ["premium", "regular", "new"]
URL = "https://unsubscribe.shop.test/u?c={campaign}&id={customer_id}&t={token}"


def email_messages(campaign) -> list[dict]:
    return [r for r in campaign.sandbox.accepted() if r["channel"] == "email"]


def link_of(header: str) -> str:
    """The https link in a List-Unsubscribe value ``<https://...>, <mailto:...>``."""
    links = [part.strip().strip("<>") for part in header.split(",")]
    return next(link for link in links if link.startswith("https://"))


def test_every_email_carries_its_recipients_own_signed_one_click_link(campaign):
    customers = campaign.write_customers(rows=7, dirty=False)
    campaign.start_sandbox()
    campaign.configure(
        email_api={
            "batch_size": 3,  # several personalizations per request, each with its headers
            "unsubscribe_url": URL,
            "unsubscribe_mailto": "leave+{customer_id}@shop.test",
            "asm_group_id": 42,
        },
        SendEmailCampaign={"target_segments": ALL},
    )

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    assert campaign.requests("email") == 3
    messages = email_messages(campaign)
    assert sorted(m["customer_id"] for m in messages) == sorted(c["customer_id"] for c in customers)
    key = campaign.credentials["UNSUBSCRIBE_KEY"]
    for message in messages:
        headers, customer = message["request"]["headers"], message["customer_id"]
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert f"<mailto:leave+{customer}@shop.test>" in headers["List-Unsubscribe"]
        link = link_of(headers["List-Unsubscribe"])
        query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
        assert (query["c"], query["id"]) == ("test", customer)
        assert verify_unsubscribe_token(key, customer, "test", query["t"])
        assert not verify_unsubscribe_token(secrets.token_hex(32), customer, "test", query["t"])
        assert not verify_unsubscribe_token(key, customer, "another-campaign", query["t"])
        # the body shows the same link ({{ unsubscribe_url }} in the shipped template)
        assert all(link in c["value"].replace("&amp;", "&") for c in message["request"]["content"])
        assert message["request"]["asm"] == {"group_id": 42}
    # a link made from another customer's token is refused: it cannot be forged
    first, second = messages[0], messages[1]
    token = parse_qs(urlsplit(link_of(first["request"]["headers"]["List-Unsubscribe"])).query)
    assert not verify_unsubscribe_token(key, second["customer_id"], "test", token["t"][0])
    assert key not in done.stderr and key not in json.dumps(campaign.sandbox.accepted())


def test_a_marketing_email_without_any_way_out_stops_the_run_before_sending(campaign):
    campaign.write_customers(rows=5, dirty=False)
    campaign.start_sandbox()
    campaign.configure(email_api={"unsubscribe_url": "", "unsubscribe_mailto": ""})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == RETCODE["task_failed"]
    lines = [line for line in done.stderr.splitlines() if "SettingsError: " in line]
    assert lines and "[email_api] unsubscribe_url, unsubscribe_mailto and asm_group_id" in lines[0]
    assert "transactional = true" in lines[0]
    assert campaign.requests("email") == 0

    campaign.configure(email_api={"transactional": "true"})
    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["status"] for r in campaign.results("email")] == ["sent"] * 5
    assert all("headers" not in m["request"] for m in email_messages(campaign))


def test_a_link_the_endpoint_could_not_verify_or_a_missing_key_stops_the_run(campaign):
    campaign.write_customers(rows=3, dirty=False)
    campaign.start_sandbox()
    campaign.configure(email_api={"unsubscribe_url": "https://shop.test/u?id={customer_id}"})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == RETCODE["task_failed"]
    assert "[email_api] unsubscribe_url lacks {campaign}, {token}" in done.stderr
    campaign.configure(email_api={"unsubscribe_url": URL})
    env = campaign.env()
    del env["UNSUBSCRIBE_KEY"]

    done = campaign.run(task="SendEmailCampaign", env=env)

    assert done.returncode == RETCODE["task_failed"]
    assert "environment variable UNSUBSCRIBE_KEY is not set" in done.stderr
    assert campaign.requests("email") == 0


def sms_templates(tmp_path, body: str):
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "config" / "templates", folder)
    (folder / "sms" / "spring_sale" / "body.txt").write_text(body)
    return folder


def test_the_opt_out_line_is_added_to_a_text_that_names_no_keyword(campaign, tmp_path):
    body = (
        "{{ first_name }}: spring sale"
        "{% if segment == 'premium' %}, text stop to leave{% endif %}"
        "{% if segment == 'new' %}, unstoppable prices{% endif %}"
    )
    campaign.write_customers(rows=20, dirty=False)
    campaign.start_sandbox()
    campaign.configure(
        campaign={"templates_dir": str(sms_templates(tmp_path, body))},
        SendSmsCampaign={"target_segments": ALL},
    )

    done = campaign.run(task="SendSmsCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    sent = {r["recipient"]: r for r in campaign.sandbox.accepted() if r["channel"] == "sms"}
    segments = {r["recipient"]: r["segment"] for r in campaign.results("sms")}
    assert set(segments.values()) == set(ALL) and len(sent) == 20
    for phone, record in sent.items():
        text = record["request"]["Body"]
        if segments[phone] == "premium":  # "stop", as a word, in any case
            assert text.endswith("text stop to leave")
        else:  # "unstoppable" is no keyword
            assert text.endswith(" Reply STOP to opt out")


def test_the_preview_shows_each_texts_encoding_and_segments_and_the_total(campaign, tmp_path):
    body = (
        "{{ first_name }}, spring sale"
        "{% if segment == 'premium' %} 🌸{% endif %}"
        "{% if segment == 'new' %}{{ ' and more' * 20 }}{% endif %}"
    )
    campaign.write_customers(rows=30, dirty=False)
    campaign.start_sandbox()
    campaign.configure(
        campaign={"templates_dir": str(sms_templates(tmp_path, body)), "preview_requests": 100},
        SendSmsCampaign={"target_segments": ALL},
    )

    done = campaign.run("--dry-run", task="SendSmsCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    preview = json.loads((campaign.folder / "dry-run" / "sms_preview.json").read_text())
    shown = preview["requests"]
    assert len(shown) == preview["counts"]["by_status"]["would_send"] == 30
    kinds = {r["segment"]: (r["encoding"], r["message_segments"]) for r in shown}
    assert kinds["premium"] == ("UCS-2", 1)
    assert kinds["regular"] == ("GSM-7", 1)
    assert kinds["new"][0] == "GSM-7" and kinds["new"][1] >= 2
    for request in shown:
        text = request["body"]["Body"]
        assert request["message_segments"] == smstext.segments(text)
    totals = preview["counts"]["message_segments"]
    assert totals["total"] == sum(r["message_segments"] for r in shown)
    assert totals["total"] == sum(totals["by_encoding"].values())
    assert campaign.requests("sms") == 0

    report = subprocess.run(
        [sys.executable, "-m", "campaign_pipeline.report", "--dry-run", "--date", "2026-11-25"],
        cwd=REPO, env=campaign.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert report.returncode == 0, report.stderr
    by = totals["by_encoding"]
    expected = f"{totals['total']:,} segments ({by['GSM-7']:,} GSM-7 · {by['UCS-2']:,} UCS-2)"
    assert expected in report.stdout
