"""Configuration sections read from ``luigi.cfg`` (and ``$LUIGI_CONFIG_PATH``).

Each integration is a small ``luigi.Config`` whose class name is its section. Secrets are
never configuration values: a section stores the *name* of the environment variable that
holds one, and :func:`secret` reads it when a task runs.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import string
import unicodedata
from dataclasses import dataclass

import luigi

from .exceptions import InvalidSecretError, MissingSecretError, SettingsError

log = logging.getLogger("campaign_pipeline")


class NamedParseErrors:
    """Mixed into a ``luigi.Config`` or task: a value luigi cannot parse is a SettingsError.

    luigi parses every parameter when a class is instantiated and its error (for example
    ``Expecting value: line 1 column 1``) names neither the section nor the key; this one does.
    """

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        try:
            return super().get_param_values(params, args, kwargs)
        except ValueError as exc:
            from .settings_check import parse_problems  # settings_check imports this module

            problem = (parse_problems([cls]) or [f"[{cls.get_task_family()}]: {exc}"])[0]
            log.error("setting: %s", problem)  # a clear line, whatever luigi prints around it
            raise SettingsError(problem) from None


class DateParameter(luigi.DateParameter):
    """A date given as ``YYYY-MM-DD``; a bad one on the command line is one line, exit 2.

    luigi parses a task's flags only when it builds the task, and reports a bad date as an
    "Uncaught exception" traceback (exit 40). Checking the flag as argparse reads it gives
    ``luigi: error: argument --date: ...`` instead.
    """

    def _parser_kwargs(self, *args, **kwargs):
        return {**super()._parser_kwargs(*args, **kwargs), "type": self._checked}

    def _checked(self, text: str) -> str:
        try:
            self.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a date: write YYYY-MM-DD, e.g. 2026-11-25"
            ) from None
        return text


# Tokens kept back from the provider's burst: a token taken now reaches the provider a
# moment later on a cold connection than on a warm one (measured: one 429 per channel
# with equal buckets, none with two tokens of margin). Here, not in ratelimit: the lower
# bound of every ``burst`` setting.
BURST_MARGIN = 2


@dataclass(frozen=True)
class Range:
    """The values a numeric setting allows: *low* to *high* (above *low* with *low_open*),
    finite; *unit* says what the number counts, for the settings check's line."""

    low: float
    high: float
    unit: str
    low_open: bool = False

    def allows(self, value: float) -> bool:
        if not math.isfinite(value) or value > self.high:
            return False
        return value > self.low if self.low_open else value >= self.low

    def __str__(self) -> str:
        if self.low_open:
            return f"above {_number(self.low)} and at most {_number(self.high)} {self.unit}"
        return f"{_number(self.low)} to {_number(self.high)} {self.unit}"


def _number(value: float) -> str:
    return f"{int(value):,}" if value == int(value) else f"{value:g}"


class Bounded:
    """Mixed into a numeric parameter: its :class:`Range`, declared beside it (the one
    home of a setting's bounds), which the settings check applies before anything is sent.

    luigi's own NumericalParameter would refuse the value while parsing, in a line that
    names neither the section nor the key; :mod:`.settings_check` names both."""

    def __init__(self, *args, allowed: Range, **kwargs):
        self.allowed = allowed
        super().__init__(*args, **kwargs)


class BoundedInt(Bounded, luigi.IntParameter):
    """A whole number within its :class:`Range`."""


class BoundedFloat(Bounded, luigi.FloatParameter):
    """A number within its :class:`Range`."""


class PathParameter(luigi.Parameter):
    """A file or folder path: a leading ``~`` or ``~user`` is expanded as a shell would,
    wherever the value comes from (a config file, a flag), so that no setting creates a
    folder named ``~`` in the current one."""

    def normalize(self, x):
        return os.path.expanduser(x) if isinstance(x, str) else x


def secret(env_name: str, section: str, key: str) -> str:
    """Return the value of the environment variable *env_name*, or fail naming it.

    Credentials never hold whitespace or control characters; one that does was pasted with
    a line break or a space, and would fail every request (``requests`` would even quote the
    value in its error). The error names the variable, never the value.
    """
    value = os.environ.get(env_name, "")
    if not value:
        raise MissingSecretError(
            f"environment variable {env_name} is not set (named by [{section}] {key}); "
            "export it before running the campaign"
        )
    if flaw := _flaw(value):
        raise InvalidSecretError(
            f"environment variable {env_name} (named by [{section}] {key}) has {flaw}; "
            "a paste error? Export it again without it"
        )
    return value


