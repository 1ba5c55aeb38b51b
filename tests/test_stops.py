"""Errors that are no recipient's fault stop a channel and lose nobody; a recipient's own
error fails that recipient alone; no credential leaks in any form, whatever the provider
answers."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import CHANNELS, REPO, RETCODE, TASKS

ALL = ["premium", "regular", "new"]


def ledger_statuses(campaign, channel: str) -> Counter:
    with sqlite3.connect(campaign.folder / f"{channel}_ledger.sqlite") as db:
        return Counter(status for (status,) in db.execute("SELECT status FROM deliveries"))


def everything_written(campaign, done) -> list[bytes]:
    """stdout, stderr and every file of the test's workspace."""
    files = [p.read_bytes() for p in campaign.root.rglob("*") if p.is_file()]
    return [done.stdout.encode(), done.stderr.encode(), *files]


def assert_all_sent_once(campaign, channel: str, recipients: int) -> None:
    assert [r["status"] for r in campaign.results(channel)] == ["sent"] * recipients
    accepted = campaign.accepted(channel)
    assert len(accepted) == recipients and set(accepted.values()) == {1}


@pytest.mark.parametrize(
    "channel, variable",
    [("email", "EMAIL_API_TOKEN"), ("sms", "SMS_API_AUTH_TOKEN")],
)
def test_a_request_that_cannot_be_sent_leaves_its_recipients_pending(campaign, channel, variable):
    """A curly quote pasted into a token passes the credential check, but HTTP headers cannot
    carry it: email fails while sending its Bearer header, SMS while building Basic auth."""
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    campaign.configure(**{TASKS[channel]: {"target_segments": ALL}})
    pasted = campaign.credentials[variable] + "\u2019"

    done = campaign.run(task=TASKS[channel], env=campaign.env(**{variable: pasted}))

    assert done.returncode == RETCODE["task_failed"]
    assert ledger_statuses(campaign, channel) == {"pending": 10}, "none in flight, none unknown"
    assert campaign.requests(channel) == 0
    assert f"{channel} channel stopped: cannot send {channel} requests (UnicodeEncodeError" in (
        done.stderr
    )
    assert f"${variable}" in done.stderr and "10 recipient(s) stay pending" in done.stderr
    assert not (campaign.folder / f"{channel}_results.csv").exists()
    assert all(
        campaign.credentials[variable].encode() not in b for b in everything_written(campaign, done)
    )

    fixed = campaign.run(task=TASKS[channel])

    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert_all_sent_once(campaign, channel, 10)


def broken_templates(tmp_path, email_id: str, sms_id: str):
    """Templates that raise for one customer each: a division by zero in the email body,
    arithmetic on a text in the SMS body."""
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "config" / "templates", folder)
    email_body = folder / "email" / "spring_sale" / "body.txt"
    email_body.write_text(
        email_body.read_text()
        + f"\n{{% if customer_id == '{email_id}' %}}{{{{ 1 / 0 }}}}{{% endif %}}"
    )
    (folder / "sms" / "spring_sale" / "body.txt").write_text(
        "Hi {{ first_name }}\n"
        f"{{% if customer_id == '{sms_id}' %}}{{{{ first_name + 1 }}}}{{% endif %}}"
    )
    return folder


