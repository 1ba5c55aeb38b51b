"""What each provider error means to the pipeline: one table for all three providers.

Each row names the provider's answer (HTTP status and, where the provider has one, its own
code: Twilio's number, FCM's ``errorCode``) and the action taken:

- ``retry``: transient; the provider did not take the message, send again after the delay
- ``rate_limited``: wait as the provider says and send again, without using an attempt
- ``failed``: permanent for this recipient; recorded with the provider's code and message
- ``stop``: credentials, permissions or the account; stop the whole channel at once

An answer no row names falls back to its HTTP status (:func:`by_status`). The README's
"Provider errors" table is this table, and a test keeps the two the same.
"""

from __future__ import annotations

from dataclasses import dataclass

SENT = "sent"
FAILED = "failed"
RETRY = "retry"
RATE_LIMITED = "rate_limited"
STOP = "stop"
UNKNOWN = "unknown"  # no answer after the request left: it may have been delivered


@dataclass(frozen=True)
class ErrorRow:
    channel: str
    status: int
    code: str  # "" where the provider has no code of its own; "30xxx" is a range
    action: str
    meaning: str

    def matches(self, status: int, code: str) -> bool:
        if not self.code:
            return status == self.status
        if self.code.endswith("xxx"):
            return code.startswith(self.code[:-3])
        return code == self.code


ERROR_TABLE = (
    ErrorRow("email", 400, "", FAILED, "bad address or message body"),
    ErrorRow("email", 401, "", STOP, "API key missing, wrong or revoked"),
    ErrorRow("email", 403, "", STOP, "no mail.send, unverified sender, or suspended"),
    ErrorRow("email", 413, "", FAILED, "message too large"),
    ErrorRow("email", 429, "", RATE_LIMITED, "rate limit; wait until X-RateLimit-Reset"),
    ErrorRow("email", 500, "", RETRY, "SendGrid internal error"),
    ErrorRow("email", 502, "", RETRY, "bad gateway"),
    ErrorRow("email", 503, "", RETRY, "service unavailable"),
    ErrorRow("email", 504, "", RETRY, "gateway timeout"),
    ErrorRow("sms", 401, "20003", STOP, "authentication failed (AccountSid or auth token)"),
    ErrorRow("sms", 401, "20005", STOP, "account not active (suspended or closed)"),
    ErrorRow("sms", 429, "20429", RATE_LIMITED, "too many requests; never processed"),
    ErrorRow("sms", 400, "21211", FAILED, "invalid To number"),
    ErrorRow("sms", 400, "21408", FAILED, "sending to this region is not enabled"),
    ErrorRow("sms", 400, "21610", FAILED, "recipient unsubscribed (replied STOP)"),
    ErrorRow("sms", 400, "21612", FAILED, "cannot route to this number"),
    ErrorRow("sms", 400, "21614", FAILED, "To is not a mobile number"),
    ErrorRow("sms", 400, "21617", FAILED, "body over 1600 characters"),
    ErrorRow("sms", 400, "30xxx", FAILED, "carrier or handset refused delivery"),
    ErrorRow("sms", 500, "20500", RETRY, "Twilio internal error"),
    ErrorRow("sms", 503, "20503", RETRY, "service unavailable"),
    ErrorRow("push", 400, "INVALID_ARGUMENT", FAILED, "malformed token or message"),
    ErrorRow("push", 404, "UNREGISTERED", FAILED, "app uninstalled or token expired"),
    ErrorRow("push", 403, "SENDER_ID_MISMATCH", FAILED, "token of another Firebase project"),
    ErrorRow("push", 429, "QUOTA_EXCEEDED", RATE_LIMITED, "quota exceeded; honour Retry-After"),
    ErrorRow("push", 503, "UNAVAILABLE", RETRY, "FCM overloaded; honour Retry-After"),
    ErrorRow("push", 500, "INTERNAL", RETRY, "FCM internal error"),
    ErrorRow("push", 401, "THIRD_PARTY_AUTH_ERROR", STOP, "APNs or web-push credentials refused"),
    ErrorRow("push", 401, "UNAUTHENTICATED", STOP, "OAuth2 access token invalid or expired"),
    ErrorRow("push", 403, "PERMISSION_DENIED", STOP, "token lacks permission for the project"),
)


def by_status(status: int) -> str:
    """What an HTTP status means when no row of the table names the answer."""
    if status in (401, 403):
        return STOP
    if status == 429:
        return RATE_LIMITED
    if status >= 500 or status == 408:
        return RETRY
    return FAILED


def action(channel: str, status: int, code: str) -> str:
    """The action for a provider's error answer."""
    for row in ERROR_TABLE:
        if row.channel == channel and row.matches(status, code):
            return row.action
    return by_status(status)