def _flaw(value: str) -> str:
    """The first whitespace or control character of *value* and where it is, in words."""
    for index, char in enumerate(value):
        if char in "\r\n":
            kind = "a line break"
        elif char.isspace():
            kind = "whitespace"
        elif unicodedata.category(char).startswith("C"):  # control, format (zero-width), ...
            kind = "an invisible or control character"
        else:
            continue
        where = {0: "at its start", len(value) - 1: "at its end"}.get(index, "inside it")
        return f"{kind} {where}"
    return ""


def _in_campaign(key: str) -> dict:
    return {"section": "campaign", "name": key}


class pipeline(NamedParseErrors, luigi.Config):  # noqa: N801 - luigi's flags: --pipeline-*
    """The ``[campaign]`` section.

    The class has another name because luigi turns a Config class into command-line flags
    named after it, and ``--campaign-*`` flags would make the tasks' ``--campaign`` an
    ambiguous abbreviation.
    """

    name = luigi.Parameter(
        default="demo",
        config_path=_in_campaign("name"),
        description="Campaign name, the default of every task's --campaign and part of its run "
        "folder (letters, digits, '.', '_', '-')",
    )
    input_path = PathParameter(
        default="data/sample/customers.csv",
        config_path=_in_campaign("input_path"),
        description="Customer CSV; may contain {date}, formatted YYYY-MM-DD",
    )
    output_dir = PathParameter(
        default="var/campaigns",
        config_path=_in_campaign("output_dir"),
        description="Folder of the run folders, {output_dir}/{campaign}/{date}/",
    )
    templates_dir = PathParameter(
        default="config/templates",
        config_path=_in_campaign("templates_dir"),
        description="Folder of the message templates, one <channel>/<name>/ folder each",
    )
    segments = luigi.ListParameter(
        default=["premium", "regular", "new"],
        config_path=_in_campaign("segments"),
        description="The allowed segments (JSON list); a row with any other is rejected",
    )
    default_region = luigi.Parameter(
        default="US",
        config_path=_in_campaign("default_region"),
        description="Region for phone numbers written without +country code",
    )
    accept_vanity_numbers = luigi.BoolParameter(
        default=False,
        config_path=_in_campaign("accept_vanity_numbers"),
        description="Text phone numbers written with letters (1-800-FLOWERS); off, such a "
        "number is skipped for SMS, as letters are most often a typo (O for 0)",
    )
    preview_requests = BoundedInt(
        default=20,
        allowed=Range(0, 1_000_000, "requests"),
        config_path=_in_campaign("preview_requests"),
        description="How many requests a dry run's preview shows in full",
    )
    timeout_seconds = BoundedFloat(
        default=0.0,
        allowed=Range(0, 30 * 86_400, "seconds (30 days; 0: no limit)"),
        config_path=_in_campaign("timeout_seconds"),
        description="Seconds each attempt of each task may run; 0 means no limit",
    )
    wait_for_input_minutes = BoundedFloat(
        default=0.0,
        allowed=Range(0, 7 * 1440, "minutes (a week; 0: no wait)"),
        config_path=_in_campaign("wait_for_input_minutes"),
        description="How long a run waits for a missing customer file; 0 fails at once",
    )
    progress_log_seconds = BoundedFloat(
        default=10.0,
        allowed=Range(0, 86_400, "seconds (a day; 0: no progress lines)"),
        config_path=_in_campaign("progress_log_seconds"),
        description="Seconds between a sending channel's progress lines in the log; 0: none",
    )


