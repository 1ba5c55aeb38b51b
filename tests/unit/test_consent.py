"""The suppression file's parser, the gate (suppressed, duplicates) and the consent store,
on temporary files: no luigi run."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import sqlite3

import pytest

from campaign_pipeline.consent import (
    ConsentStore,
    Entry,
    Suppressions,
    gate,
    match_key,
    read_entries,
)
from campaign_pipeline.consent.store import LEARNED, foreign, source_kind
from campaign_pipeline.exceptions import PermanentError, SuppressionFileError
from campaign_pipeline.ledger import SENT, Ledger

from .old_ledgers import write_old_ledger

TOKEN = "dGVzdHRva2Vu:APA91b" + "Q" * 60


def entries(tmp_path, text: str, header: str = "channel,contact,customer_id\n") -> list[Entry]:
    path = tmp_path / "s.csv"
    path.write_text(header + text)
    return list(read_entries(str(path), "US"))


def test_contacts_are_normalised_as_the_loader_does(tmp_path):
    found = entries(
        tmp_path,
        "# a comment\n\nemail, Ann@Example.COM ,\nsms,(212) 555-0100,\n"
        f"push,{TOKEN},\nall,,C7\nSMS,,C8\n",
    )
    path = tmp_path / "s.csv"
    assert [(e.channel, e.contact, e.customer_id) for e in found] == [
        ("email", "ann@example.com", ""),
        ("sms", "+12125550100", ""),
        ("push", TOKEN, ""),
        ("all", "", "C7"),
        ("sms", "", "C8"),
    ]
    assert found[0].source == f"{path} line 4"


def test_a_contact_for_all_applies_to_each_channel_of_its_kind(tmp_path):
    found = entries(tmp_path, "all,+1 212 555 0100,\nall,ann@example.com,\n")
    assert [(e.channel, e.contact) for e in found] == [
        ("sms", "+12125550100"),
        ("email", "ann@example.com"),
    ]


def test_extra_columns_are_ignored_so_an_export_reads_back(tmp_path):
    found = entries(tmp_path, "sms,+12125550100,,learned,2026-11-25,demo,21610\n",
                    header="channel,contact,customer_id,source,date,campaign,code\n")  # fmt: skip
    assert [(e.channel, e.contact) for e in found] == [("sms", "+12125550100")]


@pytest.mark.parametrize(
    ("header", "row", "problem"),
    [
        ("channel,contact\n", "", "line 1: no column customer_id"),
        (None, "fax,+12125550100,\n", "line 2: unknown channel 'fax'"),
        (None, "sms,+12125550100,C1\n", "line 2: both of contact and customer_id"),
        (None, "sms,,\n", "line 2: neither of contact and customer_id"),
        (None, "sms,555-12,\n", "line 2: invalid contact: phone '555-12'"),
        (None, "email,not-an-email,\n", "line 2: invalid contact: email"),
        (None, "all,???,\n", "line 2: invalid contact: not an address, number or token"),
    ],
)
def test_a_malformed_file_names_the_file_and_line(tmp_path, header, row, problem):
    with pytest.raises(SuppressionFileError) as raised:
        entries(tmp_path, row, header or "channel,contact,customer_id\n")
    assert str(raised.value).startswith(f"suppression file {tmp_path / 's.csv'} {problem}")
    assert isinstance(raised.value, PermanentError)  # exit 30, not retried


def test_a_missing_file_says_how_to_have_none(tmp_path):
    with pytest.raises(SuppressionFileError, match="no such file; create it"):
        list(read_entries(str(tmp_path / "absent.csv"), "US"))


def decided(rows: list[tuple], entries, dedupe: bool = True) -> list[str]:
    """The reasons the gate gives *rows* (customer_id, contact key), in file order."""
    with sqlite3.connect("") as db:
        db.execute(gate.SCRATCH_SCHEMA)
        db.executemany(
            "INSERT INTO current VALUES (?, 1, 'pending', '', ?)", rows
        )  # fmt: skip
        gate.decide(db, entries, dedupe, history=False)
        return [error for (error,) in db.execute("SELECT error FROM current ORDER BY rowid")]


def test_the_gate_suppresses_then_dedupes_in_file_order():
    found = Suppressions("email")
    found.add(Entry("email", contact="ann@example.com", source="f line 2"))
    found.add(Entry("all", customer_id="C9", source="f line 3"))
    found.add(Entry("sms", customer_id="C5", source="f line 4"))  # another channel's
    found.add(Entry("email", contact="ann@example.com", source="f line 5"))  # the first wins
    rows = [
        ("C1", "ann@example.com"),
        ("C9", "nine@example.com"),
        ("C2", "bob@example.com"),
        ("C3", "bob@example.com"),
        ("C5", "c5@example.com"),
        ("C6", "c5@example.com"),
    ]
    assert decided(rows, found.barred()) == [
        "suppressed: f line 2",
        "suppressed: f line 3",
        "",
        "duplicate contact of C2",
        "",
        "duplicate contact of C5",
    ]
    assert decided(rows, found.barred(), dedupe=False)[2:] == ["", "", "", ""]
    # an entry for the customer id wins over one for the contact, the file's over the store's
    learned = [(gate.CONTACT, "bob@example.com", "learned"), (gate.CUSTOMER, "C2", "store")]
    both = [(gate.CONTACT, "bob@example.com", "file"), *learned]
    assert decided(rows[2:4], both) == ["suppressed: store", "suppressed: file"]


OF_E = " (the contact of customer E)"


def test_a_customer_id_suppression_bars_that_customers_contact_under_any_other_id():
    rows = [
        ("C1", "bob@example.com"),  # not targeted: still their contact
        ("C2", "bob@example.com"),
        ("C3", "ann@example.com"),
        ("C4", "ann@example.com"),
        ("C5", "cy@example.com"),
    ]
    entries = [(gate.CUSTOMER, "C1", "f line 2"), (gate.CUSTOMER, "C4", "imported")]
    with sqlite3.connect("") as db:
        db.execute(gate.SCRATCH_SCHEMA)
        db.executemany("INSERT INTO current VALUES (?, ?, 'pending', '', ?)",
                       [(c, c != "C1", contact) for c, contact in rows])  # fmt: skip
        gate.decide(db, entries, dedupe=True, history=False)
        found = dict(db.execute("SELECT customer_id, error FROM current WHERE targeted"))
    assert found == {
        "C2": "suppressed: f line 2 (the contact of customer C1)",
        "C3": "suppressed: imported (the contact of customer C4)",  # first in the file or not
        "C4": "suppressed: imported",
        "C5": "",
    }
    assert source_kind(found["C2"]) == "file"
    assert source_kind("suppressed: sendgrid bounces 2026-11-20" + OF_E) == "sendgrid bounces"


def test_the_store_learns_once_and_lists_removes_and_marks(tmp_path):
    path = str(tmp_path / "var" / "consent.sqlite")
    with ConsentStore(path) as store:
        mark = store.mark("sms")
        assert store.learn("sms", "+12125550100", "demo", "21610") is True
        assert store.learn("sms", "+12125550100", "later", "21614") is False  # first kept
        assert store.mark("sms") != mark and store.mark("push") == [0, 0]
        (entry,) = store.entries("sms")
        assert (entry.source, entry.campaign, entry.code) == (LEARNED, "demo", "21610")
        learned, mark = store.barred("sms")
        assert learned == [
            (gate.CONTACT, "+12125550100", f"learned {entry.date} campaign demo (sms 21610)")
        ]
        assert mark == store.mark("sms")
        store.add([Entry("all", customer_id="C1", source="f.csv line 2")], "import")
        assert store.barred("sms", after=mark[1])[0] == [
            (gate.CUSTOMER, "C1", f"imported {entry.date} from f.csv line 2")
        ]
        assert store.barred("push")[0][0][:2] == (gate.CUSTOMER, "C1")
        before = store.mark("sms")
        assert store.remove("sms", contact="+12125550100") == 1
        assert store.mark("sms") != before
        assert [e.customer_id for e in store.entries()] == ["C1"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()


def _learn_many(path: str, channel: str, count: int) -> None:
    with ConsentStore(path) as store:
        for n in range(count):
            store.learn(channel, f"+1212555{n:04d}", "c", "21610")


def test_several_processes_write_the_store_at_once(tmp_path):
    path = str(tmp_path / "consent.sqlite")
    ConsentStore(path).close()
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_learn_many, args=(path, c, 200)) for c in ("sms", "push")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=30)
    assert [w.exitcode for w in writers] == [0, 0]
    with ConsentStore(path) as store:
        assert store.mark("sms")[0] == store.mark("push")[0] == 200


def _open(path: str) -> None:
    ConsentStore(path).close()


@pytest.mark.e2e  # processes: a few seconds
def test_channel_tasks_opening_a_new_store_together_all_get_it(tmp_path):
    """The three channel tasks of a first run create the store at once. Switching a new file
    to WAL could answer "database is locked" to one of them (about 1 time in 60 with 6
    processes, before the fix): each must wait instead."""
    context = multiprocessing.get_context("fork")
    for n in range(80):
        path = str(tmp_path / f"consent-{n}.sqlite")
        openers = [context.Process(target=_open, args=(path,)) for _ in range(6)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(timeout=60)
        assert [o.exitcode for o in openers] == [0] * 6, f"round {n}"


def customer(cid: str, email: str) -> dict:
    contact = email.casefold()
    return {"customer_id": cid, "targeted": True, "segment": "new", "recipient": email,
            "status": "pending", "error": "", "context": {}, "contact": contact}  # fmt: skip


def gated(ledger: Ledger, customers: list[dict], entries=()) -> dict[str, str]:
    """Follow *customers* through the gate; each customer's status and reason."""
    ledger.follow(customers, "v1", decide=lambda db: gate.decide(db, entries, dedupe=True))
    return reasons(ledger)


