"""The suppression file's parser, the gate (suppressed, duplicates) and the consent store,
on temporary files: no luigi run."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from campaign_pipeline.consent import ConsentStore, Entry, Gate, Suppressions, read_entries
from campaign_pipeline.consent.store import LEARNED
from campaign_pipeline.exceptions import PermanentError, SuppressionFileError

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


def test_the_gate_suppresses_then_dedupes_in_file_order():
    found = Suppressions("email")
    found.add(Entry("email", contact="ann@example.com", source="f line 2"))
    found.add(Entry("all", customer_id="C9", source="f line 3"))
    found.add(Entry("sms", customer_id="C5", source="f line 4"))  # another channel's
    gate = Gate(found, "email", dedupe=True)
    assert gate.reason("C1", "Ann@example.com") == "suppressed: f line 2"
    assert gate.reason("C9", "nine@example.com") == "suppressed: f line 3"
    assert gate.reason("C2", "bob@example.com") == ""
    assert gate.reason("C3", "BOB@example.com") == "duplicate contact of C2"
    assert gate.reason("C5", "c5@example.com") == ""
    assert Gate(found, "email", dedupe=False).reason("C3", "c5@example.com") == ""


def test_the_store_learns_once_and_lists_removes_and_marks(tmp_path):
    path = str(tmp_path / "var" / "consent.sqlite")
    with ConsentStore(path) as store:
        mark = store.mark("sms")
        assert store.learn("sms", "+12125550100", "demo", "21610") is True
        assert store.learn("sms", "+12125550100", "later", "21614") is False  # first kept
        assert store.mark("sms") != mark and store.mark("push") == [0, 0]
        (entry,) = store.entries("sms")
        assert (entry.source, entry.campaign, entry.code) == (LEARNED, "demo", "21610")
        learned = store.suppressions("sms")
        assert learned.source("C1", "+12125550100") == (
            f"learned {entry.date} campaign demo (sms 21610)"
        )
        store.add([Entry("all", customer_id="C1", source="f.csv line 2")], "import")
        assert store.suppressions("push").source("C1", "x").startswith("imported ")
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
