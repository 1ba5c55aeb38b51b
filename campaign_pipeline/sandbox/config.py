"""What the sandbox serves and how: its endpoints, their limits and credentials, its faults.

The endpoint classes are data: :data:`ENDPOINTS` (the three fake providers) is the default
list, and the channels, the default limits and the credential variables all derive from it.
:meth:`SandboxConfig.from_env` reads the credentials of the served endpoints from an
environment mapping, the one way to build a configuration from credentials.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import CampaignError
from .bucket import ChannelLimit
from .endpoint import Endpoint
from .fcm import PushEndpoint
from .sendgrid import EmailEndpoint, SuppressedEmail
from .twilio import SmsEndpoint

ENDPOINTS: tuple[type[Endpoint], ...] = (EmailEndpoint, SmsEndpoint, PushEndpoint)
CHANNELS = tuple(endpoint.channel for endpoint in ENDPOINTS)


def registered_endpoints() -> tuple[type[Endpoint], ...]:
    """The endpoints of the channels in the registry (:mod:`campaign_pipeline.channels`),
    a channel registered by another module included: what ``campaign-sandbox`` serves."""
    from ..channels import registered  # the registry imports the pipeline, not needed above

    return tuple(channel.sandbox_endpoint() for channel in registered())


class MissingCredentialsError(CampaignError):
    """Credential variables that an endpoint requires are unset or empty."""

    def __init__(self, names: list[str]):
        super().__init__("missing environment variable(s): " + ", ".join(names))
        self.names = names


def default_limits(
    endpoints: Iterable[type[Endpoint]] = ENDPOINTS,
) -> dict[str, ChannelLimit | None]:
    """Each channel's default token bucket, as its endpoint class declares it."""
    return {endpoint.channel: endpoint.limit for endpoint in endpoints}


def credential_vars(endpoints: Iterable[type[Endpoint]], optional: bool = False) -> list[str]:
    """The credential variables of *endpoints*: the required ones, and with *optional* also
    those taken when set; each once, in declaration order."""
    names: dict[str, None] = {}
    for endpoint in endpoints:
        names.update(dict.fromkeys(endpoint.credential_vars))
        if optional:
            names.update(dict.fromkeys(endpoint.optional_credential_vars))
    return list(names)


def missing_credentials(
    values: Mapping[str, str], endpoints: Iterable[type[Endpoint]]
) -> list[str]:
    """The required variables of *endpoints* that *values* lacks or holds empty."""
    return [name for name in credential_vars(endpoints) if not values.get(name)]


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
    # credential variable name -> value; each endpoint reads its own variables
    credentials: dict[str, str] = field(default_factory=dict)
    port: int = 0
    # channel -> token bucket (None, or a channel left out: no limit); None: each
    # endpoint's default limit
    limits: dict[str, ChannelLimit | None] | None = None
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
    token_lifetime: float = 3600.0  # seconds an OAuth2 access token lasts, as Google's
    # not 0: the token endpoint answers every request with this status and an HTML page
    # quoting the request's form (its signed assertion too), as a proxy or WAF might
    token_echo_status: int = 0
    # SendGrid's suppression lists (a message to one of them is accepted, then dropped)
    suppressed_emails: list[SuppressedEmail] = field(default_factory=list)
    # entries taken off their list just after its first page is answered, as a DELETE at
    # SendGrid while the pipeline pages the list would (the pages after it shift back)
    removed_while_read: list[SuppressedEmail] = field(default_factory=list)
    opted_out: list[str] = field(default_factory=list)  # numbers Twilio answers 21610 for
    unregistered_tokens: list[str] = field(default_factory=list)  # FCM answers UNREGISTERED

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        endpoints: Sequence[type[Endpoint]] = ENDPOINTS,
        **overrides: Any,
    ) -> SandboxConfig:
        """A configuration accepting the credentials found in *env* (``os.environ`` or a
        dict of the same variables) for *endpoints*, with *overrides* of the other fields.

        Only the endpoints' declared variables are kept; every required one must be set and
        not empty, or :class:`MissingCredentialsError` names those that are not.
        """
        if missing := missing_credentials(env, endpoints):
            raise MissingCredentialsError(missing)
        names = credential_vars(endpoints, optional=True)
        return cls(credentials={name: env[name] for name in names if env.get(name)}, **overrides)
