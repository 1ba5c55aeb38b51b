"""Each provider's requests and its reading of answers, on hand-built responses."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from campaign_pipeline.exceptions import InvalidSecretError, PermanentError, SettingsError
from campaign_pipeline.providers import MAX_RATE_LIMIT_WAIT, Blame, retry_after
from campaign_pipeline.providers.email import MAX_SUBSTITUTIONS
from campaign_pipeline.providers.errors import FAILED, RATE_LIMITED, RENEW, RETRY, SENT, STOP
from campaign_pipeline.providers.sms import MAX_BODY

from .answers import (
    ACCOUNT_SID,
    BASE_URL,
    EMAIL_TOKEN_ENV,
    PROJECT,
    PUSH_TOKEN_ENV,
    SMS_SID_ENV,
    SMS_TOKEN_ENV,
    email_provider,
    fcm_error,
    push_provider,
    response,
    sendgrid_error,
    sms_provider,
    twilio_error,
)

CONTEXT = {"campaign": "spring", "customer_id": 7, "first_name": "Ann"}
HTML_PAGE = {
    "text": "<html><body>Bad Request</body></html>",
    "headers": {"Content-Type": "text/html"},
}


def in_seconds(seconds: float) -> str:
    """An HTTP date *seconds* from now, as a Retry-After header carries it."""
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


# -- Retry-After and X-RateLimit-Reset ---------------------------------------------------------


@pytest.mark.parametrize(
    "headers, low, high",
    [
        ({"Retry-After": "3"}, 3, 3),
        ({"Retry-After": "0.25"}, 0.25, 0.25),
        ({"Retry-After": "-5"}, 0, 0),
        ({"Retry-After": "86400"}, MAX_RATE_LIMIT_WAIT, MAX_RATE_LIMIT_WAIT),
        ({"Retry-After": "{date+30}"}, 28, 30),  # an HTTP date has whole seconds
        ({"Retry-After": "{date-30}"}, 0, 0),
        ({"X-RateLimit-Reset": "{epoch+10}"}, 9, 10),
        ({"X-RateLimit-Reset": "{epoch-10}"}, 0, 0),
        ({"Retry-After": "2", "X-RateLimit-Reset": "{epoch+60}"}, 2, 2),  # Retry-After wins
    ],
)
def test_retry_after_reads_seconds_an_http_date_or_the_reset_time(headers, low, high):
    now = time.time()
    values = {
        "{date+30}": in_seconds(30),
        "{date-30}": in_seconds(-30),
        "{epoch+10}": str(int(now) + 10),
        "{epoch-10}": str(int(now) - 10),
        "{epoch+60}": str(int(now) + 60),
    }
    filled = {name: values.get(value, value) for name, value in headers.items()}

    wait = retry_after(response(429, {}, headers=filled))

    assert low <= wait <= high


@pytest.mark.parametrize(
    "headers", [{}, {"Retry-After": "soon"}, {"X-RateLimit-Reset": "tomorrow"}]
)
def test_retry_after_is_none_without_a_readable_header(headers):
    assert retry_after(response(429, {}, headers=headers)) is None


# -- email (SendGrid v3) -----------------------------------------------------------------------

PARTS = {"subject.txt": "Spring sale", "body.txt": "Hi Ann", "body.html": "<p>Hi Ann</p>"}


def test_email_request_is_one_personalization_with_custom_args_as_strings(monkeypatch):
    email = email_provider(monkeypatch, from_name="The Shop")

    request = email.request("ann@example.com", PARTS, CONTEXT)

    assert request.url == f"{BASE_URL}/v3/mail/send"
    assert request.headers == {"Authorization": f"Bearer {email.secrets[EMAIL_TOKEN_ENV]}"}
    assert request.json == {
        "personalizations": [
            {
                "to": [{"email": "ann@example.com"}],
                "custom_args": {"campaign": "spring", "customer_id": "7"},
            }
        ],
        "from": {"email": "shop@example.com", "name": "The Shop"},
        "subject": "Spring sale",
        "content": [
            {"type": "text/plain", "value": "Hi Ann"},
            {"type": "text/html", "value": "<p>Hi Ann</p>"},
        ],
    }


def test_email_request_leaves_out_empty_parts_and_refuses_an_empty_subject(monkeypatch):
    email = email_provider(monkeypatch, custom_args=[])

    request = email.request("ann@example.com", {**PARTS, "body.html": ""}, CONTEXT)

    assert request.json["content"] == [{"type": "text/plain", "value": "Hi Ann"}]
    assert "custom_args" not in request.json["personalizations"][0]
    assert request.json["from"] == {"email": "shop@example.com"}
    with pytest.raises(ValueError, match="subject rendered empty"):
        email.request("ann@example.com", {**PARTS, "subject.txt": ""}, CONTEXT)


def test_email_requests_with_the_same_content_types_travel_together(monkeypatch):
    email = email_provider(monkeypatch)
    both = [email.request(f"c{n}@example.com", PARTS, CONTEXT) for n in range(3)]
    text_only = email.request("t@example.com", {**PARTS, "body.html": ""}, CONTEXT)

    assert email.batch_key(both[0]) == email.batch_key(both[1])
    assert email.batch_key(both[0]) != email.batch_key(text_only)
    assert email.with_first([both[0], text_only, both[1], both[2]]) == both
    assert email.with_first([text_only, *both]) == [text_only]


def test_an_email_too_large_for_a_substitution_goes_alone(monkeypatch):
    email = email_provider(monkeypatch)
    small = [email.request(f"c{n}@example.com", PARTS, CONTEXT) for n in range(2)]
    large = email.request(
        "big@example.com", {**PARTS, "body.txt": "x" * MAX_SUBSTITUTIONS}, CONTEXT
    )

    assert email.batch_key(large) is None
    assert email.with_first([large, *small]) == [large]
    assert email.with_first([small[0], large, small[1]]) == small


def test_a_combined_email_gives_each_recipient_their_own_subject_and_bodies(monkeypatch):
    email = email_provider(monkeypatch)
    singles = [
        email.request(
            f"c{n}@example.com",
            {"subject.txt": f"For {n}", "body.txt": f"Hi {n}", "body.html": f"<p>{n}</p>"},
            {**CONTEXT, "customer_id": n},
        )
        for n in range(3)
    ]

    combined = email.combine(singles)

    assert combined.url == singles[0].url and combined.headers == singles[0].headers
    assert combined.json["from"] == singles[0].json["from"]
    assert "subject" not in combined.json
    received = []  # what SendGrid makes of each personalization
    for person in combined.json["personalizations"]:
        bodies = []
        for content in combined.json["content"]:
            value = content["value"]
            for tag, text in person["substitutions"].items():
                value = value.replace(tag, text)
            bodies.append((content["type"], value))
        received.append((person["to"], person["subject"], person["custom_args"], bodies))
    assert received == [
        (
            [{"email": f"c{n}@example.com"}],
            f"For {n}",
            {"campaign": "spring", "customer_id": str(n)},
            [("text/plain", f"Hi {n}"), ("text/html", f"<p>{n}</p>")],
        )
        for n in range(3)
    ]


def test_each_combined_email_has_tags_of_its_own(monkeypatch):
    email = email_provider(monkeypatch)
    singles = [email.request(f"c{n}@example.com", PARTS, CONTEXT) for n in range(2)]

    first, second = email.combine(singles), email.combine(singles)

    tags = [{c["value"] for c in request.json["content"]} for request in (first, second)]
    assert not tags[0] & tags[1], "a customer cannot write a tag of another batch"
    assert email.combine(singles[:1]) is singles[0]


def test_email_accepted_is_sent_with_sendgrids_message_id(monkeypatch):
    email = email_provider(monkeypatch)

    outcome = email.interpret(response(202, headers={"X-Message-Id": "sg-14c5"}))

    assert (outcome.kind, outcome.message_id, outcome.error) == (SENT, "sg-14c5", "")


def test_a_refused_email_batch_names_the_personalization_at_fault(monkeypatch):
    email = email_provider(monkeypatch)
    refused = sendgrid_error(400, ("personalizations.1.to", "Does not contain a valid address."))

    outcome = email.interpret(refused)

    assert outcome.kind == FAILED
    assert outcome.error == (
        "email provider answered 400: personalizations.1.to: Does not contain a valid address."
    )
    assert outcome.blamed == (Blame(1, outcome.error),)


def test_a_batch_refused_for_several_personalizations_blames_each_for_its_own_errors(monkeypatch):
    email = email_provider(monkeypatch)
    refused = sendgrid_error(
        400,
        ("personalizations.2.to.0.email", "Does not contain a valid address."),
        ("personalizations.1.subject", "The subject is too long."),
        ("personalizations.2.subject", "The subject is too long."),
        ("null", "invalid request"),
    )

    outcome = email.interpret(refused)

    assert outcome.kind == FAILED
    assert outcome.blamed == (
        Blame(
            2,
            "email provider answered 400: personalizations.2.to.0.email: Does not contain a "
            "valid address.; personalizations.2.subject: The subject is too long.",
            suppress=True,
        ),
        Blame(
            1,
            "email provider answered 400: personalizations.1.subject: The subject is too long.",
            suppress=False,  # its address was not named: nothing to learn about its contact
        ),
    )


def test_a_blamed_recipients_error_is_masked_as_the_outcomes_own(monkeypatch):
    email = email_provider(monkeypatch)
    echoed = sendgrid_error(
        400,
        ("personalizations.0.subject", "bad subject (request: Bearer sg-secret-key)"),
        ("personalizations.1.to.0.email", "Does not contain a valid address."),
    )

    outcome = email.interpret(echoed).masked(lambda text: text.replace("sg-secret-key", "***"))

    assert "sg-secret-key" not in outcome.error
    assert [b.error.endswith("(request: Bearer ***)") for b in outcome.blamed] == [True, False]
    assert outcome.of(outcome.blamed[1]).suppress and not outcome.of(outcome.blamed[0]).suppress


def test_an_email_sender_error_stops_the_channel_naming_from_email(monkeypatch):
    email = email_provider(monkeypatch)
    refused = sendgrid_error(
        400, ("from.email", "The from email does not contain a valid address.")
    )

    outcome = email.interpret(refused)

    assert outcome.kind == STOP and outcome.blamed == ()
    assert outcome.error == (
        "email provider answered 400 from: from.email: The from email does not contain a "
        "valid address; check [email_api] from_email"
    )


def test_a_refused_email_api_key_names_its_variable_never_its_value(monkeypatch):
    email = email_provider(monkeypatch)

    outcome = email.interpret(
        sendgrid_error(401, (None, "The provided authorization grant is invalid"))
    )

    assert outcome.kind == STOP
    assert outcome.error.endswith(f"; check ${EMAIL_TOKEN_ENV} ([email_api] token_env)")
    assert email.secrets[EMAIL_TOKEN_ENV] not in outcome.error


def test_email_rate_limit_waits_until_the_reset_time(monkeypatch):
    email = email_provider(monkeypatch)
    reset = str(int(time.time()) + 5)

    outcome = email.interpret(
        sendgrid_error(429, (None, "too many"), headers={"X-RateLimit-Reset": reset})
    )

    assert outcome.kind == RATE_LIMITED and 3 <= outcome.retry_after <= 5


def test_email_checks_need_a_sender_and_an_http_url(monkeypatch):
    email_provider(monkeypatch).check()
    with pytest.raises(PermanentError, match=r"^\[email_api\] from_email is not set"):
        email_provider(monkeypatch, from_email="").check()
    with pytest.raises(PermanentError, match=r"^\[email_api\] base_url 'ftp://x' is not an http"):
        email_provider(monkeypatch, base_url="ftp://x").check()


# -- SMS (Twilio) ------------------------------------------------------------------------------


def test_sms_request_is_a_form_to_the_accounts_messages(monkeypatch):
    sms = sms_provider(monkeypatch)

    request = sms.request("+12125550100", {"body.txt": "Hi Ann"}, CONTEXT)

    assert request.url == f"{BASE_URL}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.data == {"To": "+12125550100", "Body": "Hi Ann", "From": "+15005550006"}
    assert request.json is None
    assert request.auth == (ACCOUNT_SID, sms.secrets[SMS_TOKEN_ENV])
    assert sms.account() == ACCOUNT_SID


def test_sms_through_a_messaging_service_and_an_api_key(monkeypatch):
    key_sid, service = "SK" + "ab" * 16, "MG" + "cd" * 16
    monkeypatch.setenv("UNIT_KEY_SID", key_sid)
    monkeypatch.setenv("UNIT_KEY_SECRET", "key-secret")
    sms = sms_provider(
        monkeypatch,
        api_key_sid_env="UNIT_KEY_SID",
        api_key_secret_env="UNIT_KEY_SECRET",
        messaging_service_sid=service,
    )

    request = sms.request("+12125550100", {"body.txt": "Hi"}, CONTEXT)

    sms.check()
    assert request.data == {"To": "+12125550100", "Body": "Hi", "MessagingServiceSid": service}
    assert request.auth == (key_sid, "key-secret")
    assert ACCOUNT_SID in request.url and sms.account() == ACCOUNT_SID


@pytest.mark.parametrize("length", [0, MAX_BODY + 1])
def test_an_sms_body_twilio_would_refuse_is_not_built(monkeypatch, length):
    with pytest.raises(ValueError, match=f"SMS body has {length} characters; Twilio takes 1 to"):
        sms_provider(monkeypatch).request("+12125550100", {"body.txt": "x" * length}, CONTEXT)


def test_sms_accepted_is_sent_with_the_message_sid(monkeypatch):
    outcome = sms_provider(monkeypatch).interpret(
        response(201, {"sid": "SM42", "status": "queued"})
    )

    assert (outcome.kind, outcome.message_id) == (SENT, "SM42")


@pytest.mark.parametrize(
    "status, code, kind, ending",
    [
        (400, 21211, FAILED, "400 21211: The 'To' number is not valid."),
        (400, 30007, FAILED, "400 30007: The 'To' number is not valid."),
        (400, 21212, STOP, "400 21212: The 'To' number is not valid; check [sms_api] from_number"),
        (
            401,
            20003,
            STOP,
            f"401 20003: The 'To' number is not valid; check ${SMS_SID_ENV} ([sms_api] "
            f"account_sid_env) and ${SMS_TOKEN_ENV} ([sms_api] auth_token_env)",
        ),
        (503, 20503, RETRY, "503 20503: The 'To' number is not valid."),
    ],
)
def test_twilio_codes_decide_what_an_sms_answer_means(monkeypatch, status, code, kind, ending):
    outcome = sms_provider(monkeypatch).interpret(
        twilio_error(status, code, "The 'To' number is not valid.")
    )

    assert outcome.kind == kind
    assert outcome.error == f"sms provider answered {ending}"


def test_sms_rate_limit_waits_as_retry_after_says(monkeypatch):
    answer = twilio_error(429, 20429, "Too Many Requests", headers={"Retry-After": "2"})

    outcome = sms_provider(monkeypatch).interpret(answer)

    assert (outcome.kind, outcome.retry_after) == (RATE_LIMITED, 2.0)


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({}, None, ""),
        ({"from_number": ""}, PermanentError, r"needs from_number or messaging_service_sid"),
        ({"messaging_service_sid": "MG123"}, PermanentError, r"messaging_service_sid must be MG"),
        ({"api_key_sid_env": "UNIT_KEY_SID"}, SettingsError, r"api_key_secret_env is not"),
    ],
)
def test_sms_settings_are_checked_before_sending(monkeypatch, settings, error, message):
    monkeypatch.setenv("UNIT_KEY_SID", "SK" + "0" * 32)
    if error is None:
        sms_provider(monkeypatch, **settings).check()
        return
    with pytest.raises(error, match=message):
        sms_provider(monkeypatch, **settings).check()


def test_a_malformed_account_sid_is_named_by_its_variable_never_shown(monkeypatch):
    sms = sms_provider(monkeypatch)
    sms.account_sid = "AC-not-hex"  # what a wrong value in the variable gives

    with pytest.raises(InvalidSecretError) as refused:
        sms.check()

    assert f"environment variable {SMS_SID_ENV} (named by [sms_api] account_sid_env)" in str(
        refused.value
    )
    assert "AC-not-hex" not in str(refused.value)


# -- push (FCM HTTP v1) ------------------------------------------------------------------------


def test_push_request_is_an_fcm_message_with_data_as_strings(monkeypatch):
    push = push_provider(monkeypatch)

    request = push.request("device-1", {"title.txt": "Sale", "body.txt": "Hi Ann"}, CONTEXT)

    assert request.url == f"{BASE_URL}/v1/projects/{PROJECT}/messages:send"
    assert request.headers == {"Authorization": f"Bearer {push.secrets[PUSH_TOKEN_ENV]}"}
    assert request.json == {
        "message": {
            "token": "device-1",
            "notification": {"title": "Sale", "body": "Hi Ann"},
            "data": {"campaign": "spring", "customer_id": "7"},
        }
    }
    assert push_provider(monkeypatch, data=[]).request(
        "device-1", {"title.txt": "t", "body.txt": "b"}, CONTEXT
    ).json == {"message": {"token": "device-1", "notification": {"title": "t", "body": "b"}}}


def test_push_accepted_is_sent_with_the_message_name(monkeypatch):
    answer = response(200, {"name": f"projects/{PROJECT}/messages/0:17"})

    outcome = push_provider(monkeypatch).interpret(answer)

    assert (outcome.kind, outcome.message_id) == (SENT, f"projects/{PROJECT}/messages/0:17")


@pytest.mark.parametrize(
    "status, code, kind, ending",
    [
        (404, "UNREGISTERED", FAILED, "404 UNREGISTERED: Requested entity was not found."),
        # the FcmError detail, not the status, names what happened
        (
            403,
            "SENDER_ID_MISMATCH",
            FAILED,
            "403 SENDER_ID_MISMATCH: Requested entity was not found.",
        ),
        (
            403,
            "PERMISSION_DENIED",
            STOP,
            f"403 PERMISSION_DENIED: Requested entity was not found; check ${PUSH_TOKEN_ENV} "
            "([push_api] token_env) and [push_api] project_id",
        ),
        (
            404,
            "NOT_FOUND",
            STOP,
            "404 NOT_FOUND: Requested entity was not found; check [push_api] project_id and "
            "[push_api] base_url",
        ),
        (
            401,
            "UNAUTHENTICATED",
            RENEW,
            f"401 UNAUTHENTICATED: Requested entity was not found; check ${PUSH_TOKEN_ENV} "
            "([push_api] token_env)",
        ),
    ],
)
def test_fcm_error_codes_decide_what_a_push_answer_means(monkeypatch, status, code, kind, ending):
    outcome = push_provider(monkeypatch).interpret(
        fcm_error(status, code, "Requested entity was not found.")
    )

    assert outcome.kind == kind
    assert outcome.error == f"push provider answered {ending}"


def test_push_quota_waits_until_the_retry_after_date(monkeypatch):
    answer = fcm_error(429, "QUOTA_EXCEEDED", "quota", headers={"Retry-After": in_seconds(30)})

    outcome = push_provider(monkeypatch).interpret(answer)

    assert outcome.kind == RATE_LIMITED and 28 <= outcome.retry_after <= 30


def test_a_static_push_token_cannot_be_renewed_and_is_masked(monkeypatch):
    push = push_provider(monkeypatch)

    assert push.renew() is False
    assert push.masked() == [push.secrets[PUSH_TOKEN_ENV]]
    assert push.account() == PROJECT, "FCM's quota is the project's"


def test_a_push_preview_reads_the_key_file_and_asks_google_for_nothing(monkeypatch, tmp_path):
    key = {
        "type": "service_account",
        "project_id": "from-the-key",
        "client_email": "sender@from-the-key.iam.gserviceaccount.com",
        "private_key": "not read by a preview",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    (tmp_path / "key.json").write_text(json.dumps(key))
    monkeypatch.setenv("UNIT_PUSH_KEY", str(tmp_path / "key.json"))
    preview = push_provider(
        monkeypatch, preview=True, project_id="", service_account_env="UNIT_PUSH_KEY"
    )

    request = preview.request("device-1", {"title.txt": "t", "body.txt": "b"}, CONTEXT)

    assert preview.tokens is None and preview.project_id == "from-the-key"
    assert request.url == f"{BASE_URL}/v1/projects/from-the-key/messages:send"
    assert request.headers == {"Authorization": "Bearer <access token minted from $UNIT_PUSH_KEY>"}


def test_push_needs_a_project(monkeypatch):
    push_provider(monkeypatch).check()
    with pytest.raises(PermanentError, match=r"^\[push_api\] project_id is not set"):
        push_provider(monkeypatch, project_id="").check()


# -- all three: an answer in another format is another server's ---------------------------------


@pytest.mark.parametrize(
    "make, name",
    [(email_provider, "SendGrid"), (sms_provider, "Twilio"), (push_provider, "FCM")],
)
def test_an_html_error_page_stops_the_channel_naming_base_url(monkeypatch, make, name):
    provider = make(monkeypatch)

    outcome = provider.interpret(response(400, **HTML_PAGE))

    assert outcome.kind == STOP
    assert outcome.error == (
        f"{provider.channel} provider answered 400 with a body that is not {name}'s "
        f"(text/html); check [{provider.section}] base_url"
    )
