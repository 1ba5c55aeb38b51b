"""Failure and retry emails, received by a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import email

import pytest
from aiosmtpd.controller import Controller
from conftest import DATE, RETCODE, free_port

from campaign_pipeline.sandbox import ErrorRule

ALWAYS_503 = ErrorRule("email", ".", 503)  # a transient failure that never clears


class Inbox:
    def __init__(self):
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, _server, _session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture
def inbox():
    port = free_port()
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


def failing_email_channel(campaign, inbox, email_on_retry: bool):
    campaign.write_customers(rows=5)
    campaign.start_sandbox(error_rules=[ALWAYS_503], echo_credentials=True)
    campaign.configure(
        email={"method": "smtp", "sender": "pipeline@example.com"},
        smtp={"host": "127.0.0.1", "port": inbox.port, "no_tls": "true"},
        notifications={"owner": "ops@example.com", "email_on_retry": str(email_on_retry)},
        scheduler={"retry_count": 2, "retry_delay": 0.3},
    )
    return campaign.run()


def body(message) -> str:
    parts = [part.get_payload(decode=True) for part in message.walk()]
    return "".join(part.decode() for part in parts if part)


def test_a_retried_failure_and_the_final_failure_each_send_one_email(campaign, inbox):
    done = failing_email_channel(campaign, inbox, email_on_retry=True)

    assert done.returncode == RETCODE["task_failed"]
    subjects = [m["Subject"] for m in inbox.messages]
    assert subjects == [
        f"[campaign_pipeline] campaign test {DATE}: SendEmailCampaign failed, will retry",
        f"[campaign_pipeline] campaign test {DATE}: SendEmailCampaign FAILED",
    ]
    for message, attempt in zip(inbox.messages, ("1 of 2", "2 of 2"), strict=True):
        text = body(message)
        assert message["X-Envelope-To"] == "ops@example.com"
        assert "Task:     SendEmailCampaign" in text
        assert "Campaign: test" in text and f"Date:     {DATE}" in text
        assert f"Attempt:  {attempt}" in text
        assert "still failing transiently" in text and "email provider answered 503" in text
    everything = "".join(m.as_string() for m in inbox.messages)
    for secret in campaign.credentials.values():
        assert secret not in everything


def test_without_email_on_retry_only_the_final_failure_is_sent(campaign, inbox):
    done = failing_email_channel(campaign, inbox, email_on_retry=False)

    assert done.returncode == RETCODE["task_failed"]
    assert [m["Subject"] for m in inbox.messages] == [
        f"[campaign_pipeline] campaign test {DATE}: SendEmailCampaign FAILED"
    ]


def test_no_owner_no_email(campaign, inbox):
    failing_email_channel(campaign, inbox, email_on_retry=True)
    campaign.configure(notifications={"owner": ""})

    again = campaign.run()

    assert again.returncode == RETCODE["task_failed"]
    assert len(inbox.messages) == 2, "only the first run, which had an owner, sent mail"
