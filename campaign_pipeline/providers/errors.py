"""What each provider error means to the pipeline: one table for all three providers.

Each row names the provider's answer (HTTP status and, where the provider has one, its own
code: Twilio's number, FCM's ``errorCode``) and the action taken:

- ``retry``: transient; the provider did not take the message, send again after the delay
- ``rate_limited``: wait as the provider says and send again, without using an attempt
- ``failed``: permanent for this recipient; recorded with the provider's code and message
- ``renew``: the credentials expired: get new ones and send again, once; when they cannot
  be renewed (a static token) or are refused again, ``stop``
- ``suppress`` (on a ``failed`` row): the answer refuses the contact itself for good, when
  the provider blames it (:meth:`Provider.blames_contact`): the consent store remembers the
  contact and the campaigns after skip it
- ``stop``: the credentials, the account or the configuration is wrong, not the recipient;
  stop the whole channel at once, leaving every recipient not yet sent pending for the run
  after the fix. ``check`` names the keys of the channel's config section to look at;
  ``credentials`` stands for the keys naming the credentials in use.

An answer no row names falls back to its HTTP status (:func:`by_status`). The README's
"Provider errors" table is this table, and a test keeps the two the same.

The actions, with ``sent`` and ``unknown``, are the kinds of :class:`Kind`: what became of a
request. The ledger has a vocabulary of its own, the states of a recipient's row
(:class:`~campaign_pipeline.ledger.Status`); the sender maps the kinds that settle a row to
the states they leave it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What became of a request, as the provider's answer (or its absence) says; the
    sender's next step follows from it. The values are the texts of the table above."""

    SENT = "sent"
    FAILED = "failed"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    STOP = "stop"
    RENEW = "renew"  # the credentials expired: renew them and send again once, else stop
    UNKNOWN = "unknown"  # no answer after the request left: it may have been delivered


# The kinds by their names alone, as the providers and their tests use them.
SENT = Kind.SENT
FAILED = Kind.FAILED
RETRY = Kind.RETRY
RATE_LIMITED = Kind.RATE_LIMITED
STOP = Kind.STOP
RENEW = Kind.RENEW
UNKNOWN = Kind.UNKNOWN


@dataclass(frozen=True)
class ErrorRow:
    channel: str
    status: int
    code: str  # "" where the provider has no code of its own; "30xxx" is a range
    action: Kind
    meaning: str
    check: str = ""  # for stop: the config keys to look at ("" = the channel's credentials)
    # for failed: the provider refused the contact itself for good (a STOP reply, a retired
    # token, an invalid address): the consent store remembers it and later campaigns skip it
    suppress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", Kind(self.action))  # a typo fails at import

    def matches(self, status: int, code: str) -> bool:
        if not self.code:
            return status == self.status
        if self.code.endswith("xxx"):
            return code.startswith(self.code[:-3])
        return code == self.code