def reasons(ledger: Ledger) -> dict[str, str]:
    return {row["customer_id"]: f"{row['status']} {row['error']}".strip() for row in ledger.rows()}


def test_a_contact_sent_in_an_earlier_run_goes_to_that_customer_whatever_the_file_order(
    tmp_path,
):
    with contextlib.closing(Ledger(str(tmp_path / "ledger.sqlite"))) as ledger:
        gated(ledger, [customer("A", "a@x.com"), customer("B", "b@x.com")])
        assert ledger.claim(["B"])
        ledger.finish(["B"], SENT)
        moved = [customer("Z", "B@X.com"), customer("A", "a@x.com"), customer("B", "b@x.com")]
        assert gated(ledger, moved) == {
            "A": "pending",
            "B": "sent",
            "Z": "skipped duplicate contact of B",
        }


def test_store_entries_learned_since_are_applied_to_the_ledger_alone(tmp_path):
    with contextlib.closing(Ledger(str(tmp_path / "ledger.sqlite"))) as ledger:
        pairs = (("A", "a@x.com"), ("B", "b@x.com"), ("C", "b@x.com"), ("D", "d@x.com"))
        gated(ledger, [customer(c, e) for c, e in pairs])
        assert ledger.claim(["A"])
        ledger.finish(["A"], SENT)

        new = [(gate.CONTACT, "b@x.com", "learned"), (gate.CONTACT, "a@x.com", "too late")]
        assert ledger.amend(lambda db: gate.bar_new(db, new), {"mark": "1"})
        assert ledger.amend(lambda db: gate.bar_new(db, [(gate.CUSTOMER, "D", "f")]), {})

        assert reasons(ledger) == {
            "A": "sent",
            "B": "skipped suppressed: learned",
            "C": "skipped suppressed: learned",  # a suppression before a duplicate
            "D": "skipped suppressed: f",
        }
        assert ledger.noted("mark") == "1"


