"""Local sandbox of the three message providers the pipeline talks to.

It answers on 127.0.0.1 only, speaking the providers' own wire formats, so the pipeline's HTTP
clients can point their base URL at it:

- email, SendGrid v3: ``POST /v3/mail/send`` (Bearer token, JSON, ``202`` + ``X-Message-Id``)
- sms, Twilio: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (HTTP Basic, form)
- push, FCM HTTP v1: ``POST /v1/projects/{project_id}/messages:send`` (Bearer token, JSON)
- Google's OAuth2 token endpoint: ``POST /token`` (JWT-bearer grant of a trusted
  service-account key; the access tokens it issues expire, see :mod:`.sandbox_oauth`)
- ``GET /_stats``: per-channel counters (no auth)

Each provider has a strict token bucket, optional latency, random or deterministic faults
(503 or a hang followed by 503) and the permanent errors of the real services (SendGrid
``bounce*@`` addresses, Twilio's magic test numbers, FCM ``unregistered*``/``invalid*`` tokens).
Every accepted message is kept in memory and optionally appended to a JSONL file.

CLI (console script ``campaign-sandbox``)::

    campaign-sandbox [--port 8765] [--latency-ms 0] [--latency-jitter 0] [--error-rate 0]
                     [--hang-rate 0] [--hang-seconds 30] [--fail-first 0] [--hang-first 0]
                     [--record PATH] [--seed 0] [--no-rate-limit] [--demo-credentials]
                     [--echo-credentials] [--service-account PATH ...]
                     [--token-lifetime 3600]
                     [--error-rule CHANNEL:REGEX:STATUS[:CODE[:TIMES]] ...]
                     [--email-rate 10 --email-burst 50 --sms-rate 5 --sms-burst 20
                      --push-rate 2 --push-burst 10] [-- COMMAND ...]

Credentials come from EMAIL_API_TOKEN, SMS_API_ACCOUNT_SID, SMS_API_AUTH_TOKEN and
PUSH_API_TOKEN (and optionally a Twilio API key in SMS_API_KEY_SID and SMS_API_KEY_SECRET),
or ``--demo-credentials`` makes up random ones and passes them on to COMMAND.
Without COMMAND it serves until SIGINT/SIGTERM; with ``-- COMMAND ...`` it runs
the command (with SANDBOX_BASE_URL added to its environment), stops when the command exits and
returns its exit code.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .sandbox_oauth import TOKEN_PATH, TokenIssuer, new_key

CHANNELS = ("email", "sms", "push")
ENV_VARS = ("EMAIL_API_TOKEN", "SMS_API_ACCOUNT_SID", "SMS_API_AUTH_TOKEN", "PUSH_API_TOKEN")
API_KEY_VARS = ("SMS_API_KEY_SID", "SMS_API_KEY_SECRET")  # optional: a Twilio API key


@dataclass
class ChannelLimit:
    """A strict token bucket of the provider."""

    rate_per_second: float
    burst: int


def default_limits() -> dict[str, ChannelLimit | None]:
    return {
        "email": ChannelLimit(10, 50),
        "sms": ChannelLimit(5, 20),
        "push": ChannelLimit(2, 10),
    }


@dataclass
class ErrorRule:
    """Answer requests for recipients matching *pattern* with a provider error, on demand.

    ``code`` is the provider's own code (Twilio's number, FCM's errorCode; SendGrid has
    none). ``times`` > 0 answers so only that many times per recipient, then lets the
    request through, like a transient failure that clears.
    """

    channel: str
    pattern: str
    status: int
    code: str = ""
    times: int = 0

    @classmethod
    def parse(cls, text: str) -> ErrorRule:
        """``CHANNEL:REGEX:STATUS[:CODE[:TIMES]]``, e.g. ``sms:^\\+1415:400:21211``."""
        channel, pattern, status, *rest = text.split(":")
        code = rest[0] if rest else ""
        return cls(channel, pattern, int(status), code, int(rest[1]) if len(rest) > 1 else 0)


@dataclass
class SandboxConfig:
    email_token: str
    sms_account_sid: str
    sms_auth_token: str
    push_token: str
    port: int = 0
    limits: dict[str, ChannelLimit | None] = field(default_factory=default_limits)
    latency_ms: float = 0
    latency_jitter: float = 0.0
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    fail_first: int = 0
    hang_first: int = 0
    record_path: str | None = None
    seed: int = 0
    error_rules: list[ErrorRule] = field(default_factory=list)
    # error answers quote the request's path and Authorization header, as a careless
    # provider or proxy might: the client must mask what comes back
    echo_credentials: bool = False
    keep_messages: bool = True  # False: count accepted messages only (million-message runs)
    sms_api_key_sid: str = ""  # a Twilio API key (SK...) taken besides the auth token
    sms_api_key_secret: str = ""
    token_lifetime: float = 3600.0  # seconds an OAuth2 access token lasts, as Google's


class TokenBucket:
    """Capacity ``burst``, refilled at ``rate`` tokens per second, starting full."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.capacity = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take one token: 0.0 if taken, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            if self.rate <= 0:
                return 3600.0
            return (1 - self.tokens) / self.rate


