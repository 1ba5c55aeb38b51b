"""The frequency cap and the store's message history, on temporary files: no luigi run."""

from __future__ import annotations

import datetime
import multiprocessing
import sqlite3

import pytest

from campaign_pipeline.consent import ConsentStore
from campaign_pipeline.consent.cap import OPEN_NOTE, FrequencyCap, timestamp
from campaign_pipeline.ledger import PENDING, Ledger, Status

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
REASON = "frequency cap: 2 in 7 days"


def ago(days: float) -> str:
    return timestamp(NOW - datetime.timedelta(days=days))


@pytest.fixture
def store(tmp_path):
    opened = ConsentStore(str(tmp_path / "consent.sqlite"))
    yield opened
    opened.close()


def ledger_of(path, recipients: list[str]) -> Ledger:
    """A ledger whose customers C0, C1, ... have *recipients*, all pending."""
    ledger = Ledger(str(path))
    rows = [
        {"customer_id": f"C{n}", "targeted": True, "segment": "new", "recipient": recipient,
         "status": PENDING, "context": {}}
        for n, recipient in enumerate(recipients)
    ]  # fmt: skip
    ledger.follow(rows, "v1")
    return ledger


def history(store: ConsentStore, contact: str, *days_ago: float, channel: str = "email") -> None:
    """*contact* got a message of an earlier campaign *days_ago* each."""
    store.reserve(
        [(channel, contact, "X1", "earlier", "2026-11-01", ago(days)) for days in days_ago]
    )


def cap_of(store, ledger, cap=2, days=7, campaign="spring", column="email") -> FrequencyCap:
    return FrequencyCap(store, ledger, "email", column, campaign, "2026-11-25", cap, days,
                        clock=lambda: NOW)  # fmt: skip


def test_the_messages_table_is_the_shared_schema(store):
    columns = [(row[1], row[2], row[3], row[5]) for row in store._db.execute(
        "PRAGMA table_info(messages)")]  # fmt: skip
    assert columns == [
        ("id", "INTEGER", 0, 1),
        ("channel", "TEXT", 1, 0),
        ("contact", "TEXT", 1, 0),
        ("customer_id", "TEXT", 1, 0),
        ("campaign", "TEXT", 1, 0),
        ("date", "TEXT", 1, 0),
        ("sent_at", "TEXT", 1, 0),
    ]
    index = [row[2] for row in store._db.execute("PRAGMA index_info(messages_by_contact)")]
    assert index == ["channel", "contact", "sent_at"]


