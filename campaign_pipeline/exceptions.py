"""The errors of campaign_pipeline, and which of them no retry can heal.

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
