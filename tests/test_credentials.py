"""Production credentials: FCM access tokens minted from a service-account key by google-auth
(and renewed as they expire or when refused), and Twilio API keys.

The sandbox plays Google's token endpoint: it verifies the JWT-bearer grant against the
public half of a key generated here, and issues tokens that expire in a second or two.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import time
import urllib.parse
import urllib.request

import google.auth.crypt
import google.auth.jwt
import pytest
import requests
from conftest import DATE, REPO, RETCODE, free_port, wait_for
from test_cron import BIN
from test_notifications import body, inbox  # noqa: F401 - the SMTP fixture
from test_operations import luigid, task_list  # noqa: F401 - luigid: config/luigid.cfg

from campaign_pipeline.config import push_api, sms_api
from campaign_pipeline.exceptions import (
    InvalidSecretError,
    KeyFileError,
    MissingSecretError,
    SettingsError,
    TokenRefusedError,
    TokenUnavailableError,
)
from campaign_pipeline.providers.oauth import FCM_SCOPE, ServiceAccountTokens, read_key_file
from campaign_pipeline.providers.push import PushProvider
from campaign_pipeline.providers.sms import SmsProvider
from campaign_pipeline.sandbox import ErrorRule, Sandbox, SandboxConfig, demo_credentials
from campaign_pipeline.sandbox.oauth import GOOGLE_TOKEN_URI, JWT_BEARER, new_key

KEY_VAR = "GOOGLE_APPLICATION_CREDENTIALS"
API_KEY_SID = "SK" + "0123456789abcdef" * 2
API_KEY_SECRET = "api-key-secret-" + "f" * 16
API_KEY = {"SMS_API_KEY_SID": API_KEY_SID, "SMS_API_KEY_SECRET": API_KEY_SECRET}  # the sandbox's


def with_service_account(campaign, key: dict | None = None, **push) -> dict:
    """Point push at a service-account key file (a new one the sandbox trusts by default);
    return the environment of the run, which holds no static push token."""
    key = key or campaign.sandbox.new_service_account("sa-project")
    path = campaign.root / "service-account.json"
    path.write_text(json.dumps(key))
    campaign.configure(push_api={"service_account_env": KEY_VAR, "project_id": "", **push})
    env = campaign.env(**{KEY_VAR: str(path)})
    del env["PUSH_API_TOKEN"]
    return env


def push_run(campaign, env, *args):
    return campaign.run(*args, env=env, task="SendPushNotification")


def ledger_statuses(campaign, channel: str) -> list[str]:
    with sqlite3.connect(campaign.folder / f"{channel}_ledger.sqlite") as db:
        return [status for (status,) in db.execute("SELECT status FROM deliveries")]


# -- FCM service accounts, end to end ------------------------------------------------------


def test_a_push_campaign_outlives_several_access_tokens(campaign):
    """Tokens that last 1 s, a campaign of about 4 s: google-auth mints new ones before the
    old expire, so no request is refused and every recipient gets one message."""
    campaign.write_customers(rows=50)
    sandbox = campaign.start_sandbox(token_lifetime=1.0)
    env = with_service_account(campaign, rate_per_second=10, burst=3, concurrency=2)
    campaign.configure(SendPushNotification={"target_segments": ["premium", "regular", "new"]})

    done = push_run(campaign, env)

    assert done.returncode == 0, done.stderr[-3000:]
    results = campaign.results("push")
    sent = [r for r in results if r["status"] == "sent"]
    assert sent and len(sent) == sum(campaign.accepted("push").values())
    assert set(campaign.accepted("push").values()) == {1}
    stats = sandbox.stats()["push"]
    assert "401" not in stats["statuses"], stats
    assert stats["last_request_at"] - stats["first_request_at"] > 3.0, "outlived 3 tokens"
    assert stats["tokens_issued"] >= 4, stats
    for blob in (done.stderr, (campaign.folder / "push_results.csv").read_text()):
        assert "ya29." not in blob, "an access token leaked"


def test_a_refused_access_token_is_renewed_once_and_the_message_goes(campaign):
    """FCM answers 401 UNAUTHENTICATED once per recipient (a revoked token, a clock skew):
    a new token is minted and the request sent again, without using an attempt."""
    campaign.write_customers(rows=30)
    sandbox = campaign.start_sandbox(error_rules=[ErrorRule("push", ".", 401, "", times=1)])
    env = with_service_account(campaign, concurrency=1, retry_attempts=1)

    done = push_run(campaign, env)

    assert done.returncode == 0, done.stderr[-3000:]
    results = campaign.results("push")
    assert {r["status"] for r in results} == {"sent"}
    assert set(campaign.accepted("push").values()) == {1}
    stats = sandbox.stats()["push"]
    assert stats["statuses"]["401"] == len(results)
    assert stats["tokens_issued"] == 1 + len(results), "one token, then one per refusal"


def test_a_token_refused_again_after_renewal_stops_the_channel(campaign):
    campaign.write_customers(rows=30)
    campaign.start_sandbox(error_rules=[ErrorRule("push", ".", 401, "", times=2)])
    env = with_service_account(campaign, concurrency=1)

    done = push_run(campaign, env)

    assert done.returncode == RETCODE["task_failed"]
    assert "push channel stopped: push provider answered 401" in done.stderr
    assert "(also with a new access token)" in done.stderr
    assert f"check ${KEY_VAR} ([push_api] service_account_env)" in done.stderr
    assert campaign.requests("push") == 2, "one renewal, then the stop"
    assert set(ledger_statuses(campaign, "push")) == {"pending"}


def test_a_key_the_token_endpoint_refuses_fails_before_anything_is_sent(campaign):
    """A key the provider does not know (deleted in the console): exit 30 at once, one line."""
    campaign.write_customers(rows=30)
    sandbox = campaign.start_sandbox()
    unknown = new_key(sandbox.base_url + "/token", "sa-project")  # never trusted
    env = with_service_account(campaign, unknown)

    started = time.monotonic()
    done = push_run(campaign, env)

    assert done.returncode == RETCODE["task_failed"]
    assert time.monotonic() - started < 30, "no retry for a refused key"
    assert "the token endpoint refused the service-account key (HTTP 400, " in done.stderr
    assert "error invalid_grant)" in done.stderr
    assert "failed for good" in done.stderr
    assert campaign.requests("push") == 0
    assert unknown["private_key"].splitlines()[1] not in done.stderr


def test_an_unreachable_token_endpoint_is_transient(campaign):
    campaign.write_customers(rows=30)
    sandbox = campaign.start_sandbox()
    key = sandbox.new_service_account("sa-project")
    key["token_uri"] = f"http://127.0.0.1:{free_port()}/token"
    env = with_service_account(campaign, key, timeout_seconds=2)

    done = push_run(campaign, env)

    assert done.returncode == RETCODE["task_failed"]
    assert "cannot reach the token endpoint" in done.stderr
    assert "failed for good" not in done.stderr, "a retry may heal it"
    assert campaign.requests("push") == 0


def test_minted_tokens_are_masked_in_what_the_provider_echoes(campaign):
    """The sandbox quotes the Authorization header in its errors; a failed recipient's error
    keeps the quote with the access token masked."""
    customers = campaign.write_customers(rows=30)
    token = next(c["device_token"] for c in customers if c["segment"] == "premium")
    rule = ErrorRule("push", token, 400, "INVALID_ARGUMENT")
    campaign.start_sandbox(echo_credentials=True, error_rules=[rule])
    env = with_service_account(campaign)

    done = push_run(campaign, env)

    assert done.returncode == 0, done.stderr[-3000:]
    failed = [r for r in campaign.results("push") if r["status"] == "failed"]
    assert failed and "Bearer ***" in failed[0]["error"], failed
    written = [p.read_bytes() for p in campaign.root.rglob("*") if p.is_file()]
    assert not any(b"ya29." in blob for blob in [done.stderr.encode(), *written])


def parts_of(secret: str, size: int = 16) -> list[str]:
    """Every stretch of *size* characters of *secret*, 4 apart: an output holding any part
    of it (a line cut short, one segment of a JWT) holds one of these."""
    return [secret[i : i + size] for i in range(0, len(secret) - size + 1, 4)]


@pytest.mark.parametrize(
    "status, error, expected",
    [
        (403, TokenRefusedError, "answered HTTP 403, text/html, "),
        (200, TokenRefusedError, "answered HTTP 200, text/html, "),  # a captive portal
        (503, TokenUnavailableError, "failed (HTTP 503, text/html, "),  # a retry may heal it
    ],
)
def test_a_page_in_place_of_the_token_endpoint_is_described_never_quoted(status, error, expected):
    """A proxy's page quoting the token request: the error says what answered, and holds no
    part of the signed assertion, which would mint access tokens for an hour."""
    config = SandboxConfig.from_env(demo_credentials(), token_echo_status=status)
    with Sandbox(config) as sandbox:
        tokens = ServiceAccountTokens(sandbox.new_service_account(), KEY_VAR, timeout=5)
        with pytest.raises(error) as caught:
            tokens.current()

    message = str(caught.value)
    assert expected in message and "bytes, not an OAuth2 answer" in message
    (assertion,) = sandbox.tokens.echoed
    assert not [part for part in parts_of(assertion) if part in message]
    assert "Request blocked" not in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_page_echoing_the_assertion_leaks_it_to_no_output(campaign, inbox, luigid):  # noqa: F811
    """The daily run as cron starts it, with luigid and failure mail, meets a firewall page
    quoting the token request: the push channel fails for good, its error says what
    answered, and no output (the run's output and log file, the run folder's files, the
    mail, what luigid holds) has any part of the signed assertion."""
    campaign.write_customers(rows=5)
    sandbox = campaign.start_sandbox(token_echo_status=403)
    env = with_service_account(campaign)
    campaign.configure(
        email={"method": "smtp", "sender": "pipeline@example.com"},
        smtp={"host": "127.0.0.1", "port": inbox.port, "no_tls": "true"},
        notifications={"owner": "ops@example.com"},
    )
    command = [str(BIN / "campaign-run"), "--scheduler-port", str(luigid),
               "--log-dir", str(campaign.root / "log"), "daily", "--date", DATE]  # fmt: skip

    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == RETCODE["task_failed"], done.stdout[-3000:]
    (log,) = (campaign.root / "log").glob("campaign-*.log")
    assert "the token endpoint answered HTTP 403, text/html, " in log.read_text()
    assert campaign.sandbox.stats()["email"]["accepted"] == 5, "the other channels sent"
    assert [m["Subject"] for m in inbox.messages] == [
        f"[campaign_pipeline] campaign test {DATE}: SendPushNotification FAILED"
    ]
    assert "not an OAuth2 answer" in body(inbox.messages[0])
    failed = task_list(luigid, "FAILED")
    assert [t["name"] for t in failed.values()] == ["SendPushNotification"]
    held = [json.dumps(failed), *(fetch_error(luigid, task_id) for task_id in failed)]
    outputs = [
        done.stdout,
        done.stderr,
        *held,
        *(m.as_string() + body(m) for m in inbox.messages),
        *(p.read_bytes().decode(errors="replace") for p in campaign.root.rglob("*") if p.is_file()),
    ]
    assert sandbox.tokens.echoed, "the firewall page quoted a token request"
    for assertion in sandbox.tokens.echoed:
        leaked = {part for part in parts_of(assertion) for text in outputs if part in text}
        assert not leaked, leaked


def test_a_page_met_while_sending_leaks_the_assertion_to_no_ledger_or_file(campaign):
    """Tokens that last a second; the firewall starts answering mid-campaign: the channel
    stops, those sent stay sent, the rest pending, and neither its output nor the ledger,
    results or report hold any part of the assertion the page quoted."""
    campaign.write_customers(rows=60)
    sandbox = campaign.start_sandbox(token_lifetime=1.0)
    env = with_service_account(campaign, rate_per_second=10, burst=3, concurrency=2)
    campaign.configure(SendPushNotification={"target_segments": ["premium", "regular", "new"]})
    stderr = campaign.root / "stderr.txt"
    with stderr.open("w") as output:
        process = subprocess.Popen(campaign.command(task="SendPushNotification"), cwd=REPO,
                                   env=env, stdout=output, stderr=output)  # fmt: skip
        wait_for(lambda: sandbox.stats()["push"]["accepted"] >= 5, 60, "the first messages")
        sandbox.config.token_echo_status = 403
        assert process.wait(timeout=120) == RETCODE["task_failed"], stderr.read_text()[-3000:]

    assert "push channel stopped: the token endpoint answered HTTP 403" in stderr.read_text()
    statuses = set(ledger_statuses(campaign, "push"))
    assert statuses == {"sent", "pending"}, statuses
    assert (campaign.folder / "report.json").is_file()
    assert sandbox.tokens.echoed, "the firewall page quoted a token request"
    found = [p for p in campaign.root.rglob("*") if p.is_file()]
    files = {p: p.read_bytes().decode(errors="replace") for p in found}
    for assertion in sandbox.tokens.echoed:
        leaked = {(p.name, part) for p, text in files.items() for part in parts_of(assertion)
                  if part in text}  # fmt: skip
        assert not leaked, leaked


def fetch_error(port: int, task_id: str) -> str:
    """What luigid shows of a failed task's error (the visualiser's error pop-up)."""
    query = urllib.parse.quote(json.dumps({"task_id": task_id}))
    url = f"http://127.0.0.1:{port}/api/fetch_error?data={query}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


def test_a_dry_run_reads_the_key_but_asks_for_no_token(campaign):
    campaign.write_customers(rows=30)
    sandbox = campaign.start_sandbox()
    env = with_service_account(campaign)

    done = push_run(campaign, env, "--dry-run")

    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads((campaign.folder / "dry-run" / "push_preview.json").read_text())
    request = shown["requests"][0]
    assert request["headers"]["Authorization"] == f"Bearer <access token minted from ${KEY_VAR}>"
    assert "/v1/projects/sa-project/messages:send" in request["url"], "the key's project"
    assert sandbox.stats()["push"]["tokens_issued"] == 0


# -- The key file, as operators get it wrong -----------------------------------------------


def key_file_problem(monkeypatch, tmp_path, content) -> str:
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(KEY_VAR, str(path))
    with pytest.raises((KeyFileError, MissingSecretError)) as caught:
        PushProvider(push_api(service_account_env=KEY_VAR, project_id="p"))
    return str(caught.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "which does not exist"),
        ("{not json", "which is not JSON (line 1, column 2)"),
        ('{"type": "authorized_user", "refresh_token": "r"}', "holds a 'authorized_user'"),
        ('{"type": "service_account", "client_email": "a@b"}', "without private_key, token_uri"),
    ],
)
def test_a_bad_key_file_is_one_line_naming_the_variable(monkeypatch, tmp_path, content, expected):
    message = key_file_problem(monkeypatch, tmp_path, content)
    assert f"environment variable {KEY_VAR} (named by [push_api] service_account_env)" in message
    assert expected in message
    assert "\n" not in message and "refresh_token" not in message and '"r"' not in message


def test_a_damaged_private_key_is_named_never_quoted(monkeypatch, tmp_path):
    key = new_key("https://oauth2.googleapis.com/token")
    lines = key["private_key"].splitlines()
    key["private_key"] = "\n".join([lines[0], lines[1][::-1], *lines[2:]])
    message = key_file_problem(monkeypatch, tmp_path, json.dumps(key))
    assert "has a private_key that cannot be read" in message
    assert lines[1][::-1][:20] not in message


def test_an_unset_key_variable_names_it(monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(MissingSecretError, match=f"{KEY_VAR} is not set .* service_account_env"):
        read_key_file(KEY_VAR, "push_api", "service_account_env")


# -- The sandbox's token endpoint ---------------------------------------------------------


@pytest.fixture
def box(campaign):
    return campaign.start_sandbox()


def grant(box, key: dict, **claims) -> requests.Response:
    now = int(time.time())
    payload = {
        "iss": key["client_email"],
        "aud": GOOGLE_TOKEN_URI,
        "scope": FCM_SCOPE,
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    signer = google.auth.crypt.RSASigner.from_service_account_info(key)
    assertion = google.auth.jwt.encode(signer, payload).decode()
    form = {"grant_type": JWT_BEARER, "assertion": assertion}
    return requests.post(box.base_url + "/token", data=form, timeout=5)


def push_with(box, token: str) -> requests.Response:
    message = {"message": {"token": "t" * 64, "notification": {"title": "t", "body": "b"}}}
    url = f"{box.base_url}/v1/projects/p/messages:send"
    return requests.post(url, json=message, headers={"Authorization": f"Bearer {token}"}, timeout=5)


def test_the_token_endpoint_issues_tokens_that_push_takes_until_they_expire(box):
    key = box.new_service_account()
    answer = grant(box, key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "Bearer" and answer.json()["expires_in"] == 3600
    assert push_with(box, answer.json()["access_token"]).status_code == 200

    box.tokens.lifetime = 0  # the next token is born expired
    expired = grant(box, key).json()["access_token"]
    refused = push_with(box, expired)
    assert refused.status_code == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "change, error",
    [
        ({"aud": "https://example.com/token"}, "invalid_grant"),
        ({"scope": "https://www.googleapis.com/auth/userinfo.email"}, "invalid_scope"),
        ({"exp": int(time.time()) + 7200}, "invalid_grant"),  # longer than an hour
        ({"iss": "someone@else.iam.gserviceaccount.com"}, "invalid_grant"),
    ],
)
def test_the_token_endpoint_refuses_bad_grants_as_google_does(box, change, error):
    answer = grant(box, box.new_service_account(), **change)
    assert (answer.status_code, answer.json()["error"]) == (400, error), answer.text


def test_the_token_endpoint_checks_the_signature(box):
    trusted = box.new_service_account()
    forged = {**new_key("x"), "client_email": trusted["client_email"]}
    answer = grant(box, forged)
    assert answer.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid JWT Signature.",
    }
    other = requests.post(box.base_url + "/token", data={"grant_type": "password"}, timeout=5)
    assert other.json()["error"] == "unsupported_grant_type"


# -- Twilio API keys ------------------------------------------------------------------------


def with_api_key(campaign, secret: str = API_KEY_SECRET) -> dict:
    campaign.configure(
        sms_api={"api_key_sid_env": "SMS_API_KEY_SID", "api_key_secret_env": "SMS_API_KEY_SECRET"}
    )
    env = campaign.env(SMS_API_KEY_SID=API_KEY_SID, SMS_API_KEY_SECRET=secret)
    del env["SMS_API_AUTH_TOKEN"]  # the key is all there is
    return env


def test_sms_sends_with_a_twilio_api_key(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox(credentials=API_KEY)

    done = campaign.run(env=with_api_key(campaign), task="SendSmsCampaign")

    assert done.returncode == 0, done.stderr[-3000:]
    sent = [r for r in campaign.results("sms") if r["status"] == "sent"]
    assert sent and len(sent) == sum(campaign.accepted("sms").values())


def test_a_wrong_api_key_secret_stops_sms_naming_the_key_variables_never_the_values(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox(credentials=API_KEY, echo_credentials=True)
    wrong = "wrong-secret-" + "a" * 20

    done = campaign.run(env=with_api_key(campaign, wrong), task="SendSmsCampaign")

    assert done.returncode == RETCODE["task_failed"]
    assert "sms channel stopped: sms provider answered 401 20003" in done.stderr
    assert "$SMS_API_KEY_SID ([sms_api] api_key_sid_env)" in done.stderr
    assert "$SMS_API_KEY_SECRET ([sms_api] api_key_secret_env)" in done.stderr
    basic = base64.b64encode(f"{API_KEY_SID}:{wrong}".encode()).decode()
    written = [p.read_bytes() for p in campaign.root.rglob("*") if p.is_file()]
    for value in (wrong, API_KEY_SID, basic):
        assert not any(value.encode() in blob for blob in [done.stderr.encode(), *written])
    assert set(ledger_statuses(campaign, "sms")) == {"pending"}


def test_api_key_settings_that_cannot_work_are_one_line(monkeypatch):
    monkeypatch.setenv("SMS_API_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("KEY_SID", "AK" + "0" * 32)
    monkeypatch.setenv("KEY_SECRET", "s")
    with pytest.raises(SettingsError, match="api_key_sid_env is set but api_key_secret_env"):
        SmsProvider(sms_api(api_key_sid_env="KEY_SID", from_number="+15005550006"))
    provider = SmsProvider(
        sms_api(api_key_sid_env="KEY_SID", api_key_secret_env="KEY_SECRET", from_number="+1500")
    )
    with pytest.raises(
        InvalidSecretError, match=r"KEY_SID \(named by \[sms_api\] api_key_sid_env\)"
    ):
        provider.check()


# -- Credentials in a URL -------------------------------------------------------------------

URL_PASSWORD = "url-pass-" + "e" * 16


@pytest.mark.parametrize(
    "section, userinfo, shown",
    [
        ("email_api", f"apikey:{URL_PASSWORD}@", "[email_api] base_url = http://***@127.0.0.1:"),
        ("sms_api", f"AC0123:{URL_PASSWORD}@", "[sms_api] base_url = http://***@127.0.0.1:"),
        ("push_api", f"{URL_PASSWORD}@", "[push_api] base_url = http://***@127.0.0.1:"),
        ("env", f"u:{URL_PASSWORD}@", "$CAMPAIGN_PROVIDER_URL = http://***@127.0.0.1:"),
        ("report", f"u:{URL_PASSWORD}@", "[report] base_url = http://***@127.0.0.1:"),
    ],
)
def test_credentials_in_a_base_url_are_refused_naming_the_key_before_anything_is_sent(
    campaign, section, userinfo, shown
):
    """requests would send user:password@ in place of the provider's credentials (the 401
    would then blame the API-key variable) and the URL would be logged as is: the settings
    check refuses it in one line naming the key, showing neither user nor password."""
    campaign.write_customers(rows=5)
    sandbox = campaign.start_sandbox()
    url = sandbox.base_url.replace("http://", f"http://{userinfo}")
    env = campaign.env()
    if section == "env":
        env["CAMPAIGN_PROVIDER_URL"] = url
    else:
        campaign.configure(**{section: {"base_url": url}})

    done = campaign.run(env=env)

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if f"setting: {shown}" in line]
    assert lines and lines[0].endswith(
        f"{sandbox.port}: must not hold a user or password (...@ before the host): requests "
        "would send them in place of the credentials from the environment, and logs would "
        "show them; remove them"
    ), done.stderr[-3000:]
    assert all(campaign.requests(channel) == 0 for channel in ("email", "sms", "push"))
    outputs = [p for p in campaign.root.rglob("*") if p.is_file() and p != campaign.config_path]
    written = [p.read_bytes() for p in outputs]
    for blob in [done.stderr.encode(), done.stdout.encode(), *written]:
        assert URL_PASSWORD.encode() not in blob and userinfo.encode() not in blob