@dataclass
class Reply:
    status: int
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Message:
    recipient: str
    campaign: str | None
    customer_id: str | None
    request: dict


class Rejected(Exception):
    def __init__(self, reply: Reply):
        super().__init__(reply.status)
        self.reply = reply


E164 = re.compile(r"\+[1-9]\d{1,14}")
ROUGH_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


def bearer_token(headers: Any) -> str:
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def bearer_ok(headers: Any, token: str) -> bool:
    value = bearer_token(headers)
    return bool(token and value) and secrets.compare_digest(value, token)


def media_type(headers: Any) -> str:
    return (headers.get("Content-Type") or "").split(";")[0].strip().lower()


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class Endpoint:
    """One provider endpoint: its route, credentials, body validation and answers."""

    channel = ""
    route: re.Pattern[str]
    content_type = ""

    def __init__(self, config: SandboxConfig):
        self.config = config

    def match(self, method: str, path: str) -> dict[str, str] | None:
        found = self.route.fullmatch(path)
        return found.groupdict() if found and method == "POST" else None

    def messages(self, headers: Any, body: bytes, params: dict[str, str]) -> list[Message]:
        """Validate the request (raising Rejected) and return the messages it carries."""
        if media_type(headers) != self.content_type:
            raise Rejected(self.unsupported_media())
        found = self.parse(body, params)
        self.check_permanent(found)
        return found

    # Provider-specific parts.
    def authorized(self, headers: Any, params: dict[str, str]) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> Reply:
        raise NotImplementedError

    def rate_limited(self, wait: float, burst: int) -> Reply:
        raise NotImplementedError

    def unavailable(self) -> Reply:
        raise NotImplementedError

    def error(self, status: int, code: str) -> Reply:
        """The provider's answer for an error rule: its body shape, and a wait where due."""
        raise NotImplementedError

    def unsupported_media(self) -> Reply:
        raise NotImplementedError

    def recipients(self, body: bytes) -> list[str]:
        """Recipients read leniently, before validation, for the per-recipient faults."""
        raise NotImplementedError

    def parse(self, body: bytes, params: dict[str, str]) -> list[Message]:
        raise NotImplementedError

    def check_permanent(self, messages: list[Message]) -> None:
        raise NotImplementedError

    def respond(self, messages: list[Message], params: dict[str, str]) -> tuple[Reply, str]:
        """The success reply and the message id recorded with the messages."""
        raise NotImplementedError


def sendgrid_error(status: int, message: str, path: str | None = None, **headers: str) -> Reply:
    return Reply(status, {"errors": [{"field": path, "message": message}]}, headers)


class EmailEndpoint(Endpoint):
    channel = "email"
    route = re.compile(r"/v3/mail/send")
    content_type = "application/json"

    def authorized(self, headers: Any, params: dict[str, str]) -> bool:
        return bearer_ok(headers, self.config.email_token)

    def unauthorized(self) -> Reply:
        message = "The provided authorization grant is invalid, expired, or revoked"
        return sendgrid_error(401, message)

    def rate_limited(self, wait: float, burst: int) -> Reply:
        headers = {
            "X-RateLimit-Limit": str(burst),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(time.time() + wait)),
        }
        return sendgrid_error(429, "too many requests", **headers)

    def unavailable(self) -> Reply:
        return sendgrid_error(503, "service unavailable")

    def error(self, status: int, code: str) -> Reply:
        """SendGrid has no codes: *code* is the field the error names, e.g. ``from.email``."""
        if status == 429:
            return self.rate_limited(1.0, 0)
        return sendgrid_error(status, f"sandbox error rule: {status}", code or None)

    def unsupported_media(self) -> Reply:
        return sendgrid_error(415, "Content-Type should be application/json.")

    def recipients(self, body: bytes) -> list[str]:
        data = load_json(body)
        found = []
        if isinstance(data, dict) and isinstance(data.get("personalizations"), list):
            for p in data["personalizations"]:
                with contextlib.suppress(KeyError, IndexError, TypeError):
                    found.append(str(p["to"][0]["email"]))
        return found

    def parse(self, body: bytes, params: dict[str, str]) -> list[Message]:
        data = load_json(body)
        if not isinstance(data, dict):
            raise Rejected(sendgrid_error(400, "Bad Request"))
        check_sender(data)
        check_content(data)
        top_args = check_custom_args(data.get("custom_args"), "custom_args")
        people = data.get("personalizations")
        if not isinstance(people, list) or not people or len(people) > 1000:
            message = (
                "The personalizations field is required and must have at least one "
                "personalization, and at most 1000."
            )
            raise Rejected(sendgrid_error(400, message, "personalizations"))
        return [self.message(data, p, i, top_args) for i, p in enumerate(people)]

    def message(self, data: dict, p: Any, i: int, top_args: dict) -> Message:
        path = f"personalizations.{i}"
        if not isinstance(p, dict):
            raise Rejected(sendgrid_error(400, "Invalid type. Expected: object.", path))
        check_to(p.get("to"), path)
        subject = p.get("subject", data.get("subject"))
        if not isinstance(subject, str) or not subject:
            message = (
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined."
            )
            raise Rejected(sendgrid_error(400, message, "subject"))
        args = {**top_args, **check_custom_args(p.get("custom_args"), f"{path}.custom_args")}
        tags = check_substitutions(p.get("substitutions"), f"{path}.substitutions")
        content = [{**c, "value": substitute(c["value"], tags)} for c in data["content"]]
        subject = substitute(subject, tags)
        request = {**p, "from": data["from"], "subject": subject, "content": content}
        return Message(p["to"][0]["email"], args.get("campaign"), args.get("customer_id"), request)

    def check_permanent(self, messages: list[Message]) -> None:
        for i, m in enumerate(messages):
            for j, to in enumerate(m.request["to"]):
                if to["email"].lower().startswith("bounce"):
                    path = f"personalizations.{i}.to.{j}.email"
                    raise Rejected(sendgrid_error(400, "Does not contain a valid address.", path))

    def respond(self, messages: list[Message], params: dict[str, str]) -> tuple[Reply, str]:
        message_id = secrets.token_urlsafe(16)  # 22 url-safe characters, like SendGrid's
        return Reply(202, None, {"X-Message-Id": message_id}), message_id


