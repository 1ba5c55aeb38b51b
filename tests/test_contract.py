"""Every request variant the pipeline sends, checked against the providers' official OpenAPI
descriptions by Stoplight Prism, plus the rules Prism does not check."""

from __future__ import annotations

import datetime
import json
import re
import shutil

import pytest
from conftest import FULL_SPECS, REPO, RETCODE, SPEC_FILES, SPECS, TASKS

ALL = ["premium", "regular", "new"]
MESSAGING_SERVICE_SID = "MG" + "0123456789abcdef" * 2


def templates_without(tmp_path, *removed: str):
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "config" / "templates", folder)
    for part in removed:
        (folder / part).unlink()
    return folder


VARIANTS = {
    "email text and html, custom_args": ("email", {}, ()),
    "email text only": ("email", {}, ("email/spring_sale/body.html",)),
    "email html only": ("email", {}, ("email/spring_sale/body.txt",)),
    "email without custom_args": ("email", {"email_api": {"custom_args": []}}, ()),
    "email batched, text and html": ("email", {"email_api": {"batch_size": 3}}, ()),
    "email batched, text only": (
        "email", {"email_api": {"batch_size": 3}}, ("email/spring_sale/body.html",)
    ),
    "email batched, unsubscribe url and mailto headers, asm": (
        "email",
        {"email_api": {"batch_size": 3, "asm_group_id": 42,
                       "unsubscribe_mailto": "unsubscribe+{customer_id}@example.com"}},
        (),
    ),
    "email transactional, no unsubscribe headers": (
        "email", {"email_api": {"unsubscribe_url": "", "transactional": "true"}}, ()
    ),
    "sms with From": ("sms", {}, ()),
    "sms with MessagingServiceSid": (
        "sms", {"sms_api": {"messaging_service_sid": MESSAGING_SERVICE_SID}}, ()
    ),
    "push with notification and data": ("push", {}, ()),
    "push with notification only": ("push", {"push_api": {"data": []}}, ()),
}  # fmt: skip


