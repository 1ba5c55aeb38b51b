"""Hand-built provider answers, and the three real providers made with test credentials.

The answers are ``requests.Response`` objects built as ``requests`` builds them from the
wire (status, headers, body bytes), in each provider's own error shape, so that a provider's
``interpret`` reads them exactly as it reads a real answer.
"""

from __future__ import annotations

import json
import secrets

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from campaign_pipeline.config import email_api, push_api, sms_api
from campaign_pipeline.providers.email import EmailProvider
from campaign_pipeline.providers.push import FCM_ERROR_TYPE, PushProvider
from campaign_pipeline.providers.sms import SmsProvider
from campaign_pipeline.sandbox.fcm import FCM_STATUS  # the statuses the fake FCM answers with

BASE_URL = "https://provider.invalid"
# The environment variables the test providers read their credentials from.
EMAIL_TOKEN_ENV = "UNIT_EMAIL_TOKEN"
SMS_SID_ENV = "UNIT_SMS_ACCOUNT_SID"
SMS_TOKEN_ENV = "UNIT_SMS_AUTH_TOKEN"
PUSH_TOKEN_ENV = "UNIT_PUSH_TOKEN"
UNSUBSCRIBE_KEY_ENV = "UNIT_UNSUBSCRIBE_KEY"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
PROJECT = "unit-project"


def response(
    status: int,
    body: object = None,
    headers: dict[str, str] | None = None,
    text: str | None = None,
    reason: str = "",
) -> requests.Response:
    """An answer as ``requests`` returns it: *body* as JSON, or *text* as it is."""
    answer = requests.Response()
    answer.status_code = status
    answer.reason = reason
    answer.headers = CaseInsensitiveDict(headers or {})
    if body is not None:
        answer._content = json.dumps(body).encode()
        answer.headers.setdefault("Content-Type", "application/json")
    else:
        answer._content = (text or "").encode()
    answer.encoding = "utf-8"
    return answer


def sendgrid_error(status: int, *errors: tuple[str | None, str], **kw) -> requests.Response:
    """SendGrid's ``{"errors": [{"message", "field", "help"}]}``; *errors* are (field, message)."""
    body = {"errors": [{"message": m, "field": f, "help": None} for f, m in errors]}
    return response(status, body, **kw)


def twilio_error(status: int, code: str | int | None, message: str, **kw) -> requests.Response:
    """Twilio's ``{"code", "message", "more_info", "status"}``."""
    more = f"https://www.twilio.com/docs/errors/{code}" if code else None
    body = {"code": int(code) if code else None, "message": message, "more_info": more}
    return response(status, {**body, "status": status}, **kw)


def fcm_error(status: int, code: str, message: str, **kw) -> requests.Response:
    """FCM v1's ``{"error": {"code", "message", "status", "details"}}``: *code* is an FCM
    ``errorCode`` (in an FcmError detail) or, for errors FCM has no code for, the status."""
    error: dict = {"code": status, "message": message}
    if code in FCM_CODES:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": code}]
        if status in FCM_STATUS:
            error["status"] = FCM_STATUS[status]
    elif code or status in FCM_STATUS:
        error["status"] = code or FCM_STATUS[status]
    return response(status, {"error": error}, **kw)


# FCM's own errorCode values (google.firebase.fcm.v1.FcmError); others come as a status only
FCM_CODES = {
    "UNSPECIFIED_ERROR",
    "INVALID_ARGUMENT",
    "UNREGISTERED",
    "SENDER_ID_MISMATCH",
    "QUOTA_EXCEEDED",
    "UNAVAILABLE",
    "INTERNAL",
    "THIRD_PARTY_AUTH_ERROR",
}


def email_provider(
    monkeypatch: pytest.MonkeyPatch,
    preview: bool = False,
    unsubscribe_key: str | None = None,
    **settings,
) -> EmailProvider:
    """SendGrid with test credentials (*unsubscribe_key*: the links' key, default random);
    no unsubscribe path unless *settings* give one (the tests of unsubscribing do), so the
    other tests see the request's own parts."""
    monkeypatch.setenv(EMAIL_TOKEN_ENV, "SG." + secrets.token_hex(16))
    monkeypatch.setenv(UNSUBSCRIBE_KEY_ENV, unsubscribe_key or secrets.token_hex(32))
    values = {
        "base_url": BASE_URL,
        "token_env": EMAIL_TOKEN_ENV,
        "from_email": "shop@example.com",
        "from_name": "",
        "custom_args": ["campaign", "customer_id"],
        "unsubscribe_url": "",
        "unsubscribe_mailto": "",
        "unsubscribe_key_env": UNSUBSCRIBE_KEY_ENV,
        "asm_group_id": 0,
        "transactional": True,
        **settings,
    }
    return EmailProvider(email_api(**values), preview=preview)


def sms_provider(monkeypatch: pytest.MonkeyPatch, **settings) -> SmsProvider:
    monkeypatch.setenv(SMS_SID_ENV, ACCOUNT_SID)
    monkeypatch.setenv(SMS_TOKEN_ENV, "auth-" + secrets.token_hex(16))
    values = {
        "base_url": BASE_URL,
        "account_sid_env": SMS_SID_ENV,
        "auth_token_env": SMS_TOKEN_ENV,
        "api_key_sid_env": "",
        "api_key_secret_env": "",
        "from_number": "+15005550006",
        "messaging_service_sid": "",
        "opt_out_text": "",  # the tests of the opt-out line set it
        **settings,
    }
    return SmsProvider(sms_api(**values))


def push_provider(
    monkeypatch: pytest.MonkeyPatch, preview: bool = False, **settings
) -> PushProvider:
    monkeypatch.setenv(PUSH_TOKEN_ENV, "ya29." + secrets.token_hex(16))
    values = {
        "base_url": BASE_URL,
        "project_id": PROJECT,
        "token_env": PUSH_TOKEN_ENV,
        "service_account_env": "",
        "data": ["campaign", "customer_id"],
        **settings,
    }
    return PushProvider(push_api(**values), preview=preview)