def check_sender(data: dict) -> None:
    sender = data.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        message = (
            "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter."
        )
        raise Rejected(sendgrid_error(400, message, "from.email"))
    if not ROUGH_EMAIL.fullmatch(sender["email"]):
        raise Rejected(sendgrid_error(400, "Does not contain a valid address.", "from.email"))


def check_content(data: dict) -> None:
    content = data.get("content")
    if not isinstance(content, list) or not content:
        message = (
            "Unless a valid template_id is provided, the content parameter is required. "
            "There must be at least one defined content block."
        )
        raise Rejected(sendgrid_error(400, message, "content"))
    for i, block in enumerate(content):
        ok = isinstance(block, dict) and isinstance(block.get("type"), str)
        if not ok or not isinstance(block.get("value"), str) or not block["value"]:
            message = "The content value must be a string at least one character in length."
            raise Rejected(sendgrid_error(400, message, f"content.{i}.value"))
    types = [block["type"] for block in content]
    if "text/plain" in types and types[0] != "text/plain":
        message = "If present, text/plain must be first, followed by text/html."
        raise Rejected(sendgrid_error(400, message, "content.0.type"))


def check_to(to: Any, path: str) -> None:
    if not isinstance(to, list) or not to:
        message = (
            "The to array is required for all personalization objects, and must have at "
            "least one email object with a valid email address."
        )
        raise Rejected(sendgrid_error(400, message, f"{path}.to"))
    for j, entry in enumerate(to):
        email = entry.get("email") if isinstance(entry, dict) else None
        if not isinstance(email, str) or not ROUGH_EMAIL.fullmatch(email):
            message = "Does not contain a valid address."
            raise Rejected(sendgrid_error(400, message, f"{path}.to.{j}.email"))
        if not isinstance(entry.get("name", ""), str):
            message = "Invalid type. Expected: string."
            raise Rejected(sendgrid_error(400, message, f"{path}.to.{j}.name"))


def check_substitutions(tags: Any, path: str) -> dict:
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise Rejected(sendgrid_error(400, "Invalid type. Expected: object of strings.", path))
    return tags


def substitute(text: str, tags: dict[str, str]) -> str:
    """Replace each tag in turn, as SendGrid does: a value holding a tag replaced later has
    that tag replaced too. The message stored is the one the recipient would read."""
    for tag, value in tags.items():
        text = text.replace(tag, value)
    return text


def check_custom_args(args: Any, path: str) -> dict:
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise Rejected(sendgrid_error(400, "Invalid type. Expected: object.", path))
    for key, value in args.items():
        if not isinstance(value, str):
            given = type(value).__name__
            message = f"Invalid type. Expected: string, given: {given}."
            raise Rejected(sendgrid_error(400, message, f"{path}.{key}"))
    return args


def twilio_error(status: int, code: int, message: str, **headers: str) -> Reply:
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    body = {"code": code, "message": message, "more_info": more_info, "status": status}
    return Reply(status, body, headers)


# Twilio's magic test numbers: To values that always fail permanently.
TWILIO_MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the "
        "'To' number",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = set("^{}\\[~]|€\f")


def sms_segments(body: str) -> int:
    if all(c in GSM_BASIC or c in GSM_EXTENDED for c in body):
        units = sum(2 if c in GSM_EXTENDED else 1 for c in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def read_form(body: bytes) -> dict[str, str]:
    pairs = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in pairs.items()}