def test_a_template_that_raises_for_one_customer_fails_that_customer_alone(campaign, tmp_path):
    customers = campaign.write_customers(rows=10)
    email_id, sms_id = customers[2]["customer_id"], customers[5]["customer_id"]
    campaign.start_sandbox()
    campaign.configure(
        campaign={"templates_dir": str(broken_templates(tmp_path, email_id, sms_id))},
        **{TASKS[c]: {"target_segments": ALL} for c in CHANNELS},
    )
    expected = {
        "email": (email_id, "email/spring_sale/body.txt line", "ZeroDivisionError"),
        "sms": (sms_id, "sms/spring_sale/body.txt line 2", "TypeError"),
    }

    preview = campaign.run("--dry-run")

    assert preview.returncode == 0, preview.stderr[-3000:]
    for channel, (bad, where, error) in expected.items():
        document = json.loads((campaign.folder / "dry-run" / f"{channel}_preview.json").read_text())
        assert document["counts"]["by_status"] == {"would_send": 9, "failed": 1}
        [not_sent] = document["not_sent"]
        assert (not_sent["customer_id"], not_sent["status"]) == (bad, "failed")
        assert where in not_sent["reason"] and error in not_sent["reason"]

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    for channel, (bad, where, error) in expected.items():
        results = {r["customer_id"]: r for r in campaign.results(channel)}
        failed = results.pop(bad)
        assert (failed["status"], failed["attempts"]) == ("failed", "0")
        assert where in failed["error"] and error in failed["error"]
        assert {r["status"] for r in results.values()} == {"sent"}
        assert len(campaign.accepted(channel)) == 9
    assert_all_sent_once(campaign, "push", 10)


RIGHT = {"from_email": "offers@example.com", "from_number": "+15005550006", "base_url": "{url}"}
CONFIG_ERRORS = {
    "email from_email": ("email", {"from_email": "offers-at-example.com"}, "from_email"),
    "sms from_number": ("sms", {"from_number": "5550006"}, "from_number"),
    "email base_url path": ("email", {"base_url": "{url}/api"}, "base_url"),
    "sms base_url path": ("sms", {"base_url": "{url}/api"}, "base_url"),
    "push base_url path": ("push", {"base_url": "{url}/api"}, "base_url"),
}


@pytest.mark.parametrize("case", CONFIG_ERRORS)
def test_a_misconfigured_channel_stops_and_the_fixed_rerun_sends_everyone(campaign, case):
    channel, wrong, key = CONFIG_ERRORS[case]
    campaign.write_customers(rows=10)
    sandbox = campaign.start_sandbox()
    campaign.configure(**{TASKS[channel]: {"target_segments": ALL}})
    section = f"{channel}_api"
    campaign.configure(**{section: {k: v.format(url=sandbox.base_url) for k, v in wrong.items()}})

    done = campaign.run(task=TASKS[channel])

    assert done.returncode == RETCODE["task_failed"]
    assert f"{channel} channel stopped: {channel} provider answered" in done.stderr
    assert f"check [{section}] {key}" in done.stderr or f"and [{section}] {key}" in done.stderr
    assert "10 recipient(s) stay pending for the next run" in done.stderr
    assert ledger_statuses(campaign, channel) == {"pending": 10}, "nobody failed for good"
    assert sum(campaign.accepted(channel).values()) == 0
    assert not (campaign.folder / f"{channel}_results.csv").exists()

    campaign.configure(**{section: {k: RIGHT[k].format(url=sandbox.base_url) for k in wrong}})
    fixed = campaign.run(task=TASKS[channel])

    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert_all_sent_once(campaign, channel, 10)


class NotAProvider(BaseHTTPRequestHandler):
    """Another web server: an HTML error page for every request (email's first is a GET of
    SendGrid's suppression lists)."""

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        page = b"<html><body><h1>400 Bad Request</h1></body></html>"
        self.send_response(400)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def not_a_provider():
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotAProvider)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    "channel, name", [("email", "SendGrid"), ("sms", "Twilio"), ("push", "FCM")]
)
def test_a_server_that_is_not_the_provider_stops_the_channel(
    campaign, not_a_provider, channel, name
):
    campaign.write_customers(rows=10)
    sandbox = campaign.start_sandbox()
    section = f"{channel}_api"
    campaign.configure(
        **{TASKS[channel]: {"target_segments": ALL}, section: {"base_url": not_a_provider}}
    )

    done = campaign.run(task=TASKS[channel])

    assert done.returncode == RETCODE["task_failed"]
    assert f"answered 400 with a body that is not {name}'s (text/html)" in done.stderr
    assert f"check [{section}] base_url" in done.stderr
    assert ledger_statuses(campaign, channel) == {"pending": 10}

    campaign.configure(**{section: {"base_url": sandbox.base_url}})
    fixed = campaign.run(task=TASKS[channel])

    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert_all_sent_once(campaign, channel, 10)


