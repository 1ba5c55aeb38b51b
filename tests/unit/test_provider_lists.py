"""SendGrid's suppression lists as the email provider reads them (paging, parsing), what the
reader makes of each answer, and how the consent store mirrors a list: no HTTP, no luigi."""

from __future__ import annotations

import os

import pytest
import requests

from campaign_pipeline.consent import ConsentStore, Entry
from campaign_pipeline.consent.gate import CONTACT
from campaign_pipeline.consent.store import LEARNED, source_kind
from campaign_pipeline.exceptions import ChannelStoppedError, ListUnavailableError
from campaign_pipeline.providers.email import parse_entries
from campaign_pipeline.providers.lists import Listed, ListReader
from campaign_pipeline.safecsv import original_cell, safe_cell
from campaign_pipeline.sender import redactor

from .answers import EMAIL_TOKEN_ENV, email_provider, response, sendgrid_error

TODAY = "2026-11-26"
NOV_20 = 1795132800  # 2026-11-20 00:00 UTC


class Pages:
    """A reader answering each list from *lists* (name -> entries) as SendGrid pages it,
    and noting what was asked."""

    def __init__(self, **lists: list):
        self.lists = lists
        self.asked: list[tuple[str, dict | None]] = []

    def get(self, what, _url, params, headers, **_check):
        self.asked.append((what, params))
        assert headers["Authorization"] == f"Bearer {os.environ[EMAIL_TOKEN_ENV]}"
        entries = self.lists.get(what, [])
        if params is None or not isinstance(entries, list):
            return entries
        return entries[params["offset"] : params["offset"] + params["limit"]]


def bounce(n: int) -> dict:
    return {"created": NOV_20, "email": f"C{n}@Example.com", "reason": "550", "status": "5.1.1"}


def test_entries_are_parsed_case_folded_with_their_date_and_status():
    page = [
        bounce(1),
        {"created": 1443651141, "email": " user2@example.com "},
        {"created_at": 1410986704, "email": "g@example.com", "group_id": 1},
        "plain@Example.com",  # an unsubscribe group answers addresses only
        {"created": "yesterday", "email": "odd@example.com"},
        {"created": NOV_20},  # no address: left out
        42,
    ]

    assert parse_entries(page, TODAY) == [
        Listed("c1@example.com", "2026-11-20", "5.1.1"),
        Listed("user2@example.com", "2015-09-30"),
        Listed("g@example.com", "2014-09-17"),
        Listed("plain@example.com", TODAY),
        Listed("odd@example.com", TODAY),
    ]


def test_each_list_is_read_page_by_page_until_a_short_page(monkeypatch):
    email = email_provider(monkeypatch, suppression_page_size=2)
    reader = Pages(**{"bounces": [bounce(n) for n in range(5)], "blocks": [bounce(9)] * 2})

    lists = email.suppression_lists(reader)

    assert [found.source for found in lists] == [
        "sendgrid bounces",
        "sendgrid blocks",
        "sendgrid spam reports",
        "sendgrid invalid emails",
        "sendgrid global unsubscribes",
    ]
    assert len(lists[0].entries) == 5 and len(lists[1].entries) == 1  # one address twice
    assert all(found.complete for found in lists)
    asked = [(what, p["offset"]) for what, p in reader.asked if what in ("bounces", "blocks")]
    # each page starts with the last entry of the one before: the list did not change
    assert asked == [*(("bounces", n) for n in range(5)), ("blocks", 0), ("blocks", 1)]
    assert {p["limit"] for _, p in reader.asked} == {2}


class Shrinking(Pages):
    """Pages of a bounces list that loses its first entry after each first page."""

    def get(self, what, url, params, headers, **check):
        page = super().get(what, url, params, headers, **check)
        if what == "bounces" and params["offset"] == 0:
            self.lists["bounces"] = self.lists["bounces"][1:]
        return page


def test_a_list_that_changes_while_read_is_read_again_and_never_trusted_to_remove(
    monkeypatch, tmp_path
):
    email = email_provider(monkeypatch, suppression_page_size=3)
    reader = Shrinking(bounces=[bounce(n) for n in range(8)])

    bounces = email.suppression_lists(reader)[0]

    # each read's first page drops an entry, so the second page never starts with the last
    # entry of the first: neither read is complete, their entries are all there
    assert not bounces.complete
    assert [e.contact for e in bounces.entries] == [f"c{n}@example.com" for n in range(8)]
    with ConsentStore(str(tmp_path / "consent.sqlite")) as store:
        held = [(f"c{n}@example.com", "2026-11-20", "") for n in (0, 1, 9)]
        store.mirror("email", {"sendgrid bounces": held})
        changes = store.mirror(
            "email",
            {"sendgrid bounces": [(e.contact, e.date, e.code) for e in bounces.entries]},
            partial=["sendgrid bounces"],
        )
        kept = {stored.contact for stored in store.entries("email")}
    assert changes == {"sendgrid bounces": (6, 0)}  # c9 not seen, and kept
    assert "c9@example.com" in kept


