"""What every fake provider has in common: the endpoint base class and the reply helpers.

An :class:`Endpoint` is one provider's API as the sandbox plays it. Its class declares the
channel it serves, the provider's default rate limit and the environment variables holding
the credentials it accepts; the sandbox, its configuration and its command line derive
everything per channel from these declarations, so a new fake provider is one subclass.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .bucket import ChannelLimit

if TYPE_CHECKING:
    from .config import ErrorRule, SandboxConfig
    from .oauth import TokenIssuer


@dataclass
class Reply:
    status: int
    body: dict | str | None = None  # JSON, or a text whose Content-Type is in headers
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Message:
    recipient: str
    campaign: str | None
    customer_id: str | None
    request: dict


class RejectedError(Exception):
    """A request the provider refuses: *reply* is the provider's answer."""

    def __init__(self, reply: Reply):
        super().__init__(reply.status)
        self.reply = reply


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


def read_form(body: bytes) -> dict[str, str]:
    pairs = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in pairs.items()}


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


class Endpoint:
    """One provider endpoint: its route, credentials, body validation and answers.

    A subclass declares, besides its route and content type:

    - ``channel``: the pipeline channel it plays the provider of (the key of its counters);
    - ``limit``: the provider's default token bucket (``None``: no limit);
    - ``credential_vars``: the environment variables whose values it requires, and
      ``optional_credential_vars`` those it takes when they are set;
    - ``client_vars``: secrets the pipeline's client of this provider reads that the
      provider never sees (the key signing email unsubscribe links): ``--demo-credentials``
      and the test harness make them up, the sandbox neither requires nor keeps them;
    - ``provider`` and ``credentials_note``: a name and a line for ``campaign-sandbox --help``.

    The sandbox makes one instance per served endpoint, with the sandbox's configuration
    (whose ``credentials`` maps variable names to values) and its OAuth2 token issuer.
    """

    channel = ""
    provider = ""
    route: re.Pattern[str]
    content_type = ""
    limit: ChannelLimit | None = None
    credential_vars: tuple[str, ...] = ()
    optional_credential_vars: tuple[str, ...] = ()
    client_vars: tuple[str, ...] = ()
    credentials_note = ""

    def __init__(self, config: SandboxConfig, tokens: TokenIssuer):
        self.config = config
        self.tokens = tokens

    @classmethod
    def demo_credentials(cls) -> dict[str, str]:
        """Fresh random values of this endpoint's variables (required, optional, client)."""
        names = (*cls.credential_vars, *cls.optional_credential_vars, *cls.client_vars)
        return {name: "sandbox-" + secrets.token_hex(20) for name in names}

    def credential(self, name: str) -> str:
        """The value of the credential variable *name* in the configuration ("" if unset)."""
        return self.config.credentials.get(name, "")

    def serves(self, method: str, path: str) -> bool:
        """Whether *path* is one of the provider's routes besides its send route (SendGrid's
        suppression lists), which :meth:`answer` answers; none by default."""
        return False

    def answer(self, method: str, path: str, query: dict[str, str]) -> Reply:
        """The answer to an authorized request to a route :meth:`serves`."""
        raise self._abstract("answer")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        found = self.route.fullmatch(path)
        return found.groupdict() if found and method == "POST" else None

    def messages(self, headers: Any, body: bytes, params: dict[str, str]) -> list[Message]:
        """Validate the request (raising RejectedError) and return the messages it carries."""
        if media_type(headers) != self.content_type:
            raise RejectedError(self.unsupported_media())
        found = self.parse(body, params)
        self.check_permanent(found)
        return found

    def extra_stats(self) -> dict[str, Any]:
        """Counters of this endpoint's own, added to its channel's statistics."""
        return {}

    # Provider-specific parts.
    def authorized(self, headers: Any, params: dict[str, str]) -> bool:
        raise self._abstract("authorized")

    def unauthorized(self) -> Reply:
        raise self._abstract("unauthorized")

    def rate_limited(self, wait: float, burst: int) -> Reply:
        raise self._abstract("rate_limited")

    def unavailable(self) -> Reply:
        raise self._abstract("unavailable")

    def error(self, status: int, code: str) -> Reply:
        """The provider's answer for an error rule: its body shape, and a wait where due."""
        raise self._abstract("error")

    def refusal(self, matched: list[tuple[int, ErrorRule]]) -> Reply:
        """The answer to a request whose recipients error rules match, (position in the
        request, rule) each: by default the first one's :meth:`error`."""
        rule = matched[0][1]
        return self.error(rule.status, rule.code)

    def unsupported_media(self) -> Reply:
        raise self._abstract("unsupported_media")

    def recipients(self, body: bytes) -> list[str]:
        """Recipients read leniently, before validation, for the per-recipient faults."""
        raise self._abstract("recipients")

    def parse(self, body: bytes, params: dict[str, str]) -> list[Message]:
        raise self._abstract("parse")

    def check_permanent(self, messages: list[Message]) -> None:
        """Raise RejectedError for a message the provider always refuses (none by default)."""

    def respond(self, messages: list[Message], params: dict[str, str]) -> tuple[Reply, str]:
        """The success reply and the message id recorded with the messages."""
        raise self._abstract("respond")

    def _abstract(self, method: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__}.{method} is not implemented")
