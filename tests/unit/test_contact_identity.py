"""One person, one key: an internationalised address in its Unicode and ASCII forms, in the
loader's, the suppression file's, SendGrid's and the consent store's spelling, and in a store
or ledger written by the previous version; no luigi run."""

from __future__ import annotations

import contextlib
import functools
import sqlite3

from campaign_pipeline.config import email_api
from campaign_pipeline.consent import ConsentStore, gate, match_key
from campaign_pipeline.consent.store import LEARNED
from campaign_pipeline.ledger import Ledger
from campaign_pipeline.providers.email import EmailProvider, parse_entries
from campaign_pipeline.segments import ascii_address, check_email

ASCII = "bob@xn--mller-kva.example"
SPELLINGS = ("bob@müller.example", "Bob@MÜLLER.example", ASCII, "BOB@XN--MLLER-KVA.EXAMPLE")


def test_every_spelling_of_an_internationalised_address_has_one_key():
    loaded = [check_email(spelling)[0] for spelling in SPELLINGS]
    assert loaded[0] == "bob@müller.example"  # the loader keeps the Unicode form
    assert {match_key("email", spelling) for spelling in [*SPELLINGS, *loaded]} == {ASCII}
    listed = parse_entries([{"email": "Bob@xn--mller-kva.example", "created": 0}], "2026-11-25")
    assert [entry.contact for entry in listed] == [ASCII]
    assert match_key("email", "Ann@Example.COM") == "ann@example.com"
    # a local part in either Unicode form (composed, decomposed), the domain in either
    assert match_key("email", "zo\u00eb@b\u00fccher.example") == match_key(
        "email", "Zoe\u0308@bu\u0308cher.example"
    )
    assert match_key("sms", "+12125550100") == "+12125550100"


def test_the_address_sent_has_its_domain_in_ascii_and_its_local_part_as_it_was():
    assert ascii_address("Bob@müller.example") == "Bob@xn--mller-kva.example"
    assert ascii_address("zoë@bücher.example") == "zoë@xn--bcher-kva.example"
    assert ascii_address("ann@Example.com") == "ann@example.com"


def test_the_email_request_carries_the_ascii_form(monkeypatch):
    monkeypatch.setenv("EMAIL_API_TOKEN", "t" * 40)
    config = email_api(from_email="shop@shop.example", unsubscribe_url="", transactional=True)
    provider = EmailProvider(config)
    context = {"customer_id": "C1", "campaign": "spring", "email": "bob@müller.example"}
    parts = {"subject.txt": "Hi", "body.txt": "Hello"}
    request = provider.request("bob@müller.example", parts, context)
    assert request.json["personalizations"][0]["to"] == [{"email": ASCII}]


def version_2_store(path: str, contacts: list[tuple[str, str, str]], messages=()) -> None:
    """A store as the previous version wrote it: email domains keyed in Unicode."""
    ConsentStore(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        db.executemany(
            "INSERT INTO suppressions (channel, contact, source, date) VALUES (?, ?, ?, ?)",
            contacts,
        )
        db.executemany(
            "INSERT INTO messages (channel, contact, customer_id, campaign, date, sent_at)"
            " VALUES ('email', ?, 'C1', 'old', '2026-11-20', '2026-11-20T10:00:00+00:00')",
            [(contact,) for contact in messages],
        )


def test_a_store_of_the_previous_version_is_rekeyed_and_still_matches(tmp_path):
    path = str(tmp_path / "consent.sqlite")
    version_2_store(
        path,
        [
            ("email", "bob@müller.example", LEARNED, "2026-11-01"),
            ("email", ASCII, "sendgrid bounces", "2026-11-10"),  # the same person, later
            ("email", "ann@example.com", LEARNED, "2026-11-02"),
            ("sms", "+12125550100", LEARNED, "2026-11-03"),
        ],
        messages=["bob@müller.example", "ann@example.com"],
    )

    with ConsentStore(path, readonly=True) as store:  # a dry run changes nothing, still matches
        read_only = store.barred("email")[0]
    with ConsentStore(path) as store:
        barred = store.barred("email")[0]
        recent = store.recent("email", [ASCII, "ann@example.com"], "2026-11-01")

    assert [key for _, key, _ in read_only] == [ASCII, ASCII, "ann@example.com"]
    assert barred == [
        (gate.CONTACT, ASCII, "learned 2026-11-01 campaign  (email )"),  # the older entry
        (gate.CONTACT, "ann@example.com", "learned 2026-11-02 campaign  (email )"),
    ]
    assert recent == {ASCII: 1, "ann@example.com": 1}
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "3",
        )


def test_a_ledger_keyed_by_the_previous_version_is_keyed_again_once(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    row = {"customer_id": "A", "targeted": True, "segment": "new",
           "recipient": "bob@müller.example", "status": "pending", "error": "", "context": {},
           "contact": "bob@müller.example"}  # fmt: skip
    with contextlib.closing(Ledger(path)) as ledger:
        ledger.follow([row], "v1")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM meta WHERE key = 'contact_keys'")  # as the previous version

    with contextlib.closing(Ledger(path)) as ledger:
        key = functools.partial(match_key, "email")
        assert ledger.key_contacts(key) is True  # its decisions must be made again
        assert ledger.key_contacts(key) is False
        assert ledger.amend(lambda db: gate.bar_new(db, [(gate.CONTACT, ASCII, "sg")]), {})
        assert [(r["status"], r["error"]) for r in ledger.rows()] == [("skipped", "suppressed: sg")]
