"""Email batching: many recipients per SendGrid request, still one ledger row each."""

from __future__ import annotations

import re

from conftest import CHANNELS, TASKS

from campaign_pipeline.consent import ConsentStore
from campaign_pipeline.sandbox import ErrorRule

ALL = ["premium", "regular", "new"]
HEADER = "customer_id,first_name,segment,email,phone,device_token\n"


def write(campaign, emails: list[str]) -> None:
    lines = [f"B{n},Name{n},premium,{email},," for n, email in enumerate(emails)]
    campaign.customers_path.write_text(HEADER + "\n".join(lines) + "\n")


def test_a_batch_is_one_request_with_a_result_line_per_recipient(campaign):
    campaign.write_customers(rows=250)
    campaign.start_sandbox()
    campaign.configure(email_api={"batch_size": 100}, SendEmailCampaign={"target_segments": ALL})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    rows = campaign.results("email")
    assert [r["status"] for r in rows] == ["sent"] * 250
    assert campaign.requests("email") == 3
    assert len({r["provider_message_id"] for r in rows}) == 3
    assert (
        set(campaign.accepted("email").values()) == {1} and len(campaign.accepted("email")) == 250
    )
    first = campaign.sandbox.accepted()[0]["request"]
    assert first["subject"].endswith("your spring offer is here")
    # The sandbox stores what the recipient reads: the tags replaced by the rendered bodies.
    assert all(
        re.fullmatch(r"%campaign_(text|html)_[0-9a-f]{24}%", t) for t in first["substitutions"]
    )
    assert [c["value"] for c in first["content"]] == list(first["substitutions"].values())


def test_a_bad_address_named_by_the_provider_fails_alone_and_the_rest_go_once(campaign):
    emails = [f"ok{n}@example.com" for n in range(10)]
    emails[4] = "bounce.4@example.com"  # the sandbox refuses it: 400 personalizations.4...
    write(campaign, emails)
    campaign.start_sandbox()
    campaign.configure(email_api={"batch_size": 10})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["customer_id"]: r for r in campaign.results("email")}
    assert (rows["B4"]["status"], rows["B4"]["attempts"]) == ("failed", "1")
    assert "personalizations.4.to.0.email" in rows["B4"]["error"]
    assert all(rows[f"B{n}"]["status"] == "sent" for n in range(10) if n != 4)
    assert campaign.requests("email") == 2
    accepted = campaign.accepted("email")
    assert set(accepted.values()) == {1} and "bounce.4@example.com" not in accepted
    assert len(accepted) == 9


def test_one_400_naming_several_recipients_fails_each_for_its_own_error_alone(campaign):
    """SendGrid names every fault of a batch in one 400: the recipient refused for its
    subject is failed for that, never learned as a refused address; only the one whose
    address is named is suppressed for the campaigns to come."""
    emails = ["ok0@example.com", "subject@example.com", "bad@example.com", "ok3@example.com"]
    write(campaign, emails)
    campaign.start_sandbox(
        error_rules=[
            ErrorRule("email", "^subject@", 400, "personalizations.*.subject"),
            ErrorRule("email", "^bad@", 400, "personalizations.*.to.0.email"),
        ]
    )
    campaign.configure(email_api={"batch_size": 4})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["customer_id"]: r for r in campaign.results("email")}
    assert {cid: r["status"] for cid, r in rows.items()} == {
        "B0": "sent", "B1": "failed", "B2": "failed", "B3": "sent"
    }  # fmt: skip
    assert rows["B1"]["error"] == (
        "email provider answered 400: personalizations.1.subject: sandbox error rule: 400"
    )
    assert rows["B2"]["error"] == (
        "email provider answered 400: personalizations.2.to.0.email: sandbox error rule: 400"
    )
    # the one 400, then the unnamed rest again in one request
    assert campaign.requests("email") == 2
    assert campaign.accepted("email") == {"ok0@example.com": 1, "ok3@example.com": 1}
    with ConsentStore(str(campaign.root / "consent.sqlite")) as store:
        learned = [(e.contact, e.code) for e in store.entries("email")]
    assert learned == [("bad@example.com", "400")]

    # The next campaign: the sandbox takes every message; only the refused address is skipped.
    campaign.start_sandbox()
    again = campaign.run(task="SendEmailCampaign", date="2026-11-26")

    assert again.returncode == 0, again.stderr[-3000:]
    assert set(campaign.accepted("email")) == set(emails) - {"bad@example.com"}


def test_a_refused_batch_that_names_nobody_is_halved_until_the_bad_one_stands_alone(campaign):
    emails = [f"ok{n}@example.com" for n in range(8)]
    write(campaign, emails)
    campaign.start_sandbox(error_rules=[ErrorRule("email", "^ok6@", 400)])
    campaign.configure(email_api={"batch_size": 8})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["customer_id"]: r for r in campaign.results("email")}
    assert rows["B6"]["status"] == "failed"
    assert all(rows[f"B{n}"]["status"] == "sent" for n in range(8) if n != 6)
    accepted = campaign.accepted("email")
    assert set(accepted.values()) == {1} and len(accepted) == 7
    # 8 -> 4+4 -> (4 sent) 2+2 -> (2 sent) 1+1 -> (1 sent, 1 failed)
    assert campaign.requests("email") == 7


def test_other_channels_are_not_batched(campaign):
    campaign.write_customers(rows=12)
    campaign.start_sandbox()
    for channel in CHANNELS:
        campaign.configure(**{TASKS[channel]: {"target_segments": ALL}})
    campaign.configure(email_api={"batch_size": 5})

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    assert campaign.requests("email") == 3
    assert campaign.requests("sms") == 12 and campaign.requests("push") == 12
