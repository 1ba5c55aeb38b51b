"""Consent through the luigi CLI against the sandbox: the suppression file, what the store
learns from the providers' answers, one message per person, and ``campaign-consent``."""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RETCODE, TASKS

from campaign_pipeline.sandbox import ErrorRule

HEADER = "customer_id,first_name,segment,email,phone,device_token\n"
CONSENT = str(Path(sys.executable).parent / "campaign-consent")


def token(n: int) -> str:
    return f"devicetoken{n:03d}" + "x" * 40


def line(n: int, email: str = "", phone: str = "", device: str = "") -> str:
    email = email or f"c{n}@example.com"
    phone = phone or f"+1212555{n:04d}"
    return f"C{n},Cust,premium,{email},{phone},{device or token(n)}\n"


def write_suppressions(campaign, text: str) -> Path:
    path = campaign.root / "suppressions.csv"
    path.write_text("channel,contact,customer_id\n" + text)
    campaign.configure(consent={"suppressions": str(path)})
    return path


def by_id(campaign, channel: str, folder: Path | None = None) -> dict[str, dict]:
    path = (folder or campaign.folder) / f"{channel}_results.csv"
    with path.open(newline="") as handle:
        return {row["customer_id"]: row for row in csv.DictReader(handle)}


def test_the_suppression_file_skips_by_contact_and_customer_id_in_dry_and_real_runs(campaign):
    campaign.customers_path.write_text(HEADER + "".join(line(n) for n in range(1, 7)))
    campaign.start_sandbox()
    path = write_suppressions(
        campaign,
        "# comments and blank lines are allowed\n"
        "\n"
        "email,C1@EXAMPLE.com,\n"  # another case of c1's address
        "sms,(212) 555-0002,\n"  # c2's number as the customer file might write it
        f"push,{token(3)},\n"
        "all,,C4\n"  # every channel
        "sms,,C5\n",  # one channel
    )

    dry = campaign.run("--dry-run")
    done = campaign.run()

    assert dry.returncode == 0, dry.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    where = f"suppressed: {path} line"
    expected = {
        "email": {"C1": f"{where} 4", "C4": f"{where} 7"},
        "sms": {"C2": f"{where} 5", "C4": f"{where} 7", "C5": f"{where} 8"},
        "push": {"C3": f"{where} 6", "C4": f"{where} 7"},
    }
    for channel, skipped in expected.items():
        results = by_id(campaign, channel)
        assert {c: r["error"] for c, r in results.items() if r["status"] == "skipped"} == skipped
        assert all(r["status"] == "sent" for c, r in results.items() if c not in skipped)
        sent = set(campaign.accepted(channel))
        assert sent == {r["recipient"] for c, r in results.items() if c not in skipped}, channel
        preview = json.loads((campaign.folder / "dry-run" / f"{channel}_preview.json").read_text())
        assert preview["counts"]["by_status"] == {
            "would_send": 6 - len(skipped),
            "skipped": len(skipped),
        }
        assert {e["customer_id"]: e["reason"] for e in preview["not_sent"]} == skipped
    report = subprocess.run(
        [str(Path(sys.executable).parent / "campaign-report"), "--date", "2026-11-25"],
        env=campaign.env(), capture_output=True, text=True, cwd=campaign.root,
    )  # fmt: skip
    assert "sms skipped: 3 suppressed" in report.stdout, report.stdout + report.stderr


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("sms,+12125550001,C1\n", "line 2: both of contact and customer_id"),
        ("email,,C1\nfax,+12125550001,\n", "line 3: unknown channel 'fax'"),
    ],
)
def test_a_malformed_suppression_file_fails_before_anything_is_sent(campaign, rows, problem):
    campaign.customers_path.write_text(HEADER + "".join(line(n) for n in range(1, 4)))
    sandbox = campaign.start_sandbox()
    path = write_suppressions(campaign, rows)

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"]
    assert f"suppression file {path} {problem}" in done.stderr
    assert sum(sandbox.stats()[c]["requests"] for c in ("email", "sms", "push")) == 0
    assert "SuppressionFileError" in done.stderr


@pytest.mark.parametrize(
    "kind, problem",
    [("a folder", "cannot be opened:"), ("not sqlite", "not an SQLite database; left as it is")],
)
def test_a_consent_store_that_cannot_be_opened_fails_before_anything_is_sent(
    campaign, kind, problem
):
    campaign.customers_path.write_text(HEADER + "".join(line(n) for n in range(1, 4)))
    sandbox = campaign.start_sandbox()
    store = campaign.root / "store.sqlite"
    if kind == "a folder":
        store.mkdir()
    else:
        store.write_text("opt-outs,kept in a spreadsheet\n" * 10)
    campaign.configure(consent={"store": str(store)})

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"]
    assert f"consent store {store} ([consent] store): {problem}" in done.stderr
    assert sum(sandbox.stats()[c]["requests"] for c in ("email", "sms", "push")) == 0
    assert "ConsentStoreError" in done.stderr


