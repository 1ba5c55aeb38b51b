"""Credentials are masked in every form a text can carry them."""

from __future__ import annotations

import base64
from urllib.parse import quote

import google.auth.crypt
import google.auth.jwt
import requests

from campaign_pipeline.sandbox.oauth import GOOGLE_TOKEN_URI, new_key
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


def signed_jwt() -> str:
    """A service account's grant as google-auth signs it (RS256, a header with a kid)."""
    key = new_key("https://oauth2.googleapis.com/token")
    signer = google.auth.crypt.RSASigner.from_service_account_info(key)
    claims = {"iss": key["client_email"], "aud": GOOGLE_TOKEN_URI, "iat": 1, "exp": 2}
    return google.auth.jwt.encode(signer, claims).decode()


def test_a_signed_jwt_is_masked_whoever_made_it():
    """No list holds a grant google-auth signed a moment ago: its shape gives it away, as it
    is, in a form body, without its signature, and quoted in an escaped or HTML text."""
    jwt = signed_jwt()
    header, claims, _ = jwt.split(".")
    redact = redactor([])

    assert redact(f"Bearer {jwt}") == "Bearer ***"
    assert redact(f"<pre>x=1&assertion={jwt}</pre>") == "<pre>x=1&assertion=***</pre>"
    assert redact(repr(f"request: {jwt}\n")) == repr("request: ***\n")
    assert redact(f"cut at {header}.{claims[:20]}") == "cut at ***"
    assert redactor([TOKEN])(f"{TOKEN} {jwt}") == "*** ***"


def test_an_assertion_value_is_masked_whatever_it_holds():
    redact = redactor([])

    assert redact("grant_type=jwt&ASSERTION=opaque.value%2Bx&scope=s") == (
        "grant_type=jwt&ASSERTION=***&scope=s"
    )
    assert redact('"body": "assertion=abc def"') == '"body": "assertion=*** def"'


def test_words_addresses_and_hosts_are_not_taken_for_tokens():
    """JWT-shaped but no JSON header: an address, a host, a word."""
    text = "keyJones123.smith@example.com, eyelash.example.com: eyJ starts a JWT; ey.x.y"
    assert redactor([])(text) == text
    jwt = signed_jwt()
    assert redactor([])(f"eyJunk12345.{jwt}") == "eyJunk12345.***"