@pytest.mark.parametrize(
    "base_url", ["127.0.0.1:{port}", "localhost:{port}", "http://", "ftp://{host}"]
)
def test_a_base_url_that_is_no_http_url_fails_before_sending(campaign, base_url):
    campaign.write_customers(rows=10)
    sandbox = campaign.start_sandbox()
    value = base_url.format(port=sandbox.port, host=f"127.0.0.1:{sandbox.port}")
    campaign.configure(email_api={"base_url": value})

    done = campaign.run(task=TASKS["email"])

    assert done.returncode == RETCODE["task_failed"]
    assert f"[email_api] base_url {value!r} is not an http:// or https:// URL" in done.stderr
    assert campaign.requests("email") == 0
    assert not (campaign.folder / "email_ledger.sqlite").exists(), "stopped before the ledger"


@pytest.mark.parametrize(
    "variable, flaw, message",
    [
        ("EMAIL_API_TOKEN", "{}\n", "a line break at its end"),
        ("PUSH_API_TOKEN", "{}\r", "a line break at its end"),
        ("SMS_API_AUTH_TOKEN", " {}", "whitespace at its start"),
        ("SMS_API_ACCOUNT_SID", "{}\u200b", "an invisible or control character at its end"),
    ],
)
def test_a_pasted_credential_fails_naming_the_variable_never_the_value(
    campaign, variable, flaw, message
):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    value = campaign.credentials[variable]
    channel = variable.split("_")[0].lower()

    done = campaign.run(env=campaign.env(**{variable: flaw.format(value)}))

    assert done.returncode == RETCODE["task_failed"]
    assert all(value.encode() not in blob for blob in everything_written(campaign, done))
    assert f"environment variable {variable} (named by [{channel}_api] " in done.stderr
    assert message in done.stderr
    assert campaign.requests(channel) == 0
    for other in set(CHANNELS) - {channel}:  # the other channels are not held back
        assert {r["status"] for r in campaign.results(other)} == {"sent"}


def test_provider_texts_that_echo_credentials_are_masked_everywhere(campaign):
    """The sandbox quotes the request's path and Authorization header in every error: a 401
    stops email (Bearer) and SMS (Basic, AccountSid in the path), and push keeps failing with
    a 503 until it gives up with "Last error: ..."."""
    campaign.write_customers(rows=10)
    campaign.start_sandbox(echo_credentials=True, fail_first=1)
    campaign.configure(push_api={"retry_attempts": 1})
    wrong_email = "wrong-email-" + "e" * 20
    wrong_sms = "wrong-sms-" + "d" * 20

    done = campaign.run(env=campaign.env(EMAIL_API_TOKEN=wrong_email, SMS_API_AUTH_TOKEN=wrong_sms))

    assert done.returncode == RETCODE["task_failed"]
    sid = campaign.credentials["SMS_API_ACCOUNT_SID"]
    secrets = [wrong_email, wrong_sms, *campaign.credentials.values()]
    secrets += [base64.b64encode(f"{sid}:{token}".encode()).decode() for token in secrets]
    outputs = everything_written(campaign, done)
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in outputs), "a secret leaked"
    assert "email channel stopped: email provider answered 401" in done.stderr
    assert "sms channel stopped: sms provider answered 401 20003" in done.stderr
    assert "Last error: push provider answered 503" in done.stderr
    # email's first request reads SendGrid's suppression lists
    assert "(request: GET /v3/suppression/bounces Bearer ***)" in done.stderr, "the echo, masked"
    assert "(request: POST /2010-04-01/Accounts/***/Messages.json Basic ***)" in done.stderr
