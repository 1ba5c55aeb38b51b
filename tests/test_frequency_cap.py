"""The frequency cap through the luigi CLI against the sandbox: later campaigns skip the
contacts at the cap, the window, failed sends, dry runs, and two campaigns at once."""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import TASKS, kill_group, wait_for

from campaign_pipeline.consent import ConsentStore
from campaign_pipeline.consent.cap import timestamp
from campaign_pipeline.sandbox import ErrorRule

HEADER = "customer_id,first_name,segment,email,phone,device_token\n"
BIN = Path(sys.executable).parent


def line(n: int) -> str:
    return f"C{n},Cust,premium,c{n}@example.com,+1212555{n:04d},devicetoken{n:03d}{'x' * 40}\n"


def customers(campaign, numbers) -> None:
    campaign.customers_path.write_text(HEADER + "".join(line(n) for n in numbers))


def results(campaign, name: str, channel: str = "email", dry: bool = False) -> dict[str, dict]:
    folder = campaign.root / "runs" / name / "2026-11-25"
    if dry:
        preview = json.loads((folder / "dry-run" / f"{channel}_preview.json").read_text())
        return {row["customer_id"]: row for row in preview["not_sent"]}
    with (folder / f"{channel}_results.csv").open(newline="") as handle:
        return {row["customer_id"]: row for row in csv.DictReader(handle)}


def capped(rows: dict[str, dict], reason: str) -> list[str]:
    return sorted(c for c, r in rows.items() if r.get("error", r.get("reason")) == reason)


def test_a_later_campaign_skips_contacts_at_the_cap_in_results_preview_report_and_status(
    campaign,
):
    """Cap 1: the three customers the first campaign messaged are skipped by the second,
    in its dry run too; the two new ones are sent."""
    customers(campaign, range(1, 4))
    campaign.start_sandbox()
    campaign.configure(consent={"frequency_cap": 1, "frequency_window_days": 7})
    first = campaign.run("--campaign", "first", task=TASKS["sms"])
    customers(campaign, range(1, 6))  # two more customers, never messaged

    dry = campaign.run("--campaign", "second", "--dry-run", task=TASKS["sms"])
    second = campaign.run("--campaign", "second", task=TASKS["sms"])

    assert first.returncode == dry.returncode == second.returncode == 0, second.stderr[-3000:]
    reason = "frequency cap: 1 in 7 days"
    later = results(campaign, "second", "sms")
    assert capped(later, reason) == ["C1", "C2", "C3"]
    assert {later[c]["status"] for c in ("C1", "C2", "C3")} == {"skipped"}
    assert {later[c]["status"] for c in ("C4", "C5")} == {"sent"}
    assert capped(results(campaign, "second", "sms", dry=True), reason) == ["C1", "C2", "C3"]
    assert campaign.accepted("sms") == {f"+1212555{n:04d}": 1 for n in range(1, 6)}
    # the status message, as the log repeats it; the progress counts the capped as done
    assert "sms results: 2 sent · 3 skipped (skipped: 3 frequency cap)" in second.stderr
    assert "sms progress: 2 / 2 sent · 0 failed" in second.stderr
    assert "(skipped: 3 frequency cap)" in dry.stderr
    report = subprocess.run(
        [str(BIN / "campaign-report"), "--date", "2026-11-25", "--campaign", "second"],
        env=campaign.env(), capture_output=True, text=True, cwd=campaign.root,
    )  # fmt: skip
    assert "sms skipped: 3 frequency cap" in report.stdout, report.stdout + report.stderr


def test_messages_older_than_the_window_do_not_count_and_a_raised_cap_is_followed(campaign):
    customers(campaign, range(1, 4))
    campaign.start_sandbox()
    campaign.configure(consent={"frequency_cap": 2, "frequency_window_days": 3})
    now = datetime.datetime.now(datetime.UTC)

    def at(days: float) -> str:
        return timestamp(now - datetime.timedelta(days=days))

    with ConsentStore(str(campaign.root / "consent.sqlite")) as store:
        store.reserve([
            ("email", "c1@example.com", "C1", "old", "2026-11-01", at(3.1)),  # out of the window
            ("email", "c1@example.com", "C1", "old", "2026-11-01", at(2.9)),
            ("email", "c2@example.com", "C2", "old", "2026-11-01", at(2.9)),  # two within it
            ("email", "c2@example.com", "C2", "old", "2026-11-01", at(0.5)),
            ("sms", "c3@example.com", "C3", "old", "2026-11-01", at(0.5)),  # another channel
            ("sms", "c3@example.com", "C3", "old", "2026-11-01", at(0.5)),
        ])  # fmt: skip

    done = campaign.run(task=TASKS["email"])

    assert done.returncode == 0, done.stderr[-3000:]
    rows = results(campaign, "test")
    assert {c: r["status"] for c, r in rows.items()} == {
        "C1": "sent",
        "C2": "skipped",
        "C3": "sent",
    }
    assert rows["C2"]["error"] == "frequency cap: 2 in 3 days"
    assert set(campaign.accepted("email")) == {"c1@example.com", "c3@example.com"}

    campaign.configure(consent={"frequency_cap": 3})  # raised: C2 is under it now
    again = campaign.run(task=TASKS["email"])

    assert again.returncode == 0, again.stderr[-3000:]
    assert {r["status"] for r in results(campaign, "test").values()} == {"sent"}
    assert campaign.accepted("email") == {f"c{n}@example.com": 1 for n in (1, 2, 3)}


