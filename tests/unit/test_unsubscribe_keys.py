"""Unsubscribe tokens with a key id: a rotated key's links keep working while it is listed,
tokens of the previous version (no key id) still verify, and a link carries the contact it
was sent to, signed."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import pytest

from campaign_pipeline.config import email_api
from campaign_pipeline.exceptions import MissingSecretError, SettingsError
from campaign_pipeline.unsubscribe import (
    Unsubscribe,
    UnsubscribeKeys,
    unsubscribe_token,
    verify_unsubscribe_token,
)

from .answers import UNSUBSCRIBE_KEY_ENV, email_provider

OLD, NEW = secrets.token_hex(32), secrets.token_hex(32)
URL = "https://shop.example/u?c={campaign}&id={customer_id}&to={contact}&t={token}"


def query(link: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


def test_a_rotated_keys_links_verify_while_it_is_listed():
    before = query(Unsubscribe(URL, "", OLD, "1").link("C7", "spring", "bob@shop.example"))
    after = query(Unsubscribe(URL, "", NEW, "2").link("C7", "spring", "bob@shop.example"))
    ring = UnsubscribeKeys(NEW, "2", {"1": OLD})
    retired = UnsubscribeKeys(NEW, "2")

    assert before["t"].startswith("1.") and after["t"].startswith("2.")
    for link in (before, after):
        assert ring.verify(link["id"], link["c"], link["t"], link["to"])
        assert verify_unsubscribe_token(ring, link["id"], link["c"], link["t"], link["to"])
        assert not ring.verify("C8", link["c"], link["t"], link["to"])
        assert not ring.verify(link["id"], link["c"], link["t"], "eve@shop.example")
    assert retired.verify("C7", "spring", after["t"], "bob@shop.example")
    assert not retired.verify("C7", "spring", before["t"], "bob@shop.example")  # 403 then
    # a token naming another key's id is no token of that key
    assert not ring.verify("C7", "spring", "1." + after["t"][2:], "bob@shop.example")
    assert not ring.verify("C7", "spring", "9." + after["t"][2:], "bob@shop.example")


def test_a_token_of_the_previous_version_verifies_under_any_key_of_the_ring():
    legacy = unsubscribe_token(OLD, "C7", "spring")  # 43 characters, no key id, no contact
    assert len(legacy) == 43 and "." not in legacy
    assert UnsubscribeKeys(OLD, "1").verify("C7", "spring", legacy)  # not rotated yet
    assert UnsubscribeKeys(NEW, "2", {"1": OLD}).verify("C7", "spring", legacy)  # rotated
    assert not UnsubscribeKeys(NEW, "2").verify("C7", "spring", legacy)
    assert not UnsubscribeKeys(OLD, "1").verify("C8", "spring", legacy)
    assert verify_unsubscribe_token(OLD, "C7", "spring", legacy)


def test_a_link_without_contact_signs_none_and_the_mailto_its_own():
    paths = Unsubscribe(
        "https://shop.example/u?id={customer_id}&c={campaign}&t={token}",
        "leave+{token}@shop.example",
        NEW,
        "2",
    )
    url, mailto = paths.links("C7", "spring", "bob@shop.example")
    assert "bob" not in url
    assert verify_unsubscribe_token(NEW, "C7", "spring", query(url)["t"])
    token = mailto.removeprefix("mailto:leave+").partition("@")[0]
    assert verify_unsubscribe_token(NEW, "C7", "spring", token)


def test_the_endpoint_reads_its_keys_from_the_variables_the_settings_name(monkeypatch):
    monkeypatch.setenv("UNSUBSCRIBE_KEY", NEW)
    monkeypatch.setenv("UNSUBSCRIBE_KEY_1", OLD)
    config = email_api(unsubscribe_key_id="2", unsubscribe_old_key_envs=" 1:UNSUBSCRIBE_KEY_1 ")
    ring = UnsubscribeKeys.from_settings(config)
    assert ring.verify(
        "C7", "spring", unsubscribe_token(OLD, "C7", "spring", "a@b.c", "1"), "a@b.c"
    )
    assert ring.sign("C7", "spring").startswith("2.")
    assert OLD not in repr(ring) and NEW not in repr(ring)

    monkeypatch.delenv("UNSUBSCRIBE_KEY_1")
    with pytest.raises(MissingSecretError, match="UNSUBSCRIBE_KEY_1 is not set"):
        UnsubscribeKeys.from_settings(config)
    bad = email_api(unsubscribe_key_id="2", unsubscribe_old_key_envs="1=UNSUBSCRIBE_KEY_1")
    with pytest.raises(SettingsError, match="unsubscribe_old_key_envs: '1=UNSUBSCRIBE_KEY_1'"):
        UnsubscribeKeys.from_settings(bad)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"unsubscribe_key_id": "a.b"}, "unsubscribe_key_id = 'a.b': must be 1 to 16"),
        (
            {"unsubscribe_key_id": "2", "unsubscribe_old_key_envs": "2:UNSUBSCRIBE_KEY_2"},
            "unsubscribe_key_id = 2 is also an id of unsubscribe_old_key_envs",
        ),
        ({"unsubscribe_old_key_envs": "1:"}, "'1:' is not ID:VARIABLE"),
    ],
)
def test_a_key_id_the_endpoint_could_not_tell_apart_stops_the_run(monkeypatch, settings, problem):
    email = email_provider(
        monkeypatch, base_url="http://127.0.0.1:9", unsubscribe_url=URL, transactional=False,
        **settings,
    )  # fmt: skip
    with pytest.raises(SettingsError, match=problem):
        email.check()


def test_the_email_carries_the_address_it_went_to_in_its_signed_link(monkeypatch):
    email = email_provider(
        monkeypatch, base_url="http://127.0.0.1:9", unsubscribe_url=URL, transactional=False,
    )  # fmt: skip
    email.check()
    context = {"campaign": "spring", "customer_id": "C7", "email": "Bob@müller.example"}
    shown = email.template_context(context)["unsubscribe_url"]
    request = email.request("Bob@müller.example", {"subject.txt": "Hi", "body.txt": "x"}, context)
    header = request.json["personalizations"][0]["headers"]["List-Unsubscribe"].strip("<>")

    assert header == shown
    link = query(header)
    assert link["to"] == "Bob@xn--mller-kva.example"  # as sent
    key = email.secrets[UNSUBSCRIBE_KEY_ENV]
    assert verify_unsubscribe_token(key, "C7", "spring", link["t"], link["to"])
    assert not verify_unsubscribe_token(key, "C7", "spring", link["t"], "eve@shop.example")