def test_a_new_entry_for_the_first_of_a_contact_bars_the_contact_under_every_id(tmp_path):
    with contextlib.closing(Ledger(str(tmp_path / "ledger.sqlite"))) as ledger:
        before = gated(ledger, [customer("E", "e@x.com"), customer("F", "E@x.com")])
        assert before == {"E": "pending", "F": "skipped duplicate contact of E"}

        assert ledger.amend(lambda db: gate.bar_new(db, [(gate.CUSTOMER, "E", "f")]), {})
        expected = {"E": "skipped suppressed: f", "F": "skipped suppressed: f" + OF_E}
        assert reasons(ledger) == expected  # F is E's contact: not promoted to first
        after = gated(ledger, [customer("E", "e@x.com"), customer("F", "E@x.com")],
                      [(gate.CUSTOMER, "E", "f")])  # fmt: skip
        assert after == expected  # what the full check decides too
        # an entry for a customer the ledger has no row of: their contact is in the file alone
        assert not ledger.amend(lambda db: gate.bar_new(db, [(gate.CUSTOMER, "Q", "f")]), {})


def test_a_ledger_from_before_the_contact_column_is_keyed_and_still_dedupes(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    write_old_ledger(path, "Ann@Example.com")

    with contextlib.closing(Ledger(path)) as ledger:
        ledger.key_contacts(functools.partial(match_key, "email"))
        ledger.key_contacts(lambda _: "not asked twice")
        after = gated(ledger, [customer("Z", "ann@example.COM"), customer("A", "x")])

    assert after == {"A": "sent", "Z": "skipped duplicate contact of A"}
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT contact FROM deliveries WHERE customer_id = 'A'").fetchone() == (
            "ann@example.com",
        )