def test_a_failed_send_does_not_count(campaign):
    customers(campaign, range(1, 4))
    # C2's number is refused for good (21211, not suppressed), C3's fails transiently twice
    # (the run ends with it pending)
    campaign.start_sandbox(error_rules=[
        ErrorRule("sms", r"^\+12125550002$", 400, "21211"),
        ErrorRule("sms", r"^\+12125550003$", 503, "20503", times=2),
    ])  # fmt: skip
    campaign.configure(consent={"frequency_cap": 1})
    first = campaign.run("--campaign", "first", task=TASKS["sms"])

    second = campaign.run("--campaign", "second", task=TASKS["sms"])

    assert first.returncode != 0, "C3 still pending: the run failed"
    assert second.returncode == 0, second.stderr[-3000:]
    ledger = campaign.root / "runs" / "first" / "2026-11-25" / "sms_ledger.sqlite"
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        earlier = dict(db.execute("SELECT customer_id, status FROM deliveries"))
    assert earlier == {"C1": "sent", "C2": "failed", "C3": "pending"}
    later = results(campaign, "second", "sms")
    assert {c: r["status"] for c, r in later.items()} == {
        "C1": "skipped",
        "C2": "failed",  # refused again: it never counted
        "C3": "sent",  # never delivered by the first: it did not count
    }
    with ConsentStore(str(campaign.root / "consent.sqlite")) as store:
        kept = [(m["campaign"], m["customer_id"]) for m in store.history("sms")]
    assert kept == [("first", "C1"), ("second", "C3")]


def test_two_campaigns_at_once_never_both_pass_the_cap(campaign):
    customers(campaign, range(1, 13))
    campaign.start_sandbox()
    campaign.configure(consent={"frequency_cap": 1})
    names = ("spring", "autumn")

    runs = [
        subprocess.Popen(
            campaign.command("--campaign", name, task=TASKS["email"]), env=campaign.env(),
            cwd=campaign.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for name in names
    ]  # fmt: skip
    errors = [run.communicate(timeout=120)[1] for run in runs]

    assert [run.returncode for run in runs] == [0, 0], errors
    accepted = campaign.accepted("email")
    assert accepted == {f"c{n}@example.com": 1 for n in range(1, 13)}, "one each, across both"
    reason = "frequency cap: 1 in 7 days"
    sent, skipped = {}, {}
    for name in names:
        for customer, row in results(campaign, name).items():
            target = sent if row["status"] == "sent" else skipped
            target.setdefault(customer, []).append(name)
            if row["status"] == "skipped":
                assert row["error"] == reason
    assert set(sent) == set(skipped) == {f"C{n}" for n in range(1, 13)}
    assert all(len(found) == 1 for found in sent.values())


def test_a_killed_run_leaves_reservations_that_count_until_its_next_run_reuses_them(campaign):
    customers(campaign, range(1, 13))
    campaign.start_sandbox(latency_ms=100)
    campaign.configure(
        consent={"frequency_cap": 1},
        sms_api={"rate_per_second": 5, "burst": 3, "concurrency": 1},
    )
    running = campaign.start("--campaign", "spring", task=TASKS["sms"])
    wait_for(lambda: campaign.sandbox.stats()["sms"]["accepted"] >= 2, 60, "the first SMS")
    kill_group(running)  # all twelve were admitted (one page) and reserved
    before = campaign.accepted("sms")

    other = campaign.run("--campaign", "autumn", task=TASKS["sms"])
    resumed = campaign.run("--campaign", "spring", task=TASKS["sms"])

    assert other.returncode == resumed.returncode == 0, resumed.stderr[-3000:]
    reason = "frequency cap: 1 in 7 days"
    everyone = sorted(f"C{n}" for n in range(1, 13))
    assert capped(results(campaign, "autumn", "sms"), reason) == everyone, "sent or reserved"
    spring = results(campaign, "spring", "sms")
    unknown = {c for c, r in spring.items() if r["status"] == "unknown"}  # in flight at the kill
    assert {r["status"] for c, r in spring.items() if c not in unknown} == {"sent"}
    assert len(unknown) <= 1 and len(before) >= 2
    accepted = campaign.accepted("sms")
    assert set(accepted.values()) == {1}, "nobody twice"
    assert len(accepted) >= 12 - len(unknown)
    with ConsentStore(str(campaign.root / "consent.sqlite")) as store:
        kept = [m["customer_id"] for m in store.history("sms")]
    assert sorted(kept) == everyone, "each reservation reused, none twice"


def consent(campaign, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "campaign-consent"), *args], env=campaign.env(), capture_output=True,
        text=True, timeout=30, cwd=campaign.root,
    )  # fmt: skip