def test_provider_refusals_are_learned_and_skipped_by_the_next_campaign(campaign):
    customers = [line(1), line(2), line(3, device="unregistered" + "x" * 40)]
    campaign.customers_path.write_text(HEADER + "".join(customers))
    campaign.start_sandbox(error_rules=[ErrorRule("sms", r"^\+12125550002$", 400, "21610")])

    first = campaign.run()
    second = campaign.run("--campaign", "next")

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert by_id(campaign, "sms")["C2"]["status"] == "failed"
    assert by_id(campaign, "push")["C3"]["status"] == "failed"
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    later = campaign.root / "runs" / "next" / "2026-11-25"
    sms, push = by_id(campaign, "sms", later), by_id(campaign, "push", later)
    assert sms["C2"]["status"] == push["C3"]["status"] == "skipped"
    assert sms["C2"]["error"] == f"suppressed: learned {today} campaign test (sms 21610)"
    assert push["C3"]["error"] == f"suppressed: learned {today} campaign test (push UNREGISTERED)"
    assert campaign.accepted("sms")["+12125550002"] == 0
    assert sms["C1"]["status"] == push["C1"]["status"] == "sent"
    listed = consent(campaign, "list", "--channel", "sms")
    assert "+12125550002" in listed.stdout and "21610" in listed.stdout
    assert token(1) not in consent(campaign, "list", "--channel", "push").stdout


def test_one_message_per_person(campaign):
    customers = [
        line(1, email="ann@example.com", phone="+12125550100"),
        line(2, email="ANN@example.com", phone="(212) 555-0100", device=token(1)),
        line(3, email="bob@example.com"),
        line(4, email="ann@EXAMPLE.COM"),
    ]
    campaign.customers_path.write_text(HEADER + "".join(customers))
    campaign.start_sandbox()

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    email, sms, push = (by_id(campaign, c) for c in ("email", "sms", "push"))
    assert [email[c]["status"] for c in ("C1", "C2", "C3", "C4")] == [
        "sent",
        "skipped",
        "sent",
        "skipped",
    ]
    assert email["C2"]["error"] == email["C4"]["error"] == "duplicate contact of C1"
    assert (sms["C2"]["status"], sms["C2"]["error"]) == ("skipped", "duplicate contact of C1")
    assert (push["C2"]["status"], push["C2"]["error"]) == ("skipped", "duplicate contact of C1")
    assert max(campaign.accepted("email").values()) == 1
    assert max(campaign.accepted("sms").values()) == 1


def test_a_duplicate_of_a_customer_sent_earlier_is_skipped_wherever_it_stands(campaign):
    campaign.customers_path.write_text(HEADER + line(1) + line(2))
    campaign.start_sandbox()
    first = campaign.run(task=TASKS["email"])
    # the file is edited: C0, new and first in the file, has C2's address in another case
    campaign.customers_path.write_text(HEADER + line(0, email="C2@example.com") + line(1) + line(2))

    second = campaign.run(task=TASKS["email"])

    assert first.returncode == second.returncode == 0, second.stderr[-3000:]
    results = by_id(campaign, "email")
    assert (results["C0"]["status"], results["C0"]["error"]) == (
        "skipped",
        "duplicate contact of C2",
    )
    assert campaign.accepted("email") == {"c1@example.com": 1, "c2@example.com": 1}


def test_an_edited_suppression_file_is_followed_by_the_next_run(campaign):
    campaign.customers_path.write_text(HEADER + "".join(line(n) for n in range(1, 4)))
    # C2's number fails transiently in the first run: still pending when it ends
    rule = ErrorRule("sms", r"^\+12125550002$", 503, "20503", times=2)
    campaign.start_sandbox(error_rules=[rule])
    write_suppressions(campaign, "sms,,C3\n")

    first = campaign.run(task=TASKS["sms"])
    write_suppressions(campaign, "sms,,C2\n")  # C2 opted out meanwhile; C3 opted in again
    second = campaign.run(task=TASKS["sms"])

    assert first.returncode == RETCODE["task_failed"]
    assert second.returncode == 0, second.stderr[-3000:]
    results = by_id(campaign, "sms")
    assert results["C2"]["status"] == "skipped" and results["C2"]["error"].startswith(
        "suppressed: "
    )
    assert results["C3"]["status"] == "sent"
    assert campaign.accepted("sms") == {"+12125550001": 1, "+12125550003": 1}


