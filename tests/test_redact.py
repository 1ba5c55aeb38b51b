"""Credentials are masked in every form a text can carry them."""

from __future__ import annotations

import base64
from urllib.parse import quote

import requests

from campaign_pipeline.sender import redactor

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "tok/en+with=odd&chars"


def test_a_secret_is_masked_as_it_is_escaped_and_url_encoded():
    redact = redactor([TOKEN, "line\nbreak"])

    assert redact(f"Bearer {TOKEN}") == "Bearer ***"
    assert redact(repr("Bearer line\nbreak")) == "'Bearer ***'"
    assert redact(f"https://x.org/?t={quote(TOKEN, safe='')}") == "https://x.org/?t=***"
    assert redact("nothing to hide") == "nothing to hide"


def test_basic_auth_is_masked_as_requests_builds_it():
    prepared = requests.Request(
        "POST", f"https://x.org/Accounts/{SID}", auth=(SID, TOKEN)
    ).prepare()
    text = f"{prepared.url} {prepared.headers['Authorization']}"

    assert redactor([SID, TOKEN])(text) == "https://x.org/Accounts/*** Basic ***"
    assert base64.b64encode(f"{SID}:{TOKEN}".encode()).decode() in text


def test_empty_secrets_mask_nothing():
    assert redactor(["", ""])("text") == "text"
