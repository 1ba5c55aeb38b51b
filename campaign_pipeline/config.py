"""Configuration sections read from ``luigi.cfg`` (and ``$LUIGI_CONFIG_PATH``).

Each integration is a small ``luigi.Config`` whose class name is its section. Secrets are
never configuration values: a section stores the *name* of the environment variable that
holds one, and :func:`secret` reads it when a task runs.
"""

from __future__ import annotations

import os

import luigi


class MissingSecret(RuntimeError):
    """A required credential's environment variable is unset or empty."""


def secret(env_name: str, section: str, key: str) -> str:
    """Return the value of the environment variable *env_name*, or fail naming it."""
    value = os.environ.get(env_name, "")
    if not value:
        raise MissingSecret(
            f"environment variable {env_name} is not set (named by [{section}] {key}); "
            "export it before running the campaign"
        )
    return value


class campaign(luigi.Config):  # noqa: N801 - luigi maps the class name to the section
    name = luigi.Parameter(default="demo", description="Campaign name, part of the run folder")
    input_path = luigi.Parameter(
        default="data/sample/customers.csv",
        description="Customer CSV; may contain {date}, formatted YYYY-MM-DD",
    )
    output_dir = luigi.Parameter(default="var/campaigns", description="Root of the run folders")
    templates_dir = luigi.Parameter(default="config/templates")
    segments = luigi.ListParameter(default=["premium", "regular", "new"])
    default_region = luigi.Parameter(
        default="US", description="Region for phone numbers written without +country code"
    )


class _provider(luigi.Config):
    """Settings every provider section shares."""

    base_url = luigi.Parameter()
    rate_per_second = luigi.FloatParameter()
    burst = luigi.IntParameter()
    concurrency = luigi.IntParameter()
    timeout_seconds = luigi.FloatParameter(default=10.0)
    retry_attempts = luigi.IntParameter(default=2)
    retry_delay_seconds = luigi.FloatParameter(default=300.0)


class email_api(_provider):  # noqa: N801
    base_url = luigi.Parameter(default="http://127.0.0.1:8765")
    token_env = luigi.Parameter(default="EMAIL_API_TOKEN")
    from_email = luigi.Parameter(default="")
    from_name = luigi.Parameter(default="")
    rate_per_second = luigi.FloatParameter(default=10.0)
    burst = luigi.IntParameter(default=50)
    concurrency = luigi.IntParameter(default=8)


class sms_api(_provider):  # noqa: N801
    base_url = luigi.Parameter(default="http://127.0.0.1:8765")
    account_sid_env = luigi.Parameter(default="SMS_API_ACCOUNT_SID")
    auth_token_env = luigi.Parameter(default="SMS_API_AUTH_TOKEN")
    from_number = luigi.Parameter(default="")
    messaging_service_sid = luigi.Parameter(default="")
    rate_per_second = luigi.FloatParameter(default=5.0)
    burst = luigi.IntParameter(default=20)
    concurrency = luigi.IntParameter(default=4)


class push_api(_provider):  # noqa: N801
    base_url = luigi.Parameter(default="http://127.0.0.1:8765")
    project_id = luigi.Parameter(default="")
    token_env = luigi.Parameter(default="PUSH_API_TOKEN")
    rate_per_second = luigi.FloatParameter(default=2.0)
    burst = luigi.IntParameter(default=10)
    concurrency = luigi.IntParameter(default=4)