def input_file(template: str, date: datetime.date) -> str:
    """The customer file of *date*: ``[campaign] input_path`` with ``{date}`` filled in."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template)]
        unknown = [field for field in fields if field not in (None, "date")]
        if not unknown:
            return template.format(date=date.isoformat())
        problem = f"unknown placeholder {{{unknown[0]}}}"
    except ValueError as exc:  # a lone brace, or a format spec a text cannot take
        problem = str(exc)
    raise SettingsError(
        f"[campaign] input_path = {template!r}: {problem}; the only placeholder is {{date}} "
        "(YYYY-MM-DD), and {{ or }} write a literal brace"
    )


class schedule(NamedParseErrors, luigi.Config):  # noqa: N801 - the section's name
    start_date = DateParameter(
        default=datetime.date(1970, 1, 1), description="First date the campaign may run for"
    )
    end_date = DateParameter(
        default=datetime.date(9999, 12, 31), description="Last date the campaign may run for"
    )
    catchup = luigi.BoolParameter(
        default=False, description="make daily also runs missed dates since the last complete one"
    )
    depends_on_past = luigi.BoolParameter(
        default=False, description="A date's campaign requires the previous date's to be complete"
    )


class notifications(NamedParseErrors, luigi.Config):  # noqa: N801 - the section's name
    owner = luigi.Parameter(default="", description="Email address told about failures")
    email_on_failure = luigi.BoolParameter(
        default=True, description="Email the owner when a task has failed for good"
    )
    email_on_retry = luigi.BoolParameter(
        default=False, description="Email the owner when a task failed and luigi will retry it"
    )


# The keys every provider section has; each section gives them defaults of its own.


def _base_url(**default: str) -> luigi.Parameter:
    return luigi.Parameter(
        description="The provider's URL; the client appends the API's path", **default
    )


def _rate_per_second(**default: float) -> luigi.FloatParameter:
    return BoundedFloat(
        allowed=Range(0, 1_000_000, "requests per second", low_open=True),
        description="Requests per second the provider allows the account, shared by every "
        "process on this machine that sends through it",
        **default,
    )


def _burst(**default: int) -> luigi.IntParameter:
    return BoundedInt(
        allowed=Range(
            BURST_MARGIN, 1_000_000, f"requests (the client keeps {BURST_MARGIN} back)", True
        ),
        description="Requests the provider lets through at once (its bucket size)",
        **default,
    )


def _concurrency(**default: int) -> luigi.IntParameter:
    return BoundedInt(
        allowed=Range(1, 256, "sending threads"), description="Sending threads", **default
    )


class provider_section(NamedParseErrors, luigi.Config):  # noqa: N801 - named as the sections are
    """Settings every provider section shares."""

    base_url = _base_url()
    rate_per_second = _rate_per_second()
    burst = _burst()
    concurrency = _concurrency()
    timeout_seconds = BoundedFloat(
        default=10.0,
        allowed=Range(0, 3600, "seconds", low_open=True),
        description="Seconds to connect, and to wait for the answer, per request",
    )
    retry_attempts = BoundedInt(
        default=2,
        allowed=Range(1, 100, "attempts, the first one included"),
        description="Attempts per recipient per run for transient failures, the first included",
    )
    retry_delay_seconds = BoundedFloat(
        default=300.0,
        allowed=Range(0, 86_400, "seconds"),
        description="Seconds before a transient failure is tried again",
    )
    retry_unanswered = luigi.BoolParameter(
        default=False,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="Send again when a request got no answer, though the provider may have "
        "taken it (false: record it unknown, resent only with resend_unknown)",
    )


class email_api(provider_section):  # noqa: N801 - the section's name
    base_url = _base_url(default="http://127.0.0.1:8765")
    token_env = luigi.Parameter(
        default="EMAIL_API_TOKEN", description="Variable holding the SendGrid API key"
    )
    from_email = luigi.Parameter(default="", description="The verified SendGrid sender's address")
    from_name = luigi.Parameter(default="", description="The sender's name; empty: none")
    batch_size = BoundedInt(
        default=100,
        allowed=Range(1, 1000, "recipients per request"),
        description="Recipients per request, 1 to 1000 (SendGrid personalizations)",
    )
    custom_args = luigi.ListParameter(
        default=["campaign", "customer_id"],
        description="Fields sent as SendGrid custom_args (tracked in its event webhook)",
    )
    unsubscribe_url = luigi.Parameter(
        default="",
        description="https URL of the one-click unsubscribe endpoint, with {customer_id}, "
        "{campaign}, {token} (an HMAC of them) and optionally {contact} (the address sent "
        "to, signed too) filled in per recipient; sent in the List-Unsubscribe and "
        "List-Unsubscribe-Post headers (RFC 8058) and shown by {{ unsubscribe_url }} in "
        "templates",
    )
    unsubscribe_key_env = luigi.Parameter(
        default="UNSUBSCRIBE_KEY",
        description="Variable holding the unsubscribe links' HMAC key (32 or more random "
        "characters, shared with the unsubscribe endpoint); read when a link uses {token}",
    )
    unsubscribe_key_id = luigi.Parameter(
        default="1",
        description="Id of the key in unsubscribe_key_env, written in each token (1 to 16 of "
        "A-Z a-z 0-9 _ -); a new key gets a new id",
    )
    unsubscribe_old_key_envs = luigi.Parameter(
        default="",
        description="Older unsubscribe keys the endpoint still accepts, ID:VARIABLE pairs "
        "separated by commas (the variable holds that key); the pipeline signs with "
        "unsubscribe_key_env's alone and never reads them",
    )
    unsubscribe_mailto = luigi.Parameter(
        default="",
        description="Address (or mailto: URI, placeholders as unsubscribe_url) that "
        "unsubscribes its sender, also sent in List-Unsubscribe; empty: none",
    )
    asm_group_id = BoundedInt(
        default=0,
        allowed=Range(0, 2**31 - 1, "(0: none, else a SendGrid unsubscribe group id)"),
        description="SendGrid unsubscribe group sent as the asm block, so SendGrid manages "
        "the group's unsubscribes; 0: none",
    )
    transactional = luigi.BoolParameter(
        default=False,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="The emails are transactional (receipts, password resets): no "
        "unsubscribe path is required; false: a marketing email without unsubscribe_url, "
        "unsubscribe_mailto or asm_group_id stops the run before sending",
    )
    sync_suppressions = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="Before sending (and in a dry run), read SendGrid's own suppression "
        "lists (bounces, blocks, spam reports, invalid emails, global unsubscribes and "
        "asm_group_id's unsubscribes) into the consent store, so that their addresses are "
        "skipped, not sent",
    )
    suppression_page_size = BoundedInt(
        default=500,
        allowed=Range(1, 500, "entries per page"),
        description="Entries asked for per page of a SendGrid suppression list, 1 to 500 "
        "(SendGrid's limit parameter)",
    )
    rate_per_second = _rate_per_second(default=10.0)
    burst = _burst(default=50)
    concurrency = _concurrency(default=8)


class sms_api(provider_section):  # noqa: N801 - the section's name
    base_url = _base_url(default="http://127.0.0.1:8765")
    account_sid_env = luigi.Parameter(
        default="SMS_API_ACCOUNT_SID", description="Variable holding the Twilio AccountSid (AC...)"
    )
    auth_token_env = luigi.Parameter(
        default="SMS_API_AUTH_TOKEN",
        description="Variable holding the Twilio auth token; unread with api_key_sid_env",
    )
    api_key_sid_env = luigi.Parameter(
        default="",
        description="Variable holding a Twilio API key SID (SK...); set, the API key and "
        "api_key_secret_env authenticate instead of the auth token",
    )
    api_key_secret_env = luigi.Parameter(
        default="", description="Variable holding the Twilio API key's secret"
    )
    from_number = luigi.Parameter(
        default="", description="Twilio From number, unless messaging_service_sid is set"
    )
    messaging_service_sid = luigi.Parameter(
        default="", description="Twilio Messaging Service (MG...), which wins over from_number"
    )
    opt_out_text = luigi.Parameter(
        default="Reply STOP to opt out",
        description="Appended to an SMS (after a space or line break) whose text names no "
        "opt-out keyword (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT); counts toward the "
        "1600 characters; empty: never appended",
    )
    rate_per_second = _rate_per_second(default=5.0)
    burst = _burst(default=20)
    concurrency = _concurrency(default=4)


class push_api(provider_section):  # noqa: N801 - the section's name
    base_url = _base_url(default="http://127.0.0.1:8765")
    project_id = luigi.Parameter(
        default="", description="Firebase project; empty takes the service-account key's"
    )
    token_env = luigi.Parameter(
        default="PUSH_API_TOKEN", description="Variable holding a static OAuth2 access token"
    )
    service_account_env = luigi.Parameter(
        default="",
        description="Variable holding the path of a service-account JSON key; set, access "
        "tokens are minted from it (and renewed) instead of token_env's",
    )
    data = luigi.ListParameter(
        default=["campaign", "customer_id"],
        description="Fields sent in the FCM message's data (empty: notification only)",
    )
    rate_per_second = _rate_per_second(default=2.0)
    burst = _burst(default=10)
    concurrency = _concurrency(default=4)


class rate_limits(NamedParseErrors, luigi.Config):  # noqa: N801 - the section's name
    """The ``[rate_limits]`` section: where the providers' shared token buckets live."""

    bucket_dir = PathParameter(
        default="",
        description="Folder of the token buckets that every process on this machine sending "
        "through one provider account shares; empty: a folder of this user's in the temp dir",
    )
    lock_timeout_seconds = BoundedFloat(
        default=30.0,
        allowed=Range(0, 86_400, "seconds (a day)", low_open=True),
        description="Seconds a sender waits for a bucket file that another process holds "
        "(each holds it for microseconds); past it, the holder is taken as frozen and the "
        "channel stops with its recipients pending",
    )