def test_the_unsubscribe_group_is_read_when_set_and_applies_to_its_own_messages(monkeypatch):
    email = email_provider(monkeypatch, asm_group_id=42)
    reader = Pages(**{"group 42 unsubscribes": ["a@example.com", "B@example.com"]})

    group = email.suppression_lists(reader)[-1]

    assert group.source == "sendgrid group 42 unsubscribes"
    assert [e.contact for e in group.entries] == ["a@example.com", "b@example.com"]
    assert reader.asked[-1] == ("group 42 unsubscribes", None)  # SendGrid does not page it
    assert email.list_applies("sendgrid group 42 unsubscribes")
    assert not email.list_applies("sendgrid group 7 unsubscribes")
    assert email.list_applies("sendgrid bounces") and email.list_applies("learned")


def test_without_sync_nothing_is_read(monkeypatch):
    email = email_provider(monkeypatch, sync_suppressions=False)
    reader = Pages()

    assert email.suppression_lists(reader) == []
    assert reader.asked == []


def test_a_list_that_never_ends_stops_the_channel(monkeypatch):
    email = email_provider(monkeypatch, suppression_page_size=1)

    class Endless(Pages):
        def get(self, _what, _url, params, *_rest):
            return [bounce(params["offset"])]

    with pytest.raises(ChannelStoppedError, match="bounces list has more than 2,000 entries"):
        email.suppression_lists(Endless())


def test_an_answer_that_is_not_a_list_stops_the_channel(monkeypatch):
    email = email_provider(monkeypatch)

    with pytest.raises(ChannelStoppedError, match=r"not a list of entries.*\[email_api\] base_url"):
        email.suppression_lists(Pages(bounces={"errors": []}))


def reader_of(email) -> ListReader:
    return ListReader(email, 5, redactor(email.masked()))


@pytest.mark.parametrize(
    ("answer", "error", "expected"),
    [
        (
            sendgrid_error(401, (None, "authorization required")),
            ChannelStoppedError,
            f"email provider answered 401: authorization required; check ${EMAIL_TOKEN_ENV} "
            "([email_api] token_env) (reading SendGrid's bounces list before sending)",
        ),
        (
            sendgrid_error(403, (None, "access forbidden")),
            ChannelStoppedError,
            f"email provider answered 403: access forbidden; check ${EMAIL_TOKEN_ENV} "
            "([email_api] token_env) (the key needs read access to suppressions), or set "
            "[email_api] sync_suppressions = false (reading SendGrid's bounces list",
        ),
        (
            sendgrid_error(404, (None, "not found")),
            ChannelStoppedError,
            "email provider answered 404: not found; check [email_api] base_url",
        ),
        (
            response(400, text="<html>", headers={"Content-Type": "text/html"}),
            ChannelStoppedError,
            "answered 400 with a body that is not SendGrid's (text/html); check [email_api] "
            "base_url",
        ),
        (
            sendgrid_error(503, (None, "unavailable")),
            ListUnavailableError,
            "email provider answered 503: unavailable (reading SendGrid's bounces list before "
            "sending); nothing was sent",
        ),
        (sendgrid_error(429, (None, "too many")), ListUnavailableError, "nothing was sent"),
        (
            response(200, text="<html>"),
            ChannelStoppedError,
            "answered 200 with a body that is not SendGrid's JSON",
        ),
    ],
)
def test_what_each_answer_means(monkeypatch, answer, error, expected):
    email = email_provider(monkeypatch)

    with pytest.raises(error) as raised:
        reader_of(email).read("bounces", answer)

    assert expected in str(raised.value)
    assert "reading SendGrid's bounces list before sending" in str(raised.value)


def test_a_group_that_does_not_exist_names_asm_group_id(monkeypatch):
    email = email_provider(monkeypatch, asm_group_id=9)
    answer = sendgrid_error(404, (None, "not found"))

    with pytest.raises(ChannelStoppedError, match=r"\[email_api\] asm_group_id"):
        reader_of(email).read("group 9 unsubscribes", answer, check="asm_group_id")


