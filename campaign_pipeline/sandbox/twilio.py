"""Twilio's Messages API as the sandbox plays it:
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``.

HTTP Basic with the account SID and auth token (``SMS_API_ACCOUNT_SID``,
``SMS_API_AUTH_TOKEN``) or an API key (``SMS_API_KEY_SID``, ``SMS_API_KEY_SECRET``), a form
body, ``201`` with the message resource; Twilio's magic test numbers fail permanently.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from email.utils import formatdate
from typing import Any

from ..smstext import segments
from .bucket import ChannelLimit
from .endpoint import Endpoint, Message, RejectedError, Reply, read_form, retry_after

E164 = re.compile(r"\+[1-9]\d{1,14}")


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


class SmsEndpoint(Endpoint):
    channel = "sms"
    provider = "Twilio"
    route = re.compile(r"/2010-04-01/Accounts/(?P<account_sid>[^/]+)/Messages\.json")
    content_type = "application/x-www-form-urlencoded"
    limit = ChannelLimit(5, 20)
    credential_vars = ("SMS_API_ACCOUNT_SID", "SMS_API_AUTH_TOKEN")
    optional_credential_vars = ("SMS_API_KEY_SID", "SMS_API_KEY_SECRET")
    credentials_note = (
        "or a Twilio API key in SMS_API_KEY_SID and SMS_API_KEY_SECRET (with the AccountSid "
        "in the URL)"
    )

    @classmethod
    def demo_credentials(cls) -> dict[str, str]:
        """Random values shaped like Twilio's: AC.../SK... SIDs and 32-hex-digit secrets."""
        return {
            "SMS_API_ACCOUNT_SID": "AC" + secrets.token_hex(16),
            "SMS_API_AUTH_TOKEN": secrets.token_hex(16),
            "SMS_API_KEY_SID": "SK" + secrets.token_hex(16),
            "SMS_API_KEY_SECRET": secrets.token_hex(16),
            **{name: secrets.token_hex(32) for name in cls.client_vars},
        }

    def authorized(self, headers: Any, params: dict[str, str]) -> bool:
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        account = self.credential("SMS_API_ACCOUNT_SID")
        pairs = [(account, self.credential("SMS_API_AUTH_TOKEN"))]
        key_sid, key_secret = (
            self.credential("SMS_API_KEY_SID"),
            self.credential("SMS_API_KEY_SECRET"),
        )
        if key_sid and key_secret:
            pairs.append((key_sid, key_secret))
        known = any(
            secrets.compare_digest(user, sid) and secrets.compare_digest(password, token)
            for sid, token in pairs
        )
        return known and params["account_sid"] == account

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
            raise RejectedError(twilio_error(400, 21604, "A 'To' phone number is required."))
        if not E164.fullmatch(to):
            message = f"The 'To' number {to} is not a valid phone number."
            raise RejectedError(twilio_error(400, 21211, message))
        if not text:
            raise RejectedError(twilio_error(400, 21602, "Message body is required."))
        if len(text) > 1600:
            message = "The concatenated message body exceeds the 1600 character limit."
            raise RejectedError(twilio_error(400, 21617, message))
        if bool(sender) == bool(service):
            raise RejectedError(twilio_error(400, 21603, "A 'From' phone number is required."))
        if sender and not E164.fullmatch(sender):
            message = f"The 'From' number {sender} is not a valid phone number."
            raise RejectedError(twilio_error(400, 21212, message))
        if service and not re.fullmatch(r"MG[0-9a-fA-F]{32}", service):
            message = f"The Messaging Service Sid {service} is invalid."
            raise RejectedError(twilio_error(400, 21705, message))
        return [Message(to, None, None, form)]

    def check_permanent(self, messages: list[Message]) -> None:
        for m in messages:
            if m.recipient in TWILIO_MAGIC_TO:
                code, message = TWILIO_MAGIC_TO[m.recipient]
                raise RejectedError(twilio_error(400, code, message))
            if m.recipient in self.config.opted_out:  # replied STOP (--opted-out)
                code, message = TWILIO_MAGIC_TO["+15005550004"]
                raise RejectedError(twilio_error(400, code, message))

    def respond(self, messages: list[Message], params: dict[str, str]) -> tuple[Reply, str]:
        form, account = messages[0].request, self.credential("SMS_API_ACCOUNT_SID")
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
            "num_segments": str(segments(form["Body"])),
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