def test_campaign_consent_shows_a_contacts_recent_messages_and_prunes_old_ones(campaign):
    store_path = campaign.root / "consent.sqlite"
    campaign.configure(consent={"store": str(store_path)})
    now = datetime.datetime.now(datetime.UTC)

    def at(days: float) -> str:
        return timestamp(now - datetime.timedelta(days=days))

    with ConsentStore(str(store_path)) as store:
        store.reserve([
            ("sms", "+12125550100", "C1", "spring", "2026-11-20", at(5)),
            ("sms", "+12125550100", "C1", "winter", "2026-10-01", at(50)),
            ("email", "ann@example.com", "C1", "spring", "2026-11-20", at(5)),
            ("sms", "+12125550199", "C9", "spring", "2026-11-20", at(1)),
        ])  # fmt: skip

    recent = consent(campaign, "history", "--contact", "(212) 555-0100")
    longer = consent(campaign, "history", "--contact", "(212) 555-0100", "--days", "60")
    pruned = consent(campaign, "prune", "--older-than", "30")

    assert recent.returncode == 0, recent.stderr
    rows = list(csv.DictReader(recent.stdout.splitlines()))
    assert [(r["channel"], r["campaign"], r["sent_at"]) for r in rows] == [("sms", "spring", at(5))]
    assert [r["campaign"] for r in csv.DictReader(longer.stdout.splitlines())] == [
        "winter",
        "spring",
    ]
    assert pruned.returncode == 0 and "pruned 1 message(s)" in pruned.stdout
    with ConsentStore(str(store_path)) as store:
        assert [m["campaign"] for m in store.history("sms")] == ["spring", "spring"]


def test_imported_history_counts_toward_the_cap_once_however_often_it_is_imported(campaign):
    """A history exported by another tool: contacts written as the customer file may write
    them, a time without a zone read as UTC. Imported twice, it counts once."""
    customers(campaign, range(1, 4))
    campaign.start_sandbox()  # the harness's settings, its consent store among them
    campaign.configure(consent={"frequency_cap": 1, "frequency_window_days": 7})
    yesterday = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)).date()
    history = campaign.root / "history.csv"
    history.write_text(
        "channel,contact,customer_id,campaign,sent_at\n"
        f"sms,(212) 555-0001,C1,autumn,{yesterday}T10:00:00\n"
        f"SMS,+1 212 555 0002,,autumn,{yesterday}T11:00:00+02:00\n"
        f"email,C3@Example.com,C3,autumn,{yesterday}T10:00:00Z\n"
    )

    imported = [consent(campaign, "import-history", str(history)) for _ in range(2)]
    run = campaign.run("--campaign", "later", task=TASKS["sms"])

    assert [i.returncode for i in imported] == [0, 0], imported[0].stderr
    assert "imported 3 messages" in imported[0].stdout
    assert "imported 0 messages" in imported[1].stdout and "3 already there" in imported[1].stdout
    assert run.returncode == 0, run.stderr[-3000:]
    assert capped(results(campaign, "later", "sms"), "frequency cap: 1 in 7 days") == ["C1", "C2"]
    assert campaign.accepted("sms") == {"+12125550003": 1}
    with ConsentStore(str(campaign.root / "consent.sqlite")) as store:
        sent = {(m["channel"], m["contact"], m["sent_at"]) for m in store.history()}
    assert ("sms", "+12125550002", f"{yesterday}T09:00:00.000+00:00") in sent
    assert ("email", "c3@example.com", f"{yesterday}T10:00:00.000+00:00") in sent


def test_a_history_file_that_cannot_be_used_names_its_line_and_imports_nothing(campaign):
    history = campaign.root / "history.csv"
    history.write_text(
        "channel,contact,campaign,sent_at\n"
        "sms,+12125550001,autumn,2026-11-24T10:00:00Z\n"
        "sms,+12125550002,autumn,last tuesday\n"
    )

    failed = consent(campaign, "import-history", str(history))
    listed = consent(campaign, "history", "--contact", "+12125550001", "--days", "3650")

    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1:] == [
        f"campaign-consent: error: history file {history} line 3: sent_at 'last tuesday' is "
        "not an ISO 8601 time (2026-11-24T10:00:00Z)"
    ]
    assert listed.stdout.strip().splitlines()[1:] == [], "nothing imported"
