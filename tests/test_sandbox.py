"""Tests of the local provider sandbox, through real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from campaign_pipeline.sandbox import (
    ENDPOINTS,
    ChannelLimit,
    Endpoint,
    Message,
    MissingCredentialsError,
    RejectedError,
    Reply,
    Sandbox,
    SandboxConfig,
    TokenBucket,
    demo_credentials,
    option_parser,
)
from campaign_pipeline.sandbox.endpoint import bearer_ok, load_json
from campaign_pipeline.sandbox.sendgrid import SuppressedEmail

ROOT = Path(__file__).resolve().parents[1]
EMAIL_TOKEN = "SG.test-email-token"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token"
PUSH_TOKEN = "test-push-token"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
NO_LIMITS = {"email": None, "sms": None, "push": None}
CREDENTIALS = {
    "EMAIL_API_TOKEN": EMAIL_TOKEN,
    "SMS_API_ACCOUNT_SID": ACCOUNT_SID,
    "SMS_API_AUTH_TOKEN": AUTH_TOKEN,
    "PUSH_API_TOKEN": PUSH_TOKEN,
}


def make_config(**overrides) -> SandboxConfig:
    return SandboxConfig.from_env(CREDENTIALS, **{"limits": dict(NO_LIMITS), **overrides})


@pytest.fixture
def sandbox(tmp_path):
    with Sandbox(make_config(record_path=str(tmp_path / "accepted.jsonl"))) as box:
        yield box


def mail(*recipients: str, **extra) -> dict:
    return {
        "personalizations": [
            {"to": [{"email": r}], "custom_args": {"customer_id": f"c-{i}"}}
            for i, r in enumerate(recipients)
        ],
        "from": {"email": "news@example.com", "name": "News"},
        "subject": "Hello",
        "content": [
            {"type": "text/plain", "value": "hi"},
            {"type": "text/html", "value": "<p>hi</p>"},
        ],
        "custom_args": {"campaign": "spring"},
        **extra,
    }


def send_email(box: Sandbox, body: dict, token: str = EMAIL_TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.post(f"{box.base_url}/v3/mail/send", json=body, headers=headers, timeout=5)


def send_sms(box: Sandbox, form: dict, auth=(ACCOUNT_SID, AUTH_TOKEN), sid=ACCOUNT_SID):
    url = f"{box.base_url}/2010-04-01/Accounts/{sid}/Messages.json"
    return requests.post(url, data=form, auth=auth, timeout=5)


def send_push(box: Sandbox, message: dict, token: str = PUSH_TOKEN) -> requests.Response:
    url = f"{box.base_url}/v1/projects/demo-project/messages:send"
    headers = {"Authorization": f"Bearer {token}"}
    return requests.post(url, json={"message": message}, headers=headers, timeout=5)


def test_email_accepted_per_personalization_and_recorded(sandbox, tmp_path):
    response = send_email(sandbox, mail("ann@example.com", "bob@example.com"))
    assert response.status_code == 202
    assert response.content == b""
    message_id = response.headers["X-Message-Id"]
    assert len(message_id) == 22
    records = sandbox.accepted()
    assert [r["recipient"] for r in records] == ["ann@example.com", "bob@example.com"]
    assert records[1]["campaign"] == "spring"
    assert records[1]["customer_id"] == "c-1"
    assert records[0]["message_id"] == message_id
    assert records[0]["request"]["subject"] == "Hello"
    lines = (tmp_path / "accepted.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_sms_accepted(sandbox):
    form = {"To": "+14155550100", "From": "+14155550199", "Body": "Hi there"}
    response = send_sms(sandbox, form)
    assert response.status_code == 201
    body = response.json()
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    assert body["status"] == "queued"
    assert body["num_segments"] == "1"
    assert body["messaging_service_sid"] is None
    assert body["account_sid"] == ACCOUNT_SID
    [record] = sandbox.accepted()
    assert record["recipient"] == "+14155550100"
    assert record["message_id"] == body["sid"]
    assert record["campaign"] is None and record["request"] == form


def test_push_accepted(sandbox):
    message = {
        "token": "device-1",
        "notification": {"title": "T", "body": "B"},
        "data": {"campaign": "spring", "customer_id": "42"},
    }
    response = send_push(sandbox, message)
    assert response.status_code == 200
    name = response.json()["name"]
    assert name.startswith("projects/demo-project/messages/")
    [record] = sandbox.accepted()
    assert (record["recipient"], record["campaign"], record["customer_id"]) == (
        "device-1",
        "spring",
        "42",
    )
    assert record["message_id"] == name


def test_bad_credentials_are_401(sandbox):
    email = send_email(sandbox, mail("ann@example.com"), token="wrong")
    assert email.status_code == 401
    assert email.json()["errors"][0]["field"] is None
    sms = send_sms(sandbox, {"To": "+14155550100"}, auth=(ACCOUNT_SID, "wrong"))
    assert sms.status_code == 401 and sms.json()["code"] == 20003
    other_sid = "AC" + "1" * 32
    sms = send_sms(sandbox, {"To": "+14155550100"}, sid=other_sid)
    assert sms.status_code == 401
    push = send_push(sandbox, {"token": "device-1"}, token="wrong")
    assert push.status_code == 401
    assert push.json()["error"]["status"] == "UNAUTHENTICATED"
    assert sandbox.accepted() == []


def test_invalid_bodies_get_provider_errors(sandbox):
    sms = send_sms(sandbox, {"To": "0800", "From": "+14155550199", "Body": "x"})
    assert sms.status_code == 400
    assert sms.json() == {
        "code": 21211,
        "message": "The 'To' number 0800 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }
    push = send_push(sandbox, {"token": "device-1", "data": {"n": 5}})
    assert push.status_code == 400
    error = push.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"][0]["errorCode"] == "INVALID_ARGUMENT"
    email = send_email(sandbox, mail("ann@example.com", content=[{"type": "text/html"}]))
    assert email.status_code == 400
    assert email.json()["errors"][0]["field"] == "content.0.value"
    wrong_type = requests.post(
        f"{sandbox.base_url}/v3/mail/send",
        data="x",
        headers={"Authorization": f"Bearer {EMAIL_TOKEN}", "Content-Type": "text/plain"},
        timeout=5,
    )
    assert wrong_type.status_code == 415
    assert sandbox.accepted() == []


def test_permanent_rules(sandbox):
    email = send_email(sandbox, mail("bounce-1@example.com"))
    assert email.status_code == 400
    assert email.json() == {
        "errors": [
            {
                "field": "personalizations.0.to.0.email",
                "message": "Does not contain a valid address.",
            }
        ]
    }
    sms = send_sms(sandbox, {"To": "+15005550004", "MessagingServiceSid": SERVICE_SID, "Body": "x"})
    assert (sms.status_code, sms.json()["code"]) == (400, 21610)
    unregistered = send_push(sandbox, {"token": "unregistered-7"})
    assert unregistered.status_code == 404
    assert unregistered.json()["error"]["details"][0]["errorCode"] == "UNREGISTERED"
    invalid = send_push(sandbox, {"token": "invalid-7"})
    assert invalid.status_code == 400
    assert sandbox.accepted() == []


def test_strict_bucket_refuses_fourth_request():
    limits = {"email": ChannelLimit(0.001, 3), "sms": ChannelLimit(0.001, 3), "push": None}
    with Sandbox(make_config(limits=limits)) as box:
        for _ in range(3):
            assert send_email(box, mail("ann@example.com")).status_code == 202
        refused = send_email(box, mail("ann@example.com"))
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["message"] == "too many requests"
        assert refused.headers["X-RateLimit-Limit"] == "3"
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.headers["X-RateLimit-Reset"]) > 0
        form = {"To": "+14155550100", "From": "+14155550199", "Body": "x"}
        for _ in range(3):
            assert send_sms(box, form).status_code == 201
        refused = send_sms(box, form)
        assert refused.status_code == 429 and refused.json()["code"] == 20429
        assert int(refused.headers["Retry-After"]) >= 1
        assert len(box.accepted()) == 6
        assert box.stats()["email"]["rate_limited"] == 1


def test_token_bucket_waits_for_one_token():
    bucket = TokenBucket(rate=2.0, burst=1)
    assert bucket.take() == 0.0
    wait = bucket.take()
    assert 0.4 < wait <= 0.5


def test_fail_first_then_accepted():
    with Sandbox(make_config(fail_first=1)) as box:
        first = send_email(box, mail("ann@example.com"))
        assert first.status_code == 503
        assert first.json()["errors"][0]["message"] == "service unavailable"
        assert send_email(box, mail("ann@example.com")).status_code == 202
        push = send_push(box, {"token": "device-1"})
        assert push.json()["error"]["status"] == "UNAVAILABLE"
        assert send_push(box, {"token": "device-1"}).status_code == 200
        assert [r["recipient"] for r in box.accepted()] == ["ann@example.com", "device-1"]


def test_hang_first_wakes_on_short_hang():
    with Sandbox(make_config(hang_first=1, hang_seconds=0.05)) as box:
        assert send_push(box, {"token": "device-1"}).status_code == 503
        assert send_push(box, {"token": "device-1"}).status_code == 200


def test_stats_counts(sandbox):
    send_email(sandbox, mail("ann@example.com", "bob@example.com"))
    send_email(sandbox, mail("bounce@example.com"))
    send_push(sandbox, {"token": "device-1"}, token="wrong")
    stats = requests.get(f"{sandbox.base_url}/_stats", timeout=5).json()
    assert stats == sandbox.stats()
    first, last = stats["email"].pop("first_request_at"), stats["email"].pop("last_request_at")
    assert first <= last
    assert stats["email"] == {
        "requests": 2,
        "accepted": 2,
        "rate_limited": 0,
        "statuses": {"202": 1, "400": 1},
        "other_requests": 0,  # SendGrid's suppression lists, tested on their own
        "other_statuses": {},
        "dropped": 0,
        "suppression_pages": {},
    }
    assert stats["push"]["statuses"] == {"401": 1}
    assert stats["sms"]["requests"] == 0


def test_unknown_route_is_404(sandbox):
    assert requests.get(f"{sandbox.base_url}/v3/nothing", timeout=5).status_code == 404


# -- A fourth provider, declared here: the sandbox serves any list of endpoint classes --------


class ChatEndpoint(Endpoint):
    """A made-up chat provider: ``POST /chat/send`` with a Bearer token and ``{"to", "text"}``."""

    channel = "chat"
    provider = "Chat"
    route = re.compile(r"/chat/send")
    content_type = "application/json"
    limit = ChannelLimit(0.001, 2)
    credential_vars = ("CHAT_API_TOKEN",)

    def authorized(self, headers, params) -> bool:
        return bearer_ok(headers, self.credential("CHAT_API_TOKEN"))

    def unauthorized(self) -> Reply:
        return Reply(401, {"error": "unauthorized"})

    def rate_limited(self, wait: float, burst: int) -> Reply:
        return Reply(429, {"error": "slow down"})

    def unavailable(self) -> Reply:
        return Reply(503, {"error": "unavailable"})

    def error(self, status: int, code: str) -> Reply:
        return Reply(status, {"error": code})

    def unsupported_media(self) -> Reply:
        return Reply(415, {"error": "json only"})

    def recipients(self, body: bytes) -> list[str]:
        data = load_json(body)
        return [data["to"]] if isinstance(data, dict) and isinstance(data.get("to"), str) else []

    def parse(self, body: bytes, params) -> list[Message]:
        to = self.recipients(body)
        if not to:
            raise RejectedError(Reply(400, {"error": "to is required"}))
        return [Message(to[0], None, None, load_json(body))]

    def respond(self, messages, params) -> tuple[Reply, str]:
        return Reply(200, {"id": "chat-1"}), "chat-1"


FOUR = [*ENDPOINTS, ChatEndpoint]
CHAT_TOKEN = "chat-token-" + "c" * 16


def send_chat(box: Sandbox, to: str, token: str = CHAT_TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"to": to, "text": "hi"}
    return requests.post(f"{box.base_url}/chat/send", json=body, headers=headers, timeout=5)


def test_a_fourth_endpoint_is_served_next_to_the_three_with_its_own_credential_and_limit():
    env = {**CREDENTIALS, "CHAT_API_TOKEN": CHAT_TOKEN, "UNRELATED_SECRET": "x"}
    config = SandboxConfig.from_env(env, FOUR)
    assert config.credentials == {**CREDENTIALS, "CHAT_API_TOKEN": CHAT_TOKEN}

    with Sandbox(config, FOUR) as box:
        assert send_chat(box, "+14155550100", token="wrong").status_code == 401
        assert send_chat(box, "+14155550100").status_code == 200
        assert send_chat(box, "+14155550101").status_code == 200
        assert send_chat(box, "+14155550102").status_code == 429  # its own bucket of 2
        assert send_email(box, mail("ann@example.com")).status_code == 202
        stats = requests.get(f"{box.base_url}/_stats", timeout=5).json()

    assert list(stats) == ["email", "sms", "push", "chat"]
    assert stats["chat"]["requests"] == 4
    assert stats["chat"]["accepted"] == 2
    assert stats["chat"]["rate_limited"] == 1
    assert stats["chat"]["statuses"] == {"200": 2, "401": 1, "429": 1}
    assert stats["email"]["accepted"] == 1
    records = [r for r in box.accepted() if r["channel"] == "chat"]
    assert [r["recipient"] for r in records] == ["+14155550100", "+14155550101"]


def test_a_fourth_endpoints_credential_is_required_and_its_flags_and_demo_values_exist():
    with pytest.raises(MissingCredentialsError, match="CHAT_API_TOKEN"):
        SandboxConfig.from_env(CREDENTIALS, FOUR)
    with pytest.raises(MissingCredentialsError, match="CHAT_API_TOKEN"):
        Sandbox(make_config(), FOUR)  # a configuration made for the three only

    args = option_parser(FOUR).parse_args(["--chat-rate", "3", "--chat-burst", "4"])
    assert (args.chat_rate, args.chat_burst, args.email_rate) == (3.0, 4, 10)
    assert set(demo_credentials(FOUR)) >= {"CHAT_API_TOKEN", *CREDENTIALS}


def cli_env(**overrides: str) -> dict[str, str]:
    return {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT), **overrides}


@pytest.mark.e2e
def test_cli_runs_command_and_returns_its_exit_code():
    command = [sys.executable, "-m", "campaign_pipeline.sandbox", "--port", "0", "--"]
    command += [sys.executable, "-c", "import sys; sys.exit(3)"]
    done = subprocess.run(
        command, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 3
    assert done.stdout.startswith("sandbox provider listening on http://127.0.0.1:")


@pytest.mark.e2e
def test_cli_names_missing_credentials():
    env = cli_env(PUSH_API_TOKEN="")
    command = [sys.executable, "-m", "campaign_pipeline.sandbox", "--port", "0", "--", "true"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert "PUSH_API_TOKEN" in done.stderr
    assert EMAIL_TOKEN not in done.stderr


def get_list(box: Sandbox, path: str, token: str = EMAIL_TOKEN, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{box.base_url}{path}", params=params, headers=headers, timeout=5)


def test_sendgrid_suppression_lists_page_and_drop_mail_to_their_addresses():
    seeded = [
        SuppressedEmail.parse(text)
        for text in (
            "bounces:a@example.com:2026-11-20",
            "bounces:b@example.com",
            "bounces:c@example.com",
            "unsubscribes:u@example.com",
            "group-42:g@example.com",
        )
    ]
    with Sandbox(make_config(suppressed_emails=seeded)) as box:
        first = get_list(box, "/v3/suppression/bounces", limit=2, offset=0).json()
        last = get_list(box, "/v3/suppression/bounces", limit=2, offset=2).json()
        group = get_list(box, "/v3/asm/groups/42/suppressions").json()
        other_group = get_list(box, "/v3/asm/groups/7/suppressions").json()
        refused = get_list(box, "/v3/suppression/blocks", token="wrong")
        too_big = get_list(box, "/v3/suppression/blocks", limit=501)
        unknown = get_list(box, "/v3/suppression/everything")
        sent = send_email(box, mail("U@example.com", "g@example.com", "z@example.com"))
        deleted = requests.delete(
            f"{box.base_url}/v3/suppression/bounces/a%40example.com",
            headers={"Authorization": f"Bearer {EMAIL_TOKEN}"},
            timeout=5,
        )
        after = get_list(box, "/v3/suppression/bounces").json()
        stats = box.stats()["email"]

    assert first[0] == {
        "created": 1795132800,  # 2026-11-20 UTC
        "email": "a@example.com",
        "reason": "sandbox seeded entry",
        "status": "5.1.1",
    }
    assert [e["email"] for e in first + last] == ["a@example.com", "b@example.com", "c@example.com"]
    assert group == ["g@example.com"] and other_group == []
    assert (refused.status_code, too_big.status_code, unknown.status_code) == (401, 400, 404)
    assert sent.status_code == 202 and deleted.status_code == 204
    assert [e["email"] for e in after] == ["b@example.com", "c@example.com"]
    # accepted, then dropped: the global unsubscribe; a group's list needs the group's asm
    assert stats["dropped"] == 1 and stats["accepted"] == 3
    assert stats["requests"] == 1 and stats["other_requests"] == 9
    assert stats["suppression_pages"] == {"bounces": 3, "group-42": 1, "group-7": 1}


def test_opted_out_numbers_and_unregistered_tokens_are_refused_for_good():
    config = make_config(opted_out=["+14155550100"], unregistered_tokens=["device-9"])
    with Sandbox(config) as box:
        sms = send_sms(box, {"To": "+14155550100", "From": "+14155550199", "Body": "Hi"})
        other = send_sms(box, {"To": "+14155550101", "From": "+14155550199", "Body": "Hi"})
        push = send_push(box, {"token": "device-9"})

    assert (sms.status_code, sms.json()["code"]) == (400, 21610)
    assert other.status_code == 201
    assert push.status_code == 404
    assert push.json()["error"]["details"][0]["errorCode"] == "UNREGISTERED"


def test_suppressed_email_option_is_checked():
    parser = option_parser()
    args = parser.parse_args(
        ["--suppressed-email", "group-3:a@example.com", "--opted-out", "+14155550100"]
    )
    assert args.suppressed_email == [SuppressedEmail("group-3", "a@example.com", 0)]
    assert args.opted_out == ["+14155550100"]
    with pytest.raises(ValueError, match="unknown list 'bouncez'"):
        SuppressedEmail.parse("bouncez:a@example.com")