class SmsEndpoint(Endpoint):
    channel = "sms"
    route = re.compile(r"/2010-04-01/Accounts/(?P<account_sid>[^/]+)/Messages\.json")
    content_type = "application/x-www-form-urlencoded"

    def authorized(self, headers: Any, params: dict[str, str]) -> bool:
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        config = self.config
        pairs = [(config.sms_account_sid, config.sms_auth_token)]
        if config.sms_api_key_sid and config.sms_api_key_secret:
            pairs.append((config.sms_api_key_sid, config.sms_api_key_secret))
        known = any(
            secrets.compare_digest(user, sid) and secrets.compare_digest(password, token)
            for sid, token in pairs
        )
        return known and params["account_sid"] == config.sms_account_sid

    def unauthorized(self) -> Reply:
        return twilio_error(401, 20003, "Authenticate")

    def rate_limited(self, wait: float, burst: int) -> Reply:
        return twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": retry_after(wait)})

    def unavailable(self) -> Reply:
        return twilio_error(503, 20500, "Internal Server Error")

    def error(self, status: int, code: str) -> Reply:
        headers = {"Retry-After": "1"} if status == 429 or status >= 500 else {}
        return twilio_error(status, int(code or 0), f"sandbox error rule: {code}", **headers)

    def unsupported_media(self) -> Reply:
        # Twilio documents no code for this; the sandbox uses 20415 to keep the error shape.
        return twilio_error(415, 20415, "Unsupported Media Type")

    def recipients(self, body: bytes) -> list[str]:
        to = read_form(body).get("To")
        return [to] if to else []

    def parse(self, body: bytes, params: dict[str, str]) -> list[Message]:
        form = read_form(body)
        to, text = form.get("To"), form.get("Body")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not to:
            raise Rejected(twilio_error(400, 21604, "A 'To' phone number is required."))
        if not E164.fullmatch(to):
            message = f"The 'To' number {to} is not a valid phone number."
            raise Rejected(twilio_error(400, 21211, message))
        if not text:
            raise Rejected(twilio_error(400, 21602, "Message body is required."))
        if len(text) > 1600:
            message = "The concatenated message body exceeds the 1600 character limit."
            raise Rejected(twilio_error(400, 21617, message))
        if bool(sender) == bool(service):
            raise Rejected(twilio_error(400, 21603, "A 'From' phone number is required."))
        if sender and not E164.fullmatch(sender):
            message = f"The 'From' number {sender} is not a valid phone number."
            raise Rejected(twilio_error(400, 21212, message))
        if service and not re.fullmatch(r"MG[0-9a-fA-F]{32}", service):
            message = f"The Messaging Service Sid {service} is invalid."
            raise Rejected(twilio_error(400, 21705, message))
        return [Message(to, None, None, form)]

    def check_permanent(self, messages: list[Message]) -> None:
        for m in messages:
            if m.recipient in TWILIO_MAGIC_TO:
                code, message = TWILIO_MAGIC_TO[m.recipient]
                raise Rejected(twilio_error(400, code, message))

    def respond(self, messages: list[Message], params: dict[str, str]) -> tuple[Reply, str]:
        form, account = messages[0].request, self.config.sms_account_sid
        sid = "SM" + secrets.token_hex(16)
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        uri = f"/2010-04-01/Accounts/{account}/Messages/{sid}"
        body = {
            "sid": sid,
            "account_sid": account,
            "to": form["To"],
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "body": form["Body"],
            "status": "queued",
            "num_segments": str(sms_segments(form["Body"])),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "uri": uri + ".json",
            "subresource_uris": {"media": uri + "/Media.json"},
        }
        return Reply(201, body), sid


FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
FCM_MESSAGE_KEYS = {
    "name", "token", "topic", "condition", "data", "notification",
    "android", "apns", "webpush", "fcm_options", "fcmOptions",
}  # fmt: skip


# google.rpc status names of the HTTP statuses FCM answers with.
FCM_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def fcm_error(status: int, state: str, message: str, code: str | None, **headers: str) -> Reply:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if code:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": code}]
    return Reply(status, {"error": error}, headers)