def test_a_store_of_the_first_version_gains_the_messages_table(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    with ConsentStore(str(path)) as store:
        assert store.history() == []
        version = store._db.execute("SELECT value FROM meta").fetchone()
    assert version == ("3",)  # and the later versions' changes


def test_contacts_at_the_cap_within_the_window_are_skipped_the_others_reserved(tmp_path, store):
    history(store, "ann@example.com", 1, 6.9)  # two within the window: capped
    history(store, "bob@example.com", 2, 7.1)  # one within it, one older: sent
    history(store, "cy@example.com", 1, channel="sms")  # another channel's: sent
    history(store, "cy@example.com", 3)
    ledger = ledger_of(tmp_path / "l.sqlite", ["Ann@Example.com", "bob@example.com",
                                               "cy@example.com", "dee@example.com"])  # fmt: skip

    admitted = cap_of(store, ledger).admit(list(ledger.pending()))

    assert [row["customer_id"] for row in admitted] == ["C1", "C2", "C3"]
    rows = {row["customer_id"]: row for row in ledger.rows()}
    assert (rows["C0"]["status"], rows["C0"]["error"]) == ("skipped", REASON)
    assert {rows[c]["status"] for c in ("C1", "C2", "C3")} == {PENDING}
    mine = [m for m in store.history("email") if m["campaign"] == "spring"]
    assert [(m["contact"], m["customer_id"], m["date"], m["sent_at"]) for m in mine] == [
        ("bob@example.com", "C1", "2026-11-25", timestamp(NOW)),
        ("cy@example.com", "C2", "2026-11-25", timestamp(NOW)),
        ("dee@example.com", "C3", "2026-11-25", timestamp(NOW)),
    ]
    assert ledger.skipped() == {"frequency cap": 1}
    ledger.close()


def test_customers_sharing_a_contact_in_one_page_count_each_other(tmp_path, store):
    history(store, "ann@example.com", 1)
    ledger = ledger_of(tmp_path / "l.sqlite", ["ann@example.com"] * 3 + ["bob@example.com"] * 3)

    admitted = cap_of(store, ledger).admit(list(ledger.pending()))

    assert [row["customer_id"] for row in admitted] == ["C0", "C3", "C4"]
    assert ledger.skipped() == {"frequency cap": 3}
    ledger.close()


def test_without_a_cap_every_message_is_still_recorded(tmp_path, store):
    history(store, "ann@example.com", 1, 1, 1)
    ledger = ledger_of(tmp_path / "l.sqlite", ["ann@example.com", "bob@example.com"])

    admitted = cap_of(store, ledger, cap=0).admit(list(ledger.pending()))

    assert len(admitted) == 2
    assert len([m for m in store.history() if m["campaign"] == "spring"]) == 2
    ledger.close()


def test_settling_keeps_sent_and_unknown_and_forgets_failed_and_pending(tmp_path, store):
    ledger = ledger_of(tmp_path / "l.sqlite", [f"c{n}@example.com" for n in range(4)])
    cap = cap_of(store, ledger)
    rows = cap.admit(list(ledger.pending()))

    for row, status in zip(rows, (Status.SENT, Status.UNKNOWN, Status.FAILED, Status.PENDING),
                           strict=True):  # fmt: skip
        cap.settle([row], status)

    assert [m["customer_id"] for m in store.history()] == ["C0", "C1"]
    ledger.close()


def test_a_reservation_left_by_a_killed_run_is_reused_not_counted(tmp_path, store):
    ledger = ledger_of(tmp_path / "l.sqlite", ["ann@example.com", "bob@example.com"])
    cap_of(store, ledger, cap=1).admit(list(ledger.pending()))  # then killed: nothing settled

    admitted = cap_of(store, ledger, cap=1).admit(list(ledger.pending()))  # the next run

    assert [row["customer_id"] for row in admitted] == ["C0", "C1"]
    assert [m["customer_id"] for m in store.history()] == ["C0", "C1"], "not reserved twice"
    other = ledger_of(tmp_path / "o.sqlite", ["ann@example.com"])
    assert cap_of(store, other, cap=1, campaign="other").admit(list(other.pending())) == []
    ledger.close()
    other.close()


def test_a_dry_run_previews_who_is_capped_and_writes_nothing(tmp_path, store):
    history(store, "ann@example.com", 1, 2)
    store.close()
    path = tmp_path / "consent.sqlite"
    before = path.read_bytes()
    rows = [
        {"customer_id": "C0", "recipient": "ann@example.com", "status": PENDING, "error": ""},
        {"customer_id": "C1", "recipient": "bob@example.com", "status": PENDING, "error": ""},
        {"customer_id": "C2", "recipient": "ann@example.com", "status": "skipped",
         "error": "suppressed: x"},
    ]  # fmt: skip

    with ConsentStore(str(path), readonly=True) as readonly:
        previewed = list(cap_of(readonly, None).preview(rows))

    assert [(r["status"], r["error"]) for r in previewed] == [
        ("skipped", REASON),
        (PENDING, ""),
        ("skipped", "suppressed: x"),
    ]
    assert path.read_bytes() == before
    with (
        ConsentStore(str(path), readonly=True) as readonly,
        pytest.raises(sqlite3.OperationalError, match="readonly"),
    ):
        readonly.reserve([("email", "x", "C", "c", "d", "t")])


def test_history_of_a_contact_and_pruning(store):
    history(store, "ann@example.com", 1, 10, 40)
    history(store, "bob@example.com", 40)

    assert [m["sent_at"] for m in store.history("email", "ann@example.com", since=ago(30))] == [
        ago(10),
        ago(1),
    ]
    assert store.prune(before=ago(30)) == 2
    assert len(store.history()) == 2


def admit_in_process(path: str, ledger_path: str, campaign: str, start, results) -> None:
    """One campaign's admission of ann, bob and cy with cap 1, once *start* is set."""
    store = ConsentStore(path)
    ledger = ledger_of(ledger_path, ["ann@example.com", "bob@example.com", "cy@example.com"])
    cap = FrequencyCap(store, ledger, "email", "email", campaign, "2026-11-25", 1, 7)
    start.wait()
    results.put([row["recipient"] for row in cap.admit(list(ledger.pending()))])
    ledger.close()
    store.close()


def test_two_campaigns_admitting_at_once_never_both_pass_the_cap(tmp_path):
    path = str(tmp_path / "consent.sqlite")
    ConsentStore(path).close()
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=admit_in_process,
                        args=(path, str(tmp_path / f"{n}.sqlite"), f"c{n}", start, results))
        for n in range(4)
    ]  # fmt: skip
    for worker in workers:
        worker.start()
    start.set()
    admitted = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)

    everyone = sorted(r for found in admitted for r in found)
    assert everyone == ["ann@example.com", "bob@example.com", "cy@example.com"]
    with ConsentStore(path) as store:
        assert len(store.history()) == 3


def test_a_failed_resend_forgets_only_its_own_reservation(tmp_path, store):
    """resend_unknown: the earlier request may have been delivered; its row stays."""
    ledger = ledger_of(tmp_path / "l.sqlite", ["ann@example.com"])
    cap = cap_of(store, ledger, cap=5)
    (row,) = cap.admit(list(ledger.pending()))
    cap.settle([row], Status.UNKNOWN)
    (again,) = cap.admit([row])  # sent again: pending once more in the ledger

    cap.settle([again], Status.FAILED)

    assert [m["customer_id"] for m in store.history()] == ["C0"]
    ledger.close()


def test_the_ledger_notes_open_reservations_until_each_is_settled(tmp_path, store):
    ledger = ledger_of(tmp_path / "l.sqlite", ["ann@example.com", "bob@example.com"])
    cap = cap_of(store, ledger)
    assert ledger.noted(OPEN_NOTE) is None

    ann, bob = cap.admit(list(ledger.pending()))
    assert ledger.noted(OPEN_NOTE) == "open"
    cap.settle([ann], Status.SENT)
    assert ledger.noted(OPEN_NOTE) == "open"
    cap.settle([bob], Status.PENDING)

    assert ledger.noted(OPEN_NOTE) == "settled"
    ledger.close()