def test_a_resumed_channel_applies_what_the_store_learned_since_and_rechecks_after_a_removal(
    campaign,
):
    campaign.customers_path.write_text(HEADER + "".join(line(n) for n in range(1, 5)))
    # C2 fails transiently in the first run, C4 in the first two: the channel stays unfinished
    rules = [
        ErrorRule("sms", r"^\+12125550002$", 503, "20503", times=2),
        ErrorRule("sms", r"^\+12125550004$", 503, "20503", times=4),
    ]
    campaign.start_sandbox(error_rules=rules)
    campaign.configure(consent={"store": str(campaign.root / "consent.sqlite")})
    optouts = campaign.root / "optouts.csv"
    optouts.write_text("channel,contact,customer_id\nsms,,C3\n")
    assert consent(campaign, "import", str(optouts)).returncode == 0

    first = campaign.run(task=TASKS["sms"])
    optouts.write_text("channel,contact,customer_id\nsms,(212) 555-0002,\n")  # C2 opts out
    assert consent(campaign, "import", str(optouts)).returncode == 0
    second = campaign.run(task=TASKS["sms"])
    with contextlib.closing(sqlite3.connect(campaign.folder / "sms_ledger.sqlite")) as db:
        query = "SELECT customer_id, status, error FROM deliveries"
        after_second = {c: {"status": s, "error": e} for c, s, e in db.execute(query)}
    assert consent(campaign, "remove", "--channel", "sms", "--customer-id", "C3").returncode == 0
    third = campaign.run(task=TASKS["sms"])

    assert first.returncode == second.returncode == RETCODE["task_failed"]
    assert third.returncode == 0, third.stderr[-3000:]
    assert "1 consent store entry added since the last run applied" in second.stderr
    assert after_second["C2"]["status"] == "skipped"
    assert after_second["C2"]["error"].startswith("suppressed: imported ")
    assert after_second["C3"]["error"].startswith("suppressed: imported ")
    results = by_id(campaign, "sms")
    assert {c: r["status"] for c, r in results.items()} == {
        "C1": "sent",
        "C2": "skipped",
        "C3": "sent",  # no longer suppressed: every unsent recipient was checked again
        "C4": "sent",
    }
    assert campaign.accepted("sms") == {"+12125550001": 1, "+12125550003": 1, "+12125550004": 1}


def consent(campaign, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CONSENT, *args], env=campaign.env(), capture_output=True, text=True, timeout=30,
        cwd=campaign.root,
    )  # fmt: skip


def test_campaign_consent_imports_lists_exports_and_removes(campaign):
    store = campaign.root / "consent.sqlite"
    campaign.configure(consent={"store": str(store)})
    given = campaign.root / "given.csv"
    given.write_text(
        "channel,contact,customer_id\nsms,(212) 555-0100,\nall,,C9\nemail,Ann@Example.com,\n"
    )
    bad = campaign.root / "bad.csv"
    bad.write_text("channel,contact,customer_id\nemail,x@example.com,\nsms,not a number,\n")

    imported = consent(campaign, "import", str(given))
    refused = consent(campaign, "import", str(bad))
    listed = consent(campaign, "list")
    exported = consent(campaign, "export", "--channel", "sms")
    removed = consent(campaign, "remove", "--channel", "sms", "--contact", "212-555-0100")
    again = consent(campaign, "remove", "--channel", "sms", "--contact", "212-555-0100")
    usage = consent(campaign, "remove", "--channel", "sms")
    to_file = consent(campaign, "export", "--output", str(campaign.root / "out.csv"))

    assert imported.returncode == 0, imported.stderr
    assert "imported 3 entries" in imported.stdout
    assert refused.returncode == 1
    (refusal,) = refused.stderr.strip().splitlines()  # one line
    assert refusal.startswith(f"campaign-consent: error: file {bad} line 3: invalid contact: ")
    assert "'not a number'" in refusal
    assert "x@example.com" not in listed.stdout  # nothing of a refused file is stored
    assert "+12125550100" in listed.stdout and "ann@example.com" in listed.stdout
    rows = list(csv.DictReader(exported.stdout.splitlines()))
    assert [(r["channel"], r["contact"], r["customer_id"]) for r in rows] == [
        ("sms", "+12125550100", ""),
        ("all", "", "C9"),
    ]
    assert rows[0]["source"] == f"import {given} line 2"
    assert removed.returncode == 0 and "removed 1 entry" in removed.stdout
    assert again.returncode == 1 and "no sms entry" in again.stderr
    assert usage.returncode == 2 and "--contact" in usage.stderr
    assert to_file.returncode == 0
    written = list(csv.DictReader((campaign.root / "out.csv").read_text().splitlines()))
    assert [r["contact"] or r["customer_id"] for r in written] == ["C9", "ann@example.com"]