def test_errors_are_masked_and_a_connection_failure_is_transient(monkeypatch):
    email = email_provider(monkeypatch)
    token = os.environ[EMAIL_TOKEN_ENV]

    class Unreachable:
        def get(self, *_args, **_kw):
            raise requests.ConnectionError(f"refused; sent Bearer {token}")

    reader = ListReader(email, 5, redactor(email.masked()), session=Unreachable())
    echoed = sendgrid_error(401, (None, f"bad key {token}"))

    with pytest.raises(ListUnavailableError) as unreachable:
        reader.get("bounces", "https://provider.invalid/v3/suppression/bounces", None, {})
    with pytest.raises(ChannelStoppedError) as refused:
        reader.read("bounces", echoed)

    for raised in (unreachable, refused):
        assert token not in str(raised.value) and "***" in str(raised.value)


def test_the_store_mirrors_a_list_in_one_go(tmp_path):
    store = ConsentStore(str(tmp_path / "consent.sqlite"))
    store.learn("email", "learned@example.com", "spring", "400")
    first = store.mirror(
        "email",
        {
            "sendgrid bounces": [
                ("a@example.com", "2026-11-01", "5.1.1"),
                ("b@example.com", "2026-11-02", ""),
            ],
            "sendgrid blocks": [("learned@example.com", "2026-11-03", "")],
        },
    )
    second = store.mirror(
        "email",
        {
            # b left bounces for blocks; a is listed again with another date; c is new
            "sendgrid bounces": [
                ("a@example.com", "2026-11-20", "5.1.1"),
                ("c@example.com", "2026-11-21", ""),
            ],
            "sendgrid blocks": [
                ("b@example.com", "2026-11-22", ""),
                ("learned@example.com", "2026-11-03", ""),
            ],
        },
    )

    assert first == {"sendgrid bounces": (2, 0), "sendgrid blocks": (0, 0)}
    assert second == {"sendgrid bounces": (1, 1), "sendgrid blocks": (1, 0)}
    reasons = barred_contacts(store)
    learned_on = store_date(store, "learned@example.com")
    assert reasons == {
        "learned@example.com": f"learned {learned_on} campaign spring (email 400)",
        "a@example.com": "sendgrid bounces 2026-11-01",  # still listed: its row is kept
        "c@example.com": "sendgrid bounces 2026-11-21",
        "b@example.com": "sendgrid blocks 2026-11-22",
    }
    assert store.mirror("email", {"sendgrid bounces": []}) == {"sendgrid bounces": (0, 2)}
    assert "a@example.com" not in barred_contacts(store)


def barred_contacts(store: ConsentStore, applies=None) -> dict[str, str]:
    """The contacts the store bars on email (whose source *applies*), with their reasons."""
    found = store.barred("email", applies=applies)[0]
    return {key: reason for kind, key, reason in found if kind == CONTACT}


def store_date(store: ConsentStore, contact: str) -> str:
    return next(s.date for s in store.entries("email") if s.contact == contact)


def test_a_group_list_of_another_group_does_not_apply(tmp_path):
    store = ConsentStore(str(tmp_path / "consent.sqlite"))
    store.mirror("email", {"sendgrid group 7 unsubscribes": [("g@example.com", "2026-11-01", "")]})
    store.add([Entry("email", contact="f@example.com", source="optouts.csv line 2")], "import")

    only_42 = barred_contacts(store, lambda source: "group 7" not in source)

    assert set(only_42) == {"f@example.com"}
    assert set(barred_contacts(store)) == {"f@example.com", "g@example.com"}


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("suppressed: config/suppressions.csv line 4", "file"),
        ("suppressed: learned 2026-11-25 campaign demo (sms 21610)", "learned 21610"),
        (
            "suppressed: learned 2026-11-25 campaign demo (push UNREGISTERED)",
            "learned UNREGISTERED",
        ),
        ("suppressed: imported 2026-11-25 from optouts.csv line 12", "imported"),
        ("suppressed: sendgrid bounces 2026-11-20", "sendgrid bounces"),
        ("suppressed: sendgrid group 42 unsubscribes 2026-11-20", "sendgrid group 42 unsubscribes"),
    ],
)
def test_the_kind_of_each_suppression_source(reason, kind):
    assert source_kind(reason) == kind
    assert LEARNED == "learned"


@pytest.mark.parametrize("value", ["-token:APA91b", "=HYPERLINK(1)", "+12125550100", "plain", ""])
def test_a_result_cell_reads_back_as_written(value):
    """The summary matches result-file recipients with the store's contacts."""
    assert original_cell(safe_cell(value)) == value
