"""The channel registry: everything per channel derives from one declaration each."""

from __future__ import annotations

from conftest import CHANNELS, RETCODE, free_port

from campaign_pipeline import channels
from campaign_pipeline.providers import PROVIDER_URL_ENV


def test_the_registry_holds_the_three_channels_in_order():
    names = [c.name for c in channels.registered()]
    assert names == ["email", "sms", "push"] == list(CHANNELS)
    tasks = [c.task.get_task_family() for c in channels.registered()]
    assert tasks == ["SendEmailCampaign", "SendSmsCampaign", "SendPushNotification"]
    assert [c.contact for c in channels.registered()] == ["email", "phone", "device_token"]


def test_credential_variables_come_from_each_sections_env_keys():
    found = {c.name: c.credential_variables() for c in channels.registered()}
    assert found == {
        "email": ["EMAIL_API_TOKEN"],
        "sms": ["SMS_API_ACCOUNT_SID", "SMS_API_AUTH_TOKEN"],
        "push": ["PUSH_API_TOKEN"],
    }


def test_one_variable_points_every_provider_at_one_url(campaign):
    """CAMPAIGN_PROVIDER_URL replaces every base_url: the config's point nowhere."""
    campaign.write_customers(rows=10)
    sandbox = campaign.start_sandbox()
    nowhere = f"http://127.0.0.1:{free_port()}"
    campaign.configure(**{f"{c}_api": {"base_url": nowhere} for c in CHANNELS})

    done = campaign.run(env=campaign.env(**{PROVIDER_URL_ENV: sandbox.base_url}))

    assert done.returncode == 0, done.stderr[-3000:]
    for channel in CHANNELS:
        assert {r["status"] for r in campaign.results(channel)} == {"sent"}


def test_a_bad_provider_url_variable_is_named(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()

    done = campaign.run(env=campaign.env(**{PROVIDER_URL_ENV: "127.0.0.1:8765"}))

    assert done.returncode == RETCODE["task_failed"]
    assert f"${PROVIDER_URL_ENV} (set, it replaces [email_api] base_url)" in done.stderr
    assert all(campaign.requests(c) == 0 for c in CHANNELS)
