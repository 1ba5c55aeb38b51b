"""The three providers' wire formats: how to ask, and what their answers mean.

A provider builds one HTTP request per recipient and turns the response into an
:class:`Outcome`. What an error means (retry it, fail the recipient, stop the channel) is the
one table in :mod:`.errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import requests
from urllib3.util import parse_url

from ..config import secret
from ..exceptions import MessageError, MissingSecretError, SettingsError
from ..templates import MessageTemplate, line_break
from .errors import FAILED, RATE_LIMITED, RENEW, RETRY, SENT, STOP, UNKNOWN, Kind, lookup

if TYPE_CHECKING:
    from .lists import ListReader, ProviderList

__all__ = [
    "FAILED",
    "RATE_LIMITED",
    "RENEW",
    "RETRY",
    "SENT",
    "STOP",
    "UNKNOWN",
    "Blame",
    "Kind",
    "Outcome",
    "Provider",
    "Request",
    "json_body",
    "retry_after",
]

log = logging.getLogger("campaign_pipeline")
MAX_RATE_LIMIT_WAIT = 300.0
# Set, every provider's base URL is this one: how a demo or a test points all channels at
# the sandbox with one setting (the Makefile does), whatever the config files say.
PROVIDER_URL_ENV = "CAMPAIGN_PROVIDER_URL"


@dataclass(frozen=True)
class Blame:
    """One recipient of a refused batch, as the provider's answer names it."""

    index: int  # its position in the batch
    error: str  # the errors about it alone
    suppress: bool = False  # one of them refuses its contact for good (see Outcome.suppress)


@dataclass(frozen=True)
class Outcome:
    """What became of one request (see :class:`Kind`), with what the sender needs of it."""

    kind: Kind
    message_id: str = ""
    error: str = ""
    retry_after: float | None = None
    # a refused batch: each recipient the provider named, with its own error; the others
    # were refused only with them
    blamed: tuple[Blame, ...] = ()
    code: str = ""  # an error's code: the provider's own, else the HTTP status
    suppress: bool = False  # failed: the provider refused the contact for good (errors.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))  # "snet" fails here, not later

    def masked(self, redact: Callable[[str], str]) -> Outcome:
        """This outcome with its error texts, the blamed recipients' too, passed through
        *redact*."""
        blamed = tuple(replace(b, error=redact(b.error)) for b in self.blamed)
        return replace(self, error=redact(self.error), blamed=blamed)

    def of(self, blame: Blame) -> Outcome:
        """The outcome for the one recipient *blame* names."""
        return replace(self, error=blame.error, suppress=blame.suppress, blamed=())