ERROR_TABLE = (
    ErrorRow("email", 400, "from", STOP, "invalid sender (field from)", "from_email"),
    ErrorRow(
        "email", 400, "", FAILED, "bad address or message body", suppress=True
    ),
    ErrorRow("email", 401, "", STOP, "API key missing, wrong or revoked", "credentials"),
    ErrorRow(
        "email", 403, "", STOP, "no mail.send, unverified sender, or suspended",
        "credentials, from_email",
    ),
    ErrorRow("email", 404, "", STOP, "no such endpoint: not SendGrid's path", "base_url"),
    ErrorRow("email", 405, "", STOP, "endpoint does not take POST", "base_url"),
    ErrorRow("email", 413, "", FAILED, "message too large"),
    ErrorRow("email", 415, "", STOP, "endpoint does not take JSON", "base_url"),
    ErrorRow("email", 429, "", RATE_LIMITED, "rate limit; wait until X-RateLimit-Reset"),
    ErrorRow("email", 500, "", RETRY, "SendGrid internal error"),
    ErrorRow("email", 502, "", RETRY, "bad gateway"),
    ErrorRow("email", 503, "", RETRY, "service unavailable"),
    ErrorRow("email", 504, "", RETRY, "gateway timeout"),
    ErrorRow(
        "sms", 401, "20003", STOP, "authentication failed (AccountSid, auth token or API key)",
        "credentials",
    ),
    ErrorRow("sms", 401, "20005", STOP, "account suspended or closed", "account_sid_env"),
    ErrorRow("sms", 404, "", STOP, "no such resource: wrong path or AccountSid", "base_url"),
    ErrorRow("sms", 405, "", STOP, "endpoint does not take POST", "base_url"),
    ErrorRow("sms", 415, "", STOP, "endpoint does not take a form", "base_url"),
    ErrorRow("sms", 429, "20429", RATE_LIMITED, "too many requests; never processed"),
    ErrorRow("sms", 400, "21212", STOP, "invalid From number", "from_number"),
    ErrorRow("sms", 400, "21606", STOP, "From cannot send to this destination", "from_number"),
    ErrorRow("sms", 400, "21659", STOP, "From is not a Twilio number", "from_number"),
    ErrorRow("sms", 400, "21660", STOP, "From belongs to another account", "from_number"),
    ErrorRow("sms", 400, "21661", STOP, "From is not SMS-capable", "from_number"),
    ErrorRow("sms", 400, "21705", STOP, "invalid Messaging Service", "messaging_service_sid"),
    ErrorRow("sms", 400, "21211", FAILED, "invalid To number"),
    ErrorRow("sms", 400, "21408", FAILED, "sending to this region is not enabled"),
    ErrorRow(
        "sms", 400, "21610", FAILED, "recipient unsubscribed (replied STOP)", suppress=True
    ),
    ErrorRow("sms", 400, "21612", FAILED, "cannot route to this number"),
    ErrorRow("sms", 400, "21614", FAILED, "To is not a mobile number", suppress=True),
    ErrorRow("sms", 400, "21617", FAILED, "body over 1600 characters"),
    ErrorRow("sms", 400, "30xxx", FAILED, "carrier or handset refused delivery"),
    ErrorRow("sms", 500, "20500", RETRY, "Twilio internal error"),
    ErrorRow("sms", 503, "20503", RETRY, "service unavailable"),
    ErrorRow(
        "push", 400, "INVALID_ARGUMENT", FAILED, "malformed token or message", suppress=True
    ),
    ErrorRow(
        "push", 404, "UNREGISTERED", FAILED, "app uninstalled or token expired", suppress=True
    ),
    ErrorRow("push", 404, "", STOP, "no such project or path", "project_id, base_url"),
    ErrorRow("push", 405, "", STOP, "endpoint does not take POST", "base_url"),
    ErrorRow("push", 415, "", STOP, "endpoint does not take JSON", "base_url"),
    ErrorRow("push", 403, "SENDER_ID_MISMATCH", FAILED, "token of another Firebase project"),
    ErrorRow("push", 429, "QUOTA_EXCEEDED", RATE_LIMITED, "quota exceeded; honour Retry-After"),
    ErrorRow("push", 503, "UNAVAILABLE", RETRY, "FCM overloaded; honour Retry-After"),
    ErrorRow("push", 500, "INTERNAL", RETRY, "FCM internal error"),
    ErrorRow(
        "push", 401, "THIRD_PARTY_AUTH_ERROR", STOP,
        "the Firebase project's APNs or web-push credentials refused", "project_id",
    ),
    ErrorRow(
        "push", 401, "UNAUTHENTICATED", RENEW, "OAuth2 token invalid or expired", "credentials"
    ),
    ErrorRow(
        "push", 403, "PERMISSION_DENIED", STOP, "token lacks permission for the project",
        "credentials, project_id",
    ),
)  # fmt: skip

# Answers about the endpoint, not the message: the base_url (or the path) is wrong.
ENDPOINT_STATUSES = (404, 405, 415, 501)


def by_status(status: int) -> Kind:
    """What an HTTP status means when no row of the table names the answer."""
    if status in (401, 403) or status in ENDPOINT_STATUSES:
        return STOP
    if status == 429:
        return RATE_LIMITED
    if status >= 500 or status == 408:
        return RETRY
    return FAILED


def lookup(channel: str, status: int, code: str) -> ErrorRow:
    """The row for a provider's error answer, or one made from its HTTP status."""
    for row in ERROR_TABLE:
        if row.channel == channel and row.matches(status, code):
            return row
    check = "base_url" if status in ENDPOINT_STATUSES else ""
    return ErrorRow(channel, status, code, by_status(status), "not in the table", check)


def action(channel: str, status: int, code: str) -> Kind:
    """The action for a provider's error answer."""
    return lookup(channel, status, code).action
