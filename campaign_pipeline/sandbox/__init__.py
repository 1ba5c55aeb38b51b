"""Local sandbox of the message providers the pipeline talks to.

It answers on 127.0.0.1 only, speaking the providers' own wire formats, so the pipeline's HTTP
clients can point their base URL at it. One module per fake provider, like
:mod:`campaign_pipeline.providers`:

- :mod:`.sendgrid`, email, SendGrid v3: ``POST /v3/mail/send`` (Bearer token, JSON, ``202`` +
  ``X-Message-Id``), and its suppression lists: ``GET /v3/suppression/<list>`` (paged),
  ``GET /v3/asm/groups/<id>/suppressions``, ``DELETE`` of an address on either
- :mod:`.twilio`, sms, Twilio: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (HTTP
  Basic, form)
- :mod:`.fcm`, push, FCM HTTP v1: ``POST /v1/projects/{project_id}/messages:send`` (Bearer
  token, JSON)
- :mod:`.oauth`, Google's OAuth2 token endpoint: ``POST /token`` (JWT-bearer grant of a
  trusted service-account key; the access tokens it issues expire)
- ``GET /_stats``: per-channel counters (no auth)

and :mod:`.endpoint` (their base class and reply helpers), :mod:`.server` (the HTTP server,
:class:`Sandbox`), :mod:`.bucket` (the token bucket), :mod:`.config` (:class:`SandboxConfig`,
the default endpoints) and :mod:`.cli` (``campaign-sandbox``).

Each provider has a strict token bucket, optional latency, random or deterministic faults
(503 or a hang followed by 503) and the permanent errors of the real services (SendGrid
``bounce*@`` addresses, Twilio's magic test numbers and ``--opted-out`` numbers, FCM
``unregistered*``/``invalid*`` tokens and ``--unregistered-token`` ones).
Every accepted message is kept in memory and optionally appended to a JSONL file.

The endpoints are data: each endpoint class declares its channel, its default limit and the
environment variables of its credentials, and ``Sandbox(config, endpoints)`` serves any list
of them (default :data:`ENDPOINTS`); counters, limits, CLI flags and required credentials
follow.

CLI (console script ``campaign-sandbox``, or ``python -m campaign_pipeline.sandbox``)::

    campaign-sandbox [--port 8765] [--latency-ms 0] [--latency-jitter 0] [--error-rate 0]
                     [--hang-rate 0] [--hang-seconds 30] [--fail-first 0] [--hang-first 0]
                     [--record PATH] [--seed 0] [--no-rate-limit] [--demo-credentials]
                     [--echo-credentials] [--service-account PATH ...]
                     [--token-lifetime 3600]
                     [--error-rule CHANNEL:REGEX:STATUS[:CODE[:TIMES]] ...]
                     [--suppressed-email LIST:ADDRESS[:YYYY-MM-DD] ...]
                     [--opted-out NUMBER ...] [--unregistered-token TOKEN ...]
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

from .bucket import ChannelLimit, TokenBucket
from .cli import demo_credentials, describe, main, option_parser, run_command
from .config import (
    CHANNELS,
    ENDPOINTS,
    ErrorRule,
    MissingCredentialsError,
    SandboxConfig,
    credential_vars,
    default_limits,
)
from .endpoint import Endpoint, Message, RejectedError, Reply
from .fcm import PushEndpoint
from .oauth import GOOGLE_TOKEN_URI, JWT_BEARER, TOKEN_PATH, TokenIssuer, new_key
from .sendgrid import EmailEndpoint, substitute
from .server import Sandbox
from .twilio import SmsEndpoint

__all__ = [
    "CHANNELS",
    "ENDPOINTS",
    "GOOGLE_TOKEN_URI",
    "JWT_BEARER",
    "TOKEN_PATH",
    "ChannelLimit",
    "EmailEndpoint",
    "Endpoint",
    "ErrorRule",
    "Message",
    "MissingCredentialsError",
    "PushEndpoint",
    "RejectedError",
    "Reply",
    "Sandbox",
    "SandboxConfig",
    "SmsEndpoint",
    "TokenBucket",
    "TokenIssuer",
    "credential_vars",
    "default_limits",
    "demo_credentials",
    "describe",
    "main",
    "new_key",
    "option_parser",
    "run_command",
    "substitute",
]
