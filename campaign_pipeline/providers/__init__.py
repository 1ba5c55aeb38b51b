"""The three providers' wire formats: how to ask, and what their answers mean.

A provider builds one HTTP request per recipient and turns the response into an
:class:`Outcome`. What an error means (retry it, fail the recipient, stop the channel) is the
one table in :mod:`.errors`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests

from ..config import MissingSecret, secret
from .errors import FAILED, RATE_LIMITED, RETRY, SENT, STOP, UNKNOWN, action

__all__ = [
    "FAILED",
    "RATE_LIMITED",
    "RETRY",
    "SENT",
    "STOP",
    "UNKNOWN",
    "Outcome",
    "Provider",
    "Request",
    "json_body",
    "retry_after",
]

MAX_RATE_LIMIT_WAIT = 300.0


@dataclass(frozen=True)
class Outcome:
    kind: str
    message_id: str = ""
    error: str = ""
    retry_after: float | None = None
    culprit: int | None = None  # in a refused batch, the recipient the provider blamed


@dataclass(frozen=True)
class Request:
    """What to send for one recipient, in the terms of ``requests.Request``."""

    url: str
    headers: dict
    json: dict | None = None
    data: dict | None = None
    auth: tuple[str, str] | None = None

    def prepare(self, session: requests.Session) -> requests.PreparedRequest:
        """The bytes that go on the wire, the same for a real send and a preview."""
        request = requests.Request(
            "POST", self.url, headers=self.headers, json=self.json, data=self.data, auth=self.auth
        )
        return session.prepare_request(request)


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
    """One provider endpoint. Subclasses set the class attributes and the hooks."""

    channel = ""
    contact_field = ""
    success_status = 200

    def __init__(self, base_url: str, preview: bool = False):
        self.base_url = base_url.rstrip("/")
        self.preview = preview
        self.secrets: dict[str, str] = {}  # environment variable name -> value
        self.fields: list[str] = []  # the customer fields the request carries besides content
        self.credentials_hint = "the provider's credentials"

    def secret(self, env_name: str, section: str, key: str, stand_in: str) -> str:
        """Read a credential; a preview goes on with *stand_in* when it is not set."""
        try:
            value = secret(env_name, section, key)
        except MissingSecret:
            if not self.preview:
                raise
            value = stand_in
        self.secrets[env_name] = value
        return value

    def check(self) -> None:
        """Raise ValueError when the configuration cannot send anything."""

    def account(self) -> str:
        """What the provider counts its rate limit against: by default the credentials.
        Processes with the same account and base URL share one token bucket, named for a
        hash of this, never for the value itself."""
        return "\0".join(self.secrets[name] for name in sorted(self.secrets))

    def request(self, recipient: str, parts: dict[str, str], context: dict[str, str]) -> Request:
        """Build the request for one recipient from the rendered *parts* of the template."""
        raise NotImplementedError

    def batch_key(self, request: Request) -> object | None:
        """Requests with equal keys can travel as one; None means this one goes alone."""
        return None

    def combine(self, requests: list[Request]) -> Request:
        """One request carrying the recipients of *requests* (all with one batch key)."""
        if len(requests) != 1:
            raise ValueError(f"{self.channel} sends one recipient per request")
        return requests[0]

    def picked(self, context: dict[str, str]) -> dict[str, str]:
        """The :attr:`fields` of *context*, as strings (both providers want strings)."""
        return {key: str(context[key]) for key in self.fields}

    def interpret(self, response: requests.Response) -> Outcome:
        if response.status_code == self.success_status:
            return Outcome(SENT, message_id=self.message_id(response))
        code, message = self.error_of(response)
        kind = action(self.channel, response.status_code, code)
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
            culprit=self.culprit(response),
        )

    def culprit(self, response: requests.Response) -> int | None:
        """Which recipient of a batch an error answer names, if it names one."""
        return None

    def message_id(self, response: requests.Response) -> str:
        raise NotImplementedError

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        """Return (provider error code or "", message) from an error response."""
        raise NotImplementedError


def json_body(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