@dataclass(frozen=True)
class Request:
    """What to send for one recipient, in the terms of ``requests.Request``."""

    url: str
    headers: dict
    json: dict | None = None
    data: dict | None = None
    auth: tuple[str, str] | None = None
    # credentials that expire (an access token): applied by :meth:`authorize` as the request
    # leaves, after any wait for the rate limit, so that a token is fresh when it arrives
    fresh_auth: requests.auth.AuthBase | None = None

    def prepare(self, session: requests.Session) -> requests.PreparedRequest:
        """The bytes that go on the wire, the same for a real send and a preview."""
        request = requests.Request(
            "POST", self.url, headers=self.headers, json=self.json, data=self.data, auth=self.auth
        )
        return session.prepare_request(request)

    def authorize(self, prepared: requests.PreparedRequest) -> requests.PreparedRequest:
        """*prepared* with the :attr:`fresh_auth` credentials, minted now if due."""
        return self.fresh_auth(prepared) if self.fresh_auth is not None else prepared


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
    section = ""  # the luigi config section, e.g. "email_api"
    name = ""  # the provider, as an operator knows it
    contact_field = ""
    success_status = 200
    # what the provider adds to each customer's template context (see template_context)
    template_variables: tuple[str, ...] = ()
    # the config key that turns reading the provider's own suppression lists off, if any
    sync_key = ""
    # the template parts sent as a header (an email's subject): one line each
    header_parts: tuple[str, ...] = ()

    def __init__(self, base_url: str, preview: bool = False):
        self.overridden = bool(os.environ.get(PROVIDER_URL_ENV))
        if self.overridden:
            base_url = os.environ[PROVIDER_URL_ENV]
            log.info("%s: base_url %s from $%s", self.channel, base_url, PROVIDER_URL_ENV)
        self.configured_url = base_url  # as written, for messages
        self.base_url = base_url.rstrip("/")
        self.preview = preview
        self.secrets: dict[str, str] = {}  # environment variable name -> value
        self.env_keys: dict[str, str] = {}  # config key -> the environment variable it names
        self.fields: list[str] = []  # the customer fields the request carries besides content
        self.stand_ins: list[str] = []  # variables a preview found unset and stood in for

    def secret(self, env_name: str, section: str, key: str, stand_in: str) -> str:
        """Read a credential; a preview goes on with *stand_in* when it is not set."""
        try:
            value = secret(env_name, section, key)
        except MissingSecretError:
            if not self.preview:
                raise
            value = stand_in
            self.stand_ins.append(env_name)
        self.secrets[env_name] = value
        self.env_keys[key] = env_name
        return value

    def check(self) -> None:
        """Raise a PermanentError (a SettingsError, say) when the configuration cannot send
        anything."""
        url = None
        with contextlib.suppress(ValueError):  # urllib3's parser, as requests uses it
            url = parse_url(self.base_url)
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise SettingsError(
                f"{self._named('base_url')} {self.configured_url!r} is not an http:// or "
                "https:// URL with a host, e.g. https://api.example.com"
            )

    def hint(self, check: str) -> str:
        """ "check ..." naming the config keys of *check* (comma-separated; empty or
        ``credentials``: the credentials in use) and the environment variables they name."""
        keys = []
        for key in [key.strip() for key in check.split(",") if key.strip()] or ["credentials"]:
            keys += list(self.env_keys) if key == "credentials" else [key]
        named = [self._named(key) for key in keys]
        return "check " + " and ".join(named)

    def renew(self) -> bool:
        """Get new credentials after the provider refused them as expired; False when they
        cannot change (a static token): the channel then stops."""
        return False

    def masked(self) -> list[str]:
        """Every credential value to mask in texts: the secrets, and what is made from them."""
        return list(self.secrets.values())

    def _named(self, key: str) -> str:
        if key in self.env_keys:
            return f"${self.env_keys[key]} ([{self.section}] {key})"
        if key == "base_url" and self.overridden:
            return f"${PROVIDER_URL_ENV} (set, it replaces [{self.section}] base_url)"
        return f"[{self.section}] {key}"

    def account(self) -> str:
        """What the provider counts its rate limit against: by default the credentials.
        Processes with the same account and base URL share one token bucket, named for a
        hash of this, never for the value itself."""
        return "\0".join(self.secrets[name] for name in sorted(self.secrets))

    def check_template(self, template: MessageTemplate) -> None:
        """Fail when a :attr:`header_parts` part of *template* spans lines; a provider
        extends it to warn about what the template lacks for it."""
        for part in self.header_parts:
            template.check_one_line(part)

    def build(self, template: MessageTemplate, recipient: str, context: dict) -> Request:
        """Render *template* for one customer (*context*, the row's) and build the request.

        Raises MessageError when this customer's message cannot be built, a header part
        with a line break from the customer's data among them (header injection)."""
        context = self.template_context(context)
        parts = template.render(context)
        for part in self.header_parts:
            if line_break(parts.get(part, "")):
                raise MessageError(
                    f"{part} rendered with a line break or a control character from the "
                    "customer's data; a header is one line"
                )
        return self.request(recipient, parts, context)

    def suppression_lists(self, reader: ListReader) -> list[ProviderList]:  # noqa: ARG002 - a hook
        """The provider's own lists of who must not be messaged, read through *reader*
        before the channel sends and mirrored in the consent store (a hook: SendGrid's;
        the others have none)."""
        return []

    def list_applies(self, source: str) -> bool:  # noqa: ARG002 - a hook
        """Whether the consent store's entries of *source* apply to this run's messages
        (SendGrid: an unsubscribe group's list, only to messages sent in that group)."""
        return True

    def list_scope(self) -> str:
        """What :meth:`list_applies` depends on besides the source (SendGrid: the group):
        when it changes between two runs of a channel, every entry is checked again."""
        return ""

    def template_context(self, context: dict[str, str]) -> dict[str, str]:
        """*context* with the :attr:`template_variables` this provider adds for one
        customer (email: ``unsubscribe_url``); the same context then builds the request."""
        return context

    def request(self, recipient: str, parts: dict[str, str], context: dict[str, str]) -> Request:
        """Build the request for one recipient from the rendered *parts* of the template."""
        raise NotImplementedError(f"{type(self).__name__} must implement request()")

    def batch_key(self, request: Request) -> object | None:  # noqa: ARG002 - a hook
        """Requests with equal keys can travel as one; None means this one goes alone."""
        return None

    def with_first(self, requests: list[Request]) -> list[Request]:
        """The requests that can travel in one request with the first of *requests*."""
        key = self.batch_key(requests[0])
        if key is None:
            return requests[:1]
        return [request for request in requests if self.batch_key(request) == key]

    def combine(self, requests: list[Request]) -> Request:
        """One request carrying the recipients of *requests* (all with one batch key)."""
        if len(requests) != 1:
            raise ValueError(f"{self.channel} sends one recipient per request")
        return requests[0]

    def cost(self, request: Request) -> dict:  # noqa: ARG002 - a hook
        """What the preview tells of one built request's price, e.g. an SMS's ``encoding``
        and ``message_segments`` (summed over the campaign); empty when the provider bills none."""
        return {}

    def picked(self, context: dict[str, str]) -> dict[str, str]:
        """The :attr:`fields` of *context*, as strings (both providers want strings)."""
        return {key: str(context[key]) for key in self.fields}

    def interpret(self, response: requests.Response) -> Outcome:
        if response.status_code == self.success_status:
            return Outcome(Kind.SENT, message_id=self.message_id(response))
        code, message = self.error_of(response)
        row = lookup(self.channel, response.status_code, code)
        kind, check = row.action, row.check
        label = f"{self.channel} provider answered {response.status_code}"
        if code:
            label += f" {code}"
        error = f"{label}: {message}" if message else label
        if kind == Kind.FAILED and not self.speaks(response):
            # a wrong server (say, an HTML error page): nothing about the recipient
            kind, check = Kind.STOP, "base_url"
            what = response.headers.get("Content-Type") or "no Content-Type"
            error = f"{label} with a body that is not {self.name}'s ({what})"
        if kind in (Kind.STOP, Kind.RENEW):
            error = f"{error.rstrip('.')}; {self.hint(check)}"
        learns = row.suppress and kind == Kind.FAILED
        blamed = self.blamed(response) if kind == Kind.FAILED else []
        return Outcome(
            kind,
            error=error,
            retry_after=retry_after(response) if kind in (Kind.RATE_LIMITED, Kind.RETRY) else None,
            blamed=tuple(
                replace(b, error=f"{label}: {b.error}", suppress=learns and b.suppress)
                for b in blamed
            ),
            code=code or str(response.status_code),  # SendGrid has no codes: its status
            suppress=learns and self.blames_contact(response, code),
        )

    def blames_contact(self, response: requests.Response, code: str) -> bool:  # noqa: ARG002 - a hook
        """Whether an error answer whose table row may teach a suppression blames the
        contact itself rather than the message (say, an FCM INVALID_ARGUMENT about the
        token, not about the notification)."""
        return True

    def speaks(self, response: requests.Response) -> bool:
        """Whether an error answer is in the provider's own format."""
        raise NotImplementedError(f"{type(self).__name__} must implement speaks()")

    def blamed(self, response: requests.Response) -> list[Blame]:  # noqa: ARG002 - a hook
        """The recipients of a batch an error answer names, each once: its position, the
        provider's messages about it alone, and whether one of them is about its contact
        (which a table row marked ``suppress`` then learns). Empty when it names none."""
        return []

    def message_id(self, response: requests.Response) -> str:
        """The provider's id of the message it took, from a success response."""
        raise NotImplementedError(f"{type(self).__name__} must implement message_id()")

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        """Return (provider error code or "", message) from an error response."""
        raise NotImplementedError(f"{type(self).__name__} must implement error_of()")


def json_body(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
