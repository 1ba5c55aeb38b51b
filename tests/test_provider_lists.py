"""SendGrid's own suppression lists through the luigi CLI against the sandbox: read page by
page before the email channel sends, mirrored in the consent store, their addresses skipped
with the list's name; refused keys stop the channel before anything is sent, a server error is
transient, and an address SendGrid no longer lists is sent again."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import requests
from conftest import RETCODE

from campaign_pipeline.consent import ConsentStore
from campaign_pipeline.sandbox import ErrorRule
from campaign_pipeline.sandbox.sendgrid import SuppressedEmail

HEADER = "customer_id,first_name,segment,email,phone,device_token\n"
LISTED = "2026-11-20"


def customers(campaign, count: int) -> None:
    rows = [
        f"C{n},Cust,premium,c{n}@example.com,+1212555{n:04d},devicetoken{n:03d}{'x' * 40}\n"
        for n in range(1, count + 1)
    ]
    campaign.customers_path.write_text(HEADER + "".join(rows))


def listed(name: str, *numbers: int) -> list[SuppressedEmail]:
    """Customers' addresses on a SendGrid list, listed on LISTED (another case than theirs:
    SendGrid keeps addresses as they came)."""
    return [SuppressedEmail.parse(f"{name}:C{n}@Example.com:{LISTED}") for n in numbers]


def email_results(campaign, date: str = "2026-11-25") -> dict[str, dict]:
    path = campaign.root / "runs" / campaign.name / date / "email_results.csv"
    with path.open(newline="") as handle:
        return {row["customer_id"]: row for row in csv.DictReader(handle)}


def skipped(results: dict[str, dict]) -> dict[str, str]:
    return {c: r["error"] for c, r in results.items() if r["status"] == "skipped"}


def test_each_sendgrid_list_is_read_and_its_addresses_skipped_never_sent(campaign):
    customers(campaign, 8)
    seeded = [
        *listed("bounces", 1),
        *listed("blocks", 2),
        *listed("spam_reports", 3),
        *listed("invalid_emails", 4),
        *listed("unsubscribes", 5),
        *listed("group-42", 6),
        *listed("group-7", 7),  # another group's: not this campaign's concern
    ]
    sandbox = campaign.start_sandbox(suppressed_emails=seeded)
    campaign.configure(email_api={"asm_group_id": 42})

    dry = campaign.run("--dry-run", task="SendEmailCampaign")
    store_after_dry_run = (campaign.root / "consent.sqlite").exists()
    done = campaign.run(task="SendEmailCampaign")

    assert dry.returncode == 0, dry.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {
        "C1": f"suppressed: sendgrid bounces {LISTED}",
        "C2": f"suppressed: sendgrid blocks {LISTED}",
        "C3": f"suppressed: sendgrid spam reports {LISTED}",
        "C4": f"suppressed: sendgrid invalid emails {LISTED}",
        "C5": f"suppressed: sendgrid global unsubscribes {LISTED}",
    }
    results = email_results(campaign)
    group = skipped(results).pop("C6")
    assert group.startswith("suppressed: sendgrid group 42 unsubscribes ")  # the day first seen
    assert {c: e for c, e in skipped(results).items() if c != "C6"} == expected
    assert set(campaign.accepted("email")) == {"c7@example.com", "c8@example.com"}
    assert sandbox.stats()["email"]["dropped"] == 0
    preview = json.loads((campaign.folder / "dry-run" / "email_preview.json").read_text())
    shown = {e["customer_id"]: e["reason"] for e in preview["not_sent"]}
    assert {c: e for c, e in shown.items() if c != "C6"} == expected
    assert preview["counts"]["suppressed_by_source"] == {
        f"sendgrid {name}": 1
        for name in (
            "bounces",
            "blocks",
            "spam reports",
            "invalid emails",
            "global unsubscribes",
            "group 42 unsubscribes",
        )
    }
    assert not store_after_dry_run  # a dry run reads the lists, writes no store
    assert "sendgrid bounces: 1 entries" in done.stderr


def test_lists_are_read_page_by_page(campaign):
    customers(campaign, 9)
    sandbox = campaign.start_sandbox(suppressed_emails=listed("bounces", 1, 3, 5, 7, 9))
    campaign.configure(email_api={"suppression_page_size": 2})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    assert set(skipped(email_results(campaign))) == {"C1", "C3", "C5", "C7", "C9"}
    pages = sandbox.stats()["email"]["suppression_pages"]
    assert pages["bounces"] == 5  # 2 a page, overlapping by 1: the short page is the last
    assert pages["blocks"] == 1  # an empty first page ends at once


def test_a_refused_key_stops_the_channel_before_anything_is_sent(campaign, credentials):
    customers(campaign, 3)
    rule = ErrorRule("email", "^/v3/suppression/spam_reports$", 403)
    sandbox = campaign.start_sandbox(error_rules=[rule], echo_credentials=True)

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == RETCODE["task_failed"]
    assert sandbox.stats()["email"]["requests"] == 0  # not one mail/send
    assert "email channel stopped: email provider answered 403" in done.stderr
    assert "check $EMAIL_API_TOKEN ([email_api] token_env)" in done.stderr
    assert "set [email_api] sync_suppressions = false" in done.stderr
    assert "reading SendGrid's spam reports list before sending" in done.stderr
    assert "3 recipient(s) stay pending for the next run" in done.stderr
    assert "not retried" in done.stderr  # permanent: one attempt
    assert credentials["EMAIL_API_TOKEN"] not in done.stderr + done.stdout


def test_a_server_error_is_transient_and_nothing_is_sent(campaign):
    customers(campaign, 3)
    rule = ErrorRule("email", "^/v3/suppression/bounces$", 503)
    sandbox = campaign.start_sandbox(error_rules=[rule])
    campaign.configure(scheduler={"retry_count": 2, "retry_delay": 0.3})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == RETCODE["task_failed"]
    assert sandbox.stats()["email"]["requests"] == 0
    assert "ListUnavailableError: email channel stopped: email provider answered 503" in (
        done.stderr
    )
    assert "3 recipient(s) stay pending" in done.stderr
    assert sandbox.stats()["email"]["suppression_pages"].get("bounces", 0) == 0
    assert sandbox.stats()["email"]["other_statuses"]["503"] == 2  # luigi's retry read again
    assert not (campaign.folder / "email_results.csv").exists()


def test_without_sync_nothing_is_read_and_sendgrid_drops_the_listed_address(campaign):
    customers(campaign, 3)
    sandbox = campaign.start_sandbox(suppressed_emails=listed("bounces", 2))
    campaign.configure(email_api={"sync_suppressions": "false"})

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    assert sandbox.stats()["email"]["other_requests"] == 0
    assert skipped(email_results(campaign)) == {}
    assert sandbox.stats()["email"]["dropped"] == 1  # accepted, counted sent, never delivered


def test_an_address_taken_off_a_list_is_sent_again_at_the_next_run(campaign):
    customers(campaign, 3)
    sandbox = campaign.start_sandbox(suppressed_emails=listed("bounces", 1, 2))

    first = campaign.run(task="SendEmailCampaign")
    taken_off = requests.delete(
        f"{sandbox.base_url}/v3/suppression/bounces/C1@Example.com",
        headers={"Authorization": f"Bearer {campaign.credentials['EMAIL_API_TOKEN']}"},
        timeout=5,
    )
    second = campaign.run(task="SendEmailCampaign", date="2026-11-26")

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert taken_off.status_code == 204
    assert set(skipped(email_results(campaign))) == {"C1", "C2"}
    assert set(skipped(email_results(campaign, "2026-11-26"))) == {"C2"}
    assert campaign.accepted("email")["c1@example.com"] == 1
    with sqlite3.connect(campaign.root / "consent.sqlite") as db:
        rows = db.execute("SELECT contact, source, date FROM suppressions").fetchall()
    assert rows == [("c2@example.com", "sendgrid bounces", LISTED)]


def test_the_summary_names_each_consent_path(campaign):
    opted_out, retired = "+12125550003", "devicetoken004" + "x" * 40
    rows = [
        f"C{n},Cust,premium,c{n}@example.com,+1212555{n:04d},devicetoken{n:03d}{'x' * 40}\n"
        for n in range(1, 6)
    ]
    rows.append(f"C6,Again,premium,C5@EXAMPLE.com,(212) 555-0005,devicetoken005{'x' * 40}\n")
    campaign.customers_path.write_text(HEADER + "".join(rows))
    campaign.start_sandbox(
        suppressed_emails=listed("bounces", 2),
        opted_out=[opted_out],
        unregistered_tokens=[retired],
    )
    suppressions = campaign.root / "suppressions.csv"
    suppressions.write_text("channel,contact,customer_id\nall,,C1\n")
    campaign.configure(consent={"suppressions": str(suppressions)})

    done = campaign.run()
    report = subprocess.run(
        [str(Path(sys.executable).parent / "campaign-report"), "--date", "2026-11-25"],
        env=campaign.env(), capture_output=True, text=True, cwd=campaign.root,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    lines = report.stdout.splitlines()
    for line in (
        "email skipped: 2 suppressed, 1 duplicate contact",
        "email suppressed by: 1 file, 1 sendgrid bounces",
        "sms skipped: 1 duplicate contact, 1 suppressed",
        "sms suppressed by: 1 file",
        "sms refused for good, skipped from now on: 1 learned 21610",
        "push refused for good, skipped from now on: 1 learned UNREGISTERED",
    ):
        assert line in lines, report.stdout + report.stderr
    assert campaign.accepted("sms")[opted_out] == 0


def test_an_entry_a_changing_list_hid_from_one_page_is_never_removed_nor_mailed(campaign):
    customers(campaign, 6)
    campaign.start_sandbox(suppressed_emails=listed("bounces", 1, 2, 3, 4, 5))
    campaign.configure(email_api={"suppression_page_size": 3})
    first = campaign.run(task="SendEmailCampaign")
    # the next day C1 is taken off at SendGrid while the pipeline reads the list: by offset,
    # C4 moves from the second page into the first, read already
    sandbox = campaign.start_sandbox(
        suppressed_emails=listed("bounces", 1, 2, 3, 4, 5),
        removed_while_read=listed("bounces", 1),
    )

    second = campaign.run(task="SendEmailCampaign", date="2026-11-26")

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert set(skipped(email_results(campaign, "2026-11-26"))) == {"C2", "C3", "C4", "C5"}
    assert campaign.accepted("email") == {"c1@example.com": 1, "c6@example.com": 1}
    assert "bounces list changed while it was read; reading it again" in second.stderr
    assert sandbox.stats()["email"]["suppression_pages"]["bounces"] == 4  # 3+2, again 3+1
    with sqlite3.connect(campaign.root / "consent.sqlite") as db:
        kept = {contact for (contact,) in db.execute("SELECT contact FROM suppressions")}
    assert kept == {f"c{n}@example.com" for n in (2, 3, 4, 5)}


def test_a_resumed_run_in_another_group_applies_that_groups_entries_in_the_store(campaign):
    customers(campaign, 3)
    with ConsentStore(str(campaign.root / "consent.sqlite")) as store:  # an earlier campaign's
        store.mirror("email", {"sendgrid group 7 unsubscribes": [("c2@example.com", LISTED, "")]})
    failing = ErrorRule("email", "@", 503)  # every recipient, never a list's path
    campaign.start_sandbox(error_rules=[failing])
    campaign.configure(email_api={"asm_group_id": 42}, scheduler={"retry_count": 1})
    stopped = campaign.run(task="SendEmailCampaign")  # every recipient stays pending
    sandbox = campaign.start_sandbox(suppressed_emails=listed("group-7", 2))
    campaign.configure(email_api={"asm_group_id": 7})

    resumed = campaign.run(task="SendEmailCampaign")

    assert stopped.returncode == RETCODE["task_failed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert skipped(email_results(campaign)) == {
        "C2": f"suppressed: sendgrid group 7 unsubscribes {LISTED}"
    }
    assert set(campaign.accepted("email")) == {"c1@example.com", "c3@example.com"}
    assert sandbox.stats()["email"]["dropped"] == 0
