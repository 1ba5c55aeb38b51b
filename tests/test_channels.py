"""The channel registry: everything per channel derives from one declaration each."""

from __future__ import annotations

import secrets
import shutil

from conftest import CHANNELS, REPO, RETCODE, free_port

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
        "email": ["EMAIL_API_TOKEN", "UNSUBSCRIBE_KEY"],
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
        assert f"{channel}: base_url {sandbox.base_url} from ${PROVIDER_URL_ENV}" in done.stderr


def test_a_bad_provider_url_variable_is_named(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()

    done = campaign.run(env=campaign.env(**{PROVIDER_URL_ENV: "127.0.0.1:8765"}))

    assert done.returncode == RETCODE["task_failed"]
    assert f"${PROVIDER_URL_ENV} (set, it replaces [email_api] base_url)" in done.stderr
    assert all(campaign.requests(c) == 0 for c in CHANNELS)


# -- A fourth channel, declared here and nowhere in the package ------------------------------

CHAT_SANDBOX = '''
"""The chat provider's sandbox endpoint: POST /chat/send, Bearer token, {"to", "text"}."""
import re

from campaign_pipeline.sandbox import ChannelLimit, Endpoint, Message, RejectedError, Reply
from campaign_pipeline.sandbox.endpoint import bearer_ok, load_json


class ChatEndpoint(Endpoint):
    channel = "chat"
    provider = "Chat"
    route = re.compile(r"/chat/send")
    content_type = "application/json"
    limit = ChannelLimit(50, 10)
    credential_vars = ("CHAT_API_TOKEN",)

    def authorized(self, headers, params):
        return bearer_ok(headers, self.credential("CHAT_API_TOKEN"))

    def unauthorized(self):
        return Reply(401, {"error": "unauthorized"})

    def rate_limited(self, wait, burst):
        return Reply(429, {"error": "slow down"}, {"Retry-After": "1"})

    def unavailable(self):
        return Reply(503, {"error": "unavailable"})

    def error(self, status, code):
        return Reply(status, {"error": code})

    def unsupported_media(self):
        return Reply(415, {"error": "json only"})

    def recipients(self, body):
        data = load_json(body)
        return [data["to"]] if isinstance(data, dict) and isinstance(data.get("to"), str) else []

    def parse(self, body, params):
        data = load_json(body)
        if not self.recipients(body) or not data.get("text"):
            raise RejectedError(Reply(400, {"error": "to and text are required"}))
        return [Message(data["to"], data.get("campaign"), data.get("customer_id"), data)]

    def respond(self, messages, params):
        message_id = f"chat-{messages[0].customer_id}"
        return Reply(200, {"id": message_id}), message_id
'''

CHAT_CHANNEL = '''
"""A chat channel: its provider, its config section and its declaration."""
import luigi

import campaign_pipeline
from campaign_pipeline import channels
from campaign_pipeline.config import provider_section
from campaign_pipeline.providers import Provider, Request, json_body


class chat_api(provider_section):
    base_url = luigi.Parameter(default="http://127.0.0.1:8765")
    token_env = luigi.Parameter(default="CHAT_API_TOKEN")
    rate_per_second = luigi.FloatParameter(default=50.0)
    burst = luigi.IntParameter(default=10)
    concurrency = luigi.IntParameter(default=2)


class ChatProvider(Provider):
    channel = "chat"
    section = "chat_api"
    name = "Chat"
    contact_field = "phone"
    success_status = 200

    def __init__(self, config, preview=False):
        super().__init__(config.base_url, preview)
        self.token = self.secret(config.token_env, "chat_api", "token_env", "preview-token")

    def request(self, recipient, parts, context):
        body = {"to": recipient, "text": parts["body.txt"], "campaign": context["campaign"],
                "customer_id": context["customer_id"]}
        return Request(f"{self.base_url}/chat/send", {"Authorization": f"Bearer {self.token}"},
                       json=body)

    def message_id(self, response):
        return str(json_body(response).get("id", ""))

    def speaks(self, response):
        return "error" in json_body(response)

    def error_of(self, response):
        return "", str(json_body(response).get("error", ""))


CHAT = channels.register(channels.Channel(
    "chat", "SendChatCampaign", ChatProvider, chat_api, parts=(("body.txt",),),
    sandbox="chat_sandbox:ChatEndpoint",
))
'''


def test_a_fourth_channel_declared_outside_the_package_runs_next_to_the_three(
    campaign, tmp_path, monkeypatch
):
    """A provider class, a config section, a template folder and a sandbox endpoint, all
    written here: RunCampaign sends it beside email, SMS and push, with its own results."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "chat_sandbox.py").write_text(CHAT_SANDBOX)
    (modules / "chat_channel.py").write_text(CHAT_CHANNEL)
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "config" / "templates", templates)
    (templates / "chat" / "spring_sale").mkdir(parents=True)
    (templates / "chat" / "spring_sale" / "body.txt").write_text("Hi {{ segment }}!")
    monkeypatch.syspath_prepend(str(modules))
    from chat_sandbox import ChatEndpoint  # the test's own sandbox needs the endpoint

    campaign.endpoints = (*campaign.endpoints, ChatEndpoint)
    campaign.credentials["CHAT_API_TOKEN"] = "chat-" + secrets.token_hex(16)
    customers = campaign.write_customers(rows=20)
    sandbox = campaign.start_sandbox()
    campaign.configure(
        campaign={"templates_dir": str(templates)},
        chat_api={"base_url": sandbox.base_url, "timeout_seconds": 5, "retry_delay_seconds": 0.2},
        SendChatCampaign={"template": "spring_sale"},  # the package names no channel's template
    )

    done = campaign.run(env=campaign.env(PYTHONPATH=str(modules)), module="chat_channel")

    assert done.returncode == 0, done.stderr[-3000:]
    for channel in CHANNELS:
        assert {r["status"] for r in campaign.results(channel)} == {"sent"}
    chat = campaign.results("chat")
    targeted = [c for c in customers if c["segment"] in ("premium", "regular", "new")]
    assert chat and len(chat) <= len(targeted)
    assert {r["status"] for r in chat} == {"sent"}
    assert set(campaign.accepted("chat").values()) == {1}
    assert sandbox.stats()["chat"]["accepted"] == len(chat)
    assert "SendChatCampaign" in done.stderr
    assert f"chat results: {len(chat)} sent" in done.stderr
