"""SMS through Twilio ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``.

The request authenticates with the account's auth token, or with an API key (``SK...`` and
its secret), which Twilio recommends: a key can be revoked alone. Either way the AccountSid
is in the URL, and the account's rate limit applies.
"""

from __future__ import annotations

import re

import requests

from ..config import sms_api
from ..exceptions import InvalidSecretError, MessageError, SettingsError
from ..smstext import OPT_OUT_KEYWORDS, encoding, has_opt_out, segments, with_opt_out
from . import Provider, Request, json_body

ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
MAX_BODY = 1600  # Twilio refuses longer bodies with 21617


class SmsProvider(Provider):
    channel = "sms"
    section = "sms_api"
    name = "Twilio"
    contact_field = "phone"
    success_status = 201

    def __init__(self, config: sms_api, preview: bool = False):
        super().__init__(config.base_url, preview)
        self.account_sid = self.secret(
            config.account_sid_env, "sms_api", "account_sid_env", "AC" + "0" * 32
        )
        if config.api_key_sid_env:
            if not config.api_key_secret_env:
                raise SettingsError(
                    "[sms_api] api_key_sid_env is set but api_key_secret_env is not: name the "
                    "variable holding the API key's secret too"
                )
            self.user = self.secret(
                config.api_key_sid_env, "sms_api", "api_key_sid_env", "SK" + "0" * 32
            )
            self.password = self.secret(
                config.api_key_secret_env, "sms_api", "api_key_secret_env", "preview-secret"
            )
        else:
            self.user = self.account_sid
            self.password = self.secret(
                config.auth_token_env, "sms_api", "auth_token_env", "preview-token"
            )
        self.from_number = config.from_number
        self.messaging_service_sid = config.messaging_service_sid
        self.opt_out_text = config.opt_out_text.strip()

    def check(self) -> None:
        super().check()
        if not ACCOUNT_SID.match(self.account_sid):
            raise InvalidSecretError(
                f"environment variable {self.env_keys['account_sid_env']} (named by [sms_api] "
                "account_sid_env) does not look like AC followed by 32 hex digits, a Twilio "
                "AccountSid"
            )
        if "api_key_sid_env" in self.env_keys and not API_KEY_SID.match(self.user):
            raise InvalidSecretError(
                f"environment variable {self.env_keys['api_key_sid_env']} (named by [sms_api] "
                "api_key_sid_env) does not look like SK followed by 32 hex digits, a Twilio "
                "API key SID"
            )
        if self.messaging_service_sid:
            if not MESSAGING_SERVICE_SID.match(self.messaging_service_sid):
                raise SettingsError("[sms_api] messaging_service_sid must be MG + 32 hex digits")
        elif not self.from_number:
            raise SettingsError("[sms_api] needs from_number or messaging_service_sid")
        if self.opt_out_text and not has_opt_out(self.opt_out_text):
            raise SettingsError(
                f"[sms_api] opt_out_text = {self.opt_out_text!r} names no opt-out keyword "
                f"({', '.join(OPT_OUT_KEYWORDS)}): say which word to reply, e.g. "
                "'Reply STOP to opt out'"
            )

    def account(self) -> str:
        return self.account_sid  # Twilio's limits are the account's, whatever its auth token

    def request(self, recipient: str, parts: dict[str, str], context: dict[str, str]) -> Request:  # noqa: ARG002 - Provider.request's: an SMS carries no fields
        rendered = parts["body.txt"]
        # carriers require the way out in every marketing text
        body = with_opt_out(rendered, self.opt_out_text) if rendered else ""
        if not body or len(body) > MAX_BODY:
            added = " with the opt-out text" if body != rendered else ""
            raise MessageError(
                f"SMS body has {len(body)} characters{added}; Twilio takes 1 to {MAX_BODY}"
            )
        form = {"To": recipient, "Body": body}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        else:
            form["From"] = self.from_number
        return Request(
            url=f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json",
            headers={},
            data=form,
            auth=(self.user, self.password),
        )

    def cost(self, request: Request) -> dict:
        """The text's encoding and segments: Twilio bills each segment as a message."""
        body = request.data["Body"]
        return {"encoding": encoding(body), "message_segments": segments(body)}

    def message_id(self, response: requests.Response) -> str:
        return str(json_body(response).get("sid", ""))

    def speaks(self, response: requests.Response) -> bool:
        return "code" in json_body(response)

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        body = json_body(response)
        return str(body.get("code") or ""), str(body.get("message") or response.reason or "")
