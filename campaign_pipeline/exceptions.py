"""The errors of campaign_pipeline, and which of them no retry can heal.

Every error the package raises on purpose is a :class:`CampaignError`; handlers and retry
decisions key on this tree, never on a message's text::

    CampaignError
    ├── PermanentError               no retry can heal it: fix the cause and rerun
    │   ├── SettingsError            a setting or flag the pipeline cannot use
    │   │   └── KeyFileError         the service-account key file
    │   ├── MissingSecretError       a credential's environment variable is unset
    │   ├── InvalidSecretError       a credential's value cannot be right
    │   ├── TokenRefusedError        the token endpoint refused the service-account key
    │   ├── TemplateError            a template is missing or does not compile
    │   ├── InputError               the customer file cannot be read (segments.py)
    │   ├── SuppressionFileError     the suppression file (or an import) is malformed
    │   └── ChannelStoppedError      the provider refused the channel as a whole
    ├── MessageError                 one recipient's message cannot be built: it fails alone
    ├── TokenUnavailableError        no access token for now
    ├── ListUnavailableError         a provider's suppression list cannot be read for now
    ├── LedgerBusyError              another run is sending the channel
    ├── RecipientsPendingError       recipients still failing transiently after the attempts
    ├── RecipientsDeferredError      quiet hours end after ``[consent] max_wait_minutes``
    ├── SendingInterruptedError      a signal or an unexpected error stopped the sending
    │   └── BucketLockedError        a frozen process holds a rate-limit bucket file
    ├── TimedOutError                the task ran past ``[campaign] timeout_seconds``
    └── NotSentError                 a request failed before any byte of it left

A :class:`PermanentError` comes from configuration, credentials, templates or the input's
schema: running the same task again changes nothing, so the run ends at once (exit 30) rather
than waiting for luigi's retry, and leaves the fixed rerun free to go. Any other failure is
transient and keeps luigi's retry policy.
"""

from __future__ import annotations


class CampaignError(Exception):
    """The root of every error this package raises on purpose."""


class PermanentError(CampaignError):
    """A failure that a retry of the same task cannot heal; fix the cause and rerun."""


class SettingsError(PermanentError, ValueError):
    """A setting is unknown or has a value the pipeline cannot use; the message names the key."""


class KeyFileError(SettingsError):
    """The service-account key file is missing, unreadable or not a service-account key."""


class MissingSecretError(PermanentError):
    """A required credential's environment variable is unset or empty."""


class InvalidSecretError(PermanentError):
    """A credential's value cannot be right (say, a line break pasted with it)."""


class TokenRefusedError(PermanentError):
    """The token endpoint refused the key (revoked, deleted, wrong scope): no retry helps."""


class TemplateError(PermanentError, ValueError):
    """A template is missing, does not compile, or uses a variable no customer has."""


class ConsentStoreError(PermanentError):
    """The consent store (``[consent] store``) cannot be opened: a folder, not an SQLite
    file, in a folder that cannot be created or written. Nothing is sent, since the store
    holds the opt-outs the providers taught."""


class SuppressionFileError(PermanentError, ValueError):
    """The suppression file (or a file given to ``campaign-consent import``) cannot be used:
    missing, a column absent, an unknown channel, a row with both or neither of contact and
    customer_id, an invalid contact. The message names the file and the line; nothing is
    sent, since sending without the opt-outs it holds could message someone who opted out."""


class ChannelStoppedError(PermanentError):
    """The provider refused the channel as a whole, or its requests cannot be sent: the
    credentials, the account or the configuration is wrong. Every recipient not yet sent
    stays pending, for the run after the fix."""


class MessageError(CampaignError, ValueError):
    """One recipient's message cannot be built: the customer's data meets the template
    badly (``{{ 1 / points }}`` with a zero), or renders to a message the provider refuses
    (an empty subject, an SMS too long). That recipient fails, unsent; the others go on."""


class TokenUnavailableError(CampaignError):
    """No access token for now: the token endpoint could not be reached, or answered with
    a transient error. The recipients stay pending, as for any transient failure."""


class ListUnavailableError(CampaignError):
    """A provider's own suppression list (SendGrid's bounces, say) cannot be read for now:
    a server error, a timeout, a connection failure. Nothing is sent without it; the
    recipients stay pending and luigi's retry reads the lists again."""


class LedgerBusyError(CampaignError):
    """Another process is sending this channel of this campaign and date; a retry after it
    ends finds the ledger free."""


class RecipientsPendingError(CampaignError):
    """Recipients were still failing transiently (timeouts, 5xx) after a run's attempts; the
    retry sends exactly those."""


class RecipientsDeferredError(CampaignError):
    """Recipients are deferred by quiet hours whose window opens later than the run may wait
    (``[consent] max_wait_minutes``); they stay pending, and a run after that moment sends
    them. The run ends at once: a retry before the window opens would defer them again."""


class SendingInterruptedError(CampaignError):
    """Sending stopped for a reason a rerun may not meet again: a signal (luigi's
    worker_timeout, an operator) or an unexpected error."""


class BucketLockedError(SendingInterruptedError):
    """A provider account's bucket file (:mod:`campaign_pipeline.ratelimit`) stayed locked
    past ``[rate_limits] lock_timeout_seconds``: the process holding it is frozen. The
    channel stops with its recipients pending; the message names the file."""


class TimedOutError(CampaignError):
    """A task ran longer than ``[campaign] timeout_seconds``; its retry may finish."""


class NotSentError(CampaignError):
    """A request failed before any byte of it was written; ``__cause__`` is the error."""
