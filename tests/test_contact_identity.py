"""One person, one opt-out, through the luigi CLI against the sandbox: an internationalised
address in any spelling (the customer file's, the suppression file's, SendGrid's lists', a
store of the previous version), and a customer-id suppression that bars the person's
contact under any other id."""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qs, urlsplit

from campaign_pipeline.config import email_api
from campaign_pipeline.consent import ConsentStore, Entry
from campaign_pipeline.sandbox.sendgrid import SuppressedEmail
from campaign_pipeline.unsubscribe import UnsubscribeKeys

HEADER = "customer_id,first_name,segment,email,phone,device_token\n"
LISTED = "2026-11-20"


def write_customers(campaign, emails: dict[str, str]) -> None:
    rows = [
        f"{cid},Cust,premium,{email},+1212555{n:04d},devicetoken{n:03d}{'x' * 40}\n"
        for n, (cid, email) in enumerate(emails.items(), start=1)
    ]
    campaign.customers_path.write_text(HEADER + "".join(rows), encoding="utf-8")


def email_results(campaign) -> dict[str, tuple[str, str]]:
    with (campaign.folder / "email_results.csv").open(newline="", encoding="utf-8") as handle:
        return {r["customer_id"]: (r["status"], r["error"]) for r in csv.DictReader(handle)}


def previous_version_store(path, contact: str) -> None:
    """A consent store as the previous version left it: schema 2, a learned entry keyed with
    the Unicode domain the loader gave."""
    ConsentStore(str(path)).close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        db.execute(
            "INSERT INTO suppressions (channel, contact, source, date, campaign, code)"
            " VALUES ('email', ?, 'learned', '2026-11-01', 'autumn', '')",
            (contact,),
        )


def test_an_internationalised_address_is_one_person_in_every_spelling(campaign):
    write_customers(
        campaign,
        {
            "C1": "Bob@Müller.example",  # SendGrid lists bob@xn--mller-kva.example
            "C2": "eve@xn--mller-kva.example",  # spelled as SendGrid lists it
            "C3": "cy@bücher.example",
            "C4": "CY@XN--BCHER-KVA.example",  # C3 again
            "C5": "dee@xn--bcher-kva.example",  # the suppression file spells it in Unicode
            "C6": "fay@xn--mller-kva.example",  # the old store keyed it in Unicode
            "C7": "gil@example.com",
        },
    )
    seeded = [
        SuppressedEmail.parse(f"bounces:bob@xn--mller-kva.example:{LISTED}"),
        SuppressedEmail.parse(f"unsubscribes:Eve@xn--mller-kva.example:{LISTED}"),
    ]
    sandbox = campaign.start_sandbox(suppressed_emails=seeded)
    suppressions = campaign.root / "suppressions.csv"
    suppressions.write_text("channel,contact,customer_id\nemail,Dee@Bücher.example,\n")
    campaign.configure(consent={"suppressions": str(suppressions)})
    previous_version_store(campaign.root / "consent.sqlite", "fay@müller.example")

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    results = email_results(campaign)
    assert results == {
        "C1": ("skipped", f"suppressed: sendgrid bounces {LISTED}"),
        "C2": ("skipped", f"suppressed: sendgrid global unsubscribes {LISTED}"),
        "C3": ("sent", ""),
        "C4": ("skipped", "duplicate contact of C3"),
        "C5": ("skipped", f"suppressed: {suppressions} line 2"),
        "C6": ("skipped", "suppressed: learned 2026-11-01 campaign autumn (email )"),
        "C7": ("sent", ""),
    }
    # sent in the form SendGrid takes, and nothing SendGrid would have dropped
    assert campaign.accepted("email") == {"cy@xn--bcher-kva.example": 1, "gil@example.com": 1}
    assert sandbox.stats()["email"]["dropped"] == 0