class consent(NamedParseErrors, luigi.Config):  # noqa: N801 - the section's name
    """The ``[consent]`` section: who must not be messaged (see README, "Consent")."""

    suppressions = PathParameter(
        default="config/suppressions.csv",
        description="Suppression CSV read at every run (columns channel, contact, customer_id); "
        "a recipient it names is skipped, never sent; empty: no file",
    )
    store = PathParameter(
        default="var/consent.sqlite",
        description="SQLite file of what the pipeline learns from the providers' answers "
        "(STOP replies, retired tokens, invalid addresses) and remembers across campaigns",
    )
    dedupe_contacts = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="Customers sharing a contact on a channel get one message: the first in "
        "file order; the others are skipped as duplicates",
    )
    frequency_cap = BoundedInt(
        default=0,
        allowed=Range(0, 1_000_000, "messages per contact (0: no cap)"),
        description="At most this many messages per contact per channel within "
        "frequency_window_days, counted over every campaign sharing the store; the others "
        "are skipped as 'frequency cap'; 0: no cap (messages are still recorded)",
    )
    frequency_window_days = BoundedInt(
        default=7,
        allowed=Range(1, 3660, "days (ten years)"),
        description="The days (back from each recipient's admission) the frequency cap counts",
    )
    quiet_hours = luigi.Parameter(
        default="21:00-08:00",
        description="Quiet hours in the recipient's local time, HH:MM-HH:MM (or HH:MM:SS; "
        "may wrap midnight): a recipient of a quiet_hours_channels channel inside them is "
        "deferred, pending, and sent when they end; empty: none",
    )
    quiet_hours_channels = luigi.ListParameter(
        default=["sms", "push"],
        description="The channels (JSON list of registered names) that observe quiet_hours",
    )
    default_timezone = luigi.Parameter(
        default="UTC",
        description="IANA time zone of a recipient whose timezone column is empty and whose "
        "phone number tells none (quiet hours)",
    )
    max_wait_minutes = BoundedFloat(
        default=10.0,
        allowed=Range(0, 1440, "minutes (a day; 0: no wait)"),
        description="The longest a run waits for quiet hours to end; the recipients whose "
        "window opens later stay pending (deferred) and the run ends with exit 15, for a "
        "later run to send them",
    )


class report(NamedParseErrors, luigi.Config):  # noqa: N801 - the section's name
    """The ``[report]`` section: what each run folder's report.html and report.json show."""

    include_samples = luigi.BoolParameter(
        default=False,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="Show some failed, unknown and skipped recipients (customer id, contact, "
        "the provider's error text) in the report; false: customer data only as counts",
    )
    samples = BoundedInt(
        default=20,
        allowed=Range(0, 10_000, "recipients per channel"),
        description="Recipients per channel the report shows with include_samples",
    )
    base_url = luigi.Parameter(
        default="http://127.0.0.1:8084",
        description="http(s) URL serving [campaign] output_dir (make scheduler's report "
        "server, http://127.0.0.1:8084): the visualiser's tracking links point there; "
        "empty: file:// links to the report on this machine",
    )
    allowed_hosts = luigi.ListParameter(
        default=[],
        description="Host names (JSON list) the report server answers besides localhost, "
        "its own address and the host of base_url, e.g. a reverse proxy's; any other Host "
        "header is refused (421), so that no web page can read it by DNS rebinding",
    )
