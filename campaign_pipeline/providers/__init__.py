"""The three providers' wire formats: how to ask, and what their answers mean.

A provider builds one HTTP request per recipient and turns the response into an
:class:`Outcome`. What an error means (retry it, fail the recipient, stop the channel) is a
table per provider, keyed by the provider's own error code where it has one and by the HTTP
status otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests

SENT = "sent"  # accepted by the provider
FAILED = "failed"  # permanent for this recipient: never retried
RETRY = "retry"  # transient, and the provider did not take the message: send again later
RATE_LIMITED = "rate_limited"  # 429: wait as told, send again; does not use up an attempt
STOP = "stop"  # credentials or permissions: nothing else on this channel can succeed

MAX_RATE_LIMIT_WAIT = 300.0


@dataclass(frozen=True)
class Outcome:
    kind: str
    message_id: str = ""
    error: str = ""
    retry_after: float | None = None


@dataclass(frozen=True)
class Request:
    """What to send for one recipient, in the terms of ``requests.Session.request``."""

    url: str
    headers: dict
    json: dict | None = None
    data: dict | None = None
    auth: tuple[str, str] | None = None


def by_status(status: int) -> str:
    """What an HTTP status means when the provider's body says nothing more specific."""
    if status in (401, 403):
        return STOP
    if status == 429:
        return RATE_LIMITED
    if status >= 500 or status == 408:
        return RETRY
    return FAILED


def retry_after(response: requests.Response) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or a date) or ``X-RateLimit-Reset``."""
    headers = response.headers
    wait = None
    if value := headers.get("Retry-After"):
        try:
            wait = float(value)
        except ValueError:
            try:
                wait = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                wait = None
    elif value := headers.get("X-RateLimit-Reset"):
        try:
            wait = float(value) - time.time()
        except ValueError:
            wait = None
    return None if wait is None else min(max(wait, 0.0), MAX_RATE_LIMIT_WAIT)


class Provider:
    """One provider endpoint. Subclasses set the class attributes and the three hooks."""

    channel = ""
    contact_field = ""
    success_status = 200

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.secrets: list[str] = []
        self.credentials_hint = "the provider's credentials"

    def check(self) -> None:
        """Raise ValueError when the configuration cannot send anything."""

    def request(self, recipient: str, parts: dict[str, str], meta: dict[str, str]) -> Request:
        raise NotImplementedError

    def interpret(self, response: requests.Response) -> Outcome:
        if response.status_code == self.success_status:
            return Outcome(SENT, message_id=self.message_id(response))
        code, message = self.error_of(response)
        kind = self.classify(response.status_code, code)
        label = f"{self.channel} provider answered {response.status_code}"
        if code:
            label += f" {code}"
        error = f"{label}: {message}" if message else label
        if kind == STOP:
            error += f"; check {self.credentials_hint}"
        return Outcome(
            kind,
            error=error,
            retry_after=retry_after(response) if kind in (RATE_LIMITED, RETRY) else None,
        )

    def message_id(self, response: requests.Response) -> str:
        raise NotImplementedError

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        """Return (provider error code or "", message) from an error response."""
        raise NotImplementedError

    def classify(self, status: int, code: str) -> str:
        return by_status(status)


def json_body(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