def invalid_argument(message: str) -> Rejected:
    return Rejected(fcm_error(400, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT"))


class PushEndpoint(Endpoint):
    channel = "push"
    route = re.compile(r"/v1/projects/(?P<project_id>[^/]+)/messages:send")
    content_type = "application/json"

    def __init__(self, config: SandboxConfig, tokens: TokenIssuer):
        super().__init__(config)
        self.tokens = tokens

    def authorized(self, headers: Any, params: dict[str, str]) -> bool:
        """The static token, or an access token the token endpoint issued and not expired."""
        return bearer_ok(headers, self.config.push_token) or self.tokens.valid(
            bearer_token(headers)
        )

    def unauthorized(self) -> Reply:
        message = "Request had invalid authentication credentials."
        return fcm_error(401, "UNAUTHENTICATED", message, None)

    def rate_limited(self, wait: float, burst: int) -> Reply:
        message = "Quota exceeded for quota metric 'Send requests'."
        headers = {"Retry-After": retry_after(wait)}
        return fcm_error(429, "RESOURCE_EXHAUSTED", message, "QUOTA_EXCEEDED", **headers)

    def unavailable(self) -> Reply:
        return fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")

    def error(self, status: int, code: str) -> Reply:
        headers = {"Retry-After": "1"} if status == 429 or status >= 500 else {}
        state = FCM_STATUS.get(status, "UNKNOWN")
        return fcm_error(status, state, f"sandbox error rule: {code}", code or None, **headers)

    def unsupported_media(self) -> Reply:
        message = "Invalid Content-Type: expected application/json."
        return fcm_error(415, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT")

    def recipients(self, body: bytes) -> list[str]:
        data = load_json(body)
        message = data.get("message") if isinstance(data, dict) else None
        token = message.get("token") if isinstance(message, dict) else None
        return [token] if isinstance(token, str) and token else []

    def parse(self, body: bytes, params: dict[str, str]) -> list[Message]:
        data = load_json(body)
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise invalid_argument("Invalid JSON payload received.")
        unknown = set(data) - {"message", "validate_only", "validateOnly"}
        message = data["message"]
        unknown |= {f"message.{key}" for key in set(message) - FCM_MESSAGE_KEYS}
        if unknown:
            name = sorted(unknown)[0]
            raise invalid_argument(f'Invalid JSON payload received. Unknown name "{name}".')
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise invalid_argument("Recipient of the message is not set.")
        check_notification(message.get("notification"))
        data_values = check_data(message.get("data"))
        if data.get("validate_only") or data.get("validateOnly"):
            return []  # FCM validates such a request without sending anything
        return [
            Message(token, data_values.get("campaign"), data_values.get("customer_id"), message)
        ]

    def check_permanent(self, messages: list[Message]) -> None:
        for m in messages:
            if m.recipient.startswith("unregistered"):
                message = "Requested entity was not found."
                raise Rejected(fcm_error(404, "NOT_FOUND", message, "UNREGISTERED"))
            if m.recipient.startswith("invalid"):
                raise invalid_argument(
                    "The registration token is not a valid FCM registration token"
                )

    def respond(self, messages: list[Message], params: dict[str, str]) -> tuple[Reply, str]:
        project = params["project_id"]
        if not messages:
            return Reply(200, {"name": f"projects/{project}/messages/fake_message_id"}), ""
        # The recorded id is the whole name, which is what a client keeps as the message id.
        name = f"projects/{project}/messages/0:{time.time_ns() // 1000}{secrets.token_hex(8)}"
        return Reply(200, {"name": name}), name


def check_notification(notification: Any) -> None:
    if notification is None:
        return
    if not isinstance(notification, dict):
        raise invalid_argument("Invalid value at 'message.notification' (type.googleapis.com).")
    for key in ("title", "body", "image"):
        value = notification.get(key)
        if value is not None and not isinstance(value, str):
            raise invalid_argument(
                f"Invalid value at 'message.notification.{key}' (TYPE_STRING), {value!r}"
            )


def check_data(data: Any) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise invalid_argument("Invalid value at 'message.data' (type.googleapis.com).")
    for i, value in enumerate(data.values()):
        if not isinstance(value, str):
            raise invalid_argument(
                f"Invalid value at 'message.data[{i}].value' (TYPE_STRING), {json.dumps(value)}"
            )
    return data


class Sandbox:
    """The three provider endpoints served on 127.0.0.1 from a daemon thread."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.port = config.port
        self.base_url = ""
        self.tokens = TokenIssuer(config.token_lifetime)
        self.endpoints = [
            EmailEndpoint(config),
            SmsEndpoint(config),
            PushEndpoint(config, self.tokens),
        ]
        self.buckets = {
            channel: TokenBucket(limit.rate_per_second, limit.burst)
            for channel, limit in config.limits.items()
            if limit is not None
        }
        self.lock = threading.Lock()
        self.random = random.Random(config.seed)
        self.stopping = threading.Event()
        self.seen: dict[tuple[str, str], int] = {}
        self.rule_hits: dict[tuple[int, str], int] = {}
        self.records: list[dict] = []
        self.counters = {c: {"requests": 0, "accepted": 0, "rate_limited": 0} for c in CHANNELS}
        self.statuses: dict[str, dict[str, int]] = {c: {} for c in CHANNELS}
        self.record_file: Any = None
        self.server: SandboxServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> Sandbox:
        if self.config.record_path:
            self.record_file = open(self.config.record_path, "a", encoding="utf-8")  # noqa: SIM115
        self.server = SandboxServer(("127.0.0.1", self.config.port), SandboxHandler, self)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() returns quickly
            name="campaign-sandbox",
            daemon=True,
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # wakes hanging and sleeping requests
        if self.server is not None:
            self.server.shutdown()
            self.server.close_connections()
            self.server.server_close()
            self.server = None
        with self.lock:
            if self.record_file is not None:
                self.record_file.close()
                self.record_file = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict:
        with self.lock:
            stats = {c: {**self.counters[c], "statuses": dict(self.statuses[c])} for c in CHANNELS}
        stats["push"]["tokens_issued"] = self.tokens.count
        return stats

    def trust(self, key: dict) -> None:
        """Issue access tokens to the service account of *key* (a parsed key file)."""
        self.tokens.trust(key)

    def new_service_account(self, project_id: str = "demo-project") -> dict:
        """A new test service-account key for this sandbox's token endpoint, trusted."""
        key = new_key(self.base_url + TOKEN_PATH, project_id)
        self.trust(key)
        return key

    def accepted(self) -> list[dict]:
        with self.lock:
            return list(self.records)

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Reply:
        path = urlsplit(target).path
        if method == "GET" and path == "/_stats":
            return Reply(200, self.stats())
        if method == "POST" and path == TOKEN_PATH:
            return Reply(*self.tokens.grant(media_type(headers), body))
        for endpoint in self.endpoints:
            params = endpoint.match(method, path)
            if params is not None:
                arrived = time.time()
                reply = self.decide(endpoint, params, headers, body)
                if self.config.echo_credentials and reply.status >= 400:
                    reply = echoed(reply, f"{method} {path} {headers.get('Authorization')}")
                self.count(endpoint.channel, reply.status, arrived)
                self.stopping.wait(self.latency())
                return reply
        return Reply(404, {"error": "not found"})

    def decide(self, endpoint: Endpoint, params: dict, headers: Any, body: bytes) -> Reply:
        if not endpoint.authorized(headers, params):
            return endpoint.unauthorized()
        bucket = self.buckets.get(endpoint.channel)
        wait = bucket.take() if bucket else 0.0
        if wait:
            return endpoint.rate_limited(wait, bucket.capacity)
        fault = self.fault(endpoint, body)
        if fault == "hang":
            self.stopping.wait(self.config.hang_seconds)
        if fault:
            return endpoint.unavailable()
        if rule := self.matching_rule(endpoint, body):
            return endpoint.error(rule.status, rule.code)
        try:
            messages = endpoint.messages(headers, body, params)
        except Rejected as rejected:
            return rejected.reply
        reply, message_id = endpoint.respond(messages, params)
        self.accept(endpoint.channel, messages, message_id)
        return reply

    def fault(self, endpoint: Endpoint, body: bytes) -> str | None:
        """'hang', 'fail' or None; a request fails while any recipient has faults left."""
        config = self.config
        with self.lock:
            keys = [(endpoint.channel, r) for r in endpoint.recipients(body)]
            done = min((self.seen.get(key, 0) for key in keys), default=math.inf)
            for key in keys:
                self.seen[key] = self.seen.get(key, 0) + 1
            hang = config.hang_rate > 0 and self.random.random() < config.hang_rate
            fail = config.error_rate > 0 and self.random.random() < config.error_rate
        if done < config.hang_first or hang:
            return "hang"
        if done < config.fail_first or fail:
            return "fail"
        return None

    def matching_rule(self, endpoint: Endpoint, body: bytes) -> ErrorRule | None:
        """The first error rule for one of the request's recipients that still applies."""
        rules = [r for r in self.config.error_rules if r.channel == endpoint.channel]
        for recipient in endpoint.recipients(body) if rules else []:
            for rule in rules:
                if not re.search(rule.pattern, recipient):
                    continue
                with self.lock:
                    key = (id(rule), recipient)
                    self.rule_hits[key] = hits = self.rule_hits.get(key, 0) + 1
                if not rule.times or hits <= rule.times:
                    return rule
        return None

    def latency(self) -> float:
        seconds = self.config.latency_ms / 1000
        jitter = self.config.latency_jitter
        if seconds <= 0 or jitter <= 0:
            return max(seconds, 0.0)
        with self.lock:
            return seconds * self.random.uniform(1 - jitter, 1 + jitter)

    def accept(self, channel: str, messages: list[Message], message_id: str) -> None:
        with self.lock:
            for m in messages:
                record = {
                    "channel": channel,
                    "received_at": time.time(),
                    "message_id": message_id,
                    "recipient": m.recipient,
                    "campaign": m.campaign,
                    "customer_id": m.customer_id,
                    "request": m.request,
                }
                if self.config.keep_messages:
                    self.records.append(record)
                self.counters[channel]["accepted"] += 1
                if self.record_file is not None:
                    self.record_file.write(json.dumps(record) + "\n")
                    self.record_file.flush()

    def count(self, channel: str, status: int, arrived: float) -> None:
        with self.lock:
            counters = self.counters[channel]
            counters["requests"] += 1
            counters.setdefault("first_request_at", arrived)
            counters["last_request_at"] = arrived
            if status == 429:
                self.counters[channel]["rate_limited"] += 1
            statuses = self.statuses[channel]
            statuses[str(status)] = statuses.get(str(status), 0) + 1


def echoed(reply: Reply, request: str) -> Reply:
    """*reply* with *request* quoted in its error message, in each provider's body shape."""
    body = json.loads(json.dumps(reply.body or {}))
    if isinstance(body.get("errors"), list) and body["errors"]:  # SendGrid
        slot = body["errors"][0]
    elif isinstance(body.get("error"), dict):  # FCM
        slot = body["error"]
    else:  # Twilio, and the sandbox's own 404
        slot = body
    slot["message"] = f"{slot.get('message') or slot.get('error') or ''} (request: {request})"
    return Reply(reply.status, body, reply.headers)


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of new connections,
    # which a client then sees as a connect timeout; real providers accept them.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, sandbox: Sandbox):
        self.sandbox = sandbox
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        # Keep-alive handler threads would otherwise keep serving after stop().
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up mid-answer are expected (timeouts, stop())


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it keep-alive throughput collapses
    server_version = "campaign-sandbox"
    sys_version = ""
    server: SandboxServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request output; headers carry credentials

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def dispatch(self, method: str) -> None:
        body = self.read_body()
        if body is None:
            self.close_connection = True
            self.send(Reply(400, {"error": "bad Content-Length"}))
            return
        self.send(self.server.sandbox.handle(method, self.path, self.headers, body))

    def read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def send(self, reply: Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


SANDBOX_EPILOG = """\
-- COMMAND [ARG ...]
  everything after a lone "--" is a command to run once the sandbox listens, e.g.
  campaign-sandbox --demo-credentials -- luigi --module campaign_pipeline RunCampaign
  --local-scheduler. The command gets SANDBOX_BASE_URL (the sandbox's http://127.0.0.1:PORT)
  and the credentials in its environment; SIGINT/SIGTERM are passed on to it. The sandbox
  stops when the command exits, prints what it saw and exits with the command's code.
  Without a command the sandbox serves until SIGINT or SIGTERM.

credentials:
  the sandbox accepts only the credentials in EMAIL_API_TOKEN, SMS_API_ACCOUNT_SID,
  SMS_API_AUTH_TOKEN and PUSH_API_TOKEN (all four must be set), or those that
  --demo-credentials makes up; for SMS also a Twilio API key in SMS_API_KEY_SID and
  SMS_API_KEY_SECRET (with the AccountSid in the URL), and for push the access tokens its
  token endpoint (POST /token) issued to a --service-account key.
"""


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The sandbox's options, and the command after a lone ``--`` (empty when none).

    The command is split off here rather than left to argparse, so that its own options
    (``luigi --module ...``) are never taken for the sandbox's.
    """
    options, command = argv, []
    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
    return option_parser().parse_args(options), command


def option_parser() -> argparse.ArgumentParser:
    """``campaign-sandbox``'s options, each with its help text (``--help``)."""
    parser = argparse.ArgumentParser(
        prog="campaign-sandbox",
        usage="%(prog)s [OPTION ...] [-- COMMAND [ARG ...]]",
        description="Local sandbox of the email (SendGrid v3), SMS (Twilio) and push (FCM v1) "
        "providers, on 127.0.0.1.",
        epilog=SANDBOX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--port",
        type=int,
        default=8765,
        help="port on 127.0.0.1; 0 picks a free one (default: %(default)s)",
    )
    add(
        "--latency-ms",
        type=float,
        default=0,
        metavar="MS",
        help="added to every answer, in milliseconds (default: %(default)s)",
    )
    add(
        "--latency-jitter",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="latency varies by up to this fraction either way, e.g. 0.5 for ±50%% "
        "(default: %(default)s)",
    )
    add(
        "--error-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of requests answered 503 at random (default: %(default)s)",
    )
    add(
        "--hang-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of requests that hang for --hang-seconds, then are answered 503 "
        "(default: %(default)s)",
    )
    add(
        "--hang-seconds",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long a hanging request hangs (default: %(default)s)",
    )
    add(
        "--fail-first",
        type=int,
        default=0,
        metavar="N",
        help="answer 503 to the first N requests for each recipient (default: %(default)s)",
    )
    add(
        "--hang-first",
        type=int,
        default=0,
        metavar="N",
        help="hang the first N requests for each recipient, as --hang-rate does "
        "(default: %(default)s)",
    )
    add("--record", metavar="PATH", help="append every accepted message to this JSONL file")
    add(
        "--seed",
        type=int,
        default=0,
        help="seed of the random faults and jitter, for repeatable runs (default: %(default)s)",
    )
    add("--no-rate-limit", action="store_true", help="no token bucket: never answer 429")
    add(
        "--error-rule",
        action="append",
        default=[],
        type=ErrorRule.parse,
        metavar="CHANNEL:REGEX:STATUS[:CODE[:TIMES]]",
        help="answer requests for recipients matching REGEX on CHANNEL (email, sms, push) "
        "with this provider error: HTTP STATUS, the provider's CODE (Twilio's number, FCM's "
        "errorCode, the field SendGrid names), only the first TIMES times per recipient "
        "when given; repeatable",
    )
    add(
        "--echo-credentials",
        action="store_true",
        help="error answers quote the request's path and Authorization header, as a "
        "careless provider might (to test the client's masking)",
    )
    add(
        "--service-account",
        action="append",
        default=[],
        metavar="PATH",
        help="issue FCM access tokens to the service-account key file PATH; when PATH does "
        "not exist, write a new test key there whose token_uri is this sandbox's; repeatable",
    )
    add(
        "--token-lifetime",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how long an access token lasts (default: %(default)s, as Google's)",
    )
    add(
        "--demo-credentials",
        action="store_true",
        help="make up random credentials and pass them to COMMAND in the usual variables",
    )
    for channel, limit in default_limits().items():  # all set, never None
        add(
            f"--{channel}-rate",
            type=float,
            default=limit.rate_per_second,
            metavar="PER_S",
            help=f"{channel}: requests per second the token bucket allows; above it, "
            "429 (default: %(default)s)",
        )
        add(
            f"--{channel}-burst",
            type=int,
            default=limit.burst,
            metavar="N",
            help=f"{channel}: the token bucket's size (default: %(default)s)",
        )
    return parser


def config_from(args: argparse.Namespace, env: dict[str, str]) -> SandboxConfig:
    limits: dict[str, ChannelLimit | None] = {
        c: None
        if args.no_rate_limit
        else ChannelLimit(getattr(args, f"{c}_rate"), getattr(args, f"{c}_burst"))
        for c in CHANNELS
    }
    return SandboxConfig(
        email_token=env["EMAIL_API_TOKEN"],
        sms_account_sid=env["SMS_API_ACCOUNT_SID"],
        sms_auth_token=env["SMS_API_AUTH_TOKEN"],
        push_token=env["PUSH_API_TOKEN"],
        port=args.port,
        limits=limits,
        latency_ms=args.latency_ms,
        latency_jitter=args.latency_jitter,
        error_rate=args.error_rate,
        hang_rate=args.hang_rate,
        hang_seconds=args.hang_seconds,
        fail_first=args.fail_first,
        hang_first=args.hang_first,
        record_path=args.record,
        seed=args.seed,
        error_rules=args.error_rule,
        echo_credentials=args.echo_credentials,
        sms_api_key_sid=env.get("SMS_API_KEY_SID", ""),
        sms_api_key_secret=env.get("SMS_API_KEY_SECRET", ""),
        token_lifetime=args.token_lifetime,
    )


def on_signals(handler: Any) -> dict[int, Any]:
    """Install handler for SIGINT/SIGTERM; return the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def serve_until_signal() -> int:
    stop = threading.Event()
    previous = on_signals(lambda signum, frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_command(command: list[str], base_url: str) -> int:
    try:
        child = subprocess.Popen(command, env={**os.environ, "SANDBOX_BASE_URL": base_url})
    except OSError as error:
        print(f"campaign-sandbox: cannot run {command[0]}: {error}", file=sys.stderr)
        return 127
    previous = on_signals(lambda signum, frame: child.send_signal(signum))
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code  # killed by signal N: shell convention 128+N


def demo_credentials() -> dict[str, str]:
    """Fresh random credentials of the right shapes, so a demo never touches real ones."""
    return {
        "EMAIL_API_TOKEN": "sandbox-" + secrets.token_urlsafe(24),
        "SMS_API_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "SMS_API_AUTH_TOKEN": secrets.token_hex(16),
        "PUSH_API_TOKEN": "sandbox-" + secrets.token_urlsafe(24),
        "SMS_API_KEY_SID": "SK" + secrets.token_hex(16),
        "SMS_API_KEY_SECRET": secrets.token_hex(16),
    }


def main(argv: list[str] | None = None) -> int:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    if args.demo_credentials:
        os.environ.update(demo_credentials())
    missing = [name for name in ENV_VARS if not os.environ.get(name)]
    if missing:
        print(
            "campaign-sandbox: missing environment variable(s): " + ", ".join(missing),
            file=sys.stderr,
        )
        return 2
    sandbox = Sandbox(config_from(args, dict(os.environ)))
    try:
        sandbox.start()
    except OSError as error:
        print(f"campaign-sandbox: cannot listen on port {args.port}: {error}", file=sys.stderr)
        return 1
    print(f"sandbox provider listening on {sandbox.base_url}", flush=True)
    if problem := service_accounts(sandbox, args.service_account):
        print(f"campaign-sandbox: {problem}", file=sys.stderr)
        sandbox.stop()
        return 2
    try:
        return run_command(command, sandbox.base_url) if command else serve_until_signal()
    finally:
        sandbox.stop()
        print(describe(sandbox.stats()), flush=True)


def service_accounts(sandbox: Sandbox, paths: list[str]) -> str:
    """Trust the key file at each of *paths*, writing a new one where none is; return what
    went wrong, or ""."""
    for path in paths:
        try:
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    sandbox.trust(json.load(handle))
                continue
            key = sandbox.new_service_account()
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(key, handle, indent=2)
            print(f"wrote a test service-account key to {path}", flush=True)
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"--service-account {path}: not a service-account key file ({error})"
    return ""


def describe(stats: dict) -> str:
    """One line per channel of what the sandbox saw, for the end of a demo run."""
    lines = ["sandbox provider saw:"]
    for channel, seen in stats.items():
        lines.append(
            f"  {channel:<6}{seen['requests']:>7,} requests{seen['accepted']:>7,} accepted"
            f"{seen['rate_limited']:>5,} rate-limited (429)"
        )
    if tokens := stats["push"].get("tokens_issued"):
        lines.append(f"  oauth {tokens:>7,} access tokens issued")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