def test_a_store_opens_and_lists_while_a_campaign_holds_the_write_lock(tmp_path):
    path = str(tmp_path / "consent.sqlite")
    with ConsentStore(path) as store:
        store.learn("sms", "+12125550100", "demo", "21610")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # another campaign, in the middle of a write
        writer.execute("INSERT INTO meta VALUES ('writing', '1')")
        with ConsentStore(path) as reader:  # waited for the writer before: up to 30 s
            assert [e.contact for e in reader.entries()] == ["+12125550100"]
        writer.execute("ROLLBACK")


@pytest.mark.parametrize("dedupe", [True, False])
def test_a_new_ledgers_rows_the_store_has_messaged_are_unknown_never_pending(tmp_path, dedupe):
    """A ledger made anew while the store holds messages of its campaign and date: those
    rows may have been delivered. With dedupe a message to the contact counts, whoever of
    the customers sharing it had it; without, only one to that customer."""
    with ConsentStore(str(tmp_path / "store.sqlite")) as store:
        at = "2026-11-25T09:00:00.000+00:00"
        store.reserve(
            [
                ("email", "a@x.org", "A1", "spring", "2026-11-25", at),
                ("email", "b@x.org", "B1", "spring", "2026-11-25", at),  # B2 shares it
                ("email", "c@x.org", "C1", "spring", "2026-11-24", at),  # another date
                ("email", "d@x.org", "D1", "autumn", "2026-11-25", at),  # another campaign
                ("sms", "+12125550100", "E1", "spring", "2026-11-25", at),  # another channel
            ]
        )
        assert store.has_messages("email", "spring", "2026-11-25")
        assert not store.has_messages("push", "spring", "2026-11-25")
        messaged = functools.partial(store.messaged, "email", "spring", "2026-11-25")
        with contextlib.closing(sqlite3.connect("")) as db:
            db.execute(gate.SCRATCH_SCHEMA)
            rows = [("A1", "a@x.org"), ("B2", "b@x.org"), ("C1", "c@x.org"), ("D1", "d@x.org")]
            rows += [("E1", "e@x.org"), ("F1", "")]
            db.executemany(
                "INSERT INTO current VALUES (?, 1, 'pending', '', ?)",
                rows,
            )
            marked = gate.unknown_from_history(db, messaged, "messaged", dedupe, page=2)
            found = dict(db.execute("SELECT customer_id, status FROM current"))

    unknown = {"A1", "B2"} if dedupe else {"A1"}
    assert marked == len(unknown)
    assert found == {cid: "unknown" if cid in unknown else "pending" for cid, _ in rows}


def test_a_store_is_told_from_another_programs_file_without_writing_to_either(tmp_path):
    mine = tmp_path / "mine.sqlite"
    with ConsentStore(str(mine)) as store:  # open, in WAL mode, with rows in its log
        store.learn("sms", "+12125550100", "spring", "21610")
        assert foreign(str(mine)) == ""
    theirs = tmp_path / "theirs.db"
    with contextlib.closing(sqlite3.connect(theirs)) as db:
        db.executescript("CREATE TABLE meta (key, value); CREATE TABLE accounts (id);")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    (tmp_path / "notes.db").write_text("SQLite is a database\n")
    files = sorted(p.name for p in tmp_path.iterdir())

    assert (
        foreign(str(theirs))
        == "an SQLite database of another program (its tables include accounts)"
    )
    assert foreign(str(tmp_path / "empty.sqlite")) == ""
    assert foreign(str(tmp_path / "notes.db")) == "not an SQLite database"
    assert foreign(str(tmp_path / "absent.sqlite")) == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == files