UNSUBSCRIBE_VARIANTS = [v for v in VARIANTS if "unsubscribe" in v]
SEND_ROUTES = {
    "email": r"^post /v3/mail/send$",
    "sms": r"^post /2010-04-01/Accounts/[^/]+/Messages\.json$",
    "push": r"^post /v1/projects/[^/]+/messages:send$",
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_requests_are_valid_against_the_official_spec(campaign, prism, tmp_path, variant):
    channel, settings, removed = VARIANTS[variant]
    server = prism[channel]
    campaign.write_customers(rows=6)
    campaign.start_sandbox()  # for the layout only: this channel goes to Prism
    campaign.configure(
        campaign={"templates_dir": str(templates_without(tmp_path, *removed))},
        **{f"{channel}_api": {"base_url": server.base_url}},
        **{TASKS[channel]: {"target_segments": ALL}},
    )
    campaign.configure(**settings)
    if channel == "email" and FULL_SPECS:  # the full mail/send file has no suppression lists
        campaign.configure(email_api={"sync_suppressions": "false"})
    mark = server.mark()

    done = campaign.run(task=TASKS[channel])

    assert done.returncode == 0, done.stderr[-3000:]
    passed, errors = server.report_since(mark, SEND_ROUTES[channel])
    assert errors == [], f"Prism found the requests invalid: {errors}"
    assert passed == 6 // settings.get("email_api", {}).get("batch_size", 1)
    assert [r["status"] for r in campaign.results(channel)] == ["sent"] * 6
    if variant in UNSUBSCRIBE_VARIANTS:  # the shapes Prism saw, as the dry run builds them
        assert campaign.run("--dry-run", task=TASKS[channel]).returncode == 0
        body = preview(campaign, channel)["batches"][0]["body"]
        headers = [p.get("headers", {}) for p in body["personalizations"]]
        if variant.startswith("email transactional"):
            assert headers == [{}] * len(headers) and "asm" not in body
        else:
            assert all("<mailto:unsubscribe+" in h["List-Unsubscribe"] for h in headers)
            assert body["asm"] == {"group_id": 42}


def preview(campaign, channel: str) -> dict:
    path = campaign.folder / "dry-run" / f"{channel}_preview.json"
    return json.loads(path.read_text())


def test_what_prism_does_not_check_holds_for_every_request(campaign):
    """E.164 To, SMS body length, string FCM data, sid patterns: on every built request."""
    campaign.write_customers(rows=80, dirty=True)
    campaign.start_sandbox()
    campaign.configure(
        campaign={"preview_requests": 1000},
        **{TASKS[c]: {"target_segments": ALL} for c in TASKS},
    )

    done = campaign.run("--dry-run")

    assert done.returncode == 0, done.stderr[-3000:]
    sms = preview(campaign, "sms")["requests"]
    assert len(sms) == preview(campaign, "sms")["counts"]["by_status"]["would_send"]
    for request in sms:
        assert re.fullmatch(r"\+[1-9]\d{1,14}", request["body"]["To"])
        assert 1 <= len(request["body"]["Body"]) <= 1600
        assert "/Accounts/<$SMS_API_ACCOUNT_SID>/Messages.json" in request["url"]
    for request in preview(campaign, "push")["requests"]:
        assert all(isinstance(v, str) for v in request["body"]["message"]["data"].values())


def test_an_sms_text_over_1600_characters_fails_that_recipient_unsent(campaign, tmp_path):
    templates = templates_without(tmp_path)
    (templates / "sms" / "spring_sale" / "body.txt").write_text(
        "{{ first_name }}{% if segment == 'premium' %}{{ 'x' * 1600 }}{% endif %}"
    )
    campaign.write_customers(rows=30)
    campaign.start_sandbox()
    campaign.configure(
        campaign={"templates_dir": str(templates)}, SendSmsCampaign={"target_segments": ALL}
    )

    done = campaign.run(task="SendSmsCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    rows = campaign.results("sms")
    long = [r for r in rows if r["segment"] == "premium"]
    assert long and all(r["status"] == "failed" and r["attempts"] == "0" for r in long)
    assert all("Twilio takes 1 to 1600" in r["error"] for r in long)
    assert campaign.requests("sms") == len(rows) - len(long)


@pytest.mark.parametrize(
    "settings, env, message",
    [
        ({}, {"SMS_API_ACCOUNT_SID": "AC-not-hex"}, "does not look like AC followed by 32 hex"),
        ({"messaging_service_sid": "MG123"}, {}, "messaging_service_sid must be MG + 32 hex"),
        ({"from_number": ""}, {}, "needs from_number or messaging_service_sid"),
    ],
)
def test_twilio_identifiers_are_checked_before_sending(campaign, settings, env, message):
    campaign.write_customers(rows=5)
    campaign.start_sandbox()
    campaign.configure(sms_api=settings)

    done = campaign.run(task="SendSmsCampaign", env=campaign.env(**env))

    assert done.returncode == RETCODE["task_failed"]
    assert message in done.stderr
    assert campaign.requests("sms") == 0


LIST_NAMES = {
    "bounces": "bounces",
    "blocks": "blocks",
    "spam_reports": "spam reports",
    "invalid_emails": "invalid emails",
    "unsubscribes": "global unsubscribes",
}


def spec_examples() -> dict[str, list]:
    """The first example answer of each suppression-list GET in the spec Prism serves."""
    spec = json.loads((SPECS / SPEC_FILES.get("email_lists", "email.json")).read_text())
    paths = {f"/v3/suppression/{name}": name for name in LIST_NAMES}
    paths["/v3/asm/groups/{group_id}/suppressions"] = "group"
    found = {}
    for path, name in paths.items():
        content = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        found[name] = next(iter(content["examples"].values()))["value"]
    return found


def test_suppression_list_requests_are_valid_and_their_examples_read(campaign, prism):
    """The GETs the email channel makes of SendGrid's lists pass Prism's validation, and the
    spec's own example answers are read as they mean: each address skipped, named by its
    list and the UTC date of its created."""
    examples = spec_examples()
    expected: dict[str, str] = {}  # address -> reason; an address in two lists: the first
    for name, entries in examples.items():
        for entry in entries:
            if name == "group":
                expected.setdefault(entry, "suppressed: sendgrid group 42 unsubscribes")
                continue
            day = datetime.datetime.fromtimestamp(entry["created"], datetime.UTC).date()
            reason = f"suppressed: sendgrid {LIST_NAMES[name]} {day}"
            expected.setdefault(entry["email"].casefold(), reason)
    rows = [f"L{n},premium,{a},,\n" for n, a in enumerate(sorted(expected))]
    campaign.customers_path.write_text(
        "customer_id,segment,email,phone,device_token\n" + "".join(rows)
    )
    server = prism["email_lists"]
    campaign.start_sandbox()
    campaign.configure(
        email_api={"base_url": server.base_url, "asm_group_id": 42, "suppression_page_size": 100},
        SendEmailCampaign={"target_segments": ALL},
    )
    mark = server.mark()

    done = campaign.run("--dry-run", task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    passed, errors = server.report_since(mark, r"^get /v3/")
    assert errors == [], f"Prism found the requests invalid: {errors}"
    assert passed == len(LIST_NAMES) + 1
    shown = preview(campaign, "email")["not_sent"]
    reasons = {e["customer_id"]: e["reason"] for e in shown}
    by_address = {a: reasons.get(f"L{n}", "") for n, a in enumerate(sorted(expected))}
    # a group's entries are dated the day first seen. The full official file also has
    # schema-level examples, which Prism may answer with instead: there, every address it
    # answered is read right, the others are sent
    for address, reason in expected.items():
        if by_address[address] or not FULL_SPECS:
            assert by_address[address].startswith(reason), (address, by_address[address])
    if not FULL_SPECS:
        assert preview(campaign, "email")["counts"]["by_status"] == {"skipped": len(expected)}