def test_a_customer_id_suppression_bars_the_persons_contact_under_every_other_id(campaign):
    rows = [
        ("C1", "regular", "bob@example.com"),  # not targeted, opted out by id
        ("C2", "premium", "Bob@Example.com"),
        ("C3", "premium", "ann@example.com"),  # opted out by id through the store
        ("C4", "premium", "ANN@example.com"),
        ("C5", "premium", "cy@example.com"),
    ]
    campaign.customers_path.write_text(
        HEADER + "".join(f"{c},Cust,{s},{e},,\n" for c, s, e in rows), encoding="utf-8"
    )
    campaign.start_sandbox()
    suppressions = campaign.root / "suppressions.csv"
    suppressions.write_text("channel,contact,customer_id\nall,,C1\n")
    campaign.configure(
        consent={"suppressions": str(suppressions)},
        SendEmailCampaign={"target_segments": ["premium"]},
    )
    with ConsentStore(str(campaign.root / "consent.sqlite")) as store:
        store.add([Entry("email", customer_id="C3", source="optouts.csv line 2")], "import")

    done = campaign.run(task="SendEmailCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    results = email_results(campaign)
    imported = results["C3"][1]
    assert imported.startswith("suppressed: imported ") and imported.endswith(" optouts.csv line 2")
    assert results == {
        "C2": ("skipped", f"suppressed: {suppressions} line 2 (the contact of customer C1)"),
        "C3": ("skipped", imported),
        "C4": ("skipped", f"{imported} (the contact of customer C3)"),
        "C5": ("sent", ""),
    }
    assert campaign.accepted("email") == {"cy@example.com": 1}


URL = "https://unsubscribe.shop.test/u?c={campaign}&id={customer_id}&to={contact}&t={token}"


def links(campaign) -> list[tuple[str, dict[str, str]]]:
    """Each email the sandbox accepted, in order: its customer and its unsubscribe link's
    query values."""
    found = []
    for message in campaign.sandbox.accepted():
        if message["channel"] == "email":
            link = message["request"]["headers"]["List-Unsubscribe"].strip("<>")
            query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
            found.append((message["customer_id"], query))
    return found


def test_links_sent_before_a_key_rotation_still_unsubscribe_the_address_they_went_to(campaign):
    write_customers(campaign, {"C1": "bob@müller.example", "C2": "ann@example.com"})
    campaign.start_sandbox()
    campaign.configure(email_api={"unsubscribe_url": URL})
    old_key, new_key = campaign.credentials["UNSUBSCRIBE_KEY"], secrets.token_hex(32)

    first = campaign.run(task="SendEmailCampaign")
    sent_before = dict(links(campaign))
    rotated = {"unsubscribe_key_id": "2", "unsubscribe_old_key_envs": "1:UNSUBSCRIBE_KEY_1"}
    campaign.configure(email_api=rotated)
    env = campaign.env(UNSUBSCRIBE_KEY=new_key, UNSUBSCRIBE_KEY_1=old_key)
    second = campaign.run(task="SendEmailCampaign", date="2026-11-26", env=env)

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert {link["t"][:2] for link in sent_before.values()} == {"1."}
    sent_after = dict(links(campaign)[len(sent_before) :])
    assert set(sent_after) == {"C1", "C2"}
    assert {link["t"][:2] for link in sent_after.values()} == {"2."}
    # the endpoint's keys, as the rotated settings name them
    with mock.patch.dict(os.environ, {"UNSUBSCRIBE_KEY": new_key, "UNSUBSCRIBE_KEY_1": old_key}):
        ring = UnsubscribeKeys.from_settings(email_api(**rotated))
    for link in [*sent_before.values(), *sent_after.values()]:
        assert ring.verify(link["id"], link["c"], link["t"], link["to"])
    assert not UnsubscribeKeys(new_key, "2").verify("C1", "test", sent_before["C1"]["t"],
                                                    sent_before["C1"]["to"])  # fmt: skip
    assert sent_before["C1"]["to"] == "bob@xn--mller-kva.example"  # the address it went to
    for done in (first, second):
        assert old_key not in done.stderr + done.stdout and new_key not in done.stderr

    # the endpoint records the address of a link sent before the rotation: the same person
    # under another id is not mailed
    optouts = campaign.root / "optouts.csv"
    optouts.write_text(f"channel,contact,customer_id\nemail,{sent_before['C1']['to']},\n")
    imported = subprocess.run(
        [str(Path(sys.executable).parent / "campaign-consent"), "import", str(optouts)],
        env=env, capture_output=True, text=True, timeout=60, cwd=campaign.root,
    )  # fmt: skip
    write_customers(campaign, {"C9": "BOB@Müller.example", "C2": "ann@example.com"})
    third = campaign.run(task="SendEmailCampaign", date="2026-11-27", env=env)

    assert imported.returncode == 0, imported.stderr
    assert third.returncode == 0, third.stderr[-3000:]
    with (campaign.root / "runs" / "test" / "2026-11-27" / "email_results.csv").open() as f:
        results = {r["customer_id"]: (r["status"], r["error"]) for r in csv.DictReader(f)}
    assert results["C9"][0] == "skipped" and results["C9"][1].startswith("suppressed: imported")
    assert results["C2"] == ("sent", "")
